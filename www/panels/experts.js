// The expert load of a Mixture-of-Experts run, live: a table of its MoE layers × experts, each cell the share of the
// last step's (token, choice) assignments that went to that expert (shaded against an even split, 1/E), then the
// assignments dropped over the capacity and the layer's balance E·Σf·P (1 when even). It follows the progress
// events of the selected run (runs.js keeps the last step's load); the balancing-loss curves are in charts.js.
import { $, h, fill, paced } from '../dom.js';
import { t, getLang } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { grouped } from '../format.js';

// One colour per expert, the same in this table and in the attention panel's routing: ten well-separated hues,
// and evenly spaced hues beyond ten experts.
const PALETTE = ['#2563eb', '#ea580c', '#059669', '#9333ea', '#db2777', '#0891b2', '#ca8a04', '#4b5563', '#dc2626', '#65a30d'];

/** The colour of expert `e` of `n`. */
export function expertColor(e, n) {
  if (n <= PALETTE.length) return PALETTE[e % PALETTE.length];
  return `hsl(${Math.round((e * 360) / n)} 65% 45%)`;
}

/** 'blocks.3' → "Layer 3", 'decoder.blocks.0' → "Decoder layer 0" (the words of the attention panel's routing). */
export function layerName(name) {
  const m = /^(?:(encoder|decoder)\.)?blocks\.(\d+)$/.exec(name);
  if (!m) return name;
  return m[1] ? t(`att.routes.layer.${m[1]}`, { n: m[2] }) : t('att.routes.layer', { n: m[2] });
}

const RAMP = [[0, 248, 250, 252], [0.25, 204, 251, 241], [0.5, 94, 234, 212], [0.75, 13, 148, 136], [1, 19, 78, 74]];

/** The shade of a share: white at 0, mid-teal at an even split (1/E), darkest at twice that or more. */
function shade(share, n) {
  const x = Math.max(0, Math.min(1, (share * n) / 2));
  let i = 1;
  while (i < RAMP.length - 1 && RAMP[i][0] < x) i++;
  const [a, b] = [RAMP[i - 1], RAMP[i]];
  const f = (x - a[0]) / (b[0] - a[0]);
  const c = [1, 2, 3].map((k) => Math.round(a[k] + f * (b[k] - a[k])));
  return { bg: `rgb(${c[0]},${c[1]},${c[2]})`, dark: x > 0.6 };
}

const pct = (x) => (x === 0 ? '0%' : `${(100 * x).toFixed(x < 0.095 ? 1 : 0)}%`);

function render() {
  const rec = runs.selectedRun();
  const table = $('#expert-load');
  const empty = $('#expert-empty');
  const load = rec?.values.moe ? rec.history.load : null;
  $('#expert-note').textContent = load ? t('chart.experts.note', { n: rec.no, step: grouped(load.step) }) : '';
  const n = load?.layers[0]?.load.length ?? (Number(rec?.values.experts) || 0);
  $('#expert-help').textContent = t('chart.experts.help', { even: n ? `1/${n} = ${(100 / n).toPrecision(3).replace(/\.?0+$/, '')}%` : '1/E' });
  if (!load) {
    empty.textContent = rec && !rec.values.moe ? t('chart.experts.dense', { n: rec.no }) : t('chart.experts.none');
    empty.hidden = false;
    table.hidden = true;
    table.replaceChildren();
    delete table.dataset.shape;
    return;
  }
  empty.hidden = true;
  table.hidden = false;
  // The same layers, experts and language as the table shown: only the cells change (a step's update stays cheap
  // with 64 experts); anything else draws it anew.
  const shape = JSON.stringify([getLang(), n, load.layers.map((l) => l.layer)]);
  if (table.dataset.shape !== shape) {
    table.dataset.shape = shape;
    fill(table, h('thead', {}, header(n)), h('tbody', {}, load.layers.map((l) => h('tr', { dataset: { layer: l.layer } },
      h('th', { scope: 'row' }, layerName(l.layer)),
      l.load.map(() => h('td', { class: 'share' })),
      h('td', { class: 'num dropped' }),
      h('td', { class: 'num balance' })))));
  }
  load.layers.forEach((l, i) => {
    const tr = table.tBodies[0].rows[i];
    l.load.forEach((share, e) => {
      const cell = tr.cells[1 + e];
      const { bg, dark } = shade(share, n);
      cell.className = `share${dark ? ' dark' : ''}`;
      cell.dataset.share = String(share);
      cell.title = t('chart.experts.cell', { layer: layerName(l.layer), e, share: pct(share) });
      cell.textContent = n <= 16 ? pct(share) : '';
      cell.style.background = bg;
    });
    const dropped = tr.cells[1 + n];
    dropped.textContent = grouped(l.dropped);
    dropped.classList.toggle('some', l.dropped > 0);
    tr.cells[2 + n].textContent = Number.isFinite(l.balance) ? l.balance.toFixed(3) : '—';
  });
}

/** The header row: the layer column, one column per expert (with its colour), dropped, balance. */
function header(n) {
  return h('tr', {},
    h('th', { scope: 'col' }, t('chart.experts.layer')),
    Array.from({ length: n }, (_, e) => {
      const chip = h('span', { class: 'xp-chip', attrs: { 'aria-hidden': 'true' } });
      chip.style.background = expertColor(e, n);
      return h('th', { scope: 'col', class: 'xp-col', title: t('chart.experts.expert', { e }) }, chip, String(e));
    }),
    h('th', { scope: 'col', class: 'num' }, t('chart.experts.dropped')),
    h('th', { scope: 'col', class: 'num' }, t('chart.experts.balance')));
}

// Steps come by the dozen a second: the table follows four times a second.
const renderPaced = paced(render, 250);

export function mount() {
  on('progress', ({ rec }) => rec === runs.selectedRun() && renderPaced());
  on('runs', render);
  on('values', render);
  on('lang', render);
  render();
}
