// Offline after the first visit: the service worker (sw.js) keeps the page and the engine; with the server gone,
// a reload still opens the playground, still cross-origin isolated (so the threaded build runs: the cached
// responses keep COOP/COEP), it still trains and the step-through's formulas (docs/MODEL.md) can still be read. The
// other tests run with ?nosw, which turns the worker off.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT, startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, trainTo } from './playground-helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('after the first visit the playground opens and trains without the server', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { sw: true });
  await page.waitForFunction(() => window.__tp.getEngine() !== null, null, { timeout: 30000 });
  await page.evaluate(() => navigator.serviceWorker.ready);
  await page.waitForFunction(async () => {
    if (!navigator.serviceWorker.controller) return false;
    const cache = await caches.open('transformer-playground-v1');
    const need = ['index.html', 'www/main.js', 'www/vendor/uplot/uPlot.esm.js', 'pkg/worker.js', 'pkg/wasm/threads/tp_bg.wasm', 'pkg/wasm/single/tp_bg.wasm', 'www/data/tinyshakespeare.txt', 'pkg/presets.js', 'pkg/element.js', 'docs/MODEL.md'];
    const hits = await Promise.all(need.map((u) => cache.match(u)));
    return hits.every(Boolean);
  }, null, { timeout: 30000, polling: 250 });
  const build = await page.evaluate(() => window.__tp.getEngine().info.build);
  // Every file of the page is in the cache (sw.js lists them: a module added to www/ must be added there too).
  const files = readdirSync(join(ROOT, 'www'), { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile() && !/LICENSE$/.test(d.name))
    .map((d) => relative(ROOT, join(d.parentPath ?? d.path, d.name)));
  const missing = await page.evaluate(async (list) => {
    const cache = await caches.open('transformer-playground-v1');
    const hits = await Promise.all(list.map((u) => cache.match(u)));
    return list.filter((u, i) => !hits[i]);
  }, files);
  assert.deepEqual(missing, [], 'files of www/ that sw.js does not keep');

  await server.close();
  server = null;
  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready', null, { timeout: 15000 });
  await page.waitForFunction(() => window.__tp.getEngine() !== null, null, { timeout: 30000 });
  const offline = await page.evaluate(() => ({ isolated: crossOriginIsolated, build: window.__tp.getEngine().info.build, controlled: !!navigator.serviceWorker.controller }));
  assert.deepEqual(offline, { isolated: true, build, controlled: true });
  assert.equal(build, 'threads');
  // The step-through's formulas: docs/MODEL.md, kept by the worker (www/model-doc.js reads its sections).
  assert.match(await page.evaluate(async () => (await fetch('docs/MODEL.md')).text()), /^## Attention$/m);
  await makeSmall(page, { steps: 2 });
  await trainTo(page, 2);
  await page.waitForFunction((n) => window.__tp.charts().loss === n, 2, { timeout: 10000 }).catch(() => {}); // the charts follow training a few times a second
  assert.equal(await page.evaluate(() => window.__tp.charts().loss), 2);
  // Teacher mode offline: a lesson link with &present opens the lesson (its file from the cache) in the projector
  // layout.
  await page.evaluate(() => { location.hash = 'lesson=kv-heads&present'; });
  await page.waitForFunction(() => window.__tp.lessons().open === 'kv-heads' && document.documentElement.hasAttribute('data-present')
    && document.getElementById('lesson-detail').textContent.includes('KV'), null, { timeout: 15000 });
  await page.close();
  assert.deepEqual(problems, []);
});
