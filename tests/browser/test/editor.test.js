// The demo editor that tandem serves at /, in real chromium: people typing together, carets,
// going offline and coming back, reloading.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Person, launch, screenshot, waitConverged, waitFor } from '../lib/browser.js'
import { TandemServer } from '../../harness/server.js'

const ADA = { name: 'Ada', color: '#1c7ed6' }
const GRACE = { name: 'Grace', color: '#d6336c' }
const LINUS = { name: 'Linus', color: '#2b8a3e' }

let browser
let server
let people = []

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
const docUrl = (doc) => `${server.httpUrl}/?doc=${encodeURIComponent(doc)}`

test('the page is served by tandem, and two people typing converge', async () => {
  const res = await fetch(`${server.httpUrl}/`)
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type'), /^text\/html/)

  const url = docUrl('converge')
  const ada = await person(ADA).open(url)
  const grace = await person(GRACE).open(url)
  await ada.typeAtEnd('Hello from Ada.')
  await waitConverged([ada, grace], 'Hello from Ada.')
  // Both at once, into the same paragraph.
  await Promise.all([ada.typeAtEnd(' One'), grace.typeAtEnd(' Two')])
  const text = await waitConverged([ada, grace], (t) => t.includes('One') && t.includes('Two'))
  assert.match(text, /^Hello from Ada\./)
  assert.equal(text.length, 'Hello from Ada.'.length + ' One'.length + ' Two'.length)
  await ada.waitSaved()
  await grace.waitSaved()

  // Who is here: both avatars on both pages.
  for (const p of [ada, grace]) {
    await waitFor(async () => (await p.page.locator('#people .avatar').count()) === 2,
      { message: `${p.user.name} to see two people here` })
    assert.deepEqual((await p.page.locator('#people .avatar').evaluateAll((els) => els.map((e) => e.title))).sort(),
      [`${p.user.name} (you)`, p === ada ? 'Grace' : 'Ada'].sort())
  }
  assert.equal(await ada.page.locator('#connection').getAttribute('data-state'), 'connected')
  assert.equal(new URL(ada.page.url()).searchParams.get('doc'), 'converge')
})

test('each sees the other\'s caret with their name, and a changed name follows', async () => {
  const url = docUrl('carets')
  const ada = await person(ADA).open(url)
  const grace = await person(GRACE).open(url)
  await ada.typeAtEnd('Ada writes here.')
  await waitConverged([ada, grace], 'Ada writes here.')
  await grace.typeAtEnd(' Grace too.')
  await ada.typeAtEnd('!')
  await waitConverged([ada, grace], (t) => t.includes('Grace too.') && t.includes('!'))

  const label = (p, name) => p.page.locator('.collaboration-carets__label', { hasText: name })
  await label(ada, 'Grace').waitFor()
  await label(grace, 'Ada').waitFor()
  assert.equal(await label(ada, 'Ada').count(), 0, 'Ada sees no label for herself')
  const color = await label(ada, 'Grace').evaluate((el) => getComputedStyle(el).backgroundColor)
  assert.equal(color, 'rgb(214, 51, 108)') // GRACE.color

  // Grace renames herself: Ada's caret label and avatar follow, and the name is remembered.
  await grace.page.locator('#me').click()
  await grace.page.locator('#me-name').fill('Grace Hopper')
  await waitFor(async () => (await ada.page.locator('#people .avatar[title="Grace Hopper"]').count()) === 1,
    { message: 'Ada to see the new name among the people here' })
  // Her caret left with the focus; it comes back with the new name.
  await grace.typeAtEnd('?')
  await label(ada, 'Grace Hopper').waitFor()
  await waitConverged([ada, grace], (t) => t.endsWith('?'))
  const stored = await grace.page.evaluate(() => JSON.parse(localStorage.getItem('tandem-demo:user')))
  assert.equal(stored.name, 'Grace Hopper')
})

test('screenshot: three people editing, two remote carets', async () => {
  const url = docUrl('launch-plan')
  const ada = await person(ADA).open(url, { viewport: { width: 1100, height: 520 } })
  const grace = await person(GRACE).open(url)
  const linus = await person(LINUS).open(url)
  // Long runs go in as one input each (fast); the rest is typed key by key. Ada writes a heading and two paragraphs through the toolbar and keyboard.
  await ada.page.locator('.tiptap').click()
  await ada.page.locator('button[aria-label="Heading 1"]').click()
  await ada.page.keyboard.type('Launch plan')
  await ada.page.keyboard.press('Enter')
  await ada.page.keyboard.insertText('We ship the collaboration server on Friday. ')
  await ada.page.keyboard.press('Control+b')
  await ada.page.keyboard.type('Every keystroke is stored')
  await ada.page.keyboard.press('Control+b')
  await ada.page.keyboard.insertText(' before anyone else sees it.')
  await ada.page.keyboard.press('Enter')
  await ada.page.keyboard.type('Open questions:')
  const expected = 'Launch plan\nWe ship the collaboration server on Friday. Every keystroke is stored before anyone else sees it.\nOpen questions:'
  await waitConverged([ada, grace, linus], expected)
  // Grace adds a list at the end; Linus edits the first paragraph.
  await grace.typeAtEnd('\n')
  await grace.page.locator('button[aria-label="Bullet list"]').click()
  await grace.page.keyboard.insertText('Who writes the release notes?')
  await grace.page.keyboard.press('Enter')
  await grace.page.keyboard.type('Do we need a migration guide')
  await waitConverged([ada, grace, linus], (t) => t.endsWith('migration guide'))
  await linus.page.locator('.tiptap p', { hasText: 'We ship' }).click()
  await linus.page.keyboard.press('End')
  await linus.page.keyboard.type(' Docs are ready.')
  await waitConverged([ada, grace, linus], (t) => t.includes('Docs are ready.'))
  // Ada clicks at the end of the heading, so her own caret is out of the way.
  await ada.page.locator('.tiptap h1').click()
  await ada.page.keyboard.press('End')
  for (const name of ['Grace', 'Linus']) {
    await ada.page.locator('.collaboration-carets__label', { hasText: name }).waitFor()
  }
  await ada.waitSaved()
  await waitFor(async () => (await ada.page.locator('#people .avatar').count()) === 3)
  await screenshot(ada.page, 'editor.png')
})

test('one goes offline, both type, it comes back and both converge', async () => {
  const url = docUrl('offline')
  const ada = await person(ADA).open(url)
  const grace = await person(GRACE).open(url)
  await ada.typeAtEnd('Shared start.')
  await waitConverged([ada, grace], 'Shared start.')
  await grace.waitSaved()

  // Grace's network goes away: her socket closes and reconnects fail.
  await grace.context.setOffline(true)
  await grace.page.evaluate(() => window.tandem.provider.ws?.close())
  await grace.page.locator('#connection[data-state="disconnected"]').waitFor()

  await grace.typeAtEnd(' Grace offline.')
  await ada.typeAtEnd(' Ada online.')
  await grace.page.locator('#saved[data-state="offline"]').waitFor()
  // Her reconnect attempts fail while she is offline (the provider counts them).
  await waitFor(() => grace.page.evaluate(() => window.tandem.provider.wsUnsuccessfulReconnects >= 2),
    { message: 'Grace\'s reconnects to fail' })
  assert.equal(await grace.page.locator('#connection').getAttribute('data-state') === 'connected', false)
  await ada.waitSaved()
  assert.equal(await ada.text(), 'Shared start. Ada online.', 'Ada must not see Grace\'s offline edits yet')
  assert.equal(await grace.text(), 'Shared start. Grace offline.')

  await grace.context.setOffline(false)
  const text = await waitConverged([ada, grace], (t) => t.includes('Grace offline.') && t.includes('Ada online.'))
  assert.equal(text.length, 'Shared start. Grace offline. Ada online.'.length)
  await grace.page.locator('#connection[data-state="connected"]').waitFor()
  await grace.waitSaved()

  // A newcomer gets the merged document from the server.
  const linus = await person(LINUS).open(url)
  await waitConverged([ada, grace, linus], text)
})

test('a reload keeps the content, and so does a new browser', async () => {
  const url = docUrl('reload me/ü?#')
  const ada = await person(ADA).open(url)
  await ada.typeAtEnd('Kept across reloads.')
  await ada.waitSaved()
  await ada.page.reload()
  await ada.waitSynced()
  assert.equal(await ada.text(), 'Kept across reloads.')
  assert.equal(await ada.page.evaluate(() => window.tandem.docName), 'reload me/ü?#')
  // Still the same person after the reload.
  assert.equal(await ada.page.locator('#me .me-name').textContent(), 'Ada')
  const grace = await person(GRACE).open(url)
  assert.equal(await grace.text(), 'Kept across reloads.')
  // Another document is another room.
  const other = await person(LINUS).open(docUrl('reload me'))
  assert.equal(await other.text(), '')
})
