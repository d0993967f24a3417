// Starts and stops the real `tandem` binary for the browser tests, on SQLite (a fresh working
// directory) or on Postgres (a fresh schema per server when TANDEM_TEST_DATABASE_URL is set).
//
// The binary comes from $TANDEM_BIN, or <repo>/target/debug/tandem.

import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const REPO_ROOT = resolve(here, '..', '..', '..')
export const TANDEM_BIN = process.env.TANDEM_BIN
  ? resolve(process.env.TANDEM_BIN)
  : join(REPO_ROOT, 'target', 'debug', 'tandem')
export const PG_URL = process.env.TANDEM_TEST_DATABASE_URL || null

const STARTUP_TIMEOUT_MS = 20000
const STOP_TIMEOUT_MS = 15000
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g
const LISTENING = /listening on 127\.0\.0\.1:(\d+)/

/** Every running server, killed if the test process exits without stopping it. */
const live = new Set()
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL') } catch {}
  }
})

/**
 * A Postgres schema of its own (so runs and tests never see each other's rows), dropped by
 * `drop()`. Needs `psql`, which CI installs.
 */
export function createPgSchema () {
  const name = `tandem_browser_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
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

export class Tandem {
  /**
   * @param {object} [opts]
   * @param {string[]} [opts.args] extra command-line arguments
   * @param {'sqlite'|'postgres'} [opts.backend]
   */
  constructor ({ args = [], backend = 'sqlite' } = {}) {
    this.args = args
    this.backend = backend
    this.cwd = mkdtempSync(join(tmpdir(), 'tandem-browser-'))
    this.schema = backend === 'postgres' ? createPgSchema() : null
    this.port = 0
    this.child = null
    this.log = ''
  }

  get url () { return `http://127.0.0.1:${this.port}` }

  logTail (chars = 3000) {
    const clean = this.log.replace(ANSI, '')
    return clean.length > chars ? '…' + clean.slice(-chars) : clean
  }

  /** Starts the server; after a `stop()`, on the same port and with the same storage. */
  async start () {
    if (!existsSync(TANDEM_BIN)) {
      throw new Error(`tandem binary not found at ${TANDEM_BIN}; build it with ` +
        '`cargo build -p tandem-server` or set TANDEM_BIN')
    }
    // No readiness drain on SIGTERM: these servers have no load balancer to drain from.
    const env = { ...process.env, NO_COLOR: '1', TANDEM_DRAIN_GRACE: '0s' }
    delete env.TANDEM_DATABASE_URL
    delete env.DATABASE_URL
    const db = this.schema ? ['--database-url', this.schema.url] : []
    const child = spawn(TANDEM_BIN, ['--addr', `127.0.0.1:${this.port}`, ...db, ...this.args], {
      cwd: this.cwd, env, stdio: ['ignore', 'pipe', 'pipe']
    })
    this.child = child
    live.add(child)
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      live.delete(child)
      resolve({ code, signal })
    }))
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(
        `tandem did not report listening within ${STARTUP_TIMEOUT_MS} ms. Log:\n${this.logTail()}`)), STARTUP_TIMEOUT_MS)
      const onData = (chunk) => {
        this.log += chunk.toString('utf8')
        if (this.log.length > 200_000) this.log = this.log.slice(-200_000)
        if (process.env.TANDEM_LOG) process.stderr.write(chunk)
        const m = this.log.replace(ANSI, '').match(LISTENING)
        if (m) {
          clearTimeout(timer)
          resolve(Number(m[1]))
        }
      }
      child.stdout.on('data', onData)
      child.stderr.on('data', onData)
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`tandem exited (code ${code}, signal ${signal}) before listening. Log:\n${this.logTail()}`))
      })
    })
    this.port = port
    return this
  }

  /** SIGTERM, and SIGKILL if it does not exit in time. Storage is kept for a restart. */
  async stop () {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGTERM')
    let timer
    const status = await Promise.race([
      this.exited,
      new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS) })
    ])
    clearTimeout(timer)
    if (status === null) {
      this.child.kill('SIGKILL')
      await this.exited
      throw new Error(`tandem did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM. Log:\n${this.logTail()}`)
    }
  }

  /** Stops the server and removes its storage. */
  async destroy () {
    try {
      await this.stop()
    } finally {
      rmSync(this.cwd, { recursive: true, force: true })
      this.schema?.drop()
    }
  }

  /** A call to the admin API (needs `--admin-token`), parsed JSON or an Error with the reason. */
  async admin (token, method, path, body) {
    const res = await fetch(`${this.url}/api/v1/admin${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined
    })
    const text = await res.text()
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
    return JSON.parse(text)
  }
}

/** The storage backends to run a test on: SQLite always, Postgres when configured. */
export function backends () {
  return [['sqlite', false], ['postgres', PG_URL ? false : 'TANDEM_TEST_DATABASE_URL is not set']]
}
