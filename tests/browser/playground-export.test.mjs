// Teacher mode's exports: every run's logged metrics as CSV (a row per run and logged step, equal to the page's
// history), a chart as SVG (a path per series through the logged points, ticks, legend) and as PNG.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, trainTo, setOption, OUT } from './playground-helpers.mjs';
import { ticks, metricsCsv } from '../../www/export.js';

let server, browser, page, problems;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
  ({ page, problems } = await openPlayground(browser.context, server.url));
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** Clicks `selector` and returns the downloaded file's name and bytes. */
async function saved(selector) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  return { name: dl.suggestedFilename(), bytes: readFileSync(await dl.path()) };
}

test('ticks are round and cover the range; CSV quotes what needs quoting', () => {
  assert.deepEqual(ticks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(ticks(3, 47, 4), [20, 40]);
  assert.deepEqual(ticks(0.002, 30, 5, true), [0.01, 0.1, 1, 10]);
  const csv = metricsCsv([{ no: 2, label: 'Heads: 4 → 1, "MQA"', history: { step: [0], loss: [4.2], val: [null], lr: [1e-3], grad: [0.5], aux: [] } }]);
  assert.equal(csv, 'run,label,step,loss,val_loss,lr,grad_norm,aux_loss\n2,"Heads: 4 → 1, ""MQA""",0,4.2,,0.001,0.5,\n');
});

test('two runs export their metrics as CSV and the loss chart as SVG and PNG', async () => {
  await makeSmall(page, { steps: 4 });
  await trainTo(page, 4);
  await setOption(page, 'n_kv_heads', 1); // a trained run's edit starts run 2
  await trainTo(page, 4);
  const hist = await page.evaluate(() => window.__tp.runs.list().map((r) => ({ no: r.no, step: r.history.step, loss: r.history.loss })));
  assert.equal(hist.length, 2);

  const csv = await saved('#charts-csv');
  assert.equal(csv.name, 'transformer-playground-metrics.csv');
  const rows = csv.bytes.toString('utf8').trim().split('\n').map((l) => l.split(','));
  assert.deepEqual(rows[0], ['run', 'label', 'step', 'loss', 'val_loss', 'lr', 'grad_norm', 'aux_loss']);
  const body = rows.slice(1);
  for (const h of hist) {
    const mine = body.filter((r) => Number(r[0]) === h.no);
    assert.deepEqual(mine.map((r) => Number(r[2])), h.step);
    assert.deepEqual(mine.map((r) => Number(r[3])), h.loss);
  }
  assert.match(csv.bytes.toString('utf8'), /KV heads NKV: 2 → 1/);

  const svg = await saved('[data-export="loss.svg"]');
  assert.equal(svg.name, 'transformer-playground-loss.svg');
  const text = svg.bytes.toString('utf8');
  assert.match(text, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  // Each run's training loss is a path through its logged steps (its validation losses are points).
  const paths = [...text.matchAll(/<path class="series" data-series="(\d+)" d="([^"]+)"/g)];
  assert.deepEqual(paths.map((m) => Number(m[1])), [0, 2]);
  for (const [i, m] of paths.entries()) assert.equal(m[2].split(/[ML]/).filter(Boolean).length, hist[i].step.length);
  assert.match(text, />run 1</);
  assert.match(text, />run 2 val</);

  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, 'export-loss.svg'), text); // to look at
  const png = await saved('[data-export="grad.png"]');
  writeFileSync(join(OUT, 'export-grad.png'), png.bytes);
  assert.equal(png.name, 'transformer-playground-grad.png');
  assert.deepEqual([...png.bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(png.bytes.readUInt32BE(16) > 200 && png.bytes.readUInt32BE(20) > 150, 'width and height');
  assert.deepEqual(problems, []);
});
