// The list of runs: colour, number, status, step, loss, and how each run's setup differs from the first run's.
// Clicking a run shows it (its settings go to the configuration panel and the URL).
import { $, h, fill, perFrame, paced } from '../dom.js';
import { t, has } from '../i18n.js';
import { on } from '../bus.js';
import { BY_KEY, diffKeys } from '../options.js';
import * as runs from '../runs.js';
import { loss as fmtLoss, grouped } from '../format.js';

/** Milliseconds with three significant digits (0.912, 12.3, 145). */
const fmtMs = (ms) => (ms >= 100 ? ms.toFixed(0) : ms.toPrecision(3));

/** A value as a user reads it: a choice by its name, a switch as on/off, a number as is. */
export function showValue(key, v) {
  const o = BY_KEY[key];
  if (o.type === 'choice') return t(`opt.${key}.v.${v}`);
  if (o.type === 'bool') return v ? '✓' : '✗';
  if (v === null || v === undefined) return t(has(`opt.${key}.empty`) ? `opt.${key}.empty` : 'opt.auto');
  return String(v);
}

/** "Norm placement: Pre-LN → Sandwich-LN" lines for a run against the reference run. */
export function diffText(ref, rec, max = 4) {
  const keys = diffKeys(ref.values, rec.values);
  const lines = keys.slice(0, max).map((k) => `${t(`opt.${k}.label`)}: ${showValue(k, ref.values[k])} → ${showValue(k, rec.values[k])}`);
  if (keys.length > max) lines.push(t('runs.more', { n: keys.length - max }));
  return { keys, lines };
}

function item(rec, ref, sel) {
  const isRef = rec === ref;
  const { keys, lines } = isRef ? { keys: [], lines: [] } : diffText(ref, rec);
  const name = t('runs.run', { n: rec.no });
  const status = h('span', { class: `status status-${rec.status}` }, t(`status.${rec.status}`));
  const selectBtn = h('button', {
    type: 'button',
    class: 'run-select',
    attrs: { 'aria-pressed': String(rec === sel), 'aria-label': t('runs.select', { n: rec.no }) },
    on: { click: () => runs.select(rec) },
  },
  h('span', { class: 'swatch', attrs: { 'aria-hidden': 'true' } }),
  h('span', { class: 'run-name' }, name),
  status);
  selectBtn.querySelector('.swatch').style.background = rec.color;
  const stats = h('span', { class: 'run-stats' },
    t('runs.stepOf', { step: grouped(rec.stepCount), total: Number.isFinite(rec.values.steps) ? grouped(rec.values.steps) : '—' }),
    rec.last ? ` · ${t('ctl.loss')} ${fmtLoss(rec.last.loss)}` : '',
    rec.msPerStep ? h('span', { class: 'run-ms', attrs: { title: t('runs.msPerStepHelp') } }, ` · ${t('runs.msPerStep', { ms: fmtMs(rec.msPerStep) })}`) : '');
  const diff = h('div', { class: 'run-diff' },
    isRef ? t('runs.reference') : keys.length === 0 ? t('runs.same', { n: ref.no }) : lines.map((l) => h('div', {}, l)));
  const message = rec.message && (rec.status === 'invalid' || rec.status === 'error')
    ? h('div', { class: 'run-msg' }, rec.message.key ? t(rec.message.key, rec.message.vars) : rec.message.text) : null;
  const remove = runs.list().length > 1
    ? h('button', { type: 'button', class: 'run-remove', attrs: { 'aria-label': t('runs.remove', { n: rec.no }), title: t('runs.remove', { n: rec.no }) }, on: { click: () => runs.remove(rec) } }, '×')
    : null;
  const li = h('li', { class: `run${rec === sel ? ' selected' : ''}`, dataset: { run: rec.no } }, selectBtn, remove, stats, diff, message);
  li.style.setProperty('--run', rec.color);
  return li;
}

const render = perFrame(() => {
  const list = runs.list();
  const sel = runs.selectedRun();
  // Redrawing replaces the buttons: keep the keyboard focus where it was.
  const active = document.activeElement;
  const focusRun = active?.closest?.('#run-list li')?.dataset.run;
  const focusClass = active?.className;
  fill($('#run-list'), list.map((rec) => item(rec, list[0], sel)));
  if (focusRun) $(`#run-list li[data-run="${focusRun}"] .${focusClass}`)?.focus();
});

// Training steps come by the dozen a second: their counts and losses follow four times a second.
const renderPaced = paced(render, 250);

export function mount() {
  on('runs', render);
  on('values', render);
  on('lang', render);
  on('progress', renderPaced);
  render();
}
