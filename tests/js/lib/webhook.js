// Checking a Tandem webhook's signature: the code the README ("Documents from your backend",
// webhooks) shows receivers, kept here so tests/js/test/webhooks.test.js runs it against a
// real server. Keep the two in step.

import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * Whether `rawBody` (the request body exactly as received: a Buffer or string, before any
 * JSON parsing) carries a valid `Tandem-Signature` header made with `secret`, no older than
 * `toleranceSec`.
 */
export function verifyTandemSignature (rawBody, header, secret, toleranceSec = 300) {
  const fields = Object.fromEntries(String(header).split(',').map((kv) => kv.split('=', 2)))
  const t = Number(fields.t)
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > toleranceSec) return false
  const expected = createHmac('sha256', secret).update(`${fields.t}.`).update(rawBody).digest()
  const given = Buffer.from(fields.v1 ?? '', 'hex')
  return given.length === expected.length && timingSafeEqual(given, expected)
}
