// The URL hash: the only reader and writer of location.hash. It holds the selected run's setup, every option of
// options.js that applies (config, seed, data choice), as key=value pairs, TensorFlow-Playground style:
//   #arch=gpt&d_model=128&n_layers=4&…&seed=1337&corpus=shakespeare
// Pasted text short enough travels too (`text=`), so such a link reproduces the run on another machine. An open
// lesson (www/lessons/<id>.json) is `lesson=<id>`: `index.html#lesson=norm-placement` opens it; `&present` shows it
// in the projector layout (teacher mode: large type, only the lesson, its runs and their charts).
import { OPTIONS, BY_KEY, applies, defaults } from './options.js';

/** Pasted text up to this many characters goes into the link. */
export const TEXT_IN_LINK = 2000;

function format(o, v) {
  if (v === null || v === undefined) return null;
  if (o.type === 'bool') return v ? '1' : '0';
  return String(v);
}

const BOOL = { 1: true, true: true, 0: false, false: false };

/**
 * The value of option `o` written as `s` in a link, or undefined where the link asks for what no control could
 * hold: a choice the option does not have, a boolean other than 1/0, an infinite or negative number (every numeric
 * option counts or measures something). Empty and non-numeric text is kept, for the configuration panel to say
 * what is wrong with it as it does for a typed value.
 */
function parse(o, s) {
  switch (o.type) {
    case 'choice':
      return o.choices.includes(s) ? s : undefined;
    case 'bool':
      return BOOL[s];
    case 'int':
    case 'float':
    case 'optint':
    case 'optfloat': {
      if (s.trim() === '') return o.type.startsWith('opt') ? null : s;
      const x = Number(s);
      if (Number.isNaN(x)) return s;
      return Number.isFinite(x) && x >= 0 ? x : undefined;
    }
    default:
      return s;
  }
}

/** The rule a refused link value breaks, as [string key, vars]. */
export function ruleOf(o) {
  if (o.type === 'choice') return ['link.rule.choice', { choices: o.choices.join(', ') }];
  if (o.type === 'bool') return ['link.rule.bool', {}];
  return ['link.rule.number', {}];
}

/** A lesson id as a link may carry it (the lesson files' names: lowercase letters, digits and '-'). */
const LESSON_ID = /^[a-z0-9-]{1,64}$/;

let lesson = null; // the open lesson's id, kept in the hash beside the setup
let present = false; // the projector layout, kept in the hash as `present`

/** A hash's text from its parameters, the flag `present` written without '='. */
const hashOf = (p) => p.toString().replace(/(^|&)present=(?=&|$)/, '$1present');

/** Turns the projector layout on or off, and rewrites the hash to say so. */
export function setPresent(on) {
  present = !!on;
  const p = new URLSearchParams(location.hash.replace(/^#/, ''));
  p.delete('present');
  if (present) p.set('present', '');
  const hash = hashOf(p);
  if (location.hash.replace(/^#/, '') !== hash) history.replaceState(null, '', hash ? `#${hash}` : location.pathname + location.search);
}

/** Opens (an id) or closes (null) the lesson the hash names, and rewrites the hash. */
export function setLesson(id) {
  lesson = id && LESSON_ID.test(id) ? id : null;
  const p = new URLSearchParams(location.hash.replace(/^#/, ''));
  p.delete('lesson');
  const rest = hashOf(p);
  const hash = [lesson && `lesson=${lesson}`, rest].filter(Boolean).join('&');
  if (location.hash.replace(/^#/, '') !== hash) history.replaceState(null, '', hash ? `#${hash}` : location.pathname + location.search);
}

/** The hash (without '#') for a setup: the open lesson, every option that applies, plus short pasted text. */
export function encode(values, text = null) {
  const p = new URLSearchParams();
  if (lesson) p.set('lesson', lesson);
  if (present) p.set('present', '');
  for (const o of OPTIONS) {
    if (!applies(o, values)) continue;
    const s = format(o, values[o.key]);
    if (s !== null) p.set(o.key, s);
  }
  if (values.corpus === 'custom' && applies(BY_KEY.corpus, values) && text && text.length <= TEXT_IN_LINK) p.set('text', text);
  return hashOf(p);
}

/**
 * A setup from a hash: { values, text, lesson, keys, refused, unknown } — `lesson` is the lesson id a link opens
 * (null when none, or when it is no id: then it is listed in `refused`); `values` starts from `base` (the default preset's
 * values) and takes every known key in the hash; `keys` lists the keys taken; `refused` lists { key, raw, kept } for
 * each value that parse() refuses, which keeps `base`'s value (a key given more than once: its last value counts, and
 * an earlier refusal of it is dropped once a later value is taken); `unknown` lists the keys that are no option (each
 * once). null for an empty hash.
 */
export function decode(hash, base = defaults()) {
  const s = hash.replace(/^#/, '');
  if (!s) return null;
  const p = new URLSearchParams(s);
  const values = { ...base };
  const keys = [];
  const refused = [];
  const unknown = new Set();
  for (const [k, raw] of p) {
    // Own keys only: a link's '__proto__', 'constructor' or 'toString' is no option.
    const o = Object.hasOwn(BY_KEY, k) ? BY_KEY[k] : undefined;
    if (!o) {
      if (k === 'lesson' && !LESSON_ID.test(raw)) refused.push({ key: k, raw, kept: '' });
      else if (k !== 'text' && k !== 'lesson' && k !== 'present') unknown.add(k);
      continue;
    }
    const v = parse(o, raw);
    if (v === undefined) {
      refused.push({ key: k, raw, kept: format(o, values[k]) ?? '' });
      continue;
    }
    values[k] = v;
    keys.push(k);
    // A key given again: its last value counts, so an earlier refusal of it no longer stands.
    for (let i = refused.length - 1; i >= 0; i--) if (refused[i].key === k) refused.splice(i, 1);
  }
  // Options that apply but are absent from the hash keep `base`'s values (an older or hand-written link).
  const l = p.get('lesson');
  return { values, text: p.get('text'), lesson: l !== null && LESSON_ID.test(l) ? l : null, present: p.has('present'), keys, refused, unknown: [...unknown] };
}

/** The setup in the current URL, or null. */
export function readHash(base) {
  return decode(location.hash, base);
}

/** Puts a setup into the URL without adding a history entry (and without a hashchange event). */
export function writeHash(values, text) {
  const hash = encode(values, text);
  if (location.hash.replace(/^#/, '') !== hash) history.replaceState(null, '', `#${hash}`);
}

/**
 * Calls fn(setup) when the user changes the hash (pastes a link, goes back) — also to the link the page last wrote
 * (going back to it is a change); our own writes send no event.
 */
export function onHashChange(fn, base) {
  // The event's own URL, not location.hash: a write of the page's pending values (writeHash) may have replaced the
  // hash between the change and this event, and the link the user gave is the one to read.
  addEventListener('hashchange', (e) => {
    const setup = decode(new URL(e.newURL).hash, base());
    if (setup) fn(setup);
  });
}

/** The current hash, as written by writeHash (for the autosave to know which link it belongs to). */
export function currentHash() {
  return location.hash.replace(/^#/, '');
}
