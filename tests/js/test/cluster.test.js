// Proves: real y-websocket providers spread over three Tandem nodes that share Postgres and
// Redis (`--redis-url`) edit one document together. Concurrent edits on Y.Text, Y.Map and
// Y.Array from six clients (two per node) converge everywhere, awareness set on one node is
// seen on the others, and a client joining a node late gets the whole document. Needs
// TANDEM_TEST_DATABASE_URL and TANDEM_TEST_REDIS_URL (skipped otherwise).

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { PG_URL, TandemServer, createPgSchema } from '../../harness/server.js'
import { ClientPool, content, waitConverged, waitFor, waitSynced } from '../lib/clients.js'

const REDIS_URL = process.env.TANDEM_TEST_REDIS_URL || null
const skip = !PG_URL
  ? 'TANDEM_TEST_DATABASE_URL is not set'
  : !REDIS_URL ? 'TANDEM_TEST_REDIS_URL is not set' : false
const TYPES = { text: ['text'], map: ['map'], array: ['array'] }

let schema
let nodes = []
const pool = new ClientPool()

before(async () => {
  if (skip) return
  schema = createPgSchema()
  const prefix = `tandem-js-${process.pid}-${Date.now()}`
  const args = ['--database-url', schema.url, '--redis-url', REDIS_URL, '--redis-prefix', prefix]
  nodes = [new TandemServer({ args }), new TandemServer({ args }), new TandemServer({ args })]
  await Promise.all(nodes.map((n) => n.start()))
})
afterEach(() => pool.destroyAll())
after(async () => {
  for (const n of nodes) await n.destroy()
  schema?.drop()
})

test('six y-websocket clients on three nodes converge, with awareness across nodes', { skip, timeout: 60000 }, async () => {
  const clients = []
  for (let i = 0; i < 6; i++) clients.push(pool.open(nodes[i % 3].url, 'cluster-doc'))
  await Promise.all(clients.map((c, i) => waitSynced(c.provider, `client ${i}`)))

  // Everyone edits at once, nothing awaited in between.
  clients.forEach((c, i) => {
    c.doc.getText('text').insert(0, `[${i}]`)
    c.doc.getMap('map').set(`k${i}`, { by: i })
    c.doc.getArray('array').push([i])
  })
  const docs = clients.map((c) => c.doc)
  await waitConverged(docs, TYPES, { label: 'six clients on three nodes', timeout: 15000 })
  const merged = content(docs[0], TYPES)
  for (let i = 0; i < 6; i++) {
    assert.ok(merged['text:text'].includes(`[${i}]`), `edit of client ${i} is in ${merged['text:text']}`)
    assert.deepEqual(merged['map:map'][`k${i}`], { by: i })
  }
  assert.equal(merged['array:array'].length, 6)

  // Awareness set by a client of node 0 reaches a client of node 2, and its removal too.
  clients[0].provider.awareness.setLocalStateField('user', { name: 'Ada' })
  const id = clients[0].doc.clientID
  await waitFor(() => clients[2].provider.awareness.getStates().get(id)?.user?.name === 'Ada', {
    message: () => `node 2 never saw node 0's awareness\n${nodes[2].logTail()}`
  })
  clients[0].provider.destroy()
  await waitFor(() => !clients[2].provider.awareness.getStates().has(id), {
    message: () => `node 2 still shows the departed client\n${nodes[2].logTail()}`
  })

  // A client joining another node late gets the whole document from that node.
  const late = pool.open(nodes[1].url, 'cluster-doc')
  await waitSynced(late.provider, 'late client')
  await waitConverged([late.doc, clients[1].doc], TYPES, { label: 'late client' })
})
