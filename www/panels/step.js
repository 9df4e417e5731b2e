// One training step in slow motion (the engine's run.trace(), src/trace.rs): the step the selected run would take
// next, stage by stage — the forward pass op by op with the live tensor's shape, its first values, its statistics
// and a small heatmap (sequence 0 of the batch; head 0 where there are heads); the loss; the backward pass in
// reverse with each parameter's gradient; AdamW's moments and the update of each parameter tensor. Each stage names
// the function that computes it and the section of docs/MODEL.md with its formula, which opens under the stage as
// text (model-doc.js: read from the file, so it works offline; it stays open from stage to stage). Previous / Next /
// Run to end move through the stages (also ← and → on the list); "Trace next step" traces the run's next step again.
// The run is not advanced by a trace. Every number is the core's; this module lays them out.
import { $, h, fill, showToken, sizeCanvas } from '../dom.js';
import { t, has } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { MODEL_MD, modelSection } from '../model-doc.js';

let trace = null; // the engine's StepTrace
let at = 0; // the stage shown
let busy = false;
let formulaOpen = false; // the stage's formula shown under it; kept as the stages change
let formulaSeq = 0; // the latest formula asked for: an earlier answer arriving late is dropped

/** A number as people read it: 4 significant digits, exponent form when tiny or huge. */
function num(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a < 1e-3 || a >= 1e5 ? x.toExponential(2) : String(Number(x.toPrecision(4)));
}

/**
 * Blue for negative, white for 0, red for positive, scaled by the largest magnitude; probabilities in blue. The
 * shade follows √(|v| / max), so that the many small values beside a few large ones stay visible.
 */
function colour(v, max, positive) {
  const f = max > 0 ? Math.sqrt(Math.min(1, Math.abs(v) / max)) : 0;
  const g = Math.round(255 * (1 - f));
  if (positive) return `rgb(${g},${Math.round(255 - 150 * f)},255)`;
  return v >= 0 ? `rgb(255,${g},${g})` : `rgb(${g},${g},255)`;
}

function heatmap(heat, positive) {
  const cell = Math.max(4, Math.min(12, Math.floor(256 / Math.max(heat.rows, heat.cols))));
  const canvas = h('canvas', { class: 'step-heat', attrs: { role: 'img', 'aria-label': t('step.heat.aria', { r: heat.of[0], c: heat.of[1] }) } });
  const ctx = sizeCanvas(canvas, heat.cols * cell, heat.rows * cell);
  const max = heat.cells.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  heat.cells.forEach((v, i) => {
    ctx.fillStyle = colour(v, max, positive);
    ctx.fillRect((i % heat.cols) * cell, Math.floor(i / heat.cols) * cell, cell, cell);
  });
  const pooled = heat.of[0] !== heat.rows || heat.of[1] !== heat.cols;
  return h('figure', { class: 'step-fig' }, canvas,
    h('figcaption', {}, t(pooled ? 'step.heat.pooled' : 'step.heat.cap', {
      rows: heat.axes[0], cols: heat.axes[1], r: heat.of[0], c: heat.of[1], hr: heat.rows, hc: heat.cols,
    }), ' ', t(positive ? 'step.heat.prob' : 'step.heat.signed', { max: num(max) })));
}

/** A stage's name in the page's language: the shape flow's name for its id where there is one. */
function stageName(s) {
  let name;
  if (s.tensor) name = s.tensor;
  else if (s.id === 'norm') name = t('step.s.norm');
  else name = has(`step.s.${s.id}`) ? t(`step.s.${s.id}`) : t(`shp.s.${s.id}`);
  const where = [s.stack && !s.tensor && t(`step.stack.${s.stack}`), s.layer !== undefined && !s.tensor && t('step.layer', { n: s.layer })].filter(Boolean);
  return where.length ? `${name} · ${where.join(' · ')}` : name;
}

function stats(s) {
  const row = (key, v) => [h('dt', {}, t(key)), h('dd', {}, v)];
  const m = s.summary;
  return h('dl', { class: 'step-stats' },
    row('step.shape', `(${s.shape.join(', ')})`),
    row('step.values', m.values.map(num).join(', ') + (m.values.length ? ' …' : '')),
    row('step.stats', t('step.stats.v', { mean: num(m.mean), std: num(m.std), min: num(m.min), max: num(m.max) })),
    row(s.pass === 'update' ? 'step.dnorm' : s.pass === 'backward' ? 'step.gnorm' : 'step.norm', num(m.norm)),
    s.param_norm !== undefined ? row('step.pnorm', num(s.param_norm)) : null,
    s.m_norm !== undefined ? row('step.m', num(s.m_norm)) : null,
    s.v_rms !== undefined ? row('step.v', num(s.v_rms)) : null,
    s.ratio !== undefined ? row('step.ratio', num(s.ratio)) : null,
    row('step.source', h('code', {}, s.source)),
    row('step.doc', h('button', {
      type: 'button', class: 'link', id: 'step-doc',
      attrs: { 'aria-expanded': String(formulaOpen), 'aria-controls': 'step-formula' },
      on: { click: () => {
        formulaOpen = !formulaOpen;
        renderDetail();
        $('#step-doc').focus();
      } },
    }, `docs/${s.doc}`)));
}

/** The formula of the stage, `MODEL.md#<anchor>`: its section's heading and text, filled in once read. */
function formula(link) {
  const box = h('section', { class: 'step-formula', id: 'step-formula', hidden: !formulaOpen, attrs: { 'aria-live': 'polite' } });
  if (!formulaOpen) return box;
  const seq = ++formulaSeq;
  fill(box, h('p', { class: 'help' }, t('step.formula.loading', { file: MODEL_MD })));
  modelSection(link).then(
    (sec) => seq === formulaSeq && fill(box,
      h('h4', {}, sec.heading),
      h('pre', { class: 'step-formula-text' }, sec.body),
      h('p', { class: 'help' }, t('step.formula.from', { file: `${MODEL_MD} § ${sec.heading}` }))),
    (e) => seq === formulaSeq && fill(box, h('p', { class: 'msg bad' }, t('step.formula.error', { msg: e.message }))));
  return box;
}

/** The vocabulary size: the logits' last dimension. */
function vocab() {
  return trace.stages.find((s) => s.id === 'logits')?.shape.at(-1) ?? 0;
}

function renderDetail() {
  const box = $('#step-detail');
  if (!trace) return fill(box);
  const s = trace.stages[at];
  const what = s.pass === 'loss'
    ? t('step.what.loss', { loss: num(trace.loss), v: vocab(), u: num(Math.log(vocab())) })
    : t(has(`step.what.${s.id}`) ? `step.what.${s.id}` : `step.what.${s.pass}`);
  fill(box,
    h('h3', {}, t('step.of', { i: at + 1, n: trace.stages.length }), ' — ', stageName(s)),
    h('p', { class: 'step-what' }, what),
    stats(s),
    formula(s.doc),
    s.heat ? heatmap(s.heat, s.id === 'scores' || s.id === 'cross_scores' || s.id === 'moe_router') : null);
}

function renderList() {
  const list = $('#step-list');
  if (!trace) return fill(list);
  const passes = ['forward', 'loss', 'backward', 'update'];
  fill(list, passes.map((p) => {
    const items = trace.stages.map((s, i) => [s, i]).filter(([s]) => s.pass === p);
    return h('li', { class: 'step-pass' }, h('span', { class: 'step-pass-name' }, t(`step.pass.${p}`)),
      h('ol', {}, items.map(([s, i]) => h('li', {},
        h('button', {
          type: 'button', class: i === at ? 'step-item current' : 'step-item', dataset: { index: String(i) },
          attrs: { 'aria-current': i === at ? 'step' : null }, on: { click: () => go(i) },
        }, stageName(s))))));
  }));
  list.querySelector('.current')?.scrollIntoView({ block: 'nearest' });
}

function render() {
  const rec = runs.selectedRun();
  $('#step-empty').hidden = !!trace;
  $('#step-trace').disabled = !rec?.ready || busy;
  for (const id of ['#step-prev', '#step-next', '#step-end']) $(id).disabled = !trace;
  $('#step-head').textContent = trace ? t('step.head', {
    step: trace.step, loss: num(trace.loss), lr: num(trace.lr), g: num(trace.grad_norm),
    clip: trace.grad_clip > 0 ? t('step.clip', { c: num(trace.grad_clip) }) : '',
    tokens: trace.tokens.slice(0, 24).map(showToken).join(''), b: trace.b, t: trace.t,
  }) : '';
  renderList();
  renderDetail();
}

function go(i) {
  if (!trace) return;
  at = Math.max(0, Math.min(trace.stages.length - 1, i));
  render();
}

async function load() {
  const rec = runs.selectedRun();
  if (!rec?.ready || busy) return;
  busy = true;
  $('#step-msg').textContent = t('step.tracing');
  $('#step-msg').classList.remove('bad');
  render();
  try {
    const tr = await rec.handle.trace();
    if (rec === runs.selectedRun()) {
      trace = tr;
      at = 0;
      $('#step-msg').textContent = '';
    }
  } catch (e) {
    $('#step-msg').textContent = t('use.error', { msg: e.message });
    $('#step-msg').classList.add('bad');
  } finally {
    busy = false;
    render();
  }
}

export function mount() {
  $('#step-trace').addEventListener('click', load);
  $('#step-prev').addEventListener('click', () => go(at - 1));
  $('#step-next').addEventListener('click', () => go(at + 1));
  $('#step-end').addEventListener('click', () => go(trace ? trace.stages.length - 1 : 0));
  $('#step-list').addEventListener('keydown', (ev) => {
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowDown') go(at + 1);
    else if (ev.key === 'ArrowLeft' || ev.key === 'ArrowUp') go(at - 1);
    else return;
    ev.preventDefault();
    $('#step-list .current')?.focus();
  });
  // A trace belongs to one run at one step: another run, or a rebuilt one, clears it.
  on('runs', () => {
    if (trace && !runs.selectedRun()?.ready) trace = null;
    render();
  });
  on('built', () => {
    trace = null;
    render();
  });
  on('lang', render);
  render();
}
