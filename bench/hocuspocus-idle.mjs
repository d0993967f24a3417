// Idle memory of the Hocuspocus protocol next to y-websocket, with the real npm clients:
// the server's RSS growth per synced document session, for
//   y-websocket      one socket per document (WebsocketProvider)
//   hocuspocus       one socket per document (HocuspocusProvider with its own socket)
//   hocuspocus-mux   DOCS_PER_SOCKET documents per HocuspocusProviderWebsocket
// Uses the packages installed in tests/js (run `npm ci` there first).
//
//   node bench/hocuspocus-idle.mjs [sessions=2000] [docs-per-socket=10]
//   TANDEM_BIN=target/release/tandem (default)

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'

const modules = new URL('../tests/js/node_modules/', import.meta.url)
const load = (path) => import(new URL(path, modules).href)
const { HocuspocusProvider, HocuspocusProviderWebsocket } = await load('@hocuspocus/provider/dist/hocuspocus-provider.esm.js')
const { WebsocketProvider } = await load('y-websocket/src/y-websocket.js')
const Y = await load('yjs/dist/yjs.mjs')
const { default: WebSocket } = await load('ws/wrapper.mjs')

const SESSIONS = Number(process.argv[2] ?? 2000)
const PER_SOCKET = Number(process.argv[3] ?? 10)
const ROOMS = 100
const BIN = process.env.TANDEM_BIN ?? new URL('../target/release/tandem', import.meta.url).pathname

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1])

async function server () {
  const child = spawn(BIN, ['--addr', '127.0.0.1:0', '--database-url', 'memory', '--log', 'warn,tandem=info'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } })
  let log = ''
  const port = await new Promise((resolve, reject) => {
    const check = (chunk) => {
      log += chunk
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(log)
      if (m) resolve(Number(m[1]))
    }
    child.stdout.on('data', check)
    child.stderr.on('data', check)
    child.once('exit', () => reject(new Error(`server exited: ${log}`)))
  })
  return { child, url: `ws://127.0.0.1:${port}` }
}

async function measure (mode) {
  const { child, url } = await server()
  await sleep(500)
  const before = rssKiB(child.pid)
  const providers = []
  const sockets = []
  for (let i = 0; i < SESSIONS; i++) {
    const name = `idle-${i % ROOMS}`
    const doc = new Y.Doc()
    if (mode === 'y-websocket') {
      providers.push(new WebsocketProvider(url, name, doc, { WebSocketPolyfill: WebSocket, disableBc: true }))
    } else {
      const perSocket = mode === 'hocuspocus' ? 1 : PER_SOCKET
      if (i % perSocket === 0) sockets.push(new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket }))
      // Consecutive sessions share a socket, so its documents are distinct (PER_SOCKET <= ROOMS).
      const p = new HocuspocusProvider({ name, document: doc, websocketProvider: sockets.at(-1) })
      p.attach()
      providers.push(p)
    }
    if (i % 200 === 199) await sleep(50)
  }
  const synced = () => providers.filter((p) => p.synced ?? p.isSynced).length
  const deadline = Date.now() + 120_000
  while (synced() < SESSIONS && Date.now() < deadline) await sleep(100)
  await sleep(3000)
  const held = rssKiB(child.pid)
  const result = {
    mode,
    sessions: SESSIONS,
    sockets: mode === 'hocuspocus-mux' ? sockets.length : SESSIONS,
    synced: synced(),
    rssBeforeMiB: (before / 1024).toFixed(1),
    rssHeldMiB: (held / 1024).toFixed(1),
    perSessionKiB: ((held - before) / SESSIONS).toFixed(2)
  }
  for (const p of providers) p.destroy()
  for (const s of sockets) s.destroy()
  child.kill('SIGKILL')
  await sleep(500)
  return result
}

const results = []
for (const mode of ['y-websocket', 'hocuspocus', 'hocuspocus-mux']) results.push(await measure(mode))
console.table(results)
process.exit(0)
