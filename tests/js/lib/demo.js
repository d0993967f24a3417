// The demo's modules (client-demo/src) for tests in Node. Their bare imports ('yjs',
// 'y-protocols/...', 'lib0/...') are resolved from tests/js's node_modules rather than from
// client-demo's: the tests and the demo code must share one copy of yjs (two copies break
// its type checks and warn), and client-demo/node_modules need not be installed.

import { register } from 'node:module'

const hook = `
const base = ${JSON.stringify(new URL('../package.json', import.meta.url).href)}
export async function resolve (specifier, context, next) {
  const bare = !/^(\\.|\\/|[a-z]+:)/.test(specifier)
  if (bare && context.parentURL?.includes('/client-demo/src/')) {
    return next(specifier, { ...context, parentURL: base })
  }
  return next(specifier, context)
}
`
register('data:text/javascript,' + encodeURIComponent(hook))

export const { TandemProvider, documentName } = await import('../../../client-demo/src/fallback-provider.js')
