// A server restart keeps the document, on SQLite and on Postgres: a new editor loads what was
// typed before the restart (from storage alone), and an editor left open across the restart
// reconnects by itself and delivers what was typed while the server was down.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Person, launch, waitConverged } from '../lib/browser.js'
import { TandemServer, backends } from '../../harness/server.js'

let browser
before(async () => { browser = await launch() })
after(async () => { await browser?.close() })

for (const [backend, skip] of backends()) {
  test(`a restart keeps the content (${backend})`, { skip }, async () => {
    const server = await new TandemServer({ backend }).start()
    const people = []
    const person = (name, color) => {
      const p = new Person(browser, { name, color })
      people.push(p)
      return p
    }
    try {
      const url = `${server.httpUrl}/?doc=${encodeURIComponent('restart/notes')}`
      const ada = await person('Ada', '#1c7ed6').open(url)
      const linus = await person('Linus', '#2b8a3e').open(url)
      await ada.typeAtEnd('Typed before the restart.')
      await waitConverged([ada, linus], 'Typed before the restart.')
      await ada.waitSaved()
      await ada.close()

      const stopped = await server.stop()
      assert.equal(stopped.killed, false, `tandem did not exit on SIGTERM. Log:\n${server.logTail()}`)
      await linus.page.locator('#connection:not([data-state="connected"])').waitFor()
      // Linus keeps typing while the server is down; his tab keeps the edits.
      await linus.typeAtEnd(' Typed while it was down.')
      await linus.page.locator('#saved[data-state="offline"]').waitFor()
      // Until Grace has loaded, Linus stays away, so what she sees comes from storage alone.
      await linus.context.setOffline(true)

      await server.start() // same port, same database
      const grace = await person('Grace', '#d6336c').open(url)
      assert.equal(await grace.text(), 'Typed before the restart.')

      await linus.context.setOffline(false)
      await linus.page.locator('#connection[data-state="connected"]').waitFor()
      await linus.waitSaved()
      await waitConverged([grace, linus], 'Typed before the restart. Typed while it was down.')
      for (const p of people) assert.deepEqual(p.errors, [], `${p.user.name}'s page logged errors`)
    } finally {
      for (const p of people) await p.close()
      await server.destroy()
    }
  })
}
