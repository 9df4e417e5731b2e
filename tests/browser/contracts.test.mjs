// The contracts between the core and JS, in headless Chromium: every error reaches JS as an EngineError whose
// kind (and a config error's field, value and rule, a data error's reason) survives the Worker; the page decides
// on those properties, checks text with the core's own check, and draws its controls with the core's limits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';
import { openPlayground, setOption, makeSmall, trainTo, waitTrainable } from './playground-helpers.mjs';

// A small GPT, as in engine.test.mjs.
const SMALL = {
  model: {
    arch: 'gpt', d_model: 48, n_layers: 2, n_heads: 4, n_kv_heads: 2, ctx_len: 32,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 4, steps: 10, lr: 3e-3, eval_iters: 1 },
  seed: 7,
};

let server, browser;
const servers = [];
/** A server of its own for a page test, so its own origin: one test's autosave is not restored in the next. */
async function origin() {
  const s = await startServer({ isolation: true });
  servers.push(s);
  return s.url;
}
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
  for (const s of servers) await s.close();
});

async function harness() {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  return { page, problems };
}

test('a bad config rejects with kind config and the field, value and rule, after crossing the Worker', async () => {
  const { page, problems } = await harness();
  const r = await page.evaluate(async (config) => {
    const engine = await window.tp.Engine.start();
    const props = (e) => ({
      isError: e instanceof Error, isEngineError: e instanceof window.tp.EngineError, name: e.name,
      message: e.message, kind: e.kind, field: e.field, value: e.value, rule: e.rule,
    });
    const refuse = (model) => engine.createRun({ ...config, model: { ...config.model, ...model } }, { corpus: 'abc '.repeat(200) })
      .then(() => null, props);
    const heads = await refuse({ n_heads: 3, d_model: 64 });
    const limits = engine.limits;
    const wide = await refuse({ d_model: limits.fields['model.d_model'].maximum + 8 });
    const manyHeads = await refuse({ n_heads: limits.fields['model.n_heads'].maximum + 1 });
    const unparsed = await engine.validate({ ...config, model: { ...config.model, arch: 'rnn' } }).then(() => null, props);
    const notJson = await engine.createRun('{ not json').then(() => null, props);
    engine.terminate();
    return { heads, wide, manyHeads, unparsed, notJson, limits };
  }, SMALL);
  assert.deepEqual(r.heads, {
    isError: true, isEngineError: true, name: 'EngineError', kind: 'config', field: 'model.n_heads', value: '3',
    rule: 'must divide model.d_model = 64 (head size = d_model / n_heads)',
    message: 'invalid config: model.n_heads = 3: must divide model.d_model = 64 (head size = d_model / n_heads)',
  });
  // The limits are the core's, and the core enforces them naming the field.
  assert.deepEqual(r.limits.fields['model.d_model'], { minimum: 1, maximum: 8192 });
  assert.deepEqual(r.limits.fields['model.dropout'], { minimum: 0, exclusive_maximum: 1 });
  assert.deepEqual(r.limits.text, { max_bytes: 32 << 20, max_chars: 4096 });
  assert.equal(r.wide.kind, 'config');
  assert.equal(r.wide.field, 'model.d_model');
  assert.equal(r.wide.value, '8200');
  assert.equal(r.manyHeads.field, 'model.n_heads');
  assert.equal(r.manyHeads.rule, `must be at most ${r.limits.fields['model.n_heads'].maximum}`);
  // A config that does not parse is a config error without a field.
  assert.equal(r.unparsed.kind, 'config');
  assert.equal(r.unparsed.field, undefined);
  assert.match(r.unparsed.message, /unknown variant `rnn`/);
  assert.equal(r.notJson.kind, 'config');
  assert.deepEqual(problems, []);
  await page.close();
});

test('data, checkpoint, invalid and runtime errors carry their kind; checkText refuses what createRun refuses', async () => {
  const { page, problems } = await harness();
  const r = await page.evaluate(async (config) => {
    const engine = await window.tp.Engine.start();
    const props = (e) => ({ kind: e.kind, reason: e.reason, ...e, message: e.message });
    const many = Array.from({ length: 5000 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
    const texts = { empty: '', blank: ' \n\t '.repeat(20), binary: 'ab\u0001\u0002\u0003'.repeat(100), many };
    const refused = {};
    for (const [name, text] of Object.entries(texts)) {
      refused[name] = {
        check: await engine.checkText(text).then(() => null, props),
        create: await engine.createRun(config, { corpus: text }).then(() => null, props),
      };
    }
    const notUtf8 = await engine.checkText(new Uint8Array([0x61, 0x62, 0xff, 0xfe])).then(() => null, props);
    const large = await engine.checkText(new Uint8Array(engine.limits.text.max_bytes + 1).fill(0x61)).then(() => null, props);
    const fine = await engine.checkText('héllo\n');
    const short = await engine.createRun(config, { corpus: 'to be or not to be' }).then(() => null, props);
    const noCorpus = await engine.createRun(config).then(() => null, props);

    const corpus = 'to be or not to be, that is the question. '.repeat(40);
    const run = await engine.createRun(config, { corpus });
    await run.train({ steps: 2 });
    const bytes = await run.save();
    const unknownChar = await engine.loadRun(bytes, { corpus: `${corpus}Z` }).then(() => null, props);
    const corrupt = await engine.loadRun(bytes.slice(0, 100), { corpus }).then(() => null, props);
    const prompt = await run.generate('Q', { maxTokens: 2 }).then(() => null, props);
    const busy = run.train({ steps: 1000 });
    const training = await run.step().then(() => null, props);
    await run.pause();
    await busy;
    const runError = new Promise((ok) => run.on('error', ok));
    const panic = await engine._panicForTest(run).then(() => null, props);
    const event = props(await runError);
    await engine.ready();
    engine.terminate();
    return { refused, notUtf8, large, fine, short, noCorpus, unknownChar, corrupt, prompt, training, panic, event, maxBytes: engine.limits.text.max_bytes };
  }, SMALL);
  const reasons = { empty: 'empty', blank: 'empty', binary: 'control_characters', many: 'too_many_characters' };
  for (const [name, reason] of Object.entries(reasons)) {
    const { check, create } = r.refused[name];
    assert.equal(check.kind, 'data', name);
    assert.equal(check.reason, reason, name);
    assert.deepEqual(create, check, `${name}: createRun refuses it the same way`);
  }
  assert.equal(r.refused.many.check.distinct, 5000);
  assert.equal(r.refused.many.check.limit, 4096);
  assert.deepEqual([r.notUtf8.kind, r.notUtf8.reason, r.notUtf8.at], ['data', 'not_utf8', 2]);
  assert.deepEqual([r.large.reason, r.large.bytes, r.large.limit], ['too_large', r.maxBytes + 1, r.maxBytes]);
  assert.deepEqual(r.fine, { bytes: 7, chars: 6, distinct: 5 });
  assert.deepEqual([r.short.kind, r.short.reason, r.short.chars, r.short.need], ['data', 'too_short', 18, 340]);
  assert.deepEqual([r.noCorpus.kind, r.noCorpus.reason], ['data', 'no_text']);
  assert.deepEqual([r.unknownChar.kind, r.unknownChar.reason, r.unknownChar.character], ['data', 'not_in_vocabulary', 'Z']);
  assert.equal(r.corrupt.kind, 'checkpoint');
  assert.equal(r.prompt.kind, 'invalid');
  assert.equal(r.training.kind, 'invalid');
  assert.equal(r.panic.kind, 'runtime');
  assert.match(r.panic.message, /panic requested by a test/);
  assert.equal(r.event.kind, 'runtime');
  // The panic hook logs the requested panic; nothing else goes wrong.
  assert.deepEqual(problems.filter((p) => !/panic requested by a test/.test(p)), []);
  await page.close();
});

test("the page draws its controls with the core's limits and says the core's text check in its own words", async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await waitTrainable(page);
  const bounds = await page.evaluate(() => {
    const f = window.__tp.getEngine().limits.fields;
    const attr = (key) => ['min', 'max'].map((a) => document.getElementById(`opt-${key}`).getAttribute(a));
    return {
      core: ['model.d_model', 'model.n_heads', 'train.batch_size', 'train.betas[1]'].map((k) => [f[k].minimum, f[k].maximum ?? f[k].exclusive_maximum]),
      page: ['d_model', 'n_heads', 'batch_size', 'beta2'].map(attr),
    };
  });
  assert.deepEqual(bounds.page, bounds.core.map(([lo, hi]) => [String(lo), String(hi)]));
  assert.deepEqual(bounds.page[0], ['1', '8192']);

  // The shape-flow rows are coloured by the stages' kinds.
  const kinds = await page.$$eval('#shape-table tbody tr', (rows) => rows.map((tr) => tr.className));
  assert.equal(kinds[0], 'k-input');
  assert.equal(kinds.at(-1), 'k-head');
  assert.ok(kinds.includes('k-attention') && kinds.includes('k-ffn') && kinds.includes('k-norm'), kinds.join(' '));

  // Your own text: refused by the core, said by the page (in English and in 中文).
  await setOption(page, 'corpus', 'custom');
  const many = Array.from({ length: 5000 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
  await page.fill('#custom-text', many);
  await page.click('#custom-use');
  await page.waitForFunction(() => document.getElementById('custom-msg').classList.contains('bad'));
  assert.equal(await page.textContent('#custom-msg'), 'The text has 5000 distinct characters; a character vocabulary holds at most 4096.');
  await page.click('#lang');
  assert.equal(await page.textContent('#custom-msg'), '文本含有 5000 个不同字符；字符词表最多容纳 4096 个。');
  await page.click('#lang');
  assert.match(await page.textContent('#custom-limit'), /32\.0 MiB/);
  await page.close();
  assert.deepEqual(problems, []);
});

test('a checkpoint is loaded with the built-in corpus whose characters it knows, tried in turn on data errors', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await setOption(page, 'corpus', 'sums');
  await makeSmall(page, { steps: 1 });
  await trainTo(page, 1);
  const bytes = await page.evaluate(async () => [...await window.__tp.runs.selectedRun().handle.save()]);
  // The selected run now trains on Shakespeare, whose characters a model of sums does not know: that corpus is
  // refused with a data error, and the next one is tried.
  await page.click('#new-run');
  await setOption(page, 'corpus', 'shakespeare');
  const loaded = await page.evaluate(async (b) => {
    const rec = await window.__tp.runs.loadCheckpoint(new Uint8Array(b));
    return { corpus: rec.values.corpus, step: rec.stepCount };
  }, bytes);
  assert.deepEqual(loaded, { corpus: 'sums', step: 1 });
  await page.close();
  assert.deepEqual(problems, []);
});

test('after a reload, a run on your own text comes back once the engine has checked the text again', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await setOption(page, 'corpus', 'custom');
  const text = 'the cat sat on the mat. the dog sat on the log.\n'.repeat(30);
  await page.fill('#custom-text', text);
  await page.click('#custom-use');
  await makeSmall(page, { steps: 2 });
  await setOption(page, 'ctx_len', 16);
  await trainTo(page, 2);
  const losses = await page.evaluate(() => window.__tp.runs.selectedRun().history.loss);
  await page.evaluate(() => window.__tp.autosave.saveNow());
  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready');
  await page.waitForFunction(() => window.__tp.runs.selectedRun()?.ready, null, { timeout: 30000 });
  const back = await page.evaluate(() => {
    const r = window.__tp.runs.selectedRun();
    return { corpus: r.values.corpus, step: r.stepCount, losses: r.history.loss };
  });
  assert.deepEqual(back, { corpus: 'custom', step: 2, losses }, 'restored from its checkpoint, not rebuilt');
  assert.equal(await page.inputValue('#custom-text'), text);
  assert.match(await page.textContent('#custom-msg'), /Using your text/);
  await page.close();
  assert.deepEqual(problems, []);
});
