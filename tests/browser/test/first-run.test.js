// The default run shows everything (issue 16): `tandem` with no options prints a link to the
// history viewer carrying a one-time admin token; opening it shows the documents at once (no
// token to type), and the token leaves the address bar.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Person, launch, waitFor } from '../lib/browser.js'
import { TandemServer } from '../../harness/server.js'

const LINK = /http:\/\/127\.0\.0\.1:\d+\/history\?token=([0-9a-f]{64})/

let browser
let server
const people = []

before(async () => {
  browser = await launch()
  server = await new TandemServer({ args: [] }).start()
})
after(async () => {
  for (const p of people) await p.close()
  await browser?.close()
  await server?.destroy()
})

test('the printed history link opens the history viewer signed in', async () => {
  const link = await waitFor(() => server.log.match(LINK)?.[0], { message: 'the history link in the log' })
  const writer = new Person(browser, { name: 'Ada', color: '#1c7ed6' })
  people.push(writer)
  await writer.open(`${server.httpUrl}/?doc=first-run`)
  await writer.typeAtEnd('Hello from the first run.')
  await writer.waitSaved()

  const context = await browser.newContext()
  const page = await context.newPage()
  await page.goto(link)
  await page.locator('table.doc-list', { hasText: 'first-run' }).waitFor()
  assert.equal(await page.locator('#admin-token').count(), 0, 'no token form')
  assert.equal(new URL(page.url()).searchParams.get('token'), null, 'the token left the address bar')
  // A reload keeps this tab signed in (sessionStorage).
  await page.reload()
  await page.locator('table.doc-list', { hasText: 'first-run' }).waitFor()
  await context.close()
})
