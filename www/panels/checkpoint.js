// Checkpoints: download the selected run as .safetensors, or load one as a new run.
import { $ } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { download } from '../export.js';

function say(text, bad = false) {
  const m = $('#ckpt-msg');
  m.textContent = text;
  m.classList.toggle('bad', bad);
}

async function save() {
  const rec = runs.selectedRun();
  if (!rec?.handle) return say(t('ckpt.none'), true);
  try {
    const bytes = await rec.handle.save();
    const name = `transformer-playground-run${rec.no}-step${rec.stepCount}.safetensors`;
    download(name, new Blob([bytes], { type: 'application/octet-stream' }));
    say(t('ckpt.saved', { name }));
  } catch (e) {
    say(t('use.error', { msg: e.message }), true);
  }
}

async function load() {
  const input = $('#ckpt-file');
  const f = input.files?.[0];
  if (!f) return;
  input.value = '';
  try {
    const rec = await runs.loadCheckpoint(new Uint8Array(await f.arrayBuffer()));
    say(t('ckpt.loaded', { name: f.name, step: rec.stepCount, n: rec.no }));
  } catch (e) {
    say(t('ckpt.error', { name: f.name, msg: e.key ? t(e.key, e.vars) : e.message }), true);
  }
}

function buttons() {
  $('#ckpt-save').disabled = !runs.selectedRun()?.handle;
}

export function mount() {
  $('#ckpt-save').addEventListener('click', save);
  $('#ckpt-file').addEventListener('change', load);
  on('runs', buttons);
  on('lang', () => say(''));
  buttons();
}
