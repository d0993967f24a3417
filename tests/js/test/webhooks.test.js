// Proves: the README's signature check (tests/js/lib/webhook.js, node:crypto) accepts what a
// real `tandem` sends and refuses a tampered body, a wrong secret and an old timestamp; a
// backend write through the HTTP API arrives as document.created + document.changed.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { startServer } from '../../harness/server.js'
import { waitFor } from '../lib/clients.js'
import { verifyTandemSignature } from '../lib/webhook.js'

const TOKEN = 'js-admin-token-for-webhook-tests'
const SECRET = 'js-webhook-secret-0123456789abcdef'
let server
let receiver
const received = []

before(async () => {
  receiver = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      received.push({ headers: req.headers, raw: Buffer.concat(chunks) })
      res.writeHead(204).end()
    })
  })
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${receiver.address().port}/hooks`
  server = await startServer({
    args: ['--admin-token', TOKEN, '--webhook-url', url, '--webhook-coalesce', '200ms'],
    env: { TANDEM_WEBHOOK_SECRET: SECRET }
  })
})
after(async () => {
  await server?.destroy()
  await new Promise((resolve) => receiver?.close(resolve))
})

test('webhooks from a real server pass the README signature check', { timeout: 30000 }, async () => {
  const res = await fetch(`${server.httpUrl}/api/v1/documents/${encodeURIComponent('js/hooked')}/content`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ fields: { title: 'Hello' } })
  })
  assert.equal(res.status, 200, await res.text())
  await waitFor(() => received.length >= 2, { message: 'two deliveries' })
  const types = received.map((r) => r.headers['tandem-event']).sort()
  assert.deepEqual(types, ['document.changed', 'document.created'])
  for (const { headers, raw } of received) {
    const sig = headers['tandem-signature']
    assert.ok(verifyTandemSignature(raw, sig, SECRET), `valid: ${sig}`)
    const event = JSON.parse(raw)
    assert.equal(event.id, headers['tandem-webhook-id'])
    assert.equal(event.type, headers['tandem-event'])
    assert.equal(event.document, 'js/hooked')
    // Refused: another body, another secret, a signature from an hour ago.
    assert.ok(!verifyTandemSignature(Buffer.concat([raw, Buffer.from(' ')]), sig, SECRET))
    assert.ok(!verifyTandemSignature(raw, sig, `${SECRET}x`))
    const old = sig.replace(/^t=\d+/, `t=${Math.floor(Date.now() / 1000) - 3600}`)
    assert.ok(!verifyTandemSignature(raw, old, SECRET))
  }
  const changed = JSON.parse(received.find((r) => r.headers['tandem-event'] === 'document.changed').raw)
  assert.deepEqual(changed.data, { first_seq: 1, last_seq: 1, changes: 1, authors: ['admin'] })
})
