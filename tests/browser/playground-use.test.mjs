// Using the model in the page: a GPT streams sampled text (and the same seed gives the same text), a BERT ranks
// five fillers with probabilities for each [MASK], an encoder-decoder maps an input of its task to an output
// beside the right answer. Small models, a couple of steps: the point is the page, not the quality.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, trainTo, screenshot } from './playground-helpers.mjs';

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
