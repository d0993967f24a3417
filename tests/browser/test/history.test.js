// The history viewer at /history, over the admin API: timeline with authors, an old version,
// what changed since, a label, and a restore that an open editor shows at once.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Person, jwt, launch, screenshot, waitConverged, waitFor } from '../lib/browser.js'
import { TandemServer } from '../../harness/server.js'

const SECRET = 'history-test-secret-history-test-secret'
const ADMIN = 'admin-token-for-the-history-test'
const DOC = 'roadmap'

let browser
let server
const people = []

before(async () => {
  browser = await launch()
  server = await new TandemServer({
    args: ['--auth', 'token', '--jwt-secret', SECRET, '--admin-token', ADMIN]
  }).start()
})
after(async () => {
  for (const p of people) await p.close()
  await browser?.close()
  await server?.destroy()
})

const editor = (sub, name, color) => {
  const p = new Person(browser, { name, color })
  people.push(p)
  const token = jwt(SECRET, { sub, name, docs: ['*'], access: 'rw' })
  return p.open(`${server.httpUrl}/?doc=${encodeURIComponent(DOC)}&token=${token}`)
}
const lastSeq = async () => (await server.adminOk(ADMIN, 'GET', `/documents/${encodeURIComponent(DOC)}`)).last_seq

test('history viewer: versions by author, diff, label, and a restore that open editors show live', async () => {
  // Three editing sessions: Ada, then Grace, then Ada again.
  const ada = await editor('ada', 'Ada', '#1c7ed6')
  await ada.page.locator('.tiptap').click()
  await ada.page.locator('button[aria-label="Heading 1"]').click()
  await ada.page.keyboard.type('Roadmap')
  await ada.page.keyboard.press('Enter')
  await ada.page.keyboard.type('Q1: ship the editor.')
  await ada.waitSaved()
  const grace = await editor('grace', 'Grace', '#d6336c')
  await grace.typeAtEnd('\nQ2: history and restore.')
  await grace.waitSaved()
  const beforeQ3 = 'Roadmap\nQ1: ship the editor.\nQ2: history and restore.'
  await waitConverged([ada, grace], beforeQ3)
  const graceSeq = await waitFor(async () => {
    const seq = await lastSeq()
    // The change of Grace's last keystroke is durable once her page says saved.
    return seq > 0 && seq
  })
  await ada.typeAtEnd('\nQ3: everything else, all at once.')
  // ...and replaces "ship" with "launch" in Q1.
  await ada.page.locator('.tiptap p', { hasText: 'Q1:' }).click()
  await ada.page.keyboard.press('Home')
  for (let i = 0; i < 4; i++) await ada.page.keyboard.press('ArrowRight')
  for (let i = 0; i < 4; i++) await ada.page.keyboard.press('Shift+ArrowRight')
  await ada.page.keyboard.type('launch')
  await ada.waitSaved()
  const now = 'Roadmap\nQ1: launch the editor.\nQ2: history and restore.\nQ3: everything else, all at once.'
  await waitConverged([ada, grace], now)
  await waitFor(async () => (await lastSeq()) > graceSeq)

  // The viewer asks for the admin token first.
  const admin = new Person(browser, { name: 'Admin', color: '#495057' })
  people.push(admin)
  admin.context = await browser.newContext({ viewport: { width: 1240, height: 470 }, deviceScaleFactor: 1 })
  admin.page = await admin.context.newPage()
  admin.page.on('pageerror', (err) => admin.errors.push(String(err)))
  const page = admin.page
  await page.goto(`${server.httpUrl}/history?doc=${encodeURIComponent(DOC)}`)
  await page.locator('#admin-token').fill('wrong')
  await page.getByRole('button', { name: 'Open history' }).click()
  await page.getByText('not accepted').waitFor()
  await page.locator('#admin-token').fill(ADMIN)
  await page.getByRole('button', { name: 'Open history' }).click()

  // Timeline: the current version, then the three sessions, newest first, with their authors.
  const entries = page.locator('#timeline .entry')
  await waitFor(async () => (await entries.count()) === 4, {
    message: async () => `four timeline entries, got ${JSON.stringify(await entries.allTextContents())}; API: ${JSON.stringify(await server.adminOk(ADMIN, 'GET', `/documents/${DOC}/timeline?order=desc&group=session`))}`
  })
  const authors = await page.locator('#timeline .entry .who').allTextContents()
  assert.deepEqual(authors, ['Current version', 'ada', 'grace', 'ada'])

  // Grace's session is the version before Q3.
  const graceEntry = page.locator(`#timeline .entry[data-seq="${graceSeq}"]`)
  await graceEntry.click()
  await page.locator('#viewer h2', { hasText: `Version #${graceSeq}` }).waitFor()
  await page.locator('#version-body .tiptap', { hasText: 'Q2: history and restore.' }).waitFor()
  assert.equal(await page.locator('#version-body .tiptap').textContent().then((t) => t.includes('Q3')), false)
  assert.equal(await page.locator('#version-body .tiptap h1').textContent(), 'Roadmap')

  // What changed since: Ada's Q3, marked as hers.
  await page.getByRole('button', { name: 'Changes since, until now' }).click()
  const inserted = page.locator('#version-body ins', { hasText: 'Q3: everything else' })
  await inserted.waitFor()
  assert.match(await inserted.getAttribute('title'), /inserted by ada/)
  assert.equal((await page.locator('#version-body del').allTextContents()).join(''), 'ship')

  // Label the version.
  await page.getByRole('button', { name: 'Add label' }).click()
  await page.getByLabel('Label name').fill('before Q3')
  await page.getByRole('button', { name: 'Save label' }).click()
  await page.locator('#timeline .label-tag', { hasText: 'before Q3' }).waitFor()
  const labels = await server.adminOk(ADMIN, 'GET', `/documents/${encodeURIComponent(DOC)}/labels`)
  assert.deepEqual(labels.labels.map((l) => [l.name, l.seq]), [['before Q3', graceSeq]])
  await page.locator('#toast').evaluate((el) => { el.className = '' }) // not in the screenshot
  await page.mouse.move(0, 0)
  await screenshot(page, 'history.png')

  // Restore it: the open editors drop Q3 without reloading.
  await page.getByRole('button', { name: 'Restore this version' }).click()
  await page.getByRole('button', { name: 'Restore', exact: true }).click()
  await waitConverged([ada, grace], beforeQ3, 'open editors to show the restored version')
  await page.locator('#timeline .entry[data-seq="now"][aria-selected="true"]').waitFor()
  await page.locator('#version-body .tiptap', { hasText: 'Q2: history and restore.' }).waitFor()
  await waitFor(async () => (await page.locator('#timeline .entry .who').allTextContents())[1]?.startsWith('admin'),
    { message: 'the restore to appear in the timeline as the admin\'s change' })
  // The restore is durable: a new editor loads the restored content.
  const linus = await editor('linus', 'Linus', '#2b8a3e')
  assert.equal(await linus.text(), beforeQ3)
  for (const p of people) assert.deepEqual(p.errors, [], `${p.user.name}'s page logged errors`)
})
