// Training curves with uPlot: loss (training batch and validation) of every run overlaid in its colour, the
// learning rate of every run, and the gradient norm of each layer of the selected run. With Mixture-of-Experts
// runs, also the balancing loss of each of them and the balance (E·Σf·P) of each MoE layer of the selected run
// (the expert-load table beside them is experts.js). Each chart exports as PNG or SVG, and every run's metrics as
// CSV (export.js).
import { $, h, perFrame, paced } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { chartSvg, chartPng, metricsCsv, download } from '../export.js';
import { diffText } from './runs.js';

// uPlot is loaded when the first curve is drawn, not before the page is usable.
const UPLOT = '../vendor/uplot/uPlot.esm.js';
let uPlot = null;
let loading = null;

export const HEIGHT = 190;
const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000];
const charts = {}; // name → { plot, signature, opts }
/** Each chart's title (string key). */
const TITLES = { loss: 'chart.loss', lr: 'chart.lr', grad: 'chart.grad', aux: 'chart.aux', balance: 'chart.balance' };

/** Union of the steps of these histories, and each history's values aligned to it (null where absent). */
function align(histories, pick) {
  const steps = [...new Set(histories.flatMap((h) => h.step))].sort((a, b) => a - b);
  const index = new Map(steps.map((s, i) => [s, i]));
  const series = histories.map((hist) => {
    const out = new Array(steps.length).fill(null);
    const ys = pick(hist);
    hist.step.forEach((s, i) => {
      out[index.get(s)] = ys[i] ?? null;
    });
    return out;
  });
  return [steps, ...series];
}

/** Colours from light to dark along the depth of the network. */
function depthColor(i, n) {
  const f = n <= 1 ? 1 : i / (n - 1);
  const hue = 200 - 170 * f;
  return `hsl(${hue.toFixed(0)} 70% ${(52 - 10 * f).toFixed(0)}%)`;
}

/** Tick labels that stay readable from 1e-5 (learning rates) to thousands. */
export function tick(v) {
  if (v === null || v === undefined) return '';
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-2 || a >= 1e5)) return v.toExponential(1).replace('.0e', 'e').replace('e-', 'e−').replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

/** uPlot options for a chart of `width` px with `series` (after the x series); shared with panels/recipes.js. */
export function baseOptions(width, series, { log = false } = {}) {
  const axis = { stroke: '#555', grid: { stroke: '#eee' }, ticks: { stroke: '#ddd' }, font: '11px system-ui, sans-serif' };
  return {
    width,
    height: HEIGHT,
    series: [{ label: t('chart.step') }, ...series],
    scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
    axes: [
      // Steps are whole numbers: no ticks in between.
      { ...axis, label: t('chart.step'), labelSize: 14, labelFont: '11px system-ui, sans-serif', size: 30, incrs: STEP_INCRS },
      { ...axis, size: 58, values: (u, splits) => splits.map(tick) },
    ],
    legend: { show: true, live: true },
    cursor: { sync: { key: 'tp' }, drag: { x: true, y: false } },
  };
}

function lossSeries(list) {
  return list.flatMap((rec) => [
    { label: t('chart.train', { n: rec.no }), stroke: rec.color, width: 1.5, spanGaps: true, points: { show: false } },
    { label: t('chart.val', { n: rec.no }), stroke: rec.color, width: 0, dash: [4, 4], spanGaps: true, points: { show: true, size: 7, fill: '#fff', stroke: rec.color, width: 2 } },
  ]);
}

function draw(name, signature, makeOpts, data) {
  const box = $(`#chart-${name}`);
  const width = Math.max(200, box.clientWidth);
  let c = charts[name];
  if (!c || c.signature !== signature) {
    c?.plot.destroy();
    box.replaceChildren();
    const opts = makeOpts(width);
    c = charts[name] = { plot: new uPlot(opts, data, box), signature, opts };
  } else {
    c.plot.setData(data);
  }
}

let turn = 0;
/** Each chart in a frame of its own (then one frame's work stays small with six runs); a newer render takes over. */
function inTurn(fns, mine = ++turn) {
  if (mine !== turn) return;
  const [first, ...rest] = fns;
  first();
  if (rest.length) requestAnimationFrame(() => inTurn(rest, mine));
}

function renderNow() {
  const list = runs.list();
  const any = list.some((r) => r.history.step.length > 0);
  $('#charts').classList.toggle('empty', !any);
  if (!any && !uPlot) return;
  if (!uPlot) {
    loading ??= import(UPLOT).then((m) => {
      uPlot = m.default;
      render();
    });
    return;
  }
  const lang = document.documentElement.lang;
  const ids = list.map((r) => `${r.no}:${r.color}`).join(',');

  inTurn([
    () => draw('loss', `${lang}|${ids}`, (w) => baseOptions(w, lossSeries(list)),
      (() => {
        const hists = list.map((r) => r.history);
        const [x, ...train] = align(hists, (hist) => hist.loss);
        const [, ...val] = align(hists, (hist) => hist.val);
        return [x, ...train.flatMap((col, i) => [col, val[i]])];
      })()),
    () => draw('lr', `${lang}|${ids}`,
      (w) => baseOptions(w, list.map((rec) => ({ label: t('chart.train', { n: rec.no }), stroke: rec.color, width: 1.5, spanGaps: true }))),
      align(list.map((r) => r.history), (hist) => hist.lr)),
    () => {
      const sel = runs.selectedRun();
      const hist = sel?.history;
      const names = hist?.layerNames ?? [];
      $('#grad-note').textContent = sel ? t('chart.grad.note', { n: sel.no }) : '';
      draw('grad', `${lang}|${sel?.no}|${names.join(',')}`,
        (w) => baseOptions(w, [
          ...names.map((n, i) => ({ label: n, stroke: depthColor(i, names.length), width: 1.25, spanGaps: true })),
          { label: t('chart.total'), stroke: '#333', width: 1, dash: [5, 3], spanGaps: true },
        ], { log: true }),
        hist ? [hist.step, ...hist.layers, hist.grad] : [[], []]);
    },
    () => {
      const moe = list.filter((r) => r.values.moe);
      $('#moe-charts').hidden = moe.length === 0;
      if (!moe.length) return;
      draw('aux', `${lang}|${moe.map((r) => `${r.no}:${r.color}`).join(',')}`,
        (w) => baseOptions(w, moe.map((rec) => ({ label: t('chart.train', { n: rec.no }), stroke: rec.color, width: 1.5, spanGaps: true }))),
        align(moe.map((r) => r.history), (hist) => hist.aux));
      const sel = runs.selectedRun();
      const hist = sel?.values.moe ? sel.history : null;
      const names = hist?.moeNames ?? [];
      $('#balance-note').textContent = sel ? t('chart.balance.note', { n: sel.no }) : '';
      draw('balance', `${lang}|${sel?.no}|${names.join(',')}`,
        (w) => baseOptions(w, names.map((n, i) => ({ label: n, stroke: depthColor(i, names.length), width: 1.25, spanGaps: true }))),
        hist && names.length ? [hist.step, ...hist.balance] : [[]]);
    },
  ]);
}

/** What a chart draws, for its export: title, series (their options as given to uPlot), data, log axis. */
function chartOf(name) {
  const c = charts[name];
  if (!c) return null;
  const note = name === 'grad' ? $('#grad-note').textContent : name === 'balance' ? $('#balance-note').textContent : '';
  return {
    title: `${t(TITLES[name])}${note ? ` ${note}` : ''}`,
    xLabel: t('chart.step'),
    data: c.plot.data,
    series: c.opts.series.slice(1),
    log: c.opts.scales.y.distr === 3,
    fmt: tick,
    canvas: c.plot.ctx.canvas,
  };
}

/** Saves chart `name` as 'png' or 'svg'; false when it has not been drawn. */
export async function exportChart(name, kind) {
  const c = chartOf(name);
  if (!c) return false;
  const file = `transformer-playground-${name}`;
  if (kind === 'svg') download(`${file}.svg`, chartSvg(c), 'image/svg+xml');
  else download(`${file}.png`, await chartPng(c));
  return true;
}

/** Every run's logged metrics as CSV, each run labelled by how its setup differs from the first run's. */
export function exportCsv() {
  const list = runs.list();
  const rows = list.map((rec, i) => ({ ...rec, no: rec.no, history: rec.history, label: i === 0 ? t('runs.reference') : diffText(list[0], rec, Infinity).lines.join('; ') }));
  download('transformer-playground-metrics.csv', metricsCsv(rows), 'text/csv');
}

/** PNG and SVG buttons in each chart's caption, and the CSV button. */
function exportButtons() {
  for (const name of Object.keys(TITLES)) {
    const cap = $(`#chart-${name}`).closest('figure').querySelector('figcaption');
    cap.append(h('span', { class: 'chart-export' }, ['png', 'svg'].map((kind) => h('button', {
      type: 'button', class: 'link', dataset: { export: `${name}.${kind}` },
      attrs: { 'data-i18n-attr': `title:chart.export.${kind}` }, on: { click: () => exportChart(name, kind) },
    }, kind.toUpperCase()))));
  }
  $('#charts-csv').addEventListener('click', exportCsv);
}

const render = perFrame(renderNow);
// Training steps come by the dozen a second: the curves follow four times a second.
const renderPaced = paced(renderNow, 250);

export function mount() {
  exportButtons();
  on('runs', render);
  on('progress', renderPaced);
  on('lang', render);
  on('values', render);
  const ro = new ResizeObserver(() => {
    for (const [name, c] of Object.entries(charts)) {
      const w = Math.max(200, $(`#chart-${name}`).clientWidth);
      if (Math.abs(c.plot.width - w) > 2) c.plot.setSize({ width: w, height: HEIGHT });
    }
  });
  ro.observe($('#charts'));
  render();
}

/** uPlot, loaded once: for the charts of other panels (panels/recipes.js). */
export function uplot() {
  loading ??= import(UPLOT).then((m) => {
    uPlot = m.default;
    render();
  });
  return loading.then(() => uPlot);
}

/** Loads uPlot ahead of the first curve (called once the page is up). */
export function preload() {
  loading ??= import(UPLOT).then((m) => {
    uPlot = m.default;
  });
}

/** For the tests: how many points each chart holds. */
export function pointCounts() {
  return Object.fromEntries(Object.entries(charts).map(([k, c]) => [k, c.plot.data[0].length]));
}
