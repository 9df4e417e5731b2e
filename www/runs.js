// The runs: each is a setup (option values: configuration, seed, data) with a colour, its engine Run once built,
// and the history of its progress for the charts. The selected run's values are what the configuration panel
// shows and the URL holds. Editing a run that has not trained changes it; editing one that has trained starts a
// new run with the edit, so that the two can be compared (a run is a config and a seed).
import { emit, on } from './bus.js';
import { configFromValues, valuesFromConfig, configNeedsCorpus, applies, BY_KEY } from './options.js';
import { startEngine } from './engine.js';
import { corpusText, dataErrorMessage } from './data.js';
import { emptyHistory, recordProgress } from '../pkg/lessons.js'; // the progress history (its shape: there)
import { COLORS } from '../pkg/chart.js'; // the runs' colours (the element's lessons use them too)

export { COLORS };
export const MAX_RUNS = COLORS.length;

const runs = [];
let selected = null;

class RunRecord {
  constructor(values, no, color) {
    this.no = no;
    this.color = color;
    this.values = { ...values };
    this.handle = null; // the engine's Run
    this.builtKey = null; // the values it was built from
    this.status = 'new';
    this.message = null; // { key, vars } or { text }
    this.history = emptyHistory();
    this.stepCount = 0;
    this.last = null;
    this.rate = 0; // steps per second while training (wall clock, so shared time counts)
    this.lastAt = 0;
    this.queue = Promise.resolve();
    this.buildTimer = null;
    this.removed = false;
    this.resume = false; // training when the engine stopped: trains on once it is back
  }

  get key() {
    return JSON.stringify(this.values);
  }

  get config() {
    return configFromValues(this.values);
  }

  get training() {
    return this.status === 'training';
  }

  /** Built and current: the engine's run matches the values. */
  get ready() {
    return this.handle !== null && this.builtKey === this.key;
  }
}

export function list() {
  return runs;
}

export function selectedRun() {
  return selected;
}

export function byNo(no) {
  return runs.find((r) => r.no === no) ?? null;
}

function emitRuns() {
  emit('runs', { runs, selected });
}

function notice(key, vars, kind = 'info') {
  emit('notice', { key, vars, kind });
}

function nextColor() {
  return COLORS.find((c) => !runs.some((r) => r.color === c)) ?? COLORS[runs.length % COLORS.length];
}

function add(values, { no, color, select: sel = true } = {}) {
  const rec = new RunRecord(values, no ?? Math.max(0, ...runs.map((r) => r.no)) + 1, color ?? nextColor());
  runs.push(rec);
  if (sel) selected = rec;
  return rec;
}

function sameValues(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Starts with one run of `values` (built once the engine is up, unless `build` is false). */
export function init(values, { build = true } = {}) {
  runs.length = 0;
  const rec = add(values);
  emitRuns();
  emit('values', { values: rec.values, source: 'init' });
  if (build) scheduleBuild(rec, 0);
  return rec;
}

/**
 * The user changed the setup of the selected run. Returns 'same' | 'applied' | 'forked' | 'refused'; for
 * 'refused' the selected run's values are announced again, so the controls go back.
 */
export function applyValues(values, source = 'edit') {
  const rec = selected;
  if (!rec) {
    init(values);
    return 'applied';
  }
  if (sameValues(rec.values, values)) return 'same';
  if (rec.stepCount === 0 && !rec.training) {
    rec.values = { ...values };
    if (rec.status !== 'building') rec.status = 'new';
    rec.message = null;
    emit('values', { values: rec.values, source });
    emitRuns();
    scheduleBuild(rec);
    return 'applied';
  }
  if (runs.length >= MAX_RUNS) {
    notice('runs.max', { n: MAX_RUNS }, 'warn');
    emit('values', { values: rec.values, source: 'revert' });
    return 'refused';
  }
  const fork = add(values);
  notice('runs.forked', { old: rec.no, new: fork.no });
  emit('values', { values: fork.values, source });
  emitRuns();
  scheduleBuild(fork);
  return 'forked';
}

export function select(rec) {
  if (!rec || rec === selected) return;
  selected = rec;
  emit('values', { values: rec.values, source: 'select' });
  emitRuns();
}

/** Builds the run's model soon (after edits settle), so that its attention and shapes can be shown. */
function scheduleBuild(rec, ms = 300) {
  clearTimeout(rec.buildTimer);
  rec.buildTimer = setTimeout(() => ensureBuilt(rec).catch(() => {}), ms);
}

/** Resolves the run's engine Run, building (or rebuilding, after an edit) it first. Builds of a run go in turn. */
export function ensureBuilt(rec) {
  const p = rec.queue.then(() => buildNow(rec));
  rec.queue = p.catch(() => {});
  return p;
}

async function buildNow(rec) {
  if (rec.removed) throw new Error('removed');
  if (rec.ready) return rec.handle;
  const key = rec.key;
  const values = rec.values;
  const engine = await startEngine();
  await dropHandle(rec);
  rec.status = 'building';
  rec.message = null;
  emitRuns();
  try {
    const config = configFromValues(values);
    const corpus = configNeedsCorpus(config) ? await corpusText(values.corpus) : undefined;
    const handle = await engine.createRun(config, { corpus, backend: values.backend ?? 'cpu' });
    if (rec.removed) {
      await handle.dispose();
      throw new Error('removed');
    }
    attach(rec, handle, key);
    rec.status = 'ready';
    rec.history = emptyHistory();
    emitRuns();
    emit('built', { rec });
    return handle;
  } catch (e) {
    if (e.restart && !rec.removed) {
      // The engine stopped while building it: build it again once it is back.
      rec.status = 'new';
      emitRuns();
      scheduleBuild(rec, 0);
      throw e;
    }
    if (!rec.removed) {
      rec.status = 'invalid';
      rec.message = e.key ? { key: e.key } : e.kind === 'data' ? dataErrorMessage(e) : { text: e.message };
      emitRuns();
    }
    throw e;
  }
}

function attach(rec, handle, key) {
  rec.handle = handle;
  rec.builtKey = key;
  rec.stepCount = handle.stepCount;
  rec.last = null;
  rec.msPerStep = null;
  const offs = [
    handle.on('progress', (p) => onProgress(rec, handle, p)),
    handle.on('error', (e) => {
      if (rec.handle !== handle) return;
      rec.status = 'error';
      rec.resume = false;
      rec.message = { text: e.message };
      notice('notice.runError', { n: rec.no, msg: e.message }, 'error');
      emitRuns();
    }),
    handle.on('restored', ({ step }) => {
      // After an engine restart the run is back at its last snapshot: forget the steps after it.
      const h = rec.history;
      const keep = h.step.findIndex((s) => s > step);
      if (keep >= 0) {
        for (const k of ['step', 'loss', 'lr', 'grad', 'val', 'aux']) h[k].length = keep;
        for (const l of [...h.layers, ...h.balance]) l.length = keep;
        if (h.load && h.load.step > step) h.load = null;
      }
      rec.stepCount = step;
      if (rec.training) rec.status = 'paused';
      emitRuns();
    }),
  ];
  rec.detach = () => offs.forEach((off) => off());
}

async function dropHandle(rec) {
  const h = rec.handle;
  if (!h) return;
  rec.detach?.();
  rec.handle = null;
  rec.builtKey = null;
  rec.stepCount = 0;
  await h.dispose().catch(() => {});
}

function onProgress(rec, handle, p) {
  if (rec.handle !== handle) return;
  recordProgress(rec, p); // the history (charts, lesson metrics) and the time per step
  rec.stepCount = p.step;
  rec.last = p;
  const now = performance.now();
  if (rec.training && rec.lastAt) {
    const inst = 1000 / Math.max(1, now - rec.lastAt);
    rec.rate = rec.rate ? 0.85 * rec.rate + 0.15 * inst : inst;
  }
  rec.lastAt = now;
  emit('progress', { rec, p });
}

/** Trains the run to its last step (its `steps` option). */
export async function train(rec = selected) {
  if (!rec || rec.training) return;
  const handle = await ensureBuilt(rec);
  // A second Train pressed while the first waited for the build: the first one trains.
  if (rec.training) return;
  const left = rec.values.steps - rec.stepCount;
  if (left <= 0) {
    notice('runs.done', { n: rec.no, steps: rec.values.steps }, 'warn');
    return;
  }
  rec.status = 'training';
  rec.lastAt = 0;
  rec.rate = 0;
  emitRuns();
  try {
    const r = await handle.train({ steps: left });
    if (rec.handle !== handle || r.stopped === 'disposed') return;
    rec.stepCount = r.step;
    rec.status = r.step >= rec.values.steps ? 'done' : 'paused';
  } catch (e) {
    if (rec.handle !== handle) return;
    if (e.restart && rec.status !== 'error') {
      // The engine stopped under it (no fault of this run's): it comes back at its last snapshot and goes on.
      rec.status = 'paused';
      rec.resume = true;
    } else {
      rec.status = 'error';
      rec.message = { text: e.message };
    }
  }
  emitRuns();
  emit('stopped', { rec });
}

export async function pause(rec = selected) {
  if (!rec?.training || !rec.handle) return;
  await rec.handle.pause();
}

/** One training step. */
export async function step(rec = selected) {
  if (!rec || rec.training) return;
  const handle = await ensureBuilt(rec);
  if (rec.training) return;
  try {
    await handle.step();
  } catch (e) {
    if (rec.handle !== handle) return;
    if (!e.restart || rec.status === 'error') {
      rec.status = 'error';
      rec.message = { text: e.message };
    }
  }
  // Train pressed while the step was under way is training now: its status stands, and its own end sets the next.
  if (rec.handle !== handle) return;
  if (rec.status !== 'error' && !rec.training) rec.status = rec.stepCount >= rec.values.steps ? 'done' : 'paused';
  emitRuns();
  emit('stopped', { rec });
}

/** Back to step 0 with fresh weights from the same seed. */
export async function reset(rec = selected) {
  if (!rec) return;
  clearTimeout(rec.buildTimer);
  await dropHandle(rec);
  rec.status = 'new';
  rec.message = null;
  rec.history = emptyHistory();
  rec.rate = 0;
  emitRuns();
  emit('stopped', { rec });
  await ensureBuilt(rec).catch(() => {});
}

/** A new run with the selected run's setup (to change one knob and compare). */
export function newRun(values = selected?.values) {
  if (runs.length >= MAX_RUNS) {
    notice('runs.max', { n: MAX_RUNS }, 'warn');
    return null;
  }
  const rec = add(values);
  emit('values', { values: rec.values, source: 'select' });
  emitRuns();
  scheduleBuild(rec, 0);
  return rec;
}

/**
 * Replaces every run with one run per entry of `valuesList` (a lesson's runs, at most MAX_RUNS), the first
 * selected; the old runs' engine runs are disposed. Resolves the new records, building.
 */
export async function replaceAll(valuesList) {
  const old = runs.splice(0, runs.length);
  for (const rec of old) {
    rec.removed = true;
    clearTimeout(rec.buildTimer);
  }
  selected = null;
  const recs = valuesList.slice(0, MAX_RUNS).map((v, i) => add(v, { no: i + 1, select: i === 0 }));
  emit('values', { values: selected.values, source: 'select' });
  emitRuns();
  for (const rec of old) emit('stopped', { rec });
  await Promise.all(old.map((rec) => dropHandle(rec)));
  for (const rec of recs) scheduleBuild(rec, 0);
  return recs;
}

export async function remove(rec) {
  if (!rec || runs.length <= 1) return;
  rec.removed = true;
  clearTimeout(rec.buildTimer);
  runs.splice(runs.indexOf(rec), 1);
  if (selected === rec) {
    selected = runs.at(-1);
    emit('values', { values: selected.values, source: 'select' });
  }
  emitRuns();
  emit('stopped', { rec });
  await dropHandle(rec);
}

/**
 * A run from a checkpoint. Text models need a corpus whose characters the checkpoint knows: the selected run's
 * corpus is tried first, then the other built-in ones. Resolves the new run; rejects with the engine's message.
 */
export async function loadCheckpoint(bytes) {
  if (runs.length >= MAX_RUNS) throw Object.assign(new Error('runs.max'), { key: 'runs.max', vars: { n: MAX_RUNS } });
  const engine = await startEngine();
  const order = [...new Set([selected?.values.corpus ?? 'shakespeare', 'shakespeare', 'sums', 'custom'])];
  let handle = null;
  let corpus = null;
  let firstError = null;
  for (const id of order) {
    const text = await corpusText(id).catch(() => null);
    if (text === null) continue;
    try {
      handle = await engine.loadRun(bytes, { corpus: text });
      corpus = id;
      break;
    } catch (e) {
      firstError ??= e;
      // Only a data error (a character the checkpoint does not know, a text too short) depends on the corpus:
      // anything else (not a checkpoint at all, …) fails the same way for every one.
      if (e.kind !== 'data') break;
    }
  }
  if (!handle) throw firstError ?? new Error('no corpus');
  const values = valuesFromConfig(handle.config, corpus);
  const rec = add(values);
  attach(rec, handle, rec.key);
  rec.status = handle.stepCount >= values.steps ? 'done' : handle.stepCount > 0 ? 'paused' : 'ready';
  emit('values', { values: rec.values, source: 'select' });
  emitRuns();
  emit('built', { rec });
  emit('stopped', { rec });
  return rec;
}

/** What the autosave keeps: every run's setup, colour, history, status and (once trained) checkpoint bytes. */
export async function snapshot() {
  const out = [];
  for (const rec of [...runs]) {
    let bytes = null;
    if (rec.handle && rec.stepCount > 0) bytes = await rec.handle.save().catch(() => null);
    out.push({
      no: rec.no,
      color: rec.color,
      values: rec.values,
      history: rec.history,
      stepCount: rec.stepCount,
      status: rec.training ? 'paused' : rec.status,
      message: rec.message,
      bytes,
    });
  }
  return { runs: out, selected: selected?.no ?? null };
}

/** Brings back the runs of an autosave: trained ones from their checkpoints, the others rebuilt from their setup. */
export async function restore(saved) {
  const engine = await startEngine();
  runs.length = 0;
  selected = null;
  for (const s of saved.runs) {
    const rec = add(s.values, { no: s.no, color: s.color, select: false });
    // An autosave from before a history field existed lacks it: start that one empty.
    rec.history = { ...emptyHistory(), ...s.history };
    const h = rec.history;
    if (h.aux.length < h.step.length) h.aux = [...new Array(h.step.length - h.aux.length).fill(null), ...h.aux];
    if (s.bytes) {
      const config = configFromValues(s.values);
      const corpus = configNeedsCorpus(config) ? await corpusText(s.values.corpus).catch(() => undefined) : undefined;
      try {
        const handle = await engine.loadRun(s.bytes, { corpus, backend: s.values.backend ?? 'cpu' });
        attach(rec, handle, rec.key);
        rec.status = s.status === 'training' || s.status === 'building' ? 'paused' : s.status;
        rec.message = s.message;
        continue;
      } catch (e) {
        rec.message = { text: e.message };
      }
    }
    rec.history = emptyHistory();
    scheduleBuild(rec, 0);
  }
  selected = byNo(saved.selected) ?? runs[0];
  emit('values', { values: selected.values, source: 'restore' });
  emitRuns();
  for (const rec of runs) if (rec.handle) emit('built', { rec });
}

/** Two restarts closer than this: the runs stay paused rather than risk a loop of restarts. */
const RESTART_LOOP_MS = 120000;
let lastRestart = -Infinity;

/**
 * The engine restarted (a panic, a Worker that died or stopped answering): every run is back at its last snapshot
 * ('restored'). Say what happened with the page's run numbers, and let the runs that were training go on.
 */
function onRestart({ message, runId, cause }, engine) {
  const now = performance.now();
  const loop = now - lastRestart < RESTART_LOOP_MS;
  lastRestart = now;
  const hit = runs.find((r) => r.handle && r.handle.id === runId);
  const s = Math.round(engine.snapshotEveryMs / 1000); // the most training a restart loses
  if (cause === 'died') notice('notice.engineDied', { s }, 'error');
  else if (cause === 'stuck') notice('notice.engineStuck', { msg: message, s }, 'error');
  else if (hit) notice('notice.engineRestartRun', { n: hit.no, msg: message }, 'error');
  else notice('notice.engineRestart', { msg: message }, 'error');
  const waiting = runs.filter((r) => r.resume);
  for (const rec of waiting) rec.resume = false;
  if (loop && waiting.length) notice('notice.engineLoop', {}, 'warn');
  else for (const rec of waiting) train(rec);
  emitRuns();
}

on('engine', ({ engine }) => {
  engine?.on('restart', (e) => onRestart(e, engine));
});

/** The pasted text changed: runs on it that have not trained are rebuilt with it (trained ones keep theirs). */
export function customTextChanged() {
  for (const rec of runs) {
    if (rec.values.corpus !== 'custom' || !applies(BY_KEY.corpus, rec.values) || rec.stepCount > 0 || rec.training) continue;
    rec.builtKey = null;
    rec.status = 'new';
    rec.message = null;
    scheduleBuild(rec, 0);
  }
  emitRuns();
}
