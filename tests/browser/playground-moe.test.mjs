// The Mixture-of-Experts FFN in the page: the "Mixtral-style MoE" preset trains; the expert-load table shows each
// MoE layer's shares (summing to 1) and follows training, with the balancing loss beside the loss; the summary
// and the shape flow give the parameters one token uses (fewer than all); the attention panel shows each token's
// k experts; the MoE knobs travel in the URL; top_k > experts gets the core's message naming the field, and Train
// stays off; the engine API carries it all (and a dense run none of it); an autosaved run's load comes back after a
// reload, a checkpoint's MoE knobs after a load; every string has its 中文 twin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { join } from 'node:path';
import { openPlayground, setOption, setOptions, trainTo, waitTrainable, screenshot, values, config, waitStopped, OUT } from './playground-helpers.mjs';
import { en } from '../../www/strings/en.js';
import { zh } from '../../www/strings/zh.js';

// Each test gets its own server, so its own origin: the autosave of one test is not restored in the next.
let browser;
const servers = [];
async function origin() {
  const s = await startServer({ isolation: true });
  servers.push(s);
  return s.url;
}
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
  for (const s of servers) await s.close();
});

/** The expert-load table as data: per layer row, the shares, the dropped count and the balance shown. */
function loadTable(page) {
  return page.evaluate(() => [...document.querySelectorAll('#expert-load tbody tr')].map((tr) => ({
    layer: tr.dataset.layer,
    shares: [...tr.querySelectorAll('td.share')].map((td) => Number(td.dataset.share)),
    text: [...tr.querySelectorAll('td.share')].map((td) => td.textContent),
    dropped: tr.querySelector('td.dropped').textContent,
  })));
}

test('the Mixtral-style preset trains; the expert load, the aux loss, active parameters and routing show', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await page.selectOption('#preset', 'mixtral-moe');
  const v = await values(page);
  assert.deepEqual([v.moe, v.experts, v.top_k, v.aux_loss, v.capacity_factor, v.activation], [true, 8, 2, 0.01, null, 'swiglu']);
  assert.deepEqual((await config(page)).model.ffn.moe, { experts: 8, top_k: 2, aux_loss: 0.01 });
  assert.match(await page.textContent('#preset-help'), /Mixtral/);
  await waitTrainable(page);

  // Total vs active: the summary and the shape flow's footer; the router's stage is named.
  assert.equal(await page.isVisible('#sum-active-box'), true);
  const flow = await page.evaluate(() => window.__tp.getEngine().shapeFlow(window.__tp.options.configFromValues(window.__tp.runs.selectedRun().values), 66));
  assert.ok(flow.active_params < flow.n_params, `active ${flow.active_params} < total ${flow.n_params}`);
  assert.match(await page.textContent('#sum-active-note'), /2 of 8 experts/);
  const shapes = await page.textContent('#shape-table');
  assert.match(shapes, /MoE router \(a score per expert\)/);
  assert.match(shapes, /FFN up ×8 experts, 2 per token/);
  assert.match(shapes, /Active per token/);
  assert.match(await page.textContent('#help-top_k'), /Mixtral \(Jiang et al\. 2024\)/);

  await setOptions(page, { steps: 4, eval_iters: 1, batch_size: 4 });
  assert.equal(await page.isVisible('#readout-aux-box'), true);
  // One step, then Train to the end: the table follows.
  await waitTrainable(page);
  await page.click('#step');
  await waitStopped(page, 1);
  await page.waitForFunction(() => /step 1/.test(document.getElementById('expert-note').textContent), null, { timeout: 10000 });
  const first = await loadTable(page);
  const firstStep = await page.evaluate(() => window.__tp.runs.selectedRun().history.load.step);
  await trainTo(page, 4);
  await page.waitForFunction(() => /step 4/.test(document.getElementById('expert-note').textContent), null, { timeout: 10000 });
  const rows = await loadTable(page);
  const rec = await page.evaluate(() => {
    const r = window.__tp.runs.selectedRun();
    return { aux: r.history.aux, load: r.history.load, last: r.last, n_layers: r.values.n_layers, balance: r.history.balance };
  });
  assert.equal(firstStep, 1);
  assert.equal(rec.load.step, 4);
  assert.equal(rows.length, rec.n_layers, 'a row per MoE layer');
  for (const r of rows) {
    assert.equal(r.shares.length, 8);
    const sum = r.shares.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `${r.layer}: shares sum to ${sum}`);
    assert.ok(r.text.every((s) => /%$/.test(s)));
    assert.equal(r.dropped, '0', 'no capacity, nothing dropped');
  }
  assert.deepEqual(rows.map((r) => r.shares), rec.load.layers.map((l) => l.load), 'the table shows the last step');
  assert.equal(first.length, rows.length);
  // The aux loss: every step has one, positive (α · Σ over layers of a balance ≥ 1), shown beside the loss.
  assert.equal(rec.aux.length, 4);
  assert.ok(rec.aux.every((a) => Number.isFinite(a) && a > 0), JSON.stringify(rec.aux));
  assert.equal(rec.last.expertLoad.length, rec.n_layers);
  assert.equal(await page.textContent('#readout-aux'), rec.last.auxLoss.toFixed(4));
  assert.ok(rec.balance.length === rec.n_layers && rec.balance.every((s) => s.length === 4), 'balance per layer per step');
  // The charts follow training a few times a second, each in a frame of its own: wait for them to draw step 4.
  await page.waitForFunction(() => window.__tp.charts().aux === 4 && window.__tp.charts().balance === 4, null, { timeout: 10000 }).catch(() => {});
  const points = await page.evaluate(() => window.__tp.charts());
  assert.equal(points.aux, 4);
  assert.equal(points.balance, 4);

  // The routing of the attention panel's sample text: every MoE layer, every token, k = 2 experts in 0..7.
  await page.waitForFunction(() => document.getElementById('sec-attention').dataset.step === '4', null, { timeout: 15000 });
  await page.waitForFunction(() => !document.getElementById('att-routes').hidden, null, { timeout: 10000 });
  const routes = await page.evaluate(() => {
    const table = document.querySelector('#routes-tables table');
    return {
      tokens: [...table.querySelectorAll('thead th.tok')].map((th) => th.textContent),
      rows: [...table.querySelectorAll('tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => [...td.querySelectorAll('.xp')].map((x) => ({ e: Number(x.dataset.e), w: Number(x.dataset.w) })))),
      title: table.querySelector('tbody td').title,
    };
  });
  const sample = await page.inputValue('#att-text');
  assert.equal(routes.tokens.join(''), sample.replaceAll(' ', '␣'));
  assert.equal(routes.rows.length, rec.n_layers);
  for (const row of routes.rows) {
    assert.equal(row.length, [...sample].length);
    for (const cell of row) {
      assert.equal(cell.length, 2, 'k experts per token');
      assert.notEqual(cell[0].e, cell[1].e);
      assert.ok(cell.every((x) => x.e >= 0 && x.e < 8));
      assert.ok(cell[0].w >= cell[1].w, 'best first');
      assert.ok(Math.abs(cell[0].w + cell[1].w - 1) < 1e-4, 'weights renormalised over the k');
    }
  }
  assert.match(routes.title, /^Layer 0, “T” \(position 0\): expert \d \(0\.\d\d\), expert \d \(0\.\d\d\)$/);

  await page.evaluate(() => document.getElementById('sec-charts').scrollIntoView());
  await screenshot(page, 'moe-training');
  await page.locator('#moe-charts').screenshot({ path: join(OUT, 'moe-load.png') });
  await page.locator('#sec-attention').screenshot({ path: join(OUT, 'moe-routes.png') });
  await page.locator('#sec-shapes').screenshot({ path: join(OUT, 'moe-shapes.png') });
  await page.evaluate(() => {
    document.getElementById('group-ffn').scrollIntoView();
  });
  await page.locator('#sec-config').screenshot({ path: join(OUT, 'moe-config.png') });
  // 中文: the same views in the other language.
  await page.click('#lang');
  await page.waitForFunction(() => document.documentElement.lang === 'zh-CN');
  assert.match(await page.textContent('#expert-note'), /第 4 步/);
  assert.match(await page.textContent('#shape-table'), /MoE 路由器/);
  assert.match(await page.textContent('#sec-attention h3'), /每个词元的专家/);
  await page.evaluate(() => document.getElementById('sec-charts').scrollIntoView());
  await screenshot(page, 'moe-training-zh');
  await page.click('#lang');
  await page.close();
  assert.deepEqual(problems, []);
});

test('a capacity factor drops assignments and the table counts them; after a reload the load is back; a checkpoint keeps the knobs', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await page.selectOption('#preset', 'mixtral-moe');
  // Top-1 with the tightest capacity: an expert takes ⌈1·1·tokens/8⌉, so an uneven router must drop some.
  await setOptions(page, { d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 2, batch_size: 4, steps: 2, eval_iters: 1, top_k: 1, capacity_factor: 1 });
  assert.match(await page.textContent('#help-top_k'), /Switch Transformer/);
  assert.deepEqual((await config(page)).model.ffn.moe, { experts: 8, top_k: 1, aux_loss: 0.01, capacity_factor: 1 });
  await trainTo(page, 2);
  await page.waitForFunction(() => /step 2/.test(document.getElementById('expert-note').textContent), null, { timeout: 10000 });
  const rows = await loadTable(page);
  const load = await page.evaluate(() => window.__tp.runs.selectedRun().history.load.layers);
  assert.equal(rows.length, 2);
  assert.deepEqual(rows.map((r) => r.dropped), load.map((l) => String(l.dropped)));
  assert.ok(load.some((l) => l.dropped > 0), `some assignments dropped: ${JSON.stringify(load.map((l) => l.dropped))}`);
  await page.waitForFunction(() => document.getElementById('sec-attention').dataset.step === '2', null, { timeout: 15000 });
  const ks = await page.evaluate(() => [...document.querySelectorAll('#routes-tables tbody td')].map((td) => td.querySelectorAll('.xp').length));
  assert.ok(ks.length > 0 && ks.every((k) => k === 1), 'one expert per token');

  // After a reload the autosaved runs come back with their expert load, balance and aux curves.
  await page.evaluate(() => window.__tp.autosave.saveNow());
  const before = await page.evaluate(() => {
    const h = window.__tp.runs.selectedRun().history;
    return { aux: h.aux, balance: h.balance, load: h.load };
  });
  await page.reload();
  await page.waitForFunction(() => window.__tp.runs.list().length === 1 && window.__tp.runs.list().every((r) => r.ready), null, { timeout: 30000 });
  await page.waitForFunction(() => /step 2/.test(document.getElementById('expert-note').textContent), null, { timeout: 10000 });
  const after = await page.evaluate(() => {
    const h = window.__tp.runs.selectedRun().history;
    return { aux: h.aux, balance: h.balance, load: h.load };
  });
  assert.deepEqual(after, before);
  assert.deepEqual((await loadTable(page)).map((r) => r.shares), before.load.layers.map((l) => l.load));
  // A checkpoint of it loads back as an MoE run with the same knobs.
  const loaded = await page.evaluate(async () => {
    const bytes = await window.__tp.runs.selectedRun().handle.save();
    const rec = await window.__tp.runs.loadCheckpoint(bytes);
    const v = rec.values;
    return [v.moe, v.experts, v.top_k, v.aux_loss, v.capacity_factor, rec.stepCount];
  });
  assert.deepEqual(loaded, [true, 8, 1, 0.01, 1, 2]);

  await page.close();
  assert.deepEqual(problems, []);
});

test('the MoE knobs round-trip through the URL; switched off, they leave the config and the link', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await waitTrainable(page);
  assert.equal(await page.isVisible('#opt-experts'), false, 'the MoE fields show only when it is on');
  assert.equal(await page.isVisible('#moe-charts'), false);
  await setOptions(page, { d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 2 });
  await setOption(page, 'moe', true);
  await setOptions(page, { experts: 6, top_k: 3, aux_loss: 0.05, capacity_factor: 1.25 });
  const hash = await page.evaluate(() => location.hash);
  const p = new URLSearchParams(hash.slice(1));
  assert.deepEqual(['moe', 'experts', 'top_k', 'aux_loss', 'capacity_factor'].map((k) => p.get(k)), ['1', '6', '3', '0.05', '1.25']);
  assert.deepEqual((await config(page)).model.ffn.moe, { experts: 6, top_k: 3, aux_loss: 0.05, capacity_factor: 1.25 });
  await waitTrainable(page);

  // A fresh page on the link: same values, same config, the controls show them.
  const { page: fresh, problems: freshProblems } = await openPlayground(browser.context, await origin(), { hash });
  await waitTrainable(fresh);
  assert.deepEqual((await config(fresh)).model.ffn.moe, { experts: 6, top_k: 3, aux_loss: 0.05, capacity_factor: 1.25 });
  assert.deepEqual(await fresh.evaluate(() => ['moe', 'experts', 'top_k', 'aux_loss', 'capacity_factor'].map((k) => {
    const el = document.getElementById(`opt-${k}`);
    return el.type === 'checkbox' ? el.checked : el.value;
  })), [true, '6', '3', '0.05', '1.25']);
  // No capacity: the field empties, its placeholder says so, and the link leaves it out.
  await setOption(fresh, 'capacity_factor', null);
  assert.equal(await fresh.getAttribute('#opt-capacity_factor', 'placeholder'), 'none');
  assert.equal(new URLSearchParams((await fresh.evaluate(() => location.hash)).slice(1)).get('capacity_factor'), null);
  assert.equal((await config(fresh)).model.ffn.moe.capacity_factor, undefined);
  // Off: a dense FFN again, and the MoE keys leave the link.
  await setOption(fresh, 'moe', false);
  assert.equal((await config(fresh)).model.ffn.moe, undefined);
  const off = new URLSearchParams((await fresh.evaluate(() => location.hash)).slice(1));
  assert.equal(off.get('moe'), '0');
  assert.equal(off.get('experts'), null);
  await waitTrainable(fresh);
  assert.equal(await fresh.isVisible('#sum-active-box'), false);
  await fresh.close();
  await page.close();
  assert.deepEqual([...problems, ...freshProblems], []);
});

test("top_k above experts shows the core's message naming the field, and Train stays off", async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await page.selectOption('#preset', 'mixtral-moe');
  await waitTrainable(page);
  await setOption(page, 'top_k', 9);
  await page.waitForFunction(() => document.getElementById('validation').classList.contains('bad'), null, { timeout: 10000 });
  assert.match(await page.textContent('#validation'), /model\.ffn\.moe\.top_k = 9: must be in 1\.\.=model\.ffn\.moe\.experts = 8/);
  assert.equal(await page.isDisabled('#train'), true);
  assert.equal(await page.isDisabled('#step'), true);
  assert.match(await page.getAttribute('[data-key="top_k"]', 'class'), /invalid/);
  assert.equal(await page.isVisible('#sum-active-box'), false);
  await page.evaluate(() => document.getElementById('group-ffn').scrollIntoView());
  await screenshot(page, 'moe-invalid');
  // One expert is no mixture: the core names experts.
  await setOption(page, 'top_k', 1);
  await setOption(page, 'experts', 1);
  await page.waitForFunction(() => /model\.ffn\.moe\.experts = 1/.test(document.getElementById('validation').textContent), null, { timeout: 10000 });
  assert.match(await page.getAttribute('[data-key="experts"]', 'class'), /invalid/);
  assert.equal(await page.isDisabled('#train'), true);
  await setOption(page, 'experts', 4);
  await waitTrainable(page);
  await page.close();
  assert.deepEqual(problems, []);
});

test('the engine API: MoE progress carries auxLoss and expertLoad, shapeFlow active_params, attention routes; a dense run has none of them', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await page.waitForFunction(() => !!window.__tp.getEngine(), null, { timeout: 60000 });
  const r = await page.evaluate(async () => {
    const engine = window.__tp.getEngine();
    // The configs as the page makes them (options.js), small.
    const { configFromValues, defaults } = window.__tp.options;
    const small = { d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 2, ctx_len: 16, batch_size: 2, eval_iters: 1, experts: 4, top_k: 2 };
    const cfg = (moe) => configFromValues({ ...defaults(), ...small, moe: !!moe });
    const corpus = 'to be or not to be, that is the question. '.repeat(20);
    const out = {};
    for (const [name, moe] of [['moe', true], ['dense', false]]) {
      const run = await engine.createRun(cfg(moe), { corpus });
      const p = await run.step();
      const flow = await engine.shapeFlow(cfg(moe), run.vocabSize);
      const att = await run.attention('to be');
      out[name] = { p, flow: { n: flow.n_params, active: flow.active_params, ids: flow.stages.map((s) => s.id) }, routes: att.routes, keys: Object.keys(p) };
      await run.dispose();
    }
    return out;
  });
  const { moe, dense } = r;
  assert.ok(Number.isFinite(moe.p.auxLoss) && moe.p.auxLoss > 0);
  assert.equal(moe.p.expertLoad.length, 2);
  for (const l of moe.p.expertLoad) {
    assert.match(l.layer, /^blocks\.\d$/);
    assert.equal(l.load.length, 4);
    assert.ok(Math.abs(l.load.reduce((a, b) => a + b, 0) - 1) < 1e-5);
    assert.equal(l.dropped, 0);
    assert.ok(l.balance > 0);
  }
  assert.ok(moe.flow.active < moe.flow.n);
  assert.ok(moe.flow.ids.includes('moe_router'));
  assert.deepEqual(moe.routes.map((x) => [x.stack, x.layer, x.k, x.experts.length, x.weights.length, x.dropped.length]), [['decoder', 0, 2, 10, 10, 10], ['decoder', 1, 2, 10, 10, 10]]);
  assert.equal(dense.p.auxLoss, undefined);
  assert.equal(dense.p.expertLoad, undefined);
  assert.ok(!dense.keys.includes('auxLoss') && !dense.keys.includes('expertLoad'));
  assert.equal(dense.flow.active, dense.flow.n);
  assert.ok(!dense.flow.ids.includes('moe_router'));
  assert.deepEqual(dense.routes, []);
  await page.close();
  assert.deepEqual(problems, []);
});

test('every string has its 中文 twin, and every MoE key is there', () => {
  assert.deepEqual(Object.keys(en).filter((k) => !(k in zh)), [], 'keys without a 中文 string');
  assert.deepEqual(Object.keys(zh).filter((k) => !(k in en)), [], '中文 keys without an English string');
  for (const k of ['opt.moe.label', 'opt.moe.help', 'opt.experts.label', 'opt.top_k.label', 'opt.top_k.d.top1', 'opt.top_k.d.topk',
    'opt.aux_loss.label', 'opt.capacity_factor.label', 'opt.capacity_factor.empty', 'preset.mixtral-moe', 'preset.d.mixtral-moe',
    'shp.s.moe_router', 'shp.moe', 'shp.active', 'sum.active', 'sum.active.note', 'ctl.aux', 'chart.aux', 'chart.balance',
    'chart.experts', 'chart.experts.help', 'att.routes', 'att.routes.cell']) {
    assert.ok(en[k] && zh[k] && en[k] !== zh[k], k);
  }
  // Citations in the help of the MoE knobs.
  assert.match(en['opt.moe.help'], /Shazeer et al\. 2017/);
  assert.match(en['opt.top_k.d.top1'], /Switch Transformer \(Fedus et al\. 2021\)/);
  assert.match(en['opt.top_k.d.topk'], /Mixtral \(Jiang et al\. 2024\)/);
  assert.match(en['opt.aux_loss.help'], /Fedus et al\. 2021/);
  assert.match(en['opt.capacity_factor.help'], /Fedus et al\. 2021/);
});
