// The operations console (docs/console.md): built into ../dist/console, which the gateway serves at `/`.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: '/',
  // the API and graphql-ws of a locally running gateway, for `npx vite console` during development
  server: { proxy: { '/graphql': { target: 'http://127.0.0.1:3000', ws: true } } },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../dist/console', import.meta.url)),
    emptyOutDir: true,
    assetsDir: 'assets',
    manifest: true,
    target: 'es2022',
    sourcemap: false,
    // no inline assets: the CSP allows only this origin's files (and data: images)
    assetsInlineLimit: 0,
  },
});
