// A recipe survives an engine restart (issue 18): the Worker is killed while an RLHF recipe is in its reward-model
// stage; the recipe comes back at the start of that stage from the SFT model it had finished (the Driver's `from`),
// says so ('restored'), and run again gives the numbers of a recipe run straight through. A recipe killed in its
// first stage comes back at that stage's start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, open } from './util.mjs';

const at = serverAndBrowser();

const KNOBS = { sft_steps: 4, rm_steps: 6, ppo_steps: 2, k: 3, rollouts: 2, epochs: 1, eval_every: 100 };

test('an rlhf recipe killed in its rm stage comes back there from its SFT model and ends with the numbers of a run straight through', async () => {
  const { page, problems } = await open(at.browser.context, `${at.server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async (knobs) => {
    const engine = await window.tp.Engine.start({ build: 'threads' });
    const finals = async (recipe) => {
      const stages = {};
      recipe.on('stage', (e) => (stages[e.stage] = e.metrics));
      return stages;
    };
    // Straight through.
    const a = await engine.createRecipe('rlhf', { knobs });
    const straight = await finals(a);
    await a.run();
    await a.dispose();
    // Killed in rm, after SFT finished.
    const b = await engine.createRecipe('rlhf', { knobs });
    const stages = await finals(b);
    const restored = new Promise((ok) => b.on('restored', ok));
    const errors = [];
    b.on('error', (e) => errors.push({ kind: e.kind, restart: e.restart }));
    await b.run({ stage: 'sft' });
    const inRm = new Promise((ok) => b.on('progress', (p) => p.stage === 'rm' && p.step >= 2 && ok(p.step)));
    const running = b.run().then((x) => ({ ok: x }), (e) => ({ err: { kind: e.kind, restart: e.restart } }));
    const killedAtStep = await inRm;
    engine._killWorkerForTest();
    const interrupted = await running;
    const back = await restored;
    await engine.ready();
    const state = { stage: b.stage, step: b.step, done: b.done };
    await b.run();
    // Killed in its first stage: back at its start.
    const c = await engine.createRecipe('rlhf', { knobs });
    const cBack = new Promise((ok) => c.on('restored', ok));
    const inSft = new Promise((ok) => c.on('progress', (p) => p.stage === 'sft' && p.step >= 2 && ok()));
    const cRunning = c.run().catch(() => null);
    await inSft;
    engine._killWorkerForTest();
    await cRunning;
    const cRestored = await cBack;
    await engine.ready();
    const cFinal = await c.run({ stage: 'sft' });
    engine.terminate();
    return { straight, stages, killedAtStep, interrupted, back, state, errors, cRestored, cFinal };
  }, KNOBS);
  assert.ok(r.killedAtStep >= 2);
  assert.equal(r.interrupted.err?.restart, 'died', JSON.stringify(r.interrupted));
  assert.deepEqual(r.back, { stage: 'rm', step: 0, lost: { stage: 'rm', step: r.back.lost.step } });
  assert.ok(r.back.lost.step >= 2, JSON.stringify(r.back));
  assert.deepEqual(r.state, { stage: 'rm', step: 0, done: false });
  assert.ok(r.errors.some((e) => e.restart === 'died'), 'the recipe is told the engine stopped');
  // SFT ran once, before the kill; rm and ppo after the restart give the straight run's numbers.
  for (const stage of ['sft', 'rm', 'ppo']) assert.deepEqual(r.stages[stage], r.straight[stage], `${stage}'s final evaluation`);
  assert.deepEqual(r.cRestored.stage, 'sft');
  assert.equal(r.cRestored.step, 0);
  assert.equal(r.cFinal.stopped, 'done');
  assert.deepEqual(problems, []);
  await page.close();
});
