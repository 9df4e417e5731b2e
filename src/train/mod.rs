//! Training: a `Run` owns a model, its optimizer state and its data, takes steps (`step`: the one training step
//! of every backend — schedule, clipping, guarded AdamW) and refuses to take a step that diverges.
//!
//! A run on the gpu backend (feature `gpu`) trains through `gpu::GpuTrainer`: the parameters, gradients, AdamW
//! moments and activations stay on the device, each step is one submission of the same step code, and only
//! scalars come back. `model` and `opt` are then the HOST COPY as of the last `sync` (every `sync_every` steps,
//! and whenever asked: before saving a checkpoint or generating, call `sync`). If the device fails (lost, out of
//! memory, …) the run continues on the CPU from that copy, with a notice in the next report: only the steps since
//! the last sync are lost.

#[cfg(feature = "gpu")]
pub mod gpu;
pub mod step;

pub use step::{adamw_at, eval_mean, finish_step, group_grad_norms, lr_at, record_step, record_update, StepBuffers, StepReport};

use crate::backend::{BackendKind, Host};
use crate::config::Config;
use crate::data::{Dataset, Mlm, Split};
use crate::error::{Error, Result};
use crate::model::{Batch, Model};
use crate::rng::Rng;

/// Adam moments, laid out like the parameters.
#[derive(Clone, Debug)]
pub struct OptState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Steps taken so far.
    pub t: u32,
}

impl OptState {
    pub fn new(n: usize) -> OptState {
        OptState { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }
}

/// The budget set by `set_memory_budget_gib` (f64 bits; 0: none).
static BUDGET_GIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The largest budget that can be set: in the browser 3.5 GiB of the wasm32 instance's 4 (the rest holds the
/// allocator's own, the corpus and the code); natively 1 TiB.
pub const MAX_MEMORY_BUDGET_GIB: f64 = if cfg!(target_arch = "wasm32") { 3.5 } else { 1024.0 };

/// Sets the memory budget of the runs made from now on (the CLI's `--memory-budget`, the page's setting), in GiB;
/// None restores the default. A value outside (0, `MAX_MEMORY_BUDGET_GIB`] is refused with the range.
pub fn set_memory_budget_gib(gib: Option<f64>) -> std::result::Result<(), String> {
    let g = gib.unwrap_or(0.0);
    if gib.is_some() && !(g.is_finite() && g > 0.0 && g <= MAX_MEMORY_BUDGET_GIB) {
        return Err(format!("the memory budget must be a number of GiB in (0, {MAX_MEMORY_BUDGET_GIB}]"));
    }
    BUDGET_GIB.store(g.to_bits(), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The bytes a run may plan one training step to hold (`Layout::check_memory`). In the browser 2 GiB: a wasm32
/// instance addresses at most 4 GiB, and the allocator, the corpus, the page's copies and the step's temporaries
/// share them. Natively `TP_MEMORY_BUDGET_GIB` when set, else half of the machine's memory (`/proc/meminfo`), else
/// 8 GiB. A budget set by `set_memory_budget_gib` overrides both.
pub fn memory_budget() -> f64 {
    const GIB: f64 = (1u64 << 30) as f64;
    let set = f64::from_bits(BUDGET_GIB.load(std::sync::atomic::Ordering::Relaxed));
    if set > 0.0 {
        return set * GIB;
    }
    if cfg!(target_arch = "wasm32") {
        return 2.0 * GIB;
    }
    if let Some(g) = std::env::var("TP_MEMORY_BUDGET_GIB").ok().and_then(|v| v.trim().parse::<f64>().ok()).filter(|g| *g > 0.0) {
        return g * GIB;
    }
    let total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    });
    total_kib.map_or(8.0 * GIB, |kib| kib * 1024.0 / 2.0)
}

/// One training step on a host backend: forward, backward, clip, AdamW on one batch (`step::record_step`).
/// Refuses (and leaves the model and the optimizer state untouched) when the loss or the gradient norm is not
/// finite.
pub fn train_step<H: Host>(
    be: &H,
    model: &mut Model,
    opt: &mut OptState,
    t: &crate::config::TrainConfig,
    batch: &Batch,
    step: usize,
    dropout: Option<&mut Rng>,
) -> Result<StepReport> {
    let lr = lr_at(t, step);
    let h = adamw_at(t, lr, opt.t + 1);
    let mut grads = crate::backend::on_host(be.zeros(model.params.len())); // zeroed once a step, here
    let mut scalars = vec![0.0; step::scalars_len(model)];
    // The step reads the layout from `model` and updates its parameters, lent for the step.
    let mut params = std::mem::take(&mut model.params);
    let bufs = StepBuffers { params: &mut params[..], grads: &mut grads[..], m: &mut opt.m[..], v: &mut opt.v[..], scalars: &mut scalars[..] };
    let rec = record_step(be, model, bufs, batch, dropout, &h, t.grad_clip);
    model.params = params;
    let rec = rec?;
    let report = finish_step::<H>(model, rec.loss, &rec.scalars, step, lr)?;
    opt.t += 1;
    Ok(report)
}

/// Mean loss over `iters` batches of a split (no dropout, no gradients); see `step::eval_mean`.
pub fn evaluate<H: Host>(be: &H, model: &Model, data: &Dataset, split: Split, iters: usize, b: usize, rng: &mut Rng) -> f32 {
    let losses: Vec<(f32, usize)> = (0..iters.max(1))
        .map(|_| {
            let batch = data.batch(split, b, model.cfg.ctx_len, rng);
            let f = model.forward(be, &batch, None);
            (f.loss, f.count)
        })
        .collect();
    eval_mean(&losses)
}

/// `evaluate` on batches of `seq` tokens instead of ctx_len, bert's chosen positions shown by `mlm` when given
/// (`Run::eval_at`, `Run::eval_with`; check `check_eval_length` first).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_at<H: Host>(
    be: &H,
    model: &Model,
    data: &Dataset,
    split: Split,
    iters: usize,
    b: usize,
    seq: usize,
    mlm: Option<Mlm>,
    rng: &mut Rng,
) -> f32 {
    let losses: Vec<(f32, usize)> = (0..iters.max(1))
        .map(|_| {
            let batch = data.batch_with(split, b, seq, mlm, rng);
            let f = model.forward(be, &batch, None);
            (f.loss, f.count)
        })
        .collect();
    eval_mean(&losses)
}

/// Whether a model of `cfg` can be evaluated on `split` in sequences of `seq` tokens. Every position scheme but
/// one is defined for any length: none; sinusoidal (the table is a formula of the position); RoPE (a rotation by
/// the position); ALiBi (a slope times the distance); T5-relative (distances past `max_distance` share the last
/// bucket); recurrent (the RNN runs on). Learned positions are a table of ctx_len rows (`wpe`): there is no row for
/// a position past it, so they are refused there. Only plain text (gpt, bert) has sequences of any length; a task
/// or denoising data set has its own fixed lengths.
pub fn check_eval_length(cfg: &Config, data: &Dataset, split: Split, seq: usize) -> Result<()> {
    let m = &cfg.model;
    let field = |rule: String| Error::Invalid(format!("evaluation at {seq} tokens: {rule}"));
    if seq == 0 {
        return Err(field("must be at least 1 token".into()));
    }
    let Dataset::Text { tok, train, val, .. } = data else {
        return Err(field(format!(
            "evaluation at another length reads plain text; data.task = {:?} has sequences of its own fixed lengths",
            cfg.data.task
        )));
    };
    if seq > m.ctx_len && m.position == crate::config::Position::Learned {
        return Err(Error::Config {
            field: "model.position".into(),
            value: "learned".into(),
            rule: format!(
                "learned positions are a table of ctx_len = {} rows (wpe), one per position it trained at: there is \
                 no row for positions {}..{}, so the model cannot be evaluated at {seq} tokens, past ctx_len (none, \
                 sinusoidal, rope, alibi, relative and recurrent positions are defined for any length)",
                m.ctx_len,
                m.ctx_len,
                seq - 1
            ),
        });
    }
    let d = if split == Split::Train { train } else { val };
    if seq + 1 > d.len() {
        return Err(field(format!("the {split:?} split has {} tokens, too few for sequences of {seq} and their targets", d.len())));
    }
    let need = crate::model::Layout::step_memory_bytes(m, tok.vocab_size(), cfg.train.batch_size, seq);
    if need > memory_budget() {
        return Err(field(format!(
            "{} sequences of {seq} tokens would hold about {:.2} GiB, over the memory budget of {:.2} GiB",
            cfg.train.batch_size,
            need / (1u64 << 30) as f64,
            memory_budget() / (1u64 << 30) as f64
        )));
    }
    Ok(())
}

/// A training run: config, model, optimizer state, data and its seeded streams. Same config and seed → the same
/// batches, dropout masks and losses, on every backend and thread count (up to each backend's rounding).
pub struct Run {
    pub cfg: Config,
    /// On a gpu run: the host copy as of the last `sync`.
    pub model: Model,
    /// On a gpu run: the host copy as of the last `sync`.
    pub opt: OptState,
    pub data: Dataset,
    /// Steps taken.
    pub step: usize,
    /// The backend training runs on (Cpu again after a GPU failure).
    pub backend: BackendKind,
    /// On a gpu run, read the device state back every this many steps (0: only when `sync` is called). What a
    /// lost device loses is the steps since the last read-back.
    pub sync_every: usize,
    batches: Rng,
    dropout: Rng,
    /// Said in the next step's report.
    notice: Option<String>,
    /// Whether a training step on the host fits the memory budget (`Layout::check_memory`): checked when the run is
    /// made for a host backend, and before the first host step of a run made for the gpu (a fallback, say), which
    /// is refused if it does not.
    host_checked: bool,
    #[cfg(feature = "gpu")]
    gpu: Option<crate::backend::gpu::ThreadBound<GpuRun>>,
}

/// The device side of a gpu run.
#[cfg(feature = "gpu")]
struct GpuRun {
    trainer: gpu::GpuTrainer,
    /// Step, batch stream and dropout stream of the host copy (`model`, `opt`), to continue from after a failure.
    synced: (usize, Rng, Rng),
}

/// Default `Run::sync_every`.
const SYNC_EVERY: usize = 100;

impl Run {
    /// Validates the config and the data, then initialises the model from the seed. With `BackendKind::Gpu`,
    /// opens the default GPU (natively; in the browser make the run on the cpu and `attach_gpu`): an error when
    /// the build has no gpu feature or there is no adapter.
    pub fn new(cfg: Config, text: Option<&str>, backend: BackendKind) -> Result<Run> {
        cfg.validate()?;
        let data = Dataset::new(&cfg, text)?;
        Run::with_data(cfg, data, backend)
    }

    /// `new` on a dataset built by the caller (a recipe's generated corpus, `crate::recipes`): validates the config,
    /// refuses a model over the size or memory limits, then initialises it from the seed.
    pub fn with_data(cfg: Config, data: Dataset, backend: BackendKind) -> Result<Run> {
        let mut run = Run::unattached(cfg, data, backend)?;
        if backend == BackendKind::Gpu {
            run.start_gpu()?;
        }
        Ok(run)
    }

    /// A run checked for `backend` and initialised, training on the cpu until `attach_gpu` (the browser's way to
    /// make a gpu run: the device is opened asynchronously). Checked against the memory it will hold here
    /// (`Layout::check_memory_on`): on the gpu, not the activations, which live on the device — so a config too
    /// large to train on the host is accepted for the gpu, and its host steps (before `attach_gpu`, or after the
    /// device fails) are refused naming the field.
    pub fn unattached(cfg: Config, data: Dataset, backend: BackendKind) -> Result<Run> {
        cfg.validate()?;
        let vocab = data.tokenizer().vocab_size();
        crate::model::Layout::check_size(&cfg.model, vocab)?;
        crate::model::Layout::check_memory_on(&cfg.model, vocab, cfg.train.batch_size, memory_budget(), backend)?;
        let model = Model::new(&cfg.model, vocab, cfg.seed);
        let mut run = Run::assemble(cfg, model, OptState::new(0), data, 0, BackendKind::Cpu);
        if backend != BackendKind::Gpu {
            run.backend = backend;
            run.host_checked = true;
        }
        Ok(run)
    }

    /// Refuses (naming the field) a run whose training step would not fit the memory budget on the host.
    pub fn check_host_step(&self) -> Result<()> {
        crate::model::Layout::check_memory(&self.cfg.model, self.data.tokenizer().vocab_size(), self.cfg.train.batch_size, memory_budget())
    }

    /// Continues from a saved state (checkpoint): model, optimizer state and step. A gpu run that cannot open its
    /// GPU continues on the CPU, with a notice in the first report.
    pub fn resume(cfg: Config, model: Model, opt: Option<OptState>, data: Dataset, step: usize, backend: BackendKind) -> Run {
        let mut run = Run::assemble(cfg, model, opt.unwrap_or(OptState::new(0)), data, step, backend);
        if backend == BackendKind::Gpu {
            if let Err(e) = run.start_gpu() {
                run.backend = BackendKind::Cpu;
                run.notice = Some(format!("{e}; training on the cpu"));
            }
        }
        run
    }

    fn assemble(cfg: Config, model: Model, mut opt: OptState, data: Dataset, step: usize, backend: BackendKind) -> Run {
        crate::backend::cpu::release_spare();
        if opt.m.len() != model.params.len() {
            opt = OptState::new(model.params.len());
        }
        let mut root = Rng::new(cfg.seed);
        let (mut batches, dropout) = (root.fork(1), root.fork(2));
        // Resuming at step k continues the batch stream of an uninterrupted run by replaying its first k draws
        // (batches do not depend on the model). Dropout masks start their stream afresh.
        for _ in 0..step {
            let _ = data.batch(Split::Train, cfg.train.batch_size, cfg.model.ctx_len, &mut batches);
        }
        Run {
            cfg,
            model,
            opt,
            data,
            step,
            backend,
            sync_every: SYNC_EVERY,
            batches,
            dropout,
            notice: None,
            host_checked: false,
            #[cfg(feature = "gpu")]
            gpu: None,
        }
    }

    /// Opens the default GPU (native) and moves the run onto it.
    #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
    fn start_gpu(&mut self) -> Result<()> {
        self.attach_gpu(crate::backend::gpu::Gpu::new_blocking()?)
    }

    #[cfg(all(feature = "gpu", target_arch = "wasm32"))]
    fn start_gpu(&mut self) -> Result<()> {
        Err(Error::Gpu("in the browser, make the run on the cpu, then attach_gpu(Gpu::new().await?)".into()))
    }

    #[cfg(not(feature = "gpu"))]
    fn start_gpu(&mut self) -> Result<()> {
        Err(Error::Gpu("this build has no gpu backend (build with --features gpu)".into()))
    }

    /// Moves the run onto `gpu`: uploads the parameters and optimizer state; from now on steps run there. In the
    /// browser, await `gpu.prepare(&GpuTrainer::attention_kernels(&run.model))` first.
    #[cfg(feature = "gpu")]
    pub fn attach_gpu(&mut self, gpu: crate::backend::gpu::Gpu) -> Result<()> {
        let trainer = gpu::GpuTrainer::new(gpu, &self.model, &self.opt.m, &self.opt.v, self.opt.t)?;
        let synced = (self.step, self.batches.clone(), self.dropout.clone());
        self.gpu = Some(crate::backend::gpu::ThreadBound::new(GpuRun { trainer, synced }));
        self.backend = BackendKind::Gpu;
        Ok(())
    }

    /// `f` of the GPU a gpu run trains on (None on the cpu, after a GPU failure, and — in the browser — off the
    /// run's thread or while another call is using it).
    #[cfg(feature = "gpu")]
    pub fn with_gpu<R>(&self, f: impl FnOnce(&crate::backend::gpu::Gpu) -> R) -> Option<R> {
        let shared = self.gpu.as_ref()?.get().ok()?;
        let g = crate::backend::gpu::lock(&shared).ok()?;
        Some(f(&g.trainer.gpu))
    }

    /// What issuing the last step cost on the GPU (None on the cpu): host milliseconds, dispatches and bind groups.
    #[cfg(feature = "gpu")]
    pub fn gpu_issue(&self) -> Option<gpu::IssueStats> {
        let shared = self.gpu.as_ref()?.get().ok()?;
        let g = crate::backend::gpu::lock(&shared).ok()?;
        Some(g.trainer.issue)
    }

    /// Whether training runs on a GPU now.
    pub fn on_gpu(&self) -> bool {
        #[cfg(feature = "gpu")]
        return self.gpu.is_some();
        #[cfg(not(feature = "gpu"))]
        false
    }

    /// What training runs on now: "cpu", "reference", or "gpu (<adapter>)".
    pub fn backend_name(&self) -> String {
        #[cfg(feature = "gpu")]
        if self.gpu.is_some() {
            return format!("gpu ({})", self.with_gpu(|g| g.adapter_name()).unwrap_or_else(|| "busy".into()));
        }
        match self.backend {
            BackendKind::Reference => "reference".into(),
            _ => "cpu".into(),
        }
    }

    /// The trace of the step this run would take next (`trace::trace_step`): its next batch, on the host copy of
    /// its state (a gpu run's as of its last sync), without dropout. The run is not advanced.
    pub fn trace(&self) -> Result<crate::trace::StepTrace> {
        self.check_host_step()?;
        let mut batches = self.batches.clone();
        let batch = self.data.batch(Split::Train, self.cfg.train.batch_size, self.cfg.model.ctx_len, &mut batches);
        let (cfg, model, opt, tok) = (&self.cfg, &self.model, &self.opt, self.data.tokenizer());
        crate::with_host!(self.backend, |be| crate::backend::cpu::with_pool_awake(|| crate::trace::trace_step(be, cfg, model, opt, tok, &batch, self.step)))
    }

    /// One training step. On divergence the model and optimizer are left as they were and an error is returned.
    /// A gpu run blocks on its device natively; in the browser await `step_async`.
    pub fn step(&mut self) -> Result<StepReport> {
        #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
        if self.gpu.is_some() {
            return pollster::block_on(self.gpu_step());
        }
        #[cfg(all(feature = "gpu", target_arch = "wasm32"))]
        if self.gpu.is_some() {
            return Err(Error::Gpu("a gpu run's step must be awaited: step_async".into()));
        }
        self.cpu_step()
    }

    /// `step`, awaiting the device's readback on a gpu run (the browser's way; the cpu step runs at once).
    pub async fn step_async(&mut self) -> Result<StepReport> {
        #[cfg(feature = "gpu")]
        if self.gpu.is_some() {
            return self.gpu_step().await;
        }
        self.cpu_step()
    }

    /// Up to `n` training steps, each report handed to `on_report` in order; stops at the first error and returns
    /// it (a divergence: the last good state is kept and the failed step is not counted, as with `step`).
    ///
    /// On a gpu run the steps are pipelined: step k + 1 is recorded and submitted BEFORE step k's scalars are
    /// awaited, so while the host reads step k back (and reports it) the device already has step k + 1 to run —
    /// the host never waits on an idle device. Every step's report still comes, one step late. If step k diverged,
    /// step k + 1 (already submitted) updates nothing either (its AdamW reads step k's guard on the device,
    /// `train::gpu`) and is dropped: its batch and dropout draws are given back, so the run is exactly where a
    /// `step` that diverged leaves it. Before a read-back of the state (`sync_every`) and at the end, the step in
    /// flight is finished first, so nothing is in flight between calls. On the cpu it is `step`, n times.
    pub async fn steps_async(&mut self, n: usize, mut on_report: impl FnMut(StepReport)) -> Result<()> {
        #[cfg(feature = "gpu")]
        if self.gpu.is_some() {
            return self.gpu_steps(n, &mut on_report).await;
        }
        for _ in 0..n {
            on_report(self.cpu_step()?);
        }
        Ok(())
    }

    /// `steps_async`, blocking (native; without the gpu feature there is nothing to wait for).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn steps(&mut self, n: usize, on_report: impl FnMut(StepReport)) -> Result<()> {
        #[cfg(feature = "gpu")]
        return pollster::block_on(self.steps_async(n, on_report));
        #[cfg(not(feature = "gpu"))]
        {
            let mut on_report = on_report;
            for _ in 0..n {
                on_report(self.cpu_step()?);
            }
            Ok(())
        }
    }

    #[allow(clippy::await_holding_lock)] // see gpu_step
    #[cfg(feature = "gpu")]
    async fn gpu_steps(&mut self, n: usize, on_report: &mut dyn FnMut(StepReport)) -> Result<()> {
        // The step in flight, with the batch and dropout streams as they were before it drew.
        let mut ahead: Option<(gpu::PendingStep, (Rng, Rng))> = None;
        let mut reported = 0;
        while reported < n {
            let shared = match &self.gpu {
                Some(slot) => slot.get()?,
                None => {
                    // The GPU failed: the rest on the cpu.
                    on_report(self.cpu_step()?);
                    reported += 1;
                    continue;
                }
            };
            let mut g = crate::backend::gpu::lock(&shared)?;
            // Submit the next step, unless all n are, or the state is read back after the one in flight (which
            // must not include the next).
            let sync_after = |done: usize| self.sync_every > 0 && done.is_multiple_of(self.sync_every);
            let mut next = None;
            if reported + (ahead.is_some() as usize) < n && !(ahead.is_some() && sync_after(self.step + 1)) {
                let streams = (self.batches.clone(), self.dropout.clone());
                let step = self.step + ahead.is_some() as usize;
                let batch = self.data.batch(Split::Train, self.cfg.train.batch_size, self.cfg.model.ctx_len, &mut self.batches);
                let t = &self.cfg.train;
                let h = adamw_at(t, lr_at(t, step), g.trainer.t + 1 + ahead.is_some() as u32);
                let masks = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
                match g.trainer.submit_step(&self.model, &batch, masks, &h, t.grad_clip, step) {
                    Ok(p) => next = Some((p, streams)),
                    Err(e) => {
                        drop(g);
                        on_report(self.fall_back_to_cpu(e)?);
                        reported += 1;
                        ahead = None;
                        continue;
                    }
                }
            }
            let Some((p, _)) = ahead.take() else {
                ahead = next;
                continue;
            };
            let result = g.trainer.finish_step(&self.model, p).await;
            drop(g);
            match result {
                Ok(report) => {
                    self.step += 1;
                    if sync_after(self.step) {
                        // Nothing is in flight here (see above). A failure falls back to the cpu, with a notice.
                        let _ = self.sync_async().await;
                    }
                    on_report(StepReport { notice: self.notice.take(), ..report });
                    reported += 1;
                    ahead = next;
                }
                Err(e @ Error::Diverged { .. }) => {
                    if let Some((_, streams)) = next {
                        (self.batches, self.dropout) = streams;
                    }
                    return Err(e);
                }
                Err(e) => {
                    on_report(self.fall_back_to_cpu(e)?);
                    reported += 1;
                    ahead = None;
                }
            }
        }
        Ok(())
    }

    fn cpu_step(&mut self) -> Result<StepReport> {
        if !self.host_checked {
            self.check_host_step()?;
            self.host_checked = true;
        }
        let batch = self.data.batch(Split::Train, self.cfg.train.batch_size, self.cfg.model.ctx_len, &mut self.batches);
        let drop = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
        let (model, opt, t, step) = (&mut self.model, &mut self.opt, &self.cfg.train, self.step);
        let mut r = crate::with_host!(self.backend, |be| crate::backend::cpu::with_pool_awake(|| train_step(be, model, opt, t, &batch, step, drop)))?;
        self.step += 1;
        r.notice = self.notice.take();
        Ok(r)
    }

    // The device state stays locked across the readback's await: the lock is only ever tried (`gpu::lock`), so a
    // concurrent call gets a "busy" error instead of waiting, and nothing can deadlock.
    #[allow(clippy::await_holding_lock)]
    #[cfg(feature = "gpu")]
    async fn gpu_step(&mut self) -> Result<StepReport> {
        let shared = self.gpu.as_ref().expect("a gpu run").get()?;
        let mut g = crate::backend::gpu::lock(&shared)?;
        let batch = self.data.batch(Split::Train, self.cfg.train.batch_size, self.cfg.model.ctx_len, &mut self.batches);
        let (t, step) = (&self.cfg.train, self.step);
        let h = adamw_at(t, lr_at(t, step), g.trainer.t + 1);
        let masks = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
        let result = match g.trainer.submit_step(&self.model, &batch, masks, &h, t.grad_clip, step) {
            Ok(p) => g.trainer.finish_step(&self.model, p).await,
            Err(e) => Err(e),
        };
        drop(g);
        let report = match result {
            Ok(r) => r,
            Err(e @ Error::Diverged { .. }) => return Err(e),
            Err(e) => return self.fall_back_to_cpu(e),
        };
        self.step += 1;
        if self.sync_every > 0 && self.step.is_multiple_of(self.sync_every) {
            // A failure falls back to the cpu and leaves its notice for the next report.
            let _ = self.sync_async().await;
        }
        Ok(StepReport { notice: self.notice.take(), ..report })
    }

    /// The GPU failed: drop it, return to the host copy of the last sync (its step and data streams), and take
    /// this step on the CPU, with a notice.
    /// A run the host cannot hold (made for the gpu: `unattached`) stops instead, with the memory check's error
    /// saying that the GPU failed; its host copy stays as of the last sync (saved, or continued on a GPU, from
    /// there).
    #[cfg(feature = "gpu")]
    fn fall_back_to_cpu(&mut self, e: Error) -> Result<StepReport> {
        let notice = self.fall_back_notice(&e);
        if let Err(refused) = self.check_host_step() {
            return Err(match refused {
                Error::Config { field, value, rule } => Error::Config { field, value, rule: format!("{notice}; but on the cpu {rule}") },
                other => other,
            });
        }
        self.notice = Some(notice);
        self.cpu_step()
    }

    #[cfg(feature = "gpu")]
    fn fall_back_notice(&mut self, e: &Error) -> String {
        let Some(slot) = self.gpu.take() else { return e.to_string() };
        let synced = match slot.get().and_then(|s| crate::backend::gpu::lock(&s).map(|g| g.synced.clone())) {
            Ok(s) => s,
            Err(_) => return format!("the GPU failed ({e}) and its run state is out of reach"),
        };
        let lost = self.step - synced.0;
        (self.step, self.batches, self.dropout) = synced;
        self.backend = BackendKind::Cpu;
        format!(
            "the GPU failed ({e}); training continues on the cpu from step {}, the last state read back from the device \
             ({lost} step{} lost)",
            self.step,
            if lost == 1 { "" } else { "s" }
        )
    }

    /// Reads the device state of a gpu run back into `model` and `opt` (nothing to do on the cpu). Natively;
    /// in the browser await `sync_async`. If the device has failed, the run falls back to the cpu (see `step`)
    /// and the error is returned.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sync(&mut self) -> Result<()> {
        #[cfg(feature = "gpu")]
        return pollster::block_on(self.sync_async());
        #[cfg(not(feature = "gpu"))]
        Ok(())
    }

    /// `sync`, awaiting the device's readback.
    #[allow(clippy::await_holding_lock)] // see gpu_step
    pub async fn sync_async(&mut self) -> Result<()> {
        #[cfg(feature = "gpu")]
        if let Some(slot) = &self.gpu {
            let shared = slot.get()?;
            let mut g = crate::backend::gpu::lock(&shared)?;
            match g.trainer.download().await {
                Ok((p, m, v)) => {
                    (self.model.params, self.opt.m, self.opt.v, self.opt.t) = (p, m, v, g.trainer.t);
                    g.synced = (self.step, self.batches.clone(), self.dropout.clone());
                }
                Err(e) => {
                    drop(g);
                    self.notice = Some(self.fall_back_notice(&e));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Mean loss on `eval_iters` batches of a split; the same batches at every evaluation (`step::eval_mean`: not
    /// finite when the model has diverged). A gpu run evaluates on the device (natively; in the browser await
    /// `eval_async`); a device that fails is an error.
    pub fn eval(&self, split: Split) -> Result<f32> {
        #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
        if self.gpu.is_some() {
            return pollster::block_on(self.eval_async(split));
        }
        #[cfg(all(feature = "gpu", target_arch = "wasm32"))]
        if self.gpu.is_some() {
            return Err(Error::Gpu("a gpu run's evaluation must be awaited: eval_async".into()));
        }
        Ok(self.cpu_eval(split))
    }

    fn cpu_eval(&self, split: Split) -> f32 {
        self.host_eval(split, self.cfg.model.ctx_len, None)
    }

    /// Mean loss on `eval_iters` batches of `seq` tokens (the batches of `eval` when seq = ctx_len), on the host.
    fn host_eval(&self, split: Split, seq: usize, mlm: Option<Mlm>) -> f32 {
        let mut rng = Rng::new(self.cfg.seed ^ 0x5EED_E7A1);
        let (t, model, data) = (&self.cfg.train, &self.model, &self.data);
        crate::with_host!(self.backend, |be| crate::backend::cpu::with_pool_awake(|| {
            evaluate_at(be, model, data, split, t.eval_iters, t.batch_size, seq, mlm, &mut rng)
        }))
    }

    /// Mean loss on `eval_iters` batches of `seq` tokens — a length the model may never have trained at (issue 19,
    /// lesson `extrapolation`: ALiBi, Press et al. 2022, Fig. 1). At seq = ctx_len it is `eval` on the CPU, exactly.
    /// Runs on the host model (a gpu run: as of its last sync), through the same `Model::forward`. Refused
    /// (`check_eval_length`) for learned positions past ctx_len, for tasks of fixed length, and where the split or
    /// the memory budget is too small.
    pub fn eval_at(&self, split: Split, seq: usize) -> Result<f32> {
        self.eval_with(split, seq, None)
    }

    /// `eval_at`, with bert's chosen positions shown by `mlm` instead of the config's `data.mlm_mask` /
    /// `data.mlm_random` — `Mlm::UNMASKED`: the masked-LM loss on text with no [MASK] in it, as a fine-tuning input
    /// has none (lesson `bert-mask`; Devlin et al. 2019, §3.1). The same batches as `eval_at` for the same rule.
    /// Refused for a model that is not bert.
    pub fn eval_with(&self, split: Split, seq: usize, mlm: Option<Mlm>) -> Result<f32> {
        if mlm.is_some() && self.cfg.model.arch != crate::config::Arch::Bert {
            let arch = serde_json::to_value(self.cfg.model.arch).map(|v| v.as_str().unwrap_or("").to_string()).unwrap_or_default();
            return Err(Error::Invalid(format!("a masking rule applies to bert's masked-LM objective; this model is {arch} (model.arch)")));
        }
        check_eval_length(&self.cfg, &self.data, split, seq)?;
        Ok(self.host_eval(split, seq, mlm))
    }

    /// `eval`, awaiting the device on a gpu run.
    #[allow(clippy::await_holding_lock)] // see gpu_step
    pub async fn eval_async(&self, split: Split) -> Result<f32> {
        #[cfg(feature = "gpu")]
        if let Some(slot) = &self.gpu {
            let mut rng = Rng::new(self.cfg.seed ^ 0x5EED_E7A1);
            let t = &self.cfg.train;
            let batches: Vec<Batch> =
                (0..t.eval_iters.max(1)).map(|_| self.data.batch(split, t.batch_size, self.cfg.model.ctx_len, &mut rng)).collect();
            let shared = slot.get()?;
            let g = crate::backend::gpu::lock(&shared)?;
            return Ok(eval_mean(&g.trainer.eval_losses(&self.model, &batches).await?));
        }
        Ok(self.cpu_eval(split))
    }

    pub fn tokens_per_step(&self) -> usize {
        let (s, t) = self.data.lengths(self.cfg.model.ctx_len);
        self.cfg.train.batch_size * (s + t)
    }
}

// The CPU path runs steps on rayon's pool (the browser's `on_pool` too): a run must stay Send + Sync, with or
// without a GPU (see `slot`).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Run>();
};
