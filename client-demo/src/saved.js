// "Saved": knowing when this tab's edits are durable on the server.
//
// y-websocket's own `synced` flag only says that the initial exchange with the server is done.
// Tandem answers a SyncStep1 only after every update the same connection sent before it is
// committed to its database (persist before relay, see the README), so a SyncStep1 sent after
// some edits works as a receipt: when its SyncStep2 answer arrives, those edits are saved.
//
// The tracker counts local changes, sends one such probe at a time while the connection is
// up, and reports:
//   'loading'  not yet synced with the server since the page opened
//   'saved'    every local change is durable on the server
//   'saving'   connected, some changes not yet confirmed
//   'offline'  not connected, some changes exist only in this tab (they are sent on reconnect)

import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'

const MESSAGE_SYNC = 0

/**
 * @param {import('y-websocket').WebsocketProvider | import('./fallback-provider.js').TandemProvider} provider
 * @param {(state: 'loading'|'saved'|'saving'|'offline') => void} onChange
 * @returns {{ state: () => string, pending: () => number }}
 */
export function trackSaved (provider, onChange) {
  let local = 0 // local changes made so far
  let confirmed = 0 // how many of them the server has confirmed durable
  let inflight = null // `local` at the time the outstanding probe was sent
  let everSynced = false
  // Per connection: the server's SyncStep1 was answered (our SyncStep2 carries the edits made
  // while offline), and the provider finished its initial sync. Probes wait for both, so that
  // they travel behind those edits.
  let answeredServer = false
  let last = null

  const state = () => {
    if (!everSynced) return 'loading'
    if (confirmed >= local) return 'saved'
    return provider.wsconnected ? 'saving' : 'offline'
  }
  const report = () => {
    const s = state()
    if (s !== last) {
      last = s
      onChange(s)
    }
  }
  // TandemProvider (fallback-provider.js) sends over whichever transport it uses;
  // y-websocket's provider has only its socket (readyState 1: open).
  const send = (message) => {
    if (typeof provider.sendMessage === 'function') return provider.sendMessage(message)
    const ws = provider.ws
    if (!ws || ws.readyState !== 1) return false
    ws.send(message)
    return true
  }
  const probe = () => {
    if (inflight !== null || confirmed >= local || !provider.synced || !answeredServer) return
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    syncProtocol.writeSyncStep1(encoder, provider.doc)
    if (send(encoding.toUint8Array(encoder))) inflight = local
  }

  provider.doc.on('update', (_update, origin) => {
    if (origin === provider) return // came from the server
    local++
    // Let the provider send the update first (it listens to the same event).
    queueMicrotask(() => { probe(); report() })
  })

  const handleSync = provider.messageHandlers[MESSAGE_SYNC]
  provider.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, p, emitSynced, type) => {
    const kind = decoding.peekVarUint(decoder)
    const waiting = inflight
    handleSync(encoder, decoder, p, emitSynced, type)
    if (kind === syncProtocol.messageYjsSyncStep1) {
      // The reply (our SyncStep2) is sent right after this handler returns.
      queueMicrotask(() => { answeredServer = true; probe(); report() })
    } else if (kind === syncProtocol.messageYjsSyncStep2 && waiting !== null && inflight === waiting) {
      confirmed = Math.max(confirmed, waiting)
      inflight = null
      probe()
      report()
    }
  }

  provider.on('sync', (synced) => {
    if (synced) everSynced = true
    probe()
    report()
  })
  provider.on('status', ({ status }) => {
    if (status !== 'connected') {
      inflight = null
      answeredServer = false
    }
    report()
  })

  report()
  return { state, pending: () => local - confirmed }
}

/**
 * The same states for a HocuspocusProvider. Tandem acknowledges each update (sync status) only
 * once it is durable, so the provider's own `unsyncedChanges` count is the receipt.
 * @param {import('@hocuspocus/provider').HocuspocusProvider} provider
 * @param {(state: 'loading'|'saved'|'saving'|'offline') => void} onChange
 * @returns {{ state: () => string, pending: () => number }}
 */
export function trackSavedHocuspocus (provider, onChange) {
  let everSynced = false
  let connected = false
  let last = null
  const state = () => {
    if (!everSynced) return 'loading'
    if (provider.unsyncedChanges === 0) return 'saved'
    return connected ? 'saving' : 'offline'
  }
  const report = () => {
    const s = state()
    if (s !== last) {
      last = s
      onChange(s)
    }
  }
  provider.on('synced', () => { everSynced = true; report() })
  provider.on('unsyncedChanges', report)
  provider.on('status', ({ status }) => { connected = status === 'connected'; report() })
  report()
  return { state, pending: () => provider.unsyncedChanges }
}
