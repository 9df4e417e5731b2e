// The message protocol between the page (index.js, the Engine) and the engine Worker (worker.js). One module so
// both sides agree; nothing else posts messages to the Worker.
//
// Page → Worker, requests: { id, op, ...args }. Every request gets exactly one reply:
//   { id, ok: true, result }            or  { id, ok: false, error: { message, kind, ...details } }
// Worker → Page, events (no id):       { event, runId?, ... }
// An error crosses as plain data (errorData) and becomes an EngineError again on the page (toError).
//
// Requests (op: arguments → result)
//   init        { build, threads, instanceId, aliveLock?, snapshotEveryMs? }
//                                                 → { build, threads, simd128, relaxedSimd, version, limits };
//                                                   the Worker holds the Web Lock `aliveLock` until it ends
//   validate    { config }                        → full config (JSON string) — or the core's error
//   shapeFlow   { config, vocab }                 → shape-flow table
//   checkText   { bytes }                         → { bytes, chars, distinct } — or the core's data error
//   create      { runId, config, corpus, backend } → run info { runId, step, config, vocabSize, paramCount,
//                                                   tokensPerStep, backend }; backend 'cpu' | 'webgpu'
//   load        { runId, bytes, corpus, backend } → run info (from a checkpoint)
//   train       { runId, steps }                  → { step, stopped: 'done' | 'paused' }  (replies when it stops)
//   pause       { runId }                         → { step }
//   step        { runId }                         → one progress record
//   evaluate    { runId }                         → { train, val }
//   evalAt      { runId, t, mlm? }                → { t, val }: val loss on sequences of t tokens, t past ctx_len
//                                                   too (refused for learned positions there: a config error
//                                                   naming model.position); on the host copy; mlm {mask, random}
//                                                   (bert): the chosen positions shown by that rule
//   generate    { runId, prompt, options, n, blockSize, kv?, tag?, kvCache? }
//                                                 → { texts, stopped: 'done' | 'cancelled', kv } (kv: the core's
//                                                   view of the cache at the end, JSON); N continuations over the
//                                                   paged KV cache, stepped in turn with training; streams `text`
//                                                   events, and `kv` events when kv is true. kvCache 'contiguous':
//                                                   the reference path, one continuation in one call (kv null)
//   cancelGenerate { runId, tag? }                → how many of the run's generations (those tagged `tag`) stopped
//   fillMask    { runId, text, k }                → [{ position, candidates: [[token, p], …] }]
//   decode      { runId, input, options }         → { output, answer }
//   attention   { runId, text, target }           → { tokens, source_tokens, maps: [...], routes: [...] }
//   positionTerms { runId }                       → { position, t, heads, raw, projected, raw_relative,
//                                                   projected_relative }: the first layer's position–position term
//   shapes      { runId }                         → shape-flow table
//   trace       { runId }                         → the run's next step in slow motion (src/trace.rs StepTrace):
//                                                   { step, lr, b, t, s, tokens, source_tokens, loss, grad_norm,
//                                                   grad_clip, stages: [...] }; the run is not advanced
//   save        { runId }                         → Uint8Array (safetensors)
//   dispose     { runId }                         → true
//   panic       { runId, inPool }                 → never replies ok: forces a Rust panic (tests only)
//   loseGpu     { runId }                         → whether the run's GPU device was destroyed (tests only)
//   attentionCost { spec, t, backend, check }     → { t, naive_ms, flash_ms, naive_bytes, flash_bytes, note?, backend }:
//                                                   naive vs fused attention at length t (src/attention_cost.rs);
//                                                   backend 'cpu' | 'webgpu'; check: only the core's checks → true
//   attentionFlops { config }                     → { rows: [{ t, attention, ffn }], crossover_t, ctx_len }: forward
//                                                   FLOPs per token of attention and the FFN as T grows
//   benchMatmul { m, n, k, reps }                 → ms per (m×k)·(k×n) matmul on the CPU backend (benchmarks only)
//   trap        { runId }                         → never replies ok: a trap with no panic, as a failed allocation
//                                                   aborts the core (tests only)
//   hang        {}                                → never replies: the Worker's thread loops for ever (tests only)
//   ping        (no id)                           → a `pong` event at once, when the Worker's event loop is free
//   recipeInfo  { kind }                          → { kind, stages: [{ name, steps }], knobs, recipe } (src/recipes/engine.rs)
//   createRecipe { recipeId, kind, options, bytes } → the recipe's state { kind, stages, knobs, recipe, stage, step,
//                                                   done }; options: JSON (recipe, corpus, task, knobs, seed, and the
//                                                   lengths of the checkpoints packed in bytes: checkpoint, from:
//                                                   { stage, checkpoints: [[name, length], …] }; facade::new_recipe)
//   recipeRun   { recipeId, stage? }              → { stopped: 'done' | 'paused' | 'disposed', stage, step } (replies
//                                                   when it stops: after `stage` finished, default the last)
//   recipePause { recipeId }                      → { stage, step }
//   recipeEvaluate { recipeId }                   → { stage, step, metrics, samples? }
//   recipeSamples { recipeId }                    → [{ prompt, completion }]
//   recipeSave  { recipeId, stage? }              → Uint8Array (safetensors)
//   recipeDispose { recipeId }                    → true
//
// Events
//   progress    { runId, step, loss, lr, gradNorm, layerGradNorms, valLoss?, trainLoss?, tokensPerSec, msPerStep,
//                 backend, auxLoss?, expertLoad?, notice? }
//                                              — auxLoss, expertLoad: Mixture-of-Experts models only;
//                                                notice: e.g. the GPU was lost and the run continues on the cpu
//   snapshot    { runId, step, bytes }            — last good state, kept by the page for crash recovery
//   runError    { runId, error }                  — the run stopped (e.g. diverged: its last good state is kept)
//   crashed     { runId, message }                — the wasm instance aborted (a Rust panic); the page restarts it
//   text        { id, pieces: [[index, text], …] } — the text each continuation of request `id` sampled since
//                                                   the last event (every 4 tokens, sooner after 16 ms, at the end)
//   kv          { id, view }                      — the paged cache of request `id` now (WasmGeneration.kv JSON:
//                                                   now, peak, table, done, bytes_per_position_mha); at most every
//                                                   50 ms, and the last view with live sequences before they end
//   pong        {}                                — the answer to a ping (the page's watchdog)
//   recipeProgress { recipeId, stage, step, steps, eval, metrics, samples?, ms } — a recipe's unit of work (or
//                                                   held-out evaluation) done
//   recipeStage { recipeId, stage, step, metrics, samples?, report, ms } — a recipe's stage finished
//   recipeError { recipeId, error }               — the recipe stopped on an error
//   recipeKept  { recipeId, stage, step, bytes }  — a finished stage's model (safetensors), kept by the page to bring
//                                                   the recipe back after a restart (Recipe#_restore)

export const OPS = Object.freeze([
  'init', 'validate', 'shapeFlow', 'checkText', 'create', 'load', 'train', 'pause', 'step', 'evaluate', 'generate',
  'cancelGenerate', 'fillMask', 'decode', 'attention', 'evalAt', 'positionTerms', 'shapes', 'trace', 'save', 'dispose', 'panic', 'loseGpu', 'attentionCost',
  'attentionFlops', 'benchMatmul', 'trap', 'hang', 'ping',
  'recipeInfo', 'createRecipe', 'recipeRun', 'recipePause', 'recipeEvaluate', 'recipeSamples', 'recipeSave', 'recipeDispose',
]);

/**
 * A panic on a pool thread of the threaded build is broadcast on this channel as { id, message } (id: the
 * engine's instanceId): the engine Worker is blocked waiting for the pool and cannot report it.
 */
export const PANIC_CHANNEL = 'transformer-playground-panic';

export const EVENTS = Object.freeze(['progress', 'snapshot', 'runError', 'crashed', 'text', 'kv', 'pong', 'recipeProgress', 'recipeStage', 'recipeError', 'recipeKept']);

/** The recipes (engine.createRecipe's kinds): src/recipes/engine.rs Kind. */
export const RECIPE_KINDS = Object.freeze(['finetune', 'zeroshot', 'icl', 'rlhf']);

/**
 * What every call of the engine rejects with: an Error with the core's message and its `kind`: 'config', 'data',
 * 'checkpoint', 'gpu', 'diverged', 'invalid', 'io' (the core's errors, src/error.rs), or 'runtime' (the engine
 * itself failed: a Rust panic, a Worker that did not load, a bug in this package). A config error also carries
 * `field`, `value` and `rule`; a data error its `reason` and the numbers that go with it (see index.d.ts).
 */
export class EngineError extends Error {
  constructor(message, details = {}) {
    super(message);
    Object.assign(this, details);
    this.kind ??= 'runtime';
  }
}
EngineError.prototype.name = 'EngineError';

/**
 * An error as data that survives postMessage (an Error loses its own properties there): its message and its own
 * enumerable plain properties — the core's errors carry kind, field, value, rule, reason … as such. An error
 * without a kind (a bug in the Worker's own code) is a 'runtime' one.
 */
export function errorData(err) {
  const data = { message: err && err.message ? err.message : String(err) };
  if (err && typeof err === 'object') {
    for (const [k, v] of Object.entries(err)) {
      if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) data[k] = v;
    }
  }
  data.kind ??= 'runtime';
  return data;
}

/** A reply carrying an error. */
export function errorReply(id, err) {
  return { id, ok: false, error: errorData(err) };
}

/** The error the caller sees for an error that crossed (errorData): an EngineError with every property back. */
export function toError({ message, ...details }) {
  return new EngineError(message, details);
}

/** Smallest wasm module using a relaxed-SIMD instruction (from wasm-feature-detect): valid iff the engine has it. */
const RELAXED_SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253,
  15, 253, 128, 2, 11,
]);
/** Smallest wasm module using a SIMD128 instruction. */
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);

export function hasSimd() {
  return WebAssembly.validate(SIMD_PROBE);
}

export function hasRelaxedSimd() {
  return WebAssembly.validate(RELAXED_SIMD_PROBE);
}

/**
 * Which build this context can run. 'threads' and 'single' are compiled with relaxed SIMD (fused multiply-add);
 * 'threads' also needs cross-origin isolation (SharedArrayBuffer). 'baseline' (SIMD128 only, one thread) is for
 * browsers without relaxed SIMD.
 */
export function chooseBuild() {
  if (!hasRelaxedSimd()) return 'baseline';
  const isolated = globalThis.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
  return isolated ? 'threads' : 'single';
}

/**
 * Argument checks, for the API (index.js, naming the caller's argument) and again where the Worker decodes a
 * request (worker.js: nothing that reaches the core may be of a type it cannot take). Each returns the value or
 * throws an 'invalid' EngineError naming the argument and what was expected.
 */
const invalid = (name, value, expected) => {
  const shown = typeof value === 'string' ? `'${value}'` : typeof value === 'object' && value ? typeof value : String(value);
  return new EngineError(`${name} = ${shown}: must be ${expected}`, { kind: 'invalid' });
};

export function checkString(name, value, { optional = false } = {}) {
  if (optional && value == null) return undefined;
  if (typeof value !== 'string') throw invalid(name, value, optional ? 'a string, if given' : 'a string');
  return value;
}

/** An integer in [min, max] (both inclusive). */
export function checkInt(name, value, { min = 0, max = Number.MAX_SAFE_INTEGER, optional = false } = {}) {
  if (optional && value === undefined) return undefined;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalid(name, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

export function checkNumber(name, value, { optional = false } = {}) {
  if (optional && value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw invalid(name, value, 'a finite number');
  return value;
}

/** An options object (undefined → {}). */
export function checkOptions(name, value) {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid(name, value, 'an object');
  return value;
}

/** Bytes: a Uint8Array (or ArrayBuffer, or another typed array's view), as a Uint8Array of our own. */
export function checkBytes(name, value) {
  if (value instanceof ArrayBuffer) return new Uint8Array(value.slice(0));
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
  throw invalid(name, value, 'a Uint8Array or an ArrayBuffer');
}

/** The largest u32: the core's sizes and counts cross the wasm boundary as 32-bit integers. */
export const U32_MAX = 2 ** 32 - 1;
/**
 * Largest vocabulary size shapeFlow takes: far above any vocabulary the core builds (at most limits.text.max_chars
 * characters plus a few special tokens), and small enough that the shape arithmetic stays in range.
 */
export const VOCAB_MAX = 2 ** 24;
