// The baby GPT (configs/baby-gpt.json, a preset marked GPU) on WebGPU in headless Chromium (SwiftShader, a CPU
// emulation: its full batch of 64 × 256 is far too slow there, so it trains at a reduced size). backend 'auto'
// picks WebGPU for it without measuring the CPU, which the core refuses for a step this large in a tab.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, open } from './util.mjs';

const at = serverAndBrowser();

test("the baby-GPT preset: refused on the CPU naming the batch, 'auto' picks WebGPU saying why, and it trains there", async () => {
  const { page, problems } = await open(at.browser.context, `${at.server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async () => {
    const { presetConfig, presetNeedsGpu } = await import('/pkg/presets.js');
    const config = presetConfig('baby-gpt');
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    const cpu = await engine.createRun(config, { corpus, backend: 'cpu' }).then(() => null, (e) => ({ kind: e.kind, field: e.field, message: e.message }));
    const flowGpu = await engine.shapeFlow(config, 65, { backend: 'webgpu' });
    const auto = await engine.createRun(config, { corpus, backend: 'auto' });
    const autoInfo = { backend: auto.backend, choice: auto.backendChoice ?? null };
    await auto.dispose?.();
    // The same model at one sequence of 32 tokens: a few steps on SwiftShader.
    const small = { ...config, model: { ...config.model, ctx_len: 32 }, train: { ...config.train, batch_size: 1, eval_interval: 1000, eval_iters: 1 } };
    const run = await engine.createRun(small, { corpus, backend: 'webgpu' });
    const progress = [];
    run.on('progress', (p) => progress.push({ step: p.step, loss: p.loss, backend: p.backend }));
    await run.train({ steps: 2 });
    engine.terminate();
    return { needsGpu: presetNeedsGpu('baby-gpt'), cpu, flowGpu: flowGpu.memory_bytes, autoInfo, progress };
  });
  assert.equal(r.needsGpu, true);
  assert.equal(r.cpu?.kind, 'config', JSON.stringify(r.cpu));
  assert.equal(r.cpu.field, 'train.batch_size');
  assert.match(r.cpu.message, /over the memory budget of 2\.00 GiB/);
  assert.ok(r.flowGpu > 0);
  assert.equal(r.autoInfo.backend, 'webgpu', JSON.stringify(r.autoInfo));
  assert.match(r.autoInfo.choice.reason, /^too large for the CPU here \(.*train\.batch_size|too large for the CPU here/);
  assert.equal(r.autoInfo.choice.ms, undefined, 'no CPU step was measured');
  assert.deepEqual(r.progress.map((p) => p.step), [1, 2]);
  assert.ok(r.progress.every((p) => p.backend === 'webgpu' && Number.isFinite(p.loss) && Math.abs(p.loss - Math.log(65)) < 0.5), JSON.stringify(r.progress));
  assert.deepEqual(problems, []);
  await page.close();
});
