// The engine Worker: owns the wasm instance (and, in the threaded build, its rayon pool of Web Workers) and hosts
// several runs, stepping the ones that are training in turn, one step per task, so requests (pause, generate,
// a new run) are answered between steps. The protocol is in protocol.js.

import { errorReply } from './protocol.js';

let wasm = null; // the wasm-bindgen module of the chosen build
let info = null;
let crashed = false;
let lastPanic = null;
// A panic's message, reported by the hook in src/wasm.rs before the instance aborts.
globalThis.__tpOnPanic = (message) => {
  lastPanic = message;
};

/** runId → { wr, training, stepsLeft, trainId, emaTokS, lastSnapshot } */
const runs = new Map();
let turn = 0; // round-robin position among training runs
let scheduled = false;

const SNAPSHOT_EVERY_MS = 20000;

const reply = (id, result, transfer = []) => postMessage({ id, ok: true, result }, transfer);

function runOf(runId) {
  const r = runs.get(runId);
  if (!r) throw new Error(`no run with id ${runId} (disposed?)`);
  return r;
}

function runInfo(runId, wr) {
  return {
    runId,
    step: wr.stepCount,
    config: JSON.parse(wr.config()),
    vocabSize: wr.vocabSize,
    paramCount: wr.paramCount,
    tokensPerStep: wr.tokensPerStep,
  };
}

function snapshot(runId, r) {
  const bytes = r.wr.save();
  r.lastSnapshot = performance.now();
  postMessage({ event: 'snapshot', runId, step: r.wr.stepCount, bytes }, [bytes.buffer]);
}

/** One training step of run `runId` with its progress record (and evaluation at the config's interval). */
function stepOnce(runId, r, evalEvery) {
  const t0 = performance.now();
  const rep = JSON.parse(r.wr.step());
  const ms = performance.now() - t0;
  const tokS = (r.wr.tokensPerStep / ms) * 1000;
  r.emaTokS = r.emaTokS ? 0.9 * r.emaTokS + 0.1 * tokS : tokS;
  const p = {
    runId,
    step: r.wr.stepCount,
    loss: rep.loss,
    lr: rep.lr,
    gradNorm: rep.grad_norm,
    layerGradNorms: rep.layer_grad_norms,
    tokensPerSec: r.emaTokS,
    msPerStep: ms,
  };
  if (evalEvery && (p.step % evalEvery === 0 || r.stepsLeft === 1)) {
    const e = JSON.parse(r.wr.eval());
    p.valLoss = e.val;
    p.trainLoss = e.train;
  }
  postMessage({ event: 'progress', ...p });
  return p;
}

function stopTraining(runId, r, stopped) {
  const id = r.trainId;
  r.training = false;
  r.trainId = null;
  if (id !== null) reply(id, { step: r.wr.stepCount, stopped });
  snapshot(runId, r);
}

/** Runs one step of the next training run, then yields to the message queue. */
function tick() {
  scheduled = false;
  if (crashed) return;
  const active = [...runs.entries()].filter(([, r]) => r.training);
  if (active.length === 0) return;
  const [runId, r] = active[turn++ % active.length];
  try {
    const evalEvery = JSON.parse(r.wr.config()).train.eval_interval;
    stepOnce(runId, r, evalEvery);
    r.stepsLeft -= 1;
    if (r.stepsLeft <= 0) stopTraining(runId, r, 'done');
    else if (performance.now() - r.lastSnapshot > SNAPSHOT_EVERY_MS) snapshot(runId, r);
  } catch (e) {
    if (isAbort(e)) return crash(runId, e);
    // The core refused the step (e.g. divergence): the run pauses at its last good state.
    const id = r.trainId;
    r.training = false;
    r.trainId = null;
    postMessage({ event: 'runError', runId, message: e.message });
    if (id !== null) postMessage(errorReply(id, e));
  }
  schedule();
}

// A MessageChannel task runs after pending messages, unlike a microtask, and without setTimeout's clamping.
const channel = new MessageChannel();
channel.port1.onmessage = tick;
function schedule() {
  if (!scheduled) {
    scheduled = true;
    channel.port2.postMessage(null);
  }
}

/** A trap from the instance (a Rust panic aborts; the instance must not be used again). */
function isAbort(e) {
  return e instanceof WebAssembly.RuntimeError;
}

function crash(runId, e) {
  crashed = true;
  const message = `the engine aborted${runId !== undefined ? ` in run ${runId}` : ''}: ${lastPanic || e.message}`;
  postMessage({ event: 'crashed', runId, message });
}

async function init({ build, threads, instanceId }) {
  // Literal paths, so bundlers see (and split) each build.
  if (build === 'threads') wasm = await import('./wasm/threads/tp.js');
  else if (build === 'single') wasm = await import('./wasm/single/tp.js');
  else wasm = await import('./wasm/baseline/tp.js');
  await wasm.default();
  wasm.setInstanceId(instanceId);
  if (build === 'threads') await wasm.initThreadPool(threads);
  const b = JSON.parse(wasm.buildInfo());
  info = { build, threads: wasm.numThreads(), simd128: b.simd128, relaxedSimd: b.relaxed_simd, version: b.version };
  return info;
}

const handlers = {
  init,
  validate: ({ config }) => wasm.validateConfig(config),
  shapeFlow: ({ config, vocab }) => JSON.parse(wasm.shapeFlow(config, vocab)),
  create({ runId, config, corpus }) {
    const wr = new wasm.WasmRun(config, corpus ?? undefined);
    runs.set(runId, { wr, training: false, stepsLeft: 0, trainId: null, emaTokS: 0, lastSnapshot: performance.now() });
    return runInfo(runId, wr);
  },
  load({ runId, bytes, corpus }) {
    const wr = wasm.WasmRun.fromCheckpoint(bytes, corpus ?? undefined);
    runs.set(runId, { wr, training: false, stepsLeft: 0, trainId: null, emaTokS: 0, lastSnapshot: performance.now() });
    return runInfo(runId, wr);
  },
  train({ runId, steps }, id) {
    const r = runOf(runId);
    if (r.training) throw new Error(`run ${runId} is already training`);
    if (!(Number.isInteger(steps) && steps > 0)) throw new Error(`steps = ${steps}: must be a positive integer`);
    Object.assign(r, { training: true, stepsLeft: steps, trainId: id });
    schedule();
    return undefined; // replied when training stops
  },
  pause({ runId }) {
    const r = runOf(runId);
    if (r.training) stopTraining(runId, r, 'paused');
    return { step: r.wr.stepCount };
  },
  step({ runId }) {
    const r = runOf(runId);
    if (r.training) throw new Error(`run ${runId} is training: pause it first`);
    r.stepsLeft = 0;
    return stepOnce(runId, r, JSON.parse(r.wr.config()).train.eval_interval);
  },
  evaluate: ({ runId }) => JSON.parse(runOf(runId).wr.eval()),
  generate({ runId, prompt, options }, id) {
    const onText = (piece) => postMessage({ event: 'text', id, piece });
    return runOf(runId).wr.generate(prompt, JSON.stringify(options ?? {}), onText);
  },
  fillMask: ({ runId, text, k }) => JSON.parse(runOf(runId).wr.fillMask(text, k ?? 5)),
  decode: ({ runId, input, options }) => JSON.parse(runOf(runId).wr.decode(input, JSON.stringify(options ?? {}))),
  attention: ({ runId, text, target }) => JSON.parse(runOf(runId).wr.attention(text, target ?? undefined)),
  shapes: ({ runId }) => JSON.parse(runOf(runId).wr.shapes()),
  save: ({ runId }) => runOf(runId).wr.save(),
  dispose({ runId }) {
    const r = runOf(runId);
    if (r.trainId !== null) reply(r.trainId, { step: r.wr.stepCount, stopped: 'disposed' });
    r.wr.free();
    runs.delete(runId);
    return true;
  },
  panic: ({ runId, inPool }) => runOf(runId).wr.panicForTest(Boolean(inPool)),
  benchMatmul({ m, n, k, reps }) {
    wasm.benchMatmul(m, n, k, 1); // warm up
    const t0 = performance.now();
    wasm.benchMatmul(m, n, k, reps);
    return (performance.now() - t0) / reps;
  },
};

self.onmessage = async ({ data }) => {
  const { id, op } = data;
  if (crashed) return postMessage(errorReply(id, new Error('the engine aborted and is restarting')));
  const handler = handlers[op];
  try {
    if (!handler) throw new Error(`unknown request '${op}'`);
    if (op !== 'init' && !wasm) throw new Error('the engine is not initialised');
    const result = await handler(data, id);
    if (op === 'train') return;
    const transfer = result instanceof Uint8Array ? [result.buffer] : [];
    reply(id, result, transfer);
  } catch (e) {
    if (isAbort(e)) crash(data.runId, e);
    postMessage(errorReply(id, isAbort(e) ? new Error(`the engine aborted: ${lastPanic || e.message}`) : e));
  }
};
