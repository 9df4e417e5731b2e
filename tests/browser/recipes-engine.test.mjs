// The recipes in the engine (engine.createRecipe, src/recipes/engine.rs) in headless Chromium, threaded build: each
// recipe with small knobs gives progress events with the core's metrics and a result per stage; the deterministic
// steps (fine-tuning, SFT, ICL pretraining) give the native CLI's numbers; a paused and resumed RLHF run gives the
// numbers of one run straight through; PPO started from the saved SFT and reward models gives those of the run
// through; bad options are refused naming the option.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from './util.mjs';

let server, browser, page, problems;

before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
  ({ page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`));
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate(async () => {
    window.engine = await window.tp.Engine.start({ build: 'threads' });
  });
});

after(async () => {
  await page?.evaluate(() => window.engine?.terminate());
  await browser?.close();
  await server?.close();
});

const PRETRAINED = join(ROOT, 'www/data/pretrained-gpt-tiny.safetensors');

/** The native CLI's JSON lines of `tp args`. */
function tp(args) {
  const bin = join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, '.cache/transformer-playground/target'), 'release/tp');
  return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n').map((l) => JSON.parse(l));
}

/** A copy of configs/recipes/NAME.json with `edit` applied, written to a temporary file. */
function recipeFile(name, edit) {
  const cfg = JSON.parse(readFileSync(join(ROOT, `configs/recipes/${name}.json`), 'utf8'));
  edit(cfg);
  const path = join(mkdtempSync(join(tmpdir(), 'tp-recipes-')), `${name}.json`);
  writeFileSync(path, JSON.stringify(cfg));
  return path;
}

/** Within `tol` relative (the wasm kernels sum in other orders than native ones, and fuse multiply-adds). */
function close(a, b, tol, what) {
  assert.ok(Math.abs(a - b) <= tol * Math.max(Math.abs(b), 1e-3), `${what}: browser ${a} vs native ${b}`);
}

/**
 * In the page: create a recipe, run it (pausing as `pauseAt(event)` says), collect its events. Each stage's saved
 * checkpoint stays in the page (window.saved[tag][stage]); the test gets their SHA-256 (moving megabytes of bytes
 * between the page and the test would cost more than the recipe).
 */
function runInPage(kind, opts, { pauseAt = null, stage, tag = kind } = {}) {
  return page.evaluate(async ({ kind, opts, pauseAt, stage, tag }) => {
    const recipe = await window.engine.createRecipe(kind, opts);
    const events = [];
    let paused = null;
    recipe.on('progress', (p) => {
      events.push({ type: 'progress', ...p });
      if (pauseAt && !paused && p.stage === pauseAt.stage && p.step === pauseAt.step && !p.eval) paused = recipe.pause();
    });
    recipe.on('stage', (r) => events.push({ type: 'stage', ...r }));
    const info = { stages: recipe.stages, knobs: recipe.knobs, backend: recipe.backend };
    const runs = [await recipe.run(stage ? { stage } : undefined)];
    const extra = {};
    if (paused) {
      extra.paused = await paused;
      extra.evaluate = await recipe.evaluate();
      extra.samples = await recipe.samples();
      runs.push(await recipe.run());
    }
    const saved = {};
    window.saved ??= {};
    window.saved[tag] = {};
    for (const s of recipe.stages) {
      if (s.name === 'eval') continue;
      const bytes = await recipe.save(s.name);
      window.saved[tag][s.name] = bytes;
      saved[s.name] = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
    }
    extra.samplesEnd = await recipe.samples();
    extra.done = recipe.done;
    await recipe.dispose();
    return { info, events, runs, saved, ...extra };
  }, { kind, opts, pauseAt, stage, tag });
}

const strip = (events) => events.map(({ ms, ...e }) => e);

// The shipped RLHF recipe with fewer held-out and reward-model prompts (the evaluations dominate a few steps' time).
const RLHF = (() => {
  const r = JSON.parse(readFileSync(join(ROOT, 'configs/recipes/rlhf.json'), 'utf8'));
  return { ...r, eval_prompts: 8, rm: { ...r.rm, prompts: 4 } };
})();

test('rlhf: events with metrics, pause/resume gives the numbers of a run straight through, PPO from saved stages too, SFT as native', async () => {
  const knobs = { sft_steps: 3, rm_steps: 3, ppo_steps: 3, rollouts: 8, eval_every: 2 };
  const t0 = Date.now();
  const a = await runInPage('rlhf', { knobs, recipe: RLHF });
  assert.deepEqual(a.info.stages, [{ name: 'sft', steps: 3 }, { name: 'rm', steps: 3 }, { name: 'ppo', steps: 3 }]);
  assert.equal(a.info.backend, 'wasm-threads');
  assert.deepEqual(a.runs, [{ stopped: 'done', stage: 'ppo', step: 3 }]);
  assert.equal(a.done, true);
  const stages = a.events.filter((e) => e.type === 'stage');
  assert.deepEqual(stages.map((e) => e.stage), ['sft', 'rm', 'ppo']);
  const [sft, rm, ppo] = stages;
  for (const m of ['score', 'lm_loss']) assert.equal(typeof sft.metrics[m], 'number', `sft ${m}`);
  for (const m of ['rm_accuracy', 'reward_mean', 'reward_std']) assert.equal(typeof rm.metrics[m], 'number', `rm ${m}`);
  for (const m of ['reward', 'score', 'kl', 'lm_loss']) assert.equal(typeof ppo.metrics[m], 'number', `ppo ${m}`);
  assert.equal(ppo.samples.length, 3);
  assert.equal(rm.metrics.baseline, 0.5);
  assert.equal([...ppo.samples[0].prompt].length, 32);
  assert.equal([...ppo.samples[0].completion].length, 24);
  const steps = a.events.filter((e) => e.type === 'progress' && !e.eval);
  assert.deepEqual(steps.map((e) => `${e.stage}${e.step}/${e.steps}`), ['sft1/3', 'sft2/3', 'sft3/3', 'rm1/3', 'rm2/3', 'rm3/3', 'ppo1/3', 'ppo2/3', 'ppo3/3']);
  assert.ok(steps.filter((e) => e.stage === 'ppo').every((e) => ['reward', 'kl', 'score', 'pg_loss', 'vf_loss', 'clipfrac'].every((m) => m in e.metrics)));
  assert.ok(steps.every((e) => e.ms > 0));
  const evals = a.events.filter((e) => e.type === 'progress' && e.eval);
  assert.deepEqual(evals.map((e) => `${e.stage}${e.step}`), ['sft0', 'sft2', 'rm0', 'rm2', 'ppo0', 'ppo2']);
  console.log(`rlhf (3 + 3 + 3 steps, 8 rollouts) in the browser: ${Date.now() - t0} ms`);

  // Paused in the reward model's stage, evaluated and sampled, then resumed: the same events as straight through.
  const b = await runInPage('rlhf', { knobs, recipe: RLHF }, { pauseAt: { stage: 'rm', step: 1 }, tag: 'paused' });
  // The pause arrives after the unit under way (and maybe one more, as events reach the page while it steps).
  assert.equal(b.paused.stage, 'rm');
  assert.ok(b.paused.step >= 1 && b.paused.step < 3, `paused at rm step ${b.paused.step}`);
  assert.deepEqual(b.runs[0], { stopped: 'paused', ...b.paused });
  assert.equal(b.evaluate.stage, 'rm');
  assert.equal(typeof b.evaluate.metrics.rm_accuracy, 'number');
  assert.equal(b.samples.length, 3, 'the SFT policy\'s samples while the reward model trains');
  assert.deepEqual(b.runs[1], { stopped: 'done', stage: 'ppo', step: 3 });
  assert.deepEqual(strip(b.events), strip(a.events));
  assert.deepEqual(b.saved, a.saved, 'the same checkpoints');

  // PPO from the saved SFT and reward models: the run-through's PPO events.
  const c = await page.evaluate(async ({ knobs, recipe: file }) => {
    const f = { stage: 'ppo', checkpoints: { sft: window.saved.rlhf.sft, rm: window.saved.rlhf.rm } };
    const recipe = await window.engine.createRecipe('rlhf', { knobs, from: f, recipe: file });
    const events = [];
    recipe.on('progress', (p) => events.push({ type: 'progress', ...p }));
    recipe.on('stage', (r) => events.push({ type: 'stage', ...r }));
    const start = recipe.stage;
    const done = await recipe.run();
    await recipe.dispose();
    return { start, done, events };
  }, { knobs, recipe: RLHF });
  assert.equal(c.start, 'ppo');
  assert.deepEqual(c.done, { stopped: 'done', stage: 'ppo', step: 3 });
  assert.deepEqual(strip(c.events), strip(a.events.filter((e) => e.stage === 'ppo')));

  // SFT's steps are deterministic (no sampling): the native CLI's losses.
  const path = recipeFile('rlhf', (r) => Object.assign(r, RLHF, { sft: { ...r.sft, steps: 3 }, rm: { ...RLHF.rm, steps: 3 }, ppo: { ...r.ppo, steps: 3, rollouts: 8 } }));
  const native = tp(['rlhf', '--config', path, '--checkpoint', PRETRAINED, '--stage', 'sft', '--out', mkdtempSync(join(tmpdir(), 'tp-rlhf-')), '--eval-every', '2']);
  const nativeSteps = native.filter((l) => !l.eval);
  assert.equal(nativeSteps.length, 3);
  nativeSteps.forEach((l, i) => close(steps[i].metrics.loss, l.loss, 1e-4, `sft step ${i} loss`));
  assert.deepEqual(problems, []);
});

test('finetune: the native CLI\'s losses and accuracies, a stage result, and a later run continues the saved model', async () => {
  // The speaker task: its held-out split (147 speeches) evaluates faster than verse_prose's (839).
  const knobs = { steps: 3, aux_lm: 0.5, eval_every: 3 };
  const a = await runInPage('finetune', { knobs, seed: 1, task: 'speaker' });
  assert.deepEqual(a.info.stages, [{ name: 'finetune', steps: 3 }]);
  const native = tp(['finetune', '--checkpoint', PRETRAINED, '--task', 'speaker', '--aux-lm', '0.5', '--steps', '3', '--eval-every', '3', '--seed', '1']);
  const steps = a.events.filter((e) => e.type === 'progress' && !e.eval);
  assert.equal(steps.length, 3);
  for (let i = 0; i < 3; i++) {
    for (const m of ['loss', 'task_loss', 'lm_loss']) close(steps[i].metrics[m], native[i][m], 1e-4, `step ${i} ${m}`);
  }
  const end = a.events.at(-1);
  assert.equal(end.type, 'stage');
  close(end.metrics.val_lm_loss, native.at(-1).val_lm_loss, 1e-4, 'held-out LM loss');
  // An accuracy counts examples: rounding can flip one near the boundary.
  close(end.metrics.val_accuracy, native.at(-1).val_accuracy, 0.01, 'held-out accuracy');
  assert.equal(end.metrics.baseline, native.at(-1).baseline);
  const cont = await page.evaluate(async () => {
    const r = await window.engine.createRecipe('finetune', { knobs: { steps: 1 }, from: { stage: 'finetune', checkpoints: { finetune: window.saved.finetune.finetune } } });
    const out = { stages: r.stages, run: await r.run() };
    await r.dispose();
    return out;
  });
  assert.deepEqual(cont.stages, [{ name: 'finetune', steps: 1 }]);
  assert.deepEqual(cont.run, { stopped: 'done', stage: 'finetune', step: 1 });
});

test('icl and zeroshot: pretraining as native, the evaluation stage with its report and samples', async () => {
  const knobs = { steps: 4, train_episodes: 400, eval_episodes: 12, eval_every: 2 };
  const a = await runInPage('icl', { knobs });
  assert.deepEqual(a.info.stages, [{ name: 'pretrain', steps: 4 }, { name: 'eval', steps: 1 }]);
  const path = recipeFile('icl', (r) => Object.assign(r, { train: { ...r.train, steps: 4, eval_interval: 2 }, icl: { ...r.icl, train_episodes: 400, eval_episodes: 12 } }));
  const native = tp(['icl', '--config', path, '--log-every', '1']);
  const steps = a.events.filter((e) => e.type === 'progress' && !e.eval && e.stage === 'pretrain');
  const nativeSteps = native.filter((l) => l.loss !== undefined);
  assert.equal(nativeSteps.length, 4);
  nativeSteps.forEach((l, i) => close(steps[i].metrics.loss, l.loss, 1e-4, `icl step ${i}`));
  const vals = a.events.filter((e) => e.eval && e.stage === 'pretrain');
  assert.deepEqual(vals.map((e) => e.step), [0, 2]);
  close(vals[1].metrics.val_loss, nativeSteps[2].val_loss, 1e-4, 'icl val_loss at step 2');
  const evalStage = a.events.find((e) => e.type === 'stage' && e.stage === 'eval');
  assert.equal(evalStage.report.accuracy_by_k.length, 8);
  assert.ok(Array.isArray(evalStage.report.induction.scores));

  const z = await runInPage('zeroshot', { knobs: { steps: 3, eval_questions: 6, eval_every: 2 } });
  assert.deepEqual(z.info.stages.map((s) => s.name), ['pattern', 'baseline', 'eval']);
  const zs = z.events.filter((e) => e.type === 'stage');
  assert.deepEqual(zs.map((e) => e.stage), ['pattern', 'baseline', 'eval']);
  for (const m of ['accuracy', 'baseline_accuracy', 'chance']) assert.equal(typeof zs[2].metrics[m], 'number', m);
  assert.ok(zs[2].samples.length > 0 && zs[2].samples.every((s) => s.prompt.includes('Q: ')));
  assert.deepEqual(z.samplesEnd, zs[2].samples);
});

test('icl on WebGPU (SwiftShader): the pretraining steps give the CPU recipe\'s losses, evaluate while paused, the evaluation on the CPU; auto measures and says', async () => {
  const knobs = { steps: 4, train_episodes: 400, eval_episodes: 12, eval_every: 2 };
  const g = await runInPage('icl', { knobs, backend: 'webgpu' }, { pauseAt: { stage: 'pretrain', step: 2 }, tag: 'icl-gpu' });
  const c = await runInPage('icl', { knobs }, { tag: 'icl-cpu' });
  assert.equal(g.info.backend, 'webgpu');
  assert.equal(c.info.backend, 'wasm-threads');
  const of = (r, name, evals) => r.events.filter((e) => e.type === 'progress' && e.stage === 'pretrain' && e.eval === evals).map((e) => [e.step, e.metrics[name]]);
  for (const [name, evals] of [['loss', false], ['grad_norm', false], ['val_loss', true]]) {
    const [a, b] = [of(g, name, evals), of(c, name, evals)];
    assert.deepEqual(a.map(([s]) => s), b.map(([s]) => s), `${name}: the same steps`);
    assert.ok(a.length > 0, name);
    a.forEach(([s, x], i) => assert.ok(Math.abs(x - b[i][1]) <= 2e-3 * Math.abs(b[i][1]), `${name} at step ${s}: webgpu ${x} vs cpu ${b[i][1]}`));
  }
  assert.ok(g.events.every((e) => !e.notice), 'no device loss');
  // Paused after step 2 (or one more, as events reach the page while it steps): evaluated on the device, at the
  // step it paused at, the validation loss the CPU's run has there when that is an evaluation step.
  assert.equal(g.paused.stage, 'pretrain');
  assert.ok(g.paused.step >= 2 && g.paused.step < 4, `paused at pretrain step ${g.paused.step}`);
  assert.deepEqual(g.runs[0], { stopped: 'paused', ...g.paused });
  assert.equal(g.evaluate.step, g.paused.step);
  const cpuVal = of(c, 'val_loss', true).find(([s]) => s === g.paused.step);
  if (cpuVal) assert.ok(Math.abs(g.evaluate.metrics.val_loss - cpuVal[1]) <= 2e-3 * cpuVal[1], `evaluate ${g.evaluate.metrics.val_loss} vs ${cpuVal[1]}`);
  else assert.ok(Number.isFinite(g.evaluate.metrics.val_loss));
  const stage = (r, name) => r.events.find((e) => e.type === 'stage' && e.stage === name);
  assert.match(stage(g, 'pretrain').report.backend, /^gpu \(/);
  assert.equal(stage(c, 'pretrain').report.backend, 'cpu');
  assert.equal(stage(g, 'eval').report.accuracy_by_k.length, 8);
  const auto = await page.evaluate(async () => {
    const r = await window.engine.createRecipe('icl', { knobs: { steps: 2, train_episodes: 400, eval_episodes: 12 }, backend: 'auto' });
    const out = { choice: r.backendChoice, backend: r.backend };
    await r.dispose();
    return out;
  });
  assert.match(auto.choice.reason, /^icl's pretraining: measured .* ms\/step on WebGPU, .* on the CPU; evaluation on the CPU$/);
  assert.equal(auto.backend, auto.choice.backend === 'webgpu' ? 'webgpu' : 'wasm-threads');
  assert.deepEqual(problems, []);
});

test('recipeInfo, run to a stage, and bad options refused naming the option', async () => {
  const r = await page.evaluate(async () => {
    const e = window.engine;
    const info = {};
    for (const k of window.tp.RECIPE_KINDS) info[k] = await e.recipeInfo(k);
    const refused = async (kind, opts) => {
      try {
        await e.createRecipe(kind, opts);
        return 'accepted';
      } catch (err) {
        return `${err.kind}: ${err.message}`;
      }
    };
    const errors = {
      kind: await refused('dpo', {}),
      beta: await refused('rlhf', { knobs: { beta: -1 } }),
      unknown: await refused('rlhf', { knobs: { betta: 1 } }),
      string: await refused('rlhf', { knobs: { beta: '1' } }),
      task: await refused('finetune', { task: 'poetry' }),
      gpu: await refused('rlhf', { backend: 'webgpu' }),
      gpuFinetune: await refused('finetune', { backend: 'webgpu' }),
      from: await refused('rlhf', { from: { stage: 'ppo', checkpoints: {} } }),
      checkpoint: await refused('rlhf', { checkpoint: new Uint8Array([1, 2, 3]) }),
      scratch: await refused('rlhf', { checkpoint: 'scratch' }),
      corpus: await refused('icl', { corpus: 'abc' }),
    };
    // Run to the end of one stage, then on.
    const recipe = await e.createRecipe('rlhf', { knobs: { sft_steps: 2, rm_steps: 2, ppo_steps: 1, rollouts: 4, eval_every: 5 }, backend: 'auto' });
    const first = await recipe.run({ stage: 'sft' });
    const at = { stage: recipe.stage, step: recipe.step, done: recipe.done };
    let badStage;
    try {
      await recipe.run({ stage: 'dpo' });
    } catch (err) {
      badStage = err.message;
    }
    const rest = await recipe.run();
    const again = await recipe.run();
    const choice = recipe.backendChoice;
    await recipe.dispose();
    return { info, errors, first, at, badStage, rest, again, choice, recipes: e.recipes.length };
  });
  assert.deepEqual(r.info.rlhf.stages, [{ name: 'sft', steps: 150 }, { name: 'rm', steps: 150 }, { name: 'ppo', steps: 40 }]);
  assert.deepEqual(Object.keys(r.info.rlhf.knobs).sort(), ['beta', 'clip', 'epochs', 'eval_every', 'gamma_ptx', 'k', 'ppo_steps', 'rm_steps', 'rollouts', 'sft_steps']);
  assert.equal(r.info.finetune.knobs.steps, 300);
  assert.deepEqual(r.info.zeroshot.stages.map((s) => s.name), ['pattern', 'baseline', 'eval']);
  assert.equal(r.info.icl.stages[0].steps, 3000);
  const e = r.errors;
  assert.match(e.kind, /^invalid: kind = 'dpo'/);
  assert.match(e.beta, /^config: invalid config: knobs\.beta = -1.*ppo\.beta/);
  assert.match(e.unknown, /^config: invalid config: knobs\.betta/);
  assert.match(e.string, /^invalid: opts\.knobs\.beta = '1'/);
  assert.match(e.task, /^invalid: task: .*verse_prose/);
  assert.match(e.gpu, /^gpu: opts\.backend = 'webgpu': rlhf runs on the CPU backend: its steps add losses computed on the host/);
  assert.match(e.gpuFinetune, /^gpu: opts\.backend = 'webgpu': finetune runs on the CPU backend/);
  assert.match(e.from, /^invalid: from\.checkpoints\.sft/);
  assert.match(e.checkpoint, /^invalid: checkpoint: /);
  assert.match(e.scratch, /^invalid: opts\.checkpoint = 'scratch'/);
  assert.match(e.corpus, /^invalid: opts\.corpus/);
  assert.deepEqual(r.first, { stopped: 'done', stage: 'sft', step: 2 });
  assert.deepEqual(r.at, { stage: 'rm', step: 0, done: false });
  assert.match(r.badStage, /opts\.stage = "dpo"/);
  assert.deepEqual(r.rest, { stopped: 'done', stage: 'ppo', step: 1 });
  assert.deepEqual(r.again, { stopped: 'done', stage: 'ppo', step: 1 });
  assert.equal(r.choice.backend, 'cpu');
  assert.match(r.choice.reason, /host/);
  assert.equal(r.recipes, 0);
  assert.deepEqual(problems, []);
});
