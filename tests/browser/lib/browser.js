// Debian's chromium driven by playwright-core (which downloads no browser of its own), and
// helpers for the demo pages: open the editor as someone, type, read, wait.

import { createHmac } from 'node:crypto'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { REPO_ROOT } from '../../harness/server.js'

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
export const SCREENSHOT_DIR = join(REPO_ROOT, 'docs', 'screenshots')
const TIMEOUT_MS = Number(process.env.TANDEM_BROWSER_TIMEOUT_MS ?? 15000)

/**
 * Launches headless chromium. playwright gives every launch a fresh temporary profile
 * (--user-data-dir) and removes it on close.
 */
export async function launch () {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`chromium not found at ${CHROMIUM_PATH}: apt-get install -y chromium, or set CHROMIUM_PATH`)
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    timeout: 60000,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'
    ]
  })
}

/**
 * Polls `cond` until it returns something truthy; fails with `message` (and the last error)
 * after `timeout` ms.
 */
export async function waitFor (cond, { timeout = TIMEOUT_MS, interval = 25, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastError
  for (;;) {
    try {
      const v = await cond()
      if (v) return v
    } catch (err) {
      lastError = err
    }
    if (Date.now() >= deadline) {
      const what = typeof message === 'function' ? await message() : message
      throw new Error(`timed out after ${timeout} ms waiting for: ${what}` +
        (lastError ? `\nlast error: ${lastError.stack ?? lastError}` : ''))
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

/** An HS256 JWT for `--auth token --jwt-secret secret`. */
export function jwt (secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const now = Math.floor(Date.now() / 1000)
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ iat: now, exp: now + 3600, ...claims })}`
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`
}

/** One person: a browser context of their own (storage, network) with one editor page. */
export class Person {
  /**
   * @param {import('playwright-core').Browser} browser
   * @param {{name: string, color: string}} user shown on carets and in "who is here"
   */
  constructor (browser, user) {
    this.browser = browser
    this.user = user
    this.context = null
    this.page = null
    this.errors = []
  }

  /**
   * Opens the editor at `url` (e.g. `http://127.0.0.1:port/?doc=x`) and waits for the sync.
   * `init` runs in the page before its own scripts (e.g. to take WebSocket away).
   */
  async open (url, { viewport = { width: 1100, height: 640 }, init } = {}) {
    this.context = await this.browser.newContext({ viewport, deviceScaleFactor: 1 })
    this.context.setDefaultTimeout(TIMEOUT_MS)
    if (init) await this.context.addInitScript(init)
    // The name the demo would otherwise invent (it keeps it in sessionStorage).
    await this.context.addInitScript((user) => {
      sessionStorage.setItem('tandem-demo:user', JSON.stringify(user))
    }, this.user)
    this.page = await this.context.newPage()
    this.page.on('pageerror', (err) => this.errors.push(String(err)))
    this.page.on('console', (msg) => {
      // Failed reconnects while offline or while the server restarts are expected.
      // (The demo's provider may try its HTTP transport meanwhile: a fetch to a server that
      // is down or a browser that is offline logs a failed resource.)
      const expected = /^WebSocket connection to .* failed|^Failed to load resource: net::ERR_(CONNECTION_REFUSED|INTERNET_DISCONNECTED)/
      if (msg.type() === 'error' && !expected.test(msg.text())) {
        this.errors.push(msg.text())
      }
    })
    await this.page.goto(url)
    await this.waitSynced()
    return this
  }

  async waitSynced () {
    await this.page.waitForFunction(() => window.tandem?.provider.synced === true)
  }

  /** The document as plain text: one line per block, no empty lines. */
  async text () {
    const text = await this.page.evaluate(() => window.tandem.editor.getText({ blockSeparator: '\n' }))
    return text.replace(/\n+/g, '\n').trim()
  }

  /** Types at the end of the document, as keystrokes. */
  async typeAtEnd (text) {
    await this.page.locator('.tiptap').click()
    // The caret goes to the end through the editor: a Control+End pressed while the click is
    // still being handled sometimes left it where the click landed (a CI run typed a list into
    // the middle of the heading).
    await this.page.evaluate(() => window.tandem.editor.commands.focus('end'))
    await this.page.keyboard.type(text)
  }

  /** The "saved" pill's state: loading, saved, saving or offline. */
  savedState () {
    return this.page.locator('#saved').getAttribute('data-state')
  }

  /** Waits until every change of this page is stored on the server. */
  async waitSaved () {
    await this.page.locator('#saved[data-state="saved"]').waitFor()
  }

  async close () {
    await this.context?.close()
  }
}

/** Waits until every person's document reads `expected` (a string, or a predicate of the texts). */
export async function waitConverged (people, expected, label = 'documents to converge') {
  let texts = []
  await waitFor(async () => {
    texts = await Promise.all(people.map((p) => p.text()))
    if (typeof expected === 'function') return texts.every((t) => t === texts[0]) && expected(texts[0])
    return texts.every((t) => t === expected)
  }, { message: () => `${label}: ${JSON.stringify(texts)}` })
  return texts[0]
}

/** Saves a screenshot of `page` under docs/screenshots/. */
export async function screenshot (page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true })
  await page.screenshot({ path: join(SCREENSHOT_DIR, name), animations: 'disabled', caret: 'hide' })
}
