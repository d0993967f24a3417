// Starts and stops the real `tandem` binary for both JavaScript suites (tests/js: the
// y-websocket end-to-end tests; tests/browser: the demo pages in chromium). Plain Node, no
// packages, so each suite imports it by relative path.
//
// The binary comes from $TANDEM_BIN, or <repo>/target/debug/tandem by default (build it with
// `cargo build -p tandem-server`). Each server runs with its working directory set to a fresh
// temp dir, because it writes ./data/ there (SQLite), or on a Postgres schema of its own
// (`backend: 'postgres'`, when TANDEM_TEST_DATABASE_URL is set).

import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const REPO_ROOT = resolve(here, '..', '..')
export const TANDEM_BIN = process.env.TANDEM_BIN
  ? resolve(process.env.TANDEM_BIN)
  : join(REPO_ROOT, 'target', 'debug', 'tandem')
export const PG_URL = process.env.TANDEM_TEST_DATABASE_URL || null

const STARTUP_TIMEOUT_MS = Number(process.env.TANDEM_STARTUP_TIMEOUT_MS ?? 20000)
const STOP_TIMEOUT_MS = 15000
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

/**
 * A Postgres schema of its own (so runs and tests never see each other's rows), dropped by
 * `drop()`. Needs `psql`, which CI installs.
 */
export function createPgSchema () {
  const name = `tandem_js_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
  execFileSync('psql', [PG_URL, '-v', 'ON_ERROR_STOP=1', '-qc', `CREATE SCHEMA "${name}"`], { stdio: 'pipe' })
  const sep = PG_URL.includes('?') ? '&' : '?'
  return {
    name,
    url: `${PG_URL}${sep}options[search_path]=${name}`,
    drop () {
      try {
        execFileSync('psql', [PG_URL, '-qc', `DROP SCHEMA IF EXISTS "${name}" CASCADE`], { stdio: 'pipe' })
      } catch {}
    }
  }
}

/** The storage backends to run a test on: SQLite always, Postgres when configured. */
export function backends () {
  return [['sqlite', false], ['postgres', PG_URL ? false : 'TANDEM_TEST_DATABASE_URL is not set']]
}

export class TandemServer {
  /**
   * @param {object} [opts]
   * @param {string} [opts.cwd] working directory (default: a fresh temp dir, removed by `destroy()`)
   * @param {string[]} [opts.args] extra command-line arguments
   * @param {Record<string,string>} [opts.env] extra environment variables
   * @param {'sqlite'|'postgres'} [opts.backend] where documents are stored (default SQLite under cwd)
   */
  constructor ({ cwd, args = [], env = {}, backend = 'sqlite' } = {}) {
    this.ownsCwd = cwd === undefined
    this.cwd = cwd ?? makeTempDir()
    this.args = args
    this.env = env
    this.backend = backend
    this.schema = backend === 'postgres' ? createPgSchema() : null
    this.child = null
    /** Chosen by the first start; a restart listens on the same port. */
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

  /** Starts the server; after a `stop()`, on the same port and with the same storage. */
  async start () {
    if (!existsSync(TANDEM_BIN)) {
      throw new Error(`tandem binary not found at ${TANDEM_BIN}; build it with ` +
        '`cargo build -p tandem-server` or set TANDEM_BIN')
    }
    this.log = ''
    this.exitStatus = null
    // Each server must start empty (storage under its own cwd, or its own schema), so an
    // inherited database URL is dropped unless the test passes one explicitly.
    const inherited = { ...process.env }
    delete inherited.TANDEM_DATABASE_URL
    delete inherited.DATABASE_URL
    const db = this.schema ? ['--database-url', this.schema.url] : []
    const child = spawn(TANDEM_BIN, ['--addr', `127.0.0.1:${this.port ?? 0}`, ...db, ...this.args], {
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
   * Sends SIGTERM and waits for the process to exit; SIGKILLs it after `timeoutMs`. Storage
   * is kept, for a restart or a look at ./data/ (`destroy()` removes it).
   * @returns {Promise<{code: number|null, signal: string|null, killed: boolean}>}
   *   `killed` is true when SIGTERM was not enough.
   */
  async stop ({ timeoutMs = STOP_TIMEOUT_MS } = {}) {
    if (!this.child) return { code: null, signal: null, killed: false }
    if (this.exitStatus) return { ...this.exitStatus, killed: false }
    this.child.kill('SIGTERM')
    let timer
    const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs) })
    const first = await Promise.race([this.exited, timedOut])
    clearTimeout(timer)
    if (first !== 'timeout') return { ...first, killed: false }
    this.child.kill('SIGKILL')
    return { ...(await this.exited), killed: true }
  }

  /**
   * Stops the server and removes the storage it owns (its temp dir, its schema); throws when
   * SIGTERM was not enough, since a server that ignores it is a bug the test run should show.
   */
  async destroy () {
    let status
    try {
      status = await this.stop()
    } finally {
      if (this.ownsCwd) rmSync(this.cwd, { recursive: true, force: true })
      this.schema?.drop()
    }
    if (status.killed) {
      throw new Error(`tandem did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM. Log:\n${this.logTail()}`)
    }
  }

  /**
   * A call to the admin API (needs `--admin-token`).
   * @returns {Promise<{status: number, body: any}>} the status and the parsed JSON body (null when empty)
   */
  async admin (token, method, path, body) {
    const { status, text } = await this.#adminCall(token, method, path, body)
    return { status, body: text ? JSON.parse(text) : null }
  }

  /** An admin API call that must succeed: its parsed JSON body, or an Error with the reason. */
  async adminOk (token, method, path, body) {
    const { status, text } = await this.#adminCall(token, method, path, body)
    if (status < 200 || status > 299) throw new Error(`${method} ${path}: ${status} ${text}`)
    return JSON.parse(text)
  }

  async #adminCall (token, method, path, body) {
    const res = await fetch(`${this.httpUrl}/api/v1/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    return { status: res.status, text: await res.text() }
  }
}

/** Starts a server; convenience wrapper. */
export async function startServer (opts) {
  const server = new TandemServer(opts)
  await server.start()
  return server
}
