// Shared set-up for the browser tests: the static server (scripts/serve.mjs) and Debian's headless Chromium
// driven by playwright-core. Never a downloaded browser.
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { serve } from '../../scripts/serve.mjs';

export const ROOT = resolve(import.meta.dirname, '../..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Starts a server on a free port; `isolation` adds COOP/COEP. Returns { url, close }. */
export async function startServer({ isolation = true, root = ROOT } = {}) {
  const server = await serve({ port: 0, root, isolation });
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => {
    server.close(ok);
    server.closeAllConnections();
  }) };
}

/** Launches headless Chromium with a fresh profile. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'tp-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return {
    context: browser,
    close: async () => {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens `url` in a new page and records console errors, uncaught page errors and requests to other origins.
 * Returns { page, problems } where problems lists what went wrong.
 */
export async function open(context, url) {
  const page = await context.newPage();
  const problems = [];
  const origin = new URL(url).origin;
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  page.on('response', (r) => r.status() >= 400 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  // With where it was thrown (the first frames), so that a rare failure says where to look.
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}${(e.stack ?? '').split('\n').slice(1, 4).join(' ').replace(/\s+/g, ' ')}`));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith('blob:') && !u.startsWith('data:')) problems.push(`request outside the origin: ${u}`);
  });
  page.on('worker', (w) => w.on('console', (m) => m.type() === 'error' && problems.push(`worker console.error: ${m.text()}`)));
  await page.goto(url);
  return { page, problems };
}

/**
 * A test file's server (isolated) and Chromium, started before its tests and closed after them: returns an object
 * whose `server` and `browser` are set once `before` has run.
 */
export function serverAndBrowser() {
  const at = { server: null, browser: null };
  before(async () => {
    at.server = await startServer({ isolation: true });
    at.browser = await launch();
  });
  after(async () => {
    await at.browser?.close();
    await at.server?.close();
  });
  return at;
}
