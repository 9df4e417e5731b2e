// The Lessons panel: it lists every lesson of www/lessons/index.json, each "not run"; `#lesson=<id>` opens one and
// sets up its runs, which differ from each other only in the lesson's knob (same seed, same data); running a
// lesson (at its test sizes, to be quick) trains its runs side by side and shows each run's metric with real
// numbers and each expected direction's outcome — the same outcome tests/lessons.rs asserts natively for kv-heads,
// whose comparisons are exact (KV bytes) or wide (the loss within 0.05) —; 中文 shows the lesson's Chinese texts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, launch, ROOT } from './util.mjs';
import { openPlayground, screenshot, makeSmall, setOption, trainTo, OUT } from './playground-helpers.mjs';

const INDEX = JSON.parse(readFileSync(join(ROOT, 'www/lessons/index.json'), 'utf8')).lessons;
const lesson = (id) => JSON.parse(readFileSync(join(ROOT, `www/lessons/${id}.json`), 'utf8'));

let browser;
let server;
before(async () => {
  browser = await launch();
  server = await startServer({ isolation: true });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('the panel lists every lesson; a link opens one and sets up its runs, differing only in its knob', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=norm-placement' });
  await page.waitForFunction((n) => document.querySelectorAll('#lesson-list li').length === n, INDEX.length, { timeout: 15000 });
  const listed = await page.$$eval('#lesson-list li', (lis) => lis.map((li) => [li.dataset.lesson, li.querySelector('.lesson-status').textContent]));
  assert.deepEqual(listed.map(([id]) => id), INDEX);
  assert.ok(listed.every(([, s]) => s === 'not run'), JSON.stringify(listed));

  const l = lesson('norm-placement');
  await page.waitForFunction((n) => window.__tp.runs.list().length === n, l.runs.length, { timeout: 15000 });
  assert.match(await page.textContent('#lesson-detail h3'), new RegExp(l.title.en.slice(0, 20).replace(/[()]/g, '.')));
  assert.match(await page.textContent('#lesson-detail .lesson-claim'), /Post-LN/);
  const cfgs = await page.evaluate(() => window.__tp.runs.list().map((r) => window.__tp.options.configFromValues(r.values)));
  assert.deepEqual(cfgs.map((c) => c.model.norm.placement), l.runs.map((r) => r.set['model.norm.placement']));
  // Only the knob differs: the configs are equal once it is taken out.
  const without = cfgs.map((c) => JSON.stringify({ ...c, model: { ...c.model, norm: { ...c.model.norm, placement: null } } }));
  assert.ok(without.every((c) => c === without[0]), 'the runs differ only in the placement');
  assert.equal(cfgs[0].model.n_layers, l.base.set['model.n_layers']);
  assert.match(page.url(), /#lesson=norm-placement/);

  // The button trains the lesson at its page sizes, all runs at once; paused before the end, it has no result.
  await page.click('#lesson-run');
  await page.waitForFunction((n) => window.__tp.runs.list().filter((r) => r.training).length === n, l.runs.length, { timeout: 30000 });
  assert.equal(await page.evaluate(() => window.__tp.lessons().lessons['norm-placement'].state), 'running');
  assert.equal(await page.textContent('#lesson-list li[data-lesson="norm-placement"] .lesson-status'), 'running…');
  assert.deepEqual(await page.evaluate(() => window.__tp.runs.list().map((r) => r.values.steps)), l.runs.map(() => l.base.set['train.steps']));
  await page.evaluate(() => Promise.all(window.__tp.runs.list().map((r) => window.__tp.runs.pause(r))));
  await page.waitForFunction(() => window.__tp.lessons().lessons['norm-placement'].state === 'stopped', null, { timeout: 30000 });
  assert.equal(await page.textContent('#lesson-list li[data-lesson="norm-placement"] .lesson-status'), 'stopped');
  assert.deepEqual(problems, []);
});

test('a link to a lesson that does not exist says so', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=no-such-lesson' });
  await page.waitForFunction(() => /no lesson “no-such-lesson”/.test(document.getElementById('notices').textContent), null, { timeout: 15000 });
  assert.equal(await page.evaluate(() => window.__tp.lessons().open), null);
  assert.deepEqual(problems, []);
});

test('a lesson run at its test sizes trains its runs side by side and shows the measured outcome; 中文', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=kv-heads' });
  const l = lesson('kv-heads');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('kv-heads', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['kv-heads']?.state === 'done', null, { timeout: 60000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['kv-heads'];
  // Three runs, same seed, their KV heads as the lesson says, each trained to the test sizes' last step.
  const runs = await page.evaluate(() => window.__tp.runs.list().map((r) => ({ v: r.values, steps: r.stepCount, status: r.status })));
  assert.deepEqual(runs.map((r) => r.v.n_kv_heads), l.runs.map((r) => r.set['model.n_kv_heads']));
  assert.ok(runs.every((r) => r.status === 'done' && r.steps === l.test.set['train.steps'] && r.v.seed === runs[0].v.seed), JSON.stringify(runs.map((r) => [r.status, r.steps])));
  // Real numbers: the KV bytes exact (2 · L · NKV · HS · 4), the losses finite and plausible for a char model.
  const hs = l.test.set['model.d_model'] / runs[0].v.n_heads;
  assert.deepEqual(result.runs.map((r) => r.metrics.kv_bytes_per_token), runs.map((r) => 2 * r.v.n_layers * r.v.n_kv_heads * hs * 4));
  for (const r of result.runs) assert.ok(r.metrics.final_val_loss > 1 && r.metrics.final_val_loss < 5, `val loss ${r.metrics.final_val_loss}`);
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  // … and the page shows them beside the claim.
  const cells = await page.$$eval('#lesson-detail td.metric', (tds) => tds.map((td) => td.textContent));
  assert.equal(cells.length, l.runs.length * l.metrics.length);
  assert.ok(cells.every((c) => /^\d/.test(c)), JSON.stringify(cells));
  assert.equal(await page.$$eval('#lesson-detail .lesson-checks li', (lis) => lis.length), l.expect.length);
  const status = await page.textContent('#lesson-list li[data-lesson="kv-heads"] .lesson-status');
  assert.match(status, /^result: /);
  await screenshot(page, 'lessons');

  await page.click('#lang');
  await page.waitForFunction(() => document.documentElement.lang === 'zh-CN');
  assert.equal(await page.textContent('#h-lessons'), '课程实验');
  assert.match(await page.textContent('#lesson-detail h3'), new RegExp(l.title.zh.slice(0, 6)));
  assert.match(await page.textContent('#lesson-detail .lesson-claim'), /^论断：/);
  assert.match(await page.textContent('#lesson-detail .lesson-result'), /最终验证损失/);
  // A reload keeps the result (not the runs), says when and at which sizes it was measured, in either language.
  await page.click('#lang');
  await page.reload();
  await page.waitForFunction(() => window.__tp?.lessons().lessons['kv-heads']?.state === 'done', null, { timeout: 15000 });
  assert.deepEqual((await page.evaluate(() => window.__tp.lessons())).lessons['kv-heads'].result, result);
  await page.waitForSelector('#lesson-detail .lesson-kept');
  assert.match(await page.textContent('#lesson-detail .lesson-kept'), /^Measured on .* at the lesson's small test sizes/);
  assert.match(await page.textContent('#lesson-list li[data-lesson="kv-heads"] .lesson-status'), /^result: /);
  assert.equal(await page.$$eval('#lesson-detail td.metric', (tds) => tds.length), l.runs.length * l.metrics.length);
  assert.deepEqual(problems, []);
});

test('a lesson measured on the trained model (attention entropy, √d_k) gives the outcome the native test asserts', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=sqrt-dk' });
  const l = lesson('sqrt-dk');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('sqrt-dk', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['sqrt-dk']?.state === 'done', null, { timeout: 60000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['sqrt-dk'];
  for (const r of result.runs) assert.ok(r.metrics.attention_entropy > 0 && r.metrics.attention_entropy <= 1, `entropy ${r.metrics.attention_entropy}`);
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.deepEqual(problems, []);
});

test('the [MASK] lesson: each bert run is scored on text without [MASK] (Run#evalAt with mlm), as the native test asserts', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=bert-mask' });
  const l = lesson('bert-mask');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('bert-mask', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['bert-mask']?.state === 'done', null, { timeout: 90000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['bert-mask'];
  // The runs are bert with the lesson's masking shares (the data knobs of the option table).
  const runs = await page.evaluate(() => window.__tp.runs.list().map((r) => ({ arch: r.values.arch, mask: r.values.mlm_mask, random: r.values.mlm_random })));
  assert.deepEqual(runs, l.runs.map((r) => ({ arch: 'bert', mask: r.set['data.mlm_mask'], random: r.set['data.mlm_random'] })));
  for (const r of result.runs) {
    assert.ok(r.metrics.val_loss_unmasked > 0.5 && r.metrics.val_loss_unmasked < 5, `unmasked ${r.metrics.val_loss_unmasked}`);
    assert.notEqual(r.metrics.val_loss_unmasked, r.metrics.final_val_loss);
  }
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.match(await page.textContent('#lesson-detail .lesson-result'), /no \[MASK\] in the input/);
  assert.deepEqual(problems, []);
});

test('the attention-cost lesson: each run’s attention measured at its shape, naive memory O(T²) and fused O(T)', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=attention-cost' });
  const l = lesson('attention-cost');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('attention-cost', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['attention-cost']?.state === 'done', null, { timeout: 90000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['attention-cost'];
  const m = result.runs.map((r) => r.metrics);
  // Per 4× in T: the naive path's memory ≈ 16× (its B·NH·T·T matrices dominate), the fused path's exactly 4×.
  for (const i of [1, 2]) {
    const naive = m[i].attn_naive_mib / m[i - 1].attn_naive_mib;
    assert.ok(naive > 12 && naive <= 16, `naive ×${naive}`);
    assert.ok(Math.abs(m[i].attn_flash_mib / m[i - 1].attn_flash_mib - 4) < 0.5, `fused ×${m[i].attn_flash_mib / m[i - 1].attn_flash_mib}`);
    assert.ok(m[i].attn_flops_share > m[i - 1].attn_flops_share);
  }
  for (const r of m) assert.ok(r.attn_naive_ms > 0 && r.attn_flash_ms > 0, JSON.stringify(r));
  // PagedAttention: 5 blocks of 16 (the prompt's shared, one per continuation) against 4 contiguous caches of ctx_len.
  assert.deepEqual(m.map((r) => r.kv_paged_share), [32, 128, 512].map((t) => (5 * 16) / (4 * t)));
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.deepEqual(problems, []);
});

test('the permutation lesson: without positions, reversing the text only reverses the attention (bert)', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=permutation' });
  const l = lesson('permutation');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('permutation', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons.permutation?.state === 'done', null, { timeout: 60000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons.permutation;
  const gap = Object.fromEntries(result.runs.map((r) => [r.id, r.metrics.permutation_gap]));
  assert.ok(gap.none < 1e-5, `no positions: gap ${gap.none} is rounding`);
  assert.ok(gap.learned > 1e-3, `learned positions: gap ${gap.learned}`);
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.deepEqual(problems, []);
});

test('the MoE lesson counts parameters with the core: more in all, the same per token (up to the router)', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=moe-vs-dense' });
  const l = lesson('moe-vs-dense');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('moe-vs-dense', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['moe-vs-dense']?.state === 'done', null, { timeout: 60000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['moe-vs-dense'];
  const [dense, moe] = result.runs.map((r) => r.metrics);
  const { experts } = l.runs[1].set['model.ffn.moe'];
  const layers = await page.evaluate(() => window.__tp.runs.list()[1].values.n_layers);
  const router = experts * l.test.set['model.d_model'] * layers; // one E×C router matrix in each layer
  assert.equal(dense.params_active, dense.params_total);
  assert.equal(moe.params_active - dense.params_active, router);
  assert.ok(moe.params_total > 2.5 * dense.params_total, JSON.stringify([dense, moe]));
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.deepEqual(problems, []);
});

test('the extrapolation lesson: the loss past ctx_len for each scheme, learned positions refused with the reason', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=extrapolation' });
  const l = lesson('extrapolation');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('extrapolation', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons.extrapolation?.state === 'done', null, { timeout: 90000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons.extrapolation;
  for (const r of result.runs) {
    for (const m of ['val_loss_2x', 'val_loss_4x']) {
      if (r.id === 'learned') {
        assert.equal(r.metrics[m], null);
        assert.match(r.refused[m], /model\.position = learned.*ctx_len = 16 rows/);
      } else {
        assert.ok(r.metrics[m] > 0 && Number.isFinite(r.metrics[m]), `${r.id} ${m}: ${r.metrics[m]}`);
        assert.equal(r.refused[m], undefined);
      }
    }
  }
  const cell = await page.textContent('#lesson-detail tr[data-run="learned"] td[data-metric="val_loss_4x"]');
  assert.match(cell, /^(refused: no positions past ctx_len|拒绝：ctx_len 之后没有位置)$/); // the language an earlier test chose
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  assert.deepEqual(problems, []);
});

test('the position-term lesson: pₜᵀpₛ of sinusoidal positions is relative, through the projections it is not; the attention panel draws both', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=position-terms' });
  const l = lesson('position-terms');
  await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
  await page.evaluate(() => window.__tp.runLesson('position-terms', { sizes: 'test' }));
  await page.waitForFunction(() => window.__tp.lessons().lessons['position-terms']?.state === 'done', null, { timeout: 60000 });
  const { result } = (await page.evaluate(() => window.__tp.lessons())).lessons['position-terms'];
  const m = Object.fromEntries(result.runs.map((r) => [r.id, r.metrics]));
  // Σ cos(ω(t − s)) is a function of t − s: its diagonals explain all of it, up to rounding.
  assert.ok(m.sinusoidal.pos_relative_raw > 0.9999, JSON.stringify(m));
  for (const r of Object.values(m)) assert.ok(r.pos_relative_projected >= 0 && r.pos_relative_projected < 0.9, JSON.stringify(m));
  assert.deepEqual(result.checks.map((c) => c.outcome), l.test.outcome, 'the outcome the native test asserts');
  // A check of two metrics of one run names both.
  const checks = await page.$$eval('#lesson-detail .lesson-checks li', (lis) => lis.map((li) => li.textContent));
  assert.match(checks[1], /(sinusoidal’s pₜᵀW_QᵀW_Kpₛ relative share lower than sinusoidal’s pₜᵀpₛ relative share|正弦位置 的pₜᵀW_QᵀW_Kpₛ 的相对占比低于 正弦位置 的pₜᵀpₛ 的相对占比)/);

  // The attention panel of the sinusoidal run: both maps, the readout the lesson's figures.
  await page.evaluate(() => window.__tp.runs.select(window.__tp.runs.list()[0]));
  await page.click('#att-refresh');
  await page.waitForFunction(() => !document.getElementById('att-pos').hidden && document.getElementById('pos-readout'), null, { timeout: 15000 });
  const view = await page.evaluate(() => ({
    raw: Number(document.getElementById('pos-readout').dataset.raw),
    heads: document.querySelectorAll('#pos-head option').length,
    sizes: ['pos-raw', 'pos-proj'].map((id) => document.getElementById(id).width),
    caption: document.querySelector('#pos-proj-fig figcaption').textContent,
  }));
  assert.ok(Math.abs(view.raw - m.sinusoidal.pos_relative_raw) < 1e-6, JSON.stringify(view));
  assert.equal(view.heads, await page.evaluate(() => window.__tp.runs.list()[0].values.n_heads));
  assert.ok(view.sizes.every((w) => w > 0));
  // The attention maps of the same run draw too: the sample text was cut to the lesson's ctx_len of 16.
  await page.waitForFunction(() => document.querySelectorAll('#att-grid canvas').length > 0 && document.getElementById('att-msg').textContent === '', null, { timeout: 15000 });
  await page.selectOption('#pos-head', '1');
  await page.waitForFunction(() => /(head|头) 1/.test(document.querySelector('#pos-proj-fig figcaption').textContent));
  await page.locator('#att-pos').screenshot({ path: join(OUT, 'position-terms.png') });
  // RoPE acts inside attention: no such term, and the view says why (the core's reason, naming the field).
  await page.click('#new-run');
  await makeSmall(page, { steps: 1 });
  await setOption(page, 'position', 'rope');
  await trainTo(page, 1);
  await page.click('#att-refresh');
  await page.waitForSelector('#pos-none', { timeout: 15000 });
  assert.match(await page.textContent('#pos-none'), /model\.position = rope.*only positions added to the input/);
  assert.deepEqual(problems, []);
});
