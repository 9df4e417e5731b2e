// The data a run learns from: built-in corpora (Tiny Shakespeare, generated sums), the user's own text (pasted or
// uploaded; the engine checks it), and examples of the synthetic tasks for the encoder-decoder. Only data:
// checking, tokenisation and training happen in the engine.

export const SHAKESPEARE_URL = 'www/data/tinyshakespeare.txt';

const cache = new Map(); // corpus id → Promise<string>
let customText = null;

/** Lines "a+b=c" for a, b < 100 in a fixed pseudo-random order (an LCG, so every visitor gets the same text). */
function sums() {
  let x = 12345;
  const next = () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x >>> 8;
  };
  const lines = [];
  for (let i = 0; i < 30000; i++) {
    const a = next() % 100;
    const b = next() % 100;
    lines.push(`${a}+${b}=${a + b}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The text of a corpus ('shakespeare', 'sums', 'custom'); rejects with a message key for a missing custom text. */
export function corpusText(id) {
  if (id === 'custom') {
    return customText ? Promise.resolve(customText) : Promise.reject(Object.assign(new Error('data.none'), { key: 'data.none' }));
  }
  if (!cache.has(id)) {
    const p = id === 'sums'
      ? Promise.resolve(sums())
      : fetch(SHAKESPEARE_URL).then((r) => {
        if (!r.ok) throw new Error(`${SHAKESPEARE_URL}: HTTP ${r.status}`);
        return r.text();
      });
    p.catch(() => cache.delete(id));
    cache.set(id, p);
  }
  return cache.get(id);
}

export function getCustomText() {
  return customText;
}

export function setCustomText(text) {
  customText = text || null;
  distinctCache.delete('custom');
}

const distinctCache = new Map();

/** The number of distinct characters of a corpus (its vocabulary before special tokens), or null if not loaded yet. */
export async function distinctChars(id) {
  if (!distinctCache.has(id)) distinctCache.set(id, new Set(await corpusText(id)).size);
  return distinctCache.get(id);
}

/**
 * What to say, as { key, vars } for t(), about a data error of the engine (kind 'data'): its reason and numbers
 * (see pkg/index.d.ts, EngineError).
 */
export function dataErrorMessage(e) {
  const key = `data.err.${e.reason}`;
  switch (e.reason) {
    case 'too_large':
      return { key, vars: { size: formatBytes(e.bytes), limit: formatBytes(e.limit) } };
    case 'too_many_characters':
      return { key, vars: { n: e.distinct, max: e.limit } };
    case 'too_short':
      return { key, vars: { chars: e.chars, need: e.need } };
    case 'not_in_vocabulary':
      return { key, vars: { char: e.character } };
    default:
      return { key, vars: {} };
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** A random input for a task (what a user might type): `digits` digits, or two numbers joined by '+'. */
export function taskExample(task, digits, rand = Math.random) {
  const num = () => Array.from({ length: digits }, () => Math.floor(rand() * 10)).join('');
  return task === 'add' ? `${num()}+${num()}` : num();
}

/** A fixed example for labels and defaults. */
export function taskSample(task, digits) {
  // The denoising tasks read corrupted text: [S0] and [S1] exist at every context length (docs/MODEL.md).
  if (task === 'span_corruption') return 'To be, or[S0] to be: that[S1]';
  if (task === 'text_infilling') return 'To be, or [MASK] to be: that[MASK] question';
  const pi = '31415926535897932384626433832795';
  const d = Math.max(1, Math.min(digits, 32));
  if (task === 'add') return `${pi.slice(0, d)}+${pi.slice(d, 2 * d).padEnd(d, '0')}`;
  return pi.slice(0, d);
}
