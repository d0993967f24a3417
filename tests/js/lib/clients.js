// Client-side helpers: real y-websocket providers over the `ws` package,
// deadline-based polling, and document comparison.

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

// Every provider adds a process 'exit' listener; tests open more than 10 at once.
process.setMaxListeners(100)

export const DEFAULT_TIMEOUT_MS = 10000

/**
 * Polls `cond` until it returns a truthy value or the deadline passes.
 * @template T
 * @param {() => T | Promise<T>} cond
 * @param {object} [opts]
 * @param {number} [opts.timeout]
 * @param {number} [opts.interval]
 * @param {string | (() => string)} [opts.message] what we were waiting for (and why it failed)
 * @returns {Promise<T>}
 */
export async function waitFor (cond, { timeout = DEFAULT_TIMEOUT_MS, interval = 20, message = 'condition' } = {}) {
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
      const what = typeof message === 'function' ? message() : message
      const err = new Error(`timed out after ${timeout} ms waiting for: ${what}` +
        (lastError ? `\nlast error: ${lastError.stack ?? lastError}` : ''))
      throw err
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

/**
 * Keeps track of every doc/provider a test creates, so one `destroyAll()` in
 * `afterEach` stops their timers and sockets (otherwise node:test never exits).
 */
export class ClientPool {
  constructor () {
    /** @type {Array<{doc: Y.Doc, provider: WebsocketProvider}>} */
    this.clients = []
  }

  /**
   * Opens a y-websocket provider for `room` on `serverUrl`.
   * @param {string} serverUrl ws://127.0.0.1:PORT
   * @param {string} room passed to WebsocketProvider as-is (it is not URL-encoded by y-websocket)
   * @param {object} [opts]
   * @param {Y.Doc} [opts.doc]
   * @param {boolean} [opts.connect]
   * @param {Record<string,string>} [opts.params] URL query parameters
   */
  open (serverUrl, room, { doc = new Y.Doc(), connect = true, params = {} } = {}) {
    const provider = new WebsocketProvider(serverUrl, room, doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      connect,
      params
    })
    /** Close events seen by this provider (CloseEvent or null for local closes). */
    provider.closeEvents = []
    provider.on('connection-close', (event) => {
      provider.closeEvents.push(event ? { code: event.code, reason: event.reason } : null)
    })
    const client = { doc, provider, room }
    this.clients.push(client)
    return client
  }

  /** Opens a provider and waits until it has synced with the server. */
  async openSynced (serverUrl, room, opts) {
    const client = this.open(serverUrl, room, opts)
    await waitSynced(client.provider, `${room} client ${client.doc.clientID}`)
    return client
  }

  destroyAll () {
    for (const { doc, provider } of this.clients) {
      try { provider.destroy() } catch {}
      try { doc.destroy() } catch {}
    }
    this.clients = []
  }
}

/** Resolves once the provider has received SyncStep2 from the server. */
export async function waitSynced (provider, label = 'provider', timeout = DEFAULT_TIMEOUT_MS) {
  await waitFor(() => provider.synced, {
    timeout,
    message: () => `${label} to sync with ${provider.url} (wsconnected=${provider.wsconnected}, ` +
      `close events: ${JSON.stringify(provider.closeEvents ?? [])})`
  })
}

/** [[client, clock], ...] sorted by client: a comparable form of a state vector. */
export function stateVector (doc) {
  return [...Y.decodeStateVector(Y.encodeStateVector(doc)).entries()].sort((a, b) => a[0] - b[0])
}

/**
 * The content of the named shared types.
 * @param {Y.Doc} doc
 * @param {{text?: string[], map?: string[], array?: string[]}} types
 */
export function content (doc, { text = [], map = [], array = [] } = {}) {
  const out = {}
  for (const name of text) {
    out[`text:${name}`] = doc.getText(name).toString()
    out[`delta:${name}`] = doc.getText(name).toDelta()
  }
  for (const name of map) out[`map:${name}`] = doc.getMap(name).toJSON()
  for (const name of array) out[`array:${name}`] = doc.getArray(name).toJSON()
  return out
}

/** A new, unconnected doc holding exactly `doc`'s full state (via encodeStateAsUpdate). */
export function roundTrip (doc) {
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, Y.encodeStateAsUpdate(doc))
  return fresh
}

/**
 * True when all docs hold the same state: equal state vectors, equal delete sets
 * (Y.equalSnapshots) and equal content of the named types.
 */
export function converged (docs, types) {
  const [first, ...rest] = docs
  const sv = JSON.stringify(stateVector(first))
  const c = canonical(content(first, types))
  const snap = Y.snapshot(first)
  return rest.every((d) =>
    JSON.stringify(stateVector(d)) === sv &&
    canonical(content(d, types)) === c &&
    Y.equalSnapshots(snap, Y.snapshot(d)))
}

/** JSON with object keys sorted, so that maps with the same entries compare equal. */
export function canonical (value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v)
}

/** Human-readable summary of docs for timeout messages. */
export function describeDocs (docs, types) {
  return docs.map((d, i) => {
    const c = canonical(content(d, types))
    return `  doc[${i}] client=${d.clientID} sv=${JSON.stringify(stateVector(d))} ` +
      `content=${c.length > 300 ? c.slice(0, 300) + '…' : c}`
  }).join('\n')
}

/** Waits until all docs converge (see `converged`). */
export async function waitConverged (docs, types, { timeout = DEFAULT_TIMEOUT_MS, label = 'docs' } = {}) {
  await waitFor(() => converged(docs, types), {
    timeout,
    message: () => `${label} to converge\n${describeDocs(docs, types)}`
  })
}

/** Small deterministic PRNG (mulberry32), so a failing random run can be replayed by seed. */
export function prng (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    word: (len) => Array.from({ length: len }, () => 'abcdefghijklmnopqrstuvwxyz'[Math.floor(next() * 26)]).join('')
  }
}

export { Y }
