// The page's link to the engine (pkg/index.js): starts it in the background, so the page is usable before any
// wasm is loaded, and checks the draft configuration (validation, parameters, FLOPs, memory, shape flow) with
// only the latest answer counting. Every model computation happens in the engine's Worker. Once it is up, the
// options table takes its bounds from the core's limits.
import { Engine } from '../pkg/index.js';
import { isolation } from '../pkg/isolate.js';
import { emit } from './bus.js';
import { applyLimits } from './options.js';

let engine = null;
let starting = null;

/** Starts the engine once; resolves it (or rejects with its error, also announced as an 'engine' event). */
export function startEngine() {
  // window.__tpEngineOptions: for tests only (e.g. a short snapshot interval), set before the page loads.
  // After the service worker's isolation (main.js): a first visit without it reloads, and an engine started
  // before would be lost with the page.
  starting ??= isolation().then(() => Engine.start({ memoryBudgetGiB: savedBudget(), ...globalThis.__tpEngineOptions })).then(
    (e) => {
      engine = e;
      applyLimits(e.limits.fields);
      emit('engine', { engine: e });
      return e;
    },
    (error) => {
      emit('engine', { error });
      throw error;
    },
  );
  return starting;
}

const BUDGET_KEY = 'tp.memoryBudgetGiB';

/** The memory budget (GiB) this browser chose on the page, or undefined for the engine's default. */
export function savedBudget() {
  try {
    const v = Number(localStorage.getItem(BUDGET_KEY));
    return v > 0 && v <= 3.5 ? v : undefined;
  } catch {
    return undefined; // storage unavailable: the default
  }
}

/** Sets the engine's memory budget (GiB) and remembers it; rejects with the engine's 'invalid' EngineError. */
export async function setBudget(gib) {
  const e = engine ?? (await startEngine());
  const now = await e.setMemoryBudget(gib);
  try {
    localStorage.setItem(BUDGET_KEY, String(now));
  } catch {
    // storage unavailable: the budget holds until the page is closed
  }
  return now;
}

/** The engine, or null while it starts. */
export function getEngine() {
  return engine;
}

/** [string key, vars] naming the backend for the badge. */
export function backendKey(info) {
  if (!info) return ['backend.loading', {}];
  if (info.backend === 'webgpu') return ['backend.webgpu', {}];
  if (info.backend === 'wasm-threads') return ['backend.wasm-threads', { n: info.threads }];
  return ['backend.wasm-single', {}];
}

let checkSeq = 0;

/**
 * Validates `config` with the core and computes its shape flow for a vocabulary of `vocab` tokens. Emits
 * 'check' { flow, error, config, vocab } (error: the engine's EngineError) — only for the latest call, so a slow
 * answer never overwrites a newer one.
 */
export async function check(config, vocab, backend = 'cpu') {
  const seq = ++checkSeq;
  const e = engine ?? (await startEngine().catch(() => null));
  if (!e) return;
  let result;
  try {
    // The memory is checked for the backend the run will train on (on WebGPU its activations are on the GPU).
    result = { flow: await e.shapeFlow(config, vocab, { backend }), error: null };
  } catch (err) {
    result = { flow: null, error: err };
  }
  if (seq === checkSeq) emit('check', { ...result, config, vocab });
}
