// The "Attention cost" panel: a small sweep on the page's backend (WASM threads here, then WebGPU on SwiftShader)
// fills a row per T with positive times and byte counts, draws the time and memory charts, shows the config's
// attention-vs-FFN FLOPs, and refuses bad values with the core's message (naming the value) before any row runs.
// Times are only checked to be numbers > 0: speed is measured in docs/BENCHMARKS.md, not judged here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, setOption, screenshot } from './playground-helpers.mjs';

let server, browser, page, problems;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
  ({ page, problems } = await openPlayground(browser.context, server.url));
  await page.waitForFunction(() => window.__tp.getEngine() !== null, null, { timeout: 60000 });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** Fills the panel's fields, presses Measure and waits until the sweep has stopped; returns the panel's state. */
async function measure({ ts, heads = 2, kv = 2, hs = 8, batch = 1 }) {
  await page.fill('#cost-ts', ts);
  await page.fill('#cost-heads', String(heads));
  await page.fill('#cost-kv', String(kv));
  await page.fill('#cost-hs', String(hs));
  await page.fill('#cost-batch', String(batch));
  await page.click('#cost-go');
  await page.waitForFunction(() => !window.__tp.cost().running && !document.getElementById('cost-go').disabled
    && document.getElementById('cost-msg').textContent !== '', null, { timeout: 120000 });
  return page.evaluate(() => window.__tp.cost());
}

function checkRows(rows, ts, backend) {
  assert.deepEqual(rows.map((r) => r.t), ts);
  for (const r of rows) {
    for (const k of ['naive_ms', 'flash_ms', 'naive_bytes', 'flash_bytes']) {
      assert.equal(typeof r[k], 'number', `${k} of ${JSON.stringify(r)}`);
      assert.ok(Number.isFinite(r[k]) && r[k] > 0, `${k} of ${JSON.stringify(r)}`);
    }
    assert.equal(r.backend, backend);
  }
  // The naive path's T×T matrices grow 4× when T doubles; the fused path's memory 2×.
  const [a, b] = rows.slice(-2);
  assert.ok(b.naive_bytes / a.naive_bytes > 3.5 && b.flash_bytes / a.flash_bytes <= 2.01, JSON.stringify([a, b]));
}

test('a sweep on WASM threads fills the table, draws time and memory on log axes, and shows the FLOPs crossover', async () => {
  const state = await measure({ ts: '16,32,64' });
  checkRows(state.rows, [16, 32, 64], 'wasm-threads');
  assert.equal(await page.getAttribute('#cost-msg', 'data-kind'), '');
  assert.equal(await page.locator('#cost-table tbody tr').count(), 3);
  assert.equal(await page.isVisible('#cost-progress'), false, 'the progress bar goes away at the end');
  for (const chart of ['time', 'memory', 'flops']) {
    assert.equal(await page.locator(`#chart-cost-${chart} canvas`).count(), 1, `${chart} chart`);
  }
  // The FLOPs view comes from the core for the current config: attention grows with T, the FFN does not.
  const flops = state.flops;
  assert.ok(flops.rows.length > 4 && flops.crossover_t >= 1);
  assert.ok(flops.rows.at(-1).attention > flops.rows[0].attention && flops.rows.at(-1).ffn === flops.rows[0].ffn);
  assert.match(await page.textContent('#cost-flops-note'), new RegExp(`T ≈ ${flops.crossover_t}\\b`));
  await page.locator('#sec-cost').screenshot({ path: 'tests/out/attention-cost.png' });
});

test('bad values are refused with a message before any row runs, and the last rows stay', async () => {
  for (const [fields, says] of [
    [{ ts: '16,0' }, /--t 0: every T must be 1 \.\.= 16384/],
    [{ ts: '16,99999' }, /--t 99999/],
    [{ ts: '16,abc' }, /“abc”/],
    [{ ts: '16', heads: 3, kv: 2 }, /--kv-heads 2: must divide --heads 3/],
    [{ ts: '16', hs: 0 }, /--head-size 0/],
  ]) {
    const state = await measure(fields);
    assert.equal(await page.getAttribute('#cost-msg', 'data-kind'), 'error', JSON.stringify(fields));
    assert.match(await page.textContent('#cost-msg'), says);
    assert.deepEqual(state.rows.map((r) => r.t), [16, 32, 64], 'the refused sweep ran nothing');
  }
});

test('with the run set to WebGPU the sweep runs on WebGPU (SwiftShader)', async () => {
  await setOption(page, 'backend', 'webgpu');
  const state = await measure({ ts: '16,32' });
  assert.equal(state.backend, 'webgpu');
  checkRows(state.rows, [16, 32], 'webgpu');
  await screenshot(page, 'attention-cost-webgpu');
  assert.deepEqual(problems, []);
});
