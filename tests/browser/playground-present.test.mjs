// Teacher mode: a lesson link with &present opens the projector layout (larger type; only the lessons, the runs and
// their charts), the Present button leaves and re-enters it and the link keeps it; 中文. Offline after the first
// visit is checked in playground-offline.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground } from './playground-helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

/** What shows: the layout flag, the root font size, which sections are visible, the button and the hash. */
function layout(page) {
  return page.evaluate(() => {
    const shown = (id) => { const el = document.getElementById(id); return !!el && el.offsetParent !== null; };
    return {
      present: document.documentElement.hasAttribute('data-present'),
      font: parseFloat(getComputedStyle(document.documentElement).fontSize),
      sections: ['sec-config', 'sec-lessons', 'sec-runs', 'sec-charts', 'sec-attention', 'sec-use', 'sec-step'].filter(shown),
      button: document.getElementById('present').textContent,
      pressed: document.getElementById('present').getAttribute('aria-pressed'),
      hash: location.hash,
    };
  });
}

test('a lesson link with &present opens the projector layout; the button leaves and re-enters it', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#lesson=kv-heads&present' });
  await page.waitForFunction(() => window.__tp.lessons().open === 'kv-heads', null, { timeout: 15000 });
  let l = await layout(page);
  assert.equal(l.present, true);
  assert.deepEqual(l.sections, ['sec-lessons', 'sec-runs', 'sec-charts']);
  const big = l.font;
  assert.equal(l.button, 'Exit presentation');
  assert.equal(l.pressed, 'true');
  assert.match(l.hash, /lesson=kv-heads/);
  assert.match(l.hash, /(^#|&)present(&|$)/);
  // The lesson's runs are set up (three, KV heads 4 / 2 / 1) and its text is there.
  assert.equal(await page.evaluate(() => window.__tp.runs.list().length), 3);
  await page.click('#present');
  l = await layout(page);
  assert.equal(l.present, false);
  assert.ok(l.sections.includes('sec-config') && l.sections.includes('sec-attention'), l.sections.join());
  assert.doesNotMatch(l.hash, /present/);
  assert.match(l.hash, /lesson=kv-heads/);
  assert.ok(big >= 1.3 * l.font, `root font ${big}px presenting, ${l.font}px not`);
  await page.click('#lang');
  assert.equal(await page.textContent('#present'), '演示');
  await page.click('#present');
  l = await layout(page);
  assert.equal(l.present, true);
  assert.equal(l.button, '退出演示');
  assert.match(l.hash, /(^#|&)present(&|$)/);
  // The link as it is now reopens the same way.
  const again = await browser.context.newPage();
  await again.goto(`${server.url}/?nosw${l.hash}`);
  await again.waitForFunction(() => window.__tp?.lessons?.().open === 'kv-heads', null, { timeout: 15000 });
  assert.equal(await again.evaluate(() => document.documentElement.hasAttribute('data-present')), true);
  await again.close();
  await page.click('#lang');
  assert.deepEqual(problems, []);
});
