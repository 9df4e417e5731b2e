// Every control of the configuration panel changes the config the engine gets, and the change survives a URL
// round trip (the hash is read back by a second page). An impossible combination shows the core's message
// inline and disables Train; the KV-heads label follows MHA / GQA / MQA.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, setOption, values, config, waitTrainable, screenshot } from './playground-helpers.mjs';
import { OPTIONS, applies } from '../../www/options.js';

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

/** The values of the options that apply (the others do not travel in a link, nor reach the config). */
function applying(v) {
  return Object.fromEntries(OPTIONS.filter((o) => applies(o, v)).map((o) => [o.key, v[o.key]]));
}

/** A value different from `v` for option `o` (not necessarily a sensible one: the point is that it travels). */
function another(o, v) {
  switch (o.type) {
    case 'choice':
      return o.key === 'corpus' ? 'sums' : o.choices.find((c) => c !== v);
    case 'bool':
      return !v;
    case 'int':
      return v + 1;
    case 'float':
      return v === 0 ? 0.1 : Number((v * 2).toPrecision(6));
    case 'optint':
      return 256;
    case 'optfloat':
      return 1.5;
  }
  throw new Error(o.type);
}

function getPath(cfg, path) {
  return path.split('.').reduce((x, k) => x?.[k], cfg);
}

test('each control changes the config and survives a URL round trip', async () => {
  const url = await origin();
  const { page, problems } = await openPlayground(browser.context, url);
  const { page: reader, problems: readerProblems } = await openPlayground(browser.context, url);
  const changed = [];
  for (const o of OPTIONS) {
    // Make the option apply (e.g. RoPE for theta, encoder-decoder for the layer counts).
    // (`when` may list alternatives: the first is made true.)
    for (const [k, allowed] of Object.entries((Array.isArray(o.when) ? o.when[0] : o.when) ?? {})) {
      if (!allowed.includes((await values(page))[k])) await setOption(page, k, allowed[0]);
    }
    const before = await values(page);
    assert.ok(applies(o, before), o.key);
    const v = another(o, before[o.key]);
    await setOption(page, o.key, v);
    const cfg = await config(page);
    if (o.path) assert.deepEqual(getPath(cfg, o.path), v, `${o.key} → config ${o.path}`);
    const hash = await page.evaluate(() => location.hash);
    const inHash = new URLSearchParams(hash.slice(1)).get(o.key);
    assert.equal(inHash, o.type === 'bool' ? (v ? '1' : '0') : String(v), `${o.key} in the URL`);
    changed.push(o.key);

    // The reader page takes the whole setup from the link.
    await reader.evaluate((h) => {
      location.hash = h;
    }, hash);
    await reader.waitForFunction(([k, want]) => window.__tp.runs.selectedRun().values[k] === want, [o.key, v], { timeout: 5000 });
    assert.deepEqual(applying(await values(reader)), applying(await values(page)), `${o.key}: the link reproduces the setup`);
    assert.deepEqual(await config(reader), await config(page), `${o.key}: the link reproduces the config`);
    const shown = await reader.evaluate(([id, type]) => {
      const el = document.getElementById(id);
      return type === 'bool' ? el.checked : el.value;
    }, [`opt-${o.key}`, o.type]);
    assert.equal(String(shown), o.type === 'bool' ? String(v) : String(v), `${o.key}: the reader's control shows it`);
  }
  assert.equal(changed.length, OPTIONS.length);

  // A fresh page opened on the last link builds the same config.
  const last = await page.evaluate(() => location.hash);
  const { page: fresh, problems: freshProblems } = await openPlayground(browser.context, await origin(), { hash: last });
  assert.deepEqual(applying(await values(fresh)), applying(await values(page)));
  assert.deepEqual(await config(fresh), await config(page));
  for (const p of [page, reader, fresh]) await p.close();
  assert.deepEqual([...problems, ...readerProblems, ...freshProblems], []);
});

test("an impossible config shows the core's message inline and disables Train", async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await waitTrainable(page);
  await setOption(page, 'n_heads', 5);
  await page.waitForFunction(() => document.getElementById('validation').classList.contains('bad'), null, { timeout: 10000 });
  const msg = await page.textContent('#validation');
  assert.match(msg, /model\.n_heads = 5: must divide model\.d_model = 128/);
  assert.equal(await page.isDisabled('#train'), true);
  assert.equal(await page.isDisabled('#step'), true);
  assert.equal(await page.getAttribute('[data-key="n_heads"]', 'class'), 'opt opt-int invalid');
  assert.equal(await page.textContent('#sum-params'), '—');
  await page.evaluate(() => {
    scrollTo(0, 0);
    document.getElementById('sec-config').scrollTo(0, 0);
  });
  await screenshot(page, 'invalid-config');

  // RoPE needs an even head size.
  await setOption(page, 'n_heads', 4);
  await setOption(page, 'd_model', 36);
  await setOption(page, 'n_heads', 4);
  await setOption(page, 'position', 'rope');
  await page.waitForFunction(() => /rope/.test(document.getElementById('validation').textContent), null, { timeout: 10000 });
  assert.match(await page.textContent('#validation'), /needs an even head size/);
  assert.equal(await page.getAttribute('[data-key="position"]', 'class'), 'opt opt-choice invalid');

  // Not a number: the page says so itself.
  await page.fill('#opt-lr', '');
  await page.dispatchEvent('#opt-lr', 'change');
  await page.waitForFunction(() => /Learning rate: enter a number/.test(document.getElementById('validation').textContent), null, { timeout: 5000 });

  // Fixed: valid again, Train back.
  await setOption(page, 'lr', 0.001);
  await setOption(page, 'position', 'learned');
  await setOption(page, 'd_model', 32);
  await waitTrainable(page);
  assert.match(await page.textContent('#validation'), /can be built/);
  await page.close();
  assert.deepEqual(problems, []);
});

test('the KV-heads label names MHA, GQA and MQA as the count changes; the live numbers follow', async () => {
  const { page, problems } = await openPlayground(browser.context, await origin());
  await waitTrainable(page);
  const tag = () => page.textContent('[data-key="n_kv_heads"] .tag');
  const params = () => page.textContent('#sum-params');
  assert.equal(await tag(), 'MHA');
  const mha = await params();
  await setOption(page, 'n_kv_heads', 2);
  assert.equal(await tag(), 'GQA');
  assert.match(await page.textContent('#help-n_kv_heads'), /2 query heads share each key\/value head/);
  await page.waitForFunction((p) => document.getElementById('sum-params').textContent !== p, mha, { timeout: 5000 });
  await setOption(page, 'n_kv_heads', 1);
  assert.equal(await tag(), 'MQA');
  await setOption(page, 'n_kv_heads', 3);
  assert.equal(await tag(), '?');
  // The choice explanations follow the choice, with the origin.
  await setOption(page, 'placement', 'sandwich');
  assert.match(await page.textContent('#help-placement'), /CogView/);
  await setOption(page, 'placement', 'deepnorm');
  assert.match(await page.textContent('#help-placement'), /DeepNet/);
  assert.equal(await page.isVisible('#opt-alpha'), true);
  await setOption(page, 'activation', 'swiglu');
  assert.match(await page.textContent('#help-activation'), /Shazeer 2020/);
  await setOption(page, 'position', 'rope');
  assert.match(await page.textContent('#help-position'), /RoFormer/);
  assert.equal(await page.isVisible('#opt-theta'), true);
  // Shape flow follows: K, V with NKV = 3 heads… (invalid) then 1.
  await setOption(page, 'n_kv_heads', 1);
  await page.waitForFunction(() => /\(B, NKV, T, HS\)/.test(document.getElementById('shape-table').textContent)
    && /12 × 1 × 64 × 32/.test(document.getElementById('shape-table').textContent), null, { timeout: 10000 });
  await page.close();
  assert.deepEqual(problems, []);
});
