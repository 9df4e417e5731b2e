// transformer-playground's JS API: an Engine owns one Worker (worker.js) holding the wasm core; Runs are handles
// to training runs inside it. Every call is a message (protocol.js); the page's thread never computes.
//
//   const engine = await Engine.start();                     // picks the build: threads when cross-origin isolated
//   const run = await engine.createRun(config, { corpus, seed: 42 });
//   run.on('progress', (p) => console.log(p.step, p.loss, p.valLoss, p.tokensPerSec, p.backend));
//   await run.train({ steps: 500 });
//   const text = await run.generate('ROMEO:', { maxTokens: 200, temperature: 0.8, topK: 40, topP: 0.95 });
//   const { texts } = await run.generate({ prompt: 'ROMEO:', n: 4, maxTokens: 200, onText: (piece, i) => … });

import {
  EngineError, PANIC_CHANNEL, RECIPE_KINDS, U32_MAX, VOCAB_MAX, checkBytes, checkInt, checkNumber, checkOptions,
  checkString, chooseBuild, hasSimd, toError,
} from './protocol.js';

export { EngineError, RECIPE_KINDS };

// The data the recipes start from by default, shipped in the package (scripts/pkg-assets.mjs copies them from
// www/data/): the `new URL('…', import.meta.url)` literals let bundlers ship the files.
const SHAKESPEARE_URL = new URL('./data/tinyshakespeare.txt', import.meta.url);
const PRETRAINED_URL = new URL('./data/pretrained-gpt-tiny.safetensors', import.meta.url);

/** The bytes (or text) at `url`, or an 'io' EngineError naming `what`. */
async function fetchData(url, what, as) {
  let r;
  try {
    r = await fetch(url);
  } catch (e) {
    throw new EngineError(`${what}: could not fetch ${url}: ${e.message}`, { kind: 'io' });
  }
  if (!r.ok) throw new EngineError(`${what}: could not fetch ${url}: HTTP ${r.status}`, { kind: 'io' });
  return as === 'text' ? r.text() : new Uint8Array(await r.arrayBuffer());
}

/** The recipe kind argument. */
function checkKind(kind) {
  if (!RECIPE_KINDS.includes(kind)) {
    const shown = typeof kind === 'string' ? `'${kind}'` : String(kind);
    throw new EngineError(`kind = ${shown}: must be one of ${RECIPE_KINDS.map((k) => `'${k}'`).join(', ')}`, { kind: 'invalid' });
  }
  return kind;
}

/** The backend each build reports: the threaded build, or one thread (with or without relaxed SIMD). */
const BACKENDS = { threads: 'wasm-threads', single: 'wasm-single', baseline: 'wasm-single' };

/** Config as a JSON string, with the seed and task of `opts` applied when given. */
function configJson(config, { seed, task } = {}) {
  let cfg;
  if (typeof config === 'string') {
    try {
      cfg = JSON.parse(config);
    } catch (e) {
      throw new EngineError(`config is not valid JSON: ${e.message}`, { kind: 'config' });
    }
  } else if (config && typeof config === 'object') {
    cfg = structuredClone(config);
  } else {
    throw new EngineError('config must be an object or a JSON string', { kind: 'invalid' });
  }
  if (checkInt('opts.seed', seed, { optional: true }) !== undefined) cfg.seed = seed;
  if (checkString('opts.task', task, { optional: true }) !== undefined) cfg.data = { ...(cfg.data || {}), task };
  return JSON.stringify(cfg);
}

/** Sampling options in the core's names (snake_case), from the API's camelCase; `prefix` names where they came from. */
function sampleOptions(opts, prefix = 'opts.') {
  const o = checkOptions('opts', opts);
  const out = {};
  // Integers cross as the core's usize (32 bits in wasm); the core checks the ranges that mean something.
  if (checkInt(`${prefix}maxTokens`, o.maxTokens, { max: U32_MAX, optional: true }) !== undefined) out.max_tokens = o.maxTokens;
  if (checkNumber(`${prefix}temperature`, o.temperature, { optional: true }) !== undefined) out.temperature = o.temperature;
  if (checkInt(`${prefix}topK`, o.topK, { max: U32_MAX, optional: true }) !== undefined) out.top_k = o.topK;
  if (checkNumber(`${prefix}topP`, o.topP, { optional: true }) !== undefined) out.top_p = o.topP;
  if (checkInt(`${prefix}seed`, o.seed, { optional: true }) !== undefined) out.seed = o.seed;
  return out;
}

const SAMPLE_KEYS = ['maxTokens', 'temperature', 'topK', 'topP', 'seed'];
const GENERATE_KEYS = new Set(['prompt', 'n', 'blockSize', 'kvCache', 'signal', 'onText', 'onKv', ...SAMPLE_KEYS]);

function checkFunction(name, value) {
  if (value !== undefined && typeof value !== 'function') {
    throw new EngineError(`${name} = ${value === null ? 'null' : typeof value}: must be a function, if given`, { kind: 'invalid' });
  }
  return value;
}

/** The cache's figures (KvStats of the core) in the API's names. */
function kvStats(s) {
  return {
    blockSize: s.block_size, blocksUsed: s.blocks_used, bytesUsed: s.bytes_used,
    bytesContiguous: s.bytes_contiguous, bytesPerPosition: s.bytes_per_position,
  };
}

/** The core's view of a paged cache (WasmGeneration.kv JSON) in the API's names (index.d.ts: KvView). */
function kvView(json) {
  const v = JSON.parse(json);
  return {
    now: kvStats(v.now),
    peak: kvStats(v.peak),
    table: {
      blockSize: v.table.block_size,
      seqs: v.table.seqs.map(([index, blocks, positions]) => ({ index, blocks, positions })),
      refs: v.table.refs,
    },
    done: v.done,
    bytesPerPositionMha: v.bytes_per_position_mha,
  };
}

/** The values of the backend option of createRun / loadRun ('cpu' is the default). */
export const BACKEND_OPTIONS = Object.freeze(['cpu', 'webgpu', 'auto']);

/** The backend option of createRun / loadRun. */
function checkBackend(backend = 'cpu') {
  if (!BACKEND_OPTIONS.includes(backend)) {
    throw new EngineError(`opts.backend = '${backend}': must be 'cpu', 'webgpu' or 'auto'`, { kind: 'invalid' });
  }
  return backend;
}

class Emitter {
  #listeners = new Map();
  /** Subscribes `fn` to `event`; returns the function that unsubscribes it. */
  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return () => this.#listeners.get(event).delete(fn);
  }
  emit(event, value) {
    for (const fn of this.#listeners.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        console.error(e);
      }
    }
  }
}

export class Engine extends Emitter {
  #opts;
  #worker = null;
  #pending = new Map(); // request id → { resolve, reject, listen, runId }
  #nextId = 1;
  #nextRun = 1;
  #runs = new Map(); // runId → Run
  #recipes = new Map(); // recipeId → Recipe
  #nextRecipe = 1;
  #data = new Map(); // url → Promise of the fetched default data (corpus, pretrained checkpoint)
  #info = null;
  #limits = null;
  #restarting = null;
  #instanceId = (Math.random() * 2 ** 32) >>> 0;
  #panics = null; // BroadcastChannel for panics on pool threads
  #boots = 0;
  #alive = null; // AbortController of the page's wait for the Worker's lock (see #watchLock)
  #watchTimer = null;
  #lastHeard = 0; // performance.now() of the Worker's last message while a request was pending
  #lastTick = 0;
  #longestGap = 0; // the longest silence seen between the Worker's messages while it answered
  #pingSent = false;

  /**
   * Starts the engine Worker and loads the core.
   * opts.build: 'auto' (default: 'threads' when cross-origin isolated, else 'single'; 'baseline' in browsers
   *   without relaxed SIMD) | 'threads' | 'single' | 'baseline'
   * opts.threads: size of the rayon pool in the threaded build (default navigator.hardwareConcurrency)
   * opts.workerUrl: where worker.js is served, if not next to this module
   * opts.snapshotEveryMs: how often a training run's state is kept for recovery (default 20000; also when training
   *   stops and after a single step). A restart loses at most this much of a run's training, plus the round of steps
   *   under way (one step of each training run).
   * opts.watchdogMs: silence (no message while a request is pending, pings unanswered) after which the engine is
   *   taken to be stuck and restarted (default 60000; at least 10 × the longest silence seen while it answered)
   */
  static async start(opts = {}) {
    const engine = new Engine(opts);
    await engine.#boot();
    return engine;
  }

  constructor(opts = {}) {
    super();
    this.#opts = opts;
  }

  /** { build, backend, threads, simd128, relaxedSimd, version } of the running core. */
  get info() {
    return this.#info;
  }

  /**
   * The limits the core enforces, for drawing controls: { fields: { 'model.d_model': { minimum, maximum }, … },
   * text: { max_bytes, max_chars }, max_params }. A field's range has up to two of minimum, exclusive_minimum,
   * maximum, exclusive_maximum; fields are named as config errors name them ('train.betas[0]').
   */
  get limits() {
    return this.#limits;
  }

  /** How often a training run's state is kept for recovery: a restart loses at most this much of its training. */
  get snapshotEveryMs() {
    return this.#opts.snapshotEveryMs ?? 20000;
  }

  async #boot() {
    if (!hasSimd()) throw new EngineError('this browser has no WebAssembly SIMD, which transformer-playground needs');
    const want = this.#opts.build ?? 'auto';
    const build = want === 'auto' ? chooseBuild() : want;
    if (!(build in BACKENDS)) {
      throw new EngineError(`build = '${want}': must be 'auto', 'threads', 'single' or 'baseline'`, { kind: 'invalid' });
    }
    if (build === 'threads' && !globalThis.crossOriginIsolated) {
      const message = "the threaded build needs a cross-origin isolated page (COOP/COEP headers); use build 'single'";
      throw new EngineError(message, { kind: 'invalid' });
    }
    const threads = checkInt('opts.threads', this.#opts.threads ?? navigator.hardwareConcurrency ?? 1, { min: 1, max: 1024 });
    const name = 'transformer-playground engine';
    // The literal `new Worker(new URL('./worker.js', import.meta.url), …)` is the form bundlers (Vite, webpack)
    // recognise and bundle; keep it literal.
    this.#worker = this.#opts.workerUrl
      ? new Worker(this.#opts.workerUrl, { type: 'module', name })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name });
    this.#worker.onmessage = ({ data }) => this.#onMessage(data);
    this.#worker.onerror = (ev) => {
      ev.preventDefault?.();
      this.#onCrash({ message: `the engine worker failed: ${ev.message || 'could not load'}` });
    };
    this.#panics ??= new BroadcastChannel(PANIC_CHANNEL);
    this.#panics.onmessage = ({ data }) => {
      if (data?.id === this.#instanceId) this.#onCrash({ message: `the engine aborted: ${data.message}` });
    };
    const aliveLock = globalThis.navigator?.locks ? `transformer-playground engine ${this.#instanceId}.${++this.#boots}` : undefined;
    const snapshotEveryMs = checkInt('opts.snapshotEveryMs', this.#opts.snapshotEveryMs ?? 20000, { min: 100 });
    const memoryBudgetGiB = this.#opts.memoryBudgetGiB ?? 0;
    const { limits, ...info } = await this.#call({ op: 'init', build, threads, instanceId: this.#instanceId, aliveLock, snapshotEveryMs, memoryBudgetGiB });
    this.#info = { ...info, backend: BACKENDS[build] };
    this.#limits = limits;
    if (aliveLock) this.#watchLock(aliveLock, this.#worker);
    this.#watchTimer ??= setInterval(() => this.#watch(), 1000);
  }

  /**
   * The Worker holds a Web Lock from init on; the page asks for the same lock, which it gets only when the Worker
   * is gone — terminated, or killed with its thread (e.g. out of memory) — however busy it was: no timeout needed.
   */
  #watchLock(name, worker) {
    this.#alive = new AbortController();
    navigator.locks.request(name, { signal: this.#alive.signal }, () => {
      if (worker === this.#worker) this.#onCrash({ message: 'the engine stopped', restart: 'died' });
    }).catch(() => {}); // aborted: we stopped the Worker ourselves
  }

  /**
   * The watchdog for a Worker that is alive but stuck (a deadlock, a loop that never ends): while a request is
   * pending, a Worker silent for 5 s is pinged (an idle event loop answers at once); one silent for the deadline
   * is replaced. The deadline grows with the longest silence seen from a Worker that then answered (a long step).
   */
  #watch() {
    const now = performance.now();
    // The page slept or was throttled: the Worker's silence in that time says nothing.
    if (now - this.#lastTick > 5000) this.#lastHeard = now;
    this.#lastTick = now;
    if (!this.#worker || this.#restarting || this.#pending.size === 0) return;
    const silent = now - this.#lastHeard;
    if (silent > 5000 && !this.#pingSent) {
      this.#pingSent = true;
      this.#worker.postMessage({ op: 'ping' });
    }
    const deadline = Math.max(this.#opts.watchdogMs ?? 60000, 10 * this.#longestGap);
    if (silent > deadline) {
      this.#onCrash({ message: `the engine stopped answering (nothing for ${Math.round(silent / 1000)} s)`, restart: 'stuck' });
    }
  }

  /** Sends a request; `listen` takes its streamed events: { text(pieces), kv(view) }. */
  #call(msg, listen = {}) {
    if (!this.#worker) return Promise.reject(new EngineError('the engine was terminated'));
    const id = this.#nextId++;
    if (this.#pending.size === 0) this.#lastHeard = performance.now();
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, listen, runId: msg.runId });
      this.#worker.postMessage({ ...msg, id });
    });
  }

  /** Sends a request for run `runId`, waiting for a restart in progress first. */
  async _request(msg, listen) {
    if (this.#restarting) await this.#restarting;
    return this.#call(msg, listen);
  }

  /** Hands a streamed event to its request's listener; a listener that throws is the caller's bug, not ours. */
  #stream(id, kind, value) {
    try {
      this.#pending.get(id)?.listen[kind]?.(value);
    } catch (e) {
      console.error(e);
    }
  }

  #onMessage(data) {
    const now = performance.now();
    if (this.#pending.size > 0) this.#longestGap = Math.max(this.#longestGap, now - this.#lastHeard);
    this.#lastHeard = now;
    this.#pingSent = false;
    if (data.event) return this.#onEvent(data);
    const p = this.#pending.get(data.id);
    if (!p) return;
    this.#pending.delete(data.id);
    if (data.ok) p.resolve(data.result);
    else p.reject(toError(data.error));
  }

  #onEvent(e) {
    const run = this.#runs.get(e.runId);
    switch (e.event) {
      case 'progress':
        run?._progress({ ...e, backend: e.backend ?? this.#info?.backend });
        break;
      case 'snapshot':
        run?._snapshot(e.bytes, e.step);
        break;
      case 'runError':
        run?.emit('error', toError({ ...e.error, runId: e.runId }));
        break;
      case 'text':
        this.#stream(e.id, 'text', e.pieces);
        break;
      case 'kv':
        this.#stream(e.id, 'kv', e.view);
        break;
      case 'crashed':
        this.#onCrash(e);
        break;
      case 'recipeProgress':
      case 'recipeStage':
      case 'recipeError':
        this.#recipes.get(e.recipeId)?._event(e);
        break;
      case 'recipeKept':
        this.#recipes.get(e.recipeId)?._kept(e);
        break;
    }
  }

  #stopWorker() {
    this.#alive?.abort();
    this.#alive = null;
    this.#worker?.terminate();
    this.#worker = null;
  }

  /**
   * The engine failed: the instance aborted (restart 'error': a Rust panic, in run `runId` when it names one), the
   * Worker is gone (restart 'died', #watchLock) or stuck ('stuck', #watch). Pending requests reject with an
   * EngineError carrying `restart` (and `runId`); the Worker is replaced and every run is restored from its last
   * snapshot (taken when training stops, after a single step, and every snapshotEveryMs while it trains).
   */
  #onCrash({ runId, message, restart = 'error' }) {
    if (this.#restarting || !this.#worker) return;
    // A panic hit the run it names, or (on a pool thread, naming none) every run with a request in flight. A Worker
    // that died or stuck is no run's fault.
    const hit = restart !== 'error' ? [] : runId !== undefined ? [runId] : [...new Set([...this.#pending.values()].map((p) => p.runId))];
    // Each call's error names its own run (and none for an engine-wide call).
    for (const p of this.#pending.values()) p.reject(new EngineError(message, { kind: 'runtime', restart, runId: p.runId }));
    this.#pending.clear();
    this.#stopWorker();
    for (const id of hit) this.#runs.get(id)?.emit('error', new EngineError(message, { kind: 'runtime', restart, runId: id }));
    for (const recipe of this.#recipes.values()) recipe.emit('error', new EngineError(message, { kind: 'runtime', restart, recipeId: recipe.id }));
    this.#restarting = (async () => {
      try {
        await this.#boot();
        for (const run of this.#runs.values()) await run._restore((msg) => this.#call(msg));
        // A recipe comes back at the start of the stage it was in, from the models of the stages it finished
        // (finetune: from its last kept state); one that cannot is lost (it says why).
        for (const recipe of [...this.#recipes.values()]) {
          try {
            await recipe._restore((msg) => this.#call(msg));
          } catch (e) {
            this.#recipes.delete(recipe.id);
            recipe._lost(new EngineError(`${message}; the recipe could not be restored (${e.message}): create it again`, { kind: 'runtime', restart }));
          }
        }
        this.emit('restart', { message, runId, cause: restart });
      } catch (e) {
        this.emit('error', new EngineError(`the engine could not restart: ${e.message}`));
      } finally {
        this.#restarting = null;
      }
    })();
  }

  /** Resolves once a restart in progress (if any) has finished. */
  async ready() {
    if (this.#restarting) await this.#restarting;
  }

  /**
   * A new run. config: the core config (object or JSON); opts.corpus: training text (gpt, bert, and the
   * encoder-decoder's denoising tasks);
   * opts.task: synthetic task (encoder-decoder; overrides config.data.task); opts.seed overrides config.seed;
   * opts.backend: 'cpu' (default: WebAssembly), 'webgpu' (rejects with the reason when there is no usable GPU) or
   * 'auto' (WebGPU when it is there and measured faster for this config; run.backendChoice says why).
   * Rejects with an EngineError for a bad config (kind 'config', with field, value and rule) or text (kind 'data',
   * with its reason).
   */
  async createRun(config, opts) {
    opts = checkOptions('opts', opts);
    const json = configJson(config, opts);
    const backend = checkBackend(opts.backend);
    const corpus = checkString('opts.corpus', opts.corpus, { optional: true });
    const runId = this.#nextRun++;
    const info = await this._request({ op: 'create', runId, config: json, corpus, backend });
    const run = new Run(this, runId, info, corpus);
    this.#runs.set(runId, run);
    return run;
  }

  /** A run continued from a checkpoint (.safetensors bytes); text models need opts.corpus to keep training. */
  async loadRun(bytes, opts) {
    opts = checkOptions('opts', opts);
    const kept = checkBytes('bytes', bytes); // ours: the caller may change theirs
    const backend = checkBackend(opts.backend);
    const corpus = checkString('opts.corpus', opts.corpus, { optional: true });
    const runId = this.#nextRun++;
    const info = await this._request({ op: 'load', runId, bytes: new Uint8Array(kept), corpus, backend });
    const run = new Run(this, runId, info, corpus);
    run._snapshot(kept, info.step);
    this.#runs.set(runId, run);
    return run;
  }

  /** The config in full (defaults filled in), or the core's error for an impossible one. */
  async validate(config) {
    return JSON.parse(await this._request({ op: 'validate', config: configJson(config) }));
  }

  /**
   * Shape flow, parameter count, FLOPs per token and memory estimate for a config and vocabulary size; its memory
   * checked for a run on `opts.backend` (as createRun's: 'cpu' by default; on WebGPU the activations are on the GPU).
   */
  async shapeFlow(config, vocab, opts = {}) {
    const backend = checkBackend(opts.backend);
    return this._request({ op: 'shapeFlow', config: configJson(config), vocab: checkInt('vocab', vocab, { min: 1, max: VOCAB_MAX }), backend });
  }

  /**
   * Sets the memory budget that configs are checked against from now on (createRun, loadRun, shapeFlow), in GiB:
   * a number in (0, 3.5] (a wasm32 instance addresses 4 GiB), or null for the default of 2 GiB. It survives an
   * engine restart. Resolves the budget now in force, in GiB; rejects with an 'invalid' EngineError naming `gib`.
   */
  async setMemoryBudget(gib) {
    if (gib !== null && (typeof gib !== 'number' || !Number.isFinite(gib) || gib <= 0 || gib > 3.5)) {
      throw new EngineError(`gib = ${gib === null ? 'null' : String(gib)}: must be a number of GiB in (0, 3.5], or null for the default`, { kind: 'invalid' });
    }
    const budget = await this._request({ op: 'setMemoryBudget', gib: gib ?? 0 });
    this.#opts = { ...this.#opts, memoryBudgetGiB: gib ?? undefined };
    return budget;
  }

  /**
   * The special tokens a run of this config has, after the corpus's characters in the vocabulary: the
   * architecture's ([MASK] for bert, [BOS] for the encoder-decoder), then the denoising task's ([MASK] for
   * text_infilling, the sentinels [S0], [S1], … for span_corruption). Rejects with the core's error for a config
   * it cannot read.
   */
  async specialTokens(config) {
    return this._request({ op: 'specialTokens', config: configJson(config) });
  }

  /**
   * The core's check of a text (a string, or a file's bytes) before it becomes a corpus: what createRun would
   * refuse in it whatever the config. Resolves { bytes, chars, distinct }; rejects with a 'data' EngineError whose
   * `reason` says why (empty, not_utf8, control_characters, too_large, too_many_characters).
   */
  async checkText(text) {
    if (typeof text !== 'string' && !(text instanceof ArrayBuffer) && !ArrayBuffer.isView(text)) {
      throw new EngineError(`text = ${text === null ? 'null' : typeof text}: must be a string, a Uint8Array or an ArrayBuffer`, { kind: 'invalid' });
    }
    const bytes = typeof text === 'string' ? new TextEncoder().encode(text) : checkBytes('text', text);
    return this._request({ op: 'checkText', bytes });
  }

  /**
   * Attention's cost at sequence length `t`: one forward + backward of the naive attention (the (B,NH,T,T) scores
   * and probabilities materialised) and of the fused one (FlashAttention: tiled, nothing T×T stored), timed (median
   * of repeats) on this engine's CPU backend (WASM threads, or one thread) or, with backend 'webgpu', on WebGPU;
   * and the bytes each holds beyond its inputs. spec: { batch, heads, kv_heads, head_size, causal, budget_mib },
   * each optional (1, 4, heads, 64, true, 512); the naive path is skipped, with a note, where its bytes pass
   * budget_mib. Resolves { t, naive_ms (null when skipped), flash_ms, naive_bytes, flash_bytes, note?, backend };
   * rejects with an 'invalid' EngineError naming the value for a bad t or spec (the core's limits), a 'gpu' one
   * when WebGPU is not available. Call it once per t to show progress; with opts.check, only the checks run
   * (resolves true), so a sweep can refuse a bad value before its first row.
   */
  async attentionCost(t, opts = {}) {
    const { spec = {}, backend = 'cpu', check = false } = checkOptions('opts', opts);
    if (backend !== 'cpu' && backend !== 'webgpu') {
      throw new EngineError(`opts.backend = '${backend}': must be 'cpu' or 'webgpu'`, { kind: 'invalid' });
    }
    const args = { t: checkInt('t', t, { max: U32_MAX }), spec: checkOptions('opts.spec', spec), backend, check: Boolean(check) };
    return this._request({ op: 'attentionCost', ...args });
  }

  /**
   * Forward FLOPs per token of a config's attention (projections, and scores and mixing against T keys) and of its
   * FFN (the active experts of a Mixture-of-Experts one), all layers, for T = 16 … 65536: { rows: [{ t, attention,
   * ffn }], crossover_t (the shortest T where attention's pass the FFN's), ctx_len }. Rejects with the core's error
   * for a config it cannot read.
   */
  async attentionFlops(config) {
    return this._request({ op: 'attentionFlops', config: configJson(config) });
  }

  /**
   * A recipe of issue 18 (docs/RECIPES.md): 'finetune', 'zeroshot', 'icl' or 'rlhf', run stage by stage (see Recipe).
   * opts: { recipe, checkpoint, corpus, task, knobs, seed, backend, from } (index.d.ts RecipeOptions). The default
   * corpus (Tiny Shakespeare) and checkpoint ('pretrained') are fetched from data/ next to this module. Rejects with
   * an EngineError naming the bad option.
   */
  async createRecipe(kind, opts) {
    checkKind(kind);
    opts = checkOptions('opts', opts);
    const options = {};
    const parts = []; // checkpoint bytes, packed in order (their lengths go in options)
    if (opts.recipe !== undefined) {
      if (typeof opts.recipe === 'string') options.recipe = opts.recipe;
      else options.recipe = JSON.stringify(checkOptions('opts.recipe', opts.recipe));
    }
    const starts = kind === 'finetune' || kind === 'rlhf';
    let checkpoint = opts.checkpoint ?? (starts && !opts.from ? 'pretrained' : undefined);
    if (checkpoint !== undefined && !starts) {
      throw new EngineError(`opts.checkpoint: ${kind} trains its own models from scratch; leave it out`, { kind: 'invalid' });
    }
    if (checkpoint === 'scratch' && kind === 'rlhf') {
      throw new EngineError("opts.checkpoint = 'scratch': rlhf starts from a pretrained model ('pretrained' or bytes)", { kind: 'invalid' });
    }
    if (checkpoint === 'pretrained') checkpoint = await this.#fetchOnce(PRETRAINED_URL, "opts.checkpoint = 'pretrained'");
    if (checkpoint !== undefined && checkpoint !== 'scratch') {
      const bytes = checkBytes('opts.checkpoint', checkpoint);
      options.checkpoint = bytes.length;
      parts.push(bytes);
    }
    if (kind !== 'icl') {
      options.corpus = opts.corpus === undefined
        ? await this.#fetchOnce(SHAKESPEARE_URL, 'opts.corpus (Tiny Shakespeare)', 'text')
        : checkString('opts.corpus', opts.corpus);
    } else if (opts.corpus !== undefined) {
      throw new EngineError('opts.corpus: icl generates its own corpus; leave it out', { kind: 'invalid' });
    }
    if (opts.task !== undefined) options.task = checkString('opts.task', opts.task);
    if (opts.knobs !== undefined) {
      options.knobs = {};
      for (const [k, v] of Object.entries(checkOptions('opts.knobs', opts.knobs))) options.knobs[k] = checkNumber(`opts.knobs.${k}`, v);
    }
    if (opts.seed !== undefined) options.seed = checkInt('opts.seed', opts.seed);
    // 'webgpu': zeroshot's and icl's pretraining stages (finetune and rlhf refuse it); 'auto': chosen and said
    // in recipe.backendChoice (the Worker's chooseRecipeBackend).
    const backend = checkBackend(opts.backend);
    if (opts.from !== undefined) {
      const from = checkOptions('opts.from', opts.from);
      const stage = checkString('opts.from.stage', from.stage);
      const checkpoints = [];
      for (const [name, b] of Object.entries(checkOptions('opts.from.checkpoints', from.checkpoints))) {
        const bytes = checkBytes(`opts.from.checkpoints.${name}`, b);
        checkpoints.push([name, bytes.length]);
        parts.push(bytes);
      }
      options.from = { stage, checkpoints };
    }
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (bytes.set(p, at), at + p.length), 0);
    const recipeId = this.#nextRecipe++;
    const state = await this._request({ op: 'createRecipe', recipeId, kind, options: JSON.stringify(options), bytes, backend });
    const recipe = new Recipe(this, recipeId, state, state.choice ?? null, { kind, options, bytes });
    this.#recipes.set(recipeId, recipe);
    return recipe;
  }

  /** A kind's stages, knobs (with their defaults) and shipped recipe file: { kind, stages, knobs, recipe }. */
  async recipeInfo(kind) {
    return this._request({ op: 'recipeInfo', kind: checkKind(kind) });
  }

  /** Live recipes. */
  get recipes() {
    return [...this.#recipes.values()];
  }

  _forgetRecipe(id) {
    this.#recipes.delete(id);
  }

  /** The default data at `url`, fetched once per engine (a failed fetch is tried again next time). */
  #fetchOnce(url, what, as) {
    const key = url.href;
    if (!this.#data.has(key)) {
      const p = fetchData(url, what, as);
      this.#data.set(key, p);
      p.catch(() => this.#data.delete(key));
    }
    return this.#data.get(key);
  }

  /** Live runs. */
  get runs() {
    return [...this.#runs.values()];
  }

  _forget(runId) {
    this.#runs.delete(runId);
  }

  /**
   * For tests: forces a Rust panic inside run `run`, on the engine Worker's thread or (`inPool`, threaded build)
   * on a thread of the pool. The engine then restarts itself.
   */
  async _panicForTest(run, { inPool = false } = {}) {
    return this._request({ op: 'panic', runId: run.id, inPool });
  }

  /** For tests: destroys the GPU device of a WebGPU run, as a lost device would be. */
  async _loseGpuForTest(run) {
    return this._request({ op: 'loseGpu', runId: run.id });
  }

  /** For tests: ends the Worker without telling the engine, as the browser does when it kills one (out of memory). */
  _killWorkerForTest() {
    this.#worker?.terminate();
  }

  /** For tests: run `run` traps with no panic before it, as the core does when an allocation fails. */
  async _trapForTest(run) {
    return this._request({ op: 'trap', runId: run.id });
  }

  /** For tests: the Worker's thread loops for ever (a deadlock, as far as anyone can tell). */
  _hangForTest() {
    this.#worker?.postMessage({ op: 'hang' });
  }

  /** For benchmarks: ms per CPU-backend matmul (m×k)·(k×n), the mean of `reps` after a warm-up. */
  async _benchMatmul(m, n, k, reps = 10) {
    return this._request({ op: 'benchMatmul', m, n, k, reps });
  }

  /** Stops the Worker; every run ends. */
  terminate() {
    this.#panics?.close();
    this.#panics = null;
    clearInterval(this.#watchTimer);
    this.#watchTimer = null;
    this.#stopWorker();
    for (const p of this.#pending.values()) p.reject(new EngineError('the engine was terminated'));
    this.#pending.clear();
    this.#runs.clear();
    this.#recipes.clear();
  }
}

/**
 * A recipe inside the engine (engine.createRecipe): its stages run a unit of work at a time in the engine Worker,
 * in turns with the engine's other work. Events: 'progress' (each unit and held-out evaluation), 'stage' (a stage
 * finished), 'error' (it stopped on an error). Types: index.d.ts.
 */
export class Recipe extends Emitter {
  #engine;
  #disposed = false;

  /** How it was made (kind, options, bytes) and what it kept for a restart: finished stage → its model's bytes. */
  #made;
  #kept = new Map();

  constructor(engine, id, state, choice, made) {
    super();
    this.#engine = engine;
    this.#made = made;
    this.id = id;
    this.kind = state.kind;
    /** [{ name, steps }] in order. */
    this.stages = state.stages;
    /** The recipe as it runs (knobs applied), and the knobs' values. */
    this.recipe = state.recipe;
    this.knobs = state.knobs;
    /** 'webgpu' (zeroshot's and icl's pretraining stages; evaluations on the CPU) or the engine's CPU backend. */
    this.backend = state.backend === 'gpu' ? 'webgpu' : engine.info?.backend ?? 'wasm-single';
    this.backendChoice = choice;
    this.stage = state.stage;
    this.step = state.step;
    this.done = state.done;
  }

  #req(op, args = {}) {
    if (this.#disposed) return Promise.reject(new EngineError('the recipe was disposed', { kind: 'invalid', recipeId: this.id }));
    return this.#engine._request({ op, recipeId: this.id, ...args });
  }

  /** An event from the Worker. */
  _event({ event, recipeId, ...e }) {
    if (event === 'recipeError') return this.emit('error', toError({ ...e.error, recipeId }));
    const i = this.stages.findIndex((s) => s.name === e.stage);
    if (event === 'recipeStage') {
      this.done = i === this.stages.length - 1;
      [this.stage, this.step] = this.done ? [e.stage, e.step] : [this.stages[i + 1].name, 0];
      return this.emit('stage', e);
    }
    [this.stage, this.step] = [e.stage, e.step];
    this.emit('progress', e);
  }

  /** The Worker kept a finished stage's model, for a restart. */
  _kept({ stage, bytes }) {
    this.#kept.set(stage, bytes);
  }

  /**
   * After an engine restart: made again (the same kind, options and backend) to start at the stage it was in, from
   * the models of the stages before it — the Driver's `from`, which gives the numbers of a run straight through.
   * What it loses: the work of the stage under way (a recipe that had finished comes back at the start of its last
   * stage). Emits 'restored' { stage, step, lost: { stage, step } (where it was) }.
   */
  async _restore(call) {
    const { kind, options, bytes } = this.#made;
    const names = this.stages.map((s) => s.name);
    // The stage it was made to start at (its `from`, else the first): the stages before it came with the options.
    const start = options.from ? names.indexOf(options.from.stage) : 0;
    let at = this.done ? names.length - 1 : Math.max(0, names.indexOf(this.stage));
    // A later stage whose model never reached the page (the engine stopped between the stage's end and its
    // recipeKept): back to that stage instead.
    const missing = names.findIndex((name, i) => i >= start && i < at && name !== 'eval' && !this.#kept.has(name));
    if (missing >= 0) at = missing;
    const lost = { stage: this.stage, step: this.step };
    const backend = this.backend === 'webgpu' ? 'webgpu' : 'cpu';
    const make = (opts, b) => call({ op: 'createRecipe', recipeId: this.id, kind, options: JSON.stringify(opts), bytes: b, backend });
    // Still in the stage it was made to start at: made again as it was.
    const state = at <= start ? await make(options, bytes) : await make(...this.#from(names, at));
    [this.stage, this.step, this.done] = [state.stage, state.step, state.done];
    this.emit('restored', { stage: this.stage, step: this.step, lost });
  }

  /** The options and bytes of this recipe made to start at stage `names[at]` from the models before it. */
  #from(names, at) {
    const { options, bytes } = this.#made;
    // The models of the stages before `at`: the caller's own `from` checkpoints, then those finished here.
    const orig = options.checkpoint ?? 0;
    const before = new Map();
    let off = orig;
    for (const [name, n] of options.from?.checkpoints ?? []) {
      before.set(name, bytes.subarray(off, off + n));
      off += n;
    }
    for (const [name, b] of this.#kept) before.set(name, b);
    const from = [...before].filter(([name]) => names.indexOf(name) < at);
    const opts = { ...options, from: { stage: names[at], checkpoints: from.map(([name, b]) => [name, b.length]) } };
    const parts = [bytes.subarray(0, orig), ...from.map(([, b]) => b)];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((o, p) => (all.set(p, o), o + p.length), 0);
    return [opts, all];
  }

  /** The engine restarted and the recipe could not be made again: it is gone. */
  _lost(err) {
    this.#disposed = true;
    this.emit('error', err);
  }

  /**
   * Steps until `opts.stage` (default: the last) has finished, or pause() / dispose(). Resolves { stopped, stage,
   * step }: with 'done', the stage that finished and its steps; else where it stopped (recipe.stage and .step say
   * where it is: the next stage, at step 0, after a stage finished).
   */
  async run(opts) {
    const { stage } = checkOptions('opts', opts);
    return this.#req('recipeRun', { stage: checkString('opts.stage', stage, { optional: true }) });
  }

  /** Stops after the unit under way: { stage, step }. */
  async pause() {
    const r = await this.#req('recipePause');
    [this.stage, this.step] = [r.stage, r.step];
    return r;
  }

  /** The held-out evaluation of the current stage's model now: { stage, step, metrics, samples? }. */
  evaluate() {
    return this.#req('recipeEvaluate');
  }

  /** Held-out samples [{ prompt, completion }] of the current model. */
  samples() {
    return this.#req('recipeSamples');
  }

  /**
   * icl: the model's attention maps on held-out episode `opts.episode` (default 0: the evaluation's first, the same
   * for a seed) — { episode, family, text, tokens, maps (one per layer), induction_targets (per query position, the
   * key positions right after each earlier occurrence of its token) }. The pretrained model once pretraining has
   * ended, else the one training now. Refused for the other kinds, before pretraining, and past the episodes.
   */
  async attention(opts) {
    const { episode = 0 } = checkOptions('opts', opts);
    return this.#req('recipeAttention', { episode: checkInt('opts.episode', episode, { max: U32_MAX }) });
  }

  /** A stage's model (default: the current stage's) as safetensors bytes. */
  save(stage) {
    return this.#req('recipeSave', { stage: checkString('stage', stage, { optional: true }) });
  }

  /** Frees the recipe inside the engine (a run() under way resolves with stopped 'disposed'). */
  async dispose() {
    const r = await this.#req('recipeDispose');
    this.#disposed = true;
    this.#engine._forgetRecipe(this.id);
    return r;
  }
}

export class Run extends Emitter {
  #engine;
  #corpus;
  #snapshot = null; // last good state (safetensors bytes) kept here for crash recovery
  #disposed = false;
  #tags = 0; // names each generation, for a cancel by its signal

  constructor(engine, id, info, corpus) {
    super();
    this.#engine = engine;
    this.#corpus = corpus;
    this.id = id;
    /** The run's full config (defaults filled in). */
    this.config = info.config;
    this.vocabSize = info.vocabSize;
    this.paramCount = info.paramCount;
    this.tokensPerStep = info.tokensPerStep;
    /** What trains it: 'webgpu', 'wasm-threads' or 'wasm-single' (progress events say it per step). */
    this.backend = info.backend;
    /** With backend 'auto': { backend, reason, ms? } — what was chosen and why. */
    this.backendChoice = info.choice ?? null;
    /** Steps taken. */
    this.stepCount = info.step;
    /** The last progress record. */
    this.last = null;
  }

  #req(op, args = {}, listen) {
    if (this.#disposed) return Promise.reject(new EngineError('the run was disposed', { kind: 'invalid', runId: this.id }));
    // Errors carry the run's id, so that a caller with several runs can say which one (in its own words).
    return this.#engine._request({ op, runId: this.id, ...args }, listen).catch((e) => {
      if (e instanceof EngineError) e.runId ??= this.id;
      throw e;
    });
  }

  _progress(p) {
    this.stepCount = p.step;
    this.backend = p.backend;
    this.last = p;
    this.emit('progress', p);
  }

  _snapshot(bytes, step) {
    this.#snapshot = { bytes, step };
    this.emit('snapshot', { step, bytes });
  }

  /** After an engine restart: the run comes back at its last snapshot (or fresh from its config). */
  async _restore(call) {
    const s = this.#snapshot;
    const backend = this.backend === 'webgpu' ? 'webgpu' : 'cpu';
    const info = s
      ? await call({ op: 'load', runId: this.id, bytes: new Uint8Array(s.bytes), corpus: this.#corpus, backend })
      : await call({ op: 'create', runId: this.id, config: JSON.stringify(this.config), corpus: this.#corpus, backend });
    this.stepCount = info.step;
    this.emit('restored', { step: info.step });
  }

  /** Trains `steps` more steps (one progress event each); resolves { step, stopped: 'done' | 'paused' }. */
  async train(opts) {
    const { steps } = checkOptions('opts', opts);
    return this.#req('train', { steps: checkInt('opts.steps', steps ?? this.config.train.steps - this.stepCount, { min: 1 }) });
  }

  /** Stops training after the current step; resolves { step }. */
  pause() {
    return this.#req('pause');
  }

  /** One training step (when not training); resolves its progress record. */
  step() {
    return this.#req('step');
  }

  /** Mean train and val loss over eval_iters batches: { train, val }. */
  evaluate() {
    return this.#req('evaluate');
  }

  /**
   * Two forms.
   *
   * `generate({ prompt, n, blockSize, maxTokens, temperature, topK, topP, seed, signal, onText, onKv, kvCache })`:
   * N continuations of `prompt` (gpt; an encoder-decoder decodes N outputs of the source `prompt`), decoded
   * together over the paged KV cache, from a copy of the weights as they are now: training goes on between their
   * tokens. Continuation i samples with seed + i (so it is the n = 1 text of that seed). `onText(piece, index)` gets
   * the text each continuation sampled since its last call (every 4 tokens, sooner after 16 ms, at the end);
   * `onKv(view)` the cache as it fills (KvView: at most every 50 ms, and the last view with live sequences before they
   * end). Resolves { texts, text (= texts[0]), stopped: 'done' | 'cancelled', kv } (kv: the cache as it stopped,
   * with the peak; null for the contiguous path or a generation cancelled before it began): `run.cancelGenerate()` or the
   * AbortSignal stops it before its next token and frees its blocks, and it resolves with what was generated,
   * `stopped: 'cancelled'`. kvCache 'contiguous' (n = 1 only): the reference path, one call that holds the engine
   * until it ends (no cancel, no kv).
   *
   * `generate(prompt, opts, onText)`: one continuation (opts: maxTokens, temperature, topK, topP, seed);
   * `onText(piece)` as above. Resolves the new text.
   */
  async generate(prompt, opts, onText) {
    if (prompt !== null && typeof prompt === 'object' && !Array.isArray(prompt)) {
      if (opts !== undefined || onText !== undefined) {
        throw new EngineError('run.generate({ … }) takes every option in its one object', { kind: 'invalid' });
      }
      return this.#generate(prompt);
    }
    checkString('prompt', prompt);
    checkFunction('onText', onText);
    const o = checkOptions('opts', opts);
    if (o.n !== undefined && o.n !== 1) {
      throw new EngineError(`opts.n = ${String(o.n)}: run.generate(prompt, opts) makes one continuation; for more, run.generate({ prompt, n, … })`, { kind: 'invalid' });
    }
    const sampling = sampleOptions(o);
    const r = await this.#generate({ prompt, onText: onText && ((piece) => onText(piece)) }, sampling);
    return r.text;
  }

  /** The object form of generate; `sampling`: options already checked and in the core's names. */
  async #generate(o, sampling) {
    const prompt = checkString('prompt', o.prompt);
    for (const k of Object.keys(o)) {
      if (!GENERATE_KEYS.has(k)) throw new EngineError(`${k}: not an option of run.generate (${[...GENERATE_KEYS].join(', ')})`, { kind: 'invalid' });
    }
    const options = sampling ?? sampleOptions(o, '');
    // The core's limits (engine.limits.generation); without them the core's own refusal names the value.
    const lim = this.#engine.limits?.generation ?? { max_n: U32_MAX, max_block_size: U32_MAX, default_block_size: 16 };
    const n = checkInt('n', o.n ?? 1, { min: 1, max: lim.max_n });
    const blockSize = checkInt('blockSize', o.blockSize ?? lim.default_block_size, { min: 1, max: lim.max_block_size });
    const kvCache = o.kvCache ?? 'paged';
    if (kvCache !== 'paged' && kvCache !== 'contiguous') {
      throw new EngineError(`kvCache = ${String(kvCache)}: must be 'paged' or 'contiguous'`, { kind: 'invalid' });
    }
    if (kvCache === 'contiguous' && n !== 1) {
      throw new EngineError(`n = ${n}: the contiguous cache makes one continuation (n = 1)`, { kind: 'invalid' });
    }
    const { signal } = o;
    if (signal !== undefined && !(signal && typeof signal.aborted === 'boolean' && typeof signal.addEventListener === 'function')) {
      throw new EngineError(`signal = ${signal === null ? 'null' : typeof signal}: must be an AbortSignal, if given`, { kind: 'invalid' });
    }
    const onText = checkFunction('onText', o.onText);
    const onKv = checkFunction('onKv', o.onKv);
    if (signal?.aborted) return { texts: Array(n).fill(''), text: '', stopped: 'cancelled', kv: null };
    const tag = ++this.#tags;
    const cancel = () => this.#req('cancelGenerate', { tag }).catch(() => {});
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      const r = await this.#req('generate', { prompt, options, n, blockSize, kvCache, kv: Boolean(onKv), tag }, {
        text: (pieces) => {
          if (onText) for (const [i, piece] of pieces) onText(piece, i);
        },
        kv: (view) => onKv?.(kvView(view)),
      });
      return { texts: r.texts, text: r.texts[0], stopped: r.stopped, kv: r.kv && kvView(r.kv) };
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }

  /**
   * Stops this run's generations before their next token and frees their caches' blocks; each resolves with what
   * it had generated (`stopped: 'cancelled'`). Resolves how many were stopped.
   */
  cancelGenerate() {
    return this.#req('cancelGenerate');
  }

  /** BERT: top-k fillers for each [MASK]: [{ position, candidates: [[token, p], …] }]. */
  async fillMask(text, opts) {
    const { k = 5 } = checkOptions('opts', opts);
    return this.#req('fillMask', { text: checkString('text', text), k: checkInt('opts.k', k, { min: 1, max: U32_MAX }) });
  }

  /** Encoder-decoder: { output, answer } for an input of the run's task. */
  async decode(input, opts) {
    return this.#req('decode', { input: checkString('input', input), options: sampleOptions(opts) });
  }

  /**
   * Denoising runs (data.task span_corruption or text_infilling): draws a corrupted example from the val split with
   * `opts.seed` (default 0) and decodes the model's greedy reconstruction of it. Resolves { task, source,
   * sourceSpecial, truth, target, targetSpecial, output, outputSpecial, reconstruction, reconTokens, reconFilled,
   * reconMiss, spans, charAccuracy }, or null for other tasks.
   */
  async denoiseExample(opts) {
    opts = checkOptions('opts', opts);
    const seed = checkInt('opts.seed', opts.seed ?? 0);
    const r = await this.#req('denoiseExample', { seed });
    return r && {
      task: r.task, source: r.source, sourceSpecial: r.source_special, truth: r.truth, target: r.target,
      targetSpecial: r.target_special, output: r.output, outputSpecial: r.output_special,
      reconstruction: r.reconstruction, reconTokens: r.recon_tokens, reconFilled: r.recon_filled,
      reconMiss: r.recon_miss, spans: r.spans, charAccuracy: r.char_accuracy,
    };
  }

  /** Attention probabilities per layer and head for `text` (and the decoder `target` of an encoder-decoder). */
  async attention(text, opts) {
    const { target } = checkOptions('opts', opts);
    return this.#req('attention', { text: checkString('text', text), target: checkString('opts.target', target, { optional: true }) });
  }

  /**
   * The validation loss on sequences of `t` tokens — past ctx_len too, for every position scheme defined there:
   * { t, val } (val null when not finite). Learned positions have no table row past ctx_len: rejected with the
   * core's config error naming model.position. At t = ctx_len it equals evaluate()'s val (on the CPU).
   * `opts.mlm` (bert only): show the positions chosen for prediction by this rule instead of the config's
   * data.mlm_mask / data.mlm_random — { mask: 0, random: 0 }: no [MASK] in the input, as a fine-tuning input.
   */
  async evalAt(t, opts = {}) {
    const o = checkOptions('opts', opts);
    const req = { t: checkInt('t', t, { min: 1 }) };
    if (o.mlm !== undefined) {
      const m = checkOptions('opts.mlm', o.mlm);
      req.mlm = { mask: checkNumber('opts.mlm.mask', m.mask), random: checkNumber('opts.mlm.random', m.random) };
    }
    return this.#req('evalAt', req);
  }

  /**
   * The position–position term of the first layer's attention scores (Ke et al. 2021): p_tᵀ p_s of the positions
   * added to the input, and (p_t W_Qᵀ)·(p_s W_Kᵀ) through each head's projections, with the share of each that is a
   * function of t − s alone (src/position_terms.rs). Learned and sinusoidal positions; others rejected naming
   * model.position.
   */
  positionTerms() {
    return this.#req('positionTerms');
  }

  /** The shape-flow table for this run's config and batch. */
  shapes() {
    return this.#req('shapes');
  }

  /**
   * What issuing the last WebGPU step cost the engine: { issue_ms (recording + submission, not the GPU's execution),
   * dispatches_per_step, bind_groups_per_step (0 after the first step: the step is recorded once and replayed),
   * param_writes_per_step (uniform slots rewritten because their values changed),
   * overlapped_steps (steps read back while the next one was already submitted) }; null on the CPU.
   */
  gpuStats() {
    return this.#req('gpuStats');
  }

  /**
   * One training step in slow motion: the step this run would take next — every forward stage (the live tensor's
   * shape, first values, statistics and a small heatmap), the loss, each parameter's gradient (last layer first)
   * and AdamW's update per tensor. The run is not advanced (pause it to step through a fixed step).
   */
  trace() {
    return this.#req('trace');
  }

  /** A safetensors checkpoint (Uint8Array): config, tokenizer, step, parameters, optimizer state. */
  save() {
    return this.#req('save');
  }

  /** Frees the run inside the engine. */
  async dispose() {
    const r = await this.#req('dispose');
    this.#disposed = true;
    this.#engine._forget(this.id);
    return r;
  }
}
