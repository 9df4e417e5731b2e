// Helpers for the playground tests: open the page, set an option through its real control, train a few steps,
// save screenshots. The page exposes its modules as window.__tp (www/main.js) for the checks.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, open } from './util.mjs';

export const OUT = join(ROOT, 'tests/out');

/** Opens the playground (without its service worker unless `sw`) and waits until its controls are up. */
export async function openPlayground(context, base, { sw = false, hash = '', viewport = { width: 1440, height: 1000 } } = {}) {
  const { page, problems } = await open(context, `${base}/${sw ? '' : '?nosw'}${hash}`);
  await page.setViewportSize(viewport);
  // The page lays some things out for the width it starts at (closed groups on a phone): start again at this one.
  if (viewport.width < 800) {
    await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready', null, { timeout: 15000 });
    await page.reload();
  }
  await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready', null, { timeout: 15000 });
  return { page, problems };
}

/** The selected run's option values. */
export function values(page) {
  return page.evaluate(() => ({ ...window.__tp.runs.selectedRun().values }));
}

/** The core config of the selected run. */
export function config(page) {
  return page.evaluate(() => window.__tp.options.configFromValues(window.__tp.runs.selectedRun().values));
}

/** Sets option `key` through its control, as a user would, and waits for the run to take it. */
export async function setOption(page, key, value) {
  const sel = `#opt-${key}`;
  // Open its group if it is closed (at phone width they start closed).
  const type = await page.evaluate((k) => {
    document.getElementById(`opt-${k}`).closest('details').open = true;
    return window.__tp.options.BY_KEY[k].type;
  }, key);
  if (type === 'choice') await page.selectOption(sel, String(value));
  else if (type === 'bool') await page.setChecked(sel, !!value);
  else {
    await page.fill(sel, value === null ? '' : String(value));
    await page.dispatchEvent(sel, 'change');
  }
  await page.waitForFunction(([k, v]) => window.__tp.runs.selectedRun().values[k] === v, [key, value], { timeout: 5000 });
}

/** Sets several options in order. */
export async function setOptions(page, entries) {
  for (const [k, v] of Object.entries(entries)) await setOption(page, k, v);
}

/** Waits until the selected run is built for its current values and Train is enabled. */
export async function waitTrainable(page, timeout = 60000) {
  await page.waitForFunction(() => {
    const r = window.__tp.runs.selectedRun();
    return r && r.ready && !document.getElementById('train').disabled;
  }, null, { timeout });
}

/** Presses Train and waits until the selected run has stopped at `steps`. */
export async function trainTo(page, steps, timeout = 120000) {
  await waitTrainable(page);
  await page.click('#train');
  await waitStopped(page, steps, timeout);
}

/** Waits until the selected run is not training and has taken `steps` steps. */
export async function waitStopped(page, steps, timeout = 120000) {
  await page.waitForFunction((n) => {
    const r = window.__tp.runs.selectedRun();
    return !r.training && r.stepCount >= n;
  }, steps, { timeout });
}

/** A small, quick model of the current architecture: tests that exercise the UI need not wait for big ones. */
export async function makeSmall(page, { steps = 3 } = {}) {
  const v = await values(page);
  const layers = v.arch === 'encoder_decoder' ? { n_encoder_layers: 1, n_decoder_layers: 1 } : { n_layers: 2 };
  await setOptions(page, { d_model: 32, ...layers, n_heads: 2, n_kv_heads: 2, batch_size: 4, steps, eval_iters: 1 });
}

export async function screenshot(page, name, opts = {}) {
  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: join(OUT, `${name}.png`), ...opts });
}

/** Waits until the autosave has written a session after `since` (ms since epoch). */
export async function waitAutosave(page, since) {
  await page.waitForFunction((t) => Number(document.documentElement.dataset.autosaved || 0) > t, since, { timeout: 30000 });
}
