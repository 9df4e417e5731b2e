// The Recipes section's view of the in-context-learning model's attention (issue 18 §3): after a tiny icl recipe
// (the page's smallest: 3 pretraining steps) has pretrained and been evaluated, every layer × head of the trained model appears
// as a map over the evaluation's first held-out episode, its induction score beside it, its cells named on hover
// (the query and key characters and the weight), the induction targets outlined; 中文 relabels it. The engine API
// behind it (recipe.attention) refuses bad input naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { serverAndBrowser } from './util.mjs';
import { openPlayground, OUT } from './playground-helpers.mjs';

const at = serverAndBrowser();

test('the icl recipe shows its trained model\'s attention per layer × head with induction scores, in en and 中文', async () => {
  const { page, problems } = await openPlayground(at.browser.context, at.server.url, { viewport: { width: 1440, height: 1600 } });
  await page.waitForFunction(() => window.__tp.getEngine() !== null, null, { timeout: 60000 });
  await page.click('#rcp-pick [data-kind="icl"]');
  await page.waitForFunction(() => [...document.querySelectorAll('#rcp-form input')].every((i) => i.value !== ''), null, { timeout: 30000 });
  await page.fill('#rcp-knob-steps', '3'); // the page's one icl knob; the evaluation is the shipped recipe's
  assert.equal(await page.locator('#rcp-attn canvas').count(), 0, 'no maps before the recipe has run');
  await page.click('#rcp-run');
  await page.waitForFunction(() => window.__tp.recipes().sessions.icl?.attention, null, { timeout: 120000 });
  const s = (await page.evaluate(() => window.__tp.recipes())).sessions.icl;
  assert.equal(s.state, 'done', await page.textContent('#rcp-status'));
  assert.deepEqual(s.attention, { episode: 0, maps: 2, heads: 4 }, JSON.stringify(s.attention));

  // One map per layer × head, each captioned with its layer, head and the evaluation's induction score.
  const report = await page.evaluate(() => window.__tp.recipes().sessions.icl.metrics.eval);
  const heads = await page.$$eval('#rcp-attn .rcp-attn-head', (fs) => fs.map((f) => ({
    layer: Number(f.dataset.layer), head: Number(f.dataset.head), score: Number(f.dataset.score), caption: f.querySelector('figcaption').textContent,
    canvases: f.querySelectorAll('canvas').length, label: f.querySelector('canvas').getAttribute('aria-label'),
  })));
  assert.equal(heads.length, 8);
  for (const [i, f] of heads.entries()) {
    assert.deepEqual([f.layer, f.head, f.canvases], [Math.floor(i / 4), i % 4, 1]);
    assert.ok(Number.isFinite(f.score) && f.score >= 0 && f.score <= 1, JSON.stringify(f));
    assert.match(f.caption, new RegExp(`layer ${f.layer} · head ${f.head} induction score ${String(Number(f.score.toPrecision(4))).replace('.', '\\.')}`));
    assert.match(f.label, /^Attention of layer \d, head \d over the episode ↵[a-f]>[A-F]\|/);
  }
  assert.equal(report['induction.best.score'], Math.max(...heads.map((f) => f.score)), 'the scores are the evaluation\'s');
  const episode = await page.textContent('#rcp-attn .rcp-attn-episode');
  assert.match(episode, /^Episode 0 \(.+\): ↵([a-f]>[A-F]\|){7}[a-f]>[A-F]/);

  // Hover: the characters of the query (row) and key (column) and the weight; an induction target is said so.
  const text = [...episode.split(': ')[1].slice(0, 32)];
  const canvas = page.locator('#rcp-attn canvas').first();
  await canvas.scrollIntoViewIfNeeded();
  const box = await canvas.boundingBox();
  const cell = (box.width - 16) / 32;
  // Row 10: the second pair's '>' (positions 0 ↵, 1 x, 2 >, 3 Y, 4 |, 5 x, 6 >); its target is 3, after the first '>'.
  assert.equal(text[6], '>');
  await page.mouse.move(box.x + 16 + 3.5 * cell, box.y + 16 + 6.5 * cell);
  const tip = await page.textContent('#rcp-attn .tooltip');
  assert.match(tip, new RegExp(`^> → ${text[3]}: 0\\.\\d{3} · where an induction head would look$`), tip);
  assert.match(await page.textContent('#rcp-attn .rcp-attn-readout'), /^Layer 0, head 0: “>” \(position 6\) attends to “[A-F]” \(position 3\)/);
  await page.mouse.move(box.x + 16 + 0.5 * cell, box.y + 16 + 6.5 * cell);
  assert.match(await page.textContent('#rcp-attn .tooltip'), /^> → ↵: 0\.\d{3}$/);
  mkdirSync(OUT, { recursive: true });
  await page.locator('#rcp-attn').screenshot({ path: join(OUT, 'playground-recipes-icl-attention.png') });

  await page.click('#lang');
  await page.waitForFunction(() => document.querySelector('#rcp-attn h3')?.textContent === '留出片段上的注意力');
  assert.equal(await page.locator('#rcp-attn canvas').count(), 8);
  assert.match(await page.textContent('#rcp-attn .rcp-attn-head figcaption'), /^第 0 层 · 头 0 归纳分数 /);
  assert.match(await page.textContent('#rcp-attn .rcp-attn-episode'), /^第 0 个片段（.+）：↵/);
  const zh = page.locator('#rcp-attn canvas').first(); // drawn again in the new language
  await zh.scrollIntoViewIfNeeded();
  const zbox = await zh.boundingBox();
  await page.mouse.move(zbox.x + 16 + 3.5 * cell, zbox.y + 16 + 6.5 * cell);
  assert.match(await page.textContent('#rcp-attn .tooltip'), /归纳头会看的位置$/);
  await page.locator('#rcp-attn').screenshot({ path: join(OUT, 'playground-recipes-icl-attention-zh.png') });
  await page.click('#lang');

  // The engine API: an episode past the evaluation's is the core's config error naming the field; a bad type is
  // refused before the engine; another recipe has no such view.
  const refusals = await page.evaluate(async () => {
    const engine = window.__tp.getEngine();
    const r = engine.recipes.find((x) => x.kind === 'icl');
    const err = (p) => p.then(() => null, (e) => ({ kind: e.kind, field: e.field, message: e.message }));
    const ft = await engine.createRecipe('finetune', { knobs: { steps: 1 } });
    const out = { past: await err(r.attention({ episode: 300 })), type: await err(r.attention({ episode: -1 })), other: await err(ft.attention()) };
    await ft.dispose();
    out.first = (await r.attention()).episode;
    return out;
  });
  assert.equal(refusals.past.kind, 'config');
  assert.equal(refusals.past.field, 'episode');
  assert.match(refusals.past.message, /episode = 300: must be in 0\.\.300/);
  assert.equal(refusals.type.kind, 'invalid');
  assert.match(refusals.type.message, /opts\.episode = -1/);
  assert.match(refusals.other.message, /only the icl recipe/);
  assert.equal(refusals.first, 0);
  assert.deepEqual(problems, []);
});
