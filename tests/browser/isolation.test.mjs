// Threads on a plain static host (issue 22 §2): served WITHOUT COOP/COEP, the playground and www/embed.html register
// the service worker (sw.js → pkg/sw.js), reload once, come back cross-origin isolated (the worker re-serves the
// page's responses with the headers) and the engine runs the threaded build. The reload is guarded: where isolation
// cannot be had (?nosw, no service workers, or a browser where the reload does not bring it) the page loads once
// (twice at most), never loops, and runs the single-thread build. Each test has a fresh browser profile.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { TINY } from './tiny.mjs';

let server;
before(async () => {
  server = await startServer({ isolation: false });
});
after(async () => {
  await server?.close();
});

/**
 * Opens `path` in a fresh browser, after `init` (a script run before each load); counts the page's loads and
 * records uncaught errors. Returns { page, loads(), problems, close }.
 */
async function visit(path, init) {
  const browser = await launch();
  const page = await browser.context.newPage();
  if (init) await page.addInitScript(init);
  let loads = 0;
  const problems = [];
  page.on('load', () => loads++);
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console.error: ${m.text()}`));
  await page.goto(`${server.url}${path}`);
  return { page, loads: () => loads, problems, close: () => browser.close() };
}

/** The build of the engine the element's widgets share, once it is up. */
async function widgetBuild(page) {
  // embed.html sets window.isolation when isolate() resolves: never on a load that reloads.
  await page.waitForFunction(() => window.isolation !== undefined && customElements.get('transformer-playground'), null, { timeout: 20000 });
  return page.evaluate(async () => {
    const { sharedEngine } = await import('/pkg/element.js');
    const e = await sharedEngine();
    return { build: e.info.build, backend: e.info.backend, isolated: crossOriginIsolated, isolation: window.isolation };
  });
}

/** Trains widget `id` on the tiny config for 5 steps; resolves the backends its progress events name. */
function trainTiny(page, id) {
  return page.evaluate(async ([id, config]) => {
    const el = document.getElementById(id);
    el.setAttribute('config', JSON.stringify(config));
    el.setAttribute('steps', '5');
    const backends = [];
    el.addEventListener('progress', () => backends.push(el.run.backend));
    await new Promise((ok) => {
      const wait = () => (el.config?.train.steps === 5 ? ok() : setTimeout(wait, 50));
      wait();
    });
    await el.train();
    return backends;
  }, [id, TINY]);
}

test('the playground on a host without COOP/COEP: one reload, then isolated, the threaded build', async () => {
  const v = await visit('/');
  try {
    await v.page.waitForFunction(() => window.__tp?.getEngine?.() != null, null, { timeout: 30000 });
    const got = await v.page.evaluate(() => ({ isolated: crossOriginIsolated, build: window.__tp.getEngine().info.build, isolation: window.__tp.isolation }));
    assert.deepEqual(got, { isolated: true, build: 'threads', isolation: 'isolated' });
    assert.equal(v.loads(), 2, 'the first visit reloads once');
    // A later visit is isolated from its first load: no reload.
    await v.page.goto(`${server.url}/`);
    await v.page.waitForFunction(() => window.__tp?.getEngine?.() != null, null, { timeout: 30000 });
    assert.equal(v.loads(), 3);
    assert.equal(await v.page.evaluate(() => crossOriginIsolated), true);
    assert.deepEqual(v.problems, []);
  } finally {
    await v.close();
  }
});

test('www/embed.html on a host without COOP/COEP: one reload, then its widgets train on the threaded build', async () => {
  const v = await visit('/www/embed.html');
  try {
    const got = await widgetBuild(v.page);
    assert.deepEqual(got, { build: 'threads', backend: 'wasm-threads', isolated: true, isolation: 'isolated' });
    assert.equal(v.loads(), 2);
    const backends = await trainTiny(v.page, 'gpt');
    assert.deepEqual(backends, Array(5).fill('wasm-threads'));
    assert.deepEqual(v.problems, []);
  } finally {
    await v.close();
  }
});

test('?nosw: no service worker, no reload, the single-thread build', async () => {
  const v = await visit('/www/embed.html?nosw');
  try {
    const got = await widgetBuild(v.page);
    assert.deepEqual(got, { build: 'single', backend: 'wasm-single', isolated: false, isolation: 'off' });
    assert.deepEqual(await trainTiny(v.page, 't5'), Array(5).fill('wasm-single'));
    assert.equal(v.loads(), 1);
    assert.deepEqual(v.problems, []);
  } finally {
    await v.close();
  }
});

test('a browser without service workers: no reload, the single-thread build', async () => {
  const v = await visit('/www/embed.html', () => delete Navigator.prototype.serviceWorker);
  try {
    const got = await widgetBuild(v.page);
    assert.deepEqual(got, { build: 'single', backend: 'wasm-single', isolated: false, isolation: 'unsupported' });
    assert.equal(v.loads(), 1);
    assert.deepEqual(v.problems, []);
  } finally {
    await v.close();
  }
});

test('when the reload does not bring isolation, the guard stops a second one: no loop', async () => {
  // The page is made to look never isolated (as in a browser that ignores the worker's headers).
  const v = await visit('/www/embed.html', () => Object.defineProperty(window, 'crossOriginIsolated', { get: () => false }));
  try {
    const got = await widgetBuild(v.page);
    assert.deepEqual(got, { build: 'single', backend: 'wasm-single', isolated: false, isolation: 'failed' });
    await v.page.waitForTimeout(1500); // time for a reload that must not come
    assert.equal(v.loads(), 2, 'one reload, not more');
    // The playground page is guarded the same way (the same tab session: no reload at all now).
    await v.page.goto(`${server.url}/`);
    await v.page.waitForFunction(() => window.__tp?.getEngine?.() != null, null, { timeout: 30000 });
    await v.page.waitForTimeout(1000);
    assert.equal(v.loads(), 3);
    assert.deepEqual(await v.page.evaluate(() => [window.__tp.getEngine().info.build, window.__tp.isolation]), ['single', 'failed']);
    assert.deepEqual(v.problems, []);
  } finally {
    await v.close();
  }
});
