// The <transformer-playground> element (pkg/element.js) in a plain page with no bundler (tests/browser/element.html):
// every preset by name, real training with progress and done events, one engine Worker for several widgets, bad
// attributes shown and sent as `error` events (never an uncaught exception), 中文, the knobs, attribute changes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ROOT, startServer, launch, open } from './util.mjs';
import { PRESETS, presetConfig } from '../../pkg/presets.js';
import { en, zh } from '../../pkg/strings.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TINY } from './tiny.mjs';


let server, browser;
before(async () => {
  server = await startServer({ isolation: false });
  browser = await launch();
  // window.widgetWorkers counts the Workers the page starts (the engine's; its pool threads are started by the
  // engine Worker, not by the page).
  await browser.context.addInitScript(() => {
    window.widgetWorkers = 0;
    const Native = window.Worker;
    window.Worker = class extends Native {
      constructor(...args) {
        super(...args);
        window.widgetWorkers++;
      }
    };
  });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** Opens the fixture page (window.widgetWorkers: see before()). */
function openPage() {
  return open(browser.context, `${server.url}/tests/browser/element.html`);
}

/** Adds a widget with these attributes; records its events in window.events[id]. */
function add(page, id, attrs) {
  return page.evaluate(([id, attrs]) => {
    const el = document.createElement('transformer-playground');
    el.id = id;
    window.events ??= {};
    window.events[id] = { progress: [], done: [], error: [] };
    for (const type of ['progress', 'done', 'error']) el.addEventListener(type, (e) => window.events[id][type].push(e.detail));
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    document.body.append(el);
  }, [id, attrs]);
}

/** The widget's visible state: title, button, status, error text, knob names, chart points. */
function view(page, id) {
  return page.evaluate((id) => {
    const el = document.getElementById(id);
    const $ = (s) => el.shadowRoot.querySelector(s);
    return {
      title: $('.title').textContent, button: $('button').textContent, disabled: $('button').disabled,
      status: $('.status').textContent, error: $('.error').textContent, backend: $('.backend').textContent,
      knobs: [...el.shadowRoot.querySelectorAll('.knobs input')].map((i) => i.name),
      points: ($('polyline').getAttribute('points') || '').split(' ').filter(Boolean).length,
      config: el.config,
    };
  }, id);
}

const ready = (page, id) => page.waitForFunction((id) => {
  const el = document.getElementById(id);
  return el.config !== null || el.shadowRoot.querySelector('.error').textContent !== '';
}, id, { timeout: 20000 });

test('the plain page has the same presets as configs/ (one list: pkg/presets.js, generated)', () => {
  for (const name of PRESETS) assert.deepEqual(presetConfig(name), JSON.parse(readFileSync(join(ROOT, 'configs', `${name}.json`), 'utf8')));
  for (const name of PRESETS) assert.ok(en[`preset.${name}`] && zh[`preset.${name}`], `strings for preset ${name}`);
});

test('every preset by name: the widget takes its config, checked by the core, and names it', async () => {
  const { page, problems } = await openPage();
  for (const name of PRESETS) await add(page, name, { preset: name });
  for (const name of PRESETS) {
    await ready(page, name);
    const v = await view(page, name);
    assert.equal(v.error, '', `${name}: ${v.error}`);
    assert.deepEqual(v.config, presetConfig(name));
    assert.equal(v.title, en[`preset.${name}`]);
    assert.equal(v.button, 'Train');
    assert.equal(v.disabled, false);
  }
  // Nine widgets, one engine Worker.
  assert.equal(await page.evaluate(() => window.widgetWorkers), 1);
  await page.close();
  assert.deepEqual(problems, []);
});

test('a widget trains: progress events with finite, falling losses, then done', async (t) => {
  const { page, problems } = await openPage();
  await add(page, 'w', { config: JSON.stringify(TINY), steps: '40' });
  await ready(page, 'w');
  assert.equal((await view(page, 'w')).error, '');
  await page.evaluate(() => document.getElementById('w').shadowRoot.querySelector('button').click());
  await page.waitForFunction(() => window.events.w.done.length === 1, null, { timeout: 30000 });
  const ev = await page.evaluate(() => window.events.w);
  const steps = ev.progress.map((p) => p.step);
  assert.deepEqual(steps, Array.from({ length: 40 }, (_, i) => i + 1));
  const losses = ev.progress.map((p) => p.loss);
  assert.ok(losses.every(Number.isFinite), `finite: ${losses}`);
  const mean = (a) => a.reduce((s, x) => s + x, 0) / a.length;
  t.diagnostic(`loss: first 5 steps ${mean(losses.slice(0, 5)).toFixed(3)}, last 5 ${mean(losses.slice(-5)).toFixed(3)}`);
  assert.ok(mean(losses.slice(-5)) < mean(losses.slice(0, 5)) - 0.3, `the loss falls: ${losses.map((l) => l.toFixed(2))}`);
  // eval_interval 10: a validation loss at steps 10, 20, 30, 40 and null between.
  assert.deepEqual(ev.progress.filter((p) => p.val_loss !== null).map((p) => p.step), [10, 20, 30, 40]);
  assert.ok(ev.progress.filter((p) => p.val_loss !== null).every((p) => Number.isFinite(p.val_loss)));
  assert.deepEqual(ev.done, [{ step: 40, loss: losses.at(-1), val_loss: ev.progress.at(-1).val_loss }]);
  assert.deepEqual(ev.error, []);
  await page.waitForFunction(() => document.getElementById('w').shadowRoot.querySelector('polyline').getAttribute('points').split(' ').length === 40, null, { timeout: 5000 });
  const v = await view(page, 'w');
  assert.match(v.status, /^Step 40\/40 · Loss \d\.\d{3} · val \d\.\d{3} · Done: 40 steps\.$/);
  assert.equal(v.backend, 'WASM single thread');
  await page.close();
  assert.deepEqual(problems, []);
});

test('several widgets share one engine Worker and train together; an encoder-decoder trains on its task', async () => {
  const { page, problems } = await openPage();
  const seq2seq = {
    model: { ...TINY.model, arch: 'encoder_decoder', n_layers: undefined, n_encoder_layers: 1, n_decoder_layers: 1 },
    train: { batch_size: 8, steps: 6, lr: 3e-3, warmup: 1 }, data: { task: 'reverse', digits: 4 },
  };
  await add(page, 'a', { config: JSON.stringify(TINY), steps: '6' });
  await add(page, 'b', { config: JSON.stringify(seq2seq) });
  await add(page, 'c', { preset: 'bert-mini', controls: 'full' });
  for (const id of ['a', 'b', 'c']) await ready(page, id);
  await page.evaluate(() => Promise.all(['a', 'b'].map((id) => document.getElementById(id).train())));
  const ev = await page.evaluate(() => window.events);
  for (const id of ['a', 'b']) {
    assert.equal(ev[id].progress.length, 6, id);
    assert.ok(ev[id].progress.every((p) => Number.isFinite(p.loss)), id);
    assert.equal(ev[id].done.length, 1, id);
  }
  assert.equal(await page.evaluate(() => window.widgetWorkers), 1);
  await page.close();
  assert.deepEqual(problems, []);
});

test('bad attributes show the message in the widget and send an error event; fixing the attribute clears it', async () => {
  const { page, problems } = await openPage();
  const bad = {
    preset: [{ preset: 'gpt-7' }, 'invalid', /^preset = “gpt-7”: not a preset \(presets: gpt-shakespeare, .*gpt-recurrent\)$/],
    json: [{ config: '{"model": {' }, 'config', /^config: .*JSON/],
    core: [{ config: JSON.stringify({ ...TINY, model: { ...TINY.model, n_heads: 3 } }) }, 'config', /n_heads.*must divide model\.d_model = 32/],
    steps: [{ preset: 'gpt-shakespeare', steps: 'many' }, 'invalid', /^steps = “many”: must be a whole number/],
    backend: [{ preset: 'gpt-shakespeare', backend: 'tpu' }, 'invalid', /^backend = “tpu”: must be “cpu”, “webgpu”, “auto”$/],
    url: [{ config: 'no-such-config.json' }, 'io', /no-such-config\.json: HTTP 404/],
    sizes: [{ lesson: 'kv-heads', sizes: 'tiny' }, 'invalid', /^sizes = “tiny”: must be “page” or “test”$/],
    lesson: [{ lesson: 'attention-1' }, 'lesson', /^lesson = “attention-1”: no such lesson \(lessons: sqrt-dk, .*moe-vs-dense\)$/],
  };
  for (const [id, [attrs]] of Object.entries(bad)) await add(page, id, attrs);
  for (const [id, [, kind, message]] of Object.entries(bad)) {
    await ready(page, id);
    const v = await view(page, id);
    assert.match(v.error, message, id);
    assert.equal(v.disabled, true, `${id}: Train is off`);
    const errors = await page.evaluate((id) => window.events[id].error, id);
    assert.equal(errors.length, 1, id);
    assert.equal(errors[0].kind, kind, id);
    assert.equal(errors[0].message, v.error, id);
  }
  assert.equal((await page.evaluate(() => window.events.core.error[0])).field, 'model.n_heads');
  assert.deepEqual([(await view(page, 'preset')).title, (await view(page, 'lesson')).title], ['gpt-7', 'attention-1']);
  // The widget follows its attributes: a good preset clears the error.
  await page.evaluate(() => document.getElementById('preset').setAttribute('preset', 'llama-style'));
  await page.waitForFunction(() => document.getElementById('preset').config !== null, null, { timeout: 10000 });
  const v = await view(page, 'preset');
  assert.deepEqual([v.error, v.title, v.disabled], ['', en['preset.llama-style'], false]);
  await page.close();
  // The 404 of the missing config is the only complaint: the widget itself threw nothing.
  const others = problems.filter((p) => !/HTTP 404: .*no-such-config\.json|status of 404/.test(p));
  assert.deepEqual(others, []);
  assert.equal(problems.length - others.length, 2, problems.join('\n'));
});

test('lang="zh" shows Chinese, and switching lang re-labels the widget; controls="full" shows the knobs', async () => {
  const { page, problems } = await openPage();
  await add(page, 'zh', { preset: 'gpt-shakespeare', lang: 'zh', controls: 'full' });
  await ready(page, 'zh');
  let v = await view(page, 'zh');
  assert.deepEqual([v.title, v.button], [zh['preset.gpt-shakespeare'], zh['ctl.train']]);
  assert.deepEqual(v.knobs, ['model.d_model', 'model.n_layers', 'model.n_heads', 'train.lr', 'train.batch_size', 'train.steps']);
  const labels = () => page.evaluate(() => [...document.getElementById('zh').shadowRoot.querySelectorAll('.knobs label')].map((l) => l.firstChild.textContent));
  assert.deepEqual(await labels(), v.knobs.map((k) => zh[`opt.${k.split('.')[1]}.label`]));
  await page.evaluate(() => document.getElementById('zh').setAttribute('lang', 'en'));
  v = await view(page, 'zh');
  assert.deepEqual([v.title, v.button], [en['preset.gpt-shakespeare'], en['ctl.train']]);
  assert.equal((await labels())[0], en['opt.d_model.label']);
  // A knob changes the config the widget trains.
  await page.evaluate(() => {
    const input = document.getElementById('zh').shadowRoot.querySelector('input[name="model.d_model"]');
    input.value = '64';
    input.dispatchEvent(new Event('change'));
  });
  await page.waitForFunction(() => document.getElementById('zh').config?.model.d_model === 64, null, { timeout: 10000 });
  // controls="minimal" (the default) has none.
  await page.evaluate(() => document.getElementById('zh').setAttribute('controls', 'minimal'));
  assert.deepEqual((await view(page, 'zh')).knobs, []);
  await page.close();
  assert.deepEqual(problems, []);
});

test('served with COOP/COEP, the same plain page trains its widgets on the threaded build', async () => {
  const isolated = await startServer({ isolation: true });
  try {
    const { page, problems } = await open(browser.context, `${isolated.url}/tests/browser/element.html`);
    await add(page, 'w', { config: JSON.stringify(TINY), steps: '5' });
    await ready(page, 'w');
    await page.evaluate(() => document.getElementById('w').train());
    const got = await page.evaluate(async () => {
      const { sharedEngine } = await import('/pkg/element.js');
      return { build: (await sharedEngine()).info.build, steps: window.events.w.progress.length, backend: document.getElementById('w').run.backend };
    });
    assert.deepEqual(got, { build: 'threads', steps: 5, backend: 'wasm-threads' });
    assert.match((await view(page, 'w')).backend, /^WASM threads × \d+$/);
    await page.close();
    assert.deepEqual(problems, []);
  } finally {
    await isolated.close();
  }
});

test('backend="webgpu": the widget trains on WebGPU (SwiftShader here), its badge says so', async () => {
  const { page, problems } = await openPage();
  await add(page, 'g', { config: JSON.stringify(TINY), steps: '3', backend: 'webgpu' });
  await ready(page, 'g');
  await page.evaluate(() => document.getElementById('g').train());
  const got = await page.evaluate(() => ({ steps: window.events.g.progress.length, done: window.events.g.done.length, errors: window.events.g.error, backend: document.getElementById('g').run.backend }));
  assert.deepEqual(got, { steps: 3, done: 1, errors: [], backend: 'webgpu' });
  assert.equal((await view(page, 'g')).backend, 'WebGPU');
  await page.close();
  assert.deepEqual(problems, []);
});
