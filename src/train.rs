//! Training: the learning-rate schedule (warmup, then cosine to min_lr, as nanoGPT), global grad-norm clipping,
//! AdamW with decoupled weight decay on ≥2-D tensors only (Loshchilov & Hutter 2019), per-layer grad norms, and a
//! `Trainer` that owns a model, its optimizer state and its data, and refuses to take a step that diverges.

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
    if clip > 0.0 {
        let coef = clip / (norm + 1e-6);
        if coef < 1.0 {
            grads.iter_mut().for_each(|g| *g *= coef);
        }
    }
    norm
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
    let mut grads = vec![0.0f32; model.params.len()];
    model.backward(be, &fwd, batch, &mut grads);
    // Grad norms per layer are reported before clipping, like the global norm.
    let norm = grad_norm(be, &grads);
    if !norm.is_finite() {
        return Err(Error::Diverged { step, what: format!("gradient norm is {norm}") });
    }
    let layers = layer_grad_norms(model, &grads);
    clip_grads(be, &mut grads, t.grad_clip);
    let lr = lr_at(t, step);
    adamw_update(be, model, &grads, opt, t, lr);
    Ok(StepReport { step, loss: fwd.loss, lr, grad_norm: norm, layer_grad_norms: layers })
}

/// Gradient norm of every block (and "embeddings" / "head") for the UI's per-layer chart.
pub fn layer_grad_norms(model: &Model, grads: &[f32]) -> Vec<(String, f32)> {
    let mut groups: Vec<(String, f64)> = vec![];
    for ti in &model.layout.tensors {
        let key = match ti.name.find("blocks.") {
            Some(i) => {
                let rest = &ti.name[i + 7..];
                format!("{}blocks.{}", &ti.name[..i], &rest[..rest.find('.').unwrap_or(rest.len())])
            }
            None => "embeddings & head".to_string(),
        };
        let ss: f64 = ti.view.of(grads).iter().map(|&g| (g as f64).powi(2)).sum();
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
    pub model: Model,
    pub opt: OptState,
    pub data: Dataset,
    /// Steps taken.
    pub step: usize,
    pub backend: BackendKind,
    batches: Rng,
    dropout: Rng,
}

impl Run {
    /// Validates the config and the data, then initialises the model from the seed.
    pub fn new(cfg: Config, text: Option<&str>, backend: BackendKind) -> Result<Run> {
        cfg.validate()?;
        let data = Dataset::new(&cfg, text)?;
        let model = Model::new(&cfg.model, data.tokenizer().vocab_size(), cfg.seed);
        Ok(Run::assemble(cfg, model, OptState::new(0), data, 0, backend))
    }

    /// Continues from a saved state (checkpoint): model, optimizer state and step.
    pub fn resume(cfg: Config, model: Model, opt: Option<OptState>, data: Dataset, step: usize, backend: BackendKind) -> Run {
        Run::assemble(cfg, model, opt.unwrap_or(OptState::new(0)), data, step, backend)
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
        Run { cfg, model, opt, data, step, backend, batches, dropout }
    }

    /// One training step. On divergence the model and optimizer are left as they were and an error is returned.
    pub fn step(&mut self) -> Result<StepReport> {
        let batch = self.data.batch(Split::Train, self.cfg.train.batch_size, self.cfg.model.ctx_len, &mut self.batches);
        let be = self.backend.get();
        let drop = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
        let r = train_step(be, &mut self.model, &mut self.opt, &self.cfg.train, &batch, self.step, drop)?;
        self.step += 1;
        Ok(r)
    }

    /// Mean loss on `eval_iters` batches of a split; the same batches at every evaluation.
    pub fn eval(&self, split: Split) -> f32 {
        let mut rng = Rng::new(self.cfg.seed ^ 0x5EED_E7A1);
        let t = &self.cfg.train;
        evaluate(self.backend.get(), &self.model, &self.data, split, t.eval_iters, t.batch_size, &mut rng)
    }

    pub fn tokens_per_step(&self) -> usize {
        let (s, t) = match &self.data {
            Dataset::Task { task, digits, .. } => crate::data::task_lengths(*task, *digits),
            Dataset::Text { .. } => (0, self.cfg.model.ctx_len),
        };
        self.cfg.train.batch_size * (s + t)
    }
}
