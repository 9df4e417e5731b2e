// The URL hash: the only reader and writer of location.hash. It holds the selected run's setup, every option of
// options.js that applies (config, seed, data choice), as key=value pairs, TensorFlow-Playground style:
//   #arch=gpt&d_model=128&n_layers=4&…&seed=1337&corpus=shakespeare
// Pasted text short enough travels too (`text=`), so such a link reproduces the run on another machine.
import { OPTIONS, BY_KEY, applies, defaults } from './options.js';

/** Pasted text up to this many characters goes into the link. */
export const TEXT_IN_LINK = 2000;

function format(o, v) {
  if (v === null || v === undefined) return null;
  if (o.type === 'bool') return v ? '1' : '0';
  return String(v);
}

function parse(o, s) {
  switch (o.type) {
    case 'bool':
      return s === '1' || s === 'true';
    case 'int':
    case 'float':
      return s.trim() === '' || Number.isNaN(Number(s)) ? s : Number(s);
    case 'optint':
    case 'optfloat':
      return s === '' ? null : Number.isNaN(Number(s)) ? s : Number(s);
    default:
      return s;
  }
}

/** The hash (without '#') for a setup: every option that applies, plus short pasted text. */
export function encode(values, text = null) {
  const p = new URLSearchParams();
  for (const o of OPTIONS) {
    if (!applies(o, values)) continue;
    const s = format(o, values[o.key]);
    if (s !== null) p.set(o.key, s);
  }
  if (values.corpus === 'custom' && applies(BY_KEY.corpus, values) && text && text.length <= TEXT_IN_LINK) p.set('text', text);
  return p.toString();
}

/**
 * A setup from a hash: { values, text, keys } — `values` starts from `base` (the default preset's values) and takes
 * every known key in the hash; `keys` lists the keys found. null for an empty hash.
 */
export function decode(hash, base = defaults()) {
  const s = hash.replace(/^#/, '');
  if (!s) return null;
  const p = new URLSearchParams(s);
  const values = { ...base };
  const keys = [];
  for (const [k, raw] of p) {
    const o = BY_KEY[k];
    if (!o) continue;
    values[k] = parse(o, raw);
    keys.push(k);
  }
  // Options that apply but are absent from the hash keep `base`'s values (an older or hand-written link).
  return { values, text: p.get('text'), keys };
}

/** The setup in the current URL, or null. */
export function readHash(base) {
  return decode(location.hash, base);
}

let lastWritten = null;

/** Puts a setup into the URL without adding a history entry. */
export function writeHash(values, text) {
  const hash = encode(values, text);
  lastWritten = hash;
  if (location.hash.replace(/^#/, '') !== hash) history.replaceState(null, '', `#${hash}`);
}

/** Calls fn(setup) when the user changes the hash (pastes a link, goes back); not for our own writes. */
export function onHashChange(fn, base) {
  addEventListener('hashchange', () => {
    if (location.hash.replace(/^#/, '') === lastWritten) return;
    const setup = readHash(base());
    if (setup) fn(setup);
  });
}

/** The current hash, as written by writeHash (for the autosave to know which link it belongs to). */
export function currentHash() {
  return location.hash.replace(/^#/, '');
}
