// <transformer-playground>: a live trainer in one tag, for course notes, blogs and learning-management systems.
//
//   <script type="module">import 'transformer-playground/element';</script>
//   <transformer-playground preset="llama-style" steps="200" controls="full" lang="zh"></transformer-playground>
//
// It shows the loss chart (chart.js: its own small SVG, so the package needs nothing else), a Train/Pause button
// and, with controls="full", the main knobs; everything in its shadow DOM. Every widget on a page shares one
// Engine — one Worker, and in the threaded build one pool of threads; their runs train in turn. Events: `progress`
// (detail { step, loss, val_loss }) each step, `done` when the run reached its steps, `error` (detail { kind,
// message, field? }) for a bad attribute or a failed run — the message is also shown in the widget.
// lesson="<id>" embeds a lesson (pkg/lessons.js, the page's too): its text, its runs trained side by side, each in
// its colour, and its result. Attributes: pkg/README.md "The element".
import { Engine, EngineError, BACKEND_OPTIONS } from './index.js';
import { PRESETS, DEFAULT_PRESET, presetConfig, presetNeedsGpu } from './presets.js';
import * as STRINGS from './strings.js';
import { isolation } from './isolate.js';
import { LossChart, CHART_STYLE, COLORS } from './chart.js';
import { lessonById, LESSON_IDS, isRecipeLesson, runConfigs, emptyHistory, recordProgress, probeRun, result, formatMetric, checkText, setPath, getPath } from './lessons.js';

/** The attributes the element reads; a change of one of RESET starts its run again (fresh weights). */
const ATTRIBUTES = ['preset', 'config', 'lesson', 'sizes', 'lang', 'controls', 'steps', 'backend', 'corpus'];
const RESET = new Set(['preset', 'config', 'lesson', 'sizes', 'steps', 'backend', 'corpus']);

/** The knobs of controls="full": config fields (the core's names; their labels are the page's opt.<name>.label). */
const KNOBS = ['model.d_model', 'model.n_layers', 'model.n_heads', 'train.lr', 'train.batch_size', 'train.steps'];

const MAX_STEPS = 1_000_000;

let engine = null; // the page's one Engine, shared by every widget (a promise; null again after a failed start)

/**
 * The Engine every <transformer-playground> of the page uses, started on first use — after the service worker's
 * isolation, when the page asked for it (isolate.js), so that the threaded build runs where it can.
 */
export function sharedEngine() {
  engine ??= isolation().then(() => Engine.start()).catch((e) => {
    engine = null; // a later widget (or a later Train) tries again
    throw e;
  });
  return engine;
}

// The text presets train on Tiny Shakespeare, which the package carries (scripts/pkg-assets.mjs). Keep the
// `new URL('…', import.meta.url)` literal: bundlers (Vite, webpack) recognise it and ship the file.
const SHAKESPEARE = new URL('./data/tinyshakespeare.txt', import.meta.url);
const texts = new Map(); // url → Promise<string>, fetched once per page

function fetchText(url) {
  if (!texts.has(url)) {
    texts.set(url, fetch(url).then((r) => {
      if (!r.ok) throw new EngineError(`corpus ${url}: HTTP ${r.status}`, { kind: 'io' });
      return r.text();
    }));
    texts.get(url).catch(() => texts.delete(url));
  }
  return texts.get(url);
}

/** A widget's problem before the engine is involved (a bad attribute): shown, and sent as an `error` event. */
class Problem extends Error {
  constructor(message, kind, field) {
    super(message);
    this.kind = kind;
    this.field = field;
  }
}

const STYLE = `
:host { display: block; font: 14px/1.4 system-ui, sans-serif; color: #1d2330; max-width: 40rem; }
:host([hidden]) { display: none; }
.box { border: 1px solid #c9cfdb; border-radius: 8px; padding: 0.75rem; background: #fff; }
header { display: flex; gap: 0.5rem; align-items: baseline; flex-wrap: wrap; }
.title { font-weight: 600; }
.desc { color: #5a6375; font-size: 0.85em; }
.bar { display: flex; gap: 0.75rem; align-items: center; flex-wrap: wrap; }
button { font: inherit; padding: 0.3rem 1rem; border-radius: 6px; border: 1px solid #2f6fde; background: #2f6fde; color: #fff; cursor: pointer; }
button:disabled { opacity: 0.5; cursor: default; }
.status { font-variant-numeric: tabular-nums; }
.backend { margin-left: auto; font-size: 0.8em; color: #5a6375; }
.knobs { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: 0.4rem 0.75rem; margin-top: 0.6rem; }
.knobs label { display: flex; flex-direction: column; font-size: 0.85em; }
.knobs input { font: inherit; width: 100%; box-sizing: border-box; }
.error { color: #b3261e; margin: 0.5rem 0 0; white-space: pre-wrap; }
.error:empty, .knobs:empty { display: none; }
.lesson p { margin: 0.3rem 0; font-size: 0.9em; }
.lesson:empty, .result:empty { display: none; }
.result table { border-collapse: collapse; font-size: 0.85em; margin: 0.3rem 0; }
.result th, .result td { padding: 0.15rem 0.5rem; text-align: left; border-bottom: 1px solid #e3e7ef; }
.result td { font-variant-numeric: tabular-nums; text-align: right; }
.result ul { margin: 0.3rem 0; padding-left: 1.2rem; font-size: 0.85em; }
.result .check-holds strong { color: #1b7a3d; }
.result .check-reversed strong, .result .check-tie strong { color: #b3261e; }
.result .verdict { font-weight: 600; font-size: 0.9em; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 0.3em; vertical-align: -0.05em; }
`;

/** The `<transformer-playground>` element (registered under that name when this module loads). */
export class TransformerPlayground extends HTMLElement {
  static observedAttributes = ATTRIBUTES;

  #ui = {};
  #config = null; // the config the run is made from (attributes and knobs applied), or null while loading / on error
  #full = null; // the same with the core's defaults filled in (what the knobs show)
  #lesson = null; // the lesson (pkg/lessons-data.js) when lesson="…" names one
  #configs = []; // a lesson's run configs (attributes and knobs applied), in its run order
  #recs = []; // a lesson's runs: { handle, config, history, msPerStep, status, message, color, lessonProbe }
  #result = null; // a lesson's result (pkg/lessons.js result) once every run finished
  #shown = ''; // what the lesson and result boxes show (lesson, language, result), to redraw them only on a change
  #info = null; // engine.info
  #run = null;
  #training = false;
  #done = false;
  #points = []; // [step, loss] of the training batches
  #val = []; // [step, val_loss]
  #knobs = {}; // config path → value set in the knobs (cleared when the preset or config changes)
  #gen = 0; // which set-up is current: answers for an older one are dropped
  #scheduled = false;
  #frame = 0;
  #chart;

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    const el = (tag, attrs = {}) => Object.assign(document.createElement(tag), attrs);
    const box = el('div', { className: 'box' });
    box.setAttribute('part', 'box');
    const header = el('header');
    this.#ui.title = el('span', { className: 'title' });
    this.#ui.desc = el('span', { className: 'desc' });
    header.append(this.#ui.title, this.#ui.desc);
    this.#chart = new LossChart();
    const bar = el('div', { className: 'bar' });
    this.#ui.button = el('button', { type: 'button', disabled: true });
    this.#ui.button.setAttribute('part', 'button');
    this.#ui.button.addEventListener('click', () => (this.#training ? this.pause() : this.train()));
    this.#ui.status = el('span', { className: 'status' });
    this.#ui.backend = el('span', { className: 'backend' });
    bar.append(this.#ui.button, this.#ui.status, this.#ui.backend);
    this.#ui.knobs = el('div', { className: 'knobs' });
    this.#ui.error = el('p', { className: 'error', role: 'alert' });
    this.#ui.lesson = el('div', { className: 'lesson' });
    this.#ui.lesson.setAttribute('part', 'lesson');
    this.#ui.result = el('div', { className: 'result', role: 'status' });
    this.#ui.result.setAttribute('part', 'result');
    box.append(header, this.#ui.lesson, this.#chart.element, this.#chart.legend, bar, this.#ui.knobs, this.#ui.result, this.#ui.error);
    root.append(el('style', { textContent: STYLE + CHART_STYLE }), box);
  }

  connectedCallback() {
    this.#schedule();
  }

  disconnectedCallback() {
    this.#gen++;
    this.#drop();
  }

  attributeChangedCallback(name, old, now) {
    if (old === now) return;
    if (name === 'preset' || name === 'config' || name === 'lesson' || name === 'sizes') {
      this.#knobs = {};
      this.#full = null;
    }
    if (name === 'steps') delete this.#knobs['train.steps'];
    if (RESET.has(name)) this.#schedule();
    else this.#render();
  }

  /** The run being trained (an engine Run: index.d.ts), or null before the first Train. */
  get run() {
    return this.#run;
  }

  /** A lesson's runs (engine Runs, in the lesson's run order), empty before the first Train or without a lesson. */
  get runs() {
    return this.#recs.map((r) => r.handle);
  }

  /**
   * A lesson's result once its runs finished (pkg/lessons.js result: each run's metrics, each expected
   * comparison's outcome, `held`), else null.
   */
  get result() {
    return this.#result && structuredClone(this.#result);
  }

  /** The config the widget trains (attributes and knobs applied), or null while it loads or when it is bad. */
  get config() {
    return this.#config && structuredClone(this.#config);
  }

  /** The widget's language: 'zh' or 'en' (any other value of `lang` is English). */
  get language() {
    return this.getAttribute('lang') === 'zh' ? 'zh' : 'en';
  }

  /** The string `key` in the widget's language, {name} filled from `vars`. */
  #t(key, vars = {}) {
    const s = STRINGS[this.language][key] ?? STRINGS.en[key] ?? key;
    return s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  }

  /** Set-up happens once per batch of attribute changes (a page that sets three attributes gets one). */
  #schedule() {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (this.isConnected) this.#setup();
    });
  }

  /** Reads the attributes, checks the config with the core and gets ready to train (the run is made on Train). */
  async #setup() {
    const gen = ++this.#gen;
    this.#drop();
    this.#config = this.#lesson = this.#result = null; // #full stays while knobs are set: they must stay on screen to be fixed
    this.#configs = [];
    if (!Object.keys(this.#knobs).length) this.#full = null;
    this.#points = [];
    this.#val = [];
    this.#done = false;
    this.#ui.error.textContent = '';
    this.#render();
    try {
      const config = await this.#resolveConfig();
      const backend = this.#backend();
      if (!BACKEND_OPTIONS.includes(backend)) {
        throw new Problem(`backend = “${backend}”: must be ${BACKEND_OPTIONS.map((b) => `“${b}”`).join(', ')}`, 'invalid', 'backend');
      }
      const e = await sharedEngine().catch((err) => {
        throw new Problem(this.#t('el.engineFailed', { msg: err.message }), err.kind ?? 'runtime');
      });
      if (gen !== this.#gen) return;
      this.#info = e.info;
      const configs = this.#lesson ? this.#configs : [config];
      const full = await Promise.all(configs.map((c) => e.validate(c)));
      if (gen !== this.#gen) return;
      this.#config = config;
      this.#full = full[0];
    } catch (err) {
      if (gen === this.#gen) this.#fail(err);
    }
    if (gen === this.#gen) this.#render();
  }

  /**
   * The config the attributes describe: lesson (its first run's; all of them in #configs), else config (JSON or
   * URL), else preset; then steps and knobs.
   */
  async #resolveConfig() {
    let config;
    const lesson = this.getAttribute('lesson');
    const json = this.getAttribute('config');
    if (lesson !== null) {
      const l = lessonById(lesson.trim());
      // The lessons a widget can show: recipe lessons run in the playground's Lessons panel only.
      if (!l) throw new Problem(this.#t('el.noLesson', { id: lesson, ids: LESSON_IDS.filter((id) => !isRecipeLesson(lessonById(id))).join(', ') }), 'lesson', 'lesson');
      // A recipe lesson's runs are the engine's recipes (stages, their own charts): the playground page runs them.
      if (isRecipeLesson(l)) throw new Problem(this.#t('el.recipeLesson', { id: l.id }), 'lesson', 'lesson');
      const sizes = this.getAttribute('sizes') ?? 'page';
      if (sizes !== 'page' && sizes !== 'test') throw new Problem(`sizes = “${sizes}”: must be “page” or “test”`, 'invalid', 'sizes');
      this.#lesson = l;
      this.#configs = runConfigs(l, presetConfig(l.base.preset), { sizes });
      config = this.#configs[0];
    } else if (json !== null && json.trim().startsWith('{')) {
      try {
        config = JSON.parse(json);
      } catch (e) {
        throw new Problem(this.#t('el.badConfig', { msg: e.message }), 'config', 'config');
      }
    } else if (json !== null) {
      const url = new URL(json.trim(), document.baseURI);
      const r = await fetch(url).catch((e) => {
        throw new Problem(this.#t('el.badConfig', { msg: `${url}: ${e.message}` }), 'io', 'config');
      });
      if (!r.ok) throw new Problem(this.#t('el.badConfig', { msg: `${url}: HTTP ${r.status}` }), 'io', 'config');
      try {
        config = await r.json();
      } catch (e) {
        throw new Problem(this.#t('el.badConfig', { msg: `${url}: ${e.message}` }), 'config', 'config');
      }
    } else {
      const name = this.getAttribute('preset') ?? DEFAULT_PRESET;
      config = presetConfig(name);
      if (!config) throw new Problem(this.#t('el.noPreset', { name, names: PRESETS.join(', ') }), 'invalid', 'preset');
    }
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new Problem(this.#t('el.badConfig', { msg: 'not a JSON object' }), 'config', 'config');
    }
    const steps = this.getAttribute('steps');
    for (const c of this.#lesson ? this.#configs : [config]) {
      if (steps !== null) {
        const n = Number(steps);
        if (!/^\s*\d+\s*$/.test(steps) || n < 1 || n > MAX_STEPS) throw new Problem(this.#t('el.badSteps', { value: steps }), 'invalid', 'steps');
        setPath(c, 'train.steps', n);
      }
      for (const [path, value] of Object.entries(this.#knobs)) setPath(c, path, value);
    }
    return config;
  }

  /** Shows `err` (an EngineError, a Problem, anything) and sends it as an `error` event. */
  #fail(err) {
    const message = err?.message ?? String(err);
    this.#ui.error.textContent = message;
    const detail = { kind: err?.kind ?? 'runtime', message };
    if (err?.field) detail.field = err.field;
    this.dispatchEvent(new CustomEvent('error', { detail }));
  }

  /** Forgets the run, or a lesson's runs (pausing and freeing them in the engine). */
  #drop() {
    const runs = [this.#run, ...this.#recs.map((r) => r.handle)].filter(Boolean);
    this.#run = null;
    this.#recs = [];
    this.#training = false;
    for (const run of runs) run.pause().catch(() => {}).finally(() => run.dispose().catch(() => {}));
  }

  /**
   * Trains to the config's steps (a fresh run on the first call, and again after `done`); resolves when it stops.
   * The button does this.
   */
  async train() {
    if (!this.#config || this.#training) return;
    const gen = this.#gen;
    this.#training = true;
    this.#ui.error.textContent = '';
    this.#render();
    if (this.#lesson) return this.#trainLesson(gen);
    try {
      if (!this.#run || this.#done) await this.#newRun(gen);
      if (gen !== this.#gen) return;
      const run = this.#run;
      const target = run.config.train.steps;
      const r = await run.train({ steps: Math.max(1, target - run.stepCount) });
      if (gen !== this.#gen || run !== this.#run) return;
      this.#training = false;
      if (r.step >= target) {
        this.#done = true;
        const last = run.last;
        this.dispatchEvent(new CustomEvent('done', { detail: { step: r.step, loss: last?.loss ?? null, val_loss: this.#val.at(-1)?.[1] ?? null } }));
      }
    } catch (err) {
      if (gen !== this.#gen) return;
      this.#training = false;
      this.#fail(err);
    }
    this.#render();
  }

  /** Pauses training after the current step. */
  async pause() {
    await Promise.all([this.#run, ...this.#recs.map((r) => r.handle)].map((run) => run?.pause().catch(() => {})));
  }

  /**
   * Trains a lesson's runs side by side (the shared engine steps them in turn) to their steps — fresh runs on the
   * first call and after `done` —; when every one has stopped (reached its steps, or failed), measures the lesson's
   * metrics (the probes too, as the page does: pkg/lessons.js), shows the result and sends `done` (detail: the result).
   */
  async #trainLesson(gen) {
    const lesson = this.#lesson;
    try {
      if (!this.#recs.length || this.#done) {
        this.#drop();
        this.#training = true;
        this.#done = false;
        this.#result = null;
        for (const [i, config] of this.#configs.entries()) {
          const handle = await this.#create(config, gen);
          if (!handle) return;
          const rec = { handle, config: handle.config, history: emptyHistory(), msPerStep: null, status: 'new', message: null, color: COLORS[i % COLORS.length] };
          this.#recs.push(rec);
          handle.on('progress', (p) => {
            if (!this.#recs.includes(rec)) return;
            recordProgress(rec, p);
            this.#info = { ...this.#info, backend: p.backend };
            const val = Number.isFinite(p.valLoss) ? p.valLoss : null;
            this.dispatchEvent(new CustomEvent('progress', { detail: { run: i, step: p.step, loss: p.loss, val_loss: val } }));
            this.#frame ||= requestAnimationFrame(() => {
              this.#frame = 0;
              this.#render();
            });
          });
        }
      }
      const recs = this.#recs;
      await Promise.all(recs.map(async (rec) => {
        if (rec.status === 'done' || rec.status === 'error') return;
        rec.status = 'training';
        const target = rec.config.train.steps;
        try {
          const r = await rec.handle.train({ steps: Math.max(1, target - rec.handle.stepCount) });
          rec.status = r.step >= target ? 'done' : 'paused';
        } catch (err) {
          rec.status = 'error'; // diverged or failed: the result says so (no final loss)
          rec.message = { text: err.message };
        }
      }));
      if (gen !== this.#gen || recs !== this.#recs) return;
      this.#training = false;
      if (recs.every((r) => r.status === 'done' || r.status === 'error')) {
        if (recs.some((r) => r.status === 'done')) {
          const corpus = await fetchText(this.#corpusUrl());
          const e = await sharedEngine();
          for (const rec of recs.filter((r) => r.status === 'done')) rec.lessonProbe = await probeRun(lesson, rec.handle, rec.config, corpus, e);
        }
        if (gen !== this.#gen || recs !== this.#recs) return;
        this.#done = true;
        this.#result = result(lesson, recs);
        this.dispatchEvent(new CustomEvent('done', { detail: { result: structuredClone(this.#result) } }));
      }
    } catch (err) {
      if (gen !== this.#gen) return;
      this.#training = false;
      this.#fail(err);
    }
    this.#render();
  }

  /** The corpus a text config trains on: the `corpus` attribute's URL, else Tiny Shakespeare. */
  #corpusUrl() {
    return this.getAttribute('corpus') ? new URL(this.getAttribute('corpus'), document.baseURI).href : SHAKESPEARE.href;
  }

  /**
   * An engine Run of `config` (null when the set-up changed meanwhile). The core says whether it trains on a
   * text: asked without one, a config that needs it is refused with a `data` error `no_text`, and it is made again
   * on the corpus (#corpusUrl).
   */
  async #create(config, gen) {
    const e = await sharedEngine();
    const backend = this.#backend();
    let run;
    try {
      run = await e.createRun(config, { backend });
    } catch (err) {
      if (!(err.kind === 'data' && err.reason === 'no_text')) throw err;
      run = await e.createRun(config, { backend, corpus: await fetchText(this.#corpusUrl()) });
    }
    if (gen !== this.#gen) {
      run.dispose().catch(() => {});
      return null;
    }
    run.on('error', (err) => (run === this.#run || this.#recs.some((r) => r.handle === run)) && this.#fail(err));
    return run;
  }

  /** A fresh run of the config (#create). */
  async #newRun(gen) {
    this.#drop();
    this.#training = true;
    this.#points = [];
    this.#val = [];
    this.#done = false;
    const run = await this.#create(this.#config, gen);
    if (!run) return;
    this.#run = run;
    run.on('progress', (p) => {
      if (run !== this.#run) return;
      this.#points.push([p.step, p.loss]);
      const val = Number.isFinite(p.valLoss) ? p.valLoss : null;
      if (val !== null) this.#val.push([p.step, val]);
      this.#info = { ...this.#info, backend: p.backend };
      this.dispatchEvent(new CustomEvent('progress', { detail: { step: p.step, loss: p.loss, val_loss: val } }));
      this.#frame ||= requestAnimationFrame(() => {
        this.#frame = 0;
        this.#render();
      });
    });
  }

  #render() {
    const ui = this.#ui;
    const name = this.getAttribute('preset') ?? DEFAULT_PRESET;
    const fromPreset = this.getAttribute('lesson') === null && this.getAttribute('config') === null;
    const lesson = this.getAttribute('lesson');
    const tx = (x) => x[this.language] ?? x.en; // a lesson's text in the widget's language
    ui.title.textContent = this.#lesson ? tx(this.#lesson.title) : lesson ?? (fromPreset ? (STRINGS.en[`preset.${name}`] ? this.#t(`preset.${name}`) : name) : this.#t('el.custom'));
    ui.desc.textContent = fromPreset && STRINGS.en[`preset.d.${name}`] ? this.#t(`preset.d.${name}`) : '';
    ui.button.textContent = this.#t(this.#training ? 'ctl.pause' : 'ctl.train');
    ui.button.disabled = !this.#config;
    ui.backend.textContent = this.#backendText();
    const steps = this.#config?.train?.steps ?? this.#full?.train?.steps;
    if (this.#lesson) {
      this.#renderLesson(tx, steps);
      this.#renderKnobs();
      return;
    }
    const last = this.#points.at(-1);
    if (last) {
      const val = this.#val.at(-1);
      ui.status.textContent = `${this.#t('ctl.step.readout')} ${last[0]}/${steps} · ${this.#t('ctl.loss')} ${last[1].toFixed(3)}`
        + (val ? ` · ${this.#t('el.val')} ${val[1].toFixed(3)}` : '') + (this.#done ? ` · ${this.#t('el.done', { steps: last[0] })}` : '');
    } else ui.status.textContent = '';
    this.#chart.draw([{ points: this.#points, val: this.#val }], steps, this.#chartLabels());
    ui.lesson.replaceChildren();
    ui.result.replaceChildren();
    this.#shown = '';
    this.#renderKnobs();
  }

  #chartLabels() {
    return { title: this.#t('chart.loss'), step: this.#t('chart.step'), empty: this.#t('chart.empty') };
  }

  /** A lesson: its text, each run's curves in its colour (the legend names them), the status and the result. */
  #renderLesson(tx, steps) {
    const ui = this.#ui;
    const l = this.#lesson;
    const recs = this.#recs;
    const series = l.runs.map((run, i) => {
      const h = recs[i]?.history;
      const points = h ? h.step.map((s, k) => [s, h.loss[k]]) : [];
      const val = h ? h.step.map((s, k) => [s, h.val[k]]).filter(([, v]) => v !== null && Number.isFinite(v)) : [];
      return { points, val, color: COLORS[i % COLORS.length], label: tx(run.label) };
    });
    this.#chart.draw(series, steps, this.#chartLabels());
    const at = series.map((s) => s.points.at(-1));
    ui.status.textContent = at.some(Boolean)
      ? `${this.#t('ctl.step.readout')} ${at.map((p) => p?.[0] ?? 0).join(' · ')} / ${steps} · ${this.#t('ctl.loss')} ${at.map((p) => (p ? p[1].toFixed(3) : '—')).join(' · ')}`
        + (this.#done ? ` · ${this.#t('el.done', { steps })}` : '')
      : '';
    const key = `${l.id}|${this.language}|${this.#result ? JSON.stringify(this.#result.checks.map((c) => c.outcome)) + this.#gen : ''}`;
    if (key === this.#shown) return;
    this.#shown = key;
    const el = (tag, props = {}, ...kids) => {
      const e = Object.assign(document.createElement(tag), props);
      e.append(...kids.filter((k) => k !== null));
      return e;
    };
    const para = (cls, label, text) => el('p', { className: cls }, el('strong', {}, label), ' ', text);
    ui.lesson.replaceChildren(
      para('claim', this.#t('lessons.claim'), tx(l.claim)),
      para('source', this.#t('lessons.source'), tx(l.source)),
      para('watch', this.#t('lessons.watch'), tx(l.watch)));
    const r = this.#result;
    if (!r) {
      ui.result.replaceChildren();
      return;
    }
    const label = (id) => tx(l.runs.find((x) => x.id === id).label);
    const head = el('tr', {}, el('th', {}, this.#t('lessons.run')), ...l.metrics.map((m) => el('th', { title: this.#t(`lessons.metric.${m}.help`) }, this.#t(`lessons.metric.${m}`))));
    const rows = r.runs.map((run, i) => {
      const sw = el('span', { className: 'swatch' });
      sw.style.background = COLORS[i % COLORS.length];
      const row = el('tr', {}, el('th', { scope: 'row' }, sw, tx(l.runs[i].label), run.diverged ? el('div', {}, this.#t('lessons.diverged', { msg: run.message ?? '' })) : null),
        ...l.metrics.map((m) => {
          // A metric the engine refused for this run (learned positions past ctx_len): the reason, not a number.
          const why = run.refused?.[m];
          const td = el('td', { className: why ? 'metric refused' : 'metric', title: why ?? '' }, why ? this.#t('lessons.refused') : formatMetric(m, run.metrics[m]));
          td.dataset.metric = m;
          td.dataset.value = String(run.metrics[m] ?? '');
          return td;
        }));
      row.dataset.run = run.id;
      return row;
    });
    const checks = r.checks.map((c) => {
      const li = el('li', { className: `check check-${c.outcome}` },
        checkText(c, label, (k, v) => this.#t(k, v)),
        ' — ', el('strong', {}, this.#t(`lessons.outcome.${c.outcome}`)));
      li.dataset.outcome = c.outcome;
      return li;
    });
    ui.result.replaceChildren(
      el('strong', {}, this.#t('lessons.result')),
      el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows)),
      el('ul', {}, ...checks),
      el('p', { className: `verdict ${r.held ? 'held' : 'not-held'}` }, this.#t(r.held ? 'lessons.verdict.held' : 'lessons.verdict.notHeld'), r.held ? '' : ` ${tx(l.why_not)}`));
  }

  /** The backend attribute; without one 'cpu', or 'auto' for a preset that needs a GPU (WebGPU, or a clear refusal). */
  #backend() {
    const preset = this.hasAttribute('config') || this.hasAttribute('lesson') ? null : this.getAttribute('preset');
    return this.getAttribute('backend') ?? (presetNeedsGpu(preset) ? 'auto' : 'cpu');
  }

  #backendText() {
    const b = this.#info?.backend;
    if (!b) return this.#t('backend.loading');
    if (b === 'wasm-threads') return this.#t('backend.wasm-threads', { n: this.#info.threads });
    return this.#t(b === 'webgpu' ? 'backend.webgpu' : 'backend.wasm-single');
  }

  /** controls="full": a number field for each knob the config has; a change makes a fresh run of the new config. */
  #renderKnobs() {
    const box = this.#ui.knobs;
    const full = this.getAttribute('controls') === 'full' && this.#full;
    if (!full) {
      box.replaceChildren();
      return;
    }
    const fields = KNOBS.filter((path) => typeof getPath(this.#full, path) === 'number');
    const have = [...box.querySelectorAll('input')].map((i) => i.name).join();
    if (have !== fields.join() || box.dataset.lang !== this.language) {
      box.dataset.lang = this.language;
      box.replaceChildren(...fields.map((path) => {
        const label = document.createElement('label');
        const input = Object.assign(document.createElement('input'), { type: 'number', name: path, step: 'any' });
        input.setAttribute('part', 'knob');
        input.addEventListener('change', () => {
          const v = Number(input.value);
          if (input.value.trim() === '' || !Number.isFinite(v)) {
            this.#fail(new Problem(`${path} = “${input.value}”: must be a number`, 'invalid', path));
            return;
          }
          this.#knobs[path] = v;
          this.#schedule();
        });
        label.append(this.#t(`opt.${path.split('.').at(-1)}.label`), input);
        return label;
      }));
    }
    for (const input of box.querySelectorAll('input')) {
      if (input !== input.getRootNode().activeElement) input.value = String(this.#knobs[input.name] ?? getPath(this.#full, input.name));
      input.disabled = this.#training;
    }
  }
}

if (!customElements.get('transformer-playground')) customElements.define('transformer-playground', TransformerPlayground);
