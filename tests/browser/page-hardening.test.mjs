// The page keeps saying what is true: a Step and a Train pressed together leave a run that Pause can stop; a
// link whose option value is not allowed is refused with a notice naming the option (the default is kept);
// an empty Length says so; counts of one read in the singular.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, setOption, waitTrainable, values } from './playground-helpers.mjs';

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

test('Train pressed while a Step is under way leaves a training run that Pause stops', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url);
  // The default model, so that a step takes long enough for Train to come while it is under way.
  await setOption(page, 'steps', 100000);
  await waitTrainable(page);
  await page.click('#step');
  await page.waitForTimeout(30);
  await page.click('#train');
  // Whatever order the two finish in, the run ends up training, and says so.
  await page.waitForFunction(() => window.__tp.runs.selectedRun().stepCount > 3, null, { timeout: 60000 });
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().status), 'training');
  assert.equal(await page.isDisabled('#pause'), false);
  await page.click('#pause');
  await page.waitForFunction(() => !window.__tp.runs.selectedRun().training, null, { timeout: 30000 });
  const stopped = await page.evaluate(() => window.__tp.runs.selectedRun().stepCount);
  await page.waitForTimeout(500);
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().stepCount), stopped, 'Pause stopped the engine');
  assert.equal(await page.evaluate(() => window.__tp.runs.selectedRun().status), 'paused');
  // It goes on from there, with no message about the engine's own run ids.
  await page.click('#step');
  await page.waitForFunction((n) => window.__tp.runs.selectedRun().stepCount === n + 1, stopped);
  assert.doesNotMatch(await page.textContent('body'), /already training|pause it first/);
  await page.close();
  assert.deepEqual(problems, []);
});

for (const [hash, key, name, dflt] of [
  ['corpus=nope', 'corpus', 'Corpus', 'shakespeare'],
  ['bias=maybe', 'bias', 'Bias', true],
  ['d_model=Infinity', 'd_model', 'Width', 128],
  ['lr=1e309', 'lr', 'Learning rate', 1e-3],
  ['steps=-5', 'steps', 'Steps', 2000],
]) {
  test(`a link with ${hash} is refused with a notice naming the option, and the default is kept`, async () => {
    const { page, problems } = await openPlayground(browser.context, server.url, { hash: `#${hash}` });
    await page.waitForSelector(`#notices .notice[data-key="notice.badLink"]`, { timeout: 5000 });
    const text = await page.textContent('#notices');
    assert.ok(text.includes(name), `${text} names ${name}`);
    assert.ok(text.includes(hash.split('=')[1]), `${text} quotes the value`);
    assert.equal((await values(page))[key], dflt);
    await page.close();
    assert.deepEqual(problems, []);
  });
}

test('an empty Length says that it needs a number of characters', async () => {
  // A link, so that the page does not restore the session the tests above left.
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await makeSmall(page);
  await waitTrainable(page);
  await page.fill('#gen-length', '');
  await page.click('#gen-go');
  await page.waitForSelector('#gen-out .bad', { timeout: 5000 });
  assert.match(await page.textContent('#gen-out'), /Length/);
  const zh = await page.evaluate(async () => (await import('/www/strings/zh.js')).zh['use.noLength']);
  assert.match(zh, /长度/);
  await page.close();
  assert.deepEqual(problems, []);
});

test('a count of one is singular in English', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url);
  const s = await page.evaluate(async () => {
    const { t, setLang } = await import('/www/i18n.js');
    setLang('en', { remember: false });
    const out = [t('data.err.too_short', { chars: 1, need: 180 }), t('data.err.too_short', { chars: 2, need: 180 }), t('data.ok', { chars: 1, vocab: 1 })];
    setLang('zh', { remember: false });
    out.push(t('data.err.too_short', { chars: 1, need: 180 }));
    setLang('en', { remember: false });
    return out;
  });
  assert.match(s[0], /: 1 character, /);
  assert.match(s[1], /: 2 characters, /);
  assert.match(s[2], /1 character, 1 distinct/);
  assert.match(s[3], /只有 1 个字符/);
  await page.close();
  assert.deepEqual(problems, []);
});
