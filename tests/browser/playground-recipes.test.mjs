// The Recipes section (issue 18 "Page"): each recipe runs a few steps from the page with small knobs, and its
// stages, curves, results and samples appear with the run's numbers; Pause stops it mid-stage and Resume finishes
// it; a knob that is not a number, or one the engine refuses, gives a message naming the knob; "pretrain first"
// without a trained run says so; 中文 relabels the section. The knobs are set through the page's own inputs. A recipe
// lesson (issue 19) runs its recipes from the Lessons panel and gives the outcome tests/lessons.rs asserts natively.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, ROOT } from './util.mjs';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPlayground, OUT } from './playground-helpers.mjs';

let server, browser, page, problems;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
  ({ page, problems } = await openPlayground(browser.context, server.url, { viewport: { width: 1440, height: 1600 } }));
  await page.waitForFunction(() => window.__tp.getEngine() !== null, null, { timeout: 60000 });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** A picture of the section, in tests/out/. */
async function shot(name) {
  mkdirSync(OUT, { recursive: true });
  await page.locator('#sec-recipes').screenshot({ path: join(OUT, `${name}.png`) });
}

const snap = () => page.evaluate(() => window.__tp.recipes());

/** Picks recipe `kind` and waits for its knobs' defaults from the engine. */
async function pick(kind) {
  await page.click(`#rcp-pick [data-kind="${kind}"]`);
  await page.waitForFunction(() => [...document.querySelectorAll('#rcp-form input')].every((i) => i.value !== ''), null, { timeout: 30000 });
  assert.equal(await page.getAttribute(`#rcp-pick [data-kind="${kind}"]`, 'aria-pressed'), 'true');
}

/** Sets knobs through their inputs. */
async function setKnobs(knobs) {
  for (const [k, v] of Object.entries(knobs)) await page.fill(`#rcp-knob-${k}`, String(v));
}

/** Presses Run and waits until the recipe has run every stage. */
async function runToEnd(kind, timeout = 60000) {
  await page.click('#rcp-run');
  await page.waitForFunction((k) => ['done', 'failed'].includes(window.__tp.recipes().sessions[k]?.state), kind, { timeout });
  const s = (await snap()).sessions[kind];
  assert.equal(s.state, 'done', await page.textContent('#rcp-status'));
  return s;
}

/** The charts drawn now, by box id, with their point counts (after the section's next paint). */
async function charts() {
  await page.waitForTimeout(400); // the section redraws four times a second; the charts after uPlot loads
  return (await snap()).charts;
}

test('fine-tuning runs from the shipped pretrained model: accuracy and loss curves, held-out results', async () => {
  await pick('finetune');
  // The stages before a run: from the engine's description of the recipe.
  assert.deepEqual(await page.$$eval('#rcp-stages li', (lis) => lis.map((li) => li.dataset.stage)), ['finetune']);
  assert.equal(await page.inputValue('#rcp-start'), 'pretrained');
  await setKnobs({ steps: 4, aux_lm: 0.5 });
  const s = await runToEnd('finetune');
  assert.deepEqual(s.results, ['finetune']);
  const m = s.metrics.finetune;
  assert.ok(m.val_accuracy > 0 && m.val_accuracy <= 1, JSON.stringify(m));
  assert.ok(m.val_lm_loss > 0, JSON.stringify(m));
  const c = await charts();
  assert.ok(c['rcp-chart-finetune-accuracy'] >= 2, JSON.stringify(c)); // evaluations at step 0 and at the end
  assert.ok(c['rcp-chart-finetune-loss'] >= 4, JSON.stringify(c));
  // The numbers shown are the run's.
  const shown = await page.getAttribute('#rcp-results [data-metric="val_accuracy"]', 'data-value');
  assert.equal(Number(shown), m.val_accuracy);
  assert.equal(await page.getAttribute('#rcp-stages li', 'data-status'), 'done');
  // The knobs belong to the run now; Start over frees them.
  assert.equal(await page.isDisabled('#rcp-knob-steps'), true);
  await page.click('#rcp-reset');
  await page.waitForFunction(() => !document.getElementById('rcp-knob-steps').disabled);
  assert.equal(await page.inputValue('#rcp-knob-steps'), '4', 'what was typed stays');
});

test('a bad knob gives a message naming it; "pretrain first" without a trained run says so', async () => {
  await pick('rlhf');
  await setKnobs({ beta: 'abc' });
  await page.click('#rcp-run');
  assert.match(await page.textContent('#rcp-msg'), /β \(KL penalty\) = “abc”: must be a number/);
  assert.equal(await page.getAttribute('#rcp-knob-beta', 'aria-invalid'), 'true');
  // A number out of the engine's range: the engine's refusal, named by the knob's label.
  await setKnobs({ beta: -1 });
  await page.click('#rcp-run');
  await page.waitForFunction(() => document.getElementById('rcp-msg').textContent.includes('β (KL penalty)'), null, { timeout: 30000 });
  assert.match(await page.textContent('#rcp-msg'), /beta/);
  assert.equal(await page.getAttribute('#rcp-knob-beta', 'aria-invalid'), 'true');
  assert.equal((await snap()).sessions.rlhf.state, 'idle');
  await setKnobs({ beta: 0.05 });
  await page.selectOption('#rcp-start', 'run');
  await page.click('#rcp-run');
  await page.waitForFunction(() => document.getElementById('rcp-msg').textContent.includes('train a gpt'), null, { timeout: 10000 });
  await page.selectOption('#rcp-start', 'pretrained');
});

test('RLHF runs SFT → reward model → PPO with pause and resume; reward, KL and samples appear', async () => {
  await pick('rlhf');
  await setKnobs({ sft_steps: 3, rm_steps: 3, ppo_steps: 3, rollouts: 4, k: 2, beta: 0.05, gamma_ptx: 0 });
  await page.click('#rcp-run');
  // Pause as soon as a step of the first stage has been reported.
  await page.waitForFunction(() => window.__tp.recipes().sessions.rlhf?.step >= 1, null, { timeout: 60000 });
  await page.click('#rcp-pause');
  await page.waitForFunction(() => window.__tp.recipes().sessions.rlhf.state === 'paused', null, { timeout: 30000 });
  const paused = (await snap()).sessions.rlhf;
  assert.ok(paused.results.length < 3, JSON.stringify(paused));
  assert.match(await page.textContent('#rcp-status'), /Paused in/);
  assert.equal(await page.textContent('#rcp-run'), 'Resume');
  assert.equal(await page.$$eval('#rcp-stages li[aria-current="step"]', (l) => l.length), 1);
  const s = await runToEnd('rlhf');
  assert.deepEqual(s.results, ['sft', 'rm', 'ppo']);
  assert.ok(s.metrics.rm.rm_accuracy >= 0 && s.metrics.rm.rm_accuracy <= 1, JSON.stringify(s.metrics.rm));
  assert.ok(s.metrics.ppo.lm_loss > 0 && Number.isFinite(s.metrics.ppo.kl), JSON.stringify(s.metrics.ppo));
  const c = await charts();
  for (const id of ['rcp-chart-sft-loss', 'rcp-chart-rm-loss', 'rcp-chart-ppo-reward', 'rcp-chart-ppo-kl', 'rcp-chart-ppo-lm_loss']) {
    assert.ok(c[id] >= 2, `${id}: ${JSON.stringify(c)}`);
  }
  assert.deepEqual(await page.$$eval('#rcp-stages li', (lis) => lis.map((li) => li.dataset.status)), ['done', 'done', 'done']);
  // Samples before (SFT's first evaluation: the pretrained model) and after PPO.
  assert.ok(s.samples >= 2, JSON.stringify(s));
  const texts = await page.$$eval('#rcp-samples td', (tds) => tds.map((td) => td.textContent));
  assert.ok(texts.length > 0 && texts.every((x) => typeof x === 'string'));
  await shot('playground-recipes-rlhf');
});

test('zero-shot and in-context learning run; ICL\'s accuracy by k is drawn; 中文 relabels the section', async () => {
  await pick('zeroshot');
  await setKnobs({ steps: 3 });
  let s = await runToEnd('zeroshot', 90000);
  assert.deepEqual(s.results, ['pattern', 'baseline', 'eval']);
  assert.ok(Number.isFinite(s.metrics.eval.accuracy) && Number.isFinite(s.metrics.eval.baseline_accuracy), JSON.stringify(s.metrics.eval));
  let c = await charts();
  assert.ok(c['rcp-chart-pattern-loss'] >= 3 && c['rcp-chart-baseline-loss'] >= 3, JSON.stringify(c));
  assert.ok(s.samples >= 1, 'the questions and both models\' answers');

  await pick('icl');
  await setKnobs({ steps: 3 });
  s = await runToEnd('icl', 90000);
  assert.deepEqual(s.results, ['pretrain', 'eval']);
  c = await charts();
  assert.ok(c['rcp-chart-by-k'] >= 2, JSON.stringify(c)); // k = 0 … pairs − 1
  assert.ok(await page.locator('#rcp-results .rcp-heads').count() >= 1, 'the induction scores');

  await page.click('#lang');
  assert.equal(await page.textContent('#h-recipes'), '配方：预训练之后');
  assert.match(await page.textContent('#rcp-pick [data-kind="icl"]'), /上下文学习/);
  assert.match(await page.textContent('#rcp-status'), /完成/);
  await shot('playground-recipes-icl-zh');
  await page.click('#lang');
  assert.deepEqual(problems, []);
});

test('a recipe lesson runs its recipes side by side and gives the outcome the native test asserts', async () => {
  const lesson = JSON.parse(readFileSync(join(ROOT, 'www/lessons/finetune-aux-lm.json'), 'utf8'));
  const runsBefore = await page.evaluate(() => window.__tp.runs.list().length);
  await page.evaluate(() => window.__tp.runLesson('finetune-aux-lm', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['finetune-aux-lm']?.state === 'done', null, { timeout: 90000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['finetune-aux-lm'];
  assert.deepEqual(result.checks.map((c) => c.outcome), lesson.test.outcome);
  for (const r of result.runs) assert.ok(r.metrics.ft_lm_loss > 0 && r.metrics.ft_accuracy > 0, JSON.stringify(r));
  assert.equal(await page.evaluate(() => window.__tp.runs.list().length), runsBefore, 'the playground\'s runs stay');
  assert.match(await page.textContent('#lesson-detail .lesson-table'), /λ = 0\.5/);
  assert.deepEqual(problems, []);
});

test('a recipe lesson whose runs differ in their start runs one from fresh weights and one from the pretrained GPT', async () => {
  const lesson = JSON.parse(readFileSync(join(ROOT, 'www/lessons/finetune-pretrained.json'), 'utf8'));
  assert.deepEqual(lesson.runs.map((r) => r.checkpoint), ['scratch', 'pretrained']);
  await page.evaluate(() => window.__tp.runLesson('finetune-pretrained', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['finetune-pretrained']?.state === 'done', null, { timeout: 120000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['finetune-pretrained'];
  assert.deepEqual(result.checks.map((c) => c.outcome), lesson.test.outcome);
  const [scratch, pretrained] = result.runs.map((r) => r.metrics);
  // From fresh weights the model does not know the text: its held-out LM loss stays near ln 65 ≈ 4.17, the
  // pretrained one's far below (natively 4.05 and 3.21).
  assert.ok(scratch.ft_lm_loss > 3.8 && pretrained.ft_lm_loss < 3.6, JSON.stringify(result.runs));
  assert.deepEqual(problems, []);
});
