// Positions inside the scores (lesson 4, Ke et al. 2021): for positions added to the input, the first layer's
// scores hold a position–position term. Without the projections it is p_tᵀ p_s — for sinusoidal positions a function
// of t − s alone, the same along every diagonal —; through a head's W_Q and W_K it is p_tᵀ W_Qᵀ W_K p_s, which need
// not be. Two heatmaps side by side (blue negative, red positive, each scaled to its own largest magnitude) and the
// share of each that its diagonals explain (1: purely relative). The figures are the core's (Run#positionTerms,
// src/position_terms.rs); the attention panel fetches them with its maps and hands them here.
import { $, h, fill, sizeCanvas } from '../dom.js';
import { t } from '../i18n.js';

let terms = null; // the engine's PositionTerms, or null
let why = null; // the core's reason when the run's positions have no such term
let head = 0;

/** Blue (−1) … white (0) … red (+1). */
function diverging(x) {
  const v = Math.max(-1, Math.min(1, x));
  const [r, g, b] = v >= 0 ? [255, 255 - 200 * v, 255 - 200 * v] : [255 + 200 * v, 255 + 200 * v, 255];
  return `rgb(${Math.round(r)},${Math.round(g)},${Math.round(b)})`;
}

/** Paints the n × n matrix `m` (from offset `at`) into `canvas`, `cell` px a position. */
function paint(canvas, m, at, n, cell) {
  const ctx = sizeCanvas(canvas, n * cell, n * cell);
  let max = 0;
  for (let i = 0; i < n * n; i++) max = Math.max(max, Math.abs(m[at + i]));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      ctx.fillStyle = diverging(max > 0 ? m[at + i * n + j] / max : 0);
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }
}

function figure(id, title, canvasId) {
  return h('figure', { class: 'pos-map', id },
    h('figcaption', {}, title),
    h('canvas', { id: canvasId, attrs: { role: 'img', 'aria-label': title } }));
}

/** Draws the view from `terms` (or the reason there is none). */
export function render() {
  const box = $('#att-pos');
  box.hidden = !terms && !why;
  if (box.hidden) return;
  if (!terms) {
    fill($('#pos-body'), h('p', { class: 'note', id: 'pos-none' }, t('pos.none', { msg: why })));
    return;
  }
  head = Math.min(head, terms.heads - 1);
  const n = terms.t;
  const cell = Math.max(3, Math.min(12, Math.floor(240 / n)));
  const select = h('select', { id: 'pos-head', on: { change: (ev) => { head = Number(ev.target.value); render(); } } },
    Array.from({ length: terms.heads }, (_, i) => h('option', { value: String(i), selected: i === head }, t('pos.head', { h: i }))));
  const mean = terms.projected_relative.reduce((a, b) => a + b, 0) / terms.heads;
  fill($('#pos-body'),
    h('div', { class: 'row pos-controls' }, h('label', { for: 'pos-head' }, t('pos.headLabel')), select),
    h('div', { class: 'pos-maps' },
      figure('pos-raw-fig', t('pos.raw', { kind: t(`pos.kind.${terms.position}`) }), 'pos-raw'),
      figure('pos-proj-fig', t('pos.projected', { h: head }), 'pos-proj')),
    h('p', { class: 'readout', id: 'pos-readout', dataset: { raw: String(terms.raw_relative), projected: String(terms.projected_relative[head]) } },
      t('pos.readout', {
        raw: terms.raw_relative.toFixed(3), h: head, proj: terms.projected_relative[head].toFixed(3), mean: mean.toFixed(3),
      })));
  paint($('#pos-raw'), terms.raw, 0, n, cell);
  paint($('#pos-proj'), terms.projected, head * n * n, n, cell);
}

/** The attention panel's new figures: `pt` (PositionTerms) or null with the core's reason `reason` (or none). */
export function showPositionTerms(pt, reason = null) {
  terms = pt;
  why = pt ? null : reason;
  render();
}
