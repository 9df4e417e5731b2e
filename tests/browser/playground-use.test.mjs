// Using the model in the page: a GPT streams sampled text (and the same seed gives the same text), a BERT ranks
// five fillers with probabilities for each [MASK], an encoder-decoder maps an input of its task to an output
// beside the right answer; N continuations side by side with the paged KV cache's block table, and Cancel. Small
// models, a couple of steps: the point is the page, not the quality.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, setOption, trainTo, screenshot, OUT } from './playground-helpers.mjs';

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

async function preset(name) {
  if ((await page.evaluate(() => window.__tp.runs.selectedRun().stepCount)) > 0) await page.click('#new-run');
  await page.selectOption('#preset', name);
  await makeSmall(page, { steps: 2 });
  await trainTo(page, 2);
}

test('GPT: the prompt is continued, streamed piece by piece, with the sampling options; a seed repeats it', async () => {
  await preset('gpt-shakespeare');
  assert.equal(await page.isVisible('#use-generate'), true);
  assert.equal(await page.isVisible('#use-mask'), false);
  await page.fill('#gen-prompt', 'KING:');
  await page.fill('#gen-length', '80');
  await page.fill('#gen-topk', '10');
  await page.fill('#gen-seed', '7');
  await page.$eval('#gen-temperature', (el) => {
    el.value = '1.2';
    el.dispatchEvent(new Event('input'));
  });
  assert.equal(await page.textContent('#gen-temperature-value'), '1.20');
  // Count the pieces as they arrive.
  await page.evaluate(() => {
    window.pieces = 0;
    new MutationObserver((ms) => {
      for (const m of ms) window.pieces += m.addedNodes.length;
    }).observe(document.getElementById('gen-out'), { childList: true, subtree: true });
  });
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  const first = await page.textContent('#gen-out .generated');
  assert.equal([...first].length, 80);
  assert.equal(await page.textContent('#gen-out .prompt-echo'), 'KING:');
  assert.ok(await page.evaluate(() => window.pieces) > 10, 'streamed in pieces');
  await page.evaluate(() => delete document.getElementById('gen-out').dataset.done);
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  assert.equal(await page.textContent('#gen-out .generated'), first, 'same seed, same text');
  // A character the model never saw: the engine's message, as text.
  await page.fill('#gen-prompt', '€');
  await page.click('#gen-go');
  await page.waitForFunction(() => /Error:/.test(document.getElementById('gen-out').textContent), null, { timeout: 10000 });
  assert.match(await page.textContent('#gen-out'), /not in the model's vocabulary/);
  assert.deepEqual(problems, []);
});

test('BERT: each [MASK] gets five fillers with probabilities', async () => {
  await preset('bert-mini');
  assert.equal(await page.isVisible('#use-mask'), true);
  await page.fill('#mask-text', 'To be, or not [MASK]o be: that [MASK]s');
  await page.click('#mask-go');
  await page.waitForFunction(() => document.getElementById('mask-out').textContent !== '', null, { timeout: 20000 });
  assert.equal(await page.locator('#mask-out .bad').count(), 0, await page.textContent('#mask-out'));
  const fills = await page.$$eval('#mask-out .mask-fill', (els) => els.map((el) => ({
    title: el.querySelector('.mask-title').textContent,
    cands: [...el.querySelectorAll('li')].map((li) => [li.querySelector('.tok').textContent, parseFloat(li.querySelector('.p').textContent)]),
  })));
  assert.equal(fills.length, 2);
  assert.match(fills[0].title, /position 14/);
  for (const f of fills) {
    assert.equal(f.cands.length, 5);
    const ps = f.cands.map(([, p]) => p);
    assert.ok(ps.every((p) => p > 0 && p <= 100));
    assert.deepEqual(ps, [...ps].sort((a, b) => b - a), 'ranked');
    assert.ok(ps.reduce((a, b) => a + b) <= 100.5);
  }
  await page.fill('#mask-text', 'no mask here');
  await page.click('#mask-go');
  assert.match(await page.textContent('#mask-out'), /at least one \[MASK\]/);
  await page.fill('#mask-text', 'To be, or not [MASK]o be: that [MASK]s');
  await page.click('#mask-go');
  await page.waitForSelector('#mask-out .mask-fill', { timeout: 20000 });
  await screenshot(page, 'bert-fill-mask');
  assert.deepEqual(problems, []);
});

test('encoder-decoder: an input of the task gives an output beside the right answer', async () => {
  await preset('t5-mini');
  assert.equal(await page.isVisible('#use-decode'), true);
  assert.equal(await page.inputValue('#dec-input'), '31415926');
  assert.match(await page.textContent('#dec-help'), /Digits to sort/);
  await page.click('#dec-go');
  await page.waitForSelector('#dec-out .dec', { timeout: 20000 });
  const out = await page.textContent('#dec-output');
  assert.equal(out.length, 8);
  assert.match(await page.textContent('#dec-out'), /Expected\s*11234569/);
  assert.match(await page.textContent('#dec-out .verdict'), /correct|not yet right/);
  await page.click('#dec-random');
  const random = await page.inputValue('#dec-input');
  assert.match(random, /^\d{8}$/);
  await page.click('#dec-go');
  await page.waitForFunction((inp) => {
    const dd = [...document.querySelectorAll('#dec-out dd')].map((d) => d.textContent);
    return dd.length === 2 && dd[1] === [...inp].sort().join('');
  }, random, { timeout: 20000 });
  // The original Transformer reverses.
  await preset('original-transformer');
  await page.fill('#dec-input', '123456');
  await page.click('#dec-go');
  await page.waitForFunction(() => /Expected\s*654321/.test(document.getElementById('dec-out').textContent), null, { timeout: 20000 });
  await screenshot(page, 'seq2seq');
  assert.deepEqual(problems, []);
});

test('GPT: N continuations side by side, the paged KV cache drawn as it fills, and Cancel', async () => {
  // Multi-query attention (2 heads, 1 KV head): the cache per position is half of MHA's.
  if ((await page.evaluate(() => window.__tp.runs.selectedRun().stepCount)) > 0) await page.click('#new-run');
  await page.selectOption('#preset', 'gpt-shakespeare');
  await makeSmall(page, { steps: 2 });
  await setOption(page, 'n_kv_heads', 1);
  await trainTo(page, 2);
  // A 12-character prompt in blocks of 4: three full blocks that every continuation shares.
  await page.fill('#gen-prompt', 'KING RICHARD');
  await page.fill('#gen-length', '40');
  await page.fill('#gen-seed', '3');
  await page.fill('#gen-n', '4');
  await page.fill('#gen-block', '4');
  assert.equal(await page.getAttribute('#gen-n', 'max'), '64', "the core's limit");
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  assert.equal(await page.isVisible('#gen-many'), true);
  assert.equal(await page.isVisible('#gen-out'), false);
  const cols = await page.$$eval('#gen-many .gen-cont', (els) => els.map((el) => ({
    head: el.querySelector('.cont-head').textContent,
    prompt: el.querySelector('.prompt-echo').textContent,
    text: el.querySelector('.generated').textContent,
  })));
  assert.equal(cols.length, 4);
  cols.forEach((c, i) => {
    assert.equal(c.head, `#${i} · seed ${3 + i}`);
    assert.equal(c.prompt, 'KING RICHARD');
    assert.equal([...c.text].length, 40);
  });
  // Side by side: the columns share a row.
  const tops = await page.$$eval('#gen-many .gen-cont', (els) => els.map((el) => el.getBoundingClientRect().top));
  assert.equal(tops[0], tops[1]);
  // The cache: the last step with live sequences (40 − 1 + 12 = 51 positions, 13 blocks each), the prompt's three
  // blocks shared by all four, bytes against the contiguous allocation, and the bytes per position beside MHA's.
  assert.equal(await page.getAttribute('#kv-view', 'data-state'), 'done');
  const kv = await page.evaluate(() => ({
    caption: document.getElementById('kv-caption').textContent,
    rows: [...document.querySelectorAll('#kv-seqs .kv-seq')].map((r) => [...r.querySelectorAll('.kv-block')].map((b) => [b.textContent, b.className])),
    pool: [...document.querySelectorAll('#kv-pool .kv-block')].map((b) => b.className),
    blocks: document.getElementById('kv-blocks').textContent,
    bytes: document.getElementById('kv-bytes').textContent,
    peak: document.getElementById('kv-peak').textContent,
    perPosition: document.getElementById('kv-per-position').textContent,
  }));
  assert.match(kv.caption, /51 positions each/);
  assert.equal(kv.rows.length, 4);
  for (const row of kv.rows) {
    assert.equal(row.length, 13);
    assert.deepEqual(row.slice(0, 3), kv.rows[0].slice(0, 3), 'the prompt blocks are the same physical blocks');
    assert.ok(row.slice(0, 3).every(([, cls]) => cls.includes('shared')));
    assert.ok(row.slice(3).every(([, cls]) => !cls.includes('shared')), 'blocks written after the fork are private');
  }
  // 3 shared + 4 × 10 private blocks in use.
  assert.equal(kv.pool.filter((c) => !c.includes('free')).length, 43);
  assert.match(kv.blocks, /^43 in use of \d+ allocated \(\d+ free\), 4 positions each$/);
  assert.match(kv.bytes, /KiB in blocks vs .*KiB for contiguous caches of ctx_len = 64 positions per sequence \(\d+%\)/);
  assert.match(kv.peak, /43 blocks/);
  // 2 layers × K and V × 1 KV head × head size 16 × 4 bytes; MHA's 2 KV heads would take twice.
  assert.match(kv.perPosition, /^256 B with 1 KV head \(MQA\); MHA, 2 KV heads, would take 512 B \(50% saved\)$/);
  await page.locator('#sec-use').screenshot({ path: join(OUT, 'use-n-continuations.png') });
  // 中文: the view is drawn again in the other language.
  await page.click('#lang');
  await page.waitForFunction(() => /续写结束前/.test(document.getElementById('kv-caption').textContent));
  assert.match(await page.textContent('#kv-per-position'), /1 个 KV 头（MQA）为 256 B/);
  await page.locator('#kv-view').screenshot({ path: join(OUT, 'use-kv-cache-zh.png') });
  await page.click('#lang');
  await page.waitForFunction(() => /^The last step/.test(document.getElementById('kv-caption').textContent));
  // Continuation 2 is the one-continuation text of seed 3 + 2.
  await page.fill('#gen-n', '1');
  await page.fill('#gen-seed', '5');
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  assert.equal(await page.isVisible('#gen-many'), false);
  assert.equal(await page.textContent('#gen-out .generated'), cols[2].text);
  // A long generation, watched live, then cancelled: what was generated stays, and the engine goes on.
  await page.fill('#gen-n', '8');
  await page.fill('#gen-length', '100000'); // the core's most: long enough to watch and cancel
  await page.click('#gen-go');
  await page.waitForSelector('#kv-view[data-state="live"]', { timeout: 30000 });
  assert.equal(await page.isEnabled('#gen-cancel'), true);
  assert.match(await page.textContent('#kv-caption'), /^Live: 8 sequences/);
  await page.locator('#kv-view').screenshot({ path: join(OUT, 'use-kv-cache-live.png') });
  await page.click('#gen-cancel');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  assert.equal(await page.getAttribute('#gen-out', 'data-stopped'), 'cancelled');
  assert.equal(await page.getAttribute('#kv-view', 'data-state'), 'cancelled');
  assert.equal(await page.isEnabled('#gen-cancel'), false);
  const lengths = await page.$$eval('#gen-many .generated', (els) => els.map((el) => [...el.textContent].length));
  assert.equal(lengths.length, 8);
  assert.ok(lengths.every((l) => l > 0 && l < 100000 && l === lengths[0]), `partial texts: ${lengths}`);
  assert.match(await page.textContent('#gen-many'), /Cancelled/);
  // A bad N: the engine's message, naming the field.
  await page.fill('#gen-n', '0');
  await page.fill('#gen-length', '10');
  await page.click('#gen-go');
  await page.waitForFunction(() => /Error:/.test(document.getElementById('gen-out').textContent), null, { timeout: 10000 });
  assert.match(await page.textContent('#gen-out'), /n = 0: must be an integer from 1 to 64/);
  await page.fill('#gen-n', '2');
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  assert.equal(await page.locator('#gen-many .gen-cont').count(), 2);
  assert.deepEqual(problems, []);
});
