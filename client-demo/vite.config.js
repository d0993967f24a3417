// Builds the demo pages into dist/, which is committed and embedded into the tandem binary
// (server/src/demo.rs). The output must depend on the sources only: content-hashed names,
// no timestamps, no absolute paths, no source maps. CI rebuilds it and fails on any difference.
import { resolve } from 'node:path'
import { defineConfig } from 'vite'

const here = import.meta.dirname
// `npm run dev` serves the pages on vite's port and talks to a tandem running elsewhere
// (default 127.0.0.1:1234, override with TANDEM_URL=http://host:port).
const tandem = process.env.TANDEM_URL ?? 'http://127.0.0.1:1234'

export default defineConfig({
  base: '/',
  // The built bundle only ever runs behind tandem (same origin); the dev server needs the URL.
  define: {
    __TANDEM_DEV_URL__: JSON.stringify(tandem)
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    reportCompressedSize: false,
    rollupOptions: {
      input: {
        editor: resolve(here, 'index.html'),
        history: resolve(here, 'history.html')
      }
    }
  },
  server: {
    host: '127.0.0.1',
    proxy: { '/api': tandem }
  },
  plugins: [{
    // tandem serves history.html at /history; let the dev server do the same.
    name: 'tandem-history-route',
    configureServer (server) {
      server.middlewares.use((req, _res, next) => {
        if (req.url === '/history' || req.url?.startsWith('/history?')) {
          req.url = '/history.html' + req.url.slice('/history'.length)
        }
        next()
      })
    }
  }]
})
