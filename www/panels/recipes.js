// The Recipes section: pick a recipe of issue 18 (fine-tuning, zero-shot, in-context learning, RLHF), set its knobs,
// run it in the engine (engine.createRecipe, pkg/index.d.ts) and watch it: its stages as steps with the current one
// marked, each stage's curves as it trains, each stage's held-out result, and samples before and after. Pause stops
// after the step under way and Resume goes on. What the page offers of each recipe is the table in www/recipes.js;
// the knobs' defaults come from the engine and the engine checks their values. Every number drawn is the run's. After
// icl's evaluation, the trained model's attention on a held-out episode (recipe.attention): every layer × head
// beside its induction score, with the cells an induction head would attend to outlined.
import { $, h, fill, perFrame, paced } from '../dom.js';
import { t, has, getLang } from '../i18n.js';
import { on } from '../bus.js';
import * as runs from '../runs.js';
import { startEngine, getEngine } from '../engine.js';
import { RECIPES, BY_KIND, HEADLINE, NOT_SHOWN, parseKnobs, knobOfError } from '../recipes.js';
import { COLORS } from '../../pkg/chart.js';
import { uplot, baseOptions } from './charts.js';
import { attentionView } from './icl-attention.js';

let kind = RECIPES[0].kind;
const info = {}; // kind → engine.recipeInfo(kind): { stages, knobs (defaults) }
const sessions = {}; // kind → { recipe, state, stage, step, steps, msg, hist, results, samples }

/** The session of `k`: its recipe (once created) and everything it reported. */
function session(k = kind) {
  sessions[k] ??= { recipe: null, state: 'idle', msg: null, hist: {}, results: {}, samples: [] };
  return sessions[k];
}

const stageName = (s) => (has(`rcp.stage.${s}`) ? t(`rcp.stage.${s}`) : s);
const metricName = (m) => (has(`rcp.metric.${m}`) ? t(`rcp.metric.${m}`) : m);
/** A stage result's metric: named for its stage where the same name means something else there (rm's baseline). */
const resultName = (stage, m) => (has(`rcp.metric.${stage}.${m}`) ? t(`rcp.metric.${stage}.${m}`) : metricName(m));
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? String(Number(v.toPrecision(4))) : '—');

/** The stages to show: the recipe's own once created, else the engine's description of the kind. */
const stagesOf = (k) => sessions[k]?.recipe?.stages ?? info[k]?.stages ?? [];

// ---------------------------------------------------------------------------------------------- what a run reports

function record(s, p) {
  const hist = (s.hist[p.stage] ??= { train: {}, eval: {} });
  const side = p.eval ? hist.eval : hist.train;
  for (const [m, v] of Object.entries(p.metrics ?? {})) {
    if (typeof v === 'number' && Number.isFinite(v)) (side[m] ??= []).push([p.step, v]);
  }
  // Samples of an evaluation, unless the model is the one the last samples came from (a stage's first evaluation
  // after the previous stage's last).
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  if (p.eval && p.samples?.length && !same(s.samples.at(-1)?.rows, p.samples)) {
    s.samples.push({ stage: p.stage, step: p.step, rows: p.samples });
  }
}

/** Where the recipe is: its stage under way (the next one, at step 0, once a stage ended) and its steps done. */
function position(s) {
  const r = s.recipe;
  if (!r) return { stage: null, step: 0, steps: 0 };
  return { stage: r.stage, step: r.step, steps: r.stages.find((st) => st.name === r.stage)?.steps ?? 0 };
}

function recordStage(s, r) {
  s.results[r.stage] = r;
  // The stage's final held-out evaluation is the last point of its held-out curves.
  const held = (s.hist[r.stage] ??= { train: {}, eval: {} }).eval;
  for (const [m, v] of Object.entries(r.metrics ?? {})) {
    if (typeof v === 'number' && Number.isFinite(v) && held[m]?.at(-1)?.[0] !== r.step) (held[m] ??= []).push([r.step, v]);
  }
  const rows = r.samples?.length ? r.samples : r.report?.examples;
  if (rows?.length) {
    s.samples = s.samples.filter((g) => !(g.stage === r.stage && g.step === r.step));
    s.samples.push({ stage: r.stage, step: r.step, rows, final: true });
  }
}

// ------------------------------------------------------------------------------------------------------- the form

function knobInput(k, knob) {
  const dflt = info[k]?.knobs?.[knob];
  const id = `rcp-knob-${knob}`;
  return h('div', { class: 'rcp-knob', dataset: { knob } },
    h('label', { for: id }, t(`rcp.knob.${knob}.label`)),
    h('input', { id, type: 'text', inputMode: 'decimal', spellcheck: false, autocomplete: 'off', value: dflt === undefined ? '' : String(dflt),
      attrs: { 'aria-describedby': `${id}-help` } }),
    h('p', { id: `${id}-help`, class: 'help' }, t(`rcp.knob.${knob}.help`), dflt === undefined ? null : ` (${t('rcp.default', { value: dflt })})`));
}

function choice(key, values, labelOf) {
  const id = `rcp-${key}`;
  return h('div', { class: 'rcp-knob', dataset: { knob: key } },
    h('label', { for: id }, t(`rcp.knob.${key}.label`)),
    h('select', { id }, values.map((v) => h('option', { value: v }, labelOf(v)))),
    h('p', { class: 'help' }, t(`rcp.knob.${key}.help`)));
}

/** The knobs of the current recipe; drawn when the recipe, the language or the engine's defaults change. */
function renderForm() {
  const r = BY_KIND[kind];
  const s = session();
  const kept = s.form; // what the user had typed, kept across redraws
  fill($('#rcp-form'),
    r.starts.length ? choice('start', r.starts, (v) => t(`rcp.start.${v}`)) : null,
    r.tasks.length ? choice('task', r.tasks, (v) => t(`rcp.task.${v}`)) : null,
    r.knobs.map((knob) => knobInput(kind, knob)));
  if (kept) {
    for (const [id, v] of Object.entries(kept)) {
      const el = document.getElementById(id);
      if (el) el.value = v;
    }
  }
  for (const el of $('#rcp-form').querySelectorAll('input, select')) {
    el.disabled = Boolean(s.recipe);
    el.addEventListener('input', () => {
      (s.form ??= {})[el.id] = el.value;
      if (!s.recipe) say(null);
    });
  }
}

/** The form's values: { start, task, knobs } or { bad: { knob, raw } }. */
function readForm() {
  const r = BY_KIND[kind];
  const raw = Object.fromEntries(r.knobs.map((knob) => [knob, $(`#rcp-knob-${knob}`).value]));
  const parsed = parseKnobs(raw);
  if (parsed.bad) return parsed;
  return { start: $('#rcp-start')?.value, task: $('#rcp-task')?.value, knobs: parsed.knobs };
}

/** Shows `msg` under the form ({ text, knob? }: the knob's input is marked), or clears it. */
function say(msg) {
  session().msg = msg;
  const box = $('#rcp-msg');
  box.textContent = msg?.text ?? '';
  box.classList.toggle('bad', Boolean(msg?.bad));
  for (const el of $('#rcp-form').querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  if (msg?.knob) $(`#rcp-knob-${msg.knob}`)?.setAttribute('aria-invalid', 'true');
}

// ------------------------------------------------------------------------------------------------- run and pause

/** The checkpoint to start from: 'pretrained', 'scratch', or the bytes of the playground's selected run. */
async function startPoint(start) {
  if (start !== 'run') return start;
  const rec = runs.selectedRun();
  if (!rec?.handle || rec.stepCount === 0) return null;
  return rec.handle.save();
}

async function run() {
  const k = kind;
  const s = session(k);
  if (s.state === 'running' || s.state === 'starting') return;
  if (!s.recipe) {
    const form = readForm();
    if (form.bad) {
      const name = t(`rcp.knob.${form.bad.knob}.label`);
      return say({ text: t('rcp.badValue', { name, value: form.bad.raw, rule: t('rcp.rule.number') }), knob: form.bad.knob, bad: true });
    }
    s.state = 'starting';
    say(null);
    render();
    try {
      const engine = await startEngine();
      const checkpoint = await startPoint(form.start);
      if (checkpoint === null) throw Object.assign(new Error(t('rcp.noRun')), { page: true });
      const opts = { knobs: form.knobs };
      if (checkpoint !== undefined) opts.checkpoint = checkpoint;
      if (form.task) opts.task = form.task;
      s.recipe = await engine.createRecipe(k, opts);
    } catch (e) {
      s.state = 'idle';
      const knob = knobOfError(e);
      say({ text: knob ? t('rcp.bad', { name: t(`rcp.knob.${knob}.label`), msg: e.message }) : e.message, knob, bad: true });
      render();
      return;
    }
    s.recipe.on('progress', (p) => {
      record(s, p);
      if (k === kind) renderPaced();
    });
    s.recipe.on('stage', (r) => {
      recordStage(s, r);
      if (r.report?.induction) loadAttention(s, k);
      if (k === kind) render();
    });
    s.recipe.on('error', (e) => {
      s.state = 'failed';
      s.error = e.message;
      if (k === kind) render();
    });
    // After an engine restart the recipe is back at the start of the stage it was in: paused there.
    s.recipe.on('restored', (r) => {
      s.state = 'paused';
      s.error = null;
      if (k === kind) {
        say({ text: t('rcp.restored', { stage: stageName(r.stage), lost: stageName(r.lost.stage) }) });
        render();
      }
    });
    renderForm();
  }
  s.state = 'running';
  render();
  try {
    const r = await s.recipe.run();
    if (s.state !== 'failed') s.state = r.stopped === 'done' ? 'done' : r.stopped === 'paused' ? 'paused' : 'idle';
  } catch (e) {
    s.state = 'failed';
    s.error = e.message;
  }
  if (k === kind) render();
}

async function pause() {
  const s = session();
  if (s.state !== 'running') return;
  await s.recipe.pause().catch(() => {});
}

async function reset() {
  const s = session();
  const old = s.recipe;
  delete sessions[kind];
  session().form = s.form;
  if (old) await old.dispose().catch(() => false);
  renderForm();
  say(null);
  render();
}

// ------------------------------------------------------------------------------------------------- what is shown

function statusText(s) {
  const at = position(s);
  if (s.state === 'running' && at.stage) return t('rcp.status.running', { stage: stageName(at.stage), step: at.step, steps: at.steps });
  if (s.state === 'paused') return t('rcp.status.paused', { stage: stageName(at.stage), step: at.step });
  if (s.state === 'failed') return t('rcp.status.failed', { msg: s.error ?? '' });
  if (s.state === 'running') return t('rcp.status.starting');
  return t(`rcp.status.${s.state}`);
}

function stageList(s) {
  const stages = stagesOf(kind);
  const pos = position(s);
  const at = stages.findIndex((st) => st.name === pos.stage);
  return stages.map((st, i) => {
    const done = Boolean(s.results[st.name]);
    const current = !done && i === at;
    const status = done ? 'done' : current ? 'running' : 'waiting';
    const step = done ? st.steps : current ? pos.step : 0;
    return h('li', { class: `rcp-stage ${status}`, dataset: { stage: st.name, status }, attrs: { 'aria-current': current ? 'step' : null } },
      h('span', { class: 'rcp-stage-no' }, `${i + 1}`),
      h('span', { class: 'rcp-stage-name' }, stageName(st.name)),
      has(`rcp.stage.${st.name}.help`) ? h('span', { class: 'rcp-stage-help' }, t(`rcp.stage.${st.name}.help`)) : null,
      h('span', { class: 'rcp-stage-status' }, `${t(`rcp.stage.${status}`)} · ${t('rcp.stage.steps', { step, steps: st.steps })}`));
  });
}

function buttons(s) {
  const busy = s.state === 'running' || s.state === 'starting';
  $('#rcp-run').disabled = busy || s.state === 'done' || s.state === 'failed';
  $('#rcp-run').textContent = t(s.state === 'paused' ? 'rcp.resume' : 'rcp.run');
  $('#rcp-pause').disabled = s.state !== 'running';
  $('#rcp-reset').disabled = !s.recipe || s.state === 'starting';
  const note = $('#rcp-locked');
  note.hidden = !s.recipe;
  note.textContent = t('rcp.knobsLocked');
}

function resultTable(stage, r) {
  const only = BY_KIND[kind].results?.[stage];
  const entries = Object.entries(r.metrics ?? {}).filter(([m, v]) => typeof v === 'number' && (only ? only.includes(m) : !NOT_SHOWN.has(m)));
  const order = only ?? HEADLINE;
  entries.sort(([a], [b]) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  if (!entries.length) return null;
  return h('figure', { class: 'rcp-result', dataset: { stage } },
    h('figcaption', {}, t('rcp.results.stage', { stage: stageName(stage) })),
    h('dl', { class: 'rcp-metrics' }, entries.map(([m, v]) => h('div', { dataset: { metric: m, value: String(v) } },
      h('dt', {}, resultName(stage, m)), h('dd', {}, num(v))))));
}

/** A score per layer × head (icl's induction and look-up scores) as a small table with the uniform head's score. */
function headTable(title, help, score) {
  if (!score?.scores?.length) return null;
  const heads = score.scores[0].length;
  return h('figure', { class: 'rcp-heads' },
    h('figcaption', {}, title, ' ', h('span', { class: 'note' }, help, ' ', t('rcp.uniform', { value: num(score.uniform) }))),
    h('table', { class: 'lesson-table' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), Array.from({ length: heads }, (_, i) => h('th', {}, t('rcp.head', { n: i }))))),
      h('tbody', {}, score.scores.map((row, l) => h('tr', {}, h('th', { attrs: { scope: 'row' } }, t('rcp.layer', { n: l })),
        row.map((v, i) => h('td', { class: `metric${l === score.best?.layer && i === score.best?.head ? ' best' : ''}` }, num(v))))))));
}

// ------------------------------------------------------------------- icl: the attention on a held-out episode

/** Which held-out episode the view shows: the evaluation's first (the same for a seed). */
const EPISODE = 0;

/** Asks the engine for the trained model's attention on the episode; the view (panels/icl-attention.js) is drawn from it. */
async function loadAttention(s, k) {
  try {
    s.attention = { data: await s.recipe.attention({ episode: EPISODE }) };
  } catch (e) {
    s.attention = { error: e.message };
  }
  s.attnView = null;
  if (k === kind) render();
}

/** The samples' columns in reading order: what was asked, what came out, what was expected; the rest after. */
const COLUMNS = ['prompt', 'completion', 'answer', 'baseline_answer', 'truth'];

function samplesView(s) {
  if (!s.samples.length) return h('p', { class: 'empty-note' }, t('rcp.samples.none'));
  return s.samples.map((g) => {
    const rank = (c) => (COLUMNS.indexOf(c) + 1 || COLUMNS.length + 1);
    const cols = Object.keys(g.rows[0]).filter((c) => typeof g.rows[0][c] === 'string').sort((a, b) => rank(a) - rank(b));
    return h('figure', { class: 'rcp-samples-group', dataset: { stage: g.stage, step: String(g.step) } },
      h('figcaption', {}, g.final ? t('rcp.results.stage', { stage: stageName(g.stage) }) : t('rcp.samples.at', { stage: stageName(g.stage), step: g.step })),
      h('div', { class: 'table-scroll' }, h('table', { class: 'rcp-samples-table' },
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, has(`rcp.col.${c}`) ? t(`rcp.col.${c}`) : c)))),
        h('tbody', {}, g.rows.slice(0, 8).map((row) => h('tr', {}, cols.map((c) => h('td', { class: 'mono' }, row[c]))))))));
  });
}

// ---------------------------------------------------------------------------------------------------- the charts

const plots = new Map(); // box id → { plot, signature }

/** [x, ...ys]: the union of the series' x values and each series' values on it (null where it has none). */
function align(series) {
  const xs = [...new Set(series.flatMap((pts) => pts.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  return [xs, ...series.map((pts) => {
    const col = new Array(xs.length).fill(null);
    for (const [x, y] of pts) col[index.get(x)] = y;
    return col;
  })];
}

/** The charts' figures for the recipe's stages that have reported (their uPlot drawn after, into the boxes). */
function chartFigures(s) {
  const r = BY_KIND[kind];
  const figs = [];
  const todo = [];
  for (const st of stagesOf(kind)) {
    const hist = s.hist[st.name];
    for (const c of r.charts[st.name] ?? []) {
      const shown = c.series.filter((se) => (se.eval ? hist?.eval : hist?.train)?.[se.metric]?.length);
      if (!shown.length) continue;
      const id = `rcp-chart-${st.name}-${c.id}`;
      figs.push(h('figure', { class: 'rcp-chart', dataset: { stage: st.name, chart: c.id } },
        h('figcaption', {}, `${stageName(st.name)} · ${t(`rcp.chart.${c.id}`)}`), h('div', { id, class: 'chart' })));
      const data = align(shown.map((se) => (se.eval ? hist.eval : hist.train)[se.metric]));
      const series = shown.map((se, i) => ({
        label: se.label ? metricName(se.label) : se.eval ? t('rcp.heldOut', { name: metricName(se.metric) }) : metricName(se.metric),
        stroke: COLORS[i % COLORS.length], width: se.eval ? 0 : 1.5, spanGaps: true,
        points: se.eval ? { show: true, size: 7, fill: '#fff', stroke: COLORS[i % COLORS.length], width: 2 } : { show: false },
      }));
      todo.push({ id, signature: `${kind}|${shown.map((se) => `${se.eval}${se.metric}`).join(',')}|${t('rcp.chart.step')}`, series, data, x: t('rcp.chart.step') });
    }
  }
  const byK = r.byK && byKChart(s);
  if (byK) {
    figs.push(byK.fig);
    todo.push(byK.todo);
  }
  return { figs, todo };
}

/** icl: accuracy on held-out rules against k, all rules and each family, with chance. */
function byKChart(s) {
  const rep = Object.values(s.results).find((x) => x.report?.accuracy_by_k)?.report;
  if (!rep) return null;
  const ks = rep.k ?? rep.accuracy_by_k.map((_, i) => i);
  const lines = [[metricName('accuracy'), rep.accuracy_by_k],
    ...Object.entries(rep.by_family ?? {}).map(([f, c]) => [f, c.accuracy_by_k])];
  if (Number.isFinite(rep.baseline?.chance)) lines.push([metricName('chance'), ks.map(() => rep.baseline.chance)]);
  const id = 'rcp-chart-by-k';
  const series = lines.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: i === 0 ? 2.5 : 1.25, dash: i === lines.length - 1 ? [4, 4] : undefined, spanGaps: true }));
  return {
    fig: h('figure', { class: 'rcp-chart', dataset: { chart: 'by_k' } }, h('figcaption', {}, t('rcp.chart.by_k')), h('div', { id, class: 'chart' })),
    todo: { id, signature: `by_k|${lines.length}|${t('rcp.chart.k')}`, series, data: [ks, ...lines.map(([, ys]) => ys)], x: t('rcp.chart.k') },
  };
}

async function drawCharts(todo) {
  const U = await uplot();
  for (const c of todo) {
    const box = document.getElementById(c.id);
    if (!box) continue;
    const width = Math.max(200, box.clientWidth);
    const old = plots.get(c.id);
    if (old && old.signature === c.signature && old.plot.root.isConnected) {
      old.plot.setData(c.data);
      continue;
    }
    old?.plot.destroy();
    const opts = baseOptions(width, c.series);
    opts.axes[0] = { ...opts.axes[0], label: c.x, incrs: undefined };
    opts.cursor = { drag: { x: true, y: false } };
    box.replaceChildren();
    plots.set(c.id, { plot: new U(opts, c.data, box), signature: c.signature });
  }
}

/** Moves the drawn charts into the freshly rendered boxes (a redraw of the section must not lose them). */
function keepPlots() {
  for (const [id, p] of plots) {
    const box = document.getElementById(id);
    if (box && p.plot.root.parentNode !== box) box.replaceChildren(p.plot.root);
  }
}

// ---------------------------------------------------------------------------------------------------- rendering

function renderNow() {
  for (const b of document.querySelectorAll('#rcp-pick button')) b.setAttribute('aria-pressed', String(b.dataset.kind === kind));
  const s = session();
  $('#rcp-about').textContent = t(`rcp.${kind}.about`);
  $('#rcp-cite').textContent = t(`rcp.${kind}.cite`);
  $('#rcp-watch').textContent = t(`rcp.${kind}.watch`);
  fill($('#rcp-stages'), stageList(s));
  $('#rcp-status').textContent = statusText(s);
  $('#rcp-status').dataset.state = s.state;
  buttons(s);
  const { figs, todo } = chartFigures(s);
  fill($('#rcp-charts'), figs.length ? figs : h('p', { class: 'empty-note' }, t('rcp.chart.empty')));
  keepPlots();
  if (todo.length) drawCharts(todo);
  const rep = Object.values(s.results).find((x) => x.report?.induction)?.report;
  fill($('#rcp-results'),
    stagesOf(kind).map((st) => s.results[st.name] && resultTable(st.name, s.results[st.name])).filter(Boolean),
    rep ? headTable(t('rcp.induction'), t('rcp.induction.help'), rep.induction) : null,
    rep ? headTable(t('rcp.lookup'), t('rcp.lookup.help'), rep.lookup) : null);
  fill($('#rcp-samples'), samplesView(s));
  const lang = getLang();
  if (s.attention && (!s.attnView || s.attnView.lang !== lang)) s.attnView = { lang, el: attentionView(s.attention, rep?.induction, $('#rcp-results').clientWidth || 800) };
  fill($('#rcp-attn'), s.attention ? s.attnView.el : null);
}

const render = perFrame(renderNow);
// A recipe reports a step every few milliseconds: the section follows four times a second.
const renderPaced = paced(renderNow, 250);

async function loadInfo(k) {
  if (info[k]) return;
  try {
    const engine = getEngine() ?? (await startEngine());
    info[k] = await engine.recipeInfo(k);
  } catch {
    return; // the engine did not start: the notice says so; the form keeps empty defaults
  }
  if (k === kind && !session(k).recipe) renderForm();
  render();
}

/** Shows recipe `k`. */
export function pick(k) {
  if (!BY_KIND[k]) return;
  kind = k;
  renderForm();
  say(session().msg);
  render();
  loadInfo(k);
}

export function mount() {
  fill($('#rcp-pick'), RECIPES.map((r) => h('button', { type: 'button', class: 'rcp-kind', dataset: { kind: r.kind }, attrs: { 'aria-pressed': 'false' }, on: { click: () => pick(r.kind) } },
    h('span', { class: 'rcp-kind-name' }, t(`rcp.${r.kind}.name`)))));
  $('#rcp-run').addEventListener('click', run);
  $('#rcp-pause').addEventListener('click', pause);
  $('#rcp-reset').addEventListener('click', reset);
  on('lang', () => {
    for (const b of document.querySelectorAll('#rcp-pick button')) b.firstChild.textContent = t(`rcp.${b.dataset.kind}.name`);
    plots.forEach((p) => p.plot.destroy());
    plots.clear();
    renderForm();
    say(null);
    render();
  });
  on('engine', ({ engine }) => engine && loadInfo(kind));
  on('recipe', ({ kind: k }) => pick(k));
  pick(kind);
}

/** For the tests: where each recipe is and how many points each of its charts holds. */
export function snapshot() {
  return {
    kind,
    sessions: Object.fromEntries(Object.entries(sessions).map(([k, s]) => [k, {
      state: s.state, ...position(s), results: Object.keys(s.results),
      metrics: Object.fromEntries(Object.entries(s.results).map(([st, r]) => [st, r.metrics])),
      samples: s.samples.length,
      attention: s.attention?.data ? { episode: s.attention.data.episode, maps: s.attention.data.maps.length, heads: s.attention.data.maps[0]?.heads } : s.attention,
    }])),
    charts: Object.fromEntries([...plots].filter(([, p]) => p.plot.root.isConnected).map(([id, p]) => [id, p.plot.data[0].length])),
  };
}
