//! The GPU training engine: parameters, gradients and AdamW's moments live in device buffers for the whole run;
//! a training step — batch upload, forward, loss, backward, per-tensor and global gradient norms, clipping,
//! AdamW — is recorded into ONE submission by the model's own code (`Model::forward_on`, `backward_on` over
//! `GpuStep`), and only its scalars are read back, by a copy in that same submission.
//!
//! Divergence never touches the state: AdamW's kernel reads the loss sum and Σg² from the device and updates
//! nothing when either is not finite, so the host only has to report it (`train::Run` turns it into
//! `Error::Diverged`, as on the CPU). The host copies of the parameters and moments are read back on demand
//! (`download`).
//!
//! Scalars buffer: [Σg², loss sum, Σg² of each tensor in layout order]. Per-tensor sums are two `segment_sum`
//! passes (chunks of ≤ 8192 floats of each tensor, then each tensor's chunks), the global one a third.

use super::step::{GpuStep, PendingLoss};
use super::{Gpu, GpuBuffer, Readback};
use crate::backend::AdamW;
use crate::error::Result;
use crate::model::{Batch, Model};
use crate::rng::Rng;

/// Scalars slots.
const GRAD_SQ: usize = 0;
const LOSS: usize = 1;
const TENSORS: usize = 2;
/// Floats per chunk of the first gradient-norm pass.
const CHUNK: usize = 8192;

pub struct GpuTrainer {
    pub gpu: Gpu,
    params: GpuBuffer<f32>,
    grads: GpuBuffer<f32>,
    m: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    /// 1 per 64-float block of a tensor with weight decay.
    decay: GpuBuffer<u32>,
    scalars: GpuBuffer<f32>,
    /// (start, end) of each chunk of each tensor of the gradient buffer.
    chunk_segs: GpuBuffer<u32>,
    /// (first, end) chunk of each tensor.
    tensor_segs: GpuBuffer<u32>,
    /// The one segment of all tensors.
    all_segs: GpuBuffer<u32>,
    partials: GpuBuffer<f32>,
    tensor_sums: GpuBuffer<f32>,
    n_tensors: usize,
    /// AdamW steps taken on the device.
    pub t: u32,
}

/// A step submitted and not yet read back.
pub struct PendingStep {
    loss: PendingLoss,
    /// None when nothing was submitted (a batch without a counted target: its loss is NaN).
    scalars: Option<Readback<f32>>,
}

/// What one step reads back.
#[derive(Clone, Debug)]
pub struct StepScalars {
    /// Mean loss (NaN when no target counted).
    pub loss: f32,
    /// Σg² over every parameter, before clipping.
    pub grad_sq: f32,
    /// Σg² of each tensor, in layout order.
    pub tensor_sq: Vec<f32>,
}

impl StepScalars {
    /// Whether the step was taken (the device applied AdamW only then).
    pub fn finite(&self) -> bool {
        self.loss.is_finite() && self.grad_sq.is_finite()
    }
}

impl GpuTrainer {
    /// Uploads the model's parameters and the optimizer state (`m`, `v` laid out like the parameters; empty or
    /// mismatched means zeros) and lays out the step's fixed buffers.
    pub fn new(gpu: Gpu, model: &Model, m: &[f32], v: &[f32], t: u32) -> Result<GpuTrainer> {
        let n = model.params.len();
        let layout = &model.layout;
        let mut decay = vec![0u32; n.div_ceil(64)];
        let (mut chunks, mut tensor_segs) = (vec![], vec![]);
        for ti in &layout.tensors {
            let (start, end) = (ti.view.offset, ti.view.offset + ti.view.len);
            if ti.decay {
                decay[start / 64..end.div_ceil(64)].iter_mut().for_each(|d| *d = 1);
            }
            let first = chunks.len() / 2;
            for s in (start..end).step_by(CHUNK) {
                chunks.extend([s as u32, (s + CHUNK).min(end) as u32]);
            }
            tensor_segs.extend([first as u32, (chunks.len() / 2) as u32]);
        }
        let nt = layout.tensors.len();
        let zeros = |len| gpu.zeros::<f32>(len);
        let state = |x: &[f32]| if x.len() == n { gpu.upload(x) } else { gpu.zeros(n) };
        Ok(GpuTrainer {
            params: gpu.upload(&model.params)?,
            grads: zeros(n)?,
            m: state(m)?,
            v: state(v)?,
            decay: gpu.upload(&decay)?,
            scalars: zeros(TENSORS + nt)?,
            partials: zeros(chunks.len() / 2)?,
            chunk_segs: gpu.upload(&chunks)?,
            tensor_segs: gpu.upload(&tensor_segs)?,
            all_segs: gpu.upload(&[0u32, nt as u32])?,
            tensor_sums: zeros(nt)?,
            n_tensors: nt,
            t,
            gpu,
        })
    }

    /// (head size, relative-bias buckets) of the model's attention kernels: in the browser, await
    /// `gpu.prepare(&GpuTrainer::attention_kernels(model))` before the first step.
    pub fn attention_kernels(model: &Model) -> Vec<(usize, usize)> {
        let buckets = match model.cfg.position {
            crate::config::Position::Relative { buckets, .. } => buckets,
            _ => 0,
        };
        vec![(model.cfg.head_size(), buckets)]
    }

    /// Records one training step and submits it: forward, backward, gradient norms, clipping to `clip` (0: none),
    /// then AdamW with `h` (h.t = the step number from 1; applied only if the loss and Σg² are finite), and the
    /// copy of the scalars. Returns before the device has run it.
    pub fn submit_step(&mut self, model: &Model, batch: &Batch, dropout: Option<&mut Rng>, h: &AdamW, clip: f32) -> Result<PendingStep> {
        self.gpu.ctx.check_lost()?;
        if batch.targets.iter().all(|&t| t < 0) {
            // The mean loss is NaN (as on the CPU) and the step diverges; the guard could not see it (the loss sum
            // would be 0), so nothing is submitted.
            return Ok(PendingStep { loss: PendingLoss { slot: LOSS, count: 0 }, scalars: None });
        }
        let step = GpuStep::new(&self.gpu, self.scalars.all(), LOSS);
        step.record(|g, e| {
            g.clear(e, self.grads.all());
            g.clear(e, self.scalars.all());
            Ok(())
        })?;
        let fwd = model.forward_on(&step, &self.params, batch, dropout)?;
        model.backward_on(&step, &self.params, &fwd, batch, &mut self.grads)?;
        let loss = fwd.loss;
        drop(fwd);
        let nt = self.n_tensors;
        let scalars = step.record(|g, e| {
            g.segment_sum(e, self.partials.all(), 0, self.grads.all(), self.chunk_segs.all(), true)?;
            g.segment_sum(e, self.tensor_sums.all(), 0, self.partials.all(), self.tensor_segs.all(), false)?;
            g.segment_sum(e, self.scalars.all(), GRAD_SQ, self.tensor_sums.all(), self.all_segs.all(), false)?;
            g.copy(e, self.scalars.slice(TENSORS, nt)?, self.tensor_sums.all())?;
            g.clip_grads(e, self.grads.all(), self.scalars.slice(GRAD_SQ, 1)?, clip)?;
            let guard = self.scalars.slice(GRAD_SQ, 2)?;
            g.adamw_flat(e, self.params.all(), self.grads.all(), self.m.all(), self.v.all(), self.decay.all(), guard, h)?;
            Ok(g.read_after(e, self.scalars.all()))
        })?;
        self.gpu.submit(step.finish())?;
        Ok(PendingStep { loss, scalars: Some(scalars) })
    }

    /// Waits for a submitted step and reads its scalars back; counts the AdamW step when it was taken.
    pub async fn finish_step(&mut self, p: PendingStep) -> Result<StepScalars> {
        let s = match p.scalars {
            Some(rb) => rb.wait(&self.gpu).await?,
            None => vec![f32::NAN; TENSORS + self.n_tensors],
        };
        let out = StepScalars { loss: p.loss.mean(&s), grad_sq: s[GRAD_SQ], tensor_sq: s[TENSORS..].to_vec() };
        if out.finite() {
            self.t += 1;
        }
        Ok(out)
    }

    /// `submit_step` then `finish_step`, blocking (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&mut self, model: &Model, batch: &Batch, dropout: Option<&mut Rng>, h: &AdamW, clip: f32) -> Result<StepScalars> {
        let p = self.submit_step(model, batch, dropout, h, clip)?;
        pollster::block_on(self.finish_step(p))
    }

    /// Mean loss of each batch (no dropout, no gradients): one submission per batch, one readback for all.
    pub async fn eval_losses(&self, model: &Model, batches: &[Batch]) -> Result<Vec<f32>> {
        let slots = self.gpu.pooled::<f32>(batches.len())?;
        let mut losses = Vec::with_capacity(batches.len());
        let mut last = None;
        for (i, batch) in batches.iter().enumerate() {
            let step = GpuStep::new(&self.gpu, slots.all(), i);
            let fwd = model.forward_on(&step, &self.params, batch, None)?;
            losses.push(fwd.loss);
            drop(fwd);
            if i + 1 == batches.len() {
                last = Some(step.record(|g, e| Ok(g.read_after(e, slots.all())))?);
            }
            self.gpu.submit(step.finish())?;
        }
        let s = match last {
            Some(rb) => rb.wait(&self.gpu).await?,
            None => vec![],
        };
        Ok(losses.iter().map(|l| l.mean(&s)).collect())
    }

    /// The device's parameters and AdamW moments (m, v), read back (one submission).
    pub async fn download(&self) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        self.gpu.ctx.check_lost()?;
        let mut enc = self.gpu.encoder();
        let [p, m, v] = [&self.params, &self.m, &self.v].map(|b| self.gpu.read_after(&mut enc, b.all()));
        self.gpu.submit(enc)?;
        Ok((p.wait(&self.gpu).await?, m.wait(&self.gpu).await?, v.wait(&self.gpu).await?))
    }

    /// Overwrites the device state with host copies (after loading a checkpoint, say).
    pub fn upload(&mut self, params: &[f32], m: &[f32], v: &[f32], t: u32) -> Result<()> {
        self.gpu.write(self.params.all(), params)?;
        self.gpu.write(self.m.all(), m)?;
        self.gpu.write(self.v.all(), v)?;
        self.t = t;
        Ok(())
    }
}
