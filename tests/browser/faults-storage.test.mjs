// Storage faults and reloads, in Chromium: IndexedDB unavailable or full gives one clear notice while training
// goes on and nothing else is lost (a full store keeps its last session); a reload mid-training brings the
// autosaved runs back (at most one autosave interval, 15 s, of training lost) and they train on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, waitTrainable, waitStopped, waitAutosave, screenshot } from './playground-helpers.mjs';

let server;
before(async () => {
  server = await startServer({ isolation: true });
});
after(async () => {
  await server?.close();
});

/** A fresh browser (its own profile, so its own storage) with `init` run before every page's scripts. */
async function browserWith(init) {
  const browser = await launch();
  if (init) await browser.context.addInitScript(init);
  return browser;
}

/** The session in IndexedDB, read past the page (and past any init script's patches of put). */
function storedSteps(page) {
  return page.evaluate(() => new Promise((ok, fail) => {
    const req = indexedDB.open('transformer-playground', 1);
    req.onerror = () => fail(req.error);
    req.onsuccess = () => {
      const get = req.result.transaction('session').objectStore('session').get('last');
      get.onsuccess = () => {
        req.result.close();
        ok(get.result ? get.result.runs.map((r) => r.stepCount) : null);
      };
    };
  }));
}

test('IndexedDB unavailable: a notice says autosave is off, and the page trains and generates as usual', async () => {
  const browser = await browserWith(() => {
    // As in a sandboxed frame or a browser set to keep no site data.
    IDBFactory.prototype.open = () => {
      throw new DOMException('The user denied permission to access the database.', 'SecurityError');
    };
  });
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await page.waitForSelector('#notices .notice[data-key="notice.storageOff"]', { timeout: 10000 });
  assert.match(await page.textContent('#notices'), /Autosave is off: this browser does not let the page keep data \(The user denied permission/);
  await makeSmall(page, { steps: 4 });
  await waitTrainable(page);
  await page.click('#train');
  await waitStopped(page, 4);
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().status), 'done');
  await page.fill('#gen-length', '20');
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 20000 });
  assert.equal((await page.textContent('#gen-out')).length >= 20, true);
  assert.equal(await page.locator('#notices .notice[data-key="notice.storageOff"]').count(), 1, 'said once');
  await page.evaluate(() => scrollTo(0, 0));
  await screenshot(page, 'faults-storage-off');
  await page.close();
  await browser.close();
  assert.deepEqual(problems, []);
});

test('IndexedDB over quota: a notice, training goes on, and the last autosave is kept and comes back', async () => {
  const browser = await browserWith(() => {
    const put = IDBObjectStore.prototype.put;
    IDBObjectStore.prototype.put = function (...args) {
      if (sessionStorage.quotaFull) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      return put.apply(this, args);
    };
  });
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await makeSmall(page, { steps: 6 });
  await waitTrainable(page);
  const since = Date.now();
  await page.click('#step');
  await page.waitForFunction(() => window.__tp.runs.selectedRun().stepCount === 1);
  await waitAutosave(page, since);
  await page.waitForFunction(() => window.__tp.runs.selectedRun().status === 'paused');
  assert.deepEqual(await storedSteps(page), [1]);

  await page.evaluate(() => (sessionStorage.quotaFull = '1'));
  await page.click('#train');
  await waitStopped(page, 6);
  await page.waitForSelector('#notices .notice[data-key="notice.storageFull"]', { timeout: 10000 });
  assert.match(await page.textContent('#notices'), /Autosave failed: the browser’s storage for this page is full \(The quota has been exceeded\.\)/);
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().status), 'done', 'training went on to the end');
  assert.deepEqual(await storedSteps(page), [1], 'the last session is kept whole');
  await page.evaluate(() => scrollTo(0, 0));
  await screenshot(page, 'faults-storage-full');

  // After a reload the kept session comes back, and the run trains on from it.
  await page.reload();
  await page.waitForFunction(() => window.__tp.runs.list().length === 1 && window.__tp.runs.list()[0].ready, null, { timeout: 30000 });
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().stepCount), 1);
  await page.evaluate(() => delete sessionStorage.quotaFull);
  await page.click('#train');
  await waitStopped(page, 6);
  await page.close();
  await browser.close();
  assert.deepEqual(problems, []);
});

test('a reload mid-training brings the autosaved runs back (at most one autosave interval lost), and they train on', async () => {
  const browser = await browserWith(null);
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await makeSmall(page, { steps: 100000 });
  await waitTrainable(page);
  await page.click('#new-run');
  await waitTrainable(page);
  // Both train; the autosave comes at most 15 s after the last one.
  await page.evaluate(() => window.__tp.runs.list().forEach((r) => window.__tp.runs.train(r)));
  const started = Date.now();
  await page.waitForFunction(() => window.__tp.runs.list().every((r) => r.training));
  let saved = null;
  while (!saved) {
    await waitAutosave(page, Number(await page.evaluate(() => document.documentElement.dataset.autosaved || 0)));
    const steps = await storedSteps(page);
    if (steps?.every((s) => s > 0)) saved = steps;
  }
  const waited = (Date.now() - started) / 1000;
  assert.ok(waited < 30, `an autosave while training came after ${waited} s`);
  const beforeReload = await page.evaluate(() => window.__tp.runs.list().map((r) => ({ no: r.no, color: r.color, training: r.training })));
  assert.ok(beforeReload.every((r) => r.training), 'reloaded while training');

  await page.reload();
  await page.waitForFunction(() => window.__tp.runs.list().length === 2 && window.__tp.runs.list().every((r) => r.ready), null, { timeout: 30000 });
  const back = await page.evaluate(() => window.__tp.runs.list().map((r) => ({ no: r.no, color: r.color, step: r.stepCount, status: r.status, points: r.history.step.length })));
  assert.deepEqual(back.map((r) => r.step), saved, 'each run is back at its autosaved step');
  assert.deepEqual(back.map((r) => r.status), ['paused', 'paused']);
  assert.deepEqual(back.map(({ no, color }) => ({ no, color })), beforeReload.map(({ no, color }) => ({ no, color })));
  assert.ok(back.every((r) => r.points > 0), 'with their curves');
  assert.match(await page.textContent('#notices'), /Restored 2 run/);
  // They go on from there.
  await page.evaluate(() => window.__tp.runs.list().forEach((r) => window.__tp.runs.train(r)));
  await page.waitForFunction((s) => window.__tp.runs.list().every((r, i) => r.training && r.stepCount > s[i] + 2), saved, { timeout: 30000 });
  await page.close();
  await browser.close();
  assert.deepEqual(problems, []);
});
