// The backend control: a run set to WebGPU trains on the GPU (Chromium's WebGPU on SwiftShader here) and the badge
// says so; the setting travels in the URL like every other knob (playground-config tests that part).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, setOption, setOptions, trainTo, screenshot } from './playground-helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer({ isolation: true });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('a run set to WebGPU trains on the GPU and the badge says WebGPU', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url);
  await makeSmall(page, { steps: 3 });
  await setOptions(page, { n_layers: 1, ctx_len: 16 });
  await setOption(page, 'backend', 'webgpu');
  await trainTo(page, 3);
  const badge = await page.evaluate(() => ({ text: document.getElementById('backend').textContent, backend: document.getElementById('backend').dataset.backend }));
  assert.equal(badge.backend, 'webgpu');
  assert.match(badge.text, /WebGPU/);
  await screenshot(page, 'webgpu');
  assert.deepEqual(problems, []);
});
