// Your own text: paste it or upload a file. The engine checks it (the core's own check: empty, not UTF-8, binary,
// too large, too many distinct characters), and the page says what is wrong in its own words from the error's
// reason, before the text becomes the corpus of the runs that use "Your own text". Shown under the corpus choice
// when that is chosen.
import { h } from '../dom.js';
import { t } from '../i18n.js';
import { on, emit } from '../bus.js';
import { setCustomText, getCustomText, formatBytes, dataErrorMessage } from '../data.js';
import { startEngine, getEngine } from '../engine.js';
import * as runs from '../runs.js';
import { applies, BY_KEY } from '../options.js';

let box;
let area;
let file;
let msg;
let state = { key: 'data.none', vars: {}, bad: false };
let checking = 0; // the latest check: an older one that answers late is ignored

function say(key, vars = {}, bad = false) {
  state = { key, vars, bad };
  msg.textContent = t(key, vars);
  msg.classList.toggle('bad', bad);
  msg.classList.toggle('good', !bad && key === 'data.ok');
}

function sayError(e) {
  if (e.kind === 'data') {
    const m = dataErrorMessage(e);
    say(m.key, m.vars, true);
  } else {
    say('use.error', { msg: e.message }, true);
  }
}

/**
 * Makes `input` (a string, or a file's bytes) the corpus of "Your own text" once the engine has checked it;
 * resolves whether it was accepted.
 */
export async function useText(input) {
  const mine = ++checking;
  // Text from a link or the autosave shows at once, while it is checked.
  if (typeof input === 'string' && area.value !== input) area.value = input;
  say('data.checking');
  let stats;
  try {
    stats = await (await startEngine()).checkText(input);
  } catch (e) {
    if (mine === checking) sayError(e);
    return false;
  }
  if (mine !== checking) return false;
  const text = typeof input === 'string' ? input : new TextDecoder().decode(input);
  setCustomText(text);
  if (area.value !== text) area.value = text;
  say('data.ok', { chars: stats.chars.toLocaleString('en-US'), vocab: stats.distinct });
  runs.customTextChanged();
  emit('data', { corpus: 'custom' });
  return true;
}

async function onFile() {
  const f = file.files?.[0];
  if (!f) return;
  file.value = '';
  const limit = (await startEngine().catch(() => null))?.limits.text.max_bytes;
  // A file over the core's limit is not read at all.
  if (limit !== undefined && f.size > limit) {
    ++checking;
    sayError({ kind: 'data', reason: 'too_large', bytes: f.size, limit });
  } else {
    await useText(new Uint8Array(await f.arrayBuffer()));
  }
}

/** The box (returned, to be placed under the corpus choice by the config panel). */
export function create() {
  area = h('textarea', { id: 'custom-text', rows: 5, spellcheck: false, attrs: { 'data-i18n-attr': 'placeholder:data.paste.placeholder' } });
  file = h('input', { id: 'custom-file', type: 'file', accept: '.txt,text/plain' });
  file.addEventListener('change', onFile);
  msg = h('p', { id: 'custom-msg', class: 'msg', attrs: { role: 'status', 'aria-live': 'polite' } });
  const use = h('button', { id: 'custom-use', type: 'button', dataset: { i18n: 'data.use' } });
  use.addEventListener('click', () => useText(area.value));
  box = h('div', { class: 'custom-box', id: 'custom-box' },
    h('label', { htmlFor: 'custom-text', dataset: { i18n: 'data.paste' } }),
    area,
    h('div', { class: 'row' }, use, h('label', { class: 'file' }, h('span', { dataset: { i18n: 'data.upload' } }), file)),
    h('p', { class: 'help', id: 'custom-limit' }),
    msg);
  return box;
}

function render(values) {
  box.hidden = !(values.corpus === 'custom' && applies(BY_KEY.corpus, values));
  const limit = getEngine()?.limits.text.max_bytes;
  box.querySelector('#custom-limit').textContent = limit ? t('data.limit', { limit: formatBytes(limit) }) : '';
  msg.textContent = t(state.key, state.vars);
}

export function mount() {
  const again = () => runs.selectedRun() && render(runs.selectedRun().values);
  on('values', ({ values }) => render(values));
  on('lang', again);
  on('engine', again);
  const text = getCustomText();
  if (text) {
    area.value = text;
    useText(text);
  }
}

/** A link made with pasted text too long to travel in it. */
export function sayNotInLink() {
  say('data.notInLink', {}, true);
}
