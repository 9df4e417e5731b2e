// The playground page as a user meets it: open it, press Train on the default preset, watch the loss fall,
// generate text. In real headless Chromium, on a cross-origin isolated server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from './util.mjs';

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('the page trains the default preset, shows the loss and generates text', async () => {
  const { page, problems } = await open(browser.context, `${server.url}/`);
  await page.waitForFunction(() => !document.getElementById('train').disabled, null, { timeout: 30000 });
  assert.match(await page.textContent('#backend'), /WASM threads/);
  await page.fill('#steps', '40');
  await page.click('#train');
  await page.waitForFunction(() => /^Done at step 40/.test(document.getElementById('status').textContent), null, { timeout: 120000 });
  const rows = await page.$$eval('#log tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  assert.ok(rows.length >= 10);
  const newest = Number(rows[0][1]);
  const oldest = Number(rows.at(-1)[1]);
  assert.equal(rows[0][0], '40');
  assert.ok(newest < oldest, `loss falls: ${oldest} → ${newest}`);
  assert.ok(Number(rows[0][2]) > 0, 'the last step shows a val loss');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('output').textContent.length >= 300, null, { timeout: 30000 });
  mkdirSync(join(ROOT, 'tests/out'), { recursive: true });
  await page.screenshot({ path: join(ROOT, 'tests/out/page.png'), fullPage: true });
  assert.deepEqual(problems, []);
});
