// The concept index: every concept has its name and definition in English and 中文 and points at a knob, view or
// lesson that exists; in the page the list filters, a knob's jump opens its group and focuses its control (or the
// control that makes it apply), a view's jump marks its section, and the KV-heads help names MHA, GQA and MQA.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launch, ROOT } from './util.mjs';
import { openPlayground } from './playground-helpers.mjs';
import { CONCEPTS } from '../../www/concepts.js';
import { BY_KEY } from '../../www/options.js';
import { en } from '../../www/strings/en.js';
import { zh } from '../../www/strings/zh.js';

test('every concept has both languages and points at a knob, view or lesson that exists', () => {
  const html = readFileSync(join(ROOT, 'index.html'), 'utf8');
  assert.ok(CONCEPTS.length >= 45, `${CONCEPTS.length} concepts`);
  assert.equal(new Set(CONCEPTS.map((c) => c.id)).size, CONCEPTS.length, 'ids are unique');
  for (const c of CONCEPTS) {
    for (const [lang, table] of [['en', en], ['zh', zh]]) {
      for (const k of ['name', 'def']) assert.ok(table[`concept.${c.id}.${k}`], `${lang}: concept.${c.id}.${k}`);
    }
    assert.notEqual(en[`concept.${c.id}.def`], zh[`concept.${c.id}.def`], `${c.id} is translated`);
    assert.ok(c.knob || c.view || c.lesson, `${c.id} points somewhere`);
    if (c.knob) assert.ok(BY_KEY[c.knob], `${c.id}: knob ${c.knob}`);
    if (c.view) assert.match(html, new RegExp(`<section id="${c.view}"`), `${c.id}: view ${c.view}`);
    if (c.lesson) assert.ok(existsSync(join(ROOT, 'www/lessons', `${c.lesson}.json`)), `${c.id}: lesson ${c.lesson}`);
  }
  // The KV-heads help names all three at every setting.
  for (const name of ['MHA', 'GQA', 'MQA']) {
    assert.match(en['opt.n_kv_heads.help'], new RegExp(name));
    assert.match(zh['opt.n_kv_heads.help'], new RegExp(name));
  }
});

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

test('the index lists, filters and jumps to knobs, views and lessons, in English and 中文', async () => {
  assert.equal(await page.locator('#concepts-list .concept').count(), CONCEPTS.length);
  await page.fill('#concepts-filter', 'multi-query');
  const shown = await page.$$eval('#concepts-list .concept', (els) => els.map((e) => e.dataset.concept));
  assert.ok(shown.includes('mqa') && shown.length < 5, shown.join());
  assert.match(await page.textContent('#concepts-count'), new RegExp(`${shown.length} of ${CONCEPTS.length} concepts`));
  // MQA's knob: the KV-heads control, its group opened and focused.
  await page.evaluate(() => { document.getElementById('opt-n_kv_heads').closest('details').open = false; });
  await page.click('#concepts-list [data-concept="mqa"] [data-knob]');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'opt-n_kv_heads');
  assert.equal(await page.evaluate(() => document.getElementById('opt-n_kv_heads').closest('details').open), true);
  // T5 span corruption's knob (the task) does not apply to a gpt: the jump goes to the architecture.
  await page.fill('#concepts-filter', '');
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().values.arch), 'gpt');
  await page.click('#concepts-list [data-concept="t5_span_corruption"] [data-knob]');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'opt-arch');
  // A view's jump marks its section.
  await page.click('#concepts-list [data-concept="flash_attention"] [data-view]');
  assert.equal(await page.evaluate(() => document.getElementById('sec-cost').classList.contains('jumped')), true);
  // A lesson's link opens the lesson (GQA and MQA: the KV-heads lesson).
  await page.click('#concepts-list [data-concept="gqa"] [data-lesson]');
  await page.waitForFunction(() => window.__tp.lessons().open === 'kv-heads', null, { timeout: 10000 });
  await page.click('#lang');
  assert.equal(await page.textContent('#h-concepts'), '概念索引');
  assert.match(await page.textContent('#concepts-list [data-concept="gqa"]'), /分组查询注意力/);
  await page.click('#lang');
  assert.deepEqual(problems, []);
});
