// Cross-origin isolation for a page on a host that cannot send COOP/COEP, through the package's service worker
// (sw.js): isolate() registers it and, when the page is not yet isolated, reloads the page once so that the
// worker serves it with the headers. The reload is guarded: it happens at most once per tab session until
// isolation is reached, so a browser (or a host) where it cannot be obtained never loops — the page simply runs
// the single-thread build. An engine started before the reload would be lost with the page, so the engine waits
// for isolation() (the element does; the playground's www/engine.js too).

const KEY = 'transformer-playground.isolation-reload'; // sessionStorage: set just before the one reload
let pending = null;

/**
 * Registers the service worker at `url` (relative to the page; default 'sw.js') and reloads the page once if it is
 * not cross-origin isolated yet. `off`: unregister this origin's service workers instead (the playground's ?nosw).
 * Resolves how it ended: 'isolated'; 'off'; 'unsupported' (no service workers, e.g. a private window of some
 * browsers, or not a secure context); 'error' (registration failed: e.g. the file is missing); 'out-of-scope' (the
 * worker's folder does not contain the page); 'failed' (the reload did not bring isolation: the guard stopped a
 * second one). While it reloads it never resolves. Calling it again returns the first call's promise.
 */
export function isolate({ url = 'sw.js', off = false } = {}) {
  pending ??= run(url, off);
  return pending;
}

/** The promise of isolate(), or a resolved one when the page did not call it: what the engine waits for. */
export function isolation() {
  return pending ?? Promise.resolve(null);
}

async function run(url, off) {
  const sw = globalThis.navigator?.serviceWorker;
  if (!sw) return 'unsupported';
  if (off) {
    for (const r of await sw.getRegistrations()) await r.unregister();
    return 'off';
  }
  const register = () => sw.register(url).catch((e) => {
    console.warn('service worker not registered:', e.message);
    return null;
  });
  if (globalThis.crossOriginIsolated) {
    forget();
    register(); // still registered (or updated): offline, and isolation on the next visit whatever the host sends
    return 'isolated';
  }
  const reg = await register();
  if (!reg) return 'error';
  if (!location.href.startsWith(reg.scope)) {
    console.warn(`the service worker's scope ${reg.scope} does not contain this page: serve it from the page's folder`);
    return 'out-of-scope';
  }
  if (tried()) return 'failed';
  try {
    await activated(reg);
  } catch (e) {
    console.warn(e.message);
    return 'error';
  }
  try {
    sessionStorage.setItem(KEY, String(Date.now()));
  } catch {
    return 'failed'; // no storage, no guard: never reload without one
  }
  location.reload();
  return new Promise(() => {}); // the page is going away
}

/** Whether this tab already reloaded for isolation (true when storage cannot tell: then no reload at all). */
function tried() {
  try {
    return sessionStorage.getItem(KEY) !== null;
  } catch {
    return true;
  }
}

function forget() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing to forget
  }
}

/**
 * Resolves when `reg`'s newest worker is active (the reload then goes through it): a worker being installed — the
 * first, or an update of an older one that may not add the headers — is waited for.
 */
function activated(reg) {
  const w = reg.installing ?? reg.waiting;
  if (!w) return Promise.resolve();
  return new Promise((ok, fail) => {
    w.addEventListener('statechange', () => {
      if (w.state === 'activated') ok();
      if (w.state === 'redundant') fail(new Error('the service worker could not be installed'));
    });
  });
}
