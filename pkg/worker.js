// The engine Worker: owns the wasm instance (and, in the threaded build, its rayon pool of Web Workers) and hosts
// several runs, stepping the ones that are training in turn, one step per task, so requests (pause, generate,
// a new run) are answered between steps. A generation over the paged KV cache (WasmGeneration, from a copy of the
// weights) takes its turn among them: a slice of tokens per task, so training goes on while it runs and a cancel is
// seen before the next token. The protocol is in protocol.js.
//
// A run may train on WebGPU (created with backend 'webgpu'): its steps are awaited (the device's scalars come back
// asynchronously) and its host copy is brought up to date (syncAsync) before anything that reads the parameters
// on the cpu (save, generate, fill-mask, decode, attention). Each run's requests run one at a time (`exclusive`).

import {
  EngineError, U32_MAX, VOCAB_MAX, checkBytes, checkInt, checkNumber, checkOptions, checkString, errorData, errorReply,
} from './protocol.js';

let wasm = null; // the wasm-bindgen module of the chosen build
let info = null;
let crashed = false;
let lastPanic = null;
// A panic's message, reported by the hook in src/wasm.rs before the instance aborts.
globalThis.__tpOnPanic = (message) => {
  lastPanic = message;
};

/** runId → { wr, training, stepsLeft, trainId, emaTokS, lastSnapshot, queue } */
const runs = new Map();
/**
 * Generations in flight, by request id: { id, runId, tag, gen (WasmGeneration; null while it starts), kv (send
 * the cache's view), cancelled, text (index → text not yet sent), tokens, sent, view, viewSent, kvSent, settle }.
 */
const gens = new Map();
/**
 * Recipes (src/recipes/engine.rs through WasmRecipe), by recipeId: { wr, running, runReq (the id of the recipeRun
 * request to answer when it stops), until (the stage to finish), stageMs (the stage's time so far) }.
 */
const recipes = new Map();
let turn = 0; // round-robin position among the jobs: training runs, recipes and generations
let scheduled = false;

let snapshotEveryMs = 20000; // set by init
const TEXT_PIECES = 4;
const TEXT_EVERY_MS = 16;
// A generation's turn: tokens until this much time has passed (at least one). Short enough that a training run
// beside it keeps its pace and a cancel is seen quickly; long enough that the turn's own cost (a task, a message)
// stays small against the tokens' (docs/BENCHMARKS.md, "Paged KV cache in the browser").
const GEN_SLICE_MS = 8;
// The cache's view goes to the page at most this often (and once more before the sequences end).
const KV_EVERY_MS = 50;

const reply = (id, result, transfer = []) => postMessage({ id, ok: true, result }, transfer);

function runOf(runId) {
  const r = runs.get(runId);
  if (!r) throw new EngineError('the engine has no such run (disposed?)', { kind: 'invalid', runId });
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

/** Runs `fn` after the run's earlier requests have finished (its async GPU calls must not interleave). */
async function exclusive(r, fn) {
  const before = r.queue;
  let done;
  r.queue = new Promise((resolve) => (done = resolve));
  await before;
  try {
    return await fn();
  } finally {
    done();
  }
}

/** Brings a WebGPU run's host copy up to date (a no-op on the cpu). */
async function synced(r) {
  if (r.wr.onGpu) await r.wr.syncAsync();
  return r.wr;
}

/** The backend a run trains on, as reported to the page. */
function backendOf(r) {
  return r.wr.onGpu ? 'webgpu' : info.build === 'threads' ? 'wasm-threads' : 'wasm-single';
}

async function snapshot(runId, r) {
  const bytes = (await synced(r)).save();
  r.lastSnapshot = performance.now();
  postMessage({ event: 'snapshot', runId, step: r.wr.stepCount, bytes }, [bytes.buffer]);
}

/** Steps a WebGPU run takes in one pipelined call (`stepsAsync`): the next step is submitted before the one before
 * it is read back, so the device does not wait for the Worker between them; the chunk ends at an evaluation. At most
 * GPU_CHUNK steps and about GPU_CHUNK_MS of them (by the last call's ms/step), so a pause waits no longer than that. */
const GPU_CHUNK = 8;
const GPU_CHUNK_MS = 1000;

/** Steps for the next call of run `r`: 1 on the CPU or before its speed is known. */
function chunkOf(r) {
  if (!r.wr.onGpu || !r.msPerStep) return 1;
  return Math.max(1, Math.min(GPU_CHUNK, Math.floor(GPU_CHUNK_MS / r.msPerStep), r.stepsLeft));
}

/**
 * Training steps of run `runId` (one on the CPU; on WebGPU up to `max`, pipelined, never past the next evaluation)
 * with a progress record each (and the evaluation at the config's interval). Returns the records.
 */
async function stepOnce(runId, r, evalEvery, max = 1) {
  const t0 = performance.now();
  let reps;
  if (r.wr.onGpu) {
    const toEval = evalEvery ? evalEvery - (r.wr.stepCount % evalEvery) : max;
    reps = JSON.parse(await r.wr.stepsAsync(Math.max(1, Math.min(max, toEval))));
  } else {
    reps = [JSON.parse(r.wr.step())];
  }
  const ms = (performance.now() - t0) / reps.length;
  r.msPerStep = ms;
  const tokS = (r.wr.tokensPerStep / ms) * 1000;
  const out = [];
  for (const [i, rep] of reps.entries()) {
    r.emaTokS = r.emaTokS ? 0.9 * r.emaTokS + 0.1 * tokS : tokS;
    const p = {
      runId,
      step: rep.step + 1,
      loss: rep.loss,
      lr: rep.lr,
      gradNorm: rep.grad_norm,
      layerGradNorms: rep.layer_grad_norms,
      tokensPerSec: r.emaTokS,
      msPerStep: ms,
      backend: backendOf(r),
    };
    // Mixture-of-Experts models: the weighted balancing loss (already in the objective; `loss` is the cross-entropy)
    // and each MoE layer's load, as the core reports them.
    if (rep.aux_loss !== undefined) p.auxLoss = rep.aux_loss;
    if (rep.expert_load?.length) p.expertLoad = rep.expert_load;
    if (rep.notice) p.notice = rep.notice;
    const last = i === reps.length - 1;
    if (last && evalEvery && (p.step % evalEvery === 0 || r.stepsLeft === reps.length)) {
      const e = JSON.parse(r.wr.onGpu ? await r.wr.evalAsync() : r.wr.eval());
      p.valLoss = e.val;
      p.trainLoss = e.train;
    }
    postMessage({ event: 'progress', ...p });
    out.push(p);
  }
  return out;
}

async function stopTraining(runId, r, stopped) {
  const id = r.trainId;
  r.training = false;
  r.trainId = null;
  if (id !== null) reply(id, { step: r.wr.stepCount, stopped });
  await snapshot(runId, r);
}

/** Runs one step of the next training run, or a slice of the next generation, then yields to the message queue. */
async function tick() {
  scheduled = false;
  if (crashed) return;
  const jobs = [
    ...[...runs.entries()].filter(([, r]) => r.training),
    ...[...gens.values()].filter((g) => g.gen).map((g) => [null, g]),
    ...[...recipes.entries()].filter(([, c]) => c.running).map(([id, c]) => ['recipe', c, id]),
  ];
  if (jobs.length === 0) return;
  const [runId, r, recipeId] = jobs[turn++ % jobs.length];
  if (runId === null) {
    generationSlice(r);
    return schedule();
  }
  if (runId === 'recipe') {
    await recipeUnit(recipeId, r);
    return schedule();
  }
  try {
    await exclusive(r, async () => {
      if (!r.training) return; // paused while waiting for its turn
      const evalEvery = JSON.parse(r.wr.config()).train.eval_interval;
      r.stepsLeft -= (await stepOnce(runId, r, evalEvery, chunkOf(r))).length;
      if (r.stepsLeft <= 0) await stopTraining(runId, r, 'done');
      else if (performance.now() - r.lastSnapshot > snapshotEveryMs) await snapshot(runId, r);
    });
  } catch (e) {
    if (isAbort(e)) return crash(runId, e);
    // The core refused the step (e.g. divergence): the run pauses at its last good state.
    const id = r.trainId;
    r.training = false;
    r.trainId = null;
    postMessage({ event: 'runError', runId, error: errorData(e) });
    if (id !== null) postMessage(errorReply(id, e));
  }
  schedule();
}

/** Sends the text sampled since the last flush, as `text` { id, pieces: [[index, text], …] }. */
function flushText(g) {
  const pieces = [...g.text.entries()].filter(([, t]) => t);
  if (pieces.length) postMessage({ event: 'text', id: g.id, pieces });
  g.text.clear();
  g.tokens = 0;
  g.sent = performance.now();
}

/** Sends the cache's latest view (the core's JSON), when the page asked for it and has not had this one. */
function flushView(g) {
  if (g.kv && g.view && !g.viewSent) {
    postMessage({ event: 'kv', id: g.id, view: g.view });
    g.viewSent = true;
    g.kvSent = performance.now();
  }
}

/**
 * Tokens of generation `g` for GEN_SLICE_MS (one step: one token of every continuation still going). Text goes
 * out every TEXT_PIECES steps or TEXT_EVERY_MS, as for the contiguous path; the view after each step is kept (the
 * last one with live sequences is what the page shows when they end and free their blocks).
 */
function generationSlice(g) {
  const t0 = performance.now();
  try {
    while (!g.cancelled && !g.gen.done()) {
      for (const [i, piece] of JSON.parse(g.gen.step())) g.text.set(i, (g.text.get(i) ?? '') + piece);
      const now = performance.now();
      if (g.kv && !g.gen.done()) {
        g.view = g.gen.kv();
        g.viewSent = false;
        if (now - g.kvSent >= KV_EVERY_MS) flushView(g);
      }
      if (++g.tokens >= TEXT_PIECES || now - g.sent >= TEXT_EVERY_MS) flushText(g);
      if (now - t0 >= GEN_SLICE_MS) break;
    }
  } catch (e) {
    if (isAbort(e)) {
      // The instance is gone: its request fails (the handler reports the crash); nothing of it can be read or freed.
      gens.delete(g.id);
      return g.settle(null, e);
    }
    return endGeneration(g, e);
  }
  if (g.cancelled || g.gen.done()) endGeneration(g);
}

/**
 * Ends generation `g` — done, cancelled or failed: its last text and view go out, its blocks are freed, and its
 * request is answered: { texts, stopped: 'done' | 'cancelled', kv } (kv: the core's view as it stopped, as JSON —
 * done: every sequence has freed its blocks; cancelled: the blocks that free() then gives back), or the error.
 */
function endGeneration(g, error) {
  gens.delete(g.id);
  flushText(g);
  flushView(g);
  try {
    const texts = JSON.parse(g.gen.texts());
    const kv = g.gen.kv();
    g.settle(error ? null : { texts, stopped: g.cancelled ? 'cancelled' : 'done', kv }, error);
  } finally {
    g.gen.free();
  }
}

/** Cancels run `runId`'s generations (the one tagged `tag`, if given); returns how many. */
function cancelGenerations(runId, tag) {
  let n = 0;
  for (const g of [...gens.values()]) {
    if (g.runId !== runId || (tag !== undefined && g.tag !== tag) || g.cancelled) continue;
    g.cancelled = true;
    n++;
    // Between tasks no step is under way: it ends now. One still starting ends when its start returns.
    if (g.gen) endGeneration(g);
  }
  return n;
}

/**
 * Starts N continuations of `prompt` (gpt; the encoder-decoder decodes N outputs of it) over the paged KV cache and
 * resolves when they end. The start waits for the run's earlier requests (a GPU run syncs its host copy first);
 * the steps then take their turns with the training runs, outside the run's queue.
 */
async function generatePaged({ runId, prompt, options, n, blockSize, kv, tag }, id) {
  const g = {
    id, runId, tag, gen: null, kv: Boolean(kv), cancelled: false, text: new Map(), tokens: 0,
    sent: performance.now(), view: null, viewSent: true, kvSent: -Infinity, settle: null,
  };
  const done = new Promise((resolve, reject) => {
    g.settle = (result, error) => (error ? reject(error) : resolve(result));
  });
  gens.set(id, g);
  let gen;
  try {
    gen = await onHost(runId, (wr) => wr.startGeneration(prompt, options, n, blockSize));
  } catch (e) {
    gens.delete(id);
    throw e;
  }
  if (g.cancelled) {
    gen.free();
    return { texts: Array(n).fill(''), stopped: 'cancelled', kv: null };
  }
  g.gen = gen;
  schedule();
  return done;
}

/** Where recipe `c` is: its state JSON (stages, stage, step, done, …). */
function recipeState(c) {
  return JSON.parse(c.wr.state());
}

/**
 * Stops recipe `c` stepping and answers its recipeRun request with where it stopped: `at` (the stage that finished
 * and its steps) or the position now.
 */
function stopRecipe(c, stopped, at = null) {
  const id = c.runReq;
  c.running = false;
  c.runReq = null;
  const { stage, step } = at ?? recipeState(c);
  if (id !== null) reply(id, { stopped, stage, step });
  return { stage, step };
}

/**
 * One unit of recipe `recipeId`'s work (a training, RM or PPO step, or an evaluation; on WebGPU its device is
 * awaited): its events go to the page (recipeProgress, recipeStage); it stops when the stage it runs to has
 * finished, or on an error (recipeError). Every call on a recipe goes through `exclusive`.
 */
function recipeUnit(recipeId, c) {
  return exclusive(c, () => (c.running ? recipeUnitNow(recipeId, c) : undefined));
}

async function recipeUnitNow(recipeId, c) {
  const t0 = performance.now();
  let events;
  try {
    events = JSON.parse(await c.wr.unit());
  } catch (e) {
    if (isAbort(e)) return crash(undefined, e);
    const id = c.runReq;
    c.running = false;
    c.runReq = null;
    postMessage({ event: 'recipeError', recipeId, error: errorData(e) });
    if (id !== null) postMessage(errorReply(id, e));
    return;
  }
  const ms = performance.now() - t0;
  c.stageMs += ms;
  let finished = null;
  for (const { event, ...e } of events) {
    if (event === 'stage') {
      postMessage({ event: 'recipeStage', recipeId, ...e, ms: c.stageMs });
      c.stageMs = 0;
      finished = { stage: e.stage, step: e.step };
    } else {
      postMessage({ event: 'recipeProgress', recipeId, ...e, ms });
    }
  }
  await keepRecipe(recipeId, c, finished);
  if (finished !== null && (recipeState(c).done || finished.stage === c.until)) stopRecipe(c, 'done', finished);
}

/**
 * What the page keeps of recipe `c` to bring it back after an engine restart (index.js Recipe#_restore): the model
 * of each stage that has one, as that stage finishes (`recipeKept`: stage, step, bytes). A restored recipe starts
 * at the stage it was in, from these (the Driver's `from`).
 */
async function keepRecipe(recipeId, c, finished) {
  if (finished === null || finished.stage === 'eval') return;
  const bytes = await c.wr.save(finished.stage);
  postMessage({ event: 'recipeKept', recipeId, stage: finished.stage, step: finished.step, bytes }, [bytes.buffer]);
}

/** recipeRun: steps recipe `recipeId` until `stage` (default: the last) has finished; replied when it stops. */
function recipeRunNow(recipeId, stage, id) {
  const c = recipeOf(recipeId);
  if (c.running) throw new EngineError('the recipe is already running', { kind: 'invalid', recipeId });
  const st = recipeState(c);
  const names = st.stages.map((s) => s.name);
  if (stage !== undefined && !names.includes(stage)) {
    throw new EngineError(`opts.stage = ${JSON.stringify(stage)}: must be one of ${names.join(', ')}`, { kind: 'invalid' });
  }
  const until = stage ?? names[names.length - 1];
  // Already there: the stage asked for has finished.
  if (st.done || names.indexOf(until) < names.indexOf(st.stage)) {
    return { stopped: 'done', stage: until, step: st.stages[names.indexOf(until)].steps };
  }
  Object.assign(c, { running: true, runReq: id, until });
  schedule();
  return undefined; // replied when it stops
}

// Why finetune and rlhf stay on the CPU: their steps add losses computed on the host (the classifier head's task
// loss, the reward model's pairwise loss, PPO's clipped objective and value loss), which the WebGPU step does not
// record; only plain language-model training (zeroshot's and icl's pretraining) runs there.
const HOST_LOSSES = 'its steps add losses computed on the host (classifier, reward-model and PPO losses), which the WebGPU backend does not run';

/**
 * A recipe's backend: { gpu, choice }. 'webgpu' trains zeroshot's and icl's pretraining stages on this Worker's GPU
 * (their evaluations stay on the CPU); finetune and rlhf refuse it. 'auto' takes the CPU for finetune and rlhf and
 * for the others measures, as a training run's 'auto' does, a few steps of the pretraining config on each (on
 * throwaway runs: zeroshot's corpus; for icl, a text of its episodes' characters, the same vocabulary) and takes
 * the faster; `choice` says what it took and why.
 */
async function chooseRecipeBackend(kind, backend, make, options) {
  if (backend === 'cpu') return { gpu: false, choice: null };
  const hostLosses = kind === 'finetune' || kind === 'rlhf';
  if (backend === 'webgpu') {
    if (hostLosses) throw new EngineError(`opts.backend = 'webgpu': ${kind} runs on the CPU backend: ${HOST_LOSSES}; use 'cpu' or 'auto'`, { kind: 'gpu' });
    if (!info.webgpu) throw new EngineError("opts.backend = 'webgpu': no WebGPU in this browser or build", { kind: 'gpu' });
    return { gpu: true, choice: null };
  }
  if (hostLosses) return { gpu: false, choice: { backend: 'cpu', reason: `${kind} runs on the CPU backend: ${HOST_LOSSES}` } };
  const probe = make(false);
  const { recipe } = recipeState({ wr: probe });
  probe.free();
  const { [kind]: section, ...config } = recipe;
  const text = kind === 'icl' ? iclText(section.alphabet) : options.corpus;
  const choice = await chooseBackend(() => new wasm.WasmRun(JSON.stringify(config), text));
  choice.reason = `${kind}'s pretraining: ${choice.reason}; evaluation on the CPU`;
  return { gpu: choice.backend === 'webgpu', choice };
}

/** A text over icl's characters (lower-case inputs, upper-case outputs, '>', '|', newline): for timing only. */
function iclText(alphabet) {
  const lo = 'abcdefghijklmnopqrstuvwxyz'.slice(0, alphabet);
  let t = '';
  for (let i = 0; i < 20000; i++) t += `${lo[(i * 7) % alphabet]}>${lo[(i * 5 + 3) % alphabet].toUpperCase()}${i % 8 === 7 ? '\n' : '|'}`;
  return t;
}

function recipeOf(recipeId) {
  const c = recipes.get(recipeId);
  if (!c) throw new EngineError('the engine has no such recipe (disposed?)', { kind: 'invalid', recipeId });
  return c;
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
  // The run is named by its id (the page words it with its own number), not in the text. A trap with no panic
  // before it is an abort: in the core, a failed allocation (out of memory) is the one that comes without a message.
  const why = lastPanic || (e.message === 'unreachable'
    ? 'it stopped without a message, most likely out of memory (lower batch_size, ctx_len or the model size)'
    : e.message);
  const message = `the engine aborted: ${why}`;
  postMessage({ event: 'crashed', runId, message });
}

async function init({ build, threads, instanceId, aliveLock, snapshotEveryMs: every, memoryBudgetGiB }) {
  if (Number.isInteger(every) && every > 0) snapshotEveryMs = every;
  // Held until this Worker is gone: the page learns of its end by getting the lock (Engine #watchLock).
  if (aliveLock && navigator.locks) {
    await new Promise((held) => navigator.locks.request(checkString('aliveLock', aliveLock), () => {
      held();
      return new Promise(() => {});
    }));
  }
  // Literal paths, so bundlers see (and split) each build.
  if (build === 'threads') wasm = await import('./wasm/threads/tp.js');
  else if (build === 'single') wasm = await import('./wasm/single/tp.js');
  else wasm = await import('./wasm/baseline/tp.js');
  await wasm.default();
  wasm.setInstanceId(instanceId);
  if (build === 'threads') await wasm.initThreadPool(threads);
  // A budget the page set (Engine#setMemoryBudget) outlives a restart: the new instance takes it at start.
  if (typeof memoryBudgetGiB === 'number' && memoryBudgetGiB > 0) wasm.setMemoryBudget(memoryBudgetGiB);
  const b = JSON.parse(wasm.buildInfo());
  info = {
    build, threads: wasm.numThreads(), simd128: b.simd128, relaxedSimd: b.relaxed_simd, version: b.version,
    backend: build === 'threads' ? 'wasm-threads' : 'wasm-single', webgpu: b.gpu && 'gpu' in navigator,
  };
  return { ...info, limits: JSON.parse(wasm.limits()) };
}

/**
 * 'auto': WebGPU or the CPU, whichever trains this config faster here. Tiny models are often faster on WASM SIMD
 * than on a GPU (dispatch and readback costs), and software GPUs are slow: so measure, on two throwaway runs of
 * the same config and data (1 warm-up step, then the median of 3). Returns the choice and the two timings.
 */
async function chooseBackend(make) {
  // A config whose CPU step this tab cannot hold trains only on WebGPU: no CPU run to measure. The core's memory
  // check is the one rule; a config it refuses for WebGPU too is refused (the error of the run made for WebGPU).
  let cpuRefusal = null;
  try {
    make('cpu').free();
  } catch (e) {
    if (e?.kind !== 'config') throw e;
    cpuRefusal = e;
  }
  if (cpuRefusal && !info.webgpu) {
    const { message, ...details } = errorData(cpuRefusal);
    throw new EngineError(`${message}; and there is no WebGPU in this browser or build, where it could train`, details);
  }
  if (cpuRefusal) {
    make('webgpu').free();
    return { backend: 'webgpu', reason: `too large for the CPU here (${cpuRefusal.message}): WebGPU, where its activations live on the GPU` };
  }
  if (!info.webgpu) return { backend: 'cpu', reason: 'no WebGPU in this browser or build' };
  const ms = {};
  for (const backend of ['webgpu', 'cpu']) {
    const wr = make(backend);
    try {
      if (backend === 'webgpu') await wr.attachGpu();
      const t = [];
      for (let i = 0; i < 4; i++) {
        const t0 = performance.now();
        if (wr.onGpu) await wr.stepAsync();
        else wr.step();
        if (i > 0) t.push(performance.now() - t0);
      }
      ms[backend] = t.sort((a, b) => a - b)[1];
    } catch (e) {
      if (backend === 'webgpu') return { backend: 'cpu', reason: `WebGPU failed: ${e.message}` };
      throw e;
    } finally {
      wr.free();
    }
  }
  const backend = ms.webgpu < ms.cpu ? 'webgpu' : 'cpu';
  return { backend, reason: `measured ${ms.webgpu.toFixed(1)} ms/step on WebGPU, ${ms.cpu.toFixed(1)} on the CPU`, ms };
}

/** Registers a run; with backend 'webgpu' moves it onto this Worker's GPU first (or rejects with the reason). */
async function host(runId, wr, backend, choice) {
  if (backend === 'webgpu') {
    try {
      await wr.attachGpu();
    } catch (e) {
      wr.free();
      throw new EngineError(`WebGPU is not available for this run: ${e.message}`, { kind: 'gpu' });
    }
  }
  runs.set(runId, { wr, training: false, stepsLeft: 0, trainId: null, emaTokS: 0, lastSnapshot: performance.now(), queue: Promise.resolve() });
  return { ...runInfo(runId, wr), backend: wr.onGpu ? 'webgpu' : info.backend, choice };
}

/** `fn(wr)` after the run's earlier requests (every use of a run goes through `exclusive`). */
function onRun(runId, fn) {
  const r = runOf(runId);
  return exclusive(r, () => fn(r.wr));
}

/** `fn(wr)` on the run's up-to-date host copy, after its earlier requests. */
function onHost(runId, fn) {
  const r = runOf(runId);
  return exclusive(r, async () => fn(await synced(r)));
}

/**
 * The contiguous-cache reference path (`WasmRun.generate`): one continuation in one call, which holds the Worker
 * until it ends (no cancel, no view). Sampled text goes out every TEXT_PIECES tokens, or sooner when TEXT_EVERY_MS
 * have passed, and at the end: a message per token costs the engine thread a noticeable share of the generation's
 * time (docs/BENCHMARKS.md).
 */
function generateContiguous(runId, prompt, options, id) {
  let text = '';
  let pieces = 0;
  let sent = performance.now();
  const flush = () => {
    if (text) postMessage({ event: 'text', id, pieces: [[0, text]] });
    text = '';
    pieces = 0;
    sent = performance.now();
  };
  const onText = (piece) => {
    text += piece;
    if (++pieces >= TEXT_PIECES || performance.now() - sent >= TEXT_EVERY_MS) flush();
  };
  return onHost(runId, (wr) => {
    try {
      return { texts: [wr.generate(prompt, options, onText)], stopped: 'done', kv: null };
    } finally {
      flush();
    }
  });
}

/**
 * The attention-cost sweep (the page's "Attention cost" panel): one core AttentionCost per (spec, backend), kept
 * while they stay the same so WebGPU compiles its kernels once. Requests run one at a time (`exclusive`): a row on
 * WebGPU awaits the device.
 */
const cost = { key: null, ac: null, queue: Promise.resolve() };

function attentionCost({ spec, t, backend, check }) {
  const json = JSON.stringify(checkOptions('spec', spec));
  checkInt('t', t, { max: U32_MAX });
  if (backend !== 'cpu' && backend !== 'webgpu') {
    throw new EngineError(`backend = ${String(backend)}: must be 'cpu' or 'webgpu'`, { kind: 'invalid' });
  }
  if (check) {
    // Only the core's checks of the spec and t: nothing runs, no GPU is opened.
    const ac = new wasm.AttentionCost(json);
    try {
      ac.checkT(t);
    } finally {
      ac.free();
    }
    return true;
  }
  return exclusive(cost, async () => {
    const key = `${backend}|${json}`;
    if (cost.key !== key) {
      cost.ac?.free();
      Object.assign(cost, { key: null, ac: null });
      const ac = new wasm.AttentionCost(json);
      if (backend === 'webgpu') {
        try {
          if (!info.webgpu) throw new Error('no WebGPU in this browser or build');
          await ac.attachGpu();
        } catch (e) {
          ac.free();
          throw new EngineError(`WebGPU is not available for the attention cost: ${e.message}`, { kind: 'gpu' });
        }
      }
      Object.assign(cost, { key, ac });
    }
    cost.ac.checkT(t);
    const row = JSON.parse(backend === 'webgpu' ? await cost.ac.rowAsync(t) : cost.ac.row(t));
    return { ...row, backend: backend === 'webgpu' ? 'webgpu' : info.backend };
  });
}

const handlers = {
  init,
  // Every value that reaches the core is checked here too: the Worker is the boundary to wasm, where a value of
  // the wrong type can trap the instance instead of being refused.
  validate: ({ config }) => wasm.validateConfig(checkString('config', config)),
  // backend: the memory is checked for a run on it ('auto' with WebGPU here: as on WebGPU).
  shapeFlow: ({ config, vocab, backend }) => JSON.parse(wasm.shapeFlow(checkString('config', config), checkInt('vocab', vocab, { min: 1, max: VOCAB_MAX }),
    backend === 'webgpu' || (backend === 'auto' && info.webgpu) ? 'webgpu' : 'cpu')),
  checkText: ({ bytes }) => JSON.parse(wasm.checkText(checkBytes('bytes', bytes))),
  // gib 0: the default. The core refuses a value outside (0, 3.5] naming it.
  setMemoryBudget: ({ gib }) => {
    if (typeof gib !== 'number' || !Number.isFinite(gib)) throw new EngineError(`gib = ${String(gib)}: must be a finite number`, { kind: 'invalid' });
    wasm.setMemoryBudget(gib);
    return wasm.memoryBudget();
  },
  specialTokens: ({ config }) => JSON.parse(wasm.specialTokens(checkString('config', config))),
  // A run is made for the backend it will train on: one for WebGPU is checked against what it holds in wasm
  // memory, not a whole CPU step (the core's Run::unattached).
  async create({ runId, config, corpus, backend }) {
    checkString('config', config);
    checkString('corpus', corpus, { optional: true });
    const make = (target) => new wasm.WasmRun(config, corpus ?? undefined, target === 'webgpu' ? 'webgpu' : 'cpu');
    const choice = backend === 'auto' ? await chooseBackend(make) : undefined;
    const b = choice?.backend ?? backend;
    return host(runId, make(b), b, choice);
  },
  async load({ runId, bytes, corpus, backend }) {
    checkBytes('bytes', bytes);
    checkString('corpus', corpus, { optional: true });
    const make = (target) => wasm.WasmRun.fromCheckpoint(bytes, corpus ?? undefined, target === 'webgpu' ? 'webgpu' : 'cpu');
    const choice = backend === 'auto' ? await chooseBackend(make) : undefined;
    const b = choice?.backend ?? backend;
    return host(runId, make(b), b, choice);
  },
  train({ runId, steps }, id) {
    const r = runOf(runId);
    if (r.training) throw new EngineError('the run is already training', { kind: 'invalid', runId });
    if (!(Number.isInteger(steps) && steps > 0)) {
      throw new EngineError(`steps = ${steps}: must be a positive integer`, { kind: 'invalid' });
    }
    Object.assign(r, { training: true, stepsLeft: steps, trainId: id });
    schedule();
    return undefined; // replied when training stops
  },
  pause({ runId }) {
    const r = runOf(runId);
    return exclusive(r, async () => {
      if (r.training) await stopTraining(runId, r, 'paused');
      return { step: r.wr.stepCount };
    });
  },
  step({ runId }) {
    const r = runOf(runId);
    if (r.training) throw new EngineError('the run is training: pause it first', { kind: 'invalid', runId });
    return exclusive(r, async () => {
      r.stepsLeft = 0;
      const [p] = await stepOnce(runId, r, JSON.parse(r.wr.config()).train.eval_interval);
      await snapshot(runId, r); // a walkthrough's steps survive a restart too
      return p;
    });
  },
  evaluate({ runId }) {
    const r = runOf(runId);
    return exclusive(r, async () => JSON.parse(r.wr.onGpu ? await r.wr.evalAsync() : r.wr.eval()));
  },
  generate({ runId, prompt, options, n, blockSize, kvCache, kv, tag }, id) {
    runOf(runId);
    checkString('prompt', prompt);
    const json = JSON.stringify(checkOptions('options', options));
    if (kvCache === 'contiguous') return generateContiguous(runId, prompt, json, id);
    // Types only (what crosses as a u32 must be one); the core refuses n and blockSize out of range, naming them.
    checkInt('n', n, { max: U32_MAX });
    checkInt('blockSize', blockSize, { max: U32_MAX });
    return generatePaged({ runId, prompt, options: json, n, blockSize, kv, tag }, id);
  },
  cancelGenerate({ runId, tag }) {
    runOf(runId);
    return cancelGenerations(runId, tag);
  },
  fillMask: ({ runId, text, k }) => onHost(runId, (wr) =>
    JSON.parse(wr.fillMask(checkString('text', text), checkInt('k', k ?? 5, { min: 1, max: U32_MAX })))),
  decode: ({ runId, input, options }) => onHost(runId, (wr) =>
    JSON.parse(wr.decode(checkString('input', input), JSON.stringify(checkOptions('options', options))))),
  denoiseExample: ({ runId, seed }) => onHost(runId, (wr) =>
    JSON.parse(wr.denoiseExample(BigInt(checkInt('seed', seed))))),
  attention: ({ runId, text, target }) => onHost(runId, (wr) =>
    JSON.parse(wr.attention(checkString('text', text), checkString('target', target, { optional: true })))),
  evalAt: ({ runId, t, mlm }) => onHost(runId, (wr) => {
    const m = mlm === undefined ? undefined : checkOptions('mlm', mlm);
    const share = (k) => (m === undefined ? undefined : checkNumber(`mlm.${k}`, m[k]));
    return JSON.parse(wr.evalAt(checkInt('t', t, { max: U32_MAX }), share('mask'), share('random')));
  }),
  positionTerms: ({ runId }) => onHost(runId, (wr) => JSON.parse(wr.positionTerms())),
  shapes: ({ runId }) => onRun(runId, (wr) => JSON.parse(wr.shapes())),
  gpuStats: ({ runId }) => onRun(runId, (wr) => JSON.parse(wr.gpuStats())),
  trace: ({ runId }) => onHost(runId, (wr) => JSON.parse(wr.trace())),
  save: ({ runId }) => onHost(runId, (wr) => wr.save()),
  dispose({ runId }) {
    const r = runOf(runId);
    cancelGenerations(runId);
    if (r.trainId !== null) reply(r.trainId, { step: r.wr.stepCount, stopped: 'disposed' });
    r.training = false;
    runs.delete(runId);
    return exclusive(r, () => {
      r.wr.free();
      return true;
    });
  },
  panic: ({ runId, inPool }) => onRun(runId, (wr) => wr.panicForTest(Boolean(inPool))),
  // What the Worker sees when the core aborts without a panic (a failed allocation): a trap, and no message.
  trap: ({ runId }) => onRun(runId, () => {
    throw new WebAssembly.RuntimeError('unreachable');
  }),
  hang() {
    for (;;);
  },
  loseGpu: ({ runId }) => onRun(runId, (wr) => wr.loseGpuForTest()),
  attentionCost,
  recipeInfo: ({ kind }) => JSON.parse(wasm.recipeInfo(checkString('kind', kind))),
  async createRecipe({ recipeId, kind, options, bytes, backend = 'cpu' }) {
    checkString('kind', kind);
    checkString('options', options);
    checkBytes('bytes', bytes);
    const make = (gpu) => new wasm.WasmRecipe(kind, gpu ? JSON.stringify({ ...JSON.parse(options), backend: 'gpu' }) : options, bytes);
    const { gpu, choice } = await chooseRecipeBackend(kind, backend, make, JSON.parse(options));
    const c = { wr: make(gpu), running: false, runReq: null, until: null, stageMs: 0, queue: Promise.resolve() };
    recipes.set(recipeId, c);
    return { ...recipeState(c), choice };
  },
  recipeRun: ({ recipeId, stage }, id) => exclusive(recipeOf(recipeId), () => recipeRunNow(recipeId, stage, id)),
  recipePause({ recipeId }) {
    const c = recipeOf(recipeId);
    // A unit queued but not started does not start; the one under way (awaiting a GPU) ends first.
    const running = c.running;
    c.running = false;
    return exclusive(c, () => {
      if (running) return stopRecipe(c, 'paused');
      const { stage, step } = recipeState(c);
      return { stage, step };
    });
  },
  recipeEvaluate({ recipeId }) {
    const c = recipeOf(recipeId);
    return exclusive(c, async () => {
      const { event, steps, eval: _, ...e } = JSON.parse(await c.wr.evaluate());
      return e;
    });
  },
  recipeSamples: ({ recipeId }) => exclusive(recipeOf(recipeId), () => JSON.parse(recipeOf(recipeId).wr.samples())),
  recipeAttention({ recipeId, episode }) {
    const c = recipeOf(recipeId);
    // Types only (what crosses as a u32 must be one); the core refuses an episode past the evaluation's, naming it.
    checkInt('episode', episode, { max: U32_MAX });
    return exclusive(c, async () => JSON.parse(await c.wr.attention(episode)));
  },
  recipeSave({ recipeId, stage }) {
    const c = recipeOf(recipeId);
    return exclusive(c, () => c.wr.save(checkString('stage', stage, { optional: true })));
  },
  recipeDispose({ recipeId }) {
    const c = recipeOf(recipeId);
    return exclusive(c, () => {
      if (c.runReq !== null) {
        const { stage, step } = recipeState(c);
        reply(c.runReq, { stopped: 'disposed', stage, step });
      }
      recipes.delete(recipeId);
      c.wr.free();
      return true;
    });
  },
  attentionFlops: ({ config }) => JSON.parse(wasm.attentionFlops(checkString('config', config))),
  benchMatmul({ m, n, k, reps }) {
    wasm.benchMatmul(m, n, k, 1); // warm up
    const t0 = performance.now();
    wasm.benchMatmul(m, n, k, reps);
    return (performance.now() - t0) / reps;
  },
};

self.onmessage = async ({ data }) => {
  const { id, op } = data;
  // The page's watchdog: an event loop that is free answers at once (a stuck one never does).
  if (op === 'ping') return postMessage({ event: 'pong' });
  if (crashed) return postMessage(errorReply(id, new EngineError('the engine aborted and is restarting')));
  const handler = handlers[op];
  try {
    if (!handler) throw new EngineError(`unknown request '${op}'`, { kind: 'invalid' });
    if (op !== 'init' && !wasm) throw new EngineError('the engine is not initialised');
    const result = await handler(data, id);
    if ((op === 'train' || op === 'recipeRun') && result === undefined) return;
    const transfer = result instanceof Uint8Array ? [result.buffer] : [];
    reply(id, result, transfer);
  } catch (e) {
    if (isAbort(e)) crash(data.runId, e);
    postMessage(errorReply(id, isAbort(e) ? new EngineError(`the engine aborted: ${lastPanic || e.message}`) : e));
  }
};
