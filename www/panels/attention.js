// Attention heatmaps of the selected run for a sample text: every layer and head as a thumbnail, one enlarged with
// its tokens; hovering (or moving with the arrow keys) tells the token pair and the weight. Self-attention of
// each stack and the decoder's cross-attention. Refreshed while the run trains. For a Mixture-of-Experts model, the
// same text's routing: each MoE layer × token, the token's k experts (best first), shaded by weight.
import { $, h, fill, showToken, debounce, perFrame } from '../dom.js';
import { paint as paintMap, hoverable } from './heatmap.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { getCustomText, taskSample } from '../data.js';
import { expertColor, layerName } from './experts.js';
import { showPositionTerms, render as renderPositions } from './positions.js';

let data = null; // the engine's AttentionMaps
let which = null; // 'decoder/self' …
let focus = { layer: 0, head: 0 };
let cursor = null; // { i, j } in the detail map
let inflight = false;
let again = false;
let lastAt = 0;
let sampleFor = null; // the setup the sample text was chosen for

function defaultSample(values) {
  let s;
  if (values.arch === 'encoder_decoder') return taskSample(values.task, values.digits);
  if (values.corpus === 'sums') s = '12+34=46';
  else if (values.corpus === 'custom') s = (getCustomText() ?? '').split('\n').find((l) => l.trim()) ?? '';
  else s = 'To be, or not to be';
  return [...s].slice(0, Math.min(24, Number(values.ctx_len) || 24)).join('');
}

function sampleKey(values) {
  return JSON.stringify([values.arch, values.corpus, values.task, values.digits]);
}

/** The maps of the chosen kind, by layer. */
function chosen() {
  if (!data) return [];
  return data.maps.filter((m) => `${m.stack}/${m.kind}` === which);
}

function axisTokens(m) {
  const src = data.source_tokens;
  const tgt = data.tokens;
  if (m.stack === 'encoder' && src.length) return { rows: src, cols: src };
  if (m.kind === 'cross') return { rows: tgt, cols: src };
  return { rows: tgt, cols: tgt };
}

function describe(m, head, i, j) {
  const { rows, cols } = axisTokens(m);
  const w = m.probs[head * m.t * m.s + i * m.s + j];
  return {
    short: t('att.hover', { q: showToken(rows[i]), k: showToken(cols[j]), w: w.toFixed(3) }),
    long: t('att.cell', { layer: m.layer, head, q: showToken(rows[i]), i, k: showToken(cols[j]), j, w: w.toFixed(3) }),
  };
}

/** Hover on a map canvas: the token pair and the weight in the tooltip and the readout. */
function interactive(canvas, m, head, cell, margin, onCell) {
  hoverable(canvas, m, cell, margin, {
    tip: () => $('#att-tip'), box: () => $('#sec-attention'), readout: () => $('#att-readout'),
    describe: (i, j) => describe(m, head, i, j), onCell,
  });
}

function renderDetail() {
  const maps = chosen();
  const m = maps.find((x) => x.layer === focus.layer) ?? maps[0];
  const box = $('#att-detail');
  if (!m) return box.replaceChildren();
  const head = Math.min(focus.head, m.heads - 1);
  const labels = axisTokens(m);
  const longest = Math.max(...[...labels.rows, ...labels.cols].map((x) => showToken(x).length));
  const margin = { left: 10 + 8 * longest, top: 10 + 8 * longest };
  // Beside the thumbnails when there is room, else below them at the panel's width.
  const view = $('#sec-attention .att-view').clientWidth;
  let avail = view - $('#att-grid').offsetWidth - 18;
  if (avail < 240) avail = view;
  const cell = Math.max(8, Math.min(24, Math.floor((avail - margin.left) / m.s), Math.floor(420 / m.t)));
  const canvas = h('canvas', {
    class: 'att-big',
    tabIndex: 0,
    attrs: { role: 'img', 'aria-label': t('att.map', { layer: m.layer, head }) },
  });
  paintMap(canvas, m, head, cell, { margin, labels, cursor });
  interactive(canvas, m, head, cell, margin, (c) => {
    cursor = c;
  });
  canvas.addEventListener('keydown', (ev) => {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (!moves[ev.key]) return;
    ev.preventDefault();
    cursor ??= { i: 0, j: 0 };
    cursor = { i: Math.max(0, Math.min(m.t - 1, cursor.i + moves[ev.key][0])), j: Math.max(0, Math.min(m.s - 1, cursor.j + moves[ev.key][1])) };
    paintMap(canvas, m, head, cell, { margin, labels, cursor });
    $('#att-readout').textContent = describe(m, head, cursor.i, cursor.j).long;
  });
  fill(box,
    h('div', { class: 'att-detail-title' }, `${t('att.layer', { n: m.layer })} · ${t('att.head', { n: head })}`),
    h('div', { class: 'att-axes' }, h('span', { class: 'axis-q' }, `↓ ${t('att.query')}`), h('span', { class: 'axis-k' }, `→ ${t('att.key')}`)),
    canvas);
}

function renderGrid() {
  const maps = chosen();
  const grid = $('#att-grid');
  if (!maps.length) return grid.replaceChildren();
  const size = Math.max(...maps.map((m) => Math.max(m.t, m.s)));
  // Thumbnails of about 84 px, smaller when the heads would not fit across the panel (phones).
  const heads = maps[0].heads;
  const across = Math.floor(($('#sec-attention .att-view').clientWidth - 70 - 6 * heads) / (heads * size));
  const cell = Math.max(1, Math.min(8, Math.floor(84 / size), across));
  fill(grid, maps.map((m) => h('div', { class: 'att-row' },
    h('div', { class: 'att-row-label' }, t('att.layer', { n: m.layer })),
    Array.from({ length: m.heads }, (_, head) => {
      const canvas = h('canvas', {
        class: `att-thumb${m.layer === focus.layer && head === focus.head ? ' focused' : ''}`,
        tabIndex: 0,
        attrs: { role: 'button', 'aria-label': `${t('att.layer', { n: m.layer })} · ${t('att.head', { n: head })}`, 'aria-pressed': String(m.layer === focus.layer && head === focus.head) },
      });
      paintMap(canvas, m, head, cell);
      interactive(canvas, m, head, cell, { left: 0, top: 0 });
      const pick = () => {
        focus = { layer: m.layer, head };
        cursor = null;
        renderGrid();
        renderDetail();
        $(`#att-grid .att-row:nth-child(${maps.indexOf(m) + 1}) canvas:nth-of-type(${head + 1})`)?.focus();
      };
      canvas.addEventListener('click', pick);
      canvas.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          pick();
        }
      });
      return canvas;
    }))));
}

function renderWhich() {
  const sel = $('#att-which');
  const kinds = data ? [...new Set(data.maps.map((m) => `${m.stack}/${m.kind}`))] : [];
  if (!kinds.includes(which)) which = kinds[0] ?? null;
  const label = (k) => {
    const [stack, kind] = k.split('/');
    const arch = runs.selectedRun()?.values.arch;
    return arch === 'encoder_decoder' ? t(`att.kind.${stack}.${kind}`) : t('att.kind.self');
  };
  fill(sel, kinds.map((k) => h('option', { value: k }, label(k))));
  sel.value = which ?? '';
  sel.disabled = kinds.length < 2;
}

/**
 * One table per stack: a row per MoE layer, a column per token; each cell holds the token's k experts, best first,
 * each in its expert's colour with the opacity of its weight; a dropped assignment is struck through.
 */
function renderRoutes() {
  const box = $('#att-routes');
  const routes = data?.routes ?? [];
  box.hidden = routes.length === 0;
  if (!routes.length) return $('#routes-tables').replaceChildren();
  const n = Number(runs.selectedRun()?.values.experts) || Math.max(...routes.flatMap((r) => r.experts)) + 1;
  const stacks = [...new Set(routes.map((r) => r.stack))];
  fill($('#routes-tables'), stacks.map((stack) => {
    const tokens = stack === 'encoder' && data.source_tokens.length ? data.source_tokens : data.tokens;
    const rows = routes.filter((r) => r.stack === stack).map((r) => {
      const label = layerName(`${stacks.length > 1 ? `${stack}.` : ''}blocks.${r.layer}`);
      return h('tr', { dataset: { stack, layer: String(r.layer) } },
        h('th', { scope: 'row' }, label),
        tokens.map((tok, i) => {
          const picks = Array.from({ length: r.k }, (_, j) => ({ e: r.experts[i * r.k + j], w: r.weights[i * r.k + j], dropped: r.dropped[i * r.k + j] }));
          const said = picks.map((p) => t(p.dropped ? 'att.routes.dropped' : 'att.routes.expert', { e: p.e, w: p.w.toFixed(2) })).join(', ');
          return h('td', { title: t('att.routes.cell', { layer: label, tok: showToken(tok), i, experts: said }) },
            picks.map((p) => {
              const chip = h('span', { class: `xp${p.dropped ? ' dropped' : ''}`, dataset: { e: String(p.e), w: String(p.w) } }, String(p.e));
              chip.style.background = expertColor(p.e, n);
              chip.style.opacity = String(0.3 + 0.7 * Math.max(0, Math.min(1, p.w)));
              return chip;
            }));
        }));
    });
    return h('table', { class: 'routes-table', dataset: { stack } },
      h('thead', {}, h('tr', {}, h('th', {}), tokens.map((tok) => h('th', { scope: 'col', class: 'tok' }, showToken(tok))))),
      h('tbody', {}, rows));
  }));
}

function render() {
  renderWhich();
  renderGrid();
  renderDetail();
  renderRoutes();
  renderPositions();
  const rec = runs.selectedRun();
  $('#att-empty').hidden = !!data;
  $('#att-target-row').hidden = rec?.values.arch !== 'encoder_decoder';
}

async function refresh() {
  const rec = runs.selectedRun();
  if (!rec?.ready) {
    data = null;
    showPositionTerms(null);
    $('#att-msg').textContent = '';
    return render();
  }
  if (inflight) {
    again = true;
    return;
  }
  inflight = true;
  const text = $('#att-text').value;
  const target = $('#att-target').value;
  try {
    const useTarget = rec.values.arch === 'encoder_decoder' && target !== '';
    // The position–position term (it needs no text), or the core's reason this run's positions have none.
    const [pt, reason] = await rec.handle.positionTerms().then((x) => [x, null], (e) => [null, e.message]);
    if (rec === runs.selectedRun()) showPositionTerms(pt, reason);
    const maps = await rec.handle.attention(text, useTarget ? { target } : {});
    if (rec === runs.selectedRun()) {
      data = maps;
      $('#att-msg').textContent = '';
      $('#att-msg').classList.remove('bad');
      render();
      document.getElementById('sec-attention').dataset.step = String(rec.stepCount);
    }
  } catch (e) {
    data = null;
    $('#att-msg').textContent = t('use.error', { msg: e.message });
    $('#att-msg').classList.add('bad');
    render();
  } finally {
    inflight = false;
    lastAt = performance.now();
  }
  if (again) {
    again = false;
    refresh();
  }
}

function onValues(values) {
  const key = sampleKey(values);
  // A new kind of run gets its own sample; so does a context too short for the text (a lesson's small runs).
  const tooLong = [...$('#att-text').value].length > Number(values.ctx_len);
  if (key !== sampleFor || tooLong) {
    sampleFor = key;
    $('#att-text').value = defaultSample(values);
    $('#att-target').value = '';
  }
}

export function mount() {
  const later = debounce(refresh, 400);
  $('#att-text').addEventListener('input', later);
  $('#att-target').addEventListener('input', later);
  $('#att-which').addEventListener('change', (ev) => {
    which = ev.target.value;
    focus = { layer: 0, head: 0 };
    cursor = null;
    render();
  });
  $('#att-refresh').addEventListener('click', refresh);
  on('values', ({ values }) => {
    onValues(values);
    refresh();
  });
  on('data', () => {
    sampleFor = null;
    const rec = runs.selectedRun();
    if (rec) onValues(rec.values);
  });
  on('built', ({ rec }) => rec === runs.selectedRun() && refresh());
  on('stopped', ({ rec }) => rec === runs.selectedRun() && refresh());
  on('runs', () => {
    const rec = runs.selectedRun();
    if (!rec?.ready && data) {
      data = null;
      showPositionTerms(null);
      render();
    }
  });
  on('progress', ({ rec }) => {
    if (rec === runs.selectedRun() && performance.now() - lastAt > 1000) refresh();
  });
  on('lang', render);
  let width = 0;
  new ResizeObserver(perFrame(() => {
    const w = $('#sec-attention .att-view').clientWidth;
    if (data && Math.abs(w - width) > 4) renderDetail();
    width = w;
  })).observe($('#sec-attention .att-view'));
  render();
}
