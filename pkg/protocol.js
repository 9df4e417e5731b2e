// The message protocol between the page (index.js, the Engine) and the engine Worker (worker.js). One module so
// both sides agree; nothing else posts messages to the Worker.
//
// Page → Worker, requests: { id, op, ...args }. Every request gets exactly one reply:
//   { id, ok: true, result }            or  { id, ok: false, error: { message, kind, ...details } }
// Worker → Page, events (no id):       { event, runId?, ... }
// An error crosses as plain data (errorData) and becomes an EngineError again on the page (toError).
//
// Requests (op: arguments → result)
//   init        { build, threads, instanceId }    → { build, threads, simd128, relaxedSimd, version, limits }
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
//   generate    { runId, prompt, options }        → text; streams `text` events { id, piece } on the way
//   fillMask    { runId, text, k }                → [{ position, candidates: [[token, p], …] }]
//   decode      { runId, input, options }         → { output, answer }
//   attention   { runId, text, target }           → { tokens, source_tokens, maps: [...] }
//   shapes      { runId }                         → shape-flow table
//   save        { runId }                         → Uint8Array (safetensors)
//   dispose     { runId }                         → true
//   panic       { runId, inPool }                 → never replies ok: forces a Rust panic (tests only)
//   loseGpu     { runId }                         → whether the run's GPU device was destroyed (tests only)
//   benchMatmul { m, n, k, reps }                 → ms per (m×k)·(k×n) matmul on the CPU backend (benchmarks only)
//
// Events
//   progress    { runId, step, loss, lr, gradNorm, layerGradNorms, valLoss?, trainLoss?, tokensPerSec, msPerStep,
//                 backend, notice? }           — notice: e.g. the GPU was lost and the run continues on the cpu
//   snapshot    { runId, step, bytes }            — last good state, kept by the page for crash recovery
//   runError    { runId, error }                  — the run stopped (e.g. diverged: its last good state is kept)
//   crashed     { runId, message }                — the wasm instance aborted (a Rust panic); the page restarts it
//   text        { id, piece }                     — a piece of streamed generation for request `id`

export const OPS = Object.freeze([
  'init', 'validate', 'shapeFlow', 'checkText', 'create', 'load', 'train', 'pause', 'step', 'evaluate', 'generate',
  'fillMask', 'decode', 'attention', 'shapes', 'save', 'dispose', 'panic', 'loseGpu', 'benchMatmul',
]);

/**
 * A panic on a pool thread of the threaded build is broadcast on this channel as { id, message } (id: the
 * engine's instanceId): the engine Worker is blocked waiting for the pool and cannot report it.
 */
export const PANIC_CHANNEL = 'transformer-playground-panic';

export const EVENTS = Object.freeze(['progress', 'snapshot', 'runError', 'crashed', 'text']);

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
