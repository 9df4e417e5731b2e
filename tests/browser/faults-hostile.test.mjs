// Hostile input, in Chromium: HTML and script in the corpus, the prompt, the attention text, a run's setup (shown in
// the run list), an uploaded file's name and the URL hash are shown as text and never run; a fuzzed hash (a few
// hundred random and mutated ones) never crashes or hangs the page, and every bad one gets a notice; the served
// CSP has no 'unsafe-eval' (and eval is refused); no request leaves the origin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, setOption, waitTrainable, trainTo, screenshot } from './playground-helpers.mjs';

const PAYLOAD = '<img src=x onerror="window.__pwned=\'img\'"><script>window.__pwned=\'script\'</script>'
  + '<iframe src="javascript:parent.__pwned=\'iframe\'"></iframe><marquee>m</marquee>';
// Elements the page never makes itself: one of them appearing means markup from input was parsed.
const FOREIGN = ['IMG', 'SCRIPT', 'IFRAME', 'MARQUEE', 'OBJECT', 'EMBED'];

let browser;
let server;
before(async () => {
  browser = await launch();
  server = await startServer({ isolation: true });
  // In every page: CSP violations (an inline handler or script that tried to run), elements of FOREIGN added to
  // the document, dialogs opened.
  await browser.context.addInitScript((foreign) => {
    window.__seen = { violations: [], foreign: [], dialogs: 0 };
    addEventListener('securitypolicyviolation', (e) => window.__seen.violations.push(`${e.violatedDirective}: ${e.sample}`));
    // From when the page's own HTML is parsed.
    addEventListener('DOMContentLoaded', () => new MutationObserver((list) => {
      for (const m of list) {
        for (const n of m.addedNodes) {
          const all = n.nodeType === 1 ? [n, ...n.querySelectorAll('*')] : [];
          for (const el of all) if (foreign.includes(el.tagName)) window.__seen.foreign.push(el.outerHTML.slice(0, 80));
        }
      }
    }).observe(document, { childList: true, subtree: true }));
    for (const f of ['alert', 'confirm', 'prompt']) window[f] = () => window.__seen.dialogs++;
  }, FOREIGN);
});
after(async () => {
  await browser?.close();
  await server?.close();
});

async function nothingRan(page) {
  const r = await page.evaluate(() => ({ pwned: window.__pwned ?? null, parentPwned: window.parent.__pwned ?? null, ...window.__seen }));
  assert.deepEqual(r, { pwned: null, parentPwned: null, violations: [], foreign: [], dialogs: 0 });
}

test('HTML and script in the corpus, prompt, attention text, run setup, file name and hash are shown as text', async () => {
  const text = `${PAYLOAD} & "quotes" — To be or not to be.\n`.repeat(12);
  const hash = new URLSearchParams({ arch: 'gpt', corpus: 'custom', text, placement: PAYLOAD, [PAYLOAD]: '1' });
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: `#${hash}` });
  // The hash: a refused value and an unknown key, each quoted as text.
  await page.waitForSelector('#notices .notice[data-key="notice.badLink"]', { timeout: 5000 });
  await page.waitForSelector('#notices .notice[data-key="notice.unknownLink"]', { timeout: 5000 });
  const notices = await page.textContent('#notices');
  assert.ok(notices.includes('<img src=x onerror="window.__pwned'), notices);
  assert.match(notices, /settings? this page does not know/);
  // The corpus came with the link, as text.
  await page.waitForFunction(() => /Using your text/.test(document.getElementById('custom-msg').textContent), null, { timeout: 20000 });
  assert.equal(await page.inputValue('#custom-text'), text);

  await makeSmall(page, { steps: 2 });
  await trainTo(page, 2);
  // The prompt and the attention text.
  await page.fill('#gen-prompt', PAYLOAD);
  await page.fill('#gen-length', '40');
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  assert.ok((await page.textContent('#gen-out')).startsWith(PAYLOAD));
  await page.fill('#att-text', PAYLOAD.slice(0, 60));
  await page.waitForFunction(() => document.querySelectorAll('#att-grid canvas').length > 0, null, { timeout: 20000 });
  // A run's setup, shown in the run list: a link whose width is markup forks a new run whose difference says it.
  await page.evaluate((p) => {
    const h = new URLSearchParams(location.hash.slice(1));
    h.set('d_model', p);
    location.hash = h.toString();
  }, PAYLOAD);
  await page.waitForFunction(() => window.__tp.runs.list().length === 2, null, { timeout: 10000 });
  await page.waitForFunction((p) => document.getElementById('run-list').textContent.includes(p), PAYLOAD, { timeout: 10000 });
  // An uploaded checkpoint's file name.
  const name = `${PAYLOAD.replaceAll('/', '∕')}.safetensors`;
  await page.setInputFiles('#ckpt-file', { name, mimeType: 'application/octet-stream', buffer: Buffer.from('not a checkpoint') });
  await page.waitForFunction((n) => document.getElementById('ckpt-msg').textContent.includes(n), name, { timeout: 10000 });
  await nothingRan(page);
  await page.evaluate(() => scrollTo(0, 0));
  await screenshot(page, 'faults-hostile');
  await page.close();
  assert.deepEqual(problems, []);
});

/** A seeded generator (mulberry32), so that a failing hash can be found again. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VALUES = ['', ' ', '-1', '-0', '0', '1', '2', '3', '32', '0.5', '1e3', '1e-400', '1e309', 'Infinity', '-Infinity', 'NaN',
  '0x10', '9'.repeat(400), 'true', 'false', 'maybe', 'gpt', 'bert', 'rope', 'cosine', PAYLOAD, 'javascript:alert(1)',
  '"><svg onload=alert(1)>', '%00', '\u0000', '\u202e', '😀', 'a'.repeat(5000), '__proto__', 'constructor', 'https://example.com/x'];
const KEYS = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'text', PAYLOAD, '', 'd_model ', 'D_MODEL', 'x'.repeat(300)];

/** A few hundred hashes: random ones, and valid links with a few mutations each. */
function hashes(options, base, n, rnd) {
  const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
  const out = [];
  for (let i = 0; i < n; i++) {
    const p = [...new URLSearchParams(base)];
    const edits = 1 + Math.floor(rnd() * 4);
    for (let e = 0; e < edits; e++) {
      const j = Math.floor(rnd() * p.length);
      const r = rnd();
      if (r < 0.35 && p.length) p[j] = [p[j][0], pick(VALUES)];
      else if (r < 0.5) p.push([pick(options).key, pick(VALUES)]);
      else if (r < 0.6) p.push([pick(KEYS), pick(VALUES)]);
      else if (r < 0.7 && p.length) p.splice(j, 1);
      else if (r < 0.8 && p.length) p.push(p[j]);
      else {
        const o = pick(options);
        p.push([o.key, o.choices ? pick(o.choices) : pick(VALUES)]);
      }
    }
    let s = new URLSearchParams(p).toString();
    const r = rnd();
    // Damage the text itself now and then: cut it, or put in stray characters and broken %-escapes.
    if (r < 0.15) s = s.slice(0, Math.floor(rnd() * s.length));
    else if (r < 0.3) {
      const at = Math.floor(rnd() * s.length);
      s = s.slice(0, at) + pick(['%', '%Z', '%E0%A4', '&&', '==', '#', '?', '&=&', '%2', '+', ';']) + s.slice(at);
    } else if (r < 0.35) s = Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => String.fromCharCode(33 + Math.floor(rnd() * 94))).join('');
    out.push(s);
  }
  return out;
}

/**
 * What a hash should do, worked out here from the option table (not from the page's code): the keys that are no
 * option, the options whose value no control could hold (refused), and the values the others take.
 */
function expected(options, hash) {
  const by = Object.fromEntries(options.map((o) => [o.key, o]));
  const last = new Map();
  const unknown = new Set();
  for (const [k, v] of new URLSearchParams(hash)) {
    if (Object.hasOwn(by, k)) last.set(k, v);
    else if (k !== 'text') unknown.add(k);
  }
  const refused = [];
  const taken = {};
  for (const [k, raw] of last) {
    const o = by[k];
    let v;
    if (o.type === 'choice') v = o.choices.includes(raw) ? raw : undefined;
    else if (o.type === 'bool') v = { 1: true, true: true, 0: false, false: false }[raw];
    else if (['int', 'float', 'optint', 'optfloat'].includes(o.type)) {
      const x = Number(raw);
      if (raw.trim() === '') v = o.type.startsWith('opt') ? null : raw;
      else if (Number.isNaN(x)) v = raw;
      else v = Number.isFinite(x) && x >= 0 ? x : undefined;
    } else v = raw;
    if (v === undefined) refused.push(k);
    else taken[k] = v;
  }
  return { unknown: [...unknown], refused, taken };
}

test('a fuzzed URL hash (300 random and mutated links) never crashes or hangs the page; every bad one gets a notice', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  const { options, base } = await page.evaluate(() => ({
    options: window.__tp.options.OPTIONS.map(({ key, type, choices }) => ({ key, type, choices })),
    base: window.__tp.state.currentHash(),
  }));
  // A key given twice: the last value counts — a refused one before a good one is no refusal, a refused one after
  // a good one is (and keeps the good one), as expected() reads a hash.
  const twice = await page.evaluate(() => {
    const d = window.__tp.state.decode('activation=1e-400&activation=swiglu&n_layers=2&n_layers=-1');
    return { activation: d.values.activation, n_layers: d.values.n_layers, refused: d.refused.map((r) => [r.key, r.raw]) };
  });
  assert.deepEqual(twice, { activation: 'swiglu', n_layers: 2, refused: [['n_layers', '-1']] });
  const list = hashes(options, base, 300, random(20));
  // Each hash as a user would paste it (a hashchange). The page's own listener runs before ours (it was added
  // first): the notices emitted since our listener last ran are those of the event it is called for.
  await page.evaluate(async () => {
    const { on } = await import('/www/bus.js');
    let notices = [];
    window.__events = [];
    on('notice', ({ key }) => notices.push(key));
    addEventListener('hashchange', (e) => {
      const v = window.__tp.runs.selectedRun().values;
      window.__events.push({ hash: new URL(e.newURL).hash.slice(1), notices, values: JSON.parse(JSON.stringify(v)) });
      notices = [];
    });
  });
  const failures = [];
  for (const [i, hash] of list.entries()) {
    const events = await page.evaluate(async (h) => {
      const n = window.__events.length;
      location.hash = h;
      while (window.__events.length === n) await new Promise((ok) => setTimeout(ok, 1));
      return window.__events.slice(n);
    }, hash);
    for (const got of events) {
      // The browser may re-escape what it was given: the hash the page read is the event's.
      const want = expected(options, got.hash);
      const bad = want.unknown.length + want.refused.length > 0;
      const noticed = got.notices.some((k) => k === 'notice.badLink' || k === 'notice.unknownLink');
      if (bad !== noticed) failures.push({ i, hash: got.hash.slice(0, 2000), want, notices: got.notices });
      // A link applied in place (the run has not trained) takes each value it gives.
      if (got.hash && !bad) {
        for (const [k, v] of Object.entries(want.taken)) {
          if (!Object.is(got.values[k], v) && got.values[k] !== v) failures.push({ i, hash: got.hash.slice(0, 200), key: k, want: v, got: got.values[k] });
        }
      }
    }
  }
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} of ${list.length} hashes`);
  await nothingRan(page);

  // A few as fresh loads (the page reads the hash on start), and the page still builds and trains afterwards.
  for (const hash of list.slice(0, 8)) {
    await page.goto(`${server.url}/?nosw#${hash}`);
    await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready', null, { timeout: 15000 });
    await nothingRan(page);
  }
  await page.goto(`${server.url}/?nosw#arch=gpt`);
  await page.waitForFunction(() => document.documentElement.dataset.ui === 'ready', null, { timeout: 15000 });
  await makeSmall(page, { steps: 1 });
  await setOption(page, 'seed', 3);
  await trainTo(page, 1);
  await page.close();
  assert.deepEqual(problems, []);
});

test("the served CSP allows no eval ('unsafe-eval') and no inline script, and the page refuses eval", async () => {
  const html = await (await fetch(`${server.url}/`)).text();
  const csp = html.match(/http-equiv="Content-Security-Policy" content="([^"]+)"/)?.[1];
  assert.ok(csp, 'index.html has a CSP');
  const script = csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('script-src'));
  assert.ok(script, csp);
  assert.doesNotMatch(csp, /'unsafe-eval'/);
  assert.doesNotMatch(script, /'unsafe-inline'|\*|data:|https?:/);
  assert.match(csp, /object-src 'none'/);
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await page.evaluate(() => {
    const probe = document.createElement('script');
    probe.type = 'module';
    probe.src = '/tests/browser/csp-probe.mjs';
    document.head.append(probe);
  });
  const refused = await (await page.waitForFunction(() => window.__cspProbe)).jsonValue();
  assert.deepEqual(refused, ['EvalError', 'EvalError', 'not run']);
  const violations = await page.evaluate(() => window.__seen.violations);
  assert.ok(violations.length >= 2 && violations.every((v) => /^script-src/.test(v)), JSON.stringify(violations));
  await page.close();
  assert.deepEqual(problems.filter((p) => !/unsafe-eval|Content Security Policy/.test(p)), []);
});

test('no request leaves the origin: load, train, generate, attention, checkpoints, language, a hostile link', async () => {
  const outside = [];
  const origin = new URL(server.url).origin;
  await browser.context.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(origin) || u.startsWith('blob:') || u.startsWith('data:')) return route.continue();
    outside.push(u);
    return route.abort();
  });
  const text = '<img src="https://example.com/a.png"> <link rel=stylesheet href="//example.com/s.css"> To be or not to be. '.repeat(12);
  const hash = new URLSearchParams({ arch: 'gpt', corpus: 'custom', text, placement: 'https://example.com/', 'https://example.com/': '1' });
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: `#${hash}` });
  await page.waitForFunction(() => /Using your text/.test(document.getElementById('custom-msg').textContent), null, { timeout: 20000 });
  await makeSmall(page, { steps: 2 });
  await trainTo(page, 2);
  await page.fill('#gen-length', '20');
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 30000 });
  await page.fill('#att-text', 'https://example.com/');
  await page.waitForFunction(() => document.querySelectorAll('#att-grid canvas').length > 0, null, { timeout: 20000 });
  const download = page.waitForEvent('download');
  await page.click('#ckpt-save');
  const bytes = await (await download).path();
  await page.setInputFiles('#ckpt-file', bytes);
  await page.waitForFunction(() => window.__tp.runs.list().length === 2, null, { timeout: 20000 });
  await page.click('#lang');
  await page.click('#lang');
  await waitTrainable(page);
  await page.close();
  await browser.context.unroute('**/*');
  assert.deepEqual(outside, []);
  assert.deepEqual(problems, []);
});
