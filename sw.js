// The playground's service worker: after the first visit the page works offline. Every same-origin GET goes to
// the network first (so a development server is never shadowed by stale files) and falls back to the cache,
// which is filled on install with the app shell and both engine builds, and refreshed by every good response.
// Cached responses keep their headers, so COOP/COEP (needed for the threaded build) survive offline.
// The page registers it unless its URL has ?nosw (www/main.js).
const CACHE = 'transformer-playground-v1';

const WWW = [
  'main.js', 'bus.js', 'dom.js', 'i18n.js', 'state.js', 'options.js', 'presets.js', 'runs.js', 'engine.js', 'data.js',
  'autosave.js', 'format.js', 'style.css', 'strings/en.js', 'strings/zh.js',
  'panels/config.js', 'panels/data.js', 'panels/summary.js', 'panels/controls.js', 'panels/runs.js', 'panels/charts.js',
  'panels/attention.js', 'panels/shapes.js', 'panels/use.js', 'panels/checkpoint.js', 'panels/notices.js',
  'panels/experts.js', 'panels/kv.js', 'panels/cost.js', 'lessons.js', 'panels/lessons.js', 'lessons/index.json',
  'vendor/uplot/uPlot.esm.js', 'vendor/uplot/uPlot.min.css', 'data/tinyshakespeare.txt',
].map((f) => `www/${f}`);
const CONFIGS = ['gpt-shakespeare', 'original-transformer', 'llama-style', 'bert-mini', 't5-mini', 'mixtral-moe', 't5-span-corruption', 'bart-infilling'].map((c) => `configs/${c}.json`);
const ENGINE = ['pkg/index.js', 'pkg/worker.js', 'pkg/protocol.js',
  ...['threads', 'single', 'baseline'].flatMap((b) => [`pkg/wasm/${b}/tp.js`, `pkg/wasm/${b}/tp_bg.wasm`])];
const SHELL = ['./', 'index.html', ...WWW, ...CONFIGS, ...ENGINE];

/**
 * Caches `url`; for wasm-bindgen's glue also the snippet modules it imports (their names carry a hash); for the
 * lessons' index every lesson file it lists (www/lessons/<id>.json), so no second list of lessons is kept here.
 */
async function keep(cache, url) {
  const res = await fetch(url, { cache: 'no-cache' });
  if (!res.ok) return;
  await cache.put(url, res.clone());
  if (url === 'www/lessons/index.json') {
    const { lessons } = await res.json();
    await Promise.all(lessons.map((id) => keep(cache, `www/lessons/${id}.json`).catch(() => {})));
  }
  if (/pkg\/wasm\/\w+\/tp\.js$/.test(url)) {
    const glue = await res.text();
    const snippets = [...glue.matchAll(/from '(\.\/snippets\/[^']+)'/g)].map((m) => new URL(m[1], new URL(url, self.location)).href);
    await Promise.all(snippets.map((s) => keep(cache, s).catch(() => {})));
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // One missing file (e.g. a build not made) must not stop the others.
    await Promise.all(SHELL.map((url) => keep(cache, url).catch(() => {})));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    try {
      const res = await fetch(req);
      if (res.ok && res.type === 'basic') {
        const copy = res.clone();
        caches.open(CACHE).then((c) => c.put(req, copy)).catch(() => {});
      }
      return res;
    } catch (err) {
      const cache = await caches.open(CACHE);
      const hit = await cache.match(req, { ignoreSearch: req.mode === 'navigate' })
        ?? (req.mode === 'navigate' ? await cache.match('./') : undefined);
      if (hit) return hit;
      throw err;
    }
  })());
});
