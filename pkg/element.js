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
// Attributes and the lesson extension point: pkg/README.md "The element".
import { Engine, EngineError, BACKEND_OPTIONS } from './index.js';
import { PRESETS, DEFAULT_PRESET, presetConfig } from './presets.js';
import * as STRINGS from './strings.js';
import { isolation } from './isolate.js';
import { LossChart, CHART_STYLE } from './chart.js';

/** The attributes the element reads; a change of one of RESET starts its run again (fresh weights). */
const ATTRIBUTES = ['preset', 'config', 'lesson', 'lang', 'controls', 'steps', 'backend', 'corpus'];
const RESET = new Set(['preset', 'config', 'lesson', 'steps', 'backend', 'corpus']);

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

/** `obj` with the field at dotted `path` set to `value` (objects made on the way). */
function setPath(obj, path, value) {
  const keys = path.split('.');
  let x = obj;
  for (const k of keys.slice(0, -1)) x = x[k] ??= {};
  x[keys.at(-1)] = value;
}

function getPath(obj, path) {
  return path.split('.').reduce((x, k) => (x == null ? undefined : x[k]), obj);
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
`;

/** The `<transformer-playground>` element (registered under that name when this module loads). */
export class TransformerPlayground extends HTMLElement {
  static observedAttributes = ATTRIBUTES;

  /**
   * Extension point for `lesson="<id>"`: an async function (id, lang) → { config, title?, text? } that the host
   * (or a later version of this package) sets once lessons exist. Until then a lesson attribute shows a message
   * and sends an `error` event (kind 'lesson').
   */
  static lessonLoader = null;

  #ui = {};
  #config = null; // the config the run is made from (attributes and knobs applied), or null while loading / on error
  #full = null; // the same with the core's defaults filled in (what the knobs show)
  #lesson = null; // the lesson's { title, text } when lesson="…" resolved
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
    box.append(header, this.#chart.element, bar, this.#ui.knobs, this.#ui.error);
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
    if (name === 'preset' || name === 'config' || name === 'lesson') {
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
    this.#config = this.#lesson = null; // #full stays while knobs are set: they must stay on screen to be fixed
    if (!Object.keys(this.#knobs).length) this.#full = null;
    this.#points = [];
    this.#val = [];
    this.#done = false;
    this.#ui.error.textContent = '';
    this.#render();
    try {
      const config = await this.#resolveConfig();
      const backend = this.getAttribute('backend') ?? 'cpu';
      if (!BACKEND_OPTIONS.includes(backend)) {
        throw new Problem(`backend = “${backend}”: must be ${BACKEND_OPTIONS.map((b) => `“${b}”`).join(', ')}`, 'invalid', 'backend');
      }
      const e = await sharedEngine().catch((err) => {
        throw new Problem(this.#t('el.engineFailed', { msg: err.message }), err.kind ?? 'runtime');
      });
      if (gen !== this.#gen) return;
      this.#info = e.info;
      const full = await e.validate(config);
      if (gen !== this.#gen) return;
      this.#config = config;
      this.#full = full;
    } catch (err) {
      if (gen === this.#gen) this.#fail(err);
    }
    if (gen === this.#gen) this.#render();
  }

  /** The config the attributes describe: lesson, else config (JSON or URL), else preset; then steps and knobs. */
  async #resolveConfig() {
    let config;
    const lesson = this.getAttribute('lesson');
    const json = this.getAttribute('config');
    if (lesson !== null) {
      // Extension point: lessons (the classroom's www/lessons/<id>.json) plug in through lessonLoader.
      const load = TransformerPlayground.lessonLoader;
      if (!load) throw new Problem(this.#t('el.lesson', { id: lesson }), 'lesson', 'lesson');
      const got = await load(lesson, this.language);
      this.#lesson = { title: got.title, text: got.text };
      config = structuredClone(got.config);
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
    if (steps !== null) {
      const n = Number(steps);
      if (!/^\s*\d+\s*$/.test(steps) || n < 1 || n > MAX_STEPS) throw new Problem(this.#t('el.badSteps', { value: steps }), 'invalid', 'steps');
      setPath(config, 'train.steps', n);
    }
    for (const [path, value] of Object.entries(this.#knobs)) setPath(config, path, value);
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

  /** Forgets the run (pausing and freeing it in the engine). */
  #drop() {
    const run = this.#run;
    this.#run = null;
    this.#training = false;
    if (run) run.pause().catch(() => {}).finally(() => run.dispose().catch(() => {}));
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
    await this.#run?.pause().catch(() => {});
  }

  /**
   * A fresh run of the config. The core says whether it trains on a text: asked without one, a config that needs
   * it is refused with a `data` error `no_text`, and it is made again on the corpus (Tiny Shakespeare unless the
   * `corpus` attribute names another text).
   */
  async #newRun(gen) {
    this.#drop();
    this.#training = true;
    this.#points = [];
    this.#val = [];
    this.#done = false;
    const e = await sharedEngine();
    const backend = this.getAttribute('backend') ?? 'cpu';
    let run;
    try {
      run = await e.createRun(this.#config, { backend });
    } catch (err) {
      if (!(err.kind === 'data' && err.reason === 'no_text')) throw err;
      const url = this.getAttribute('corpus') ? new URL(this.getAttribute('corpus'), document.baseURI).href : SHAKESPEARE.href;
      run = await e.createRun(this.#config, { backend, corpus: await fetchText(url) });
    }
    if (gen !== this.#gen) {
      run.dispose().catch(() => {});
      return;
    }
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
    run.on('error', (err) => run === this.#run && this.#fail(err));
  }

  #render() {
    const ui = this.#ui;
    const name = this.getAttribute('preset') ?? DEFAULT_PRESET;
    const fromPreset = this.getAttribute('lesson') === null && this.getAttribute('config') === null;
    const lesson = this.getAttribute('lesson');
    ui.title.textContent = this.#lesson?.title ?? lesson ?? (fromPreset ? (STRINGS.en[`preset.${name}`] ? this.#t(`preset.${name}`) : name) : this.#t('el.custom'));
    ui.desc.textContent = this.#lesson?.text ?? (fromPreset && STRINGS.en[`preset.d.${name}`] ? this.#t(`preset.d.${name}`) : '');
    ui.button.textContent = this.#t(this.#training ? 'ctl.pause' : 'ctl.train');
    ui.button.disabled = !this.#config;
    ui.backend.textContent = this.#backendText();
    const last = this.#points.at(-1);
    const steps = this.#config?.train?.steps ?? this.#full?.train?.steps;
    if (last) {
      const val = this.#val.at(-1);
      ui.status.textContent = `${this.#t('ctl.step.readout')} ${last[0]}/${steps} · ${this.#t('ctl.loss')} ${last[1].toFixed(3)}`
        + (val ? ` · ${this.#t('el.val')} ${val[1].toFixed(3)}` : '') + (this.#done ? ` · ${this.#t('el.done', { steps: last[0] })}` : '');
    } else ui.status.textContent = '';
    this.#chart.draw(this.#points, this.#val, steps, { title: this.#t('chart.loss'), step: this.#t('chart.step'), empty: this.#t('chart.empty') });
    this.#renderKnobs();
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
