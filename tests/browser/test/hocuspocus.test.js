// The demo editor over TipTap's @hocuspocus/provider (`/?provider=hocuspocus`) in real chromium,
// typing with another tab on y-websocket: both converge, and the Hocuspocus tab's "Saved" pill
// comes from the provider's `unsyncedChanges`, which Tandem counts down only once durable.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Person, launch, waitConverged } from '../lib/browser.js'
import { TandemServer } from '../../harness/server.js'

let browser
let server
const people = []

before(async () => {
  browser = await launch()
  server = await new TandemServer().start()
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

const person = (user) => {
  const p = new Person(browser, user)
  people.push(p)
  return p
}

test('a Hocuspocus tab and a y-websocket tab type together; "Saved" means durable', async () => {
  const doc = encodeURIComponent('hocuspocus-demo')
  const ada = await person({ name: 'Ada', color: '#1c7ed6' }).open(`${server.httpUrl}/?doc=${doc}&provider=hocuspocus`)
  const grace = await person({ name: 'Grace', color: '#d6336c' }).open(`${server.httpUrl}/?doc=${doc}`)
  // A HocuspocusProvider (class names do not survive the bundle's minifier): it has a socket.
  assert.ok(await ada.page.evaluate(() => Boolean(window.tandem.provider.configuration?.websocketProvider)))
  await ada.typeAtEnd('Ada over Hocuspocus.')
  await waitConverged([ada, grace], 'Ada over Hocuspocus.')
  await grace.typeAtEnd(' Grace over y-websocket.')
  await waitConverged([ada, grace], 'Ada over Hocuspocus. Grace over y-websocket.')
  await ada.waitSaved()
  assert.equal(await ada.page.evaluate(() => window.tandem.provider.unsyncedChanges), 0)
  // Each sees the other in "who is here" (awareness across the two protocols).
  for (const p of [ada, grace]) {
    await p.page.waitForFunction(() => document.querySelectorAll('#people .avatar').length === 2)
  }
})
