// The engine's own faults, in Chromium: a Worker that dies mid-training (as the browser kills one that runs out of
// memory) or stops answering is noticed, restarted, and every run comes back at its last snapshot and goes on —
// losing at most one snapshot interval of training (plus the round of steps under way). Errors and events carry
// the run's id; the page words them with its own run number.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';
import { openPlayground, makeSmall, setOption, waitTrainable, screenshot } from './playground-helpers.mjs';

const SMALL = {
  model: {
    arch: 'gpt', d_model: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, ctx_len: 16,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
    dropout: 0.0, bias: true, tie_embeddings: true, init_std: 0.02,
  },
  train: {
    batch_size: 4, steps: 100000, lr: 3e-3, min_lr: 3e-4, warmup: 5, schedule: 'cosine', betas: [0.9, 0.99],
    eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0, eval_interval: 1000, eval_iters: 1,
  },
  seed: 7,
};

let browser;
let server;
before(async () => {
  browser = await launch();
  server = await startServer({ isolation: true });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

async function harness() {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  return { page, problems };
}

/**
 * In the page: two runs train; `stop(engine)` ends the Worker mid-training. Returns what each run went through:
 * its progress (step, time), snapshots, the step it was restored to, how its train() ended, and the restart event.
 */
async function stopMidTraining(page, how, engineOpts) {
  return page.evaluate(async ({ config, how, engineOpts }) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start(engineOpts);
    const runs = [await engine.createRun(config, { corpus, seed: 1 }), await engine.createRun(config, { corpus, seed: 2 })];
    const log = runs.map((run) => {
      const l = { progress: [], snapshots: [], restored: null, errors: [], ended: null };
      run.on('progress', (p) => l.progress.push([p.step, performance.now()]));
      run.on('snapshot', ({ step }) => l.snapshots.push([step, performance.now()]));
      run.on('restored', ({ step }) => (l.restored = step));
      run.on('error', (e) => l.errors.push(e.message));
      return l;
    });
    const restarted = new Promise((ok) => engine.on('restart', ok));
    const training = runs.map((run, i) => run.train({ steps: 100000 }).then(
      (r) => (log[i].ended = { ok: r }),
      (e) => (log[i].ended = { kind: e.kind, restart: e.restart, runId: e.runId, message: e.message })));
    // Long enough for several snapshots of each run.
    while (log.some((l) => l.snapshots.length < 2)) await new Promise((ok) => setTimeout(ok, 50));
    const killedAt = performance.now();
    const stepAtKill = runs.map((r) => r.stepCount);
    if (how === 'kill') engine._killWorkerForTest();
    else engine._hangForTest();
    const restart = await restarted;
    await Promise.all(training);
    await engine.ready();
    const after = runs.map((r) => r.stepCount);
    // They go on from there.
    for (const r of runs) await r.train({ steps: 3 });
    const final = runs.map((r) => r.stepCount);
    const text = await runs[1].generate('To', { maxTokens: 5 });
    engine.terminate();
    return { log, killedAt, stepAtKill, restart, after, final, text, every: engine.snapshotEveryMs, ids: runs.map((r) => r.id) };
  }, { config: SMALL, how, engineOpts });
}

/** The promise: a run comes back no earlier than the step it had reached one snapshot interval (plus a round) before. */
function assertAtMostOneIntervalLost(r) {
  r.log.forEach((l, i) => {
    const before = l.progress.filter(([, t]) => t <= r.killedAt);
    // A round: the longest time between two of this run's steps (the other run's step sits between them).
    const round = Math.max(...before.slice(1).map(([, t], k) => t - before[k][1]));
    const promised = Math.max(0, ...before.filter(([, t]) => t <= r.killedAt - r.every - round).map(([s]) => s));
    const lastSnapshot = Math.max(...l.snapshots.filter(([, t]) => t <= r.killedAt).map(([s]) => s));
    assert.equal(l.restored, lastSnapshot, `run ${i + 1} is restored from its last snapshot`);
    assert.ok(l.restored >= promised, `run ${i + 1}: restored at ${l.restored}, promised ≥ ${promised} (killed at ${r.stepAtKill[i]})`);
    assert.equal(r.after[i], l.restored);
    assert.equal(r.final[i], l.restored + 3, 'and it trains on');
    assert.deepEqual(l.errors, [], 'no run is blamed for the engine stopping');
    assert.equal(l.ended.kind, 'runtime');
    assert.equal(l.ended.runId, r.ids[i], 'the error carries the run id');
    assert.doesNotMatch(l.ended.message, /run \d/, 'and not in its words');
  });
  assert.equal(r.text.length, 5);
}

test('a Worker killed mid-training: every run comes back at its last snapshot (at most one interval lost) and trains on', async () => {
  const { page, problems } = await harness();
  const r = await stopMidTraining(page, 'kill', { snapshotEveryMs: 1000 });
  assert.equal(r.restart.cause, 'died');
  assert.match(r.restart.message, /the engine stopped/);
  r.log.forEach((l) => assert.equal(l.ended.restart, 'died'));
  assertAtMostOneIntervalLost(r);
  await page.close();
  assert.deepEqual(problems, []);
});

test('a Worker that stops answering is restarted by the watchdog; every run comes back and trains on', async () => {
  const { page, problems } = await harness();
  const r = await stopMidTraining(page, 'hang', { snapshotEveryMs: 1000, watchdogMs: 3000 });
  assert.equal(r.restart.cause, 'stuck');
  assert.match(r.restart.message, /stopped answering \(nothing for \d+ s\)/);
  r.log.forEach((l) => assert.equal(l.ended.restart, 'stuck'));
  assertAtMostOneIntervalLost(r);
  await page.close();
  assert.deepEqual(problems, []);
});

test('a trap with no panic (a failed allocation) is said as most likely out of memory; the engine restarts, the runs come back', async () => {
  const { page, problems } = await harness();
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    const a = await engine.createRun(config, { corpus });
    const b = await engine.createRun(config, { corpus });
    await a.train({ steps: 2 });
    await b.step();
    const restarted = new Promise((ok) => engine.on('restart', ok));
    const runError = new Promise((ok) => a.on('error', (e) => ok({ message: e.message, runId: e.runId })));
    const call = await engine._trapForTest(a).then(() => null, (e) => ({ message: e.message, kind: e.kind, restart: e.restart, runId: e.runId }));
    const restart = await restarted;
    await engine.ready();
    const after = [a.stepCount, b.stepCount];
    await a.train({ steps: 1 });
    await b.train({ steps: 1 });
    engine.terminate();
    return { call, restart, runError: await runError, after, final: [a.stepCount, b.stepCount], ids: [a.id, b.id] };
  }, SMALL);
  assert.match(r.call.message, /the engine aborted: it stopped without a message, most likely out of memory \(lower batch_size, ctx_len or the model size\)/);
  assert.equal(r.call.kind, 'runtime');
  assert.equal(r.call.restart, 'error');
  assert.equal(r.call.runId, r.ids[0]);
  assert.equal(r.restart.cause, 'error');
  assert.equal(r.restart.runId, r.ids[0]);
  assert.equal(r.runError.runId, r.ids[0]);
  assert.deepEqual(r.after, [2, 1], 'both back at their snapshots (a Step takes one too)');
  assert.deepEqual(r.final, [3, 2]);
  await page.close();
  assert.deepEqual(problems, []);
});

test("a run's errors carry its id, not in the message: the caller words it", async () => {
  const { page, problems } = await harness();
  const r = await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    const engine = await window.tp.Engine.start();
    await engine.createRun(config, { corpus }); // so that the run under test is not the engine's first
    const run = await engine.createRun(config, { corpus });
    const training = run.train({ steps: 100000 });
    const props = (e) => ({ message: e.message, kind: e.kind, runId: e.runId });
    const twice = await run.train({ steps: 1 }).then(() => null, props);
    const step = await run.step().then(() => null, props);
    await run.pause();
    await training;
    await run.dispose();
    const disposed = await run.step().then(() => null, props);
    engine.terminate();
    return { id: run.id, twice, step, disposed };
  }, SMALL);
  for (const e of [r.twice, r.step, r.disposed]) {
    assert.equal(e.kind, 'invalid');
    assert.equal(e.runId, r.id);
    assert.doesNotMatch(e.message, /run \d/);
  }
  assert.match(r.twice.message, /already training/);
  assert.match(r.disposed.message, /disposed/);
  await page.close();
  assert.deepEqual(problems, []);
});

test('the page: the engine killed mid-training says so in plain words, its runs come back and go on training; killed again at once, they stay paused', async () => {
  // A short snapshot interval, so that the test need not train for 20 s (this context's last test).
  await browser.context.addInitScript(() => {
    window.__tpEngineOptions = { snapshotEveryMs: 2000 };
  });
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await makeSmall(page, { steps: 100000 });
  await setOption(page, 'eval_iters', 1);
  await waitTrainable(page);
  await page.click('#train');
  await page.click('#new-run');
  await waitTrainable(page);
  await page.click('#train');
  // Each run's snapshots and restores, seen from the page.
  await page.evaluate(() => {
    window.__log = window.__tp.runs.list().map((rec) => {
      const l = { snapshots: [], restored: null, no: rec.no };
      rec.handle.on('snapshot', ({ step }) => l.snapshots.push(step));
      rec.handle.on('restored', ({ step }) => (l.restored = step));
      return l;
    });
  });
  await page.waitForFunction(() => window.__log.every((l) => l.snapshots.length >= 1) && window.__tp.runs.list().every((r) => r.training), null, { timeout: 60000 });
  const atKill = await page.evaluate(() => {
    window.__tp.getEngine()._killWorkerForTest();
    return window.__log.map((l) => l.snapshots.at(-1));
  });
  await page.waitForSelector('#notices .notice[data-key="notice.engineDied"]', { timeout: 30000 });
  // Both come back at their last snapshot and train on past it.
  await page.waitForFunction(() => window.__log.every((l, i) => l.restored !== null
    && window.__tp.runs.list()[i].training && window.__tp.runs.list()[i].stepCount > l.restored + 2), null, { timeout: 60000 });
  const log = await page.evaluate(() => window.__log);
  assert.deepEqual(log.map((l) => l.restored), atKill);
  const text = await page.textContent('#notices');
  assert.match(text, /The engine stopped \(out of memory\?\) and was restarted\. Every run is back at its last saved step — at most 2 s of training lost/);
  assert.doesNotMatch(text, /stopped:/, 'no run is said to have failed');
  await page.evaluate(() => scrollTo(0, 0));
  await screenshot(page, 'faults-engine-died');

  // A second stop within two minutes: no loop of restarts — the runs come back paused, and the page says so.
  await page.evaluate(() => {
    for (const l of window.__log) l.restored = null;
    window.__tp.getEngine()._killWorkerForTest();
  });
  await page.waitForSelector('#notices .notice[data-key="notice.engineLoop"]', { timeout: 30000 });
  await page.waitForFunction(() => window.__log.every((l) => l.restored !== null), null, { timeout: 30000 });
  const paused = await page.evaluate(() => window.__tp.runs.list().map((r) => r.status));
  assert.deepEqual(paused, ['paused', 'paused']);
  // Train goes on from there.
  await page.click('#train');
  await page.waitForFunction(() => window.__tp.runs.selectedRun().training, null, { timeout: 10000 });
  await page.close();
  assert.deepEqual(problems, []);
});
