// The demo editor: TipTap bound to a Y.Doc that TandemProvider (the y-websocket protocol, over a
// WebSocket or Tandem's HTTP fallback) syncs through tandem.
//
//   /?doc=<name>            the document (default "welcome"); same name = same document
//   /?doc=<name>&token=JWT  when the server runs with --auth token (kept for this tab only)
//   /?provider=hocuspocus   sync with TipTap's @hocuspocus/provider instead of y-websocket
//   /?transport=sse         sync over Tandem's HTTP fallback (SSE + POST) even if WebSocket works;
//                           without it the page uses the fallback only when no socket opens

import './style.css'
import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { Placeholder } from '@tiptap/extensions'
import * as Y from 'yjs'
import { TandemProvider } from './fallback-provider.js'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { trackSaved, trackSavedHocuspocus } from './saved.js'
import {
  AUTHORS_MAP, COLORS, avatar, editorHref, h, historyHref, jwtClaims, loadUser, param,
  roomPath, saveUser, setParams, toast, websocketBase
} from './shared.js'

const DEFAULT_DOC = 'welcome'
const TOKEN_KEY = 'tandem-demo:token'
const $ = (id) => document.getElementById(id)

// --- Document and token from the URL --------------------------------------------------------

const docName = (param('doc') ?? '').trim() || DEFAULT_DOC
// A token in the URL moves to sessionStorage (this tab only) and out of the address bar, so
// that "Share" and copied links never carry it.
const urlToken = param('token')
if (urlToken !== null) sessionStorage.setItem(TOKEN_KEY, urlToken.trim())
setParams({ doc: docName, token: null })
const token = sessionStorage.getItem(TOKEN_KEY) || ''
const claims = token ? jwtClaims(token) : null
const readOnly = claims?.access === 'ro'

document.title = `${docName} · Tandem`
$('doc-name').value = docName
$('history-link').href = historyHref(docName)

// --- Yjs document and provider --------------------------------------------------------------

const ydoc = new Y.Doc()
// The room is the name with its slashes (see roomPath): tandem maps it back to `docName`.
// The provider has no BroadcastChannel, so tabs of one browser also sync through the server: what
// the demo shows is what tandem does.
// `?provider=hocuspocus`: the same document over the Hocuspocus protocol, at the bare address
// (the server's `--hocuspocus-path`), with the name as it is and the token in the auth message.
const hocuspocus = param('provider') === 'hocuspocus'
const provider = hocuspocus
  ? new HocuspocusProvider({ url: websocketBase(), name: docName, document: ydoc, token: token || null })
  : new TandemProvider(websocketBase(), roomPath(docName), ydoc, {
    params: token ? { token } : {},
    transport: param('transport') === 'sse' ? 'sse' : 'auto'
  })

let user = loadUser(typeof claims?.name === 'string' ? claims.name : undefined)

const safeColor = (c) => typeof c === 'string' && /^#[0-9a-fA-F]{6}$/.test(c) ? c : '#868e96'

/**
 * Another person's caret: a coloured bar with their name. y-tiptap keeps a caret's element for
 * as long as that person is here, so `refreshCarets` updates it in place when they rename
 * themselves or pick another colour.
 */
function renderCaret (u) {
  const color = safeColor(u.color)
  return h('span', { class: 'collaboration-carets__caret', style: { borderColor: color }, dataset: { clientId: String(u.clientId ?? '') } },
    h('div', { class: 'collaboration-carets__label', style: { backgroundColor: color } }, String(u.name ?? '')))
}

function refreshCarets () {
  for (const caret of document.querySelectorAll('.collaboration-carets__caret[data-client-id]')) {
    const u = provider.awareness.getStates().get(Number(caret.dataset.clientId))?.user
    const label = caret.firstElementChild
    if (!u || !label) continue
    const color = safeColor(u.color)
    if (label.textContent !== String(u.name)) label.textContent = String(u.name)
    caret.style.borderColor = color
    label.style.backgroundColor = color
  }
}

// --- Editor ---------------------------------------------------------------------------------

const editor = new Editor({
  element: $('editor'),
  editable: !readOnly,
  extensions: [
    // Collaboration brings its own undo/redo (only your own changes are undone).
    // No trailing-node: every client would append its own empty paragraph at the end.
    StarterKit.configure({ undoRedo: false, trailingNode: false }),
    Placeholder.configure({
      placeholder: () => readOnly ? '' : provider.synced ? 'Start typing…' : 'Loading…'
    }),
    Collaboration.configure({ document: ydoc }),
    CollaborationCaret.configure({ provider, user: { ...user, clientId: ydoc.clientID }, render: renderCaret })
  ],
  editorProps: { attributes: { 'aria-label': `Document ${docName}`, spellcheck: 'true' } }
})

// --- Who wrote what: clientID → name, for the history viewer ---------------------------------
// Without --auth token the server knows no user names; the demo records its own in the
// document, so the history viewer can still show who made each change.

const AUTHORS_ORIGIN = Symbol('authors')
const authors = ydoc.getMap(AUTHORS_MAP)
const recordAuthor = () => {
  if (readOnly) return
  const key = String(ydoc.clientID)
  const known = authors.get(key)
  if (known?.name !== user.name || known?.color !== user.color) {
    ydoc.transact(() => authors.set(key, { name: user.name, color: user.color }), AUTHORS_ORIGIN)
  }
}
ydoc.on('update', (_update, origin) => {
  if (origin !== provider && origin !== AUTHORS_ORIGIN) queueMicrotask(recordAuthor)
})

// --- Connection and saved state -------------------------------------------------------------

const STATUS_TEXT = { connected: 'Connected', connecting: 'Connecting…', disconnected: 'Offline' }
const SAVED_TEXT = {
  loading: ['Loading…', 'Waiting for the document from the server'],
  saved: ['Saved', 'Every change you made is stored on the server'],
  saving: ['Saving…', 'Sending your latest changes'],
  offline: ['Not saved yet', 'You are offline: your changes are kept in this tab and sent when the connection is back']
}

const setPill = (el, state, text, title) => {
  el.dataset.state = state
  el.querySelector('.text').textContent = text
  if (title) el.title = title
}

const saved = (hocuspocus ? trackSavedHocuspocus : trackSaved)(provider, (state) => {
  const [text, title] = SAVED_TEXT[state]
  setPill($('saved'), state, text, title)
})
if (readOnly) {
  $('saved').hidden = true
  $('readonly').hidden = false
}

let failedAttempts = 0
let attemptOpened = false
provider.on('status', ({ status }) => {
  const over = provider.transport === 'sse' ? 'over HTTP (Server-Sent Events + POST)' : 'over a WebSocket'
  setPill($('connection'), status, STATUS_TEXT[status] ?? status, hocuspocus ? undefined : over)
  if (status === 'connecting') attemptOpened = false
  if (status === 'connected') {
    attemptOpened = true
    failedAttempts = 0
    hideNotice()
  }
})
provider.on('connection-close', (event) => {
  if (!event) return // closed by this page (e.g. going offline)
  if (event.code === 4000) toast('An administrator disconnected this tab; reconnecting…')
  if (!attemptOpened && ++failedAttempts === 2) {
    // The upgrade was refused (browsers do not tell us the HTTP status) or the server is down.
    showNotice(token
      ? `Can't open "${docName}". The server is unreachable, or it did not accept this token for this document.`
      : `Can't open "${docName}". Is the server running? If it was started with --auth token, it needs a token:`,
    { askToken: true })
  }
})
provider.on(hocuspocus ? 'synced' : 'sync', () => editor.view.dispatch(editor.state.tr)) // refresh the placeholder
if (hocuspocus) {
  provider.on('authenticationFailed', ({ reason }) => {
    showNotice(`Can't open "${docName}": ${reason}`, { askToken: true })
  })
  // The server closed this document (the socket stays): the reason starts with the close code.
  provider.on('close', ({ event }) => {
    const code = Number.parseInt(event?.reason ?? '', 10)
    if (!code) return // the socket itself closed: the provider reconnects
    setPill($('connection'), 'disconnected', 'Disconnected')
    showNotice(CLOSE_TEXT[code] ?? `The server closed this document (${event.reason}).`,
      { askToken: code === 4401 })
  })
}

const CLOSE_TEXT = {
  4401: 'Your token expired. Paste a new one to continue:',
  4403: 'Your access to this document was revoked.',
  4410: 'This document was deleted by an administrator.'
}
provider.on('closed', ({ code, reason }) => {
  // Codes 44xx are final: the provider stops reconnecting.
  setPill($('connection'), 'disconnected', 'Disconnected')
  showNotice(CLOSE_TEXT[code] ?? `The server closed the connection (${code}${reason ? ': ' + reason : ''}).`,
    { askToken: code === 4401 || code === 401 })
})

function showNotice (text, { askToken = false } = {}) {
  $('notice-text').textContent = text
  $('notice-token-form').hidden = !askToken
  $('notice').hidden = false
}
function hideNotice () { $('notice').hidden = true }

const useToken = (value) => {
  if (value.trim()) sessionStorage.setItem(TOKEN_KEY, value.trim())
  else sessionStorage.removeItem(TOKEN_KEY)
  location.reload()
}
$('notice-token-form').addEventListener('submit', (e) => {
  e.preventDefault()
  useToken($('notice-token').value)
})
$('token').value = token
$('token-apply').addEventListener('click', () => useToken($('token').value))

addEventListener('beforeunload', (e) => {
  if (!readOnly && saved.pending() > 0) e.preventDefault()
})

// --- Who is here ----------------------------------------------------------------------------

function renderPeople () {
  const states = [...provider.awareness.getStates()]
    .filter(([, s]) => s?.user?.name)
    // You first, then the others by name.
    .sort(([a, sa], [b, sb]) => (a === ydoc.clientID ? -1 : b === ydoc.clientID ? 1
      : String(sa.user.name).localeCompare(String(sb.user.name)) || a - b))
  $('people').replaceChildren(...states.map(([id, s]) => {
    const you = id === ydoc.clientID
    const el = avatar(s.user.name, safeColor(s.user.color),
      { title: you ? `${s.user.name} (you)` : s.user.name })
    el.dataset.clientId = String(id)
    if (you) el.classList.add('you')
    return el
  }))
  $('people').title = `${states.length} here`
}
provider.awareness.on('change', () => {
  renderPeople()
  refreshCarets()
})

// --- You: name and colour -------------------------------------------------------------------

function renderMe () {
  $('me').replaceChildren(avatar(user.name, user.color, { small: true }), h('span', { class: 'me-name' }, user.name))
  $('me-colors').replaceChildren(...COLORS.map((c) => h('button', {
    type: 'button',
    class: 'swatch',
    role: 'radio',
    'aria-checked': String(c === user.color),
    'aria-label': `Colour ${c}`,
    style: { background: c },
    onclick: () => setUser({ ...user, color: c })
  })))
  renderPeople()
}

function setUser (next) {
  user = next
  saveUser(user)
  editor.commands.updateUser({ ...user, clientId: ydoc.clientID })
  if (authors.has(String(ydoc.clientID))) recordAuthor()
  renderMe()
}

$('me-name').value = user.name
$('me-name').addEventListener('input', (e) => {
  const name = e.target.value.trim()
  if (name) setUser({ ...user, name })
})
$('me').addEventListener('click', () => {
  const open = $('me-panel').hidden
  $('me-panel').hidden = !open
  $('me').setAttribute('aria-expanded', String(open))
  if (open) $('me-name').focus()
})
document.addEventListener('click', (e) => {
  if (!$('me-panel').hidden && !$('me-panel').contains(e.target) && !$('me').contains(e.target)) {
    $('me-panel').hidden = true
    $('me').setAttribute('aria-expanded', 'false')
  }
})
renderMe()

// --- Document switcher and share ------------------------------------------------------------

$('doc-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const next = $('doc-name').value.trim()
  if (next && next !== docName) location.href = editorHref(next)
})
$('share').addEventListener('click', async () => {
  const link = new URL(editorHref(docName), location.href).href
  try {
    await navigator.clipboard.writeText(link)
    toast('Link copied: open it in another tab or send it to a friend')
  } catch {
    prompt('Copy this link:', link)
  }
})

// --- Toolbar --------------------------------------------------------------------------------

const TOOLS = [
  ['B', 'Bold (Ctrl+B)', (c) => c.toggleBold(), 'bold'],
  ['I', 'Italic (Ctrl+I)', (c) => c.toggleItalic(), 'italic'],
  ['S', 'Strikethrough', (c) => c.toggleStrike(), 'strike'],
  ['</>', 'Inline code', (c) => c.toggleCode(), 'code'],
  null,
  ['H1', 'Heading 1', (c) => c.toggleHeading({ level: 1 }), ['heading', { level: 1 }]],
  ['H2', 'Heading 2', (c) => c.toggleHeading({ level: 2 }), ['heading', { level: 2 }]],
  ['•', 'Bullet list', (c) => c.toggleBulletList(), 'bulletList'],
  ['1.', 'Numbered list', (c) => c.toggleOrderedList(), 'orderedList'],
  ['❝', 'Quote', (c) => c.toggleBlockquote(), 'blockquote'],
  ['{ }', 'Code block', (c) => c.toggleCodeBlock(), 'codeBlock'],
  null,
  ['↶', 'Undo your last change (Ctrl+Z)', (c) => c.undo(), null],
  ['↷', 'Redo (Ctrl+Shift+Z)', (c) => c.redo(), null]
]
const toolButtons = TOOLS.map((tool) => {
  if (!tool) return h('span', { class: 'separator' })
  const [label, title, run, active] = tool
  const button = h('button', {
    type: 'button',
    class: 'tool',
    title,
    'aria-label': title,
    onmousedown: (e) => e.preventDefault(), // keep the editor's selection
    onclick: () => run(editor.chain().focus()).run()
  }, label)
  button.active = active
  return button
})
$('toolbar').replaceChildren(...toolButtons)
$('toolbar').hidden = readOnly
const refreshToolbar = () => {
  for (const b of toolButtons) {
    if (!b.active) continue
    const [name, attrs] = Array.isArray(b.active) ? b.active : [b.active]
    b.setAttribute('aria-pressed', String(editor.isActive(name, attrs)))
  }
}
editor.on('transaction', refreshToolbar)
refreshToolbar()

if (!readOnly) editor.commands.focus()

// For the curious (and the browser tests): poke at it from the console.
window.tandem = { editor, doc: ydoc, provider, saved, docName, readOnly }
