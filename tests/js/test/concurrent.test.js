// Proves: ten y-websocket clients making a few hundred interleaved random edits
// (inserts and deletes at random positions in a Y.Text and a Y.Array, sets and
// deletes in a Y.Map) through Tandem all converge to one identical state in
// which every client's every operation is present, and an 11th client joining
// afterwards receives that full state. The run is seeded: set TANDEM_SEED to
// replay one.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, content, describeDocs, prng, stateVector, waitConverged, waitFor } from '../lib/clients.js'

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }
const CLIENTS = 10
const OPS = 400
const seed = Number(process.env.TANDEM_SEED ?? (Date.now() % 1_000_000))
let server
const pool = new ClientPool()

before(async () => { server = await startServer() })
afterEach(() => pool.destroyAll())
after(async () => { await server?.destroy() })

test(`${CLIENTS} clients editing concurrently converge (seed ${seed})`, { timeout: 120000 }, async (t) => {
  t.diagnostic(`seed ${seed} (replay with TANDEM_SEED=${seed})`)
  const rnd = prng(seed)
  const room = `concurrent-${seed}`
  const clients = []
  for (let i = 0; i < CLIENTS; i++) clients.push(pool.open(server.url, room))
  await waitFor(() => clients.every((c) => c.provider.synced), {
    message: () => `all ${CLIENTS} clients to sync: ` + clients.map((c) => c.provider.synced).join(',') +
      `\nserver log:\n${server.logTail()}`
  })

  let inserts = 0
  let deletes = 0
  for (let op = 0; op < OPS; op++) {
    const c = rnd.pick(clients)
    const kind = rnd.next()
    if (kind < 0.55) {
      const text = c.doc.getText('text')
      if (text.length > 0 && rnd.next() < 0.35) {
        const at = rnd.int(0, text.length - 1)
        text.delete(at, rnd.int(1, Math.min(5, text.length - at)))
        deletes++
      } else {
        text.insert(rnd.int(0, text.length), rnd.word(rnd.int(1, 6)))
        inserts++
      }
    } else if (kind < 0.8) {
      const arr = c.doc.getArray('array')
      if (arr.length > 0 && rnd.next() < 0.3) {
        arr.delete(rnd.int(0, arr.length - 1), 1)
        deletes++
      } else {
        arr.insert(rnd.int(0, arr.length), [`${c.doc.clientID}:${op}`])
        inserts++
      }
    } else {
      const map = c.doc.getMap('map')
      const key = `k${rnd.int(0, 9)}`
      if (map.has(key) && rnd.next() < 0.3) map.delete(key)
      else map.set(key, { by: c.doc.clientID, op })
    }
    // Let the network run between some operations, so clients edit on top of
    // partially synced state (real interleaving, not batch-then-sync).
    if (rnd.next() < 0.3) await new Promise((resolve) => setTimeout(resolve, rnd.int(0, 3)))
  }
  t.diagnostic(`${OPS} ops: ${inserts} inserts, ${deletes} deletes`)

  // Each client's own clock, as it knows it: every peer must reach exactly this.
  const ownClocks = new Map(clients.map((c) => [c.doc.clientID, new Map(stateVector(c.doc)).get(c.doc.clientID) ?? 0]))
  const docs = clients.map((c) => c.doc)
  await waitConverged(docs, TYPES, { timeout: 30000, label: `${CLIENTS} clients` })

  const sv = new Map(stateVector(docs[0]))
  for (const [client, clock] of ownClocks) {
    assert.equal(sv.get(client) ?? 0, clock, `client ${client}: converged state has clock ${sv.get(client)}, it made ${clock}`)
  }
  const first = content(docs[0], TYPES)
  for (const d of docs.slice(1)) assert.deepEqual(content(d, TYPES), first)
  assert.ok(first['text:text'].length > 0, 'text should not be empty after the run')

  // A late 11th client receives the full state from the server.
  // The server's SyncStep2 (which marks the provider synced) must already carry
  // everything: no waiting for later updates.
  const late = await pool.openSynced(server.url, room)
  assert.deepEqual(stateVector(late.doc), stateVector(docs[0]),
    'state of the late client right after sync\n' + describeDocs([docs[0], late.doc], TYPES))
  assert.deepEqual(content(late.doc, TYPES), first)
})
