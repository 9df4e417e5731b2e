// Attention's cost, measured live: the engine times naive attention (T × T scores and probabilities in memory)
// against the fused one (FlashAttention, Dao et al. 2022) for each length T, forward + backward, on the page's
// backend (WASM threads, or WebGPU when the selected run trains there), one T per request so a progress bar can
// follow. Time and memory are drawn against T on log–log axes with O(T²) and O(T) guides through the first point;
// below, the current config's forward FLOPs per token of attention against its FFN as T grows (from the core's
// attentionFlops), and where attention passes the FFN. All numbers come from the engine; here they are only drawn.
import { $, h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { startEngine } from '../engine.js';
import { tick as tickLabel } from './charts.js';

const UPLOT = '../vendor/uplot/uPlot.esm.js';
const HEIGHT = 200;
const MIB = 1 << 20;
const COLORS = { naive: '#dc2626', flash: '#2563eb', guide: '#9ca3af', attention: '#9333ea', ffn: '#059669' };

let rows = []; // the last sweep's rows, in T order
let flops = null; // engine.attentionFlops of the current config
let config = null; // the current (checked) config
let edited = false; // the user changed heads / head size: the config no longer sets them
let running = false;
let uPlot = null;
const charts = {}; // name → uPlot

/**
 * The backend the sweep runs on: WebGPU when the selected run trains there ('auto' may have chosen it) or, while
 * it is not built for its current values, is set to; else the CPU.
 */
function backend() {
  const rec = runs.selectedRun();
  if (rec?.ready) return rec.handle.backend === 'webgpu' ? 'webgpu' : 'cpu';
  return rec?.values.backend === 'webgpu' ? 'webgpu' : 'cpu';
}

const num = (sel) => Number($(sel).value);

/** The lengths typed, as numbers; null (with the offending piece) when one is not a whole number. */
function lengths() {
  const raw = $('#cost-ts').value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = raw.find((s) => !/^\d+$/.test(s));
  if (bad !== undefined || raw.length === 0) return { bad: bad ?? '' };
  return { ts: [...new Set(raw.map(Number))].sort((a, b) => a - b) };
}

function spec() {
  return { heads: num('#cost-heads'), kv_heads: num('#cost-kv'), head_size: num('#cost-hs'), batch: num('#cost-batch') };
}

const say = (text, kind = '') => {
  const msg = $('#cost-msg');
  msg.textContent = text;
  msg.dataset.kind = kind;
};

async function sweep() {
  if (running) return;
  say('');
  const { ts, bad } = lengths();
  if (!ts) return say(t('cost.badT', { value: bad }), 'error');
  const be = backend();
  const opts = { spec: spec(), backend: be };
  const name = t(`cost.backend.${be}`);
  const bar = $('#cost-progress');
  running = true;
  $('#cost-go').disabled = true;
  try {
    const engine = await startEngine();
    // The core refuses a bad value (heads that cannot share kv heads, T = 0, …) before the first row runs.
    for (const x of ts) await engine.attentionCost(x, { ...opts, check: true });
    rows = [];
    bar.hidden = false;
    for (const [i, x] of ts.entries()) {
      bar.value = i / ts.length;
      say(t('cost.running', { t: x, i: i + 1, n: ts.length, backend: name }));
      rows.push(await engine.attentionCost(x, opts));
      render();
    }
    bar.value = 1;
    say(t('cost.done', { backend: name }));
  } catch (e) {
    say(t('cost.failed', { msg: e.message }), 'error');
  } finally {
    running = false;
    bar.hidden = true;
    $('#cost-go').disabled = false;
  }
}

/** y0·(x/x0)^p at every x: a guide of slope p through (x0, y0) on log–log axes. */
const guide = (xs, x0, y0, p) => xs.map((x) => (y0 == null ? null : y0 * (x / x0) ** p));

const mib = (b) => b / MIB;
const fmt = (x, digits = 3) => (x == null ? '—' : Number(x.toPrecision(digits)).toString());

function logOptions(width, yLabel, series) {
  const axis = { stroke: '#555', grid: { stroke: '#eee' }, ticks: { stroke: '#ddd' }, font: '11px system-ui, sans-serif' };
  const tick = (u, splits) => splits.map((v) => tickLabel(v));
  return {
    width,
    height: HEIGHT,
    series: [{ label: 'T' }, ...series],
    scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
    axes: [
      { ...axis, label: t('cost.axisT'), labelSize: 14, labelFont: '11px system-ui, sans-serif', size: 30, values: tick },
      { ...axis, size: 58, values: tick, label: yLabel, labelSize: 14, labelFont: '11px system-ui, sans-serif' },
    ],
    legend: { show: true, live: true },
  };
}

function draw(name, opts, data) {
  const box = $(`#chart-cost-${name}`);
  charts[name]?.destroy();
  box.replaceChildren();
  charts[name] = new uPlot(opts(Math.max(220, box.clientWidth)), data, box);
}

const line = (label, stroke, extra = {}) => ({ label, stroke, width: 1.75, points: { show: true, size: 5 }, ...extra });
const guideLine = (label) => ({ label, stroke: COLORS.guide, width: 1, dash: [4, 4], points: { show: false } });

function renderTable() {
  const table = $('#cost-table');
  table.hidden = rows.length === 0;
  fill($('#cost-table tbody'), rows.map((r) => h('tr', {},
    h('th', { scope: 'row', class: 'num' }, String(r.t)),
    h('td', { class: 'num' }, r.naive_ms == null ? h('span', { class: 'note', title: r.note ?? '' }, t('cost.skipped', { mib: fmt(mib(r.naive_bytes)) })) : fmt(r.naive_ms)),
    h('td', { class: 'num' }, fmt(r.flash_ms)),
    h('td', { class: 'num' }, fmt(mib(r.naive_bytes))),
    h('td', { class: 'num' }, fmt(mib(r.flash_bytes))))));
}

function renderNow() {
  renderTable();
  $('#cost-charts').hidden = rows.length === 0;
  const needPlot = rows.length > 0 || flops;
  if (needPlot && !uPlot) {
    import(UPLOT).then((m) => {
      uPlot = m.default;
      renderNow();
    });
    return;
  }
  if (rows.length > 0) {
    const xs = rows.map((r) => r.t);
    const first = (k) => rows.find((r) => r[k] != null);
    const n0 = first('naive_ms');
    const f0 = rows[0];
    draw('time', (w) => logOptions(w, 'ms', [line(t('cost.naive'), COLORS.naive), line(t('cost.flash'), COLORS.flash), guideLine(t('cost.guide2')), guideLine(t('cost.guide1'))]),
      [xs, rows.map((r) => r.naive_ms), rows.map((r) => r.flash_ms), guide(xs, n0?.t ?? f0.t, n0?.naive_ms ?? f0.flash_ms, 2), guide(xs, f0.t, f0.flash_ms, 1)]);
    draw('memory', (w) => logOptions(w, 'MiB', [line(t('cost.naive'), COLORS.naive), line(t('cost.flash'), COLORS.flash), guideLine(t('cost.guide2')), guideLine(t('cost.guide1'))]),
      [xs, rows.map((r) => mib(r.naive_bytes)), rows.map((r) => mib(r.flash_bytes)), guide(xs, f0.t, mib(f0.naive_bytes), 2), guide(xs, f0.t, mib(f0.flash_bytes), 1)]);
  }
  $('#cost-flops-box').hidden = !flops;
  if (flops) {
    $('#cost-flops-note').textContent = t('cost.flops.note', { t: flops.crossover_t, ctx: flops.ctx_len });
    const xs = flops.rows.map((r) => r.t);
    draw('flops', (w) => logOptions(w, 'FLOPs', [line(t('cost.flops.attention'), COLORS.attention), line(t('cost.flops.ffn'), COLORS.ffn)]),
      [xs, flops.rows.map((r) => r.attention), flops.rows.map((r) => r.ffn)]);
  }
}

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderNow();
  });
}

let flopsSeq = 0;
/** A new checked config: its FLOPs curves, and (unless the user set them) its heads and head size. */
async function onConfig(cfg) {
  config = cfg;
  const m = cfg?.model;
  if (m && !edited) {
    $('#cost-heads').value = m.n_heads;
    $('#cost-kv').value = m.n_kv_heads ?? m.n_heads;
    $('#cost-hs').value = Math.floor(m.d_model / m.n_heads);
  }
  const seq = ++flopsSeq;
  const engine = await startEngine().catch(() => null);
  let f = null;
  try {
    f = engine && config ? await engine.attentionFlops(config) : null;
  } catch {
    f = null; // an impossible config: the summary already says why
  }
  if (seq !== flopsSeq) return;
  flops = f;
  render();
}

export function mount() {
  $('#cost-go').addEventListener('click', sweep);
  for (const sel of ['#cost-heads', '#cost-kv', '#cost-hs']) $(sel).addEventListener('input', () => (edited = true));
  on('check', ({ error, config: cfg }) => onConfig(error ? null : cfg));
  on('lang', render);
  new ResizeObserver(() => render()).observe($('#sec-cost'));
}

/** For the tests: the last sweep's rows and the FLOPs rows. */
export function state() {
  return { rows, flops, running, backend: backend() };
}
