// The memory budget a page can set (issue 20 §2): engine.setMemoryBudget(gib) lowers or raises what a config may
// plan to hold; a config over it is refused naming the field, the budget in the message; a bad value is an
// 'invalid' EngineError naming `gib`; null restores the default; the budget survives an engine restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';

const W1ISH = {
  model: {
    arch: 'gpt', d_model: 64, n_layers: 2, n_heads: 4, n_kv_heads: 4, ctx_len: 64,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 64, steps: 4, lr: 3e-3, eval_iters: 1 },
  seed: 3,
};
const CORPUS = 'to be or not to be, that is the question. '.repeat(40);

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('the memory budget the page sets is what configs are checked against, and it survives a restart', async () => {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async ({ config, corpus }) => {
    const engine = await window.tp.Engine.start();
    const outcome = async (f) => {
      try {
        return { ok: await f() };
      } catch (e) {
        return { kind: e.kind, field: e.field, message: e.message };
      }
    };
    const made = async () => outcome(async () => {
      const run = await engine.createRun(config, { corpus });
      run.dispose();
      return 'made';
    });
    const out = { defaultMade: await made() };
    out.low = await outcome(() => engine.setMemoryBudget(0.001));
    out.lowMade = await made();
    out.bad = await Promise.all([0, -1, 4, NaN, '1', undefined].map((g) => outcome(() => engine.setMemoryBudget(g))));
    out.stillLow = await made();
    const restarted = new Promise((ok) => engine.on('restart', ok));
    engine._killWorkerForTest();
    await restarted;
    await engine.ready();
    out.afterRestart = await made();
    out.reset = await outcome(() => engine.setMemoryBudget(null));
    out.resetMade = await made();
    engine.terminate();
    return out;
  }, { config: W1ISH, corpus: CORPUS });
  assert.deepEqual(r.defaultMade, { ok: 'made' }, JSON.stringify(r.defaultMade));
  assert.ok(Math.abs(r.low.ok - 0.001) < 1e-9, JSON.stringify(r.low));
  assert.equal(r.lowMade.kind, 'config', JSON.stringify(r.lowMade));
  assert.match(r.lowMade.field, /^(train\.batch_size|model)$/);
  assert.match(r.lowMade.message, /over the memory budget of 0\.00 GiB/);
  for (const b of r.bad) {
    assert.equal(b.kind, 'invalid', JSON.stringify(b));
    assert.match(b.message, /gib/);
  }
  assert.equal(r.stillLow.kind, 'config', 'a refused value changes nothing');
  assert.equal(r.afterRestart.kind, 'config', `the budget outlives a restart: ${JSON.stringify(r.afterRestart)}`);
  assert.equal(r.reset.ok, 2, 'null restores the default of 2 GiB');
  assert.deepEqual(r.resetMade, { ok: 'made' });
  assert.deepEqual(problems, []);
});
