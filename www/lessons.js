// Lessons: a textbook claim turned into 2–4 runs that differ in one knob (same seed, same batches), trained side by
// side, and the measured outcome shown beside the claim. Each lesson is a data file, www/lessons/<id>.json, listed
// in www/lessons/index.json (the page, the service worker and tests/lessons.rs read the same files; docs/
// ARCHITECTURE.md, "Add a lesson", says what a file holds). This module loads them and turns each run's config into
// the page's option values; the logic — each run's config, the metrics, whether each expected direction held — is
// the package's (pkg/lessons.js, which the <transformer-playground> element uses too): re-exported here, with the
// page's run records (runs.js: values, history, msPerStep) read through `metricRecord`. It touches no DOM.
import { valuesFromConfig, configFromValues } from './options.js';
import * as shared from '../pkg/lessons.js';

export { METRICS, outcome, probeText, attentionEntropy, permutationGap, formatMetric, checkText, isRecipeLesson, recipeOptions } from '../pkg/lessons.js';

/** Where the lesson files are, relative to the page. */
export const DIR = 'www/lessons';

/** A page run record as the shared metrics read it: its fields, and its core config (from its option values). */
function metricRecord(rec) {
  return { ...rec, config: configFromValues(rec.values) };
}

/**
 * Measures the metrics that need a probe of the trained model or the core's shape flow (pkg/lessons.js probeRun)
 * on each finished run, keeping them on the record (`rec.lessonProbe`) for `result`. `corpus` is the corpus text,
 * `engine` the page's Engine.
 */
export async function probe(lesson, recs, corpus, engine) {
  for (const rec of recs) {
    if (rec.status !== 'done' || !rec.handle) continue;
    const got = await shared.probeRun(lesson, rec.handle, configFromValues(rec.values), corpus, engine);
    if (got) rec.lessonProbe = got;
  }
}

/**
 * The result of a finished lesson from the page's run records, in the lesson's run order (pkg/lessons.js result);
 * a recipe lesson's records (panels/lessons.js) are read as they are.
 */
export function result(lesson, recs) {
  return shared.result(lesson, shared.isRecipeLesson(lesson) ? recs : recs.map(metricRecord));
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
  const configs = shared.runConfigs(lesson, presetConfig, { sizes });
  return lesson.runs.map((run, i) => {
    const values = valuesFromConfig(configs[i], lesson.base.corpus);
    const back = configFromValues(values);
    for (const [path, v] of Object.entries(shared.runSettings(lesson, run, { sizes }))) {
      if (!kept(shared.getPath(back, path), v)) throw new Error(`lesson ${lesson.id}, run ${run.id}: the page has no option for ${path}`);
    }
    return values;
  });
}
