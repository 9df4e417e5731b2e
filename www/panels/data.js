// Your own text: paste it or upload a file. It is checked here (size, empty, binary) with a clear message before
// it becomes the corpus of the runs that use "Your own text". Shown under the corpus choice when that is chosen.
import { h } from '../dom.js';
import { t } from '../i18n.js';
import { on, emit } from '../bus.js';
import { checkUserText, setCustomText, getCustomText, MAX_USER_BYTES, formatBytes } from '../data.js';
import * as runs from '../runs.js';

let box;
let area;
let file;
let msg;
let state = { key: 'data.none', vars: {}, bad: false };

function say(key, vars = {}, bad = false) {
  state = { key, vars, bad };
  msg.textContent = t(key, vars);
  msg.classList.toggle('bad', bad);
  msg.classList.toggle('good', !bad && key === 'data.ok');
}

/** Makes `text` the corpus of "Your own text" (after the checks); returns whether it was accepted. */
export function useText(input) {
  const r = checkUserText(input);
  if (r.error) {
    say(r.error, r.vars, true);
    return false;
  }
  setCustomText(r.text);
  if (area.value !== r.text) area.value = r.text;
  say('data.ok', { chars: r.chars.toLocaleString('en-US'), vocab: r.distinct });
  runs.customTextChanged();
  emit('data', { corpus: 'custom' });
  return true;
}

async function onFile() {
  const f = file.files?.[0];
  if (!f) return;
  if (f.size > MAX_USER_BYTES) {
    say('data.err.size', { size: formatBytes(f.size), limit: formatBytes(MAX_USER_BYTES) }, true);
  } else {
    useText(new Uint8Array(await f.arrayBuffer()));
  }
  file.value = '';
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
  box.hidden = !(values.corpus === 'custom' && values.arch !== 'encoder_decoder');
  box.querySelector('#custom-limit').textContent = t('data.limit', { limit: formatBytes(MAX_USER_BYTES) });
  msg.textContent = t(state.key, state.vars);
}

export function mount() {
  on('values', ({ values }) => render(values));
  on('lang', () => runs.selectedRun() && render(runs.selectedRun().values));
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
