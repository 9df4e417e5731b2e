// The memory budget on the page (issue 20 §2): the summary's "Memory budget" field sets the budget the engine
// checks configs against; a budget under the config's estimate makes the config invalid with the core's message
// (naming the fields to lower) and turns Train off; raising it makes the config valid again; a bad value is refused
// naming it and changes nothing; the choice is kept in this browser and applies again after a reload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, waitTrainable, screenshot } from './playground-helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

async function setBudget(page, value) {
  await page.fill('#mem-budget', String(value));
  await page.dispatchEvent('#mem-budget', 'change');
}

const verdict = (page) => page.evaluate(() => document.getElementById('validation').textContent);

test('the memory budget field: under the estimate invalid, over it valid, a bad value refused, kept across a reload', { timeout: 180000 }, async () => {
  const { page, problems } = await openPlayground(browser.context, server.url);
  await waitTrainable(page);
  assert.equal(await page.inputValue('#mem-budget'), '2');
  // The default preset's estimate is tens of MiB: 0.01 GiB (10 MiB) is under it.
  const estimate = await page.textContent('#sum-memory');
  await setBudget(page, 0.01);
  await page.waitForFunction(() => document.getElementById('validation').classList.contains('bad'), null, { timeout: 20000 });
  const refused = await verdict(page);
  assert.match(refused, /budget|GiB/i, `the refusal speaks of the budget: ${refused} (estimate ${estimate})`);
  assert.ok(await page.isDisabled('#train'), 'Train is off while the config is over the budget');
  await screenshot(page, 'memory-budget-refused');
  await setBudget(page, 1.5);
  await page.waitForFunction(() => document.getElementById('validation').classList.contains('good'), null, { timeout: 20000 });
  await waitTrainable(page);
  assert.equal(await page.inputValue('#mem-budget'), '1.5');
  // A bad value is refused naming it; the budget in force stays 1.5 GiB.
  await setBudget(page, 9);
  await page.waitForFunction(() => /gib = 9/.test(document.getElementById('validation').textContent), null, { timeout: 10000 });
  assert.equal(await page.getAttribute('#mem-budget', 'aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => localStorage.getItem('tp.memoryBudgetGiB')), '1.5');
  // Kept in this browser: after a reload the field and the engine have it.
  await page.reload();
  await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready', null, { timeout: 15000 });
  assert.equal(await page.inputValue('#mem-budget'), '1.5');
  await waitTrainable(page);
  await setBudget(page, 0.01);
  await page.waitForFunction(() => document.getElementById('validation').classList.contains('bad'), null, { timeout: 20000 });
  await setBudget(page, 2);
  await page.waitForFunction(() => document.getElementById('validation').classList.contains('good'), null, { timeout: 20000 });
  assert.deepEqual(problems, []);
  await page.close();
});
