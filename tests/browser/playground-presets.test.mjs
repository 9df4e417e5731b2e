// Every preset trains a few steps in the page, its loss chart and attention heatmaps update, and each preset
// carries what it stands for (Post-LN + sinusoidal + ReLU, RMSNorm + SwiGLU + RoPE + GQA, masked LM, T5 relative
// bias + cross-attention).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, setOptions, trainTo, waitTrainable, screenshot, values } from './playground-helpers.mjs';

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

const PRESETS = {
  'gpt-shakespeare': { arch: 'gpt', placement: 'pre', position: 'learned', activation: 'gelu', kinds: ['decoder/self'] },
  'original-transformer': { arch: 'encoder_decoder', placement: 'post', position: 'sinusoidal', activation: 'relu', kinds: ['encoder/self', 'decoder/self', 'decoder/cross'] },
  'llama-style': { arch: 'gpt', norm: 'rmsnorm', activation: 'swiglu', position: 'rope', n_kv_heads: 2, kinds: ['decoder/self'] },
  'bert-mini': { arch: 'bert', placement: 'pre', position: 'learned', kinds: ['encoder/self'] },
  't5-mini': { arch: 'encoder_decoder', norm: 'rmsnorm', activation: 'geglu', position: 'relative', scale: 'none', task: 'sort', kinds: ['encoder/self', 'decoder/self', 'decoder/cross'] },
};

for (const [name, expect] of Object.entries(PRESETS)) {
  test(`preset ${name} trains a few steps and its charts and attention update`, async () => {
    // A fresh run for each preset: New run, then the preset.
    if ((await page.evaluate(() => window.__tp.runs.selectedRun().stepCount)) > 0) {
      await page.click('#new-run');
    }
    await page.selectOption('#preset', name);
    const v = await values(page);
    for (const [k, want] of Object.entries(expect)) if (k !== 'kinds') assert.equal(v[k], want, `${name}: ${k}`);
    assert.equal(await page.inputValue('#preset'), name);
    await waitTrainable(page);
    const params = await page.textContent('#sum-params');
    assert.match(params, /\d/);
    if (name === 'llama-style') assert.equal(await page.textContent('#config-groups .tag'), 'GQA');
    // Three steps with a one-batch evaluation: the preset otherwise as it is.
    await setOptions(page, { steps: 3, eval_iters: 1 });
    const before = await page.evaluate(() => window.__tp.charts().loss);
    await trainTo(page, 3);
    // The charts follow training a few times a second, each in a frame of its own: wait until they all hold step 3.
    await page.waitForFunction(() => { const p = window.__tp.charts(); return p.loss >= 3 && p.lr === p.loss; }, null, { timeout: 10000 }).catch(() => {});
    const r = await page.evaluate(() => {
      const run = window.__tp.runs.selectedRun();
      return { no: run.no, losses: run.history.loss, points: window.__tp.charts(), kinds: [...document.querySelectorAll('#att-which option')].map((o) => o.value) };
    });
    assert.equal(r.losses.length, 3);
    assert.ok(r.losses.every((l) => Number.isFinite(l) && l > 0));
    assert.ok(r.points.loss >= 3 && r.points.loss > before - 1, `loss chart has the new steps: ${JSON.stringify(r.points)}`);
    assert.equal(r.points.lr, r.points.loss);
    await page.waitForFunction(() => document.getElementById('sec-attention').dataset.step === '3', null, { timeout: 15000 });
    const kinds = await page.evaluate(() => [...document.querySelectorAll('#att-which option')].map((o) => o.value));
    assert.deepEqual(kinds, expect.kinds);
    const layers = v.arch === 'encoder_decoder' ? v.n_encoder_layers : v.n_layers;
    assert.equal(await page.locator('#att-grid canvas').count(), layers * v.n_heads);
    await page.evaluate(() => document.getElementById('sec-config').scrollTo(0, 0));
    await screenshot(page, `preset-${name}`);
    assert.deepEqual(problems, []);
  });
}

test('five presets make five runs, each in its own colour, all drawn on the loss chart', async () => {
  const runs = await page.evaluate(() => window.__tp.runs.list().map((r) => ({ no: r.no, color: r.color, steps: r.stepCount })));
  assert.equal(runs.length, 5);
  assert.equal(new Set(runs.map((r) => r.color)).size, 5);
  assert.ok(runs.every((r) => r.steps === 3));
  assert.equal(await page.locator('#run-list li').count(), 5);
  // Train and val series of every run.
  const series = await page.evaluate(() => document.querySelectorAll('#chart-loss .u-legend .u-series').length);
  assert.equal(series, 1 + 2 * 5);
  await screenshot(page, 'presets-all-runs', { fullPage: true });
  assert.deepEqual(problems, []);
});
