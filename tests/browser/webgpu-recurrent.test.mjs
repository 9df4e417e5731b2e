// Recurrent positions (issue 16 §2) on Chromium's WebGPU (SwiftShader): the GRU's sequential kernels run in the
// browser and a tiny recurrent GPT trains on WebGPU with the CPU run's losses; its checkpoint has the same size.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';

const TINY = {
  model: {
    arch: 'gpt', d_model: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2, ctx_len: 16,
    ffn: { activation: 'gelu', mult: 2 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'recurrent' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 4, steps: 4, lr: 3e-3, warmup: 1, eval_interval: 2, eval_iters: 2 },
  seed: 12,
};

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('a tiny GPT with recurrent positions trains on WebGPU (single build) and matches the CPU losses', async () => {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start({ build: 'single' });
    const out = {};
    for (const backend of ['webgpu', 'cpu']) {
      const run = await engine.createRun(config, { corpus, backend });
      const progress = [];
      run.on('progress', (p) => progress.push(p));
      await run.train({ steps: 4 });
      const text = await run.generate('To', { maxTokens: 6 });
      const bytes = await run.save();
      out[backend] = { created: run.backend, progress, text, saved: bytes.length };
    }
    engine.terminate();
    return { info: engine.info, ...out };
  }, TINY);
  assert.equal(r.info.webgpu, true);
  assert.equal(r.webgpu.created, 'webgpu');
  assert.ok(r.webgpu.progress.every((p) => p.backend === 'webgpu' && !p.notice), JSON.stringify(r.webgpu.progress));
  r.webgpu.progress.forEach((p, i) => {
    const c = r.cpu.progress[i].loss;
    assert.ok(Math.abs(p.loss - c) <= 2e-3 * c, `step ${i}: webgpu ${p.loss} vs cpu ${c}`);
  });
  assert.equal(r.webgpu.text.length, 6);
  assert.equal(r.webgpu.saved, r.cpu.saved);
  assert.deepEqual(problems, []);
  await page.close();
});
