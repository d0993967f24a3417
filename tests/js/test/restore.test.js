// Proves: an administrator's restore (POST /api/v1/admin/documents/{name}/restore) reaches
// real y-websocket clients as an ordinary update: three connected clients converge to the
// restored content (a Y.Text and a Y.XmlFragment) without reconnecting, and a fourth client
// that was offline during the restore, and edited meanwhile, merges deterministically when it
// comes back.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, Y, stateVector, waitConverged, waitFor, waitSynced } from '../lib/clients.js'

const TOKEN = 'js-admin-token-for-restore-tests'
const TYPES = { text: ['text'] }
let server
const pool = new ClientPool()

before(async () => { server = await startServer({ args: ['--admin-token', TOKEN] }) })
afterEach(() => pool.destroyAll())
after(async () => { await server?.destroy() })

/** An admin API call; answers {status, body}. */
const admin = (method, path, body) => server.admin(TOKEN, method, path, body)

const xml = (doc) => doc.getXmlFragment('prosemirror').toString()
const text = (doc) => doc.getText('text').toString()

/** Counts how often a provider (re)connects. */
function countConnects (provider) {
  const seen = { connected: 0 }
  provider.on('status', ({ status }) => { if (status === 'connected') seen.connected++ })
  return seen
}

test('restore reaches three connected clients without a reconnect; an offline client merges on return',
  { timeout: 60000 }, async () => {
    const room = 'restore-js'
    const doc = `/documents/${encodeURIComponent(room)}`
    const a = await pool.openSynced(server.url, room)
    const b = await pool.openSynced(server.url, room)
    const c = await pool.openSynced(server.url, room)
    const d = await pool.openSynced(server.url, room)
    const connects = [a, b, c].map((cl) => countConnects(cl.provider))

    // The version to come back to: a text and a ProseMirror-like fragment.
    a.doc.getText('text').insert(0, 'Version one.')
    b.doc.transact(() => {
      const p = new Y.XmlElement('paragraph')
      p.insert(0, [new Y.XmlText('hello')])
      b.doc.getXmlFragment('prosemirror').insert(0, [p])
    })
    const all = [a.doc, b.doc, c.doc, d.doc]
    await waitConverged(all, TYPES, { label: 'four clients on version one' })
    await waitFor(() => all.every((x) => xml(x) === '<paragraph>hello</paragraph>'),
      { message: 'the fragment everywhere' })
    const goodText = text(a.doc)
    const goodXml = xml(a.doc)
    // Relayed means durable: the server's newest change is that version.
    const { status, body: info } = await admin('GET', doc)
    assert.equal(status, 200, JSON.stringify(info))
    const version = info.last_seq
    assert.ok(version >= 2, JSON.stringify(info))
    const state = await admin('GET', `${doc}/state?seq=${version}`)
    assert.equal(state.body.content.text.value, goodText)
    assert.deepEqual(state.body.content.prosemirror.value,
      { type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'hello' }] }] })

    // D goes offline and edits there.
    d.provider.disconnect()
    await waitFor(() => !d.provider.wsconnected && d.provider.ws === null, { message: 'D to disconnect' })
    d.doc.getText('text').insert(text(d.doc).length, '[D offline]')

    // The others keep editing: replace a word, append, rewrite and add a paragraph.
    const t = a.doc.getText('text')
    a.doc.transact(() => {
      t.delete(8, 3)
      t.insert(8, 'two')
    })
    b.doc.getText('text').insert(0, '>> ')
    c.doc.getText('text').insert(text(c.doc).length, ' And more.')
    b.doc.transact(() => {
      const p = b.doc.getXmlFragment('prosemirror').get(0)
      p.get(0).insert(5, ' world')
    })
    c.doc.transact(() => {
      const p = new Y.XmlElement('paragraph')
      p.insert(0, [new Y.XmlText('second')])
      c.doc.getXmlFragment('prosemirror').push([p])
    })
    const online = [a.doc, b.doc, c.doc]
    await waitConverged(online, TYPES, { label: 'A, B and C after their edits' })
    await waitFor(() => online.every((x) => xml(x) === xml(a.doc) && xml(x).includes('second')),
      { message: 'the edited fragment everywhere' })
    assert.equal(text(a.doc), '>> Version two. And more.')

    // Restore while A, B and C are connected.
    const restored = await admin('POST', `${doc}/restore`, { seq: version })
    assert.equal(restored.status, 200, JSON.stringify(restored.body))
    assert.equal(restored.body.restored_to, version)
    assert.equal(restored.body.changed, true)
    assert.ok(restored.body.seq > version, JSON.stringify(restored.body))
    await waitFor(() => online.every((x) => text(x) === goodText && xml(x) === goodXml), {
      message: () => 'A, B and C back on version one: ' +
        JSON.stringify(online.map((x) => [text(x), xml(x)]))
    })
    await waitConverged(online, TYPES, { label: 'A, B and C after the restore' })
    for (const [i, cl] of [a, b, c].entries()) {
      assert.equal(cl.provider.wsconnected, true, `client ${i} is still connected`)
      assert.deepEqual(cl.provider.closeEvents, [], `client ${i} was never closed`)
      assert.equal(connects[i].connected, 0, `client ${i} never reconnected`)
    }
    const timeline = await admin('GET', `${doc}/timeline?order=desc&limit=1`)
    assert.equal(timeline.body.changes[0].seq, restored.body.seq)
    assert.equal(timeline.body.changes[0].author, 'admin')

    // D comes back with its offline edit: everyone converges, on version one plus D's edit.
    d.provider.connect()
    await waitSynced(d.provider, 'D after reconnect')
    const everyone = [a.doc, b.doc, c.doc, d.doc]
    await waitConverged(everyone, TYPES, { label: 'all four after D returned' })
    await waitFor(() => everyone.every((x) => xml(x) === goodXml), {
      message: () => 'the fragment of version one everywhere: ' + JSON.stringify(everyone.map(xml))
    })
    const merged = text(a.doc)
    assert.ok(merged.includes('[D offline]'), merged)
    assert.equal(merged.replace('[D offline]', ''), goodText, merged)
    // The server holds the same: a newcomer and the newest state agree.
    const e = await pool.openSynced(server.url, room)
    assert.equal(text(e.doc), merged)
    assert.equal(xml(e.doc), goodXml)
    assert.deepEqual(stateVector(e.doc), stateVector(a.doc))
    await waitFor(async () => (await admin('GET', `${doc}/state`)).body.content.text.value === merged,
      { message: 'the server state to show the merge' })
  })
