// Lessons: a textbook claim turned into 2–4 runs that differ in one knob (same seed, same batches), trained side by
// side, and the measured outcome shown beside the claim. Each lesson is a data file, www/lessons/<id>.json, listed
// in www/lessons/index.json (the page, the service worker and tests/lessons.rs read the same files; docs/
// ARCHITECTURE.md, "Add a lesson", says what a file holds). This module loads them, builds each run's option values
// the way tests/lessons.rs builds its configs (the preset, the base settings, the run's knob), and computes the
// lesson's metrics from a run's history and whether each expected direction held. It touches no DOM.
import { valuesFromConfig, configFromValues } from './options.js';

/** Where the lesson files are, relative to the page. */
export const DIR = 'www/lessons';

/**
 * The metrics a lesson can compare, each computed from a run record (runs.js: history, values, msPerStep): the
 * same quantities tests/lessons.rs measures natively. `comparable: false`: machine-dependent, shown only.
 */
export const METRICS = {
  // The validation loss measured after the last step (the engine evaluates at the last step of a training).
  final_val_loss: { digits: 3, of: (rec) => last(rec.history.val) },
  max_grad_norm: { digits: 3, of: (rec) => (rec.history.grad.length ? Math.max(...rec.history.grad) : null) },
  // The last block's gradient norm over the first block's, at step 0 (the first progress record).
  grad_norm_ratio_step0: {
    digits: 3,
    of: (rec) => {
      const h = rec.history;
      const blocks = h.layerNames.map((n, j) => [n, j]).filter(([n]) => n.includes('blocks.'));
      if (h.step.length === 0 || blocks.length < 2) return null;
      return h.layers[blocks.at(-1)[1]][0] / h.layers[blocks[0][1]][0];
    },
  },
  // K and V of every layer for one position, f32: 2 · L · NKV · HS · 4 bytes (the paged cache's bytes per position).
  kv_bytes_per_token: {
    digits: 0,
    of: (rec) => {
      const v = rec.values;
      const layers = v.arch === 'encoder_decoder' ? v.n_decoder_layers : v.n_layers;
      return 2 * layers * v.n_kv_heads * (v.d_model / v.n_heads) * 4;
    },
  },
  // Entropy of each MoE layer's expert load at the last step over ln E (1: every expert equally used), averaged.
  expert_load_entropy: {
    digits: 3,
    of: (rec) => {
      const layers = rec.history.load?.layers;
      if (!layers?.length) return null;
      const ent = (load) => load.filter((p) => p > 0).reduce((s, p) => s - p * Math.log(p), 0) / Math.log(load.length);
      return layers.reduce((s, l) => s + ent(l.load), 0) / layers.length;
    },
  },
  // Mean entropy of the attention rows on the probe text (see probeText), each over ln(t + 1): 1 = spread evenly
  // over the t + 1 keys a causal row has, 0 = on one key. Measured by `probe` once the run has finished.
  attention_entropy: { digits: 3, probe: true, of: (rec) => rec.lessonProbe?.attentionEntropy ?? null },
  // The largest change of an attention weight when the probe text is reversed (weights compared at the permuted
  // positions): 0 up to rounding when nothing tells positions apart. Bidirectional (bert) attention.
  permutation_gap: { digits: 6, probe: true, of: (rec) => rec.lessonProbe?.permutationGap ?? null },
  // The core's parameter counts (Engine#shapeFlow, the summary's): all of them, and those one token uses.
  params_total: { digits: 0, probe: true, of: (rec) => rec.lessonProbe?.params ?? null },
  params_active: { digits: 0, probe: true, of: (rec) => rec.lessonProbe?.active ?? null },
  ms_per_step: { digits: 1, comparable: false, of: (rec) => rec.msPerStep ?? null },
};

/** The text attention is probed on: the first ctx_len characters of the corpus (tests/lessons.rs uses the same). */
export function probeText(corpus, ctxLen) {
  return [...corpus].slice(0, ctxLen).join('');
}

/** attention_entropy of the core's attention maps (Run#attention) of a causal model. */
export function attentionEntropy(maps) {
  let sum = 0;
  let n = 0;
  for (const m of maps.maps.filter((x) => x.kind === 'self')) {
    for (let h = 0; h < m.heads; h++) {
      for (let t = 1; t < m.t; t++) {
        const row = m.probs.slice((h * m.t + t) * m.s, (h * m.t + t + 1) * m.s);
        sum += row.reduce((e, p) => (p > 0 ? e - p * Math.log(p) : e), 0) / Math.log(t + 1);
        n += 1;
      }
    }
  }
  return n ? sum / n : null;
}

/** permutation_gap of the attention maps of a text (`a`) and of the text reversed (`b`). */
export function permutationGap(a, b) {
  let gap = 0;
  a.maps.forEach((ma, k) => {
    const mb = b.maps[k];
    if (ma.kind !== 'self') return;
    const t = ma.t;
    for (let h = 0; h < ma.heads; h++) {
      for (let i = 0; i < t; i++) {
        for (let j = 0; j < t; j++) gap = Math.max(gap, Math.abs(ma.probs[(h * t + i) * t + j] - mb.probs[(h * t + t - 1 - i) * t + t - 1 - j]));
      }
    }
  });
  return gap;
}

/**
 * Measures the metrics that need a probe of the trained model (attention_entropy, permutation_gap) or the core's
 * shape flow (params_total, params_active) on each finished run, keeping them on the record (`rec.lessonProbe`)
 * for `result`. `corpus` is the corpus text, `engine` the page's Engine.
 */
export async function probe(lesson, recs, corpus, engine) {
  if (!lesson.metrics.some((m) => METRICS[m].probe)) return;
  for (const rec of recs) {
    if (rec.status !== 'done' || !rec.handle) continue;
    const text = probeText(corpus, rec.values.ctx_len);
    const maps = await rec.handle.attention(text);
    const flow = await engine.shapeFlow(configFromValues(rec.values), rec.handle.vocabSize);
    rec.lessonProbe = { attentionEntropy: rec.values.arch === 'gpt' ? attentionEntropy(maps) : null, params: flow.n_params, active: flow.active_params };
    if (lesson.metrics.includes('permutation_gap')) {
      rec.lessonProbe.permutationGap = permutationGap(maps, await rec.handle.attention([...text].reverse().join('')));
    }
  }
}

function last(xs) {
  for (let i = xs.length - 1; i >= 0; i--) if (xs[i] !== null && Number.isFinite(xs[i])) return xs[i];
  return null;
}

const loaded = new Map(); // id → lesson
let order = [];

/** Loads the index and every lesson file; resolves the lessons in the index's order. */
export async function loadLessons() {
  if (order.length) return list();
  const get = async (f) => {
    const r = await fetch(`${DIR}/${f}`);
    if (!r.ok) throw new Error(`${DIR}/${f}: HTTP ${r.status}`);
    return r.json();
  };
  const index = await get('index.json');
  const lessons = await Promise.all(index.lessons.map((id) => get(`${id}.json`)));
  for (const l of lessons) loaded.set(l.id, l);
  order = index.lessons;
  return list();
}

export function list() {
  return order.map((id) => loaded.get(id));
}

export function byId(id) {
  return loaded.get(id) ?? null;
}

/** Sets a config path ("model.norm.kind", "train.betas.0") in a config object, making the objects on the way. */
function setPath(cfg, path, value) {
  const keys = path.split('.');
  let x = cfg;
  for (const k of keys.slice(0, -1)) {
    if (x[k] === undefined || x[k] === null) x[k] = {};
    x = x[k];
  }
  x[keys.at(-1)] = value;
}

function getPath(cfg, path) {
  return path.split('.').reduce((x, k) => (x === undefined || x === null ? undefined : x[k]), cfg);
}

/** Whether a setting survived the option table (numbers as the core's f32, objects field by field, null as absent). */
function kept(got, want) {
  if (want === null) return got === undefined || got === null;
  if (typeof want === 'number') return typeof got === 'number' && Math.fround(got) === Math.fround(want);
  if (typeof want === 'object') return got !== null && typeof got === 'object' && Object.entries(want).every(([k, v]) => kept(got[k], v));
  return got === want;
}

/**
 * The option values of each run of `lesson`: the preset's config (`presetConfig`, the parsed configs/<preset>.json),
 * the lesson's base settings, with `sizes: 'test'` its test sizes, then the run's knob — as tests/lessons.rs builds
 * them natively. Throws, naming the lesson, run and path, when a setting is not something the page's option table
 * can hold.
 */
export function runValues(lesson, presetConfig, { sizes = 'page' } = {}) {
  return lesson.runs.map((run) => {
    const cfg = structuredClone(presetConfig);
    const settings = { ...lesson.base.set, ...(sizes === 'test' ? lesson.test.set : {}), ...run.set };
    for (const [path, v] of Object.entries(settings)) setPath(cfg, path, structuredClone(v));
    const values = valuesFromConfig(cfg, lesson.base.corpus);
    const back = configFromValues(values);
    for (const [path, v] of Object.entries(settings)) {
      if (!kept(getPath(back, path), v)) throw new Error(`lesson ${lesson.id}, run ${run.id}: the page has no option for ${path}`);
    }
    return values;
  });
}

/**
 * 'holds', 'reversed' or 'tie' for one expected comparison, from the two runs' values of its metric (null: the
 * run diverged or has no value — the worst, as tests/lessons.rs counts it).
 */
export function outcome(e, a, b) {
  const worst = e.is === 'higher' ? -Infinity : Infinity;
  const x = a ?? worst;
  const y = b ?? worst;
  const d = x - y;
  const tie = Number.isNaN(d) || Math.abs(d) <= e.margin;
  if (e.is === 'tie') return tie ? 'holds' : 'reversed';
  if (tie) return 'tie';
  return (e.is === 'lower' ? d < 0 : d > 0) ? 'holds' : 'reversed';
}

/**
 * The result of a finished lesson from its run records (in the lesson's run order): each run's metrics (null
 * where it has none; `diverged` when it stopped with an error), and each expected comparison's outcome.
 */
export function result(lesson, recs) {
  const runs = lesson.runs.map((run, i) => {
    const rec = recs[i];
    const diverged = rec.status === 'error';
    // A run that stopped has no final validation loss; its other metrics are of the steps it took.
    const metrics = Object.fromEntries(lesson.metrics.map((m) => [m, diverged && m === 'final_val_loss' ? null : METRICS[m].of(rec)]));
    return { id: run.id, no: rec.no, color: rec.color, diverged, message: diverged ? rec.message?.text ?? null : null, metrics };
  });
  const byRun = Object.fromEntries(runs.map((r) => [r.id, r]));
  const checks = lesson.expect.map((e) => ({ ...e, outcome: outcome(e, byRun[e.a].metrics[e.metric], byRun[e.b].metrics[e.metric]) }));
  return { runs, checks, held: checks.every((c) => c.outcome === 'holds') };
}
