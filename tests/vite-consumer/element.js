// A consumer page with the <transformer-playground> element, bundled by Vite: it asks for cross-origin isolation
// through the package's service worker (vite.config.js puts sw.js at the site's root), then trains its widget — a
// preset by name, its corpus shipped by the package — a few steps. The browser test reads window.result.
import { isolate } from 'transformer-playground/isolate';
import { sharedEngine } from 'transformer-playground/element';

async function main() {
  const isolation = await isolate({ url: '/sw.js' });
  const el = document.getElementById('w');
  const losses = [];
  el.addEventListener('progress', (e) => losses.push(e.detail.loss));
  el.addEventListener('error', (e) => {
    window.result = { error: e.detail.message };
  });
  while (!el.config) await new Promise((ok) => setTimeout(ok, 20));
  await el.train();
  const engine = await sharedEngine();
  window.result = { build: engine.info.build, isolated: crossOriginIsolated, isolation, losses };
  document.getElementById('out').textContent = JSON.stringify(window.result);
}

main().catch((e) => {
  window.result = { error: e.message };
});
