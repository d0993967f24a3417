// Proves: TipTap's own provider, @hocuspocus/provider 4.x, works against Tandem's bare address:
// one document, several documents over one socket (attached and detached independently), the
// auth matrix (no token, bad token, prefix grants, read-only reported as `readonly`), interop
// with y-websocket clients on the same document (content and awareness), `unsyncedChanges`
// reaching 0 meaning "durable" (the server is SIGKILLed right then and the edit is still
// there), and offline edits merged after a server restart.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { rmSync } from 'node:fs'
import WebSocket from 'ws'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { TandemServer, makeTempDir, startServer } from '../../harness/server.js'
import { ClientPool, Y, waitConverged, waitFor } from '../lib/clients.js'

const SECRET = 'tandem-js-hocuspocus-secret-0123456789abcdef'
const TEXT = { text: ['text'] }

/** Every provider and socket a test opens, destroyed after it. */
const opened = []
const pool = new ClientPool()
const dirs = []
let server

function socket (url) {
  const ws = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 100, maxDelay: 500 })
  opened.push(ws)
  return ws
}

/** A provider for `name`; on its own socket unless `websocketProvider` is given. */
function provider (url, name, opts = {}) {
  const doc = opts.document ?? new Y.Doc()
  const events = { failed: [], closed: [], authenticated: [] }
  const config = {
    name,
    document: doc,
    token: opts.token ?? null,
    onAuthenticationFailed: ({ reason }) => events.failed.push(reason),
    onAuthenticated: ({ scope }) => events.authenticated.push(scope),
    onClose: ({ event }) => events.closed.push(event.reason)
  }
  const p = opts.websocketProvider
    ? new HocuspocusProvider({ ...config, websocketProvider: opts.websocketProvider })
    : new HocuspocusProvider({ ...config, url, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 100, maxDelay: 500 })
  if (opts.websocketProvider) p.attach()
  p.events = events
  opened.push(p)
  return { doc, provider: p }
}

async function synced (p, label) {
  await waitFor(() => p.isSynced, { message: `${label} to sync` })
}

function jwt (claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

before(async () => { server = await startServer() })
afterEach(() => {
  for (const o of opened.splice(0)) {
    try { o.destroy() } catch {}
  }
  pool.destroyAll()
})
after(async () => {
  await server?.destroy()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

test('one document syncs between two Hocuspocus providers at the bare address', async () => {
  const a = provider(server.url, 'hp-single')
  const b = provider(server.url, 'hp-single')
  await synced(a.provider, 'a')
  await synced(b.provider, 'b')
  assert.deepEqual(a.provider.events.authenticated, ['read-write'])
  a.doc.getText('text').insert(0, 'hello from a')
  b.doc.getText('text').insert(0, 'and b: ')
  await waitConverged([a.doc, b.doc], TEXT, { label: 'a and b' })
  assert.match(a.doc.getText('text').toString(), /hello from a/)
})

test('several documents share one socket and detach independently', async () => {
  const ws = socket(server.url)
  const one = provider(server.url, 'hp-mux-1', { websocketProvider: ws })
  const two = provider(server.url, 'hp-mux-2', { websocketProvider: ws })
  await synced(one.provider, 'doc 1')
  await synced(two.provider, 'doc 2')
  const y1 = await pool.openSynced(server.url, 'hp-mux-1')
  const y2 = await pool.openSynced(server.url, 'hp-mux-2')
  one.doc.getText('text').insert(0, 'first')
  two.doc.getText('text').insert(0, 'second')
  await waitConverged([one.doc, y1.doc], TEXT, { label: 'doc 1' })
  await waitConverged([two.doc, y2.doc], TEXT, { label: 'doc 2' })
  assert.equal(y1.doc.getText('text').toString(), 'first')
  assert.equal(y2.doc.getText('text').toString(), 'second')
  // Detaching document 1 leaves document 2 live on the same socket.
  one.provider.detach()
  y2.doc.getText('text').insert(6, ' more')
  await waitConverged([two.doc, y2.doc], TEXT, { label: 'doc 2 after detaching doc 1' })
  assert.equal(ws.status, 'connected')
})

test('auth: missing and bad tokens are refused with a reason, grants and read-only apply', async () => {
  const cwd = makeTempDir()
  dirs.push(cwd)
  const tokened = new TandemServer({ cwd, args: ['--auth', 'token'], env: { TANDEM_JWT_SECRET: SECRET } })
  await tokened.start()
  try {
    const ws = socket(tokened.url)
    const none = provider(tokened.url, 'team/a', { websocketProvider: ws })
    const bad = provider(tokened.url, 'team/b', { websocketProvider: ws, token: 'not.a.jwt' })
    const outside = provider(tokened.url, 'private', { websocketProvider: ws, token: jwt({ sub: 'u', docs: ['team/*'], access: 'rw' }) })
    const granted = provider(tokened.url, 'team/c', { websocketProvider: ws, token: jwt({ sub: 'u', docs: ['team/*'], access: 'rw' }) })
    const reader = provider(tokened.url, 'team/c', { token: jwt({ sub: 'r', docs: ['team/c'], access: 'ro' }) })
    await waitFor(() => none.provider.events.failed.length && bad.provider.events.failed.length &&
      outside.provider.events.failed.length, { message: 'three refusals' })
    for (const p of [none, bad, outside]) assert.ok(p.provider.events.failed[0].length > 0, 'a refusal says why')
    await synced(granted.provider, 'granted')
    await synced(reader.provider, 'reader')
    assert.deepEqual(granted.provider.events.authenticated, ['read-write'])
    assert.equal(reader.provider.authorizedScope, 'readonly')
    granted.doc.getText('text').insert(0, 'by the writer')
    await waitConverged([granted.doc, reader.doc], TEXT, { label: 'writer and reader' })
    await waitFor(() => granted.provider.unsyncedChanges === 0, { message: 'the writer saved' })
    // The reader's edit stays local: never applied, never acknowledged as saved.
    reader.doc.getText('text').insert(0, 'by the reader ')
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.equal(granted.doc.getText('text').toString(), 'by the writer')
    assert.ok(reader.provider.unsyncedChanges > 0, 'a refused write is not reported saved')
  } finally {
    await tokened.destroy()
  }
})

test('a y-websocket client and a Hocuspocus client converge and see each other\'s awareness', async () => {
  const h = provider(server.url, 'hp-interop')
  const y = await pool.openSynced(server.url, 'hp-interop')
  await synced(h.provider, 'hocuspocus client')
  h.provider.setAwarenessField('user', { name: 'hocus' })
  y.provider.awareness.setLocalStateField('user', { name: 'ywebsocket' })
  h.doc.getText('text').insert(0, 'H')
  y.doc.getText('text').insert(0, 'Y')
  await waitConverged([h.doc, y.doc], TEXT, { label: 'interop' })
  const names = (aw) => [...aw.getStates().values()].map((s) => s.user?.name).filter(Boolean).sort()
  await waitFor(() => names(h.provider.awareness).includes('ywebsocket'), { message: 'hocuspocus sees y-websocket' })
  await waitFor(() => names(y.provider.awareness).includes('hocus'), { message: 'y-websocket sees hocuspocus' })
})

test('unsyncedChanges reaches 0 only once the edit is durable: a SIGKILL right then loses nothing', async () => {
  const cwd = makeTempDir()
  dirs.push(cwd)
  const first = new TandemServer({ cwd })
  await first.start()
  const h = provider(first.url, 'hp-durable')
  await synced(h.provider, 'writer')
  await waitFor(() => h.provider.unsyncedChanges === 0, { message: 'handshake saved' })
  for (let i = 0; i < 20; i++) h.doc.getText('text').insert(0, `${i},`)
  assert.ok(h.provider.hasUnsyncedChanges)
  await waitFor(() => h.provider.unsyncedChanges === 0, { message: 'every edit acknowledged' })
  first.child.kill('SIGKILL')
  await first.exited
  const second = new TandemServer({ cwd })
  await second.start()
  try {
    const reader = provider(second.url, 'hp-durable')
    await synced(reader.provider, 'reader after SIGKILL')
    assert.equal(reader.doc.getText('text').toString(), h.doc.getText('text').toString())
  } finally {
    h.provider.destroy()
    await second.stop({ removeCwd: false })
  }
})

test('edits made while the server restarts are merged and saved', { timeout: 60000 }, async () => {
  const cwd = makeTempDir()
  dirs.push(cwd)
  const first = new TandemServer({ cwd })
  await first.start()
  const ws = socket(first.url)
  const h = provider(first.url, 'hp-restart', { websocketProvider: ws })
  await synced(h.provider, 'before restart')
  h.doc.getText('text').insert(0, 'before.')
  await waitFor(() => h.provider.unsyncedChanges === 0, { message: 'saved before restart' })
  await first.stop({ removeCwd: false })
  await waitFor(() => ws.status === 'disconnected', { message: 'the socket to drop' })
  h.doc.getText('text').insert(7, 'offline.')
  const second = new TandemServer({ cwd })
  await second.start()
  try {
    // A new port: as a proxy in front would, the socket reconnects to the new address.
    ws.configuration.url = second.url
    await waitFor(() => h.provider.isSynced && h.provider.unsyncedChanges === 0 &&
      ws.status === 'connected', { timeout: 20000, message: 'reconnected and saved' })
    const y = await pool.openSynced(second.url, 'hp-restart')
    await waitConverged([h.doc, y.doc], TEXT, { label: 'after restart' })
    assert.equal(y.doc.getText('text').toString(), 'before.offline.')
  } finally {
    await second.stop({ removeCwd: false })
  }
})
