// transformer-playground's service worker: cross-origin isolation on any static host, and (optionally) offline.
//
// Isolation: the threaded engine needs a cross-origin isolated page (SharedArrayBuffer), which takes two response
// headers most static hosts cannot send (GitHub Pages, learning-management systems). This worker re-serves every
// same-origin response with them — Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy:
// require-corp — the coi-serviceworker technique (Guido Zuidhof). A page becomes isolated from its first load
// through the worker on, so the first visit reloads once (isolate.js does that, guarded so that it cannot loop).
// require-corp rather than credentialless: it works in every browser with service workers and SharedArrayBuffer
// (Safari has no credentialless) and is what a host that can send the headers sends (scripts/serve.mjs); the cost is
// that a cross-origin resource the page loads must send CORP or be fetched with CORS.
//
// Offline: a worker that sets self.tpServiceWorker = { cache, shell, more? } before importScripts()-ing this file (the
// playground's sw.js) also keeps `shell` in the cache `cache` on install — and, for each kept file, the files
// `await more(url, response)` lists — and answers from it when the network
// fails; every same-origin GET goes to the network first (a development server is never shadowed by stale
// files) and refreshes the cache.
//
// A consumer page: copy this file next to the page (a service worker controls only the pages under its own
// folder) and call isolate() from isolate.js before the engine starts (pkg/README.md "Threads on any static host").
const OPTIONS = self.tpServiceWorker ?? {};
const CACHE = OPTIONS.cache ?? null; // null: isolation only, nothing cached
const SHELL = OPTIONS.shell ?? [];
const PREFIX = 'transformer-playground'; // old caches of this worker (another name) are deleted on activation

/** `res` with COOP/COEP added (a response without a body of its own, or an opaque one, as it is). */
function isolated(res) {
  if (res.status === 0 || [101, 103, 204, 205, 304].includes(res.status)) return res;
  const headers = new Headers(res.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

/** Caches `url`; for wasm-bindgen's glue also the snippet modules it imports (their names carry a hash). */
async function keep(cache, url) {
  const res = await fetch(url, { cache: 'no-cache' });
  if (!res.ok) return;
  await cache.put(url, res.clone());
  // The worker's own hook: the files a kept file names (the playground's lessons index names its lessons).
  const more = OPTIONS.more ? await OPTIONS.more(url, res.clone()) : [];
  await Promise.all(more.map((m) => keep(cache, m).catch(() => {})));
  if (/pkg\/wasm\/\w+\/tp\.js$/.test(url)) {
    const glue = await res.text();
    const snippets = [...glue.matchAll(/from '(\.\/snippets\/[^']+)'/g)].map((m) => new URL(m[1], new URL(url, self.location)).href);
    await Promise.all(snippets.map((s) => keep(cache, s).catch(() => {})));
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    if (CACHE) {
      const cache = await caches.open(CACHE);
      // One missing file (e.g. a build not made) must not stop the others.
      await Promise.all(SHELL.map((url) => keep(cache, url).catch(() => {})));
    }
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

/** The network's answer (kept in the cache when good), else the cache's; either with COOP/COEP. */
async function answer(req) {
  try {
    const res = await fetch(req);
    if (CACHE && res.ok && res.type === 'basic') {
      const copy = res.clone();
      caches.open(CACHE).then((c) => c.put(req, copy)).catch(() => {});
    }
    return isolated(res);
  } catch (err) {
    if (!CACHE) throw err;
    const cache = await caches.open(CACHE);
    const hit = await cache.match(req, { ignoreSearch: req.mode === 'navigate' })
      ?? (req.mode === 'navigate' ? await cache.match('./') : undefined);
    if (hit) return isolated(hit);
    throw err;
  }
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== self.location.origin) return;
  // A request the browser itself may only answer from its cache (DevTools makes them) cannot go to the network.
  if (req.cache === 'only-if-cached' && req.mode !== 'same-origin') return;
  event.respondWith(answer(req));
});
