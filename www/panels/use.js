// Use the selected run's model: a GPT continues a prompt (streamed; temperature, top-k, top-p, length, seed; N
// continuations side by side over the paged KV cache, whose block table panels/kv.js draws as it fills; Cancel
// stops them), a BERT ranks the five likeliest characters for each [MASK], an encoder-decoder maps an input of its task to an
// output (with the right answer beside it), and on a denoising task (T5 span corruption, BART text infilling) shows a
// corrupted val example, the model's reconstruction and the truth. Model text is inserted as text only.
import { $, h, fill, showToken, perFrame } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { getCustomText, taskExample, taskSample } from '../data.js';
import { DENOISE_TASKS } from '../options.js';
import { getEngine } from '../engine.js';
import { showKv, endKv, clearKv, mount as mountKv } from './kv.js';

let shownFor = null; // the setup the default inputs were chosen for
let generating = null; // the Run whose generation is under way (for Cancel)

function defaults(values) {
  if (values.arch === 'encoder_decoder') return { input: taskSample(values.task, values.digits) };
  if (values.corpus === 'sums') return { prompt: '12+', mask: '12+34=[MASK]6' };
  if (values.corpus === 'custom') {
    const line = (getCustomText() ?? '').split('\n').find((l) => l.trim().length > 3) ?? '';
    const s = [...line].slice(0, 24);
    return { prompt: s.slice(0, 8).join(''), mask: s.length > 4 ? [...s.slice(0, 3), '[MASK]', ...s.slice(4)].join('') : '[MASK]' };
  }
  return { prompt: 'ROMEO:', mask: 'To be, or not to [MASK]e: that is' };
}

function mode(values) {
  if (values?.arch === 'encoder_decoder') return DENOISE_TASKS.includes(values.task) ? 'denoise' : 'decode';
  return values?.arch === 'bert' ? 'mask' : 'generate';
}

function setBusy(button, busy) {
  button.disabled = busy;
  button.setAttribute('aria-busy', String(busy));
}

function fail(out, e) {
  fill(out, h('span', { class: 'bad' }, t('use.error', { msg: e.message })));
}

async function handleFor() {
  const rec = runs.selectedRun();
  if (!rec) throw new Error(t('use.noModel'));
  return runs.ensureBuilt(rec);
}

/** A number input's value: a number, or NaN when empty (the engine names the field it refuses). */
const numberIn = (sel) => Number($(sel).value.trim() || NaN);

async function generate() {
  const out = $('#gen-out');
  const many = $('#gen-many');
  const btn = $('#gen-go');
  const cancel = $('#gen-cancel');
  setBusy(btn, true);
  const prompt = $('#gen-prompt').value;
  const maxTokens = numberIn('#gen-length');
  out.hidden = false;
  many.hidden = true;
  delete out.dataset.done;
  if (!(Number.isInteger(maxTokens) && maxTokens > 0)) {
    // 0 would generate nothing and say nothing.
    fill(out, h('span', { class: 'bad' }, t('use.noLength')));
    setBusy(btn, false);
    return;
  }
  const n = numberIn('#gen-n');
  const seed = Number($('#gen-seed').value);
  // One continuation in #gen-out as ever; several side by side, a column each, made as their text comes.
  const gen = h('span', { class: 'generated' });
  fill(out, h('span', { class: 'prompt-echo' }, prompt), gen);
  many.replaceChildren();
  const cols = [];
  const column = (i) => {
    while (cols.length <= i) {
      const k = cols.length;
      cols.push(h('span', { class: 'generated' }));
      many.append(h('div', { class: 'gen-cont', dataset: { index: k } },
        h('div', { class: 'cont-head' }, t('use.cont', { i: k, seed: seed + k })),
        h('pre', { class: 'output' }, h('span', { class: 'prompt-echo' }, prompt), cols[k])));
    }
    return cols[i];
  };
  const textOf = (i) => (n > 1 ? column(i) : gen);
  // Several continuations stream several times the text: their pieces go into the page once a frame.
  const waiting = new Map();
  const flush = perFrame(() => {
    for (const [i, text] of waiting) textOf(i).append(text);
    waiting.clear();
  });
  clearKv();
  try {
    const run = await handleFor();
    const { n_heads: nh, n_kv_heads: nkv, ctx_len: ctx } = run.config.model;
    generating = run;
    cancel.disabled = false;
    const r = await run.generate({
      prompt,
      n,
      blockSize: numberIn('#gen-block'),
      maxTokens,
      temperature: Number($('#gen-temperature').value),
      topK: Number($('#gen-topk').value),
      topP: Number($('#gen-topp').value),
      seed,
      // Streamed pieces are appended as text nodes.
      onText: (piece, i) => {
        if (n === 1) return gen.append(piece);
        out.hidden = true;
        many.hidden = false;
        waiting.set(i, (waiting.get(i) ?? '') + piece);
        flush();
      },
      onKv: (view) => showKv(view, { nh, nkv, ctx }),
    });
    waiting.clear();
    r.texts.forEach((text, i) => {
      textOf(i).textContent = text;
    });
    out.hidden = n > 1;
    many.hidden = !(n > 1);
    if (r.stopped === 'cancelled') (n > 1 ? many : out).append(h('span', { class: 'gen-note' }, t('use.cancelled')));
    endKv(r.stopped, r.kv);
    out.dataset.done = '1';
    out.dataset.stopped = r.stopped;
  } catch (e) {
    out.hidden = false;
    many.hidden = true;
    fail(out, e);
  } finally {
    generating = null;
    cancel.disabled = true;
    setBusy(btn, false);
  }
}

/** Draws the N and block-size inputs with the core's bounds. */
function applyGenerationLimits(engine) {
  const lim = engine?.limits?.generation;
  if (!lim) return;
  $('#gen-n').max = lim.max_n;
  $('#gen-block').max = lim.max_block_size;
}

async function fillMask() {
  const out = $('#mask-out');
  const btn = $('#mask-go');
  const text = $('#mask-text').value;
  if (!text.includes('[MASK]')) {
    fill(out, h('span', { class: 'bad' }, t('use.noMask')));
    return;
  }
  setBusy(btn, true);
  try {
    const run = await handleFor();
    const fills = await run.fillMask(text, { k: 5 });
    fill(out, fills.map((f) => h('div', { class: 'mask-fill' },
      h('div', { class: 'mask-title' }, t('use.maskAt', { p: f.position })),
      h('ol', { class: 'cands' }, f.candidates.map(([tok, p]) => {
        const bar = h('span', { class: 'pbar' });
        bar.style.width = `${Math.max(1, p * 100).toFixed(1)}%`;
        return h('li', {}, h('span', { class: 'tok' }, showToken(tok)), h('span', { class: 'barbox' }, bar), h('span', { class: 'p' }, `${(p * 100).toFixed(1)}%`));
      })))));
  } catch (e) {
    fail(out, e);
  } finally {
    setBusy(btn, false);
  }
}

async function decode() {
  const out = $('#dec-out');
  const btn = $('#dec-go');
  setBusy(btn, true);
  try {
    const run = await handleFor();
    // maxTokens 0: as many as the task's answer has (greedy decoding).
    const r = await run.decode($('#dec-input').value, { temperature: 0, maxTokens: 0 });
    const ok = r.answer !== null && r.answer !== undefined && r.output === r.answer;
    fill(out,
      h('dl', { class: 'dec' },
        h('dt', {}, t('use.output')), h('dd', { class: 'mono', id: 'dec-output' }, r.output),
        r.answer !== null && r.answer !== undefined ? [h('dt', {}, t('use.expected')), h('dd', { class: 'mono' }, r.answer)] : null),
      r.answer !== null && r.answer !== undefined ? h('span', { class: `verdict ${ok ? 'good' : 'bad'}` }, ok ? `✓ ${t('use.correct')}` : `✗ ${t('use.wrong')}`) : null);
  } catch (e) {
    fail(out, e);
  } finally {
    setBusy(btn, false);
  }
}

/** Text as spans, the characters at `marked(i)` in a <mark> (runs of them together). */
function marked(text, isMarked, cls) {
  const chars = [...text];
  const parts = [];
  let i = 0;
  while (i < chars.length) {
    const m = isMarked(i);
    let j = i;
    while (j < chars.length && isMarked(j) === m) j++;
    const s = chars.slice(i, j).join('');
    parts.push(m ? h('mark', { class: cls }, s) : s);
    i = j;
  }
  return parts;
}

/** Tokens, the special ones (sentinels, [MASK]) marked. */
function tokens(list, special) {
  return list.map((tok, i) => (special(tok, i) ? h('mark', { class: 'special' }, tok) : tok));
}

async function denoise() {
  const out = $('#den-out');
  const btn = $('#den-go');
  setBusy(btn, true);
  try {
    const run = await handleFor();
    const seed = Number($('#den-seed').value) || 0;
    const r = await run.denoiseExample({ seed });
    if (!r) throw new Error(t('use.noModel'));
    const hidden = new Set(r.spans.flatMap(([s, l]) => Array.from({ length: l }, (_, k) => s + k)));
    const pct = (100 * r.charAccuracy).toFixed(0);
    fill(out,
      h('dl', { class: 'dec denoise' },
        h('dt', {}, t('use.den.source')), h('dd', { class: 'mono', id: 'den-source' }, tokens(r.source, (_, i) => r.sourceSpecial[i])),
        r.task === 'span_corruption' ? [
          h('dt', {}, t('use.den.target')), h('dd', { class: 'mono', id: 'den-target' }, tokens(r.target, (_, i) => r.targetSpecial[i])),
          h('dt', {}, t('use.den.output')), h('dd', { class: 'mono', id: 'den-output' }, tokens(r.output, (_, i) => r.outputSpecial[i])),
        ] : null,
        h('dt', {}, t('use.den.recon')), h('dd', { class: 'mono', id: 'den-recon' }, r.reconTokens.map((tok, i) => (r.reconFilled[i]
          ? h('mark', { class: r.reconMiss[i] ? 'miss' : 'filled' }, tok) : tok))),
        h('dt', {}, t('use.den.truth')), h('dd', { class: 'mono', id: 'den-truth' }, marked(r.truth, (i) => hidden.has(i), 'hidden'))),
      h('span', { class: `verdict ${r.charAccuracy === 1 ? 'good' : ''}`, id: 'den-accuracy' }, t(`use.den.accuracy.${r.task}`, { pct })));
    out.dataset.done = '1';
  } catch (e) {
    fail(out, e);
  } finally {
    setBusy(btn, false);
  }
}

function render() {
  const rec = runs.selectedRun();
  const values = rec?.values;
  const m = mode(values);
  for (const [id, k] of [['use-generate', 'generate'], ['use-mask', 'mask'], ['use-decode', 'decode'], ['use-denoise', 'denoise']]) $(`#${id}`).hidden = m !== k;
  if (!values) return;
  const key = JSON.stringify([values.arch, values.corpus, values.task, values.digits]);
  if (key !== shownFor) {
    shownFor = key;
    const d = defaults(values);
    if (d.prompt !== undefined) $('#gen-prompt').value = d.prompt;
    if (d.mask !== undefined) $('#mask-text').value = d.mask;
    if (d.input !== undefined) $('#dec-input').value = d.input;
    for (const id of ['#gen-out', '#gen-many', '#mask-out', '#dec-out', '#den-out']) $(id).replaceChildren();
    clearKv();
  }
  if (m === 'decode') $('#dec-help').textContent = t(`use.input.help.${values.task}`, { ex: taskSample(values.task, values.digits) });
}

export function mount() {
  $('#gen-go').addEventListener('click', generate);
  $('#gen-cancel').addEventListener('click', () => generating?.cancelGenerate().catch(() => {}));
  mountKv();
  applyGenerationLimits(getEngine());
  on('engine', ({ engine }) => applyGenerationLimits(engine));
  $('#mask-go').addEventListener('click', fillMask);
  $('#dec-go').addEventListener('click', decode);
  $('#den-go').addEventListener('click', denoise);
  $('#dec-random').addEventListener('click', () => {
    const v = runs.selectedRun()?.values;
    if (v) $('#dec-input').value = taskExample(v.task, v.digits);
  });
  for (const id of ['temperature', 'topp']) {
    const input = $(`#gen-${id}`);
    const show = () => {
      $(`#gen-${id}-value`).textContent = Number(input.value).toFixed(2);
    };
    input.addEventListener('input', show);
    show();
  }
  on('values', render);
  on('data', () => {
    shownFor = null;
    render();
  });
  on('lang', render);
  render();
}
