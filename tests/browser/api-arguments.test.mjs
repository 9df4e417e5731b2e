// Arguments the API refuses (issue 20): a wrong type or an out-of-range number is an EngineError of kind
// 'invalid' naming the argument, before anything reaches the core, and the engine stays usable after each one.
// Both builds: the threaded one once hung for good on a corpus that was not a string.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';

const SMALL = {
  model: {
    arch: 'gpt', d_model: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, ctx_len: 16,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 2, steps: 4, lr: 3e-3, eval_iters: 1 },
  seed: 3,
};
const CORPUS = 'to be or not to be, that is the question. '.repeat(20);

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

/** Every refusal in one page: name → { kind, message } (or what happened instead), plus a valid call after each. */
async function refusals(url) {
  const { page, problems } = await open(browser.context, `${url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async ({ config, corpus }) => {
    const engine = await window.tp.Engine.start();
    let restarts = 0;
    engine.on('restart', () => restarts++);
    const run = await engine.createRun(config, { corpus });
    const bytes = await run.save();
    // A call that neither settles nor rejects in 10 s is reported as 'hung', so the test fails instead of hanging.
    const outcome = (f) => Promise.race([
      Promise.resolve().then(f).then(
        () => ({ accepted: true }),
        (e) => ({ kind: e.kind, message: e.message, isEngineError: e instanceof window.tp.EngineError }),
      ),
      new Promise((ok) => setTimeout(() => ok({ hung: true }), 10000)),
    ]);
    const cases = {
      'createRun corpus 12345': () => engine.createRun(config, { corpus: 12345 }),
      'createRun corpus object': () => engine.createRun(config, { corpus: { text: 'abc' } }),
      'createRun opts null': () => engine.createRun(config, null),
      'createRun task 5': () => engine.createRun(config, { corpus, task: 5 }),
      'createRun seed -1': () => engine.createRun(config, { corpus, seed: -1 }),
      'createRun seed "7"': () => engine.createRun(config, { corpus, seed: '7' }),
      'createRun backend 5': () => engine.createRun(config, { corpus, backend: 5 }),
      'loadRun "hello"': () => engine.loadRun('hello'),
      'loadRun 123': () => engine.loadRun(123),
      'loadRun corpus 5': () => engine.loadRun(bytes, { corpus: 5 }),
      'shapeFlow -1': () => engine.shapeFlow(config, -1),
      'shapeFlow 1e12': () => engine.shapeFlow(config, 1e12),
      'shapeFlow 1.5': () => engine.shapeFlow(config, 1.5),
      'shapeFlow "65"': () => engine.shapeFlow(config, '65'),
      'checkText 12345': () => engine.checkText(12345),
      'checkText null': () => engine.checkText(null),
      'generate {a: 1}': () => run.generate({ a: 1 }),
      'generate null': () => run.generate(null),
      'generate 42': () => run.generate(42),
      'generate maxTokens "5"': () => run.generate('to', { maxTokens: '5' }),
      'generate maxTokens -1': () => run.generate('to', { maxTokens: -1 }),
      'generate maxTokens 2.5': () => run.generate('to', { maxTokens: 2.5 }),
      'generate temperature "hot"': () => run.generate('to', { temperature: 'hot' }),
      'generate temperature NaN': () => run.generate('to', { temperature: NaN }),
      'generate topK "3"': () => run.generate('to', { topK: '3' }),
      'generate topP null': () => run.generate('to', { topP: null }),
      'generate seed 1.5': () => run.generate('to', { seed: 1.5 }),
      'generate opts "x"': () => run.generate('to', 'x'),
      'generate onText 5': () => run.generate('to', {}, 5),
      'train steps "5"': () => run.train({ steps: '5' }),
      'train steps -1': () => run.train({ steps: -1 }),
      'train steps 0': () => run.train({ steps: 0 }),
      'train 5': () => run.train(5),
      'fillMask 5': () => run.fillMask(5),
      'fillMask k "2"': () => run.fillMask('to [MASK]', { k: '2' }),
      'fillMask k 0': () => run.fillMask('to [MASK]', { k: 0 }),
      'decode 5': () => run.decode(5),
      'decode maxTokens "3"': () => run.decode('12', { maxTokens: '3' }),
      'attention null': () => run.attention(null),
      'attention target 5': () => run.attention('to be', { target: 5 }),
      'evalAt "16"': () => run.evalAt('16'),
      'evalAt 0': () => run.evalAt(0),
      'evalAt 1.5': () => run.evalAt(1.5),
      'evalAt opts 5': () => run.evalAt(16, 5),
      'evalAt mlm "x"': () => run.evalAt(16, { mlm: 'x' }),
      'evalAt mlm.mask "0"': () => run.evalAt(16, { mlm: { mask: '0', random: 0 } }),
      'evalAt mlm without random': () => run.evalAt(16, { mlm: { mask: 0 } }),
      'evalAt mlm shares past 1': () => run.evalAt(16, { mlm: { mask: 0.7, random: 0.7 } }),
      'evalAt mlm on gpt': () => run.evalAt(16, { mlm: { mask: 0, random: 0 } }),
    };
    const out = {};
    for (const [name, f] of Object.entries(cases)) {
      const o = await outcome(f);
      // The engine still answers: a valid call right after each refusal.
      const after = await outcome(() => engine.shapeFlow(config, 30));
      out[name] = { ...o, usableAfter: !after.hung && after.accepted === true };
    }
    const text = await outcome(() => run.generate('to', { maxTokens: 3, temperature: 0 }));
    const trained = await outcome(() => run.train({ steps: 1 }));
    engine.terminate();
    return { out, text, trained, restarts };
  }, { config: SMALL, corpus: CORPUS });
  return { ...r, problems };
}

/** What each case must name in its message. */
const NAMES = {
  'createRun corpus 12345': /opts\.corpus.*string/, 'createRun corpus object': /opts\.corpus/,
  'createRun opts null': /opts.*object/, 'createRun task 5': /opts\.task.*string/, 'createRun seed -1': /opts\.seed/,
  'createRun seed "7"': /opts\.seed/, 'createRun backend 5': /backend/, 'loadRun "hello"': /bytes.*Uint8Array/,
  'loadRun 123': /bytes/, 'loadRun corpus 5': /opts\.corpus/, 'shapeFlow -1': /vocab.*integer/,
  'shapeFlow 1e12': /vocab/, 'shapeFlow 1.5': /vocab/, 'shapeFlow "65"': /vocab/, 'checkText 12345': /text.*string/,
  'checkText null': /text/, 'generate {a: 1}': /prompt.*string/, 'generate null': /prompt.*string/,
  'generate 42': /prompt/, 'generate maxTokens "5"': /opts\.maxTokens.*integer/, 'generate maxTokens -1': /opts\.maxTokens/,
  'generate maxTokens 2.5': /opts\.maxTokens/, 'generate temperature "hot"': /opts\.temperature.*number/,
  'generate temperature NaN': /opts\.temperature/, 'generate topK "3"': /opts\.topK/, 'generate topP null': /opts\.topP/,
  'generate seed 1.5': /opts\.seed/, 'generate opts "x"': /opts.*object/, 'generate onText 5': /onText.*function/,
  'train steps "5"': /opts\.steps.*integer/, 'train steps -1': /opts\.steps/, 'train steps 0': /opts\.steps/,
  'train 5': /opts.*object/, 'fillMask 5': /text.*string/, 'fillMask k "2"': /opts\.k/, 'fillMask k 0': /opts\.k/,
  'decode 5': /input.*string/, 'decode maxTokens "3"': /opts\.maxTokens/, 'attention null': /text.*string/,
  'attention target 5': /opts\.target.*string/, 'evalAt "16"': /^t\b.*integer/, 'evalAt 0': /^t\b/, 'evalAt 1.5': /^t\b/,
  'evalAt opts 5': /opts.*object/, 'evalAt mlm "x"': /opts\.mlm.*object/, 'evalAt mlm.mask "0"': /opts\.mlm\.mask.*number/,
  'evalAt mlm without random': /opts\.mlm\.random.*number/, 'evalAt mlm shares past 1': /mlm\.random.*at most 1/,
  'evalAt mlm on gpt': /bert.*model\.arch/,
};

for (const [build, url] of [['threads', () => isolated.url], ['single', () => plain.url]]) {
  test(`wrong argument types and ranges are refused as 'invalid', naming the argument, and the ${build} engine stays usable`, async () => {
    const { out, text, trained, restarts, problems } = await refusals(url());
    for (const [name, rule] of Object.entries(NAMES)) {
      const o = out[name];
      assert.ok(!o.hung, `${name}: never settled`);
      assert.ok(!o.accepted, `${name}: was accepted`);
      assert.equal(o.isEngineError, true, `${name}: not an EngineError: ${o.message}`);
      assert.equal(o.kind, 'invalid', `${name}: kind ${o.kind}: ${o.message}`);
      assert.match(o.message, rule, name);
      assert.ok(o.usableAfter, `${name}: the engine did not answer a valid call afterwards`);
    }
    assert.deepEqual(Object.keys(out).sort(), Object.keys(NAMES).sort());
    assert.equal(text.accepted, true, `generate after the refusals: ${text.message}`);
    assert.equal(trained.accepted, true, `train after the refusals: ${trained.message}`);
    assert.equal(restarts, 0, 'no refusal may crash (and restart) the engine');
    assert.deepEqual(problems, []);
  });
}
