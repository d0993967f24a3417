// Proves: a client that goes offline (provider.disconnect()) can keep editing;
// when it reconnects (provider.connect()) Tandem exchanges the missing updates
// both ways, so both clients converge and contain the edits each made while
// apart, and a client joining afterwards sees the merged state.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, content, stateVector, waitConverged, waitFor, waitSynced } from '../lib/clients.js'

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }
let server
const pool = new ClientPool()

before(async () => { server = await startServer() })
afterEach(() => pool.destroyAll())
after(async () => { await server?.destroy() })

test('edits made offline are merged after reconnect', { timeout: 60000 }, async () => {
  const room = 'offline'
  const a = await pool.openSynced(server.url, room)
  const b = await pool.openSynced(server.url, room)

  a.doc.getText('text').insert(0, 'base text. ')
  a.doc.getArray('array').push(['base'])
  await waitConverged([a.doc, b.doc], TYPES, { label: 'A and B before going offline' })

  a.provider.disconnect()
  await waitFor(() => !a.provider.wsconnected && a.provider.ws === null, { message: 'A to disconnect' })

  // A edits while offline.
  a.doc.getText('text').insert(0, '[A offline 1]')
  a.doc.getText('text').insert(a.doc.getText('text').length, '[A offline 2]')
  a.doc.getMap('map').set('conflict', 'A')
  a.doc.getMap('map').set('onlyA', true)
  a.doc.getArray('array').push(['fromA'])
  // B edits online at the same time, at the same positions.
  b.doc.getText('text').insert(0, '[B online 1]')
  b.doc.getText('text').insert(b.doc.getText('text').length, '[B online 2]')
  b.doc.getMap('map').set('conflict', 'B')
  b.doc.getMap('map').set('onlyB', true)
  b.doc.getArray('array').push(['fromB'])

  // While A is offline, a third client sees B's edits through the server but none of A's.
  const c = await pool.openSynced(server.url, room)
  await waitConverged([b.doc, c.doc], TYPES, { label: 'B and C while A is offline' })
  assert.doesNotMatch(c.doc.getText('text').toString(), /A offline/)
  assert.equal(a.provider.wsconnected, false, 'A must still be offline')
  assert.doesNotMatch(a.doc.getText('text').toString(), /B online/)

  a.provider.connect()
  await waitSynced(a.provider, 'A after reconnect')
  await waitConverged([a.doc, b.doc, c.doc], TYPES, { label: 'A, B and C after A reconnected' })

  const text = a.doc.getText('text').toString()
  for (const piece of ['base text.', '[A offline 1]', '[A offline 2]', '[B online 1]', '[B online 2]']) {
    assert.ok(text.includes(piece), `merged text ${JSON.stringify(text)} lacks ${piece}`)
  }
  const map = a.doc.getMap('map').toJSON()
  assert.equal(map.onlyA, true)
  assert.equal(map.onlyB, true)
  assert.ok(['A', 'B'].includes(map.conflict))
  assert.deepEqual([...a.doc.getArray('array').toArray()].sort(), ['base', 'fromA', 'fromB'])
  assert.deepEqual(content(b.doc, TYPES), content(a.doc, TYPES))
  assert.deepEqual(stateVector(b.doc), stateVector(a.doc))

  // The server itself holds the merged state: a new client gets it on sync.
  const d = await pool.openSynced(server.url, room)
  assert.deepEqual(content(d.doc, TYPES), content(a.doc, TYPES))
  assert.deepEqual(stateVector(d.doc), stateVector(a.doc))
})
