// The recurrent position encoding in the page (issue 16 §2): the position option "recurrent" with its explanation and
// citation in English and 中文, its place in the URL and the shape table, and the trade-off shown where runs are
// compared: a learned-positions run and a recurrent one trained side by side each show their measured ms per step.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, setOption, values, config, makeSmall, trainTo, waitStopped, waitTrainable, screenshot } from './playground-helpers.mjs';

let browser;
const servers = [];
async function origin() {
  const s = await startServer({ isolation: false }); // the single build (no threads): enough for these checks
  servers.push(s);
  return s.url;
}
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
  for (const s of servers) await s.close();
});

test('the recurrent position option is explained and cited in English and 中文, and travels in the URL', async () => {
  const url = await origin();
  const { page, problems } = await openPlayground(browser.context, url);
  const offered = await page.$$eval('#opt-position option', (os) => os.map((o) => [o.value, o.textContent]));
  assert.deepEqual(offered.find(([v]) => v === 'recurrent'), ['recurrent', 'recurrent (GRU)']);
  await setOption(page, 'position', 'recurrent');
  assert.deepEqual((await config(page)).model.position, { kind: 'recurrent' });
  const help = await page.textContent('#help-position');
  assert.match(help, /GRU/);
  assert.match(help, /sequential/);
  assert.match(help, /ms\/step/);
  assert.match(help, /Cho et al\. 2014/);
  // The shape table names the GRU stage; the core counts its parameters (6·C² + 6·C with biases).
  await page.waitForFunction(() => document.querySelector('#shape-table')?.textContent.includes('GRU positions'), null, { timeout: 15000 });
  // A second page reads the setting from the link.
  const hash = await page.evaluate(() => location.hash);
  assert.match(hash, /position=recurrent/);
  const { page: reader, problems: readerProblems } = await openPlayground(browser.context, url, { hash });
  assert.equal((await values(reader)).position, 'recurrent');
  await reader.close();
  // 中文
  await page.click('#lang');
  await page.waitForFunction(() => document.documentElement.lang.startsWith('zh'));
  assert.match(await page.textContent('#opt-position option[value="recurrent"]'), /循环（GRU）/);
  const zh = await page.textContent('#help-position');
  assert.match(zh, /GRU/);
  assert.match(zh, /顺序/);
  assert.match(zh, /Cho 等 2014/);
  await page.click('#lang');
  await page.close();
  assert.deepEqual(problems, []);
  assert.deepEqual(readerProblems, []);
});

test('learned and recurrent positions train side by side, each run showing its ms per step', async () => {
  const url = await origin();
  const { page, problems } = await openPlayground(browser.context, url);
  await makeSmall(page, { steps: 4 });
  await trainTo(page, 4);
  await setOption(page, 'position', 'recurrent');
  assert.equal(await page.locator('#run-list li').count(), 2, 'the change to a trained run started run 2');
  assert.match(await page.textContent('#run-list li[data-run="2"]'), /Positions: learned → recurrent \(GRU\)/);
  await trainTo(page, 4);
  await waitStopped(page, 4);
  const ms = await page.$$eval('#run-list li', (lis) => lis.map((li) => li.querySelector('.run-ms')?.textContent ?? ''));
  assert.equal(ms.length, 2);
  for (const m of ms) assert.match(m, /^ · [0-9.]+ ms\/step$/, `each run shows its time per step: ${JSON.stringify(ms)}`);
  const nums = ms.map((m) => Number(m.match(/[0-9.]+/)[0]));
  assert.ok(nums.every((x) => x > 0 && Number.isFinite(x)), `${nums}`);
  // The figure is the run's own measurement (the worker's msPerStep, smoothed), not a copy of the other run's.
  const measured = await page.evaluate(() => window.__tp.runs.list().map((r) => r.msPerStep));
  assert.ok(measured.every((x) => x > 0), `${measured}`);
  assert.notEqual(measured[0], measured[1]);
  await page.click('#lang');
  await page.waitForFunction(() => document.querySelector('#run-list .run-ms')?.textContent.includes('毫秒'));
  await page.click('#lang');
  await screenshot(page, 'recurrent-vs-learned-ms-per-step');
  await page.close();
  assert.deepEqual(problems, []);
});
