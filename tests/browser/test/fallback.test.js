// The demo editor over the HTTP fallback transport in real chromium: one tab has no WebSocket
// at all (as behind a proxy that refuses upgrades), the other uses its socket; they type
// together and converge, the fallback tab's presence shows in the other, and its "Saved" pill
// works over POST as over the socket.

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

const noWebSocket = () => { delete window.WebSocket }

test('a tab without WebSocket and a tab with one type together', async () => {
  const doc = encodeURIComponent('fallback/demo')
  const ada = await person({ name: 'Ada', color: '#1c7ed6' }).open(`${server.httpUrl}/?doc=${doc}`, { init: noWebSocket })
  const grace = await person({ name: 'Grace', color: '#d6336c' }).open(`${server.httpUrl}/?doc=${doc}`)
  assert.equal(await ada.page.evaluate(() => typeof window.WebSocket), 'undefined')
  assert.equal(await ada.page.evaluate(() => window.tandem.provider.transport), 'sse')
  assert.equal(await grace.page.evaluate(() => window.tandem.provider.transport), 'websocket')

  await ada.typeAtEnd('Ada over HTTP.')
  await waitConverged([ada, grace], 'Ada over HTTP.')
  await grace.typeAtEnd(' Grace over a socket.')
  await waitConverged([ada, grace], 'Ada over HTTP. Grace over a socket.')
  await ada.typeAtEnd(' Both.')
  await waitConverged([ada, grace], 'Ada over HTTP. Grace over a socket. Both.')
  await ada.waitSaved()
  await grace.waitSaved()
  for (const p of [ada, grace]) {
    await p.page.waitForFunction(() => document.querySelectorAll('#people .avatar').length === 2)
  }
  // Grace sees Ada's caret, which travels as awareness over POST and back over SSE.
  await grace.page.locator('.collaboration-carets__label', { hasText: 'Ada' }).waitFor()
})

test('?transport=sse uses the fallback even where WebSocket works', async () => {
  const doc = encodeURIComponent('fallback-forced')
  const ada = await person({ name: 'Ada', color: '#1c7ed6' }).open(`${server.httpUrl}/?doc=${doc}&transport=sse`)
  const grace = await person({ name: 'Grace', color: '#d6336c' }).open(`${server.httpUrl}/?doc=${doc}`)
  assert.equal(await ada.page.evaluate(() => window.tandem.provider.transport), 'sse')
  await grace.typeAtEnd('Grace first.')
  await waitConverged([ada, grace], 'Grace first.')
  await ada.typeAtEnd(' Ada second.')
  await waitConverged([ada, grace], 'Grace first. Ada second.')
})
