//! The GPU training engine: parameters, gradients and AdamW's moments live in device buffers for the whole run; a
//! training step — `train::step::record_step`, the same step every backend runs — is recorded over
//! `backend::gpu::GpuStep` into ONE submission, and only its scalars buffer is read back, by a copy in that same
//! submission.
//!
//! Divergence never touches the state: the recorded AdamW reads the loss sum and Σg² on the device and updates
//! nothing when either is not finite, so the host only has to report it (`step::finish_step` turns it into
//! `Error::Diverged`, as on the CPU). A step may be submitted before the one before it is read back (`Run::
//! steps_async`): its AdamW also reads the guard of the step before (`GpuStep::with_last_guard`), so a divergence
//! stops the state where it was even then. The host copies of the parameters and moments are read back on demand
//! (`download`).

use super::step::{self, Recorded, StepBuffers, StepReport};
use crate::backend::gpu::{Gpu, GpuBuffer, GpuStep, PendingLoss, Readback, Tape};
use crate::backend::{AdamW, Backend};
use crate::error::Result;
use crate::model::{Batch, Model};
use crate::rng::Rng;

pub struct GpuTrainer {
    pub gpu: Gpu,
    params: GpuBuffer<f32>,
    grads: GpuBuffer<f32>,
    m: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    /// The step's scalars (`train::step`'s slots).
    scalars: GpuBuffer<f32>,
    /// AdamW steps taken on the device.
    pub t: u32,
    /// What issuing the last step cost.
    pub issue: IssueStats,
    /// The training step's recorded bind groups and parameter slots (made at the first step, replayed after).
    tape: Tape,
    /// [Σg², loss sum] of the last step recorded (`GpuStep::with_last_guard`): a step submitted before the one
    /// before it was read back updates nothing if that one diverged.
    last_guard: GpuBuffer<f32>,
}

/// What issuing one step cost the host: `tp bench --backend gpu` and the engine's `gpuStats` report it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct IssueStats {
    /// Milliseconds from the start of `submit_step` to the return of its `queue.submit`: the model's ops
    /// recorded, the commands encoded and handed to the driver. The GPU's execution is not in it — `submit` returns
    /// before the device runs the step (the step's readback is awaited after it).
    pub issue_ms: f64,
    /// Compute dispatches the step recorded.
    pub dispatches_per_step: u64,
    /// Bind groups created to record it.
    pub bind_groups_per_step: u64,
    /// Uniform parameter slots of the recorded step rewritten because their values changed (AdamW's learning rate
    /// and bias corrections change every step).
    pub param_writes_per_step: u64,
    /// Steps so far whose readback was awaited while the next step was already submitted (`Run::steps_async`).
    pub overlapped_steps: u64,
}

/// What a step of one batch shape holds on the device (`GpuTrainer::plan_step`).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct StepPlan {
    /// The run's own buffers: parameters, gradients, AdamW's m and v, the step's scalars.
    pub state_bytes: u64,
    /// The pool's buffers (activations and scratch), allocated once per batch shape and reused.
    pub pool_bytes: u64,
    /// Dispatches in the step.
    pub dispatches: u64,
}

/// A step submitted and not yet read back.
pub struct PendingStep {
    loss: PendingLoss,
    scalars: Readback<f32>,
    step: usize,
    lr: f32,
    /// The submission holding the step, and the submissions made by then.
    submission: Option<wgpu::SubmissionIndex>,
    submissions: u64,
}

impl PendingStep {
    /// The step's number.
    pub fn step(&self) -> usize {
        self.step
    }
}

impl GpuTrainer {
    /// Uploads the model's parameters and the optimizer state (`m`, `v` laid out like the parameters; empty or
    /// mismatched means zeros).
    pub fn new(gpu: Gpu, model: &Model, m: &[f32], v: &[f32], t: u32) -> Result<GpuTrainer> {
        let n = model.params.len();
        let state = |x: &[f32]| if x.len() == n { gpu.upload(x) } else { gpu.zeros(n) };
        Ok(GpuTrainer {
            params: gpu.upload(&model.params)?,
            grads: gpu.zeros(n)?,
            m: state(m)?,
            v: state(v)?,
            scalars: gpu.zeros(step::scalars_len(model))?,
            t,
            issue: IssueStats::default(),
            tape: Tape::default(),
            last_guard: gpu.zeros(2)?,
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

    /// Records step `step` (`train::step::record_step`, AdamW with `h`: h.t = the step number from 1, clipping to
    /// `clip`) and submits it. Returns before the device has run it.
    pub fn submit_step(&mut self, model: &Model, batch: &Batch, dropout: Option<&mut Rng>, h: &AdamW, clip: f32, step: usize) -> Result<PendingStep> {
        self.gpu.ctx.check_lost()?;
        let (t0, d0, b0, w0) = (crate::backend::gpu::now_ms(), self.gpu.dispatches(), self.gpu.bind_groups(), self.tape.writes());
        let rec = GpuStep::replaying(&self.gpu, &self.scalars, step::loss_slot(model), &self.tape).with_last_guard(&self.last_guard);
        rec.zero(self.grads.all())?;
        let bufs = StepBuffers { params: &mut self.params, grads: &mut self.grads, m: &mut self.m, v: &mut self.v, scalars: &mut self.scalars };
        let Recorded { loss, scalars } = step::record_step(&rec, model, bufs, batch, dropout, h, clip)?;
        self.gpu.submit(rec.finish())?;
        self.issue = IssueStats {
            issue_ms: crate::backend::gpu::now_ms() - t0,
            dispatches_per_step: self.gpu.dispatches() - d0,
            bind_groups_per_step: self.gpu.bind_groups() - b0,
            param_writes_per_step: self.tape.writes() - w0,
            overlapped_steps: self.issue.overlapped_steps,
        };
        Ok(PendingStep { loss, scalars, step, lr: h.lr, submission: self.gpu.last_submission(), submissions: self.gpu.submissions() })
    }

    /// Records a step as `submit_step` does — every buffer it uses allocated (each checked against the
    /// device's maxBufferSize and maxStorageBufferBindingSize as it is bound) and every dispatch's grid checked —
    /// and submits nothing: what a step of this batch shape would hold on this device, without running it. Nothing
    /// of the run's state changes; the pooled buffers are kept for the steps that follow.
    pub fn plan_step(&mut self, model: &Model, batch: &Batch, dropout: Option<&mut Rng>, h: &AdamW, clip: f32) -> Result<StepPlan> {
        self.gpu.ctx.check_lost()?;
        let d0 = self.gpu.dispatches();
        // Not on the run's tape, which its steps replay.
        let rec = GpuStep::new(&self.gpu, &self.scalars, step::loss_slot(model));
        rec.zero(self.grads.all())?;
        let bufs = StepBuffers { params: &mut self.params, grads: &mut self.grads, m: &mut self.m, v: &mut self.v, scalars: &mut self.scalars };
        let recorded = step::record_step(&rec, model, bufs, batch, dropout, h, clip);
        drop(rec.finish());
        drop(recorded?);
        // The step's pooled buffers are free again, as after a submission.
        self.gpu.lock_pool().next_epoch();
        let state_bytes = [&self.params, &self.grads, &self.m, &self.v, &self.scalars, &self.last_guard].iter().map(|b| b.buf.size()).sum();
        Ok(StepPlan { state_bytes, pool_bytes: self.gpu.pool_bytes(), dispatches: self.gpu.dispatches() - d0 })
    }

    /// Waits for a submitted step (not for steps submitted after it) and reads its scalars back: its report, or
    /// `Error::Diverged` (nothing was updated, and a step submitted after it updates nothing either). Counts the
    /// AdamW step when it was taken. Steps are finished in the order they were submitted.
    pub async fn finish_step(&mut self, model: &Model, p: PendingStep) -> Result<StepReport> {
        if self.gpu.submissions() > p.submissions {
            self.issue.overlapped_steps += 1;
        }
        let s = p.scalars.wait_until(&self.gpu, p.submission).await?;
        match step::finish_step::<GpuStep>(model, p.loss, &s, p.step, p.lr) {
            Ok(report) => {
                self.t += 1;
                Ok(report)
            }
            Err(e) => {
                // The divergence is known on the host now: the step after the one it refused may update again
                // (ordered after any step already submitted, which left its own guard there).
                self.gpu.write(self.last_guard.all(), &[0.0, 0.0])?;
                Err(e)
            }
        }
    }

    /// `submit_step` then `finish_step`, blocking (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&mut self, model: &Model, batch: &Batch, dropout: Option<&mut Rng>, h: &AdamW, clip: f32, step: usize) -> Result<StepReport> {
        let p = self.submit_step(model, batch, dropout, h, clip, step)?;
        pollster::block_on(self.finish_step(model, p))
    }

    /// Each batch's (mean loss, counted targets), no dropout, no gradients: one submission per batch, one readback
    /// for all.
    pub async fn eval_losses(&self, model: &Model, batches: &[Batch]) -> Result<Vec<(f32, usize)>> {
        let slots = self.gpu.zeros::<f32>(batches.len().max(1))?;
        let mut losses = Vec::with_capacity(batches.len());
        let mut last = None;
        for (i, batch) in batches.iter().enumerate() {
            let rec = GpuStep::new(&self.gpu, &slots, i);
            let fwd = model.forward_on(&rec, &self.params, batch, None)?;
            losses.push(fwd.loss);
            drop(fwd);
            if i + 1 == batches.len() {
                last = Some(rec.read(slots.all())?);
            }
            self.gpu.submit(rec.finish())?;
        }
        let s = match last {
            Some(rb) => rb.wait(&self.gpu).await?,
            None => vec![],
        };
        Ok(losses.iter().map(|l| (l.mean(&s), l.count)).collect())
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
