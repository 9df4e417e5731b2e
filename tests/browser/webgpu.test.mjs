// Training on WebGPU through the engine, in headless Chromium (--enable-unsafe-webgpu: SwiftShader, a CPU
// emulation, so the model is tiny). The run must really be on the GPU (a silent fallback to the CPU fails the
// test) and match the CPU run's losses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';

const TINY = {
  model: {
    arch: 'gpt', d_model: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2, ctx_len: 16,
    ffn: { activation: 'swiglu', mult: 2 }, norm: { kind: 'rmsnorm', placement: 'pre' },
    position: { kind: 'rope' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 4, steps: 6, lr: 3e-3, warmup: 1, eval_interval: 3, eval_iters: 2 },
  seed: 11,
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

test('a lost GPU device: the run continues on the CPU from its last synced state, with a notice', async () => {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    const run = await engine.createRun(config, { corpus, backend: 'webgpu' });
    const progress = [];
    run.on('progress', (p) => progress.push(p));
    await run.train({ steps: 3 }); // stopping syncs the host copy (the snapshot)
    const lost = await engine._loseGpuForTest(run);
    await run.train({ steps: 3 });
    const text = await run.generate('To', { maxTokens: 5 });
    engine.terminate();
    return { lost, progress: progress.map((p) => ({ step: p.step, backend: p.backend, notice: p.notice ?? null })), text };
  }, TINY);
  assert.equal(r.lost, true);
  assert.deepEqual(r.progress.slice(0, 3).map((p) => p.backend), ['webgpu', 'webgpu', 'webgpu']);
  const after = r.progress.slice(3);
  assert.ok(after.every((p) => p.backend.startsWith('wasm-')), JSON.stringify(after));
  assert.match(after[0].notice ?? '', /cpu/i);
  assert.equal(after.at(-1).step, 6, 'nothing was lost: the state was synced when training stopped');
  assert.equal(r.text.length, 5);
  assert.deepEqual(problems.filter((p) => !/lost|destroyed/i.test(p)), []);
  await page.close();
});

for (const build of ['threads', 'single']) {
  test(`a tiny GPT trains on WebGPU (${build} build) and matches the CPU losses`, async () => {
    const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
    await page.waitForFunction(() => window.harnessReady === true);
    const r = await page.evaluate(async ({ config, build }) => {
      const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
      const engine = await window.tp.Engine.start({ build });
      const out = {};
      for (const backend of ['webgpu', 'cpu']) {
        const run = await engine.createRun(config, { corpus, backend });
        const progress = [];
        run.on('progress', (p) => progress.push(p));
        await run.train({ steps: 6 });
        const text = await run.generate('To', { maxTokens: 8 });
        const bytes = await run.save();
        out[backend] = { created: run.backend, progress, text, saved: bytes.length, stats: await run.gpuStats() };
      }
      engine.terminate();
      return { info: engine.info, ...out };
    }, { config: TINY, build });
    assert.equal(r.info.webgpu, true, 'the build has the gpu feature and the browser has navigator.gpu');
    assert.equal(r.webgpu.created, 'webgpu');
    assert.ok(r.webgpu.progress.every((p) => p.backend === 'webgpu' && !p.notice), JSON.stringify(r.webgpu.progress.map((p) => p.backend)));
    assert.ok(r.cpu.progress.every((p) => p.backend.startsWith('wasm-')));
    r.webgpu.progress.forEach((p, i) => {
      const c = r.cpu.progress[i].loss;
      assert.ok(Math.abs(p.loss - c) <= 2e-3 * c, `step ${i}: webgpu ${p.loss} vs cpu ${c}`);
    });
    // Every step reported once, in order, though on WebGPU they were pipelined after the first (several steps a
    // call, up to each evaluation and about a second's worth): the recorded step replayed with no bind group
    // created, some steps read back with the next already in flight.
    assert.deepEqual(r.webgpu.progress.map((p) => p.step), [1, 2, 3, 4, 5, 6]);
    const s = r.webgpu.stats;
    assert.ok(s.issue_ms > 0 && s.dispatches_per_step > 0, JSON.stringify(s));
    assert.equal(s.bind_groups_per_step, 0, JSON.stringify(s));
    assert.ok(s.overlapped_steps >= 1 && s.overlapped_steps <= 3, `${JSON.stringify(s)}, ms/step ${r.webgpu.progress.map((p) => p.msPerStep | 0)}`);
    console.log(`WebGPU ms/step ${r.webgpu.progress.map((p) => p.msPerStep | 0)}; ${JSON.stringify(s)}`);
    assert.equal(r.cpu.stats, null);
    assert.equal(r.webgpu.text.length, 8);
    assert.equal(r.webgpu.saved, r.cpu.saved);
    assert.deepEqual(problems, []);
    await page.close();
  });
}

test("backend 'auto' measures WebGPU and the CPU for the config and runs on the faster", async () => {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    const run = await engine.createRun(config, { corpus, backend: 'auto' });
    const progress = [];
    run.on('progress', (p) => progress.push(p.backend));
    await run.train({ steps: 2 });
    engine.terminate();
    return { choice: run.backendChoice, backend: run.backend, progress, step: run.stepCount };
  }, TINY);
  assert.ok(r.choice.ms.webgpu > 0 && r.choice.ms.cpu > 0, JSON.stringify(r.choice));
  assert.match(r.choice.reason, /measured/);
  // Whatever it chose is what runs, and the measurement left the run at step 0 before training.
  const expected = r.choice.backend === 'webgpu' ? 'webgpu' : 'wasm-threads';
  assert.equal(r.choice.backend, r.choice.ms.webgpu < r.choice.ms.cpu ? 'webgpu' : 'cpu');
  assert.deepEqual(r.progress, [expected, expected]);
  assert.equal(r.step, 2);
  assert.deepEqual(problems, []);
  await page.close();
});
