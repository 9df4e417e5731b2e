// "One step in slow motion": the run's next step traced by the engine (src/trace.rs) and walked through in the
// page — the forward stages in order with the live tensor's shape, values and heatmap, the loss, the gradients
// last layer first and AdamW's update; Previous / Next / Run to end; the run is not advanced by a trace; a stage's
// formula opens on the page (its docs/MODEL.md section, read by the page); bert attends both ways where gpt is
// causal; the encoder-decoder's cross-attention appears; 中文.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { join } from 'node:path';
import { openPlayground, makeSmall, trainTo, waitTrainable, OUT } from './playground-helpers.mjs';

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

/** Presses "Trace the next step" and waits for the stage list. */
async function traceNext() {
  await page.click('#step-trace');
  await page.waitForFunction(() => document.querySelectorAll('#step-list .step-item').length > 0
    && !document.getElementById('step-trace').disabled, null, { timeout: 60000 });
}

const current = () => page.textContent('#step-detail h3');

/** The attention probability of the first query for the last key (layer 0, head 0, sequence 0; pooled if large). */
function firstQueryLastKey(trace) {
  const { heat } = trace.stages.find((s) => s.id === 'scores' && s.layer === 0);
  return heat.cells[heat.cols - 1];
}

test('a gpt step is traced stage by stage: forward, loss, backward, update; the run is not advanced', async () => {
  await makeSmall(page, { steps: 3 });
  await trainTo(page, 3);
  assert.equal(await page.isVisible('#step-empty'), true);
  await traceNext();
  assert.match(await page.textContent('#step-head'), /Step 3: loss \d/);
  const passes = await page.$$eval('#step-list .step-pass-name', (els) => els.map((e) => e.textContent));
  assert.deepEqual(passes, ['Forward', 'Loss', 'Backward', 'AdamW update']);
  // The first stage is the embedding, with its shape (B, T, C) for the small model and a heatmap.
  assert.match(await current(), /Stage 1 of \d+ — token embedding/);
  assert.match(await page.textContent('#step-detail'), /\(4, \d+, 32\)/);
  assert.equal(await page.locator('#step-detail canvas.step-heat').count(), 1);
  // Its formula opens under it, from docs/MODEL.md's section, and stays open for the next stage's.
  assert.equal(await page.isVisible('#step-formula'), false);
  await page.click('#step-doc');
  await page.waitForFunction(() => document.querySelector('#step-formula h4')?.textContent === 'Embedding and positions', null, { timeout: 10000 });
  assert.match(await page.textContent('#step-formula pre'), /x = wte\[idx\]/);
  assert.equal(await page.getAttribute('#step-doc', 'aria-expanded'), 'true');
  // Next goes through q, k, v to the attention probabilities.
  await page.click('#step-next');
  await page.click('#step-next');
  assert.match(await current(), /Stage 3 of \d+ — Q · layer 0/);
  await page.waitForFunction(() => document.querySelector('#step-formula h4')?.textContent === 'Attention', null, { timeout: 10000 });
  assert.match(await page.textContent('#step-formula pre'), /softmax/);
  await page.click('#step-doc');
  assert.equal(await page.isVisible('#step-formula'), false);
  await page.click('#step-prev');
  assert.match(await current(), /Stage 2 of/);
  const probs = page.locator('#step-list .step-item', { hasText: 'attention probabilities' }).first();
  await probs.click();
  assert.match(await page.textContent('#step-detail'), /Each row is a probability distribution/);
  // The loss stage says the loss and what a uniform guess scores; the last stage is an AdamW update of a tensor.
  await page.locator('#step-list .step-item', { hasText: /^loss$/ }).click();
  assert.match(await page.textContent('#step-detail'), /Mean cross-entropy of the targets: \d.*ln \d+ = \d/);
  await page.click('#step-end');
  const last = await page.textContent('#step-detail');
  assert.match(last, /AdamW’s change to this tensor/);
  assert.match(last, /‖Δθ‖ \/ ‖θ‖/);
  assert.match(last, /Computed by/);
  assert.equal(await page.isDisabled('#step-trace'), false);
  // The trace did not advance the run, and the engine's trace matches the head line.
  const { steps, trace } = await page.evaluate(async () => {
    const r = window.__tp.runs.selectedRun();
    return { steps: r.stepCount, trace: await r.handle.trace() };
  });
  assert.equal(steps, 3);
  assert.equal(trace.step, 3);
  assert.ok(trace.stages.filter((s) => s.pass === 'backward' && s.id === 'gradient').every((s) => Number.isFinite(s.summary.norm)));
  // Causal: the first query gives the last key nothing.
  assert.equal(firstQueryLastKey(trace), 0);
  await probs.click();
  await page.locator('#sec-step').screenshot({ path: join(OUT, 'step-through.png') });
});

test('a bert step is traced too, stage by stage; its attention looks both ways where gpt\'s is causal', async () => {
  await page.click('#new-run');
  await page.selectOption('#preset', 'bert-mini');
  await makeSmall(page, { steps: 1 });
  await waitTrainable(page);
  await traceNext();
  const passes = await page.$$eval('#step-list .step-pass-name', (els) => els.map((e) => e.textContent));
  assert.deepEqual(passes, ['Forward', 'Loss', 'Backward', 'AdamW update']);
  assert.match(await current(), /Stage 1 of \d+ — token embedding/);
  await page.locator('#step-list .step-item', { hasText: /^loss$/ }).click();
  assert.match(await page.textContent('#step-detail'), /Mean cross-entropy of the targets: \d/);
  const trace = await page.evaluate(() => window.__tp.runs.selectedRun().handle.trace());
  assert.ok(firstQueryLastKey(trace) > 0, 'bidirectional attention');
  assert.deepEqual(problems, []);
});

test('an encoder-decoder step shows cross-attention, and the panel speaks 中文', async () => {
  await page.click('#new-run');
  await page.selectOption('#preset', 'original-transformer');
  await makeSmall(page, { steps: 1 });
  await waitTrainable(page);
  await traceNext();
  const items = await page.$$eval('#step-list .step-item', (els) => els.map((e) => e.textContent));
  assert.ok(items.some((s) => /cross-attention probabilities · decoder · layer 0/.test(s)), items.slice(0, 40).join(' | '));
  assert.ok(items[0].includes('encoder'), items[0]);
  await page.click('#lang');
  assert.equal(await page.textContent('#h-step'), '慢动作看一步训练');
  const passes = await page.$$eval('#step-list .step-pass-name', (els) => els.map((e) => e.textContent));
  assert.deepEqual(passes, ['前向', '损失', '反向', 'AdamW 更新']);
  await page.click('#lang');
  assert.deepEqual(problems, []);
});
