// Proves: (1) on SIGTERM Tandem closes every client socket with code 1001
// ("going away") and exits by itself, cleanly; (2)
// content typed before a SIGTERM is still there after a restart in the same
// working directory (storage under ./data/).

import { afterEach, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { TandemServer, makeTempDir } from '../../harness/server.js'
import { ClientPool, content, waitConverged, waitFor } from '../lib/clients.js'

const TYPES = { text: ['text'], map: ['map'], array: ['array'] }
const pool = new ClientPool()
const servers = []
const dirs = []

afterEach(async () => {
  pool.destroyAll()
  for (const s of servers.splice(0)) await s.stop()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

async function start (cwd) {
  const s = new TandemServer({ cwd })
  servers.push(s)
  await s.start()
  return s
}

test('SIGTERM closes client sockets with 1001 and the server exits cleanly', { timeout: 60000 }, async () => {
  const cwd = makeTempDir()
  dirs.push(cwd)
  const server = await start(cwd)
  const a = await pool.openSynced(server.url, 'shutdown')
  const b = await pool.openSynced(server.url, 'shutdown')
  a.doc.getText('text').insert(0, 'before shutdown')
  await waitConverged([a.doc, b.doc], TYPES)
  assert.deepEqual(a.provider.closeEvents, [])

  const status = await server.stop({ timeoutMs: 10000 })
  assert.equal(status.killed, false,
    `server did not exit within 10 s of SIGTERM (had to SIGKILL it). Log:\n${server.logTail()}`)
  assert.equal(status.signal, null, `server died of signal ${status.signal} instead of handling SIGTERM`)
  assert.equal(status.code, 0, `server exited with code ${status.code} after SIGTERM. Log:\n${server.logTail()}`)

  for (const [label, c] of [['A', a], ['B', b]]) {
    await waitFor(() => c.provider.closeEvents.length > 0, { message: `client ${label} to see its socket close` })
    const first = c.provider.closeEvents[0]
    assert.equal(first?.code, 1001,
      `client ${label}: first close event was ${JSON.stringify(first)}, expected code 1001`)
  }
})

test('content survives a SIGTERM and restart in the same directory', { timeout: 60000 }, async () => {
  const cwd = makeTempDir()
  dirs.push(cwd)
  const first = await start(cwd)
  const a = await pool.openSynced(first.url, 'persist/me')
  const b = await pool.openSynced(first.url, 'persist/me')
  a.doc.getText('text').insert(0, 'persisted text')
  a.doc.getMap('map').set('k', { v: 1 })
  b.doc.getArray('array').push(['x', 'y'])
  // Once a second client holds everything, the server has applied it.
  await waitConverged([a.doc, b.doc], TYPES, { label: 'writers before restart' })
  const expected = content(a.doc, TYPES)

  const status = await first.stop()
  assert.equal(status.killed, false, 'server did not exit on SIGTERM')
  pool.destroyAll()
  assert.ok(existsSync(join(cwd, 'data')), `no ./data/ directory in the server's cwd ${cwd}`)

  const second = await start(cwd)
  const c = await pool.openSynced(second.url, 'persist/me')
  assert.deepEqual(content(c.doc, TYPES), expected,
    `content after restart differs. Server log:\n${second.logTail()}`)
  // Another room stays empty.
  const d = await pool.openSynced(second.url, 'persist/other')
  assert.equal(d.doc.getText('text').toString(), '')
})
