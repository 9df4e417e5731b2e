// The Lessons panel: every lesson (www/lessons/*.json) with its status — not run, running, or its result —; the
// open lesson's claim, source, what to watch and a question; one click replaces the runs with the lesson's runs
// (only its knob differs: same seed, same batches) and trains them side by side; when they finish, each run's
// metrics and whether each expected direction held at this size appear beside the claim, with the lesson's own
// explanation where it did not. The open lesson is in the URL (`#lesson=<id>`, www/state.js).
import { $, h, fill, perFrame, paced } from '../dom.js';
import { t, getLang, has } from '../i18n.js';
import { on, emit } from '../bus.js';
import * as runs from '../runs.js';
import * as state from '../state.js';
import * as lessons from '../lessons.js';
import { corpusText } from '../data.js';
import { presetConfig } from '../../pkg/presets.js';
import { getEngine, startEngine } from '../engine.js';

const status = new Map(); // id → { state: 'running' | 'done' | 'stopped', recs, result, kept? }
let openId = null;

// A lesson's result outlives the page: kept in localStorage with when and at which sizes it was measured, and the
// lesson file's fingerprint, so that a reload (or a class's second visit) shows it again — but never a result of a
// lesson file that has changed since. The runs themselves are not kept (their checkpoints are the autosave's job).
const KEPT = 'tp.lessons.results.v1';

/** FNV-1a of a lesson file as parsed: its fingerprint (any change of runs, metrics or texts changes it). */
function fingerprint(l) {
  let x = 0x811c9dc5;
  for (const c of JSON.stringify(l)) x = Math.imul(x ^ c.codePointAt(0), 0x01000193) >>> 0;
  return x.toString(16);
}

function readKept() {
  try {
    const v = JSON.parse(localStorage.getItem(KEPT) ?? '{}');
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {}; // storage off or damaged: nothing kept
  }
}

/** Keeps lesson `l`'s result; storage that is off or full loses only this (the page shows the result anyway). */
function keep(l, result, sizes) {
  const all = readKept();
  all[l.id] = { fp: fingerprint(l), at: new Date().toISOString(), sizes, result };
  try {
    localStorage.setItem(KEPT, JSON.stringify(all));
  } catch {
    // the result stays on the page until it is closed
  }
}

/** The kept results of lessons whose files are as they were measured: status 'done', marked kept. */
function restoreKept() {
  for (const [id, k] of Object.entries(readKept())) {
    const l = lessons.byId(id);
    if (!l || status.has(id) || k?.fp !== fingerprint(l) || !k.result?.runs) continue;
    status.set(id, { state: 'done', recs: [], result: k.result, kept: { at: k.at, sizes: k.sizes } });
  }
}

/** A lesson text in the page's language. */
const tx = (x) => x[getLang()] ?? x.en;

const fmt = lessons.formatMetric;

/** The status of a lesson as the list shows it: key and class. */
function statusOf(id) {
  const s = status.get(id);
  if (!s) return ['lessons.status.new', 'new'];
  if (s.state === 'running') return ['lessons.status.running', 'running'];
  if (s.state === 'stopped') return ['lessons.status.stopped', 'stopped'];
  return s.result.held ? ['lessons.status.held', 'held'] : ['lessons.status.notHeld', 'not-held'];
}

function listItem(l) {
  const [key, cls] = statusOf(l.id);
  return h('li', { class: `lesson${l.id === openId ? ' open' : ''}`, dataset: { lesson: l.id } },
    h('button', { type: 'button', class: 'lesson-open', attrs: { 'aria-pressed': String(l.id === openId) }, on: { click: () => open(l.id) } },
      h('span', { class: 'lesson-no' }, `${l.claim_no}`), ' ', tx(l.title)),
    h('span', { class: `lesson-status lesson-status-${cls}` }, t(key)));
}

function resultView(l, s) {
  const { result } = s;
  const head = h('tr', {}, h('th', {}, t('lessons.run')), l.metrics.map((m) => h('th', { attrs: { title: t(`lessons.metric.${m}.help`) } }, t(`lessons.metric.${m}`))));
  const rows = result.runs.map((r, i) => {
    const sw = h('span', { class: 'swatch', attrs: { 'aria-hidden': 'true' } });
    sw.style.background = r.color;
    return h('tr', { dataset: { run: r.id } },
      h('th', { attrs: { scope: 'row' } }, sw, ` ${t('runs.run', { n: r.no })} · ${tx(l.runs[i].label)}`, r.diverged ? h('div', { class: 'run-msg' }, t('lessons.diverged', { msg: r.message ?? '' })) : null),
      l.metrics.map((m) => (r.refused?.[m]
        ? h('td', { class: 'metric refused', dataset: { metric: m, value: '' }, attrs: { title: r.refused[m] } }, t('lessons.refused'))
        : h('td', { class: 'metric', dataset: { metric: m, value: String(r.metrics[m] ?? '') } }, fmt(m, r.metrics[m])))));
  });
  const label = (id) => tx(l.runs.find((r) => r.id === id).label);
  const checks = result.checks.map((c) => h('li', { class: `check check-${c.outcome}`, dataset: { outcome: c.outcome } },
    lessons.checkText(c, label, t),
    ' — ', h('strong', {}, t(`lessons.outcome.${c.outcome}`))));
  const kept = s.kept && h('p', { class: 'lesson-kept note' }, t(s.kept.sizes === 'test' ? 'lessons.kept.test' : 'lessons.kept', {
    date: new Date(s.kept.at).toLocaleString(getLang() === 'zh' ? 'zh-CN' : 'en'),
  }));
  return h('div', { class: 'lesson-result', attrs: { 'aria-live': 'polite' } },
    h('h4', {}, t('lessons.result')),
    kept,
    // A lesson with many metrics scrolls sideways rather than clipping its last columns.
    h('div', { class: 'lesson-table-wrap' }, h('table', { class: 'lesson-table' }, h('thead', {}, head), h('tbody', {}, rows))),
    h('ul', { class: 'lesson-checks' }, checks),
    result.held ? h('p', { class: 'lesson-verdict held' }, t('lessons.verdict.held'))
      : h('p', { class: 'lesson-verdict not-held' }, t('lessons.verdict.notHeld'), ' ', tx(l.why_not)));
}

function progressView(s) {
  return h('ul', { class: 'lesson-progress' }, s.recs.map((rec) => h('li', {},
    t('runs.run', { n: rec.no }), ': ', t(`status.${rec.status}`), ' · ',
    rec.stages
      ? t('lessons.recipeStep', { stage: has(`rcp.stage.${rec.stage}`) ? t(`rcp.stage.${rec.stage}`) : rec.stage ?? '—', step: rec.step, total: rec.steps })
      : t('runs.stepOf', { step: rec.stepCount, total: rec.values.steps }))));
}

function detail(l) {
  const s = status.get(l.id);
  const knobs = Object.keys(l.runs[0].set).join(', ');
  return h('article', { class: 'lesson-detail', dataset: { lesson: l.id } },
    h('h3', {}, tx(l.title)),
    h('p', { class: 'lesson-claim' }, h('strong', {}, t('lessons.claim')), ' ', tx(l.claim)),
    h('p', { class: 'lesson-source' }, h('strong', {}, t('lessons.source')), ' ', tx(l.source)),
    h('p', { class: 'lesson-runs' }, h('strong', {}, t('lessons.runs', { knob: knobs })), ' ', l.runs.map((r) => tx(r.label)).join(' · ')),
    h('p', { class: 'lesson-watch' }, h('strong', {}, t('lessons.watch')), ' ', tx(l.watch)),
    h('p', { class: 'lesson-question' }, h('strong', {}, t('lessons.question')), ' ', tx(l.question)),
    h('div', { class: 'lesson-actions' },
      h('button', { type: 'button', id: 'lesson-run', class: 'round', disabled: s?.state === 'running', on: { click: () => run(l.id) } },
        t(s ? 'lessons.again' : 'lessons.start', { n: l.runs.length })),
      h('span', { class: 'note' }, lessons.isRecipeLesson(l)
        ? t('lessons.recipe', { recipe: t(`rcp.${l.base.recipe}.name`) })
        : t('lessons.steps', { steps: l.base.set['train.steps'] ?? '—' }))),
    s?.state === 'running' || s?.state === 'stopped' ? progressView(s) : null,
    s?.state === 'stopped' ? h('p', { class: 'lesson-verdict' }, t('lessons.stoppedHelp')) : null,
    s?.state === 'done' ? resultView(l, s) : null,
    h('p', { class: 'lesson-measured note' }, h('strong', {}, t('lessons.measured')), ' ', tx(l.measured)));
}

const render = perFrame(() => {
  const all = lessons.list();
  fill($('#lesson-list'), all.map(listItem));
  const l = openId && lessons.byId(openId);
  fill($('#lesson-detail'), l ? detail(l) : h('p', { class: 'help' }, t('lessons.pick')));
});
const renderPaced = paced(render, 500);

/** Opens lesson `id`: shows it, and puts it in the URL. With `setup`, its runs replace the page's runs (a link). */
export async function open(id, { setup = false } = {}) {
  try {
    await lessons.loadLessons();
    const l = lessons.byId(id);
    if (!l) {
      emit('notice', { key: 'lessons.unknown', vars: { id }, kind: 'warn' });
      state.setLesson(null);
      return;
    }
    openId = id;
    state.setLesson(id);
    render();
    if (setup && !lessons.isRecipeLesson(l)) await setUp(l); // a recipe lesson's runs are recipes, made when it runs
  } catch (e) {
    emit('notice', { key: 'lessons.failed', vars: { msg: e.message }, kind: 'error' });
  }
}

/** A preset's config from the package's list (pkg/presets.js, made from configs/*.json): no fetch, works offline. */
function baseConfig(name) {
  const cfg = presetConfig(name);
  if (!cfg) throw new Error(`no preset named ${name}`);
  return cfg;
}

/** Replaces the runs with the lesson's runs (at its page sizes, or `sizes: 'test'`); resolves their records. */
async function setUp(l, sizes = 'page') {
  const values = lessons.runValues(l, baseConfig(l.base.preset), { sizes });
  return runs.replaceAll(values);
}

/**
 * A recipe lesson's runs: one recipe of the engine per run (engine.createRecipe, its knobs from pkg/lessons.js
 * recipeOptions), run side by side — the engine steps them in turn —, each record keeping where it is and its
 * stages' results (`stages`, what the recipe metrics read). The page's training runs are left alone.
 */
async function runRecipes(l, s, sizes) {
  const engine = await startEngine();
  const opts = lessons.recipeOptions(l, { sizes });
  s.recs = opts.map((o, i) => ({ no: i + 1, color: runs.COLORS[i], status: 'building', recipe: null, stage: null, step: 0, steps: 0, stages: {} }));
  render();
  await Promise.all(s.recs.map(async (rec, i) => {
    try {
      rec.recipe = await engine.createRecipe(l.base.recipe, opts[i]);
      rec.recipe.on('progress', (p) => {
        Object.assign(rec, { stage: p.stage, step: p.step, steps: p.steps });
        renderPaced();
      });
      rec.recipe.on('stage', (r) => {
        rec.stages[r.stage] = r;
      });
      rec.status = 'training';
      const end = await rec.recipe.run();
      rec.status = end.stopped === 'done' ? 'done' : 'paused';
    } catch (e) {
      rec.status = 'error';
      rec.message = { text: e.message };
    } finally {
      rec.recipe?.dispose().catch(() => false);
    }
  }));
}

/**
 * Sets up lesson `id`'s runs and trains them side by side; the result shows when every one has stopped.
 * `sizes: 'test'` trains at the lesson's test sizes (the browser test; the page's button uses its page sizes).
 */
export async function run(id, { sizes = 'page' } = {}) {
  const l = lessons.byId(id);
  if (!l || status.get(id)?.state === 'running') return;
  openId = id;
  state.setLesson(id);
  if (lessons.isRecipeLesson(l)) {
    const s = { state: 'running', recs: [], result: null };
    status.set(id, s);
    render();
    try {
      await runRecipes(l, s, sizes);
      s.state = s.recs.every((rec) => rec.status === 'done' || rec.status === 'error') ? 'done' : 'stopped';
      if (s.state === 'done') s.result = lessons.result(l, s.recs);
    } catch (e) {
      s.state = 'stopped';
      emit('notice', { key: 'lessons.failed', vars: { msg: e.message }, kind: 'error' });
    }
    render();
    emit('lesson', { id, status: s.state, result: s.result });
    return;
  }
  let recs;
  try {
    recs = await setUp(l, sizes);
  } catch (e) {
    emit('notice', { key: 'lessons.failed', vars: { msg: e.message }, kind: 'error' });
    return;
  }
  const s = { state: 'running', recs, result: null };
  status.set(id, s);
  render();
  // The worker steps the runs in turn: they train side by side.
  await Promise.all(recs.map((rec) => runs.train(rec).catch(() => {}))); // a run that cannot build says so in the runs list
  if (recs.some((rec) => rec.removed || (rec.status !== 'done' && rec.status !== 'error'))) {
    s.state = 'stopped'; // removed, paused or replaced before the end: no result
  } else {
    try {
      await lessons.probe(l, recs, await corpusText(l.base.corpus), getEngine());
    } catch (e) {
      emit('notice', { key: 'lessons.failed', vars: { msg: e.message }, kind: 'error' });
    }
    s.state = 'done';
    s.result = lessons.result(l, recs);
    keep(l, s.result, sizes);
  }
  render();
  emit('lesson', { id, status: s.state, result: s.result });
}

export function mount() {
  on('lang', render);
  on('runs', render);
  on('progress', renderPaced);
  lessons.loadLessons().then(() => {
    restoreKept();
    render();
  }, (e) => emit('notice', { key: 'lessons.failed', vars: { msg: e.message }, kind: 'error' }));
}

/** For the tests: each lesson's status and result. */
export function snapshot() {
  return { open: openId, lessons: Object.fromEntries([...status].map(([id, s]) => [id, { state: s.state, result: s.result }])) };
}
