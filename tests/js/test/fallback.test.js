// Proves: the demo's TandemProvider (client-demo/src/fallback-provider.js) syncs over the HTTP
// fallback transport (SSE + POST) with real y-websocket clients on the same document, both
// when forced to it and when no WebSocket opens; its awareness reaches the socket clients and
// leaves when it disconnects; it reconnects after the server closed its session; and it maps
// room paths to document names as the server does.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { startServer } from '../../harness/server.js'
import { ClientPool, Y, waitFor, waitSynced } from '../lib/clients.js'
import { TandemProvider, documentName } from '../lib/demo.js'

const ADMIN = 'fallback-tests-admin-token'
let server
const pool = new ClientPool()
const providers = []

/** A TandemProvider, destroyed after the test. */
function fallback (room, opts = {}) {
  const doc = new Y.Doc()
  const provider = new TandemProvider(server.url, room, doc, opts)
  providers.push(provider)
  return { doc, provider }
}

/** A WebSocket class that never opens, as behind a proxy that refuses upgrades. */
class RefusedSocket {
  constructor () { setTimeout(() => this.onclose?.({ code: 1006, reason: '' }), 5) }
  close () {}
}

before(async () => { server = await startServer({ args: ['--admin-token', ADMIN] }) })
afterEach(() => {
  for (const p of providers.splice(0)) {
    p.destroy()
    p.doc.destroy()
  }
  pool.destroyAll()
})
after(async () => { await server?.destroy() })

test('a provider forced to SSE + POST edits together with a y-websocket client', { timeout: 30000 }, async () => {
  const f = fallback('fallback/forced', { transport: 'sse' })
  const ws = pool.open(server.url, 'fallback/forced')
  await waitSynced(f.provider, 'fallback provider')
  await waitSynced(ws.provider, 'websocket provider')
  assert.equal(f.provider.transport, 'sse')

  f.doc.getText('t').insert(0, 'over http. ')
  ws.doc.getText('t').insert(0, 'over ws. ')
  const same = () => f.doc.getText('t').toString() === ws.doc.getText('t').toString()
  await waitFor(() => same() && f.doc.getText('t').length === 20, {
    message: () => `both texts (${f.doc.getText('t')} / ${ws.doc.getText('t')})\n${server.logTail()}`
  })

  // Many edits in a burst travel in a few POSTs, in order.
  for (let i = 0; i < 200; i++) f.doc.getText('t').insert(f.doc.getText('t').length, String(i % 10))
  await waitFor(() => same() && ws.doc.getText('t').length === 220, { message: 'the burst arrived' })

  // Presence both ways; the fallback client's state leaves when it disconnects.
  f.provider.awareness.setLocalStateField('user', { name: 'http' })
  ws.provider.awareness.setLocalStateField('user', { name: 'ws' })
  const id = f.doc.clientID
  await waitFor(() => ws.provider.awareness.getStates().get(id)?.user?.name === 'http', { message: 'fallback presence at the socket client' })
  await waitFor(() => f.provider.awareness.getStates().get(ws.doc.clientID)?.user?.name === 'ws', { message: 'socket presence at the fallback client' })
  f.provider.disconnect()
  await waitFor(() => !ws.provider.awareness.getStates().has(id), { message: 'presence removed when the session ends' })
})

test('with no WebSocket to open, the provider falls back on its own', { timeout: 30000 }, async () => {
  const statuses = []
  const f = fallback('fallback/auto', { WebSocketPolyfill: RefusedSocket })
  f.provider.on('status', ({ status }) => statuses.push(status))
  await waitSynced(f.provider, 'fallback provider')
  assert.equal(f.provider.transport, 'sse')
  assert.ok(statuses.includes('connected'))

  // In a runtime without WebSocket at all it starts on the fallback.
  const none = fallback('fallback/auto', { WebSocketPolyfill: null })
  assert.equal(none.provider.transport, 'sse')
  await waitSynced(none.provider, 'provider without WebSocket')
  f.doc.getMap('m').set('k', 'v')
  await waitFor(() => none.doc.getMap('m').get('k') === 'v', { message: 'fallback to fallback' })
})

test('a session closed by the server reconnects and resyncs', { timeout: 30000 }, async () => {
  const f = fallback('fallback-reconnect', { transport: 'sse' })
  await waitSynced(f.provider, 'fallback provider')
  const closes = []
  f.provider.on('connection-close', (event) => closes.push(event?.code))
  const r = await server.admin(ADMIN, 'POST', '/documents/fallback-reconnect/disconnect')
  assert.equal(r.status, 200, r.text)
  await waitFor(() => closes.includes(4000), { message: () => `a 4000 close (got ${closes})` })
  // Edits made while reconnecting are sent after the resync.
  f.doc.getText('t').insert(0, 'after the close')
  await waitSynced(f.provider, 'fallback provider again')
  const ws = pool.open(server.url, 'fallback-reconnect')
  await waitFor(() => ws.doc.getText('t').toString() === 'after the close', { message: 'the edit reached the server' })
})

test('in auto mode a server that is down does not pin the provider to HTTP', { timeout: 60000 }, async () => {
  const f = fallback('fallback-restart', { WebSocketPolyfill: WebSocket, maxBackoffTime: 200 })
  await waitSynced(f.provider, 'provider')
  assert.equal(f.provider.transport, 'websocket')
  const tried = []
  f.provider.on('status', ({ status }) => { if (status === 'connecting') tried.push(f.provider.transport) })
  await server.stop()
  // Two failed sockets, then HTTP, which fails too: the socket is tried again.
  await waitFor(() => tried.includes('sse') && tried.lastIndexOf('websocket') > tried.indexOf('sse'),
    { message: () => `attempts ${tried}` })
  f.doc.getText('t').insert(0, 'while down')
  await server.start()
  await waitFor(() => f.provider.synced, { message: 'synced after the restart' })
  const ws = pool.open(server.url, 'fallback-restart')
  await waitFor(() => ws.doc.getText('t').toString() === 'while down', { message: 'the edit made while down' })
})

test('a refused session is final and says why', { timeout: 30000 }, async () => {
  const closed = []
  const f = fallback('a%00b', { transport: 'sse' })
  f.provider.on('closed', (event) => closed.push(event))
  await waitFor(() => closed.length === 1, { message: 'closed' })
  assert.equal(closed[0].code, 400)
  assert.match(closed[0].reason, /control/i)
})

test('room paths map to document names as the server maps them', () => {
  assert.equal(documentName('team/plan'), 'team/plan')
  assert.equal(documentName('with%20space'), 'with space')
  assert.equal(documentName('%C3%BC'), 'ü')
  assert.equal(documentName('a%2fb'), 'a%2Fb')
  assert.equal(documentName('100%25'), '100%25')
  assert.equal(documentName('100%'), '100%')
  assert.equal(documentName('%61bc%3A'), 'abc%3A')
})
