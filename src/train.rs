//! Training: the learning-rate schedule (warmup, then cosine to min_lr, as nanoGPT), global grad-norm clipping,
//! AdamW with decoupled weight decay on ≥2-D tensors only (Loshchilov & Hutter 2019), per-layer grad norms, and a
//! `Run` that owns a model, its optimizer state and its data, and refuses to take a step that diverges.
//!
//! A run on the gpu backend (feature `gpu`) trains through `backend::gpu::GpuTrainer`: the parameters, gradients,
//! AdamW moments and activations stay on the device, each step is one submission recorded by the same model
//! code, and only scalars come back. `model` and `opt` are then the HOST COPY as of the last `sync` (every
//! `sync_every` steps, and whenever asked: before saving a checkpoint or generating, call `sync`). If the device
//! fails (lost, out of memory, …) the run continues on the CPU from that copy, with a notice in the next report:
//! only the steps since the last sync are lost.

use crate::backend::{AdamW, Backend, BackendKind};
use crate::config::{Config, Schedule, TrainConfig};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::model::{Batch, Model};
use crate::rng::Rng;

/// nanoGPT's schedule: linear warmup to lr, then cosine decay to min_lr at `steps` (or constant).
pub fn lr_at(t: &TrainConfig, it: usize) -> f32 {
    if it < t.warmup {
        return t.lr * (it + 1) as f32 / (t.warmup + 1) as f32;
    }
    match t.schedule {
        Schedule::Constant => t.lr,
        Schedule::Cosine => {
            let span = t.steps.saturating_sub(t.warmup).max(1) as f64;
            let r = ((it - t.warmup) as f64 / span).min(1.0);
            let coeff = 0.5 * (1.0 + (std::f64::consts::PI * r).cos());
            (t.min_lr as f64 + coeff * (t.lr - t.min_lr) as f64) as f32
        }
    }
}

/// Global L2 norm of the gradients.
pub fn grad_norm(be: &dyn Backend, grads: &[f32]) -> f32 {
    be.sum_squares(grads).sqrt() as f32
}

/// PyTorch's clip_grad_norm_: scale by clip/(norm + 1e-6) when that is below 1. Returns the norm before clipping.
pub fn clip_grads(be: &dyn Backend, grads: &mut [f32], clip: f32) -> f32 {
    let norm = grad_norm(be, grads);
    scale_grads(grads, clip_coef(norm, clip));
    norm
}

/// The factor clipping multiplies the gradients by: clip/(norm + 1e-6) when that is below 1, else 1.
fn clip_coef(norm: f32, clip: f32) -> f32 {
    let coef = clip / (norm + 1e-6);
    if clip > 0.0 && coef < 1.0 {
        coef
    } else {
        1.0
    }
}

/// grads *= coef, element by element (so the split does not change a bit).
fn scale_grads(grads: &mut [f32], coef: f32) {
    use rayon::prelude::*;
    if coef == 1.0 {
        return;
    }
    let scale = |c: &mut [f32]| c.iter_mut().for_each(|g| *g *= coef);
    if crate::backend::cpu::PAR_MEMORY_BOUND {
        grads.par_chunks_mut(1 << 15).for_each(scale);
    } else {
        scale(grads);
    }
}

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

/// One AdamW update of every tensor of the model (weight decay on tensors with ≥ 2 dims only).
pub fn adamw_update(be: &dyn Backend, model: &mut Model, grads: &[f32], opt: &mut OptState, t: &TrainConfig, lr: f32) {
    opt.t += 1;
    let h = AdamW { lr, beta1: t.betas[0], beta2: t.betas[1], eps: t.eps, weight_decay: t.weight_decay, t: opt.t };
    for ti in &model.layout.tensors {
        let v = ti.view;
        be.adamw(v.of_mut(&mut model.params), v.of(grads), v.of_mut(&mut opt.m), v.of_mut(&mut opt.v), &h, ti.decay);
    }
}

/// What one step reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    pub step: usize,
    pub loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Gradient norm per block (before clipping), embeddings and head first.
    pub layer_grad_norms: Vec<(String, f32)>,
    /// Something the user should know, said once: e.g. the GPU failed and training continues on the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// Forward, backward, clip, AdamW on one batch. Refuses (and leaves the model untouched) when the loss or the
/// gradient norm is not finite.
pub fn train_step(
    be: &dyn Backend,
    model: &mut Model,
    opt: &mut OptState,
    t: &TrainConfig,
    batch: &Batch,
    step: usize,
    dropout: Option<&mut Rng>,
) -> Result<StepReport> {
    let fwd = model.forward(be, batch, dropout);
    if !fwd.loss.is_finite() {
        return Err(Error::Diverged { step, what: format!("loss is {}", fwd.loss) });
    }
    let mut grads = crate::model::device::host_zeros(model.params.len());
    model.backward(be, &fwd, batch, &mut grads);
    // Σg² of each tensor, in one pass: the global norm and the per-layer norms (both before clipping) come from
    // these, added in tensor order.
    let sq: Vec<f64> = model.layout.tensors.iter().map(|ti| be.sum_squares(ti.view.of(&grads))).collect();
    let norm = sq.iter().sum::<f64>().sqrt() as f32;
    if !norm.is_finite() {
        return Err(Error::Diverged { step, what: format!("gradient norm is {norm}") });
    }
    let layers = group_grad_norms(model, |i, _| sq[i]);
    scale_grads(&mut grads, clip_coef(norm, t.grad_clip));
    let lr = lr_at(t, step);
    adamw_update(be, model, &grads, opt, t, lr);
    Ok(StepReport { step, loss: fwd.loss, lr, grad_norm: norm, layer_grad_norms: layers, notice: None })
}

/// Gradient norm of every block (and "embeddings & head") for the UI's per-layer chart, from each tensor's Σg²
/// (`tensor_sq(index, tensor)`, tensors in layout order).
pub fn group_grad_norms(model: &Model, tensor_sq: impl Fn(usize, &crate::model::TensorInfo) -> f64) -> Vec<(String, f32)> {
    let mut groups: Vec<(String, f64)> = vec![];
    for (i, ti) in model.layout.tensors.iter().enumerate() {
        let key = match ti.name.find("blocks.") {
            Some(i) => {
                let rest = &ti.name[i + 7..];
                format!("{}blocks.{}", &ti.name[..i], &rest[..rest.find('.').unwrap_or(rest.len())])
            }
            None => "embeddings & head".to_string(),
        };
        let ss = tensor_sq(i, ti);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some(g) => g.1 += ss,
            None => groups.push((key, ss)),
        }
    }
    groups.into_iter().map(|(k, s)| (k, s.sqrt() as f32)).collect()
}

/// Mean loss over `iters` batches of a split (no dropout, no gradients).
pub fn evaluate(be: &dyn Backend, model: &Model, data: &Dataset, split: crate::data::Split, iters: usize, b: usize, rng: &mut Rng) -> f32 {
    let mut total = 0.0f64;
    let mut n = 0usize;
    for _ in 0..iters.max(1) {
        let batch = data.batch(split, b, model.cfg.ctx_len, rng);
        let f = model.forward(be, &batch, None);
        if f.loss.is_finite() {
            total += f.loss as f64;
            n += 1;
        }
    }
    if n == 0 {
        f32::NAN
    } else {
        (total / n as f64) as f32
    }
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
    #[cfg(feature = "gpu")]
    gpu: Option<crate::backend::gpu::ThreadBound<GpuRun>>,
}

/// The device side of a gpu run.
#[cfg(feature = "gpu")]
struct GpuRun {
    trainer: crate::backend::gpu::GpuTrainer,
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
        crate::model::Layout::check_size(&cfg.model, data.tokenizer().vocab_size())?;
        let model = Model::new(&cfg.model, data.tokenizer().vocab_size(), cfg.seed);
        let mut run = Run::assemble(cfg, model, OptState::new(0), data, 0, backend);
        if backend == BackendKind::Gpu {
            run.start_gpu()?;
        }
        Ok(run)
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
        Err(Error::Invalid("gpu: in the browser, make the run on the cpu, then attach_gpu(Gpu::new().await?)".into()))
    }

    #[cfg(not(feature = "gpu"))]
    fn start_gpu(&mut self) -> Result<()> {
        Err(Error::Invalid("gpu: this build has no gpu backend (build with --features gpu)".into()))
    }

    /// Moves the run onto `gpu`: uploads the parameters and optimizer state; from now on steps run there. In the
    /// browser, await `gpu.prepare(&GpuTrainer::attention_kernels(&run.model))` first.
    #[cfg(feature = "gpu")]
    pub fn attach_gpu(&mut self, gpu: crate::backend::gpu::Gpu) -> Result<()> {
        let trainer = crate::backend::gpu::GpuTrainer::new(gpu, &self.model, &self.opt.m, &self.opt.v, self.opt.t)?;
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

    /// One training step. On divergence the model and optimizer are left as they were and an error is returned.
    /// A gpu run blocks on its device natively; in the browser await `step_async`.
    pub fn step(&mut self) -> Result<StepReport> {
        #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
        if self.gpu.is_some() {
            return pollster::block_on(self.gpu_step());
        }
        #[cfg(all(feature = "gpu", target_arch = "wasm32"))]
        if self.gpu.is_some() {
            return Err(Error::Invalid("gpu: a gpu run's step must be awaited: step_async".into()));
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

    fn cpu_step(&mut self) -> Result<StepReport> {
        let batch = self.data.batch(Split::Train, self.cfg.train.batch_size, self.cfg.model.ctx_len, &mut self.batches);
        let be = self.backend.get();
        let drop = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
        let (model, opt, t, step) = (&mut self.model, &mut self.opt, &self.cfg.train, self.step);
        let mut r = crate::backend::cpu::with_pool_awake(|| train_step(be, model, opt, t, &batch, step, drop))?;
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
        let t = &self.cfg.train;
        let lr = lr_at(t, self.step);
        let h = AdamW { lr, beta1: t.betas[0], beta2: t.betas[1], eps: t.eps, weight_decay: t.weight_decay, t: g.trainer.t + 1 };
        let masks = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
        let result = match g.trainer.submit_step(&self.model, &batch, masks, &h, t.grad_clip) {
            Ok(p) => g.trainer.finish_step(p).await,
            Err(e) => Err(e),
        };
        drop(g);
        let s = match result {
            Ok(s) => s,
            Err(e) => return self.fall_back_to_cpu(e),
        };
        let step = self.step;
        if !s.loss.is_finite() {
            return Err(Error::Diverged { step, what: format!("loss is {}", s.loss) });
        }
        let norm = s.grad_sq.sqrt();
        if !norm.is_finite() {
            return Err(Error::Diverged { step, what: format!("gradient norm is {norm}") });
        }
        let layers = group_grad_norms(&self.model, |i, _| s.tensor_sq[i] as f64);
        self.step += 1;
        if self.sync_every > 0 && self.step.is_multiple_of(self.sync_every) {
            // A failure falls back to the cpu and leaves its notice for the next report.
            let _ = self.sync_async().await;
        }
        Ok(StepReport { step, loss: s.loss, lr, grad_norm: norm, layer_grad_norms: layers, notice: self.notice.take() })
    }

    /// The GPU failed: drop it, return to the host copy of the last sync (its step and data streams), and take
    /// this step on the CPU, with a notice.
    #[cfg(feature = "gpu")]
    fn fall_back_to_cpu(&mut self, e: Error) -> Result<StepReport> {
        self.notice = Some(self.fall_back_notice(&e));
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

    /// Mean loss on `eval_iters` batches of a split; the same batches at every evaluation. A gpu run evaluates on
    /// the device (natively; in the browser await `eval_async`, this gives NaN); NaN if the device fails.
    pub fn eval(&self, split: Split) -> f32 {
        #[cfg(all(feature = "gpu", not(target_arch = "wasm32")))]
        if self.gpu.is_some() {
            return pollster::block_on(self.eval_async(split));
        }
        #[cfg(all(feature = "gpu", target_arch = "wasm32"))]
        if self.gpu.is_some() {
            return f32::NAN;
        }
        self.cpu_eval(split)
    }

    fn cpu_eval(&self, split: Split) -> f32 {
        let mut rng = Rng::new(self.cfg.seed ^ 0x5EED_E7A1);
        let (t, be) = (&self.cfg.train, self.backend.get());
        let (model, data) = (&self.model, &self.data);
        crate::backend::cpu::with_pool_awake(|| evaluate(be, model, data, split, t.eval_iters, t.batch_size, &mut rng))
    }

    /// `eval`, awaiting the device on a gpu run.
    #[allow(clippy::await_holding_lock)] // see gpu_step
    pub async fn eval_async(&self, split: Split) -> f32 {
        #[cfg(feature = "gpu")]
        if let Some(slot) = &self.gpu {
            let mut rng = Rng::new(self.cfg.seed ^ 0x5EED_E7A1);
            let t = &self.cfg.train;
            let batches: Vec<Batch> =
                (0..t.eval_iters.max(1)).map(|_| self.data.batch(split, t.batch_size, self.cfg.model.ctx_len, &mut rng)).collect();
            let Ok(shared) = slot.get() else { return f32::NAN };
            let Ok(g) = crate::backend::gpu::lock(&shared) else { return f32::NAN };
            return match g.trainer.eval_losses(&self.model, &batches).await {
                Ok(losses) => mean_of_finite(&losses),
                Err(_) => f32::NAN,
            };
        }
        self.cpu_eval(split)
    }

    pub fn tokens_per_step(&self) -> usize {
        let (s, t) = match &self.data {
            Dataset::Task { task, digits, .. } => task.lengths(*digits),
            Dataset::Text { .. } => (0, self.cfg.model.ctx_len),
        };
        self.cfg.train.batch_size * (s + t)
    }
}

/// Mean of the finite values (NaN if none), summed in f64 as `evaluate` does.
#[cfg(feature = "gpu")]
fn mean_of_finite(xs: &[f32]) -> f32 {
    let (total, n) = xs.iter().filter(|x| x.is_finite()).fold((0.0f64, 0usize), |(t, n), &x| (t + x as f64, n + 1));
    if n == 0 {
        f32::NAN
    } else {
        (total / n as f64) as f32
    }
}

// The CPU path runs steps on rayon's pool (the browser's `on_pool` too): a run must stay Send + Sync, with or
// without a GPU (see `slot`).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Run>();
};
