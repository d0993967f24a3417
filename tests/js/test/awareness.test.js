// Proves: awareness (presence) flows through Tandem. A state set by client A
// reaches B and any client joining later; a change reaches B; and when A goes
// away, B sees A's state removed within a few seconds (far below the 30 s
// awareness timeout), whether A leaves politely (provider.destroy(), which
// sends a null state), closes its socket without a word, or drops the TCP
// connection. A client joining after A left is not told about A.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { startServer } from '../../harness/server.js'
import { ClientPool, waitFor } from '../lib/clients.js'

const REMOVAL_DEADLINE_MS = 5000
let server
const pool = new ClientPool()

before(async () => { server = await startServer() })
afterEach(() => pool.destroyAll())
after(async () => { await server?.destroy() })

const statesOf = (client) => JSON.stringify([...client.provider.awareness.getStates()])

async function setUpPresence (room) {
  const a = await pool.openSynced(server.url, room)
  const b = await pool.openSynced(server.url, room)
  const aid = a.doc.clientID
  // (y-protocols never transmits the initial `{}` state: its clock 0 is not newer than "unknown".)
  b.provider.awareness.setLocalState({ user: { name: 'B' } })
  a.provider.awareness.setLocalState({ user: { name: 'A' } })
  await waitFor(() => b.provider.awareness.getStates().get(aid)?.user?.name === 'A', {
    message: () => `B to see A's awareness state; B has ${statesOf(b)}`
  })
  assert.deepEqual(b.provider.awareness.getStates().get(aid), { user: { name: 'A' } })
  return { a, b, aid }
}

async function expectRemoved (observer, aid, t, how) {
  const started = Date.now()
  await waitFor(() => !observer.provider.awareness.getStates().has(aid), {
    timeout: REMOVAL_DEADLINE_MS,
    message: () => `A's awareness state (client ${aid}) to be removed at B after A ${how}; ` +
      `B still has ${statesOf(observer)}`
  })
  t.diagnostic(`A's state removed at B ${Date.now() - started} ms after A ${how}`)
}

async function expectNewcomerDoesNotSee (room, aid, b) {
  const d = await pool.openSynced(server.url, room)
  // Give the server's initial awareness message time to arrive: wait until D
  // knows of B (which is still connected), then check A is not listed.
  await waitFor(() => d.provider.awareness.getStates().get(b.doc.clientID)?.user?.name === 'B', {
    message: () => `newcomer D to receive B's awareness state; D has ${statesOf(d)}`
  })
  assert.equal(d.provider.awareness.getStates().has(aid), false,
    `newcomer was told about departed client ${aid}: ${statesOf(d)}`)
}

test('awareness state reaches peers and late joiners, and changes propagate', { timeout: 60000 }, async () => {
  const room = 'awareness-basic'
  const { a, b, aid } = await setUpPresence(room)
  await waitFor(() => a.provider.awareness.getStates().get(b.doc.clientID)?.user?.name === 'B', {
    message: () => `A to see B's state; A has ${statesOf(a)}`
  })

  // A late joiner gets the current states from the server without anyone changing anything.
  const c = await pool.openSynced(server.url, room)
  await waitFor(() => c.provider.awareness.getStates().get(aid)?.user?.name === 'A' &&
    c.provider.awareness.getStates().get(b.doc.clientID)?.user?.name === 'B', {
    message: () => `late joiner C to receive A's and B's states; C has ${statesOf(c)}`
  })

  a.provider.awareness.setLocalStateField('user', { name: 'A2', cursor: 7 })
  await waitFor(() => b.provider.awareness.getStates().get(aid)?.user?.name === 'A2', {
    message: () => `B to see A's changed state; B has ${statesOf(b)}`
  })
  await waitFor(() => c.provider.awareness.getStates().get(aid)?.user?.name === 'A2', {
    message: () => `C to see A's changed state; C has ${statesOf(c)}`
  })
  assert.deepEqual(b.provider.awareness.getStates().get(aid), { user: { name: 'A2', cursor: 7 } })
  assert.deepEqual(c.provider.awareness.getStates().get(aid), { user: { name: 'A2', cursor: 7 } })
})

test('awareness state is removed when the provider is destroyed', { timeout: 60000 }, async (t) => {
  const room = 'awareness-destroy'
  const { a, b, aid } = await setUpPresence(room)
  a.provider.destroy()
  await expectRemoved(b, aid, t, 'destroyed its provider')
  await expectNewcomerDoesNotSee(room, aid, b)
})

test('server removes awareness state when a socket closes without a null state', { timeout: 60000 }, async (t) => {
  const room = 'awareness-silent-close'
  const { a, b, aid } = await setUpPresence(room)
  // Close the WebSocket (normal close frame) without y-websocket's goodbye
  // message: only the server can tell B that A left.
  a.provider.shouldConnect = false
  a.provider.ws.close()
  await expectRemoved(b, aid, t, 'closed its socket silently')
  await expectNewcomerDoesNotSee(room, aid, b)
})

test('server removes awareness state when the TCP connection drops', { timeout: 60000 }, async (t) => {
  const room = 'awareness-drop'
  const { a, b, aid } = await setUpPresence(room)
  // No close frame at all: the socket is destroyed.
  a.provider.shouldConnect = false
  a.provider.ws.terminate()
  await expectRemoved(b, aid, t, 'dropped its TCP connection')
  await expectNewcomerDoesNotSee(room, aid, b)
})
