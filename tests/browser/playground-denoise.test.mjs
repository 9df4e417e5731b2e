// The encoder-decoder's denoising objectives in the page: the presets "T5 span corruption" and "BART infilling"
// train on Tiny Shakespeare, the task choice is in the data knobs (explained and cited, in English and Chinese)
// and in the URL, and the use panel shows a corrupted val example, the model's reconstruction and the truth.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { join } from 'node:path';
import { openPlayground, setOptions, setOption, trainTo, waitTrainable, screenshot, values, config, OUT } from './playground-helpers.mjs';

let server, browser, page, problems;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
  ({ page, problems } = await openPlayground(browser.context, server.url));
});
after(async () => {
  await browser?.close();
  await server?.close();
});

const PRESETS = {
  't5-span-corruption': { arch: 'encoder_decoder', task: 'span_corruption', corpus: 'shakespeare', norm: 'rmsnorm', activation: 'geglu', position: 'relative', ctx_len: 64 },
  'bart-infilling': { arch: 'encoder_decoder', task: 'text_infilling', corpus: 'shakespeare', placement: 'post', activation: 'gelu', position: 'learned', ctx_len: 64 },
};

async function fresh() {
  if ((await page.evaluate(() => window.__tp.runs.selectedRun().stepCount)) > 0) await page.click('#new-run');
}

for (const [name, expect] of Object.entries(PRESETS)) {
  test(`preset ${name}: a denoising run on Tiny Shakespeare trains, and the use panel reconstructs a val example`, async () => {
    await fresh();
    await page.selectOption('#preset', name);
    const v = await values(page);
    for (const [k, want] of Object.entries(expect)) assert.equal(v[k], want, `${name}: ${k}`);
    const cfg = await config(page);
    assert.equal(cfg.data.task, expect.task);
    assert.equal(cfg.data.digits, undefined, 'digits belong to the synthetic tasks only');
    // The corpus choice applies to the denoising tasks (and is in the URL), the digits do not.
    const shown = (key) => page.evaluate((k) => !document.querySelector(`.opt[data-key="${k}"]`).hidden, key);
    assert.equal(await shown('corpus'), true);
    assert.equal(await shown('digits'), false);
    const hash = new URLSearchParams((await page.evaluate(() => location.hash)).slice(1));
    assert.equal(hash.get('task'), expect.task);
    assert.equal(hash.get('corpus'), 'shakespeare');
    assert.equal(hash.get('digits'), null);
    await waitTrainable(page);
    assert.match(await page.textContent('#sum-params'), /\d/);
    // A few steps with a one-batch evaluation: the preset otherwise as it is.
    await setOptions(page, { steps: 3, eval_iters: 1 });
    await trainTo(page, 3);
    const losses = await page.evaluate(() => window.__tp.runs.selectedRun().history.loss);
    assert.equal(losses.length, 3);
    assert.ok(losses.every((l) => Number.isFinite(l) && l > 0), JSON.stringify(losses));
    // The attention panel reads a corrupted sample ([S0] / [MASK] in it) and the model's own decoding.
    await page.waitForFunction(() => document.getElementById('sec-attention').dataset.step === '3', null, { timeout: 60000 });
    const kinds = await page.evaluate(() => [...document.querySelectorAll('#att-which option')].map((o) => o.value));
    assert.deepEqual(kinds, ['encoder/self', 'decoder/self', 'decoder/cross']);

    assert.equal(await page.isVisible('#use-denoise'), true);
    assert.equal(await page.isVisible('#use-decode'), false);
    await page.fill('#den-seed', '3');
    await page.click('#den-go');
    // Done, and its parts drawn (the flag can be seen a frame before the source and truth are in place).
    await page.waitForFunction(() => document.getElementById('den-out').dataset.done === '1' && document.getElementById('den-source')
      && document.getElementById('den-truth'), null, { timeout: 60000 });
    const r = await page.evaluate(() => ({
      source: document.getElementById('den-source').textContent,
      specials: [...document.querySelectorAll('#den-source mark.special')].map((m) => m.textContent),
      truth: document.getElementById('den-truth').textContent,
      hidden: [...document.querySelectorAll('#den-truth mark.hidden')].map((m) => m.textContent).join(''),
      recon: document.getElementById('den-recon').textContent,
      target: document.getElementById('den-target')?.textContent ?? null,
      accuracy: document.getElementById('den-accuracy').textContent,
      written: document.querySelectorAll('#den-recon mark.filled, #den-recon mark.miss').length,
      reconNodes: document.getElementById('den-recon').childNodes.length,
    }));
    if (expect.task === 'span_corruption') {
      // ctx_len 64: 71 characters, 11 of them in 4 spans, each a sentinel in the input; the target lists them.
      assert.deepEqual(r.specials, ['[S0]', '[S1]', '[S2]', '[S3]']);
      assert.equal([...r.truth].length, 71);
      assert.equal([...r.hidden].length, 11);
      assert.ok(r.target.startsWith('[S0]') && r.target.endsWith('[S4]'), r.target);
    } else {
      assert.ok(r.specials.length >= 1 && r.specials.every((s) => s === '[MASK]'), JSON.stringify(r.specials));
      // ceil(0.3 n) characters hidden, each span behind one [MASK].
      assert.equal([...r.hidden].length, Math.ceil((3 * [...r.truth].length) / 10));
      assert.equal(r.target, null);
    }
    assert.ok(r.truth.includes(r.source.split(r.specials[0])[0]), 'the input is the truth with spans taken out');
    assert.match(r.accuracy, expect.task === 'span_corruption' ? /^\d+% of the hidden characters written right$/ : /^\d+% of the characters right$/);
    // What the model wrote is marked, right or wrong: all of infilling's output; span corruption's spans only (after
    // three steps the model may not have written any span yet).
    if (expect.task === 'text_infilling') assert.equal(r.written, r.reconNodes);
    // The same seed draws the same example.
    await page.evaluate(() => delete document.getElementById('den-out').dataset.done);
    await page.click('#den-go');
    await page.waitForFunction(() => document.getElementById('den-out').dataset.done === '1', null, { timeout: 60000 });
    assert.equal(await page.textContent('#den-truth'), r.truth);
    await page.locator('#sec-use').scrollIntoViewIfNeeded();
    await screenshot(page, `denoise-${name}`);
    await page.locator('#use-denoise').screenshot({ path: join(OUT, `denoise-view-${name}.png`) });
    assert.deepEqual(problems, []);
  });
}

test('the task knob explains the denoising objectives in English and Chinese, citing the papers', async () => {
  await fresh();
  await page.selectOption('#preset', 't5-span-corruption');
  const texts = await page.evaluate(async () => {
    const en = (await import('/www/strings/en.js')).en;
    const zh = (await import('/www/strings/zh.js')).zh;
    return { en, zh };
  });
  for (const lang of ['en', 'zh']) {
    const s = texts[lang];
    assert.match(s['opt.task.d.span_corruption'], /Raffel/);
    assert.match(s['opt.task.d.text_infilling'], /Lewis/);
    assert.match(s['opt.task.d.text_infilling'], /Poisson/);
    for (const k of ['opt.task.v.span_corruption', 'opt.task.v.text_infilling', 'preset.t5-span-corruption', 'preset.bart-infilling', 'use.den.go', 'use.den.truth']) {
      assert.ok(s[k], `${lang}: ${k}`);
    }
  }
  // Switching to the synthetic task hides the corpus and shows the digits again.
  await setOption(page, 'task', 'sort');
  const cfg = await config(page);
  assert.equal(cfg.data.task, 'sort');
  assert.equal(typeof cfg.data.digits, 'number');
  await setOption(page, 'task', 'text_infilling');
  assert.equal((await config(page)).data.task, 'text_infilling');
  assert.deepEqual(problems, []);
});

test('the engine API: specialTokens for a config, denoiseExample on a run (same seed, same example; null for a synthetic task)', async () => {
  await waitTrainable(page); // the engine has started
  const r = await page.evaluate(async () => {
    const e = window.__tp.getEngine();
    const json = async (p) => (await fetch(p)).json();
    const t5 = await json('configs/t5-span-corruption.json');
    const bart = await json('configs/bart-infilling.json');
    const corpus = await (await fetch('www/data/tinyshakespeare.txt')).text();
    const small = (c) => ({ ...c, model: { ...c.model, d_model: 32, n_encoder_layers: 1, n_decoder_layers: 1 }, train: { ...c.train, batch_size: 2 } });
    const out = { t5Specials: await e.specialTokens(t5), bartSpecials: await e.specialTokens(bart) };
    out.gptSpecials = await e.specialTokens(await json('configs/gpt-shakespeare.json'));
    const run = await e.createRun(small(t5), { corpus });
    await run.step();
    out.a = await run.denoiseExample({ seed: 5 });
    out.same = JSON.stringify(out.a) === JSON.stringify(await run.denoiseExample({ seed: 5 }));
    out.other = JSON.stringify(out.a) !== JSON.stringify(await run.denoiseExample({ seed: 6 }));
    out.bad = await run.denoiseExample({ seed: -1 }).then(() => null, (err) => err.kind);
    // Its checkpoint loads back with the corpus, at the same step, and reconstructs alike.
    const back = await e.loadRun(await run.save(), { corpus });
    out.loadedStep = back.stepCount;
    out.loadedSame = JSON.stringify(await back.denoiseExample({ seed: 5 })) === JSON.stringify(out.a);
    await back.dispose();
    await run.dispose();
    const synth = await e.createRun(await json('configs/t5-mini.json'));
    out.none = await synth.denoiseExample();
    await synth.dispose();
    out.noCorpus = await e.createRun(small(bart)).then(() => null, (err) => err.message);
    return out;
  });
  assert.deepEqual(r.t5Specials, ['[BOS]', '[S0]', '[S1]', '[S2]', '[S3]', '[S4]']);
  assert.deepEqual(r.bartSpecials, ['[BOS]', '[MASK]']);
  assert.deepEqual(r.gptSpecials, []);
  assert.equal(r.a.task, 'span_corruption');
  assert.equal(r.a.source.length, 64);
  assert.equal([...r.a.truth].length, 71);
  assert.equal(r.a.spans.length, 4);
  assert.equal(r.a.sourceSpecial.filter(Boolean).length, 4);
  assert.equal(r.a.target[0], '[S0]');
  assert.equal(r.a.reconTokens.join(''), r.a.reconstruction);
  assert.ok(r.a.charAccuracy >= 0 && r.a.charAccuracy <= 1);
  assert.ok(r.same && r.other);
  assert.equal(r.bad, 'invalid');
  assert.equal(r.loadedStep, 1);
  assert.ok(r.loadedSame, 'the loaded checkpoint reconstructs the same example alike');
  assert.equal(r.none, null);
  assert.match(r.noCorpus, /text|corpus/i);
  assert.deepEqual(problems, []);
});
