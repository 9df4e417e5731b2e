// The engine (pkg/) in real headless Chromium: threaded build on a cross-origin isolated page, single build
// without isolation, the same losses as the native build, bad configs, and recovery from a Rust panic.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from './util.mjs';

// A small GPT: a few steps train in well under a second even on SwiftShader-free CPU wasm.
const SMALL = {
  model: {
    arch: 'gpt', d_model: 48, n_layers: 2, n_heads: 4, n_kv_heads: 2, ctx_len: 32,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
    dropout: 0.0, bias: true, tie_embeddings: true, init_std: 0.02,
  },
  train: {
    batch_size: 8, steps: 30, lr: 3e-3, min_lr: 3e-4, warmup: 5, schedule: 'cosine', betas: [0.9, 0.99],
    eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0, eval_interval: 10, eval_iters: 4,
  },
  seed: 7,
};
const STEPS = 30;

let isolated, plain, browser;

before(async () => {
  isolated = await startServer({ isolation: true });
  plain = await startServer({ isolation: false });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await isolated?.close();
  await plain?.close();
});

async function harness(server) {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  return { page, problems };
}

/** In the page: start the engine, train SMALL for `steps` steps, return losses, info and a sample. */
async function trainInPage(page, steps, build = 'auto') {
  return page.evaluate(
    async ({ config, steps, build }) => {
      const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
      const engine = await window.tp.Engine.start({ build });
      const run = await engine.createRun(config, { corpus });
      const progress = [];
      run.on('progress', (p) => progress.push(p));
      const done = await run.train({ steps });
      const pieces = [];
      const text = await run.generate('ROMEO:', { maxTokens: 40, temperature: 0.8, seed: 1 }, (p) => pieces.push(p));
      const info = { ...engine.info, hardwareConcurrency: navigator.hardwareConcurrency, isolated: crossOriginIsolated };
      engine.terminate();
      return { info, done, progress, text, pieces };
    },
    { config: SMALL, steps, build },
  );
}

/** Native losses for the same config and seed, from the CLI (`tp train`). */
function nativeLosses(steps) {
  const dir = mkdtempSync(join(tmpdir(), 'tp-native-'));
  const cfg = join(dir, 'small.json');
  writeFileSync(cfg, JSON.stringify({ ...SMALL, train: { ...SMALL.train, steps } }));
  const bin = join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, '.cache/transformer-playground/target'), 'release/tp');
  const out = execFileSync(bin, ['train', '--config', cfg, '--data', join(ROOT, 'www/data/tinyshakespeare.txt'),
    '--log-every', '1', '--sample-tokens', '0'], { encoding: 'utf8' });
  return out.trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.loss !== undefined).map((r) => r.loss);
}

test('cross-origin isolated page: threaded build with a pool of hardwareConcurrency threads trains and generates', async () => {
  const { page, problems } = await harness(isolated);
  const r = await trainInPage(page, STEPS);
  assert.equal(r.info.isolated, true);
  assert.equal(r.info.build, 'threads');
  assert.equal(r.info.backend, 'wasm-threads');
  assert.equal(r.info.relaxedSimd, true);
  assert.equal(r.info.threads, r.info.hardwareConcurrency);
  assert.deepEqual(r.done, { step: STEPS, stopped: 'done' });
  assert.equal(r.progress.length, STEPS);
  assert.ok(r.progress.every((p) => p.backend === 'wasm-threads' && p.tokensPerSec > 0));
  const first = r.progress[0].loss;
  const last = r.progress.at(-1).loss;
  assert.ok(last < first - 0.8, `loss should fall: ${first} → ${last}`);
  assert.ok(r.progress.at(-1).valLoss < first, 'a val loss is reported and below the first loss');
  assert.equal(r.text.length, 40);
  assert.equal(r.pieces.join(''), r.text, 'streamed pieces make up the text');
  assert.deepEqual(problems, []);
  await page.close();
});

test('the browser gives the same losses as the native build for the same config and seed', async () => {
  const native = nativeLosses(STEPS);
  assert.equal(native.length, STEPS);
  for (const server of [isolated, plain]) {
    const { page } = await harness(server);
    const r = await trainInPage(page, STEPS);
    const wasm = r.progress.map((p) => p.loss);
    const worst = Math.max(...wasm.map((x, i) => Math.abs(x - native[i]) / native[i]));
    console.log(`${r.info.build}: largest relative loss difference to native over ${STEPS} steps: ${worst.toExponential(2)}`);
    // Different matmul kernels (gemm natively, the SIMD128 kernel in wasm) sum in different orders, and the
    // threaded build fuses multiply-adds: the losses agree to rounding, which grows slowly over the steps.
    for (let i = 0; i < STEPS; i++) {
      const tol = 1e-4;
      assert.ok(Math.abs(wasm[i] - native[i]) <= tol * native[i],
        `${r.info.build} step ${i}: wasm ${wasm[i]} vs native ${native[i]}`);
    }
    await page.close();
  }
});

test('a page without COOP/COEP uses the single build and still trains', async () => {
  const { page, problems } = await harness(plain);
  const r = await trainInPage(page, 12);
  assert.equal(r.info.isolated, false);
  assert.equal(r.info.build, 'single');
  assert.equal(r.info.backend, 'wasm-single');
  assert.equal(r.info.threads, 1);
  assert.ok(r.progress.at(-1).loss < r.progress[0].loss - 0.5);
  assert.equal(r.text.length, 40);
  assert.deepEqual(problems, []);
  await page.close();
});

test('the baseline build (SIMD128 without relaxed SIMD, for browsers that lack it) trains to the native losses', async () => {
  const { page, problems } = await harness(plain);
  const r = await trainInPage(page, 12, 'baseline');
  assert.equal(r.info.build, 'baseline');
  assert.equal(r.info.relaxedSimd, false);
  assert.equal(r.info.simd128, true);
  const native = nativeLosses(STEPS); // the same config (train.steps sets the schedule); the first 12 steps
  r.progress.forEach((p, i) => assert.ok(Math.abs(p.loss - native[i]) <= 1e-4 * native[i], `step ${i}: ${p.loss} vs ${native[i]}`));
  assert.deepEqual(problems, []);
  await page.close();
});

test("a bad config is rejected in JS with the core's message, and nothing breaks", async () => {
  const { page, problems } = await harness(isolated);
  const r = await page.evaluate(async (config) => {
    const engine = await window.tp.Engine.start();
    const errors = [];
    const tryIt = async (f) => {
      try {
        await f();
        errors.push(null);
      } catch (e) {
        errors.push({ isError: e instanceof Error, message: e.message });
      }
    };
    const bad = structuredClone(config);
    bad.model.n_heads = 5; // 48 is not divisible by 5
    await tryIt(() => engine.createRun(bad, { corpus: 'hello world' }));
    await tryIt(() => engine.createRun({ ...config, model: { ...config.model, norm: { kind: 'batchnorm', placement: 'pre' } } }, { corpus: 'abc' }));
    await tryIt(() => engine.createRun(config, { corpus: '' }));
    await tryIt(() => engine.createRun('{ not json', {}));
    // The engine still works after the refusals.
    const run = await engine.createRun(config, { corpus: 'to be or not to be, that is the question. '.repeat(40) });
    await run.train({ steps: 2 });
    const fill = await run.fillMask('to be [MASK]').then(() => null, (e) => e.message);
    engine.terminate();
    return { errors, fill, step: run.stepCount };
  }, SMALL);
  assert.ok(r.errors.every((e) => e && e.isError), JSON.stringify(r.errors));
  assert.match(r.errors[0].message, /n_heads/);
  assert.match(r.errors[0].message, /5/);
  assert.match(r.errors[1].message, /batchnorm/);
  assert.match(r.errors[2].message, /empty/i);
  assert.match(r.errors[3].message, /JSON/);
  assert.match(r.fill, /bert/);
  assert.equal(r.step, 2);
  assert.deepEqual(problems, []);
  await page.close();
});

test('a Rust panic in one run reports an error for it; the engine restarts and every run continues', async () => {
  // On the engine Worker's thread (both builds), and on a thread of the pool (threaded build).
  for (const [server, inPool] of [[isolated, false], [isolated, true], [plain, false]]) {
    const { page } = await harness(server);
    const r = await page.evaluate(async ({ config, inPool }) => {
      const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
      const engine = await window.tp.Engine.start();
      const a = await engine.createRun(config, { corpus, seed: 1 });
      const b = await engine.createRun(config, { corpus, seed: 2 });
      await a.train({ steps: 3 });
      await b.train({ steps: 2 });
      const restarted = new Promise((ok) => engine.on('restart', ok));
      const runError = new Promise((ok) => a.on('error', (e) => ok(e.message)));
      const panic = await engine._panicForTest(a, { inPool }).then(() => 'resolved', (e) => e.message);
      const restart = await restarted;
      await engine.ready();
      // Both runs are back at their last snapshot and keep training.
      const after = [a.stepCount, b.stepCount];
      await a.train({ steps: 2 });
      await b.train({ steps: 1 });
      const text = await b.generate('To', { maxTokens: 10 });
      engine.terminate();
      return { panic, restart, runError: await runError, after, steps: [a.stepCount, b.stepCount], text, build: engine.info.build };
    }, { config: SMALL, inPool });
    assert.match(r.panic, /panic requested by a test/, r.build);
    assert.match(r.runError, /panic requested by a test/);
    if (!inPool) assert.equal(r.restart.runId, 1);
    assert.deepEqual(r.after, [3, 2]);
    assert.deepEqual(r.steps, [5, 3]);
    assert.equal(r.text.length, 10);
    await page.close();
  }
});

test('the threaded build gives bit-identical losses with 1 and 2 threads', async () => {
  const { page } = await harness(isolated);
  const losses = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const out = [];
    for (const threads of [1, 2]) {
      const engine = await window.tp.Engine.start({ build: 'threads', threads });
      const run = await engine.createRun(config, { corpus });
      const l = [];
      run.on('progress', (p) => l.push(p.loss));
      await run.train({ steps: 8 });
      out.push({ threads: engine.info.threads, l });
      engine.terminate();
    }
    return out;
  }, SMALL);
  assert.deepEqual(losses.map((x) => x.threads), [1, 2]);
  assert.deepEqual(losses[0].l, losses[1].l);
  await page.close();
});

test('several runs train in turn in one worker while the page stays responsive', async () => {
  const { page, problems } = await harness(isolated);
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    const runs = await Promise.all([1, 2, 3].map((seed) => engine.createRun(config, { corpus, seed })));
    const order = [];
    runs.forEach((run) => run.on('progress', () => order.push(run.id)));
    // The main thread's event loop: the longest gap between timer callbacks while three runs train.
    let last = performance.now();
    let worst = 0;
    let ticking = true;
    const tick = () => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
      if (ticking) setTimeout(tick, 0);
    };
    setTimeout(tick, 0);
    const results = await Promise.all(runs.map((run) => run.train({ steps: 6 })));
    // Pausing one run mid-way leaves the others going.
    const long = runs[0].train({ steps: 1000 });
    await runs[1].step();
    const paused = await runs[0].pause();
    const longResult = await long;
    ticking = false;
    engine.terminate();
    return { order, results, worst, paused, longResult, steps: runs.map((r) => r.stepCount) };
  }, SMALL);
  assert.deepEqual(r.results.map((x) => x.stopped), ['done', 'done', 'done']);
  // Round-robin: the first nine progress events come from the three runs in turn.
  assert.deepEqual(r.order.slice(0, 9), [1, 2, 3, 1, 2, 3, 1, 2, 3]);
  assert.ok(r.worst < 250, `the page's event loop stalled for ${r.worst.toFixed(0)} ms`);
  assert.equal(r.longResult.stopped, 'paused');
  assert.equal(r.longResult.step, r.paused.step);
  assert.ok(r.paused.step < 6 + 1000);
  assert.deepEqual(problems, []);
  await page.close();
});

test('save and loadRun continue a run exactly; a corrupt checkpoint is refused with a message', async () => {
  const { page, problems } = await harness(isolated);
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    const a = await engine.createRun(config, { corpus });
    await a.train({ steps: 4 });
    const bytes = await a.save();
    const b = await engine.loadRun(bytes, { corpus });
    const losses = { a: [], b: [] };
    a.on('progress', (p) => losses.a.push(p.loss));
    b.on('progress', (p) => losses.b.push(p.loss));
    await a.train({ steps: 3 });
    await b.train({ steps: 3 });
    const header = bytes.slice();
    header[10] = 0x7b;
    const errors = [];
    for (const bad of [header, bytes.slice(0, 100), new Uint8Array([1, 2, 3])]) {
      errors.push(await engine.loadRun(bad, { corpus }).then(() => null, (e) => e.message));
    }
    const noCorpus = await engine.loadRun(bytes).then(() => null, (e) => e.message);
    engine.terminate();
    return { losses, b0: b.stepCount, errors, noCorpus, magic: [...bytes.slice(0, 8)] };
  }, SMALL);
  assert.equal(r.b0, 7);
  assert.deepEqual(r.losses.a, r.losses.b);
  assert.ok(r.errors.every((e) => typeof e === 'string' && /checkpoint/i.test(e)), JSON.stringify(r.errors));
  assert.match(r.noCorpus, /corpus/);
  assert.deepEqual(problems, []);
  await page.close();
});
