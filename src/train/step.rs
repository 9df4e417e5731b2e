//! One training step, written once over the op trait and run by every backend: nanoGPT's learning-rate schedule
//! (warmup, then cosine to min_lr), the forward and backward pass, the global and per-tensor gradient norms,
//! PyTorch's clip_grad_norm_, and AdamW with decoupled weight decay on ≥ 2-D tensors only (Loshchilov & Hutter
//! 2019) — guarded, so a step whose loss or gradients are not finite changes nothing.
//!
//! On the host the ops run as they are called; on the GPU (`backend::gpu::GpuStep`) they are recorded, and the whole
//! step is one submission whose only readback is the scalars buffer (`train::gpu`).

use crate::backend::{moe_stats_len, AdamW, Backend, View};
use crate::config::{Schedule, TrainConfig};
use crate::error::{Error, Result};
use crate::model::layout::FfnParams;
use crate::model::{Batch, Buffers, Model, TensorInfo};
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

/// AdamW's hyper-parameters for the step that will be the `t`-th taken (from 1).
pub fn adamw_at(c: &TrainConfig, lr: f32, t: u32) -> AdamW {
    AdamW { lr, beta1: c.betas[0], beta2: c.betas[1], eps: c.eps, weight_decay: c.weight_decay, t }
}

/// Slot of Σ g² (over every tensor, before clipping) in a step's scalars buffer.
pub const GRAD_SQ: usize = 0;

/// Slot of Σ g² of tensor i (layout order).
pub fn tensor_slot(i: usize) -> usize {
    1 + i
}

/// Slot where a backend that sums the loss on the device (the GPU) puts the loss sum: after the tensors'.
pub fn loss_slot(model: &Model) -> usize {
    1 + model.layout.tensors.len()
}

/// The Mixture-of-Experts layers in layout order (encoder first), by name ("blocks.3", "decoder.blocks.0").
pub fn moe_layers(model: &Model) -> Vec<String> {
    let l = &model.layout;
    let stacks = [&l.encoder, &l.decoder].into_iter().flatten();
    stacks
        .flat_map(|s| s.blocks.iter().enumerate().filter(|(_, b)| matches!(b.ffn, FfnParams::Moe { .. })).map(move |(i, _)| format!("{}blocks.{i}", s.prefix)))
        .collect()
}

/// Slot of the statistics of MoE layer i (`moe_layers` order; `Backend::moe_route`'s `stats`): after the loss, each
/// layer's on a 64-float boundary (a device binds them as storage views).
pub fn moe_slot(model: &Model, i: usize) -> usize {
    let each = model.cfg.ffn.moe.as_ref().map_or(0, |m| moe_stats_len(m.experts).next_multiple_of(64));
    (loss_slot(model) + 1).next_multiple_of(64) + i * each
}

/// Floats in a step's scalars buffer.
pub fn scalars_len(model: &Model) -> usize {
    match moe_layers(model).len() {
        0 => loss_slot(model) + 1,
        n => moe_slot(model, n),
    }
}

/// The flat buffers one step reads and updates, each laid out like the parameters; `scalars` as the slots above.
pub struct StepBuffers<'s, D: Backend> {
    pub params: &'s mut D::Params,
    pub grads: &'s mut D::Params,
    pub m: &'s mut D::Params,
    pub v: &'s mut D::Params,
    pub scalars: &'s mut D::Params,
}

/// A step run (host) or recorded (GPU): its loss, and the read of its scalars buffer.
pub struct Recorded<D: Backend> {
    pub loss: D::Loss,
    pub scalars: D::Read,
}

/// Runs or records one training step on `d`: forward with loss, backward into `bufs.grads` (which must hold zeros:
/// the caller zeroes them once a step, a fresh buffer on the host, a recorded clear on the GPU), Σ g² of each tensor
/// and of all, clipping to `clip` (0: none), and AdamW with `h` — applied only when the loss and Σ g² are finite,
/// decided where the values are (on the device for the GPU). `model` gives the config and the layout; its own
/// parameters are not read (`bufs.params` are).
pub fn record_step<D: Backend>(
    d: &D,
    model: &Model,
    bufs: StepBuffers<D>,
    batch: &Batch,
    dropout: Option<&mut Rng>,
    h: &AdamW,
    clip: f32,
) -> Result<Recorded<D>> {
    let StepBuffers { params, grads, m, v, scalars } = bufs;
    let fwd = model.forward_on(d, params, batch, dropout)?;
    for (i, stats) in fwd.moe_stats().into_iter().enumerate() {
        let slot = View { offset: moe_slot(model, i), len: D::len(D::view(stats)) };
        d.zero(D::grad(scalars, slot)?)?;
        d.add_into(D::grad(scalars, slot)?, D::view(stats))?;
    }
    model.backward_on(d, params, &fwd, batch, grads)?;
    let loss = fwd.loss;
    let mut spent = Vec::new();
    fwd.buffers_into(&mut spent);
    d.recycle(spent);
    record_update(d, model, StepBuffers { params, grads, m, v, scalars }, loss, h, clip)
}

/// The second half of a step, once `bufs.grads` hold the gradients of the objective whose value is `loss`: Σ g² of
/// each tensor and of all, clipping, the guarded AdamW, and the read of the scalars. `record_step` ends with it; an
/// objective of its own (fine-tuning's, `recipes::finetune`) computes the gradients and calls it.
pub fn record_update<D: Backend>(d: &D, model: &Model, bufs: StepBuffers<D>, loss: D::Loss, h: &AdamW, clip: f32) -> Result<Recorded<D>> {
    let StepBuffers { params, grads, m, v, scalars } = bufs;
    let segments = model.layout.segments();
    let all = View { offset: 0, len: model.layout.size };
    let sums = View { offset: GRAD_SQ, len: 1 + segments.len() };
    let sq = View { offset: GRAD_SQ, len: 1 };
    d.sums_of_squares(D::grad(scalars, sums)?, D::param(grads, all)?, &segments)?;
    d.clip_grad_norm(D::grad(grads, all)?, D::param(scalars, sq)?, clip)?;
    let (p, g, m, v) = (D::grad(params, all)?, D::param(grads, all)?, D::grad(m, all)?, D::grad(v, all)?);
    d.adamw(p, g, m, v, &segments, D::param(scalars, sq)?, loss, h)?;
    let scalars = d.read(D::param(scalars, View { offset: 0, len: scalars_len(model) })?)?;
    Ok(Recorded { loss, scalars })
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
    /// The load-balancing term added to the objective, Σ over MoE layers of aux_loss · E·Σ_e f_e·P_e (Mixture-of-
    /// Experts models only; `loss` is the cross-entropy alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_loss: Option<f32>,
    /// Each MoE layer's expert load this step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expert_load: Vec<ExpertLoad>,
    /// Something the user should know, said once: e.g. the GPU failed and training continues on the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// The report of step `step` from its loss and the values of its scalars buffer; `Error::Diverged` (the step was
/// not taken: the guard left every buffer but the gradients as it was) when the loss or Σ g² is not finite.
pub fn finish_step<D: Backend>(model: &Model, loss: D::Loss, scalars: &[f32], step: usize, lr: f32) -> Result<StepReport> {
    let loss = D::loss_value(loss, scalars);
    if !loss.is_finite() {
        return Err(Error::Diverged { step, what: format!("loss is {loss}") });
    }
    let norm = scalars.get(GRAD_SQ).map_or(f32::NAN, |s| s.sqrt());
    if !norm.is_finite() {
        return Err(Error::Diverged { step, what: format!("gradient norm is {norm}") });
    }
    let layers = group_grad_norms(model, |i, _| scalars.get(tensor_slot(i)).map_or(f64::NAN, |&s| s as f64));
    let expert_load = expert_loads(model, scalars);
    let aux_loss = model.cfg.ffn.moe.as_ref().map(|m| expert_load.iter().map(|l| m.aux_loss * l.balance).sum());
    Ok(StepReport { step, loss, lr, grad_norm: norm, layer_grad_norms: layers, aux_loss, expert_load, notice: None })
}

/// How one Mixture-of-Experts layer spread a step's tokens.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExpertLoad {
    /// "blocks.3", "decoder.blocks.0".
    pub layer: String,
    /// Each expert's share of the (token, choice) assignments, before the capacity (sums to 1).
    pub load: Vec<f32>,
    /// Assignments over an expert's capacity, dropped (their tokens pass through the residual).
    pub dropped: usize,
    /// The balancing loss E·Σ_e f_e·P_e (1 when perfectly balanced), before its weight.
    pub balance: f32,
}

/// Every MoE layer's load from a step's scalars.
pub fn expert_loads(model: &Model, scalars: &[f32]) -> Vec<ExpertLoad> {
    let Some(experts) = model.cfg.ffn.moe.as_ref().map(|m| m.experts) else { return vec![] };
    moe_layers(model)
        .into_iter()
        .enumerate()
        .map(|(i, layer)| {
            let start = moe_slot(model, i);
            let s = scalars.get(start..start + moe_stats_len(experts)).unwrap_or(&[]);
            let counts = s.get(2..).unwrap_or(&[]);
            let total: f32 = counts.iter().sum();
            let load = counts.iter().map(|c| if total > 0.0 { c / total } else { 0.0 }).collect();
            ExpertLoad { layer, load, dropped: s.get(1).map_or(0, |&d| d as usize), balance: s.first().copied().unwrap_or(f32::NAN) }
        })
        .collect()
}

/// Gradient norm of every block (and "embeddings & head") for the UI's per-layer chart, from each tensor's Σg²
/// (`tensor_sq(index, tensor)`, tensors in layout order).
pub fn group_grad_norms(model: &Model, tensor_sq: impl Fn(usize, &TensorInfo) -> f64) -> Vec<(String, f32)> {
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

/// The evaluation loss from each batch's (mean loss, counted targets): the mean over the batches that count a
/// target (a batch with none — a BERT batch with no masked position — says nothing). Not finite when any counted
/// batch's loss is not: a diverged model never reports a finite validation loss. NaN when no batch counts.
pub fn eval_mean(batches: &[(f32, usize)]) -> f32 {
    let counted: Vec<f32> = batches.iter().filter(|(_, n)| *n > 0).map(|(l, _)| *l).collect();
    if counted.is_empty() {
        return f32::NAN;
    }
    (counted.iter().map(|&l| l as f64).sum::<f64>() / counted.len() as f64) as f32
}
