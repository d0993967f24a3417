// Proves, at the byte level with a raw `ws` socket (no provider in between):
// every frame Tandem sends holds exactly one y-websocket message (the v3 JS
// client reads only the first message of a frame); the handshake is answered
// with a SyncStep1 of the server's own and a SyncStep2 in reply to ours; an
// update and an awareness update are echoed to their sender; query-awareness
// (type 3) is answered with the known states; a newcomer is sent the current
// awareness states; and a closed connection's awareness state is announced as
// removed (state null) to the others. And an invalid update gets its sender's
// socket closed with a deliberate close code while the document and the other
// connections stay untouched.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { startServer } from '../../harness/server.js'
import { waitFor } from '../lib/clients.js'

let server
const sockets = []

before(async () => { server = await startServer() })
afterEach(() => { for (const s of sockets.splice(0)) s.terminate() })
after(async () => { await server?.destroy() })

/** Decodes one frame; throws if it is not exactly one well-formed message. */
function decodeFrame (buf) {
  const bytes = new Uint8Array(buf)
  const d = decoding.createDecoder(bytes)
  const type = decoding.readVarUint(d)
  let msg
  if (type === 0) {
    const sub = decoding.readVarUint(d)
    msg = { type, sub, payload: decoding.readVarUint8Array(d) }
  } else if (type === 1) {
    msg = { type, payload: decoding.readVarUint8Array(d) }
  } else if (type === 2) {
    msg = { type, sub: decoding.readVarUint(d), reason: decoding.readVarString(d) }
  } else if (type === 3) {
    msg = { type }
  } else {
    throw new Error(`unknown message type ${type} in frame ${Buffer.from(bytes).toString('hex')}`)
  }
  if (decoding.hasContent(d)) {
    throw new Error(`frame holds more than one message (${bytes.length - d.pos} trailing bytes after a type-${type} message): ` +
      Buffer.from(bytes).toString('hex'))
  }
  return msg
}

/** Decodes an awareness payload into [{client, clock, state}]. */
function decodeAwareness (payload) {
  const d = decoding.createDecoder(payload)
  const n = decoding.readVarUint(d)
  const out = []
  for (let i = 0; i < n; i++) {
    const client = decoding.readVarUint(d)
    const clock = decoding.readVarUint(d)
    out.push({ client, clock, state: JSON.parse(decoding.readVarString(d)) })
  }
  return out
}

function encodeAwareness (entries) {
  const inner = encoding.createEncoder()
  encoding.writeVarUint(inner, entries.length)
  for (const { client, clock, state } of entries) {
    encoding.writeVarUint(inner, client)
    encoding.writeVarUint(inner, clock)
    encoding.writeVarString(inner, JSON.stringify(state))
  }
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint8Array(e, encoding.toUint8Array(inner))
  return encoding.toUint8Array(e)
}

function syncFrame (sub, payload) {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, sub)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

/** A raw socket that records every decoded frame (and any decoding error). */
async function rawClient (room) {
  const ws = new WebSocket(`${server.url}/${encodeURIComponent(room)}`)
  sockets.push(ws)
  const c = { ws, frames: [], errors: [], closed: null }
  ws.on('message', (data, isBinary) => {
    if (!isBinary) { c.errors.push(`text frame: ${data}`); return }
    try { c.frames.push(decodeFrame(data)) } catch (err) { c.errors.push(err.message) }
  })
  ws.on('close', (code) => { c.closed = code })
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', (err) => reject(new Error(`raw socket to ${room}: ${err.message}\n${server.logTail()}`)))
  })
  c.find = (pred) => c.frames.find(pred)
  c.waitFrame = (pred, message) => waitFor(() => {
    if (c.errors.length) throw new Error(c.errors.join('\n'))
    return c.frames.find(pred)
  }, { message: () => `${message}; frames so far: ${JSON.stringify(c.frames.map((f) => ({ type: f.type, sub: f.sub })))}; errors: ${c.errors.join('; ')}` })
  return c
}

test('handshake: server sends its SyncStep1 and answers ours with SyncStep2, one message per frame', { timeout: 30000 }, async () => {
  // Seed the room through one raw client, then handshake with a second.
  const seed = await rawClient('proto-handshake')
  const seedDoc = new Y.Doc()
  seedDoc.getText('t').insert(0, 'seeded')
  seed.ws.send(syncFrame(2, Y.encodeStateAsUpdate(seedDoc)))
  await seed.waitFrame((f) => f.type === 0 && f.sub === 2, 'echo of the seeding update')

  const c = await rawClient('proto-handshake')
  const doc = new Y.Doc()
  c.ws.send(syncFrame(0, Y.encodeStateVector(doc)))
  const step1 = await c.waitFrame((f) => f.type === 0 && f.sub === 0, "server's SyncStep1")
  const step2 = await c.waitFrame((f) => f.type === 0 && f.sub === 1, 'SyncStep2 answering our SyncStep1')
  Y.applyUpdate(doc, step2.payload)
  assert.equal(doc.getText('t').toString(), 'seeded')
  // The server's state vector names the seeding client.
  assert.ok(Y.decodeStateVector(step1.payload).has(seedDoc.clientID))
  assert.deepEqual(c.errors, [])
  assert.deepEqual(seed.errors, [])
})

test('updates and awareness are echoed to the sender; query-awareness is answered', { timeout: 30000 }, async () => {
  const c = await rawClient('proto-echo')
  const doc = new Y.Doc()
  c.ws.send(syncFrame(0, Y.encodeStateVector(doc)))
  await c.waitFrame((f) => f.type === 0 && f.sub === 1, 'SyncStep2')

  doc.getText('t').insert(0, 'echo me')
  c.ws.send(syncFrame(2, Y.encodeStateAsUpdate(doc)))
  const echoed = await c.waitFrame((f) => f.type === 0 && (f.sub === 2 || (f.sub === 1 && f.payload.length > 2)) &&
    (() => { const d = new Y.Doc(); Y.applyUpdate(d, f.payload); return d.getText('t').toString() === 'echo me' })(),
  'the update echoed back to its sender')
  assert.ok(echoed)

  const me = 424242
  c.ws.send(encodeAwareness([{ client: me, clock: 1, state: { user: { name: 'raw' } } }]))
  await c.waitFrame((f) => f.type === 1 && decodeAwareness(f.payload).some((e) => e.client === me && e.state?.user?.name === 'raw'),
    'our awareness update echoed back')

  const before = c.frames.length
  c.ws.send(Uint8Array.of(3))
  await waitFor(() => c.frames.slice(before).some((f) => f.type === 1 &&
    decodeAwareness(f.payload).some((e) => e.client === me && e.state?.user?.name === 'raw')), {
    message: () => `an awareness answer to query-awareness listing client ${me}`
  })
  assert.deepEqual(c.errors, [])
})

test('newcomers get current awareness states; a closed connection is announced as removed', { timeout: 30000 }, async () => {
  const a = await rawClient('proto-awareness')
  a.ws.send(syncFrame(0, Y.encodeStateVector(new Y.Doc())))
  const aid = 777001
  a.ws.send(encodeAwareness([{ client: aid, clock: 3, state: { user: { name: 'A' } } }]))
  await a.waitFrame((f) => f.type === 1 && decodeAwareness(f.payload).some((e) => e.client === aid), 'awareness echo to A')

  const b = await rawClient('proto-awareness')
  b.ws.send(syncFrame(0, Y.encodeStateVector(new Y.Doc())))
  await b.waitFrame((f) => f.type === 1 && decodeAwareness(f.payload).some((e) => e.client === aid && e.state?.user?.name === 'A'),
    "A's awareness state sent to newcomer B without anyone asking")

  a.ws.close()
  const removal = await b.waitFrame((f) => f.type === 1 && decodeAwareness(f.payload).some((e) => e.client === aid && e.state === null),
    "a null awareness state for A after A's socket closed")
  const entry = decodeAwareness(removal.payload).find((e) => e.client === aid)
  // y-protocols drops a null state whose clock is older than the one it has.
  assert.ok(entry.clock >= 3, `removal carries clock ${entry.clock}, below A's last clock 3`)
  assert.deepEqual(b.errors, [])
})

test('an invalid update closes only its sender, with a close code, and leaves the document untouched', { timeout: 30000 }, async () => {
  const good = await rawClient('proto-invalid')
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'intact')
  good.ws.send(syncFrame(0, Y.encodeStateVector(new Y.Doc())))
  good.ws.send(syncFrame(2, Y.encodeStateAsUpdate(doc)))
  await good.waitFrame((f) => f.type === 0 && f.sub === 2, 'echo of the good update')

  const bad = await rawClient('proto-invalid')
  // A sync Update whose payload is not a Yjs update.
  bad.ws.send(Uint8Array.of(0, 2, 5, 0xff, 0xff, 0xff, 0xff, 0xff))
  await waitFor(() => bad.closed !== null, { message: 'the server to close the socket that sent an invalid update' })
  assert.ok(![1000, 1005, 1006].includes(bad.closed),
    `the invalid update's socket closed with ${bad.closed}, not a deliberate error code`)

  // The other connection is still open and still served.
  assert.equal(good.closed, null, 'the well-behaved connection was closed too')
  const fresh = await rawClient('proto-invalid')
  fresh.ws.send(syncFrame(0, Y.encodeStateVector(new Y.Doc())))
  const step2 = await fresh.waitFrame((f) => f.type === 0 && f.sub === 1, 'SyncStep2 after the invalid update')
  const check = new Y.Doc()
  Y.applyUpdate(check, step2.payload)
  assert.equal(check.getText('t').toString(), 'intact')
  assert.deepEqual([...Y.decodeStateVector(Y.encodeStateVector(check))], [...Y.decodeStateVector(Y.encodeStateVector(doc))])
})
