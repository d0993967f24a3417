// Proves (issue 10, item 10): a real y-websocket 3 client that applies many small
// transactions back to back, far above --max-messages-per-sec, is throttled by the server
// (its socket is read at the rate) instead of being closed with 4429, which y-websocket 3
// treats as final (it would stop reconnecting). It is never closed, every edit reaches a
// second client, and the server counts the throttling in /metrics.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, waitFor } from '../lib/clients.js'

let server
const pool = new ClientPool()

before(async () => {
  server = await startServer({ args: ['--max-messages-per-sec', '100', '--message-burst', '100'] })
})
afterEach(() => pool.destroyAll())
after(async () => { await server?.destroy() })

async function metric (name) {
  const body = await (await fetch(`${server.httpUrl}/metrics`)).text()
  return body.split('\n')
    .filter((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
}

test('a y-websocket client far above the message rate is throttled, not closed', { timeout: 60000 }, async () => {
  const writer = await pool.openSynced(server.url, 'fast-writer')
  const reader = await pool.openSynced(server.url, 'fast-writer')
  const statuses = []
  writer.provider.on('status', ({ status }) => statuses.push(status))

  // 600 transactions, one update message each, without yielding: 6 s worth at 100/s.
  const text = writer.doc.getText('text')
  const EDITS = 600
  const started = Date.now()
  for (let i = 0; i < EDITS; i++) {
    text.insert(text.length, `${i};`)
  }
  const want = text.toString()
  await waitFor(() => reader.doc.getText('text').toString() === want, {
    timeout: 30000,
    message: () => `all ${EDITS} edits at the reader (has ${reader.doc.getText('text').length} of ${want.length} chars)\n${server.logTail()}`
  })
  const took = Date.now() - started
  assert.ok(took >= 3000, `600 messages at 100/s arrived in ${took} ms: not throttled`)
  assert.deepEqual(writer.provider.closeEvents, [], 'the writer was closed')
  assert.deepEqual(statuses, [], 'the writer disconnected')
  assert.equal(writer.provider.wsconnected, true)
  assert.ok(await metric('tandem_connections_throttled_total') >= 1)
  assert.equal(await metric('tandem_connections_closed_total{reason="rate_limited"}'), 0)

  // Still a normal connection: an edit from the reader reaches the writer.
  reader.doc.getText('text').insert(0, '!')
  await waitFor(() => text.toString().startsWith('!'), { message: 'the reader\'s edit at the writer' })
})
