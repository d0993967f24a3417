// Latency of the HTTP fallback transport (SSE + POST, the demo's TandemProvider) next to
// WebSocket (y-websocket 3.1.0 over `ws`), with the real npm clients: one sender and one
// receiver per case on a document of their own, the sender appending one item to a Y.Array
// at a steady rate, the latency measured from the local change to its arrival in the
// receiver's document (send → commit → relay → receipt), both clients in this process.
// Uses the packages installed in tests/js (run `npm ci` there first).
//
//   node bench/fallback-latency.mjs [updates-per-case=500] [rate-per-second=25]
//   TANDEM_BIN=target/release/tandem (default); TANDEM_ARGS="--database-url memory" to add flags

const modules = new URL('../tests/js/node_modules/', import.meta.url)
const load = (path) => import(new URL(path, modules).href)
const { TandemProvider } = await import('../tests/js/lib/demo.js')
const { WebsocketProvider } = await load('y-websocket/src/y-websocket.js')
const Y = await load('yjs/dist/yjs.mjs')
const { default: WebSocket } = await load('ws/wrapper.mjs')

const UPDATES = Number(process.argv[2] ?? 500)
const RATE = Number(process.argv[3] ?? 25)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** A synced client of `room` over `transport` ('ws': y-websocket, 'sse': TandemProvider). */
async function client (url, room, transport) {
  const doc = new Y.Doc()
  const provider = transport === 'ws'
    ? new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
    : new TandemProvider(url, room, doc, { transport: 'sse' })
  const deadline = Date.now() + 10000
  while (!provider.synced) {
    if (Date.now() > deadline) throw new Error(`${transport} client did not sync`)
    await sleep(10)
  }
  return { doc, provider }
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)]

async function measure (url, from, to) {
  const room = `latency-${from}-${to}-${Date.now()}`
  const sender = await client(url, room, from)
  const receiver = await client(url, room, to)
  const sent = new Map()
  const latencies = []
  receiver.doc.getArray('a').observe((event) => {
    const now = performance.now()
    for (const d of event.changes.delta) {
      for (const i of d.insert ?? []) latencies.push(now - sent.get(i))
    }
  })
  const array = sender.doc.getArray('a')
  const start = performance.now()
  for (let i = 0; i < UPDATES; i++) {
    // Evenly spaced from the start, so a late tick does not shift the ones after it.
    const wait = start + i * 1000 / RATE - performance.now()
    if (wait > 0) await sleep(wait)
    sent.set(i, performance.now())
    array.push([i])
  }
  const deadline = Date.now() + 10000
  while (latencies.length < UPDATES && Date.now() < deadline) await sleep(20)
  // Destroying the documents stops their awareness timers too.
  for (const c of [sender, receiver]) {
    c.provider.destroy()
    c.doc.destroy()
  }
  const sorted = latencies.sort((a, b) => a - b)
  const ms = (v) => v === undefined ? '-' : `${v.toFixed(2)} ms`
  return `| ${from} → ${to} | ${latencies.length} / ${UPDATES} | ${ms(percentile(sorted, 50))} | ${ms(percentile(sorted, 90))} | ${ms(percentile(sorted, 99))} | ${ms(sorted.at(-1))} |`
}

// Set before the harness is loaded: it reads TANDEM_BIN once.
process.env.TANDEM_BIN ??= new URL('../target/release/tandem', import.meta.url).pathname
const { TandemServer } = await import('../tests/harness/server.js')
const extra = (process.env.TANDEM_ARGS ?? '').split(' ').filter(Boolean)
const server = new TandemServer({ args: ['--max-messages-per-sec', '0', '--log', 'warn,tandem=info', ...extra] })
await server.start()
try {
  console.log(`${UPDATES} updates per case at ${RATE}/s; server ${process.env.TANDEM_BIN} ${extra.join(' ')}`)
  console.log('| sender → receiver | delivered | p50 | p90 | p99 | max |')
  console.log('|---|---|---|---|---|---|')
  for (const [from, to] of [['ws', 'ws'], ['sse', 'ws'], ['ws', 'sse'], ['sse', 'sse']]) {
    console.log(await measure(server.url, from, to))
  }
} finally {
  await server.destroy()
}
