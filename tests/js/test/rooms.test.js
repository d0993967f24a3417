// Proves: Tandem treats the whole URL path as the room name, with escapes of
// non-reserved characters decoded. Names with slashes, non-ASCII text, spaces,
// and names that look like server routes (`metrics`, `api/v1/admin`) each work
// as a room where two clients converge; the percent-encoded spelling of each
// segment of a name reaches the same room, but an escaped slash (`a%2Fb`) is a
// different room from `a/b` (RFC 3986: distinct paths, distinct documents); and
// rooms are isolated: content typed in one never shows up in another (a name
// that is a prefix of another, `a/b` vs `a/b/c`, included). The query string
// is not part of the name.

import { afterEach, beforeEach, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, content, stateVector, waitConverged, waitFor } from '../lib/clients.js'

const TYPES = { text: ['text'], map: ['map'] }
const ROOMS = ['a/b/c', 'ünïcödé-文档', 'with space', 'metrics', 'api/v1/admin']
// Not required by the spec list, but a prefix of another room: catches prefix routing.
const EXTRA = ['a/b']
// Each segment percent-encoded, slashes literal: how a client should pass a name.
const roomPath = (name) => name.split('/').map(encodeURIComponent).join('/')
let server
const pool = new ClientPool()

// A fresh server per test: every test uses the same room names and expects them empty.
beforeEach(async () => { server = await startServer() })
afterEach(async () => {
  pool.destroyAll()
  await server?.destroy()
  server = undefined
})

// y-websocket appends the room name to the URL unencoded; the `ws` package then
// percent-encodes what a URL requires (space, non-ASCII) but leaves `/` as is.
for (const name of ROOMS) {
  test(`room ${JSON.stringify(name)}: two clients converge`, { timeout: 30000 }, async () => {
    const room = name
    const a = await pool.openSynced(server.url, room)
    const b = await pool.openSynced(server.url, room)
    a.doc.getText('text').insert(0, `A in ${name}. `)
    b.doc.getText('text').insert(0, `B in ${name}. `)
    b.doc.getMap('map').set('room', name)
    await waitConverged([a.doc, b.doc], TYPES, { label: `two clients in room ${JSON.stringify(name)}` })
    const text = a.doc.getText('text').toString()
    assert.ok(text.includes(`A in ${name}.`) && text.includes(`B in ${name}.`), text)
    assert.equal(a.doc.getMap('map').get('room'), name)
  })

  test(`room ${JSON.stringify(name)}: percent-encoded name ${JSON.stringify(roomPath(name))} is the same room`, { timeout: 30000 }, async () => {
    const a = await pool.openSynced(server.url, name)
    a.doc.getText('text').insert(0, `written via raw name ${name}`)
    const c = await pool.openSynced(server.url, roomPath(name))
    await waitConverged([a.doc, c.doc], TYPES, {
      label: `client on ${JSON.stringify(roomPath(name))} with client on ${JSON.stringify(name)}`
    })
    assert.equal(c.doc.getText('text').toString(), `written via raw name ${name}`)
  })
}

test('an escaped slash names another room: a%2Fb is not a/b', { timeout: 30000 }, async () => {
  const plain = await pool.openSynced(server.url, 'a/b')
  plain.doc.getText('text').insert(0, 'in a/b')
  const escaped = await pool.openSynced(server.url, encodeURIComponent('a/b'))
  const again = await pool.openSynced(server.url, 'a/b')
  await waitConverged([plain.doc, again.doc], TYPES, { label: 'two clients on a/b' })
  assert.equal(escaped.doc.getText('text').toString(), '')
})

test('rooms are isolated from each other', { timeout: 60000 }, async () => {
  const names = [...ROOMS, ...EXTRA]
  const marker = (name) => `<${name}>`
  const perRoom = []
  for (const name of names) {
    const a = pool.open(server.url, name)
    const b = pool.open(server.url, name)
    perRoom.push({ name, a, b })
  }
  await waitFor(() => perRoom.every(({ a, b }) => a.provider.synced && b.provider.synced), {
    message: () => 'all clients to sync: ' +
      perRoom.map(({ name, a, b }) => `${name}=${a.provider.synced}/${b.provider.synced}`).join(' ')
  })
  for (const { name, a, b } of perRoom) {
    a.doc.getText('text').insert(0, marker(name))
    a.doc.getMap('map').set('room', name)
    b.doc.getText('text').insert(0, marker(name))
  }
  for (const { name, a, b } of perRoom) {
    await waitConverged([a.doc, b.doc], TYPES, { label: `room ${JSON.stringify(name)}` })
  }
  // A fresh observer per room, joining while the writers are still connected.
  for (const entry of perRoom) entry.o = await pool.openSynced(server.url, entry.name)

  for (const { name, a, b, o } of perRoom) {
    const text = o.doc.getText('text').toString()
    assert.equal(text, marker(name) + marker(name), `room ${JSON.stringify(name)} holds ${JSON.stringify(text)}`)
    assert.equal(o.doc.getMap('map').get('room'), name)
    assert.deepEqual(content(o.doc, TYPES), content(a.doc, TYPES))
    for (const other of names.filter((n) => n !== name)) {
      assert.ok(!text.includes(marker(other)), `room ${JSON.stringify(name)} contains content of ${JSON.stringify(other)}`)
    }
    const writers = new Set([a.doc.clientID, b.doc.clientID])
    for (const [client] of stateVector(o.doc)) {
      assert.ok(writers.has(client), `room ${JSON.stringify(name)} has updates from client ${client}, not one of its writers`)
    }
  }
})

test('the query string is not part of the room name', { timeout: 30000 }, async () => {
  const a = await pool.openSynced(server.url, 'a/b/c')
  const b = await pool.openSynced(server.url, 'a/b/c', { params: { token: 'secret', x: 'a/b' } })
  assert.match(b.provider.url, /\/a\/b\/c\?token=secret&x=a%2Fb$/)
  a.doc.getText('text').insert(0, 'no query')
  b.doc.getText('text').insert(0, 'with query ')
  await waitConverged([a.doc, b.doc], TYPES, { label: 'clients on a/b/c with and without a query string' })
  assert.equal(a.doc.getText('text').length, 'no query'.length + 'with query '.length)
})
