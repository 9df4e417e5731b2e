// <transformer-playground lesson="<id>">: a lesson embedded by id in a plain page (tests/browser/element.html),
// at its test sizes (sizes="test", to be quick): its text in English and 中文, its runs trained side by side, one
// curve per run in the run's colour with a legend naming the runs, `progress` events with the run's index, and the
// result — each run's metrics from its own history and each expected direction's outcome, the outcome
// tests/lessons.rs asserts natively for kv-heads (exact KV bytes; losses within 0.05) — in the widget's language;
// the playground page, training the same lesson, measures the same numbers — also those measured by probing the
// trained model (√d_k's attention entropy), and a lesson whose claim does not all show gives its why_not.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from './util.mjs';
import { en, zh } from '../../pkg/strings.js';
import { COLORS } from '../../pkg/chart.js';
import { openPlayground } from './playground-helpers.mjs';

const lesson = (id) => JSON.parse(readFileSync(join(ROOT, `www/lessons/${id}.json`), 'utf8'));

let server, browser;
before(async () => {
  server = await startServer({ isolation: false });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** The lesson widget's visible state. */
function view(page) {
  return page.evaluate(() => {
    const root = document.getElementById('l').shadowRoot;
    const text = (s) => root.querySelector(s)?.textContent ?? null;
    return {
      title: text('.title'), claim: text('.lesson .claim'), source: text('.lesson .source'), watch: text('.lesson .watch'),
      legend: [...root.querySelectorAll('.legend li')].map((li) => [li.textContent, li.querySelector('.swatch').style.background]),
      lines: [...root.querySelectorAll('polyline')].map((p) => [(p.getAttribute('points') || '').split(' ').filter(Boolean).length, p.style.stroke]),
      cells: [...root.querySelectorAll('.result tbody tr')].map((tr) => [tr.dataset.run, [...tr.querySelectorAll('td')].map((td) => [td.dataset.metric, td.dataset.value, td.textContent])]),
      checks: [...root.querySelectorAll('.result li')].map((li) => [li.dataset.outcome, li.textContent]),
      verdict: text('.result .verdict'), error: text('.error'), button: text('button'),
    };
  });
}

/** Lesson `id` trained at its test sizes by the playground page (its Lessons panel): the page's result. */
async function onThePage(id) {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: `#lesson=${id}` });
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate((id) => window.__tp.runLesson(id, { sizes: 'test' }), id);
  await page.waitForFunction((id) => window.__tp.lessons().lessons[id]?.state === 'done', id, { timeout: 60000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons[id];
  await page.close();
  assert.deepEqual(problems, []);
  return result;
}

/** A colour as the style reads it back (rgb(…)). */
const rgb = (hex) => `rgb(${[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(', ')})`;

/** Adds the widget `l` with these attributes, its events in window.events; resolves when its configs are checked. */
async function addLesson(page, attrs) {
  await page.evaluate((attrs) => {
    const el = document.createElement('transformer-playground');
    el.id = 'l';
    window.events = { progress: [], done: [], error: [] };
    for (const type of ['progress', 'done', 'error']) el.addEventListener(type, (e) => window.events[type].push(e.detail));
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    document.body.append(el);
  }, attrs);
  await page.waitForFunction(() => document.getElementById('l').config !== null, null, { timeout: 20000 });
}

test('a lesson by id: its text, its runs side by side with a legend, the result from their histories; 中文', async () => {
  const l = lesson('kv-heads');
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/element.html`);
  await addLesson(page, { lesson: 'kv-heads', sizes: 'test' });
  let v = await view(page);
  assert.equal(v.title, l.title.en);
  assert.deepEqual([v.claim, v.source, v.watch], [`${en['lessons.claim']} ${l.claim.en}`, `${en['lessons.source']} ${l.source.en}`, `${en['lessons.watch']} ${l.watch.en}`]);
  assert.deepEqual(v.legend, l.runs.map((r, i) => [r.label.en, rgb(COLORS[i])]));
  assert.equal(v.checks.length, 0, 'no result before training');

  const t0 = Date.now();
  await page.evaluate(() => document.getElementById('l').train());
  const ms = Date.now() - t0;
  const got = await page.evaluate(() => ({ events: window.events, result: document.getElementById('l').result, configs: document.getElementById('l').runs.map((r) => r.config) }));
  assert.deepEqual(got.events.error, []);
  // Each run: its knob as the lesson says, the test sizes, every step reported with its run's index.
  const steps = l.test.set['train.steps'];
  assert.deepEqual(got.configs.map((c) => [c.model.n_kv_heads, c.model.d_model, c.train.steps, c.train.seed]), l.runs.map((r) => [r.set['model.n_kv_heads'], l.test.set['model.d_model'], steps, got.configs[0].train.seed]));
  for (const i of l.runs.keys()) assert.equal(got.events.progress.filter((p) => p.run === i).length, steps, `run ${i}`);
  assert.equal(got.events.done.length, 1);
  const { result } = got.events.done[0];
  assert.deepEqual(result, got.result);
  // Real numbers: the KV bytes exact (2 · L · NKV · HS · 4); the final val loss the last validation loss the run
  // reported; the outcome that tests/lessons.rs asserts natively.
  assert.deepEqual(result.runs.map((r) => r.metrics.kv_bytes_per_token), got.configs.map((c) => 2 * c.model.n_layers * c.model.n_kv_heads * (c.model.d_model / c.model.n_heads) * 4));
  l.runs.forEach((run, i) => {
    const vals = got.events.progress.filter((p) => p.run === i && p.val_loss !== null);
    assert.equal(vals.at(-1).step, steps, 'validated at the last step');
    assert.equal(result.runs[i].metrics.final_val_loss, vals.at(-1).val_loss, run.id);
    assert.ok(vals.at(-1).val_loss > 1 && vals.at(-1).val_loss < 5, `val loss ${vals.at(-1).val_loss}`);
  });
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.equal(result.held, true);

  await page.waitForFunction(() => document.getElementById('l').shadowRoot.querySelectorAll('.result li').length > 0, null, { timeout: 5000 });
  v = await view(page);
  // One curve per run, in its colour, each to the last step; the table shows the metrics the result holds.
  assert.deepEqual(v.lines, l.runs.map((r, i) => [steps, rgb(COLORS[i])]));
  assert.deepEqual(v.cells, result.runs.map((r) => [r.id, l.metrics.map((m) => [m, String(r.metrics[m]), r.metrics[m].toFixed(m === 'kv_bytes_per_token' ? 0 : 3)])]));
  assert.deepEqual(v.checks.map(([o]) => o), l.test.outcome);
  assert.match(v.checks[0][1], new RegExp(`^${en['lessons.metric.kv_bytes_per_token']}: GQA .* — ${en['lessons.outcome.holds']}$`));
  assert.equal(v.verdict, en['lessons.verdict.held']);

  // 中文: the lesson's own Chinese texts, the run labels and the result in Chinese; the numbers stay.
  await page.evaluate(() => document.getElementById('l').setAttribute('lang', 'zh'));
  v = await view(page);
  assert.equal(v.title, l.title.zh);
  assert.deepEqual([v.claim, v.watch], [`${zh['lessons.claim']} ${l.claim.zh}`, `${zh['lessons.watch']} ${l.watch.zh}`]);
  assert.deepEqual(v.legend.map(([s]) => s), l.runs.map((r) => r.label.zh));
  assert.equal(v.button, zh['ctl.train']);
  assert.ok(v.checks.every(([, s]) => s.endsWith(zh['lessons.outcome.holds'])), JSON.stringify(v.checks));
  assert.equal(v.verdict, zh['lessons.verdict.held']);
  assert.equal(v.cells.length, l.runs.length);
  await page.close();
  assert.deepEqual(problems, []);

  // The playground page trains the same lesson at the same sizes: the same runs, so the same numbers.
  const onPage = await onThePage('kv-heads');
  assert.deepEqual(onPage.runs.map((r) => r.metrics), result.runs.map((r) => r.metrics), 'the page measured the same numbers');
  assert.deepEqual(onPage.checks, result.checks);
  console.log(`kv-heads at its test sizes: ${l.runs.length} runs × ${steps} steps in ${ms} ms; final val losses ${result.runs.map((r) => r.metrics.final_val_loss.toFixed(3)).join(' / ')}`);
});

test('a lesson measured on the trained model (√d_k: attention entropy by probe), which does not all hold: why_not', async () => {
  const l = lesson('sqrt-dk');
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/element.html`);
  await addLesson(page, { lesson: 'sqrt-dk', sizes: 'test' });
  await page.evaluate(() => document.getElementById('l').train());
  const { result } = await page.evaluate(() => window.events.done[0]);
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.equal(result.held, false);
  for (const r of result.runs) assert.ok(r.metrics.attention_entropy > 0 && r.metrics.attention_entropy < 1, `entropy ${r.metrics.attention_entropy}`);
  await page.waitForFunction(() => document.getElementById('l').shadowRoot.querySelector('.result .verdict'), null, { timeout: 5000 });
  assert.equal((await view(page)).verdict, `${en['lessons.verdict.notHeld']} ${l.why_not.en}`);
  await page.evaluate(() => document.getElementById('l').setAttribute('lang', 'zh'));
  assert.equal((await view(page)).verdict, `${zh['lessons.verdict.notHeld']} ${l.why_not.zh}`);
  await page.close();
  assert.deepEqual(problems, []);
  // The page probes the same way (pkg/lessons.js probeRun) and measures the same numbers.
  const onPage = await onThePage('sqrt-dk');
  assert.deepEqual(onPage.runs.map((r) => r.metrics), result.runs.map((r) => r.metrics));
});
