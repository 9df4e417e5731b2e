//! `GpuStep`: the op trait on the GPU. Every op the model code calls is recorded into one command encoder over
//! buffers that stay on the device: the flat parameter, gradient and moment buffers (cut into tensors by the
//! layout's views, each starting on a 64-float boundary so it binds as a storage view) and the activations
//! (pooled: allocated at the first step of a shape, reused after). Host data the model passes — token ids,
//! targets, dropout masks, ALiBi slopes, T5 buckets, the sinusoidal table, the embedding-gradient row lists, the
//! optimizer's segments — is uploaded into pooled buffers as it comes. Nothing is read back until the caller
//! submits (`finish`): the mean loss is left in a device scalar (`PendingLoss`), and `read` schedules a copy.

use super::glue::csr;
use super::{gpu_error, Encoder, Gpu, GpuBuffer, GpuSlice, Pooled, Readback};
use super::moe::RowPass;
use crate::backend::{AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Routing, Segment, View};
use crate::config::{Activation, NormKind};
use crate::error::Result;
use std::cell::{Cell, RefCell};

/// A mean cross-entropy still on the device: the sum of the row losses is in the scalars buffer at `slot`; the
/// mean is sum / count (NaN when count = 0), formed on the host after the readback, as the CPU forms it.
#[derive(Clone, Copy, Debug)]
pub struct PendingLoss {
    pub slot: usize,
    pub count: usize,
}

impl PendingLoss {
    /// The mean loss from the scalars read back.
    pub fn mean(&self, scalars: &[f32]) -> f32 {
        match scalars.get(self.slot) {
            None => f32::NAN,
            Some(&total) => crate::backend::ops::mean_loss(total as f64, self.count),
        }
    }
}

/// Floats per chunk of the first pass of `sums_of_squares`.
const CHUNK: usize = 8192;

/// Records the model's ops for one submission.
pub struct GpuStep<'g> {
    gpu: &'g Gpu,
    enc: RefCell<Encoder>,
    /// Where loss sums go, from `next_slot` on (a handle to the caller's buffer).
    scalars: GpuBuffer<f32>,
    next_slot: Cell<usize>,
    /// [Σg², loss sum] of the step recorded before this one, kept on the device by the caller (`with_last_guard`):
    /// AdamW refuses to update when they are not finite, then this step's go there.
    last_guard: Option<GpuBuffer<f32>>,
}

impl<'g> GpuStep<'g> {
    /// Loss sums land in `scalars` at `first_slot`, `first_slot + 1`, … (one per forward pass recorded).
    pub fn new(gpu: &'g Gpu, scalars: &GpuBuffer<f32>, first_slot: usize) -> GpuStep<'g> {
        GpuStep { gpu, enc: RefCell::new(gpu.encoder()), scalars: scalars.clone(), next_slot: Cell::new(first_slot), last_guard: None }
    }

    /// AdamW also reads the guard [Σg², loss sum] of the step before from `last` (2 floats, zeros at first) and
    /// updates nothing when it is not finite; then it leaves this step's there. So a step submitted before the
    /// host has read the one before it (`train::gpu`) cannot move a state that the step before left diverged.
    pub fn with_last_guard(mut self, last: &GpuBuffer<f32>) -> GpuStep<'g> {
        self.last_guard = Some(last.clone());
        self
    }

    /// `new`, with the dispatches replaying `tape` (`Tape`: a training step's bind groups and parameter slots,
    /// created at its first step and reused after).
    pub fn replaying(gpu: &'g Gpu, scalars: &GpuBuffer<f32>, first_slot: usize, tape: &super::Tape) -> GpuStep<'g> {
        GpuStep { enc: RefCell::new(gpu.encoder_on(tape)), ..GpuStep::new(gpu, scalars, first_slot) }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Runs `f` on the encoder (to record the trainer's own ops between the model's).
    pub fn record<R>(&self, f: impl FnOnce(&Gpu, &mut Encoder) -> Result<R>) -> Result<R> {
        f(self.gpu, &mut self.enc.borrow_mut())
    }

    /// The recorded commands, ready to submit.
    pub fn finish(self) -> Encoder {
        self.enc.into_inner()
    }

    fn with<R>(&self, f: impl FnOnce(&Gpu, &mut Encoder) -> Result<R>) -> Result<R> {
        f(self.gpu, &mut self.enc.borrow_mut())
    }

    fn upload_u32(&self, data: &[u32]) -> Result<Pooled<u32>> {
        self.gpu.pooled_upload(data)
    }
}

/// The tensor `v` of a flat buffer; a view outside it is an error (never a shorter or empty view).
fn view_of(b: &GpuBuffer<f32>, v: View) -> Result<GpuSlice<'_, f32>> {
    b.slice(v.offset, v.len)
}

impl<'g> Backend for GpuStep<'g> {
    type Buf = Pooled<f32>;
    type In<'a> = GpuSlice<'a, f32>;
    type Out<'a> = GpuSlice<'a, f32>;
    type Params = GpuBuffer<f32>;
    type Loss = PendingLoss;
    type Read = Readback<f32>;

    fn name(&self) -> &'static str {
        "gpu"
    }

    fn zeros(&self, n: usize) -> Result<Pooled<f32>> {
        self.with(|g, e| g.pooled_zeros(e, n))
    }
    /// Not cleared: whatever the pool's buffer held until the op overwrites it. With `Gpu::poison_outputs` on,
    /// filled with NaN first, so an op that leaves any element unwritten shows in the loss.
    fn output(&self, n: usize) -> Result<Pooled<f32>> {
        let out = self.gpu.pooled::<f32>(n)?;
        if self.gpu.poisons_outputs() {
            self.with(|g, e| g.scale(e, out.all(), f32::NAN))?;
        }
        Ok(out)
    }
    fn upload(&self, data: Vec<f32>) -> Result<Pooled<f32>> {
        self.gpu.pooled_upload(&data)
    }
    fn copy_of(&self, x: GpuSlice<f32>) -> Result<Pooled<f32>> {
        let out = self.gpu.pooled::<f32>(x.len())?;
        self.with(|g, e| g.copy(e, out.all(), x))?;
        Ok(out)
    }
    fn zero(&self, x: GpuSlice<f32>) -> Result<()> {
        self.with(|g, e| {
            g.clear(e, x);
            Ok(())
        })
    }
    fn read(&self, x: GpuSlice<f32>) -> Result<Readback<f32>> {
        self.with(|g, e| Ok(g.read_after(e, x)))
    }
    fn known(&self, _x: GpuSlice<f32>) -> Option<Vec<f32>> {
        None
    }
    fn loss_value(loss: PendingLoss, scalars: &[f32]) -> f32 {
        loss.mean(scalars)
    }
    fn view(x: &Pooled<f32>) -> GpuSlice<'_, f32> {
        x.all()
    }
    fn len(x: GpuSlice<f32>) -> usize {
        x.len()
    }
    fn view_mut(x: &mut Pooled<f32>) -> GpuSlice<'_, f32> {
        x.all()
    }
    fn param(p: &GpuBuffer<f32>, v: View) -> Result<GpuSlice<'_, f32>> {
        view_of(p, v)
    }
    fn grad(g: &mut GpuBuffer<f32>, v: View) -> Result<GpuSlice<'_, f32>> {
        view_of(g, v)
    }
    fn grad_many<'a>(g: &'a mut GpuBuffer<f32>, views: &[View]) -> Result<Vec<GpuSlice<'a, f32>>> {
        let g: &GpuBuffer<f32> = g;
        for (i, a) in views.iter().enumerate() {
            if let Some(b) = views[..i].iter().find(|b| a.offset < b.offset + b.len && b.offset < a.offset + a.len) {
                return Err(gpu_error(format!("overlapping tensors {a:?} and {b:?}")));
            }
        }
        views.iter().map(|&v| view_of(g, v)).collect()
    }
    fn grad_pair(g: &mut GpuBuffer<f32>, a: View, b: Option<View>) -> Result<(GpuSlice<'_, f32>, Option<GpuSlice<'_, f32>>)> {
        let g: &GpuBuffer<f32> = g;
        if let Some(b) = b {
            if a.offset < b.offset + b.len && b.offset < a.offset + a.len {
                return Err(gpu_error(format!("overlapping tensors {a:?} and {b:?}")));
            }
        }
        Ok((view_of(g, a)?, b.map(|b| view_of(g, b)).transpose()?))
    }

    fn matmul_forward(&self, out: GpuSlice<f32>, inp: GpuSlice<f32>, w: GpuSlice<f32>, b: Option<GpuSlice<f32>>, n: usize, c: usize, oc: usize) -> Result<()> {
        self.with(|g, e| g.matmul_forward(e, out, inp, w, b, n, c, oc))
    }

    fn matmul_backward(
        &self,
        dinp: Option<GpuSlice<f32>>,
        dw: GpuSlice<f32>,
        db: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        self.with(|g, e| g.matmul_backward(e, dinp, dw, db, dout, inp, w, n, c, oc))
    }

    fn norm_forward(
        &self,
        kind: NormKind,
        out: GpuSlice<f32>,
        mean: GpuSlice<f32>,
        rstd: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        b: Option<GpuSlice<f32>>,
        eps: f32,
        c: usize,
    ) -> Result<()> {
        self.with(|g, e| g.norm_forward(e, kind, out, mean, rstd, inp, w, b, eps, c))
    }

    fn norm_backward(
        &self,
        kind: NormKind,
        dinp: GpuSlice<f32>,
        dw: GpuSlice<f32>,
        db: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        mean: GpuSlice<f32>,
        rstd: GpuSlice<f32>,
        c: usize,
    ) -> Result<()> {
        self.with(|g, e| g.norm_backward(e, kind, dinp, dw, db, dout, inp, w, mean, rstd, c))
    }

    fn attention_forward(
        &self,
        out: GpuSlice<f32>,
        lse: GpuSlice<f32>,
        q: GpuSlice<f32>,
        k: GpuSlice<f32>,
        v: GpuSlice<f32>,
        bias: AttnBias<GpuSlice<f32>>,
        sh: &AttnShape,
    ) -> Result<()> {
        self.with(|g, e| g.attention_forward(e, out, lse, q, k, v, bias, sh))
    }

    fn attention_backward(
        &self,
        grads: AttnGrads<GpuSlice<f32>>,
        dtable: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        q: GpuSlice<f32>,
        k: GpuSlice<f32>,
        v: GpuSlice<f32>,
        out: GpuSlice<f32>,
        lse: GpuSlice<f32>,
        bias: AttnBias<GpuSlice<f32>>,
        sh: &AttnShape,
    ) -> Result<()> {
        self.with(|g, e| g.attention_backward(e, grads, dtable, dout, q, k, v, out, lse, bias, sh))
    }

    fn activation_forward(&self, act: Activation, out: GpuSlice<f32>, inp: GpuSlice<f32>, f: usize) -> Result<()> {
        self.with(|g, e| g.activation_forward(e, act, out, inp, f))
    }

    fn activation_backward(&self, act: Activation, dinp: GpuSlice<f32>, dout: GpuSlice<f32>, inp: GpuSlice<f32>, _out: GpuSlice<f32>, f: usize) -> Result<()> {
        self.with(|g, e| g.activation_backward(e, act, dinp, dout, inp, f))
    }

    fn matmul_act_forward(
        &self,
        act: Activation,
        pre: GpuSlice<f32>,
        out: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        b: Option<GpuSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        self.with(|g, e| g.matmul_act_forward(e, act, pre, out, inp, w, b, n, c, oc))
    }

    fn matmul_act_backward(
        &self,
        act: Activation,
        dpre: GpuSlice<f32>,
        dw: GpuSlice<f32>,
        db: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        pre: GpuSlice<f32>,
        w: GpuSlice<f32>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        self.with(|g, e| g.matmul_act_backward(e, act, dpre, dw, db, dout, inp, pre, w, n, c, oc))
    }

    fn rope(&self, x: GpuSlice<f32>, lay: HeadLayout, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
        self.with(|g, e| g.rope(e, x, lay, b, h, t, hs, pos0, theta, inverse))
    }

    fn mean_cross_entropy(&self, dlogits: GpuSlice<f32>, logits: GpuSlice<f32>, targets: &[i32], v: usize, count: usize) -> Result<PendingLoss> {
        let slot = self.next_slot.get();
        self.next_slot.set(slot + 1);
        let tg = self.gpu.pooled_upload(targets)?;
        let losses = self.gpu.pooled::<f32>(targets.len())?;
        let dscale = 1.0 / count.max(1) as f32;
        self.with(|g, e| {
            g.cross_entropy(e, dlogits, losses.all(), logits, tg.all(), v, dscale)?;
            g.sum(e, self.scalars.all(), slot, losses.all())
        })?;
        Ok(PendingLoss { slot, count })
    }

    fn embedding_forward(
        &self,
        out: GpuSlice<f32>,
        ids: &[u32],
        wte: GpuSlice<f32>,
        wpe: Option<GpuSlice<f32>>,
        sin: &[f32],
        t: usize,
        pos0: usize,
        c: usize,
    ) -> Result<()> {
        let idb = self.upload_u32(ids)?;
        let pe = if sin.is_empty() { None } else { Some(self.gpu.pooled_upload(sin)?) };
        self.with(|g, e| g.embedding_forward(e, out, idb.all(), wte, wpe, pe.as_ref().map(|p| p.all()), t, pos0, c))
    }

    fn embedding_backward(&self, dwte: GpuSlice<f32>, dwpe: Option<GpuSlice<f32>>, dx: GpuSlice<f32>, ids: &[u32], t: usize, c: usize) -> Result<()> {
        let vocab = dwte.len() / c.max(1);
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(super::gpu_error(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        let tokens = self.upload_u32(&csr(ids.len(), vocab, |r| ids[r] as usize))?;
        self.with(|g, e| g.table_gradient(e, dwte, tokens.all(), dx, vocab, c))?;
        if let Some(dwpe) = dwpe {
            let positions = self.upload_u32(&csr(ids.len(), t, |r| r % t))?;
            self.with(|g, e| g.table_gradient(e, dwpe, positions.all(), dx, t, c))?;
        }
        Ok(())
    }

    fn add_scaled(&self, out: GpuSlice<f32>, a: GpuSlice<f32>, b: GpuSlice<f32>, alpha: f32) -> Result<()> {
        self.with(|g, e| g.add_scaled(e, out, a, b, alpha))
    }

    fn scale(&self, out: GpuSlice<f32>, a: GpuSlice<f32>, alpha: f32) -> Result<()> {
        self.with(|g, e| g.scale_into(e, out, a, alpha))
    }

    fn add_into(&self, a: GpuSlice<f32>, b: GpuSlice<f32>) -> Result<()> {
        self.with(|g, e| g.add_into(e, a, b))
    }

    fn mul_into(&self, a: GpuSlice<f32>, m: GpuSlice<f32>) -> Result<()> {
        self.with(|g, e| g.mul_into(e, a, m))
    }

    fn append_heads(&self, out: GpuSlice<f32>, old: GpuSlice<f32>, new: GpuSlice<f32>, new_lay: HeadLayout, h: usize, len: usize, n: usize, hs: usize) -> Result<()> {
        self.with(|g, e| {
            if len > 0 {
                for gi in 0..h {
                    g.copy(e, out.sub(gi * (len + n) * hs, len * hs)?, old.sub(gi * len * hs, len * hs)?)?;
                }
            }
            // The new rows go to positions len.. of each head of out (H, len+n, HS).
            let to = HeadLayout { offset: len * hs, batch: 0, head: (len + n) * hs, row: hs };
            g.copy_heads(e, out, to, new, new_lay, 1, h, n, hs)
        })
    }

    fn moe_route(
        &self,
        probs: GpuSlice<f32>,
        choice: GpuSlice<f32>,
        slot: GpuSlice<f32>,
        weight: GpuSlice<f32>,
        stats: GpuSlice<f32>,
        logits: GpuSlice<f32>,
        n: usize,
        e: usize,
        k: usize,
        cap: usize,
    ) -> Result<()> {
        self.with(|g, enc| g.moe_route(enc, probs, choice, slot, weight, stats, logits, n, e, k, cap))
    }

    fn moe_route_backward(
        &self,
        dlogits: GpuSlice<f32>,
        dweight: GpuSlice<f32>,
        probs: GpuSlice<f32>,
        r: Routing<GpuSlice<f32>>,
        stats: GpuSlice<f32>,
        e: usize,
        aux: f32,
    ) -> Result<()> {
        self.with(|g, enc| g.moe_route_backward(enc, dlogits, dweight, probs, r, stats, e, aux))
    }

    fn moe_gather(&self, xe: GpuSlice<f32>, x: GpuSlice<f32>, r: Routing<GpuSlice<f32>>, ex: usize, rows: usize, c: usize) -> Result<()> {
        self.with(|g, enc| {
            g.clear(enc, xe.sub(0, rows * c)?);
            g.moe_rows(enc, RowPass::Gather, xe, x, None, r, ex, rows, c)
        })
    }

    fn moe_scatter(&self, dx: GpuSlice<f32>, dxe: GpuSlice<f32>, r: Routing<GpuSlice<f32>>, ex: usize, rows: usize, c: usize) -> Result<()> {
        self.with(|g, enc| g.moe_rows(enc, RowPass::Scatter, dx, dxe, None, r, ex, rows, c))
    }

    fn moe_combine(&self, out: GpuSlice<f32>, ye: GpuSlice<f32>, r: Routing<GpuSlice<f32>>, ex: usize, rows: usize, c: usize) -> Result<()> {
        self.with(|g, enc| g.moe_rows(enc, RowPass::Combine, out, ye, None, r, ex, rows, c))
    }

    fn moe_combine_backward(
        &self,
        dye: GpuSlice<f32>,
        dweight: GpuSlice<f32>,
        dout: GpuSlice<f32>,
        ye: GpuSlice<f32>,
        r: Routing<GpuSlice<f32>>,
        ex: usize,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        self.with(|g, enc| {
            g.moe_rows(enc, RowPass::CombineRows, dye, dout, None, r, ex, rows, c)?;
            g.moe_rows(enc, RowPass::CombineWeights, dweight, dout, Some(ye), r, ex, rows, c)
        })
    }

    fn gru_forward(
        &self,
        h: GpuSlice<f32>,
        gates: GpuSlice<f32>,
        gi: GpuSlice<f32>,
        w_hh: GpuSlice<f32>,
        b_hh: Option<GpuSlice<f32>>,
        h0: Option<GpuSlice<f32>>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        self.with(|g, e| g.gru_forward(e, h, gates, gi, w_hh, b_hh, h0, b, t, c))
    }

    fn gru_backward(
        &self,
        dgi: GpuSlice<f32>,
        dw_hh: GpuSlice<f32>,
        db_hh: Option<GpuSlice<f32>>,
        dh: GpuSlice<f32>,
        gates: GpuSlice<f32>,
        h: GpuSlice<f32>,
        h0: Option<GpuSlice<f32>>,
        w_hh: GpuSlice<f32>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        // Scratch for the kernels: every element is written before it is read.
        let dgh = self.gpu.pooled::<f32>(b * t * 3 * c)?;
        let carry = self.gpu.pooled::<f32>(b * c)?;
        self.with(|g, e| g.gru_backward(e, dgi, dw_hh, db_hh, dh, gates, h, h0, w_hh, dgh.all(), carry.all(), b, t, c))
    }

    fn sums_of_squares(&self, out: GpuSlice<f32>, grads: GpuSlice<f32>, segments: &[Segment]) -> Result<()> {
        // Chunks of ≤ CHUNK floats of each segment (Σx²), then each segment's chunks, then all segments.
        let (mut chunks, mut per_segment) = (vec![], vec![]);
        for s in segments {
            let (start, end) = (s.view.offset, s.view.offset + s.view.len);
            let first = chunks.len() / 2;
            for c in (start..end).step_by(CHUNK) {
                chunks.extend([c as u32, (c + CHUNK).min(end) as u32]);
            }
            per_segment.extend([first as u32, (chunks.len() / 2) as u32]);
        }
        let ns = segments.len();
        let (chunks, per_segment) = (self.upload_u32(&chunks)?, self.upload_u32(&per_segment)?);
        let all = self.upload_u32(&[0, ns as u32])?;
        let partials = self.gpu.pooled::<f32>((chunks.len() / 2).max(1))?;
        let (sums, total) = (self.gpu.pooled::<f32>(ns.max(1))?, self.gpu.pooled::<f32>(1)?);
        // Bound buffers start at offset 0 of their own; `out` (anywhere) is only copied into.
        self.with(|g, e| {
            g.segment_sum(e, partials.all(), 0, grads, chunks.all(), true)?;
            g.segment_sum(e, sums.all(), 0, partials.all(), per_segment.all(), false)?;
            g.segment_sum(e, total.all(), 0, sums.all(), all.all(), false)?;
            g.copy(e, out.sub(0, 1)?, total.all())?;
            g.copy(e, out.sub(1, ns)?, sums.all().sub(0, ns)?)
        })
    }

    fn clip_grad_norm(&self, grads: GpuSlice<f32>, sq: GpuSlice<f32>, clip: f32) -> Result<()> {
        if clip <= 0.0 {
            return Ok(());
        }
        // A copy of Σg², so the bound buffer starts on the storage alignment whatever `sq`'s offset.
        let norm = self.gpu.pooled::<f32>(1)?;
        self.with(|g, e| {
            g.copy(e, norm.all(), sq.sub(0, 1)?)?;
            g.clip_grads(e, grads, norm.all(), clip)
        })
    }

    fn adamw(
        &self,
        p: GpuSlice<f32>,
        grads: GpuSlice<f32>,
        m: GpuSlice<f32>,
        v: GpuSlice<f32>,
        segments: &[Segment],
        sq: GpuSlice<f32>,
        loss: PendingLoss,
        h: &AdamW,
    ) -> Result<()> {
        // The kernel runs over the whole flat buffer and decays per 64-float block, which is the trait's AdamW when
        // every segment starts on a block (the layout aligns each tensor so) and what lies between segments is the
        // layout's zero padding with zero gradients (the update leaves it zero). It reads its guard, [Σg², loss sum],
        // from the device; a step with no counted target has a NaN mean loss but a zero sum, so it is refused here.
        if let Some(s) = segments.iter().find(|s| s.view.offset % 64 != 0) {
            return Err(gpu_error(format!("adamw: segment at {} does not start on a 64-float block", s.view.offset)));
        }
        if loss.count == 0 {
            // The host reports this step as diverged (its mean loss is NaN): so must the next step's guard.
            if let Some(last) = &self.last_guard {
                self.gpu.write(last.all(), &[f32::NAN, f32::NAN])?;
            }
            return Ok(());
        }
        let mut decay = vec![0u32; p.len().div_ceil(64)];
        for s in segments.iter().filter(|s| s.decay) {
            let (start, end) = (s.view.offset, s.view.offset + s.view.len);
            decay[start / 64..end.div_ceil(64)].iter_mut().for_each(|d| *d = 1);
        }
        let decay = self.upload_u32(&decay)?;
        // [Σg², loss sum, the step before's two] (zeros when the caller keeps no last guard).
        let guard = self.gpu.pooled::<f32>(4)?;
        self.with(|g, e| {
            g.copy(e, guard.all().sub(0, 1)?, sq.sub(0, 1)?)?;
            g.copy(e, guard.all().sub(1, 1)?, self.scalars.slice(loss.slot, 1)?)?;
            match &self.last_guard {
                Some(last) => g.copy(e, guard.all().sub(2, 2)?, last.all())?,
                None => g.clear(e, guard.all().sub(2, 2)?),
            }
            g.adamw_flat(e, p, grads, m, v, decay.all(), guard.all(), h)?;
            match &self.last_guard {
                Some(last) => g.copy(e, last.all(), guard.all().sub(0, 2)?),
                None => Ok(()),
            }
        })
    }
}
