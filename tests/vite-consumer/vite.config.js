// The package starts a module Worker that code-splits (one wasm build or the other): workers must be ES modules.
// Two pages: the engine's API (index.html) and the element (element.html). The package's service worker is put at
// the site's root, where it controls every page (a consumer's own build does the same, or copies the file there).
import { defineConfig } from 'vite';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** Emits transformer-playground/sw.js as the site's /sw.js. */
const serviceWorker = {
  name: 'transformer-playground-sw',
  generateBundle() {
    this.emitFile({ type: 'asset', fileName: 'sw.js', source: readFileSync(fileURLToPath(import.meta.resolve('transformer-playground/sw.js'))) });
  },
};

export default defineConfig({
  root: import.meta.dirname,
  logLevel: 'warn',
  worker: { format: 'es' },
  plugins: [serviceWorker],
  build: {
    outDir: 'dist', emptyOutDir: true, target: 'es2022',
    rollupOptions: { input: { index: join(import.meta.dirname, 'index.html'), element: join(import.meta.dirname, 'element.html') } },
  },
});
