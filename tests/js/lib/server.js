// Starts and stops the real `tandem` binary for the end-to-end tests.
//
// The binary comes from $TANDEM_BIN, or <repo>/target/debug/tandem by default
// (build it with `cargo build -p tandem-server`). Each server runs with its
// working directory set to a fresh temp dir, because it writes ./data/ there.

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const REPO_ROOT = resolve(here, '..', '..', '..')
export const TANDEM_BIN = process.env.TANDEM_BIN
  ? resolve(process.env.TANDEM_BIN)
  : join(REPO_ROOT, 'target', 'debug', 'tandem')

const STARTUP_TIMEOUT_MS = Number(process.env.TANDEM_STARTUP_TIMEOUT_MS ?? 15000)
const STOP_TIMEOUT_MS = 10000
const MAX_LOG_CHARS = 200_000
// tracing-subscriber colours its output by default; strip escape codes before matching.
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g
const LISTENING = /listening on (127\.0\.0\.1|\[::1\]|localhost|0\.0\.0\.0):(\d+)/

/** Every server started by this process, so that a crashed test run leaves no orphans. */
const live = new Set()
process.on('exit', () => {
  for (const s of live) {
    try { s.child.kill('SIGKILL') } catch {}
  }
})

/** Makes a fresh working directory for a server. */
export function makeTempDir (prefix = 'tandem-test-') {
  return mkdtempSync(join(tmpdir(), prefix))
}

export class TandemServer {
  /**
   * @param {object} [opts]
   * @param {string} [opts.cwd] working directory (default: a fresh temp dir, removed on stop)
   * @param {string[]} [opts.args] extra command-line arguments
   * @param {Record<string,string>} [opts.env] extra environment variables
   */
  constructor ({ cwd, args = [], env = {} } = {}) {
    this.ownsCwd = cwd === undefined
    this.cwd = cwd ?? makeTempDir()
    this.args = args
    this.env = env
    this.child = null
    this.port = null
    this.log = ''
    /** @type {Promise<{code: number|null, signal: string|null}>|null} */
    this.exited = null
    this.exitStatus = null
  }

  get url () { return `ws://127.0.0.1:${this.port}` }
  get httpUrl () { return `http://127.0.0.1:${this.port}` }

  /** The last `chars` characters of the server's stderr/stdout, for error messages. */
  logTail (chars = 4000) {
    const clean = this.log.replace(ANSI, '')
    return clean.length > chars ? '…' + clean.slice(-chars) : clean
  }

  async start () {
    if (!existsSync(TANDEM_BIN)) {
      throw new Error(`tandem binary not found at ${TANDEM_BIN}; build it with ` +
        '`cargo build -p tandem-server` or set TANDEM_BIN')
    }
    this.log = ''
    this.port = null
    this.exitStatus = null
    // Each server must start empty (storage under its own cwd), so an inherited
    // database URL is dropped unless the test passes one explicitly.
    const inherited = { ...process.env }
    delete inherited.TANDEM_DATABASE_URL
    const child = spawn(TANDEM_BIN, ['--addr', '127.0.0.1:0', ...this.args], {
      cwd: this.cwd,
      // No readiness drain on SIGTERM: these servers have no load balancer to drain from.
      env: { ...inherited, NO_COLOR: '1', TANDEM_DRAIN_GRACE: '0s', ...this.env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    this.child = child
    live.add(this)
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(this)
        this.exitStatus = { code, signal }
        resolve(this.exitStatus)
      })
    })
    const append = (chunk) => {
      this.log += chunk.toString('utf8')
      if (this.log.length > MAX_LOG_CHARS) this.log = this.log.slice(-MAX_LOG_CHARS)
      if (process.env.TANDEM_LOG) process.stderr.write(chunk)
    }
    child.stdout.on('data', append)
    child.stderr.on('data', append)

    const port = await new Promise((resolve, reject) => {
      let done = false
      const finish = (err, value) => {
        if (done) return
        done = true
        clearTimeout(timer)
        child.stdout.off('data', check)
        child.stderr.off('data', check)
        child.off('exit', onExit)
        child.off('error', onError)
        err ? reject(err) : resolve(value)
      }
      const check = () => {
        const m = LISTENING.exec(this.log.replace(ANSI, ''))
        if (m) finish(null, Number(m[2]))
      }
      const onExit = (code, signal) => finish(new Error(
        `tandem exited during startup (code ${code}, signal ${signal}) before logging ` +
        `"listening on 127.0.0.1:PORT". Its output:\n${this.logTail()}`))
      const onError = (err) => finish(new Error(`could not spawn ${TANDEM_BIN}: ${err.message}`))
      const timer = setTimeout(() => {
        finish(new Error(
          `tandem did not log "listening on 127.0.0.1:PORT" within ${STARTUP_TIMEOUT_MS} ms. ` +
          `Its output so far:\n${this.logTail()}`))
        try { child.kill('SIGKILL') } catch {}
      }, STARTUP_TIMEOUT_MS)
      child.stdout.on('data', check)
      child.stderr.on('data', check)
      child.once('exit', onExit)
      child.once('error', onError)
      check()
    })
    this.port = port
    return this
  }

  /**
   * Sends SIGTERM and waits for the process to exit; SIGKILLs it after `timeoutMs`.
   * @returns {Promise<{code: number|null, signal: string|null, killed: boolean}>}
   *   `killed` is true when SIGTERM was not enough.
   */
  async stop ({ timeoutMs = STOP_TIMEOUT_MS, removeCwd = this.ownsCwd } = {}) {
    let result = { code: null, signal: null, killed: false }
    if (this.child && this.exitStatus === null) {
      this.child.kill('SIGTERM')
      let timer
      const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs) })
      const first = await Promise.race([this.exited, timedOut])
      clearTimeout(timer)
      if (first === 'timeout') {
        this.child.kill('SIGKILL')
        const status = await this.exited
        result = { ...status, killed: true }
      } else {
        result = { ...first, killed: false }
      }
    } else if (this.exitStatus) {
      result = { ...this.exitStatus, killed: false }
    }
    if (removeCwd) {
      rmSync(this.cwd, { recursive: true, force: true })
    }
    return result
  }
}

/** Starts a server; convenience wrapper. */
export async function startServer (opts) {
  const server = new TandemServer(opts)
  await server.start()
  return server
}
