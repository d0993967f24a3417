// Proves: two real y-websocket clients sync through Tandem. Each edits a shared
// Y.Text, Y.Map and Y.Array; afterwards both docs hold identical content,
// identical state vectors and delete sets, and a fresh doc built from each one's
// Y.encodeStateAsUpdate is identical to the other's. A third client joining
// later receives that same state from the server alone.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, Y, content, converged, describeDocs, roundTrip, stateVector, waitConverged, waitFor } from '../lib/clients.js'

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }
let server
const pool = new ClientPool()

before(async () => { server = await startServer() })
afterEach(() => pool.destroyAll())
after(async () => { await server?.destroy() })

test('two clients sync and converge on Y.Text, Y.Map and Y.Array', { timeout: 60000 }, async () => {
  const a = pool.open(server.url, 'two-clients')
  const b = pool.open(server.url, 'two-clients')

  // Both providers emit 'sync' (true) after the server's SyncStep2.
  const syncEvents = { A: [], B: [] }
  a.provider.on('sync', (s) => syncEvents.A.push(s))
  b.provider.on('sync', (s) => syncEvents.B.push(s))
  await waitFor(() => syncEvents.A.includes(true) && syncEvents.B.includes(true), {
    message: () => `'sync' events from both providers (got ${JSON.stringify(syncEvents)})\n${server.logTail()}`
  })
  assert.equal(a.provider.synced, true)
  assert.equal(b.provider.synced, true)

  // A edits.
  a.doc.getText('text').insert(0, 'Hello from A. ')
  a.doc.getMap('map').set('a', { by: 'A', n: 1 })
  a.doc.getMap('map').set('shared', 'A-value')
  a.doc.getArray('array').push(['a1', 'a2'])
  // B edits, concurrently (nothing awaited in between).
  b.doc.getText('text').insert(0, 'Hi from B. ')
  b.doc.getMap('map').set('b', [1, 2, 3])
  b.doc.getMap('map').set('shared', 'B-value')
  b.doc.getArray('array').insert(0, ['b1'])

  await waitConverged([a.doc, b.doc], TYPES, { label: 'A and B after first edits' })

  // A second round, editing on top of the merged state, including deletes.
  const textA = a.doc.getText('text')
  textA.delete(0, 3)
  textA.insert(textA.length, '[A end]')
  b.doc.getText('text').format(0, 2, { bold: true })
  const arrB = b.doc.getArray('array')
  arrB.delete(arrB.toArray().indexOf('b1'), 1)
  b.doc.getMap('map').delete('a')
  await waitConverged([a.doc, b.doc], TYPES, { label: 'A and B after second round' })

  const ca = content(a.doc, TYPES)
  const cb = content(b.doc, TYPES)
  assert.deepEqual(ca, cb)
  // Both sets of edits are present.
  assert.match(ca['text:text'], /from A/)
  assert.match(ca['text:text'], /from B/)
  assert.match(ca['text:text'], /\[A end\]$/)
  assert.deepEqual(ca['map:map'].b, [1, 2, 3])
  assert.equal(ca['map:map'].a, undefined)
  assert.ok(['A-value', 'B-value'].includes(ca['map:map'].shared))
  assert.deepEqual([...ca['array:array']].sort(), ['a1', 'a2'])

  // Identical state vectors, naming both clients.
  assert.deepEqual(stateVector(a.doc), stateVector(b.doc))
  const clients = stateVector(a.doc).map(([c]) => c)
  assert.ok(clients.includes(a.doc.clientID) && clients.includes(b.doc.clientID),
    `state vector ${JSON.stringify(stateVector(a.doc))} should name both clients`)
  // Identical delete sets too.
  assert.ok(Y.equalSnapshots(Y.snapshot(a.doc), Y.snapshot(b.doc)), 'snapshots (state vector + delete set) differ')

  // Each full update, applied to a fresh doc, reproduces the other side exactly.
  const freshA = roundTrip(a.doc)
  const freshB = roundTrip(b.doc)
  assert.deepEqual(content(freshA, TYPES), cb)
  assert.deepEqual(content(freshB, TYPES), ca)
  assert.deepEqual(stateVector(freshA), stateVector(b.doc))
  assert.ok(converged([freshA, freshB, a.doc, b.doc], TYPES), describeDocs([freshA, freshB, a.doc, b.doc], TYPES))
  // Nothing is missing on either side: the diff of A against B's state vector adds nothing to B.
  const probe = roundTrip(b.doc)
  Y.applyUpdate(probe, Y.encodeStateAsUpdate(a.doc, Y.encodeStateVector(b.doc)))
  assert.deepEqual(stateVector(probe), stateVector(b.doc))
  assert.deepEqual(content(probe, TYPES), cb)

  // A late client gets the same state from the server.
  const c = await pool.openSynced(server.url, 'two-clients')
  await waitConverged([a.doc, b.doc, c.doc], TYPES, { label: 'late client C with A and B' })
  assert.deepEqual(content(c.doc, TYPES), ca)
})
