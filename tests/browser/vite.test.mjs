// The npm package from a bundler: tests/vite-consumer imports 'transformer-playground' by name, Vite bundles it
// (worker, both wasm builds), and the bundle trains and generates in Chromium, isolated and not. Its second page has
// the <transformer-playground> element and the package's service worker: on a host without COOP/COEP it reloads
// once and trains on the threaded build all the same.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from './util.mjs';

let browser;
const dist = join(ROOT, 'tests/vite-consumer/dist');

before(async () => {
  execFileSync(join(ROOT, 'node_modules/.bin/vite'), ['build', 'tests/vite-consumer'], { cwd: ROOT, stdio: 'inherit' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

for (const isolation of [true, false]) {
  test(`a Vite build of a consumer page trains and generates (${isolation ? 'isolated: threads' : 'not isolated: single'})`, async () => {
    const server = await startServer({ isolation, root: dist });
    try {
      const { page, problems } = await open(browser.context, `${server.url}/index.html`);
      await page.waitForFunction(() => window.result !== undefined, null, { timeout: 60000 });
      const r = await page.evaluate(() => window.result);
      assert.equal(r.error, undefined, r.error);
      assert.equal(r.build, isolation ? 'threads' : 'single');
      assert.equal(r.losses.length, 10);
      assert.ok(r.losses.at(-1) < r.losses[0], `loss should fall: ${r.losses}`);
      assert.equal(r.text.length, 12);
      assert.deepEqual(problems, []);
    } finally {
      await server.close();
    }
  });
}

for (const isolation of [true, false]) {
  test(`a Vite build of a page with the element trains it on the threaded build (${isolation ? 'isolated by the host' : 'isolated by the service worker'})`, async () => {
    const server = await startServer({ isolation, root: dist });
    const { context, close } = await launch(); // a fresh profile: no service worker from the other test
    try {
      const { page, problems } = await open(context, `${server.url}/element.html`);
      await page.waitForFunction(() => window.result !== undefined, null, { timeout: 60000 });
      const r = await page.evaluate(() => window.result);
      assert.equal(r.error, undefined, r.error);
      assert.deepEqual([r.build, r.isolated, r.isolation], ['threads', true, 'isolated']);
      assert.equal(r.losses.length, 8);
      assert.ok(r.losses.every(Number.isFinite), `${r.losses}`);
      assert.deepEqual(problems, []);
    } finally {
      await close();
      await server.close();
    }
  });
}
