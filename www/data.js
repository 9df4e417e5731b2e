// The data a run learns from: built-in corpora (Tiny Shakespeare, generated sums), the user's own text (pasted or
// uploaded, checked here first so that empty, binary or oversized input gets a clear message), and examples of
// the synthetic tasks for the encoder-decoder. Only data: tokenisation and training happen in the engine.

export const SHAKESPEARE_URL = 'www/data/tinyshakespeare.txt';
/** Largest text the page accepts from a user (the core accepts up to 32 MiB; a tab and IndexedDB like less). */
export const MAX_USER_BYTES = 8 << 20;
/** The core's limit on distinct characters (src/data.rs MAX_CHARS). */
export const MAX_CHARS = 4096;

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
 * Checks a user's text, given as bytes (an uploaded file) or a string (pasted). Returns { text } or
 * { error: key, vars } — the same rules as the core's check_text: empty, not UTF-8, control characters
 * (binary), too large, too many distinct characters.
 */
export function checkUserText(input) {
  const bytes = typeof input === 'string' ? new TextEncoder().encode(input) : input;
  const limit = formatBytes(MAX_USER_BYTES);
  if (bytes.length > MAX_USER_BYTES) return { error: 'data.err.size', vars: { size: formatBytes(bytes.length), limit } };
  let text;
  try {
    text = typeof input === 'string' ? input : new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return { error: 'data.err.binary' };
  }
  if (text.trim().length === 0) return { error: 'data.err.empty' };
  let control = 0;
  let count = 0;
  for (const c of text) {
    count++;
    const code = c.codePointAt(0);
    if (code === 0) return { error: 'data.err.control' };
    if ((code < 32 && c !== '\n' && c !== '\r' && c !== '\t') || (code >= 0x7f && code < 0xa0)) control++;
  }
  if (control * 100 > count) return { error: 'data.err.control' };
  const distinct = new Set(text).size;
  if (distinct > MAX_CHARS) return { error: 'data.err.vocab', vars: { n: distinct, max: MAX_CHARS } };
  return { text, chars: count, distinct };
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
  const pi = '31415926535897932384626433832795';
  const d = Math.max(1, Math.min(digits, 32));
  if (task === 'add') return `${pi.slice(0, d)}+${pi.slice(d, 2 * d).padEnd(d, '0')}`;
  return pi.slice(0, d);
}
