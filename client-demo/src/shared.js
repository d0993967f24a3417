// What both pages share: where tandem is, who the user is, small DOM helpers.

/* global __TANDEM_DEV_URL__ */

/**
 * The HTTP origin of the tandem server. The built pages are served by tandem itself, so it is
 * the page's own origin; under `npm run dev` it is the server vite was told about.
 */
export function serverOrigin () {
  return import.meta.env.DEV ? __TANDEM_DEV_URL__.replace(/\/+$/, '') : location.origin
}

/** The WebSocket base URL (`ws://host:port` or `wss://...`); a room is `<base>/<name>`. */
export function websocketBase () {
  return serverOrigin().replace(/^http/, 'ws')
}

/**
 * The room (URL path after the base) of document `name`. Tandem keeps percent-escapes of
 * reserved characters as they are (`/a%2Fb` is the document `a%2Fb`, not `a/b`), so the
 * characters a path may carry literally stay literal (`/` and `:@!$&'()*+,;=`, and `%`, so a
 * name holding an escape is reached as it is); everything else (spaces, non-ASCII, `?#[]`...)
 * is percent-encoded, and tandem decodes it back (except `?#[]`, which stay escapes).
 */
export function roomPath (name) {
  return encodeURIComponent(name)
    .replace(/%(2F|3A|40|24|26|2B|2C|3B|3D|25)/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)))
}

/** Query parameter `name` of the page URL, or null. */
export function param (name) {
  return new URLSearchParams(location.search).get(name)
}

/** Replaces (or with null removes) query parameters without reloading the page. */
export function setParams (changes) {
  const url = new URL(location.href)
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === '') url.searchParams.delete(k)
    else url.searchParams.set(k, v)
  }
  history.replaceState(null, '', url)
}

/** Link to the editor for document `doc`. */
export function editorHref (doc) {
  return '/?' + new URLSearchParams({ doc }).toString()
}

/** Link to the history viewer for document `doc` (all documents when null). */
export function historyHref (doc) {
  return doc ? '/history?' + new URLSearchParams({ doc }).toString() : '/history'
}

// The palette the carets and avatars use: saturated enough for a caret, readable with white text.
export const COLORS = ['#e8590c', '#d6336c', '#ae3ec9', '#7048e8', '#1c7ed6', '#0c8599', '#2b8a3e', '#c08600']

const ADJECTIVES = ['Brave', 'Calm', 'Clever', 'Curious', 'Gentle', 'Happy', 'Lucky', 'Quick', 'Quiet', 'Sunny', 'Swift', 'Witty']
const ANIMALS = ['Otter', 'Fox', 'Heron', 'Lynx', 'Panda', 'Koala', 'Badger', 'Falcon', 'Dolphin', 'Hedgehog', 'Owl', 'Wombat']

const pick = (list) => list[Math.floor(Math.random() * list.length)]

/** A stable colour for a name (authors in the history viewer). */
export function colorFor (name) {
  let h = 0
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0
  return COLORS[h % COLORS.length]
}

/** Initials for an avatar: "Ada Lovelace" → "AL". */
export function initials (name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean)
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words
  return letters.map((w) => [...w][0].toUpperCase()).join('').slice(0, 2) || '?'
}

const USER_KEY = 'tandem-demo:user'

/**
 * Who this tab is: `{name, color}`.
 *
 * A name the user typed is remembered in localStorage (every tab and later visits use it).
 * Until then each tab invents its own, kept for its lifetime in sessionStorage, so that two
 * fresh tabs side by side show two different people.
 */
export function loadUser (fallbackName) {
  for (const store of [sessionStorage, localStorage]) {
    try {
      const u = JSON.parse(store.getItem(USER_KEY) ?? 'null')
      if (u && typeof u.name === 'string' && u.name.trim() && COLORS.includes(u.color)) return u
    } catch {}
  }
  const user = { name: fallbackName || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(COLORS) }
  sessionStorage.setItem(USER_KEY, JSON.stringify(user))
  return user
}

/** Remembers a user the person edited, for this tab and for later ones. */
export function saveUser (user) {
  const json = JSON.stringify(user)
  sessionStorage.setItem(USER_KEY, json)
  localStorage.setItem(USER_KEY, json)
}

/**
 * The claims of a JWT, decoded but NOT verified (the server verifies; the page only uses them
 * to show the right controls, e.g. read-only). Null when `token` is not a JWT.
 */
export function jwtClaims (token) {
  try {
    const part = token.split('.')[1]
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - b64.length % 4) % 4)), (c) => c.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes))
    return claims && typeof claims === 'object' ? claims : null
  } catch {
    return null
  }
}

/**
 * Creates an element: `h('button', {class: 'x', onclick}, 'text', child)`. Strings become text
 * nodes, never HTML.
 */
export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v)
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

/** An avatar bubble with initials. */
export function avatar (name, color, { title = name, small = false } = {}) {
  return h('span', { class: small ? 'avatar avatar-small' : 'avatar', style: { background: color }, title }, initials(name))
}

let toastTimer
/** A short message at the bottom of the page. */
export function toast (message, { error = false } = {}) {
  let el = document.getElementById('toast')
  if (!el) {
    el = h('div', { id: 'toast', role: 'status', 'aria-live': 'polite' })
    document.body.append(el)
  }
  el.textContent = message
  el.className = error ? 'show error' : 'show'
  clearTimeout(toastTimer)
  toastTimer = setTimeout(() => { el.className = '' }, error ? 6000 : 3000)
}

/** "3 min ago", "yesterday 14:05", ... with the exact time as a title. */
export function timeLabel (iso) {
  const t = new Date(iso)
  const s = (Date.now() - t.getTime()) / 1000
  if (s < 45) return 'just now'
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  const sameDay = new Date().toDateString() === t.toDateString()
  const hm = t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  if (sameDay) return `today ${hm}`
  return `${t.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${hm}`
}

/** The name of the shared map in which the demo editor records who each Yjs client is. */
export const AUTHORS_MAP = 'tandem:authors'
