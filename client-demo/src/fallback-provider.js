// TandemProvider: a y-websocket-compatible provider that falls back to Tandem's HTTP transport
// (Server-Sent Events for what the server sends, POST for what the client sends) when a
// WebSocket cannot be opened: no WebSocket in this runtime, or a proxy that refuses upgrades.
//
//   const provider = new TandemProvider('ws://127.0.0.1:1234', roomPath(name), doc, {
//     params: { token },         // the token: `?token=` on the socket, `Authorization` over HTTP
//     transport: 'auto',         // 'auto' (default) | 'websocket' | 'sse'
//   })
//
// The same constructor and events as y-websocket's WebsocketProvider ('status', 'sync',
// 'synced', 'connection-close', 'connection-error', 'closed'; `synced`, `wsconnected`,
// `awareness`, `messageHandlers`, `connect()`, `disconnect()`, `destroy()`), plus
// `transport` ('websocket' or 'sse': what the current or last connection used) and
// `sendMessage(bytes)` and `ws`. In 'auto' it tries the socket first; after FALLBACK_AFTER
// attempts in a row that never opened, it uses the HTTP transport (see _chooseTransport).

import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { ObservableV2 } from 'lib0/observable'
import * as syncProtocol from 'y-protocols/sync'
import * as authProtocol from 'y-protocols/auth'
import * as awarenessProtocol from 'y-protocols/awareness'

export const MESSAGE_SYNC = 0
export const MESSAGE_AWARENESS = 1
export const MESSAGE_AUTH = 2
export const MESSAGE_QUERY_AWARENESS = 3

/** Socket attempts in a row that never opened before 'auto' switches to the HTTP transport. */
const FALLBACK_AFTER = 2
/** A socket that has not opened after this long counts as failed. */
const OPEN_TIMEOUT_MS = 5000
/** Messages and bytes one POST carries at most (the server's --max-messages-per-frame is 64). */
const POST_MESSAGES = 32
const POST_BYTES = 1 << 20
/** HTTP statuses after which reconnecting cannot help. */
const FINAL_STATUS = new Set([400, 401, 403, 404, 410])

/** The y-websocket message handlers (same signature, so wrappers like saved.js work). */
export const messageHandlers = []
messageHandlers[MESSAGE_SYNC] = (encoder, decoder, provider, emitSynced) => {
  encoding.writeVarUint(encoder, MESSAGE_SYNC)
  const kind = syncProtocol.readSyncMessage(decoder, encoder, provider.doc, provider)
  if (emitSynced && kind === syncProtocol.messageYjsSyncStep2 && !provider.synced) {
    provider.synced = true
  }
}
messageHandlers[MESSAGE_QUERY_AWARENESS] = (encoder, _decoder, provider) => {
  encoding.writeVarUint(encoder, MESSAGE_AWARENESS)
  const clients = Array.from(provider.awareness.getStates().keys())
  encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(provider.awareness, clients))
}
messageHandlers[MESSAGE_AWARENESS] = (_encoder, decoder, provider) => {
  awarenessProtocol.applyAwarenessUpdate(provider.awareness, decoding.readVarUint8Array(decoder), provider)
}
messageHandlers[MESSAGE_AUTH] = (_encoder, decoder, provider) => {
  authProtocol.readAuthMessage(decoder, provider.doc, (_doc, reason) => {
    console.warn(`Permission denied to access ${provider.roomname}.\n${reason}`)
  })
}

/**
 * The document name a y-websocket room path stands for, by the server's rule: escapes of
 * reserved characters (and of `%`) stay escaped in uppercase, every other escape is decoded.
 * @param {string} room
 */
export function documentName (room) {
  const keep = (byte) => byte === 0x25 || ":/?#[]@!$&'()*+,;=".includes(String.fromCharCode(byte))
  return room.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    const bytes = run.slice(1).split('%').map((h) => parseInt(h, 16))
    let out = ''
    let pending = []
    const flush = () => {
      if (pending.length === 0) return
      const escaped = pending.map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join('')
      try { out += decodeURIComponent(escaped) } catch { out += escaped }
      pending = []
    }
    for (const b of bytes) {
      if (b < 0x80 && keep(b)) {
        flush()
        out += '%' + b.toString(16).toUpperCase().padStart(2, '0')
      } else {
        pending.push(b)
      }
    }
    flush()
    return out
  })
}

const base64ToBytes = (text) => {
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

/**
 * The HTTP transport of one connection: a fetch-streamed SSE response and POSTs, one at a
 * time, each carrying what queued up meanwhile. (fetch rather than EventSource: it can send
 * the token as a header, and sees the heartbeat comments, which keep `lastMessageReceived`
 * fresh.)
 */
class SseConnection {
  /**
   * @param {string} url the sync URL
   * @param {string|undefined} token
   * @param {{ onopen: (info: object) => void, onmessage: (data: Uint8Array) => void,
   *           onbeat: () => void, onclose: (event: {code: number, reason: string, final?: boolean}) => void }} handlers
   */
  constructor (url, token, handlers) {
    this.url = url
    this.token = token
    this.handlers = handlers
    this.abort = new AbortController()
    this.queue = []
    this.posting = false
    this.postUrl = null
    this.closed = false
    this.run()
  }

  async run () {
    let event = { code: 1006, reason: 'connection lost' }
    try {
      const headers = { Accept: 'text/event-stream' }
      if (this.token) headers.Authorization = `Bearer ${this.token}`
      const res = await fetch(this.url, { headers, signal: this.abort.signal, cache: 'no-store' })
      if (!res.ok) {
        const body = await res.json().catch(() => ({}))
        event = { code: res.status, reason: body.reason ?? res.statusText, final: FINAL_STATUS.has(res.status) }
      } else {
        event = await this.read(res.body.getReader()) ?? event
      }
    } catch (err) {
      if (!this.closed) event = { code: 1006, reason: String(err?.message ?? err) }
    }
    this.close(event)
  }

  /** Reads events until the stream ends; returns the close event, if one came. */
  async read (reader) {
    const decoder = new TextDecoder()
    let text = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return null
      text += decoder.decode(value, { stream: true })
      this.handlers.onbeat()
      let end
      while ((end = text.search(/\r?\n\r?\n/)) >= 0) {
        const block = text.slice(0, end)
        text = text.slice(end).replace(/^\r?\n\r?\n/, '')
        let name = 'message'
        let data = ''
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith('event:')) name = line.slice(6).trim()
          else if (line.startsWith('data:')) data += line.slice(5).trim()
        }
        if (!data) continue
        if (name === 'session') {
          const info = JSON.parse(data)
          this.postUrl = new URL(info.post, this.url).href
          this.handlers.onopen(info)
        } else if (name === 'close') {
          return JSON.parse(data)
        } else if (name === 'message' && !this.closed) {
          this.handlers.onmessage(base64ToBytes(data))
        }
      }
    }
  }

  /** Queues a message; POSTs go out one at a time, so they reach the server in order. */
  send (message) {
    if (this.closed) return
    this.queue.push(message)
    this.flush()
  }

  async flush () {
    if (this.posting || this.queue.length === 0 || !this.postUrl || this.closed) return
    this.posting = true
    let count = 0
    let bytes = 0
    while (count < this.queue.length && count < POST_MESSAGES && (count === 0 || bytes + this.queue[count].length <= POST_BYTES)) {
      bytes += this.queue[count++].length
    }
    const batch = this.queue.splice(0, count)
    const body = new Uint8Array(bytes)
    let at = 0
    for (const m of batch) { body.set(m, at); at += m.length }
    try {
      const res = await fetch(this.postUrl, {
        method: 'POST',
        body,
        headers: { 'Content-Type': 'application/octet-stream' },
        signal: this.abort.signal
      })
      // A refused POST closed the session: its stream brings the close event.
      if (!res.ok) await res.body?.cancel()
    } catch {
      this.close({ code: 1006, reason: 'a POST failed' })
    }
    this.posting = false
    this.flush()
  }

  /** Ends the connection (once); `event` is what the provider is told. */
  close (event = { code: 1000, reason: '' }) {
    if (this.closed) return
    this.closed = true
    this.abort.abort()
    this.handlers.onclose(event)
  }
}

/** A WebSocket in the shape SseConnection has. */
class SocketConnection {
  constructor (url, WebSocketImpl, handlers) {
    this.handlers = handlers
    this.closed = false
    let ws
    try {
      ws = new WebSocketImpl(url)
    } catch (err) {
      this.ws = null
      setTimeout(() => this.close({ code: 1006, reason: String(err?.message ?? err) }))
      return
    }
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    const timer = setTimeout(() => { if (ws.readyState !== 1) this.close({ code: 1006, reason: 'open timeout' }) }, OPEN_TIMEOUT_MS)
    ws.onopen = () => { clearTimeout(timer); handlers.onopen({}) }
    ws.onmessage = (e) => { handlers.onbeat(); handlers.onmessage(new Uint8Array(e.data)) }
    ws.onerror = (e) => handlers.onerror?.(e)
    ws.onclose = (e) => { clearTimeout(timer); this.close({ code: e.code, reason: e.reason }) }
  }

  send (message) {
    if (this.ws?.readyState === 1) this.ws.send(message)
  }

  close (event = { code: 1000, reason: '' }) {
    if (this.closed) return
    this.closed = true
    try { this.ws?.close() } catch {}
    this.handlers.onclose(event)
  }
}

export class TandemProvider extends ObservableV2 {
  /**
   * @param {string} serverUrl ws:// or wss:// address of the server (http(s):// works too)
   * @param {string} roomname the room path, as for WebsocketProvider
   * @param {import('yjs').Doc} doc
   * @param {{ connect?: boolean, awareness?: awarenessProtocol.Awareness, params?: Record<string,string>,
   *           WebSocketPolyfill?: typeof WebSocket | null, resyncInterval?: number,
   *           maxBackoffTime?: number, transport?: 'auto'|'websocket'|'sse' }} [opts]
   */
  constructor (serverUrl, roomname, doc, {
    connect = true,
    awareness = new awarenessProtocol.Awareness(doc),
    params = {},
    WebSocketPolyfill = globalThis.WebSocket,
    resyncInterval = -1,
    maxBackoffTime = 2500,
    transport = 'auto'
  } = {}) {
    super()
    this.serverUrl = serverUrl.replace(/\/+$/, '')
    this.roomname = roomname
    this.doc = doc
    this.awareness = awareness
    this.params = params
    this.WebSocketPolyfill = WebSocketPolyfill
    this.maxBackoffTime = maxBackoffTime
    this.messageHandlers = messageHandlers.slice()
    this.wanted = transport
    this.transport = transport === 'sse' || !WebSocketPolyfill ? 'sse' : 'websocket'
    this.conn = null
    this.wsconnected = false
    this.wsconnecting = false
    this.wsUnsuccessfulReconnects = 0
    this.failedOpens = 0
    this.socketWorked = false
    this.wsLastMessageReceived = 0
    this.shouldConnect = connect
    this._synced = false
    this._reconnectTimer = null
    this.messageReconnectTimeout = 30000

    this._updateHandler = (update, origin) => {
      if (origin === this) return
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, MESSAGE_SYNC)
      syncProtocol.writeUpdate(encoder, update)
      this.sendMessage(encoding.toUint8Array(encoder))
    }
    this.doc.on('update', this._updateHandler)
    this._awarenessUpdateHandler = ({ added, updated, removed }) => {
      const changed = added.concat(updated).concat(removed)
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, MESSAGE_AWARENESS)
      encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(awareness, changed))
      this.sendMessage(encoding.toUint8Array(encoder))
    }
    awareness.on('update', this._awarenessUpdateHandler)
    this._exitHandler = () => awarenessProtocol.removeAwarenessStates(this.awareness, [doc.clientID], 'app closed')
    if (typeof addEventListener === 'function') addEventListener('pagehide', this._exitHandler)
    this._resyncInterval = resyncInterval > 0
      ? setInterval(() => this._sendSyncStep1(), resyncInterval)
      : null
    this._checkInterval = setInterval(() => {
      if (this.wsconnected && this.messageReconnectTimeout < Date.now() - this.wsLastMessageReceived) {
        this.conn?.close({ code: 4002, reason: 'no message from the server' })
      }
    }, this.messageReconnectTimeout / 10)
    if (connect) this.connect()
  }

  /** Whether the initial sync with the server is done. */
  get synced () { return this._synced }
  set synced (state) {
    if (this._synced !== state) {
      this._synced = state
      this.emit('synced', [state])
      this.emit('sync', [state])
    }
  }

  /** The address the socket opens (y-websocket's layout). */
  get url () {
    const query = new URLSearchParams(this.params).toString()
    return `${this.serverUrl}/${this.roomname}${query ? '?' + query : ''}`
  }

  /** The HTTP transport's address of this document. */
  get syncUrl () {
    const http = this.serverUrl.replace(/^ws(s?):/, 'http$1:')
    const name = encodeURIComponent(documentName(this.roomname))
    const query = new URLSearchParams(Object.entries(this.params).filter(([k]) => k !== 'token')).toString()
    return `${http}/api/v1/documents/${name}/sync${query ? '?' + query : ''}`
  }

  /** Sends one y-websocket message over the open connection (dropped when there is none). */
  sendMessage (message) {
    if (this.wsconnected) this.conn.send(message)
    return this.wsconnected
  }

  _sendSyncStep1 () {
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    syncProtocol.writeSyncStep1(encoder, this.doc)
    this.sendMessage(encoding.toUint8Array(encoder))
  }

  _receive (data) {
    const decoder = decoding.createDecoder(data)
    const encoder = encoding.createEncoder()
    const type = decoding.readVarUint(decoder)
    const handler = this.messageHandlers[type]
    if (!handler) {
      console.error('Unable to compute message')
      return
    }
    handler(encoder, decoder, this, true, type)
    if (encoding.length(encoder) > 1) this.sendMessage(encoding.toUint8Array(encoder))
  }

  _open () {
    if (this.conn || !this.shouldConnect) return
    this.wsconnecting = true
    this.wsconnected = false
    this.synced = false
    let opened = false
    const handlers = {
      onopen: (info) => {
        opened = true
        this.wsLastMessageReceived = Date.now()
        this.wsconnecting = false
        this.wsconnected = true
        this.wsUnsuccessfulReconnects = 0
        this.failedOpens = 0
        this.readOnly = info.access === 'ro'
        this.emit('status', [{ status: 'connected' }])
        this._sendSyncStep1()
        if (this.awareness.getLocalState() !== null) {
          const encoder = encoding.createEncoder()
          encoding.writeVarUint(encoder, MESSAGE_AWARENESS)
          encoding.writeVarUint8Array(encoder, awarenessProtocol.encodeAwarenessUpdate(this.awareness, [this.doc.clientID]))
          this.sendMessage(encoding.toUint8Array(encoder))
        }
      },
      onbeat: () => { this.wsLastMessageReceived = Date.now() },
      onmessage: (data) => this._receive(data),
      onerror: (event) => this.emit('connection-error', [event, this]),
      onclose: (event) => this._closed(conn, event, opened)
    }
    const conn = this.transport === 'sse'
      ? new SseConnection(this.syncUrl, this.params.token, handlers)
      : new SocketConnection(this.url, this.WebSocketPolyfill, handlers)
    this.conn = conn
    this.emit('status', [{ status: 'connecting' }])
  }

  _closed (conn, event, opened) {
    if (this.conn !== conn) return
    this.conn = null
    this.wsconnecting = false
    if (this.wsconnected) {
      this.wsconnected = false
      this.synced = false
      const others = Array.from(this.awareness.getStates().keys()).filter((c) => c !== this.doc.clientID)
      awarenessProtocol.removeAwarenessStates(this.awareness, others, this)
      this.emit('status', [{ status: 'disconnected' }])
    } else {
      this.wsUnsuccessfulReconnects++
    }
    this.emit('connection-close', [event, this])
    if (this.wanted === 'auto' && this.WebSocketPolyfill) this._chooseTransport(opened, event)
    // 44xx closes (token expired or revoked, document deleted) and refusals that a retry
    // cannot change are final, as for y-websocket 3.
    if (event.final || (event.code >= 4400 && event.code < 4500)) {
      this.shouldConnect = false
      this.emit('closed', [{ code: event.code, reason: event.reason }])
      return
    }
    if (!this.shouldConnect) return
    const delay = Math.min(2 ** this.wsUnsuccessfulReconnects * 100, this.maxBackoffTime)
    this._reconnectTimer = setTimeout(() => { this._reconnectTimer = null; this._open() }, delay)
  }

  /**
   * 'auto': which transport the next attempt uses. The socket, until FALLBACK_AFTER attempts in
   * a row never opened; then HTTP. Back to the socket when HTTP did not open either (the server
   * is unreachable, not the socket: e.g. while it restarts or the network is down), or when an
   * HTTP session ends and the socket has worked before.
   */
  _chooseTransport (opened, event) {
    if (this.transport === 'websocket') {
      if (opened) {
        this.socketWorked = true
        this.failedOpens = 0
      } else if (++this.failedOpens >= FALLBACK_AFTER) {
        this.transport = 'sse'
        this.failedOpens = 0
      }
    } else if (opened ? this.socketWorked : !event.final) {
      this.transport = 'websocket'
    }
  }

  /** The WebSocket of the current connection, if it uses one (as y-websocket's `ws`). */
  get ws () {
    return this.conn instanceof SocketConnection ? this.conn.ws : null
  }

  connect () {
    this.shouldConnect = true
    if (!this.wsconnected && !this.conn) this._open()
  }

  disconnect () {
    this.shouldConnect = false
    clearTimeout(this._reconnectTimer)
    this._reconnectTimer = null
    this.conn?.close({ code: 1000, reason: '' })
  }

  destroy () {
    if (this._resyncInterval) clearInterval(this._resyncInterval)
    clearInterval(this._checkInterval)
    this.disconnect()
    if (typeof removeEventListener === 'function') removeEventListener('pagehide', this._exitHandler)
    this.awareness.off('update', this._awarenessUpdateHandler)
    this.doc.off('update', this._updateHandler)
    super.destroy()
  }
}
