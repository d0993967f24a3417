// The history viewer: a document's timeline, any version, what changed since, restore, labels.
// Everything goes through tandem's admin API (docs/admin-api.md) with the admin token, which
// this tab keeps in sessionStorage.
//
//   /history               all documents
//   /history?doc=<name>    one document's history
//   /history?token=<admin> the link tandem prints at start-up (open mode, loopback): the token
//                          moves to sessionStorage and out of the address bar

import './style.css'
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import {
  AUTHORS_MAP, COLORS, avatar, colorFor, editorHref, h, historyHref, param, setParams, timeLabel, toast
} from './shared.js'

const TOKEN_KEY = 'tandem-demo:admin-token'
// An admin token in the URL (the start-up link) moves to this tab's sessionStorage and out of
// the address bar, so it is neither bookmarked nor shared with the link of a page.
const urlToken = param('token')
if (urlToken !== null && urlToken.trim()) sessionStorage.setItem(TOKEN_KEY, urlToken.trim())
if (urlToken !== null) setParams({ token: null })
// Changes per timeline request (the API's maximum); sessions are grouped from these.
const PAGE = 1000
// The API's default session gap: changes by one author closer than this are one session.
const SESSION_GAP_MS = 300_000
const POLL_MS = 4000
const $ = (id) => document.getElementById(id)
const main = $('main')

const docName = (param('doc') ?? '').trim() || null
const enc = encodeURIComponent
const docPath = (name) => `/documents/${enc(name)}`

document.title = docName ? `${docName} · History · Tandem` : 'History · Tandem'
$('doc-name').value = docName ?? ''
$('doc-form').addEventListener('submit', (e) => {
  e.preventDefault()
  location.href = historyHref($('doc-name').value.trim() || null)
})
if (docName) {
  $('open-editor').href = editorHref(docName)
  $('open-editor').hidden = false
}
$('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY)
  location.reload()
})

// --- Admin API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor (status, reason) {
    super(reason)
    this.status = status
  }
}

async function api (path, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  let res
  try {
    res = await fetch(`/api/v1/admin${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store'
    })
  } catch {
    throw new ApiError(0, 'cannot reach the server')
  }
  if (!res.ok) {
    let reason = res.statusText
    try { reason = (await res.json()).reason ?? reason } catch {}
    throw new ApiError(res.status, reason)
  }
  return res.json()
}

function fail (err) {
  if (err instanceof ApiError && err.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY)
    return showLogin('That admin token was not accepted.')
  }
  if (err instanceof ApiError && err.status === 404 && /disabled/i.test(err.message)) {
    return showLogin('The admin API is off: start tandem with --admin-token <secret> (or TANDEM_ADMIN_TOKEN).')
  }
  main.replaceChildren(h('div', { class: 'card login' },
    h('h1', {}, 'Something went wrong'),
    h('p', { class: 'error' }, err instanceof ApiError ? `${err.status || ''} ${err.message}` : String(err)),
    h('button', { class: 'button', type: 'button', onclick: () => location.reload() }, 'Try again')))
}

// --- Sign in --------------------------------------------------------------------------------

function showLogin (message) {
  $('sign-out').hidden = true
  const input = h('input', { type: 'password', id: 'admin-token', autocomplete: 'off', placeholder: 'Admin token', 'aria-label': 'Admin token', required: true })
  const error = h('p', { class: 'error', role: 'alert', hidden: !message }, message ?? '')
  const form = h('form', { class: 'card login' },
    h('h1', {}, 'Document history'),
    h('p', {}, 'The history viewer uses the admin API. Enter the token tandem was started with (--admin-token). It is kept in this tab only.'),
    input, error,
    h('button', { class: 'button primary', type: 'submit' }, 'Open history'))
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    sessionStorage.setItem(TOKEN_KEY, input.value.trim())
    try {
      await api('/documents?limit=1')
      start()
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        error.textContent = 'That admin token was not accepted.'
        error.hidden = false
      } else {
        fail(err)
      }
    }
  })
  main.replaceChildren(form)
  input.focus()
}

// --- All documents ------------------------------------------------------------------------------

async function showDocuments () {
  const rows = h('tbody')
  const more = h('button', { class: 'button', type: 'button', hidden: true }, 'More')
  const table = h('table', { class: 'doc-list' },
    h('thead', {}, h('tr', {}, ['Document', 'Last change', 'Changes', 'Stored', 'Here now', ''].map((t) => h('th', {}, t)))),
    rows)
  main.replaceChildren(h('div', { class: 'documents' },
    h('div', { class: 'card' },
      h('div', { class: 'card-head' }, h('h2', {}, 'Documents')),
      table,
      h('div', { class: 'timeline-more' }, more))))
  let cursor = null
  const load = async () => {
    const q = new URLSearchParams({ limit: '100' })
    if (cursor) q.set('cursor', cursor)
    const page = await api(`/documents?${q}`)
    for (const d of page.documents) {
      rows.append(h('tr', {},
        h('td', {}, h('a', { href: historyHref(d.name) }, d.name)),
        h('td', { title: d.last_change_at ?? '' }, d.last_change_at ? timeLabel(d.last_change_at) : '—'),
        h('td', { class: 'num' }, d.last_seq),
        h('td', { class: 'num' }, bytes(d.stored_bytes)),
        h('td', { class: 'num' }, d.connected_clients),
        h('td', {}, h('a', { href: editorHref(d.name) }, 'Edit'))))
    }
    if (!rows.children.length) rows.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No documents yet. Open the editor and type something.')))
    cursor = page.next_cursor
    more.hidden = !cursor
  }
  more.addEventListener('click', () => load().catch(fail))
  await load()
}

const bytes = (n) => n == null ? '—' : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`

// --- One document ---------------------------------------------------------------------------

const view = {
  info: null, // Document from the API
  entries: [], // timeline entries, newest first
  next: null, // cursor for older entries
  everyChange: false, // group=none instead of sessions
  labels: [],
  people: new Map(), // Yjs client id → {name, color}, recorded by the demo editor
  selected: null, // null: the current version; else {seq, entry?, label?}
  mode: 'content', // or 'diff'
  reader: null // read-only TipTap editor showing a version
}

async function showDocument (name) {
  try {
    view.info = await api(docPath(name))
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 410)) {
      main.replaceChildren(h('div', { class: 'card login' },
        h('h1', {}, name),
        h('p', {}, err.status === 410 ? 'This document was deleted.' : 'No such document yet: nobody has changed it.'),
        err.status === 404 ? h('a', { class: 'button primary', href: editorHref(name) }, 'Open it in the editor') : null))
      return
    }
    throw err
  }
  const timeline = h('ul', { class: 'timeline', id: 'timeline', role: 'listbox', 'aria-label': 'Versions' })
  const everyChange = h('input', { type: 'checkbox', id: 'every-change' })
  everyChange.addEventListener('change', () => {
    view.everyChange = everyChange.checked
    reloadTimeline().catch(fail)
  })
  const viewer = h('section', { class: 'card', id: 'viewer' })
  main.replaceChildren(h('div', { class: 'history-layout' },
    h('section', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', {}, 'Versions'),
        h('label', { class: 'viewer-sub', title: 'Show every single change instead of editing sessions' }, everyChange, ' every change')),
      timeline),
    viewer))
  view.reader = new Editor({
    element: h('div'),
    editable: false,
    extensions: [StarterKit.configure({ undoRedo: false, trailingNode: false })]
  })
  await reloadTimeline()
  await loadPeople()
  renderTimeline()
  await renderViewer()
  setInterval(() => { if (document.visibilityState === 'visible') poll().catch(() => {}) }, POLL_MS)
}

/**
 * Names the demo editor recorded for its Yjs client ids (open mode has no token names). A
 * restore puts that map back too, so the states just before the latest restores are read as well.
 */
async function loadPeople () {
  const restores = view.entries.filter((e) => e.author?.startsWith('admin') && e.from > 1).slice(0, 5)
  const points = ['', ...restores.map((e) => `?seq=${e.from - 1}`)]
  const states = await Promise.all(points.map((q) => api(`${docPath(docName)}/state${q}`).catch(() => null)))
  const people = new Map()
  for (const state of states.reverse()) { // oldest first: newer names win
    const recorded = state?.content?.[AUTHORS_MAP]
    if (recorded?.kind !== 'map' || !recorded.value || typeof recorded.value !== 'object') continue
    for (const [id, v] of Object.entries(recorded.value)) {
      if (v && typeof v.name === 'string') {
        people.set(Number(id), { name: v.name, color: COLORS.includes(v.color) ? v.color : colorFor(v.name) })
      }
    }
  }
  view.people = people
}

async function poll () {
  const info = await api(docPath(docName))
  if (info.last_seq === view.info.last_seq) return
  view.info = info
  await reloadTimeline()
  await loadPeople()
  renderTimeline()
  if (view.selected === null || view.mode === 'diff') await renderViewer()
}

function normalize (item) {
  const changes = item.changes ?? 1
  return {
    from: item.from_seq ?? item.seq,
    to: item.to_seq ?? item.seq,
    start: item.start ?? item.time,
    end: item.end ?? item.time,
    author: item.author ?? null,
    clients: item.clients ?? [],
    changes,
    summary: item.summary ?? {}
  }
}

/** Who made an entry: the token's user when auth is on, else the names the editor recorded. */
function who (entry) {
  const recorded = entry.clients.map((c) => view.people.get(c)).filter(Boolean)
  if (entry.author) {
    if (entry.author.startsWith('admin')) return { name: entry.author.replace(/^admin:?/, 'admin ').trim(), color: '#495057' }
    // The server's name for the author; the colour they picked in the editor, when known.
    return { name: entry.author, color: recorded[0]?.color ?? colorFor(entry.author) }
  }
  const people = [...new Set(recorded.map((p) => p.name))]
  if (!people.length) return { name: 'anonymous', color: '#868e96' }
  const first = [...view.people.values()].find((p) => p.name === people[0])
  return { name: people.join(', '), color: first?.color ?? colorFor(people[0]) }
}

function totals (summary) {
  let inserted = 0
  let deleted = 0
  for (const [root, s] of Object.entries(summary)) {
    if (root === AUTHORS_MAP) continue
    inserted += s.inserted ?? 0
    deleted += s.deleted ?? 0
  }
  return { inserted, deleted, onlyAuthors: Object.keys(summary).every((r) => r === AUTHORS_MAP) }
}

async function reloadTimeline () {
  view.entries = []
  view.next = null
  const [, labels] = await Promise.all([loadMore(), api(`${docPath(docName)}/labels`)])
  view.labels = labels.labels ?? []
  renderTimeline()
}

async function loadMore () {
  const q = new URLSearchParams({ order: 'desc', limit: String(PAGE), group: view.everyChange ? 'none' : 'session' })
  if (view.next !== null) q.set('before', String(view.next))
  const page = await api(`${docPath(docName)}/timeline?${q}`)
  const items = (page.sessions ?? page.changes ?? []).map(normalize)
    .filter((e) => !totals(e.summary).onlyAuthors || e.changes > 1)
  // A page may end in the middle of a session: join its two halves.
  const last = view.entries[view.entries.length - 1]
  const first = items[0]
  if (!view.everyChange && last && first && first.to === last.from - 1 && first.author === last.author &&
      Date.parse(last.start) - Date.parse(first.end) < SESSION_GAP_MS) {
    items.shift()
    Object.assign(last, {
      from: first.from,
      start: first.start,
      changes: last.changes + first.changes,
      clients: [...new Set([...last.clients, ...first.clients])],
      summary: mergeSummaries(last.summary, first.summary)
    })
  }
  view.entries.push(...items)
  view.next = page.next ?? null
}

function mergeSummaries (a, b) {
  const out = structuredClone(a)
  for (const [root, v] of Object.entries(b)) {
    const o = out[root] ?? (out[root] = { kind: v.kind, inserted: 0, deleted: 0 })
    o.inserted += v.inserted ?? 0
    o.deleted += v.deleted ?? 0
  }
  return out
}

function select (selected) {
  view.selected = selected
  if (selected === null) view.mode = 'content'
  renderTimeline()
  renderViewer().catch(fail)
}

function renderTimeline () {
  const list = $('timeline')
  if (!list) return
  const seq = view.selected?.seq ?? null
  const items = []
  items.push(h('li', {
    class: 'entry', role: 'option', 'aria-selected': String(view.selected === null), dataset: { seq: 'now' }, onclick: () => select(null)
  },
  h('span', { class: 'avatar', style: { background: '#1f2a44' } }, '●'),
  h('div', { class: 'entry-title' }, h('span', { class: 'who' }, 'Current version'),
    h('span', { class: 'when' }, view.info.last_change_at ? timeLabel(view.info.last_change_at) : '')),
  h('div', { class: 'entry-meta' }, `#${view.info.last_seq} · ${view.info.connected_clients} editing now`)))

  for (const entry of view.entries) {
    const { name, color } = who(entry)
    const t = totals(entry.summary)
    const labels = view.labels.filter((l) => l.seq >= entry.from && l.seq <= entry.to)
    items.push(h('li', {
      class: 'entry',
      role: 'option',
      'aria-selected': String(view.selected !== null && seq === entry.to && !view.selected.label),
      dataset: { seq: String(entry.to) },
      title: `changes #${entry.from}–#${entry.to}\n${new Date(entry.start).toLocaleString()} – ${new Date(entry.end).toLocaleString()}`,
      onclick: () => select({ seq: entry.to, entry })
    },
    avatar(name, color, { title: name }),
    h('div', { class: 'entry-title' }, h('span', { class: 'who' }, name), h('span', { class: 'when' }, timeLabel(entry.end))),
    h('div', { class: 'entry-meta' },
      h('span', {}, entry.from === entry.to ? `#${entry.to}` : `#${entry.from}–${entry.to}`),
      t.inserted ? h('span', { class: 'ins-count' }, `+${t.inserted}`) : null,
      t.deleted ? h('span', { class: 'del-count' }, `−${t.deleted}`) : null,
      entry.changes > 1 ? h('span', {}, `${entry.changes} changes`) : null,
      labels.map((l) => h('span', {
        class: 'label-tag',
        title: `label "${l.name}" at #${l.seq}`,
        onclick: (e) => { e.stopPropagation(); select({ seq: l.seq, label: l.name }) }
      }, l.name)))))
  }
  if (!view.entries.length) items.push(h('li', { class: 'empty' }, 'No changes yet.'))
  if (view.next !== null) {
    items.push(h('li', { class: 'timeline-more' }, h('button', {
      class: 'button',
      type: 'button',
      onclick: () => loadMore().then(renderTimeline).catch(fail)
    }, 'Older versions')))
  }
  list.replaceChildren(...items)
}

async function renderViewer () {
  const viewer = $('viewer')
  const sel = view.selected
  const seq = sel?.seq ?? null
  const entry = sel?.entry
  const person = entry ? who(entry) : null

  const title = sel === null
    ? 'Current version'
    : sel.label ? `Version #${seq} · “${sel.label}”` : `Version #${seq}`
  const sub = sel === null
    ? `${view.info.last_seq} changes in all`
    : entry ? `${person.name} · ${timeLabel(entry.end)}` : ''
  const modeButton = (mode, text) => h('button', {
    type: 'button',
    'aria-pressed': String(view.mode === mode),
    disabled: sel === null && mode === 'diff',
    onclick: () => { view.mode = mode; renderViewer().catch(fail) }
  }, text)

  const actions = h('div', { class: 'viewer-actions', style: { display: 'flex', gap: '8px', marginLeft: 'auto' } })
  const confirmBar = h('div', { class: 'notice', hidden: true, style: { margin: '0 16px 12px' } })
  if (sel !== null) {
    actions.append(
      h('button', { class: 'button', type: 'button', onclick: () => askLabel(confirmBar, seq) }, 'Add label'),
      h('button', { class: 'button primary', type: 'button', onclick: () => askRestore(confirmBar, seq) }, 'Restore this version'))
  }
  const body = h('div', { id: 'version-body' })
  viewer.replaceChildren(
    h('div', { class: 'viewer-head' },
      h('div', {}, h('h2', {}, title), h('div', { class: 'viewer-sub', title: entry ? new Date(entry.end).toLocaleString() : '' }, sub)),
      h('div', { class: 'segmented', role: 'group', 'aria-label': 'Show' },
        modeButton('content', 'This version'),
        modeButton('diff', 'Changes since, until now')),
      actions),
    confirmBar,
    body)

  if (view.mode === 'diff' && sel !== null) {
    const diff = await api(`${docPath(docName)}/diff?from=${seq}`)
    body.replaceChildren(renderDiff(diff))
  } else {
    const q = seq === null ? '' : `?seq=${seq}`
    const state = await api(`${docPath(docName)}/state${q}`)
    body.replaceChildren(renderContent(state))
  }
}

function renderContent (state) {
  const roots = Object.entries(state.content ?? {}).filter(([root]) => root !== AUTHORS_MAP)
  const xml = state.content?.default
  const out = h('div', { class: 'version-content' })
  if (xml?.kind === 'xml') {
    try {
      view.reader.commands.setContent(xml.value, { emitUpdate: false })
      out.append(view.reader.options.element)
      return out
    } catch {}
  }
  if (!roots.length) {
    out.append(h('p', { class: 'empty' }, 'Empty at this version.'))
    return out
  }
  for (const [root, value] of roots) {
    out.append(h('div', { class: 'diff' }, h('strong', {}, root), '\n',
      value.kind === 'text' ? value.value : JSON.stringify(value.value, null, 2)))
  }
  return out
}

/** The colour the timeline uses for an author (the token's user). */
function authorColor (author) {
  const entry = view.entries.find((e) => e.author === author)
  return entry ? who(entry).color : colorFor(author)
}

function spanAuthor (span) {
  if (span.author) return span.author
  if (span.seq == null) return null
  const entry = view.entries.find((e) => span.seq >= e.from && span.seq <= e.to)
  return entry ? who(entry).name : null
}

function renderSpans (spans) {
  return spans.map((s) => {
    if (s.op === 'keep') return document.createTextNode(s.text)
    const by = spanAuthor(s)
    const what = s.op === 'insert' ? 'inserted' : 'deleted'
    return h(s.op === 'insert' ? 'ins' : 'del', { title: `${what}${by ? ` by ${by}` : ''}${s.seq != null ? ` in change #${s.seq}` : ''}` }, s.text)
  })
}

function renderDiff (diff) {
  const roots = Object.entries(diff.content ?? {}).filter(([root]) => root !== AUTHORS_MAP)
  const out = h('div', {})
  const authors = diff.authors ?? []
  if (!roots.length) {
    out.append(h('p', { class: 'empty' }, `Nothing changed since version #${diff.from}.`))
    return out
  }
  out.append(h('div', { class: 'diff-authors' },
    `Changes #${diff.from + 1}–#${diff.to}`,
    authors.length ? ' by' : null,
    authors.map((a) => h('span', { class: 'author-chip' }, avatar(a, authorColor(a), { small: true }), a))))
  const box = h('div', { class: 'diff' })
  for (const [root, value] of roots) {
    if (roots.length > 1 || root !== 'default') box.append(h('div', { class: 'viewer-sub' }, root))
    if (value.kind === 'xml') {
      for (const block of value.blocks ?? []) {
        box.append(h('div', {
          class: 'diff-block',
          dataset: { type: block.type ?? '' },
          style: { marginLeft: `${Math.max(0, (block.path?.length ?? 1) - 1) * 1.2}em` }
        }, renderSpans(block.spans ?? [])))
      }
    } else if (value.kind === 'text') {
      box.append(h('div', { class: 'diff-block' }, renderSpans(value.spans ?? [])))
    }
  }
  out.append(box)
  return out
}

function askRestore (bar, seq) {
  bar.replaceChildren(
    h('p', {}, `Restore “${docName}” to version #${seq}? Everyone editing it sees the change at once. The restore is itself a new version, so it can be undone the same way.`),
    h('div', { class: 'notice-form' },
      h('button', {
        class: 'button primary',
        type: 'button',
        onclick: async (e) => {
          e.target.disabled = true
          try {
            const r = await api(`${docPath(docName)}/restore`, { method: 'POST', body: { seq } })
            toast(r.changed ? `Restored to version #${r.restored_to}` : `Already identical to version #${r.restored_to}`)
            view.info = await api(docPath(docName))
            await reloadTimeline()
            await loadPeople()
            select(null)
          } catch (err) {
            bar.hidden = true
            toast(`Restore failed: ${err.message}`, { error: true })
          }
        }
      }, 'Restore'),
      h('button', { class: 'button', type: 'button', onclick: () => { bar.hidden = true } }, 'Cancel')))
  bar.hidden = false
}

function askLabel (bar, seq) {
  const input = h('input', { maxlength: 200, placeholder: 'e.g. v1.0, before review', 'aria-label': 'Label name', required: true })
  const form = h('form', { class: 'notice-form' }, input,
    h('button', { class: 'button primary', type: 'submit' }, 'Save label'),
    h('button', { class: 'button', type: 'button', onclick: () => { bar.hidden = true } }, 'Cancel'))
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const name = input.value.trim()
    if (!name) return
    try {
      await api(`${docPath(docName)}/labels`, { method: 'POST', body: { name, seq } })
      toast(`Labelled version #${seq} “${name}”`)
      bar.hidden = true
      const labels = await api(`${docPath(docName)}/labels`)
      view.labels = labels.labels ?? []
      renderTimeline()
    } catch (err) {
      toast(err.status === 409 ? `There is already a label “${name}”` : `Could not label: ${err.message}`, { error: true })
    }
  })
  bar.replaceChildren(h('p', {}, `Name version #${seq}:`), form)
  bar.hidden = false
  input.focus()
}

// --- Start ------------------------------------------------------------------------------------

async function start () {
  $('sign-out').hidden = false
  try {
    if (docName) await showDocument(docName)
    else await showDocuments()
  } catch (err) {
    fail(err)
  }
}

if (sessionStorage.getItem(TOKEN_KEY)) start()
else showLogin()
