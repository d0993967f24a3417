// The demo editor against a server that requires tokens (--auth token): asking for a token,
// taking one from the URL, and a read-only user who sees everything but changes nothing.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Person, jwt, launch, waitConverged, waitFor } from '../lib/browser.js'
import { TandemServer } from '../../harness/server.js'

const SECRET = 'browser-test-secret-browser-test-secret'
const ADA_TOKEN = jwt(SECRET, { sub: 'ada', name: 'Ada', docs: ['*'], access: 'rw' })
const READER_TOKEN = jwt(SECRET, { sub: 'reader', name: 'Reader', docs: ['*'], access: 'ro' })

let browser
let server
const people = []

before(async () => {
  browser = await launch()
  server = await new TandemServer({ args: ['--auth', 'token', '--jwt-secret', SECRET] }).start()
})
after(async () => {
  await browser?.close()
  await server?.destroy()
})
afterEach(async () => {
  for (const p of people.splice(0)) {
    assert.deepEqual(p.errors, [], `${p.user.name}'s page logged errors`)
    await p.close()
  }
})

const person = (name, color) => {
  const p = new Person(browser, { name, color })
  people.push(p)
  return p
}

test('without a token the page asks for one, and connects with it', async () => {
  const p = person('Ada', '#1c7ed6')
  // Not synced: the server refuses the upgrade, so open() would wait forever; go by hand.
  p.context = await browser.newContext()
  p.page = await p.context.newPage()
  await p.page.goto(`${server.httpUrl}/?doc=secret`)
  await p.page.locator('#notice-token-form').waitFor()
  assert.match(await p.page.locator('#notice-text').textContent(), /--auth token/)
  await p.page.locator('#notice-token').fill(ADA_TOKEN)
  await p.page.locator('#notice-token-form button').click()
  await p.waitSynced()
  await p.page.locator('#connection[data-state="connected"]').waitFor()
  assert.equal(await p.page.locator('#notice').isHidden(), true)
  await p.typeAtEnd('With a token.')
  await p.waitSaved()
})

test('a token in the URL is used, and leaves the address bar', async () => {
  const ada = await person('Ada', '#1c7ed6').open(`${server.httpUrl}/?doc=from-url&token=${ADA_TOKEN}`)
  assert.equal(new URL(ada.page.url()).searchParams.get('token'), null)
  assert.equal(new URL(ada.page.url()).searchParams.get('doc'), 'from-url')
  await ada.typeAtEnd('Hello.')
  await ada.waitSaved()
  // A reload keeps the token (sessionStorage) and the content.
  await ada.page.reload()
  await ada.waitSynced()
  assert.equal(await ada.text(), 'Hello.')
})

test('a read-only user sees changes live but cannot change the document', async () => {
  const url = `${server.httpUrl}/?doc=${encodeURIComponent('team/plan')}`
  const ada = await person('Ada', '#1c7ed6').open(`${url}&token=${ADA_TOKEN}`)
  const reader = await person('Reader', '#ae3ec9').open(`${url}&token=${READER_TOKEN}`)
  await reader.page.locator('#readonly').waitFor()
  assert.equal(await reader.page.locator('.tiptap').getAttribute('contenteditable'), 'false')
  assert.equal(await reader.page.locator('#toolbar').isHidden(), true)

  await ada.typeAtEnd('Only Ada writes.')
  await waitConverged([ada, reader], 'Only Ada writes.')

  // Typing does nothing in a read-only editor...
  await reader.page.locator('.tiptap').click()
  await reader.page.keyboard.type('nope')
  assert.equal(await reader.text(), 'Only Ada writes.')
  // ...and a change forced into the reader's document is refused by the server.
  await reader.page.evaluate(() => window.tandem.editor.commands.insertContentAt(1, 'FORCED '))
  assert.equal(await reader.text(), 'FORCED Only Ada writes.')
  // Once the server answered a sync request sent after it, the change has been handled.
  await waitFor(() => reader.page.evaluate(() => window.tandem.saved.state() === 'saved'),
    { message: 'the server to handle the reader\'s change' })
  const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text()
  assert.match(metrics, /tandem_readonly_updates_refused_total(\{[^}]*\})? [1-9]/)

  await ada.typeAtEnd(' Still only Ada.')
  await ada.waitSaved()
  assert.equal(await ada.text(), 'Only Ada writes. Still only Ada.')
  const fresh = await person('Grace', '#d6336c').open(`${url}&token=${ADA_TOKEN}`)
  assert.equal(await fresh.text(), 'Only Ada writes. Still only Ada.')
})
