//! The browser facade: a thin `#[wasm_bindgen]` layer over `train::Run`, `generate`, `probe` and `checkpoint`.
//!
//! Everything crossing into JS is a string of JSON, a number or a byte array, so the JS side (pkg/worker.js)
//! owns the object shapes and the facade stays small. Every user-caused failure is a core `Error`, thrown as a
//! JS `Error` carrying its message and its kind (see `JsError`); nothing here panics on bad input. A panic (a bug)
//! aborts the instance: the worker reports it for the run that hit it and the engine restarts itself (see
//! pkg/index.js).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

use crate::backend::cpu::Cpu;
use crate::checkpoint;
use crate::data::{self, Split};
use crate::generate;
use crate::probe;
use crate::train::Run;
use crate::{facade, Config, Error};

#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// What every export throws: a JS `Error` with the core error's message and `kind` (`Error::kind`); a config error
/// also carries `field`, `value` and `rule`, a data error its `reason` and numbers (`DataIssue`). It takes the name
/// of wasm-bindgen's `JsError`, which can carry only a message.
pub struct JsError(JsValue);

impl From<JsError> for JsValue {
    fn from(e: JsError) -> JsValue {
        e.0
    }
}

fn js(e: Error) -> JsError {
    let mut props = match &e {
        Error::Config { field, value, rule } => serde_json::json!({ "field": field, "value": value, "rule": rule }),
        Error::Data(issue) => serde_json::to_value(issue).expect("plain data serialises"),
        _ => serde_json::json!({}),
    };
    props["kind"] = e.kind().into();
    let err = js_sys::Error::new(&e.to_string());
    let props = js_sys::JSON::parse(&props.to_string()).expect("serde_json writes JSON");
    js_sys::Object::assign(&err, props.unchecked_ref());
    JsError(err.into())
}

fn to_json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).expect("plain data serialises")
}

/// Non-finite floats become `null` in JSON (serde_json writes them as null too; this keeps it explicit).
fn num(x: f32) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

// A panic on the engine Worker's own thread goes to the handler worker.js installs (`__tpOnPanic`); a panic on a
// thread of the pool (threaded build) cannot reach that Worker, which is blocked waiting for the pool, so it is
// broadcast to the page (pkg/index.js listens, tagged with its instance id, and restarts the engine).
#[wasm_bindgen(inline_js = "export function report_panic(id, m) {
  const f = globalThis.__tpOnPanic;
  if (typeof f === 'function') return f(m);
  try {
    const c = new BroadcastChannel('transformer-playground-panic');
    c.postMessage({ id, message: m });
    c.close();
  } catch (e) {}
}")]
extern "C" {
    /// Hands a panic's message to the worker (pkg/worker.js) or the page before the instance aborts.
    fn report_panic(instance: u32, message: &str);
}

/// This instance's id, given by the engine (pkg/index.js): it tags panics broadcast from pool threads.
static INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[wasm_bindgen(js_name = setInstanceId)]
pub fn set_instance_id(id: u32) {
    INSTANCE.store(id, std::sync::atomic::Ordering::Relaxed);
}

#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        report_panic(INSTANCE.load(std::sync::atomic::Ordering::Relaxed), &info.to_string());
        console_error_panic_hook::hook(info);
    }));
}

/// What this build is: `{"threads": bool, "simd128": bool, "relaxed_simd": bool, "version": "…"}`.
#[wasm_bindgen(js_name = buildInfo)]
pub fn build_info() -> String {
    serde_json::json!({
        "threads": cfg!(feature = "threads"),
        "simd128": cfg!(target_feature = "simd128"),
        "relaxed_simd": cfg!(target_feature = "relaxed-simd"),
        "gpu": cfg!(feature = "gpu"),
        "version": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

/// Runs `f` on a thread of rayon's pool (threaded build) and waits for it. Ops that start on a pool thread
/// hand work to the other threads directly; started from outside the pool, every op would inject its work and
/// wake the pool afresh (the same reason the CLI runs inside its pool). JS callbacks must not run inside.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "threads")]
    {
        rayon::scope(|_| f())
    }
    #[cfg(not(feature = "threads"))]
    {
        f()
    }
}

/// Threads in rayon's pool (1 in the single build).
#[wasm_bindgen(js_name = numThreads)]
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Parses and validates a config; returns it in full (defaults filled in) as JSON, or the core's error.
#[wasm_bindgen(js_name = validateConfig)]
pub fn validate_config(config: &str) -> Result<String, JsError> {
    facade::validate_config(config).map_err(js)
}

/// The shape-flow table, parameter count, FLOPs and memory for a config, with `vocab` tokens (the live
/// numbers of the configuration panel). Validates first, the model's size with this vocabulary included.
/// Sets the memory budget of the runs made from now on, in GiB (0 restores the default of 2 GiB); refused outside
/// (0, 3.5] with the range in the message (error kind "invalid").
#[wasm_bindgen(js_name = setMemoryBudget)]
pub fn set_memory_budget(gib: f64) -> Result<(), JsError> {
    crate::train::set_memory_budget_gib((gib != 0.0).then_some(gib)).map_err(|rule| js(Error::Invalid(format!("memory budget {gib}: {rule}"))))
}

/// The memory budget runs are checked against now, in GiB.
#[wasm_bindgen(js_name = memoryBudget)]
pub fn memory_budget_gib() -> f64 {
    crate::train::memory_budget() / (1u64 << 30) as f64
}

/// The memory is checked for a run made for `backend` ("cpu", the default, or "webgpu"; see `WasmRun::new`).
#[wasm_bindgen(js_name = shapeFlow)]
pub fn shape_flow(config: &str, vocab: usize, backend: Option<String>) -> Result<String, JsError> {
    let backend = facade::backend_for(backend.as_deref()).map_err(js)?;
    facade::shape_flow_for(config, vocab, backend).map_err(js)
}

/// The special tokens a run of this config has, in vocabulary order after the characters: the architecture's,
/// then the denoising task's ([MASK], or the sentinels [S0]..): `["[BOS]", "[S0]", …]` (the page adds them to a
/// corpus's characters for the vocabulary size).
#[wasm_bindgen(js_name = specialTokens)]
pub fn special_tokens(config: &str) -> Result<String, JsError> {
    let cfg = Config::from_json(config).map_err(js)?;
    Ok(to_json(&crate::data::Tokenizer::specials_for_config(&cfg)))
}

/// Checks a user's text before it becomes a corpus, as making a run would: `{"bytes", "chars", "distinct"}`, or the
/// core's `data` error (empty, not UTF-8, binary, too large, too many distinct characters).
#[wasm_bindgen(js_name = checkText)]
pub fn check_text(bytes: &[u8]) -> Result<String, JsError> {
    facade::check_text(bytes).map_err(js)
}

/// The limits the core enforces, for a page to draw its controls with instead of copying them:
/// `{"fields": {"model.d_model": {"minimum": 1, "maximum": 8192}, …}, "text": {"max_bytes", "max_chars"},
/// "max_params", "generation": {"max_n", "max_block_size", "default_block_size"}}` (fields as `config::bounds`,
/// named as the core's errors name them; generation: what `startGeneration` takes).
#[wasm_bindgen]
pub fn limits() -> String {
    let fields: serde_json::Map<String, serde_json::Value> =
        crate::config::bounds().into_iter().map(|(f, b)| (f.to_string(), serde_json::json!(b))).collect();
    serde_json::json!({
        "fields": fields,
        "text": { "max_bytes": data::MAX_TEXT_BYTES, "max_chars": data::MAX_CHARS },
        "max_params": crate::model::layout::MAX_PARAMS,
        "generation": {
            "max_n": generate::MAX_N,
            "max_block_size": crate::model::paged::MAX_BLOCK_SIZE,
            "default_block_size": crate::model::paged::DEFAULT_BLOCK_SIZE,
        },
    })
    .to_string()
}

/// One training run living in this instance. Shared with the futures of its async methods (the WebGPU path),
/// which the engine Worker never runs two at a time for one run (pkg/worker.js queues each run's requests).
#[wasm_bindgen]
pub struct WasmRun {
    run: Rc<RefCell<Run>>,
    /// The error that stopped `stepsAsync` after some steps were taken, thrown by its next call.
    deferred: RefCell<Option<JsError>>,
}

impl WasmRun {
    fn wrap(run: Run) -> WasmRun {
        WasmRun { run: Rc::new(RefCell::new(run)), deferred: RefCell::new(None) }
    }
}

// The async methods hold the run's RefCell across awaits: the Worker runs one request per run at a time.
#[allow(clippy::await_holding_refcell_ref)]
#[wasm_bindgen]
impl WasmRun {
    /// A fresh run: config JSON and, for gpt and bert, the corpus (the encoder-decoder trains on its task); made
    /// for `backend` "cpu" (the default) or "webgpu" (`facade::new_run_for`: then `attachGpu`).
    #[wasm_bindgen(constructor)]
    pub fn new(config: &str, corpus: Option<String>, backend: Option<String>) -> Result<WasmRun, JsError> {
        let backend = facade::backend_for(backend.as_deref()).map_err(js)?;
        facade::new_run_for(config, corpus.as_deref(), backend).map(WasmRun::wrap).map_err(js)
    }

    /// A run continued from a checkpoint (model, optimizer state, step). Text models need their corpus again
    /// to keep training; its characters must be in the checkpoint's vocabulary.
    #[wasm_bindgen(js_name = fromCheckpoint)]
    pub fn from_checkpoint(bytes: &[u8], corpus: Option<String>, backend: Option<String>) -> Result<WasmRun, JsError> {
        let backend = facade::backend_for(backend.as_deref()).map_err(js)?;
        facade::run_from_checkpoint_for(bytes, corpus.as_deref(), backend).map(WasmRun::wrap).map_err(js)
    }

    /// The run's full config as JSON.
    pub fn config(&self) -> String {
        self.run.borrow().cfg.to_json()
    }

    /// Steps taken so far.
    #[wasm_bindgen(getter, js_name = stepCount)]
    pub fn step_count(&self) -> usize {
        self.run.borrow().step
    }

    #[wasm_bindgen(getter, js_name = tokensPerStep)]
    pub fn tokens_per_step(&self) -> usize {
        self.run.borrow().tokens_per_step()
    }

    #[wasm_bindgen(getter, js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.run.borrow().data.tokenizer().vocab_size()
    }

    #[wasm_bindgen(getter, js_name = paramCount)]
    pub fn param_count(&self) -> usize {
        self.run.borrow().model.params.len()
    }

    /// One training step: `{"step", "loss", "lr", "grad_norm", "layer_grad_norms": [[name, norm], …]}`.
    /// A non-finite loss or gradient is refused with an error and leaves the run at its last good state.
    pub fn step(&mut self) -> Result<String, JsError> {
        let mut run = self.run.borrow_mut();
        let run = &mut *run;
        let r = on_pool(|| run.step()).map_err(js)?;
        Ok(to_json(&r))
    }

    /// Mean loss over `eval_iters` batches of the train and val splits: `{"train", "val"}` (null when not finite:
    /// the model has diverged).
    pub fn eval(&self) -> Result<String, JsError> {
        let run = self.run.borrow();
        let run = &*run;
        let (train, val) = on_pool(|| (run.eval(Split::Train), run.eval(Split::Val)));
        Ok(serde_json::json!({ "train": num(train.map_err(js)?), "val": num(val.map_err(js)?) }).to_string())
    }

    /// The validation loss on `eval_iters` batches of `t` tokens, which may be past ctx_len: `{"t", "val"}` (val
    /// null when not finite). Learned positions are refused past ctx_len (no table row there), a task's fixed
    /// lengths always. Runs on the host copy (a gpu run: syncAsync first); at t = ctx_len it is `eval`'s val on the CPU.
    /// With `mlm_mask` and `mlm_random` (bert only; both or neither): the chosen positions shown by that rule
    /// instead of the config's — 0 and 0: no [MASK] in the input (`facade::eval_at`).
    #[wasm_bindgen(js_name = evalAt)]
    pub fn eval_at(&self, t: usize, mlm_mask: Option<f64>, mlm_random: Option<f64>) -> Result<String, JsError> {
        let run = self.run.borrow();
        let run = &*run;
        let mlm = match (mlm_mask, mlm_random) {
            (Some(mask), Some(random)) => Some(crate::data::Mlm { mask, random }),
            (None, None) => None,
            _ => return Err(js(Error::Invalid("evalAt: give mlm.mask and mlm.random together".into()))),
        };
        on_pool(|| facade::eval_at(run, t, mlm)).map_err(js)
    }

    /// The position–position term of the first layer's attention scores, before (p_tᵀ p_s) and after each head's
    /// projections, with how relative each is (`position_terms::PositionTerms` as JSON). Learned and sinusoidal
    /// positions only (the others are refused naming model.position); from the host copy (a gpu run: syncAsync first).
    #[wasm_bindgen(js_name = positionTerms)]
    pub fn position_terms(&self) -> Result<String, JsError> {
        facade::position_terms(&self.run.borrow()).map_err(js)
    }

    /// GPT: continues `prompt`. `options` is SampleOptions JSON (`max_tokens`, `temperature`, `top_k`, `top_p`,
    /// `seed`). `on_text`, when given, is called with each new piece of text as it is sampled.
    pub fn generate(&self, prompt: &str, options: &str, on_text: Option<js_sys::Function>) -> Result<String, JsError> {
        let o = facade::sample_options(options).map_err(js)?;
        let run = self.run.borrow();
        let tok = run.data.tokenizer();
        let be = &Cpu; // a gpu run's host work runs on the cpu, from its synced copy
        let on_text = |piece: &str| {
            if let Some(f) = &on_text {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(piece));
            }
        };
        generate::generate_with(&run.model, be, tok, prompt, &o, on_text, &|feed| on_pool(feed)).map_err(js)
    }

    /// N continuations of `prompt` (gpt) or N decodings of it (encoder-decoder) over the paged KV cache, from a
    /// copy of the weights now (a gpu run: sync first); `options` as for generate. Step the returned generation
    /// one token at a time (`WasmGeneration.step`); training may run between steps. Continuation i samples with
    /// seed + i.
    #[wasm_bindgen(js_name = startGeneration)]
    pub fn start_generation(&self, prompt: &str, options: &str, n: usize, block_size: usize) -> Result<WasmGeneration, JsError> {
        let run = self.run.borrow();
        let run = &*run;
        let heads = (run.cfg.model.n_heads, run.cfg.model.n_kv_heads);
        let c = on_pool(|| facade::start_generation(run, prompt, options, n, block_size)).map_err(js)?;
        Ok(WasmGeneration { c, heads })
    }

    /// BERT: the top-`k` fillers for every [MASK] in `text`: `[{"position", "candidates": [[token, p], …]}, …]`.
    #[wasm_bindgen(js_name = fillMask)]
    pub fn fill_mask(&self, text: &str, k: usize) -> Result<String, JsError> {
        facade::fill_mask(&self.run.borrow(), text, k).map_err(js)
    }

    /// Encoder-decoder: the output for `input`: `{"output", "answer"}` (answer: the task's right output, when
    /// the input is valid for it). `options` as for generate; max_tokens 0 means the task's output length.
    pub fn decode(&self, input: &str, options: &str) -> Result<String, JsError> {
        facade::decode(&self.run.borrow(), input, options).map_err(js)
    }

    /// Denoising runs (span_corruption, text_infilling): a corrupted example drawn from the val split with `seed`,
    /// and the model's greedy reconstruction of it: `generate::Reconstruction` as JSON (`task`, `source`,
    /// `source_special`, `truth`, `target`, `target_special`, `output`, `output_special`, `reconstruction`,
    /// `recon_tokens`, `recon_filled`, `recon_miss`, `spans`, `char_accuracy`); null for other
    /// tasks.
    #[wasm_bindgen(js_name = denoiseExample)]
    pub fn denoise_example(&self, seed: u64) -> Result<String, JsError> {
        let run = self.run.borrow();
        let run = &*run;
        let mut rng = crate::rng::Rng::new(seed);
        let r = on_pool(|| generate::reconstruct(&run.model, &Cpu, &run.data, Split::Val, &mut rng)).map_err(js)?;
        Ok(to_json(&r))
    }

    /// Attention maps (probabilities per layer and head) for `text` (and, for the encoder-decoder, the decoder
    /// `target`): see `probe::AttentionMaps`.
    pub fn attention(&self, text: &str, target: Option<String>) -> Result<String, JsError> {
        facade::attention(&self.run.borrow(), text, target.as_deref()).map_err(js)
    }

    /// One training step in slow motion: the trace of the step this run would take next (`trace::StepTrace` as
    /// JSON: every forward stage, the loss, each parameter's gradient, AdamW's update, each with a summary and a
    /// small heatmap). The run is not advanced; a gpu run is traced from its host copy (syncAsync first).
    pub fn trace(&self) -> Result<String, JsError> {
        let run = self.run.borrow();
        let run = &*run;
        on_pool(|| facade::trace(run)).map_err(js)
    }

    /// The shape-flow table for this run's config and batch.
    pub fn shapes(&self) -> String {
        let run = self.run.borrow();
        let c = &run.cfg;
        to_json(&probe::shape_flow(&c.model, run.data.tokenizer().vocab_size(), c.train.batch_size, c.model.ctx_len))
    }

    /// What trains this run now: "cpu" or "gpu (<adapter>)" (a gpu run falls back to the cpu if its device is lost).
    #[wasm_bindgen(getter, js_name = backendName)]
    pub fn backend_name(&self) -> String {
        self.run.borrow().backend_name()
    }

    /// Whether steps run on WebGPU (then use stepAsync / evalAsync, and syncAsync before save, generate, probes).
    #[wasm_bindgen(getter, js_name = onGpu)]
    pub fn on_gpu(&self) -> bool {
        self.run.borrow().on_gpu()
    }

    /// Moves the run onto WebGPU (this thread's device): compiles its kernels and uploads the parameters and
    /// optimizer state. Resolves to the adapter's name; rejects with the reason when there is no usable GPU.
    #[cfg(feature = "gpu")]
    #[wasm_bindgen(js_name = attachGpu)]
    pub async fn attach_gpu(&self) -> Result<String, JsError> {
        let run = self.run.clone();
        let gpu = crate::backend::gpu::Gpu::new().await.map_err(js)?;
        let kernels = crate::train::gpu::GpuTrainer::attention_kernels(&run.borrow().model);
        gpu.prepare(&kernels).await.map_err(js)?;
        run.borrow_mut().attach_gpu(gpu).map_err(js)?;
        let name = run.borrow().backend_name();
        Ok(name)
    }

    /// `step` for a run on WebGPU (awaits the device's scalars); JSON as `step`, with `notice` when the device was
    /// lost and the run continued on the cpu.
    #[wasm_bindgen(js_name = stepAsync)]
    pub async fn step_async(&self) -> Result<String, JsError> {
        let run = self.run.clone();
        let mut r = run.borrow_mut();
        let rep = r.step_async().await.map_err(js)?;
        Ok(to_json(&rep))
    }

    /// Up to `n` steps of a run on WebGPU, pipelined (`Run::steps_async`: each step is submitted before the one
    /// before it is read back, so the device never waits for the page): a JSON array of their reports, each as
    /// `step`'s. An error after some steps were taken (a divergence: the last good state is kept) is thrown by the
    /// next call, so the steps before it are reported first.
    #[wasm_bindgen(js_name = stepsAsync)]
    pub async fn steps_async(&self, n: usize) -> Result<String, JsError> {
        if let Some(e) = self.deferred.borrow_mut().take() {
            return Err(e);
        }
        let run = self.run.clone();
        let mut r = run.borrow_mut();
        let mut reports = vec![];
        let result = r.steps_async(n, |rep| reports.push(rep)).await;
        match result {
            Err(e) if reports.is_empty() => Err(js(e)),
            Err(e) => {
                *self.deferred.borrow_mut() = Some(js(e));
                Ok(to_json(&reports))
            }
            Ok(()) => Ok(to_json(&reports)),
        }
    }

    /// What issuing the last WebGPU step cost: `{issue_ms, dispatches_per_step, bind_groups_per_step,
    /// param_writes_per_step, overlapped_steps}` (`train::gpu::IssueStats`) as JSON, or `null` on the cpu.
    #[wasm_bindgen(js_name = gpuStats)]
    pub fn gpu_stats(&self) -> String {
        #[cfg(feature = "gpu")]
        return to_json(&self.run.borrow().gpu_issue());
        #[cfg(not(feature = "gpu"))]
        "null".into()
    }

    /// `eval` for a run on WebGPU; a device that fails is an error.
    #[wasm_bindgen(js_name = evalAsync)]
    pub async fn eval_async(&self) -> Result<String, JsError> {
        let run = self.run.clone();
        let r = run.borrow();
        let (train, val) = (r.eval_async(Split::Train).await.map_err(js)?, r.eval_async(Split::Val).await.map_err(js)?);
        Ok(serde_json::json!({ "train": num(train), "val": num(val) }).to_string())
    }

    /// Brings the host copy of a WebGPU run (parameters, optimizer state) up to date: call before save,
    /// generate, fill-mask, decode and attention, which run on the cpu from that copy.
    #[wasm_bindgen(js_name = syncAsync)]
    pub async fn sync_async(&self) -> Result<(), JsError> {
        let run = self.run.clone();
        let mut r = run.borrow_mut();
        r.sync_async().await.map_err(js)
    }

    /// For the engine's device-loss test only: destroys this run's GPU device (as a lost device would be). The next
    /// step continues on the cpu from the last synced state, with a notice. Returns whether there was a device.
    #[wasm_bindgen(js_name = loseGpuForTest)]
    pub fn lose_gpu_for_test(&self) -> bool {
        #[cfg(feature = "gpu")]
        return self.run.borrow().with_gpu(|g| g.ctx.device.destroy()).is_some();
        #[cfg(not(feature = "gpu"))]
        false
    }

    /// A safetensors checkpoint: config, tokenizer, step, parameters and optimizer state.
    pub fn save(&self) -> Result<Vec<u8>, JsError> {
        let r = self.run.borrow();
        checkpoint::save(&r.cfg, r.data.tokenizer(), r.step, &r.model, Some(&r.opt)).map_err(js)
    }

    /// For the engine's crash-recovery test only: a Rust panic inside this run.
    #[wasm_bindgen(js_name = panicForTest)]
    /// `in_pool`: panic on a thread of the pool (threaded build) rather than on the engine Worker's thread.
    pub fn panic_for_test(&self, in_pool: bool) {
        let step = self.run.borrow().step;
        let boom = move || -> () { panic!("panic requested by a test (run at step {step})") };
        if in_pool {
            on_pool(boom)
        } else {
            boom()
        }
    }
}

/// A recipe of issue 18 (finetune, zeroshot, icl, rlhf) stepped a unit at a time (`recipes::engine::Driver`): the
/// engine Worker takes its units in turns with training runs and generations, so pause is seen between units. A
/// recipe made with the gpu backend (zeroshot, icl) trains its pretraining stages on WebGPU: each stage's run is
/// made on the cpu and moved onto this Worker's GPU when the stage starts; its units, evaluations and saves await
/// the device, so `unit`, `evaluate` and `save` are asynchronous, and the Worker makes one call on a recipe at a
/// time.
#[wasm_bindgen]
pub struct WasmRecipe {
    d: Rc<RefCell<crate::recipes::engine::Driver>>,
    /// The stage whose run was moved onto the GPU (each stage's once: a run whose device is lost goes on on the
    /// cpu).
    attached: Rc<Cell<Option<usize>>>,
}

#[wasm_bindgen]
impl WasmRecipe {
    /// `kind`; `options`: JSON (`recipe`, `corpus`, `task`, `knobs`, `seed`, `backend`, and the lengths of the
    /// checkpoints packed in `bytes`: `checkpoint`, `from: {stage, checkpoints: [[name, length], …]}`; see
    /// `facade::new_recipe`).
    #[wasm_bindgen(constructor)]
    pub fn new(kind: &str, options: &str, bytes: &[u8]) -> Result<WasmRecipe, JsError> {
        let d = on_pool(|| facade::new_recipe(kind, options, bytes)).map_err(js)?;
        Ok(WasmRecipe { d: Rc::new(RefCell::new(d)), attached: Rc::new(Cell::new(None)) })
    }

    /// `{"kind", "stages": [{name, steps}], "knobs", "recipe", "stage", "step", "done", "backend"}`.
    pub fn state(&self) -> Result<String, JsError> {
        let d = self.d.try_borrow().map_err(|_| js(Error::Invalid("the recipe is busy with a unit of work".into())))?;
        Ok(facade::recipe_state(&d))
    }

    /// One unit of work: the events it produced, as a JSON array (`recipes::engine::Event`: `{"event": "progress" |
    /// "stage", "stage", "step", …, "metrics"}`); empty when every stage is done.
    pub async fn unit(&self) -> Result<String, JsError> {
        let (d, attached) = (self.d.clone(), self.attached.clone());
        let mut d = d.borrow_mut();
        #[cfg(feature = "gpu")]
        if d.backend() == crate::backend::BackendKind::Gpu {
            let at = d.at;
            let dr = &mut *d;
            if let Some(run) = on_pool(|| dr.pretraining_run()).map_err(js)? {
                if attached.get() != Some(at) {
                    attached.set(Some(at));
                    let gpu = crate::backend::gpu::Gpu::new().await.map_err(js)?;
                    gpu.prepare(&crate::train::gpu::GpuTrainer::attention_kernels(&run.model)).await.map_err(js)?;
                    run.attach_gpu(gpu).map_err(js)?;
                }
            }
            let ev = d.unit_async().await.map_err(js)?;
            return Ok(to_json(&ev));
        }
        let _ = &attached;
        let dr = &mut *d;
        let ev = on_pool(|| dr.unit()).map_err(js)?;
        Ok(to_json(&ev))
    }

    /// The held-out evaluation of the current stage's model now: a progress event with `eval` true, as JSON.
    pub async fn evaluate(&self) -> Result<String, JsError> {
        let d = self.d.clone();
        let d = d.borrow();
        if d.backend_name().is_some_and(|b| b.starts_with("gpu")) {
            return d.evaluate_async().await.map(|e| to_json(&e)).map_err(js);
        }
        let dr = &*d;
        on_pool(|| dr.evaluate()).map(|e| to_json(&e)).map_err(js)
    }

    /// Held-out samples `[{prompt, completion}]` of the current model, as JSON.
    pub fn samples(&self) -> Result<String, JsError> {
        let d = self.d.borrow();
        let dr = &*d;
        on_pool(|| dr.samples()).map(|s| to_json(&s)).map_err(js)
    }

    /// icl: the model's attention maps on held-out episode `episode` with where an induction head would look
    /// (`recipes::icl::EpisodeAttention` as JSON; a run on WebGPU read back first).
    pub async fn attention(&self, episode: u32) -> Result<String, JsError> {
        let d = self.d.clone();
        let mut d = d.borrow_mut();
        d.sync_async().await.map_err(js)?;
        let dr = &*d;
        on_pool(|| dr.attention(episode as usize)).map(|a| to_json(&a)).map_err(js)
    }

    /// A stage's model (None: the current stage's) as safetensors bytes (a run on WebGPU read back first).
    pub async fn save(&self, stage: Option<String>) -> Result<Vec<u8>, JsError> {
        let d = self.d.clone();
        let mut d = d.borrow_mut();
        d.sync_async().await.map_err(js)?;
        d.save(stage.as_deref()).map_err(js)
    }
}

/// A recipe kind's stages, knobs (with their defaults) and shipped recipe file, as JSON.
#[wasm_bindgen(js_name = recipeInfo)]
pub fn recipe_info(kind: &str) -> Result<String, JsError> {
    facade::recipe_info(kind).map_err(js)
}

/// N continuations being generated (`WasmRun.startGeneration`); free it (or drop it) to cancel: its blocks go.
#[wasm_bindgen]
pub struct WasmGeneration {
    c: generate::Continuations<'static>,
    heads: (usize, usize),
}

#[wasm_bindgen]
impl WasmGeneration {
    /// One token for each continuation still going, decoded together: `[[index, piece], …]`.
    pub fn step(&mut self) -> Result<String, JsError> {
        let c = &mut self.c;
        // A step of one row (one continuation, no restart) is serial work: run it here, as `generate_with` runs
        // its one-token steps; more rows are worth the pool's threads.
        let pieces = if c.next_rows() > 1 { on_pool(|| c.step(&Cpu)) } else { c.step(&Cpu) }.map_err(js)?;
        Ok(to_json(&pieces))
    }

    /// Every continuation has its tokens.
    pub fn done(&self) -> bool {
        self.c.done()
    }

    /// Continuations.
    pub fn n(&self) -> usize {
        self.c.n()
    }

    /// The texts so far, as a JSON array.
    pub fn texts(&self) -> String {
        to_json(&self.c.texts())
    }

    /// The KV cache: `{"now", "peak", "table", "done", "bytes_per_position_mha"}` (see `facade::generation_view`).
    pub fn kv(&self) -> String {
        facade::generation_view(self.heads, &self.c)
    }
}

/// Forward FLOPs per token of the config's attention and FFN as the context grows (T = 16, 32, …, 65536):
/// `{"rows": [{"t", "attention", "ffn"}, …], "crossover_t", "ctx_len"}` (`attention_cost::attention_vs_ffn`);
/// crossover_t: the shortest T at which attention's pass the FFN's.
#[wasm_bindgen(js_name = attentionFlops)]
pub fn attention_flops(config: &str) -> Result<String, JsError> {
    facade::attention_flops(config).map_err(js)
}

#[wasm_bindgen]
extern "C" {
    /// `performance.now()` of the calling thread (the engine Worker, or a thread of the pool): ms.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// The attention-cost sweep (`attention_cost`) for the page's panel, one T per call so that the page can show
/// progress: on the CPU backend (`row`: WASM threads on the pool, or the single thread), or on WebGPU (`attachGpu`,
/// then `rowAsync`) with a device of its own. A row is `attention_cost::CostRow` as JSON.
#[wasm_bindgen]
pub struct AttentionCost {
    spec: crate::attention_cost::CostSpec,
    #[cfg(feature = "gpu")]
    gpu: Rc<RefCell<Option<Rc<crate::backend::gpu::Gpu>>>>,
}

#[wasm_bindgen]
impl AttentionCost {
    /// `spec`: `attention_cost::CostSpec` as JSON (`batch`, `heads`, `kv_heads`, `head_size`, `causal`,
    /// `budget_mib`, each optional); a bad value is an "invalid" error naming it.
    #[wasm_bindgen(constructor)]
    pub fn new(spec: &str) -> Result<AttentionCost, JsError> {
        let spec = facade::attention_cost_spec(spec).map_err(js)?;
        Ok(AttentionCost {
            spec,
            #[cfg(feature = "gpu")]
            gpu: Rc::new(RefCell::new(None)),
        })
    }

    /// Refuses a T the sweep cannot run (0, over the limit, tensors too large) without running anything.
    #[wasm_bindgen(js_name = checkT)]
    pub fn check_t(&self, t: usize) -> Result<(), JsError> {
        self.spec.shape(t).map(|_| ()).map_err(js)
    }

    /// One row on the CPU backend.
    pub fn row(&self, t: usize) -> Result<String, JsError> {
        let spec = &self.spec;
        let row = on_pool(|| crate::attention_cost::cpu_row(spec, t, &performance_now)).map_err(js)?;
        Ok(to_json(&row))
    }

    /// Opens a WebGPU device for `rowAsync` and compiles the attention kernels for the spec's head size. Resolves to
    /// the adapter's name; rejects with the reason when there is no usable GPU.
    #[cfg(feature = "gpu")]
    #[wasm_bindgen(js_name = attachGpu)]
    pub async fn attach_gpu(&self) -> Result<String, JsError> {
        let gpu = crate::backend::gpu::Gpu::new().await.map_err(js)?;
        gpu.prepare_attention(self.spec.head_size).await.map_err(js)?;
        let name = gpu.adapter_name();
        *self.gpu.borrow_mut() = Some(Rc::new(gpu));
        Ok(name)
    }

    /// One row on WebGPU (after `attachGpu`).
    #[cfg(feature = "gpu")]
    #[wasm_bindgen(js_name = rowAsync)]
    pub async fn row_async(&self, t: usize) -> Result<String, JsError> {
        let gpu = self.gpu.borrow().clone().ok_or_else(|| js(Error::Gpu("attention cost: attachGpu first".into())))?;
        let row = crate::attention_cost::gpu_row(&gpu, &self.spec, t, &performance_now).await.map_err(js)?;
        Ok(to_json(&row))
    }
}

/// For benchmarks: runs `reps` matmul forwards out (m×n) = x (m×k) · w (n×k)ᵀ on the CPU backend (the caller
/// times it). Returns a checksum so the work cannot be skipped.
#[wasm_bindgen(js_name = benchMatmul)]
pub fn bench_matmul(m: usize, n: usize, k: usize, reps: usize) -> f32 {
    use crate::backend::{cpu::Cpu, Backend};
    let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut out = vec![0.0f32; m * n];
    for _ in 0..reps {
        let _ = Cpu.matmul_forward(&mut out, &x, &w, None, m, k, n); // the host backend never fails
    }
    out.iter().sum()
}
