//! The fast CPU backend: rayon over rows / output channels / (batch, head) groups, with SIMD inner loops.
//!
//! SIMD: natively, fixed-width lane accumulators that LLVM vectorises (`simd::multiversion!` compiles them for
//! AVX2 and AVX-512 too) and the `gemm` crate for matmuls. In the browser (wasm32 built with simd128) the
//! building blocks of the hot ops are explicit `core::arch::wasm32` kernels (`wasm128`: the matmul micro-kernel,
//! the attention tiles, reductions, exp, norm rows, AdamW), multiply-adds fused under `+relaxed-simd`. Each
//! caller picks its kernel by `cfg(all(target_arch = "wasm32", target_feature = "simd128"))`; the plain-Rust code
//! (`math::scalar`, `tile::gemm_lanes`, `portable::micro_scalar`, the `_scalar` functions of `norm` and
//! `pointwise`) is the fallback everywhere else and stays compiled on every target, as the kernels' test
//! reference. Without relaxed-simd the kernels give the same bits as that code.
//!
//! Determinism: every op cuts its work into pieces whose sizes depend only on the shapes, never on
//! `rayon::current_num_threads()`; each piece is one task that owns what it writes, and any sum across pieces
//! (norm and bias gradients, the relative-bias table gradient, the loss, Σg²) is formed from per-piece partials
//! added in piece order. So results are bit-identical whatever the thread count. Small inputs run the same pieces
//! sequentially (the threshold is a work size), which gives the same bits again.

mod attention;
mod attention_naive;
mod glue;
mod gru;
pub(crate) mod math;
mod matmul;
mod moe;
#[cfg(not(target_arch = "wasm32"))]
mod native;
mod norm;
mod pointwise;
pub mod portable;
mod rows;
mod simd;
mod tile;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm128;

// The spare buffers a step leaves for the next one's outputs (`Backend::output`, `recycle`), and their test hooks.
pub use glue::{release_spare, set_poison_outputs, spare_buffers};
// Naive (materialising) attention: a teaching and benchmark path beside the op trait, not an op of it.
pub use attention_naive::{
    attention_naive_backward, attention_naive_forward, attention_naive_probs_len, attention_naive_scratch_floats,
};

use super::{ops, AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Routing, Segment};
use crate::config::{Activation, NormKind};
use crate::error::Result;

pub struct Cpu;

/// Multiply-adds below which a matmul or attention call runs on the calling thread.
const PAR_FLOPS: usize = 1 << 17;
/// Elements below which an element-wise or row-wise op runs on the calling thread.
const PAR_ELEMS: usize = 1 << 14;

/// Whether memory-bound work (zeroing and copying buffers, element-wise adds, norms, AdamW, Σg², clipping) may be
/// split over the pool. Not in the browser: there, timed op by op inside W1's step in Chromium's threaded build,
/// each of these takes longer on 2 threads than on 1 (docs/BENCHMARKS.md): waking a sleeping worker for a short
/// pass over memory costs more than it saves. Compute-bound ops (matmul, attention, activations) are split
/// everywhere.
pub const PAR_MEMORY_BOUND: bool = !cfg!(target_arch = "wasm32");

impl Backend for Cpu {
    super::host_buffers!();

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(glue::zeros(n))
    }
    fn output(&self, n: usize) -> Result<Vec<f32>> {
        Ok(glue::output(n))
    }
    fn recycle(&self, bufs: Vec<Vec<f32>>) {
        glue::recycle(bufs)
    }
    fn zero(&self, x: &mut [f32]) -> Result<()> {
        glue::zero(x);
        Ok(())
    }

    fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Result<()> {
        matmul::matmul_forward(out, inp, w, b, n, c, oc, n * c * oc >= PAR_FLOPS);
        Ok(())
    }

    fn matmul_backward(
        &self,
        dinp: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        matmul::matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc, n * c * oc >= PAR_FLOPS);
        Ok(())
    }

    fn norm_forward(
        &self,
        kind: NormKind,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        eps: f32,
        c: usize,
    ) -> Result<()> {
        norm::norm_forward(kind, out, mean, rstd, inp, w, b, eps, c, PAR_MEMORY_BOUND && inp.len() >= PAR_ELEMS);
        Ok(())
    }

    fn norm_backward(
        &self,
        kind: NormKind,
        dinp: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) -> Result<()> {
        norm::norm_backward(kind, dinp, dw, db, dout, inp, w, mean, rstd, c, PAR_MEMORY_BOUND && inp.len() >= PAR_ELEMS);
        Ok(())
    }

    fn attention_forward(&self, out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: AttnBias, sh: &AttnShape) -> Result<()> {
        attention::attention_forward(out, lse, q, k, v, bias, sh, attention_work(sh) >= PAR_FLOPS);
        Ok(())
    }

    fn attention_backward(
        &self,
        grads: AttnGrads<&mut [f32]>,
        dtable: Option<&mut [f32]>,
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) -> Result<()> {
        let par = attention_work(sh) >= PAR_FLOPS;
        attention::attention_backward(grads, dtable, dout, q, k, v, out, lse, bias, sh, par).map_err(crate::Error::Invalid)
    }

    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) -> Result<()> {
        pointwise::activation_forward(act, out, inp, f, inp.len() >= PAR_ELEMS);
        Ok(())
    }

    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize) -> Result<()> {
        pointwise::activation_backward(act, dinp, dout, inp, out, f, inp.len() >= PAR_ELEMS);
        Ok(())
    }

    /// Fused on the training shapes: each matmul task applies the activation to its rows of pre as it finishes them
    /// (`pointwise::Epilogue`), gated activations included (a task holds whole rows, gate and up alike). A decoding
    /// step's few rows (`matmul::fuses_forward`) run the two ops.
    fn matmul_act_forward(
        &self,
        act: Activation,
        pre: &mut [f32],
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        if !matmul::fuses_forward(n) {
            let f = if act.is_gated() { oc / 2 } else { oc };
            self.matmul_forward(pre, inp, w, b, n, c, oc)?;
            return self.activation_forward(act, &mut out[..n * f], &pre[..n * oc], f);
        }
        matmul::matmul_act_forward(act, pre, out, inp, w, b, n, c, oc, n * c * oc >= PAR_FLOPS);
        Ok(())
    }

    /// Fused for plain activations: dout·w's tasks multiply their rows by act'(pre) as they finish them. A gated
    /// activation's gradient (N,2C) is not the shape of the product (N,C), so it runs the two ops on a scratch dact.
    fn matmul_act_backward(
        &self,
        act: Activation,
        dpre: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        pre: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        if act.is_gated() {
            let mut dact = glue::zeros(n * c);
            self.matmul_backward(Some(&mut dact), dw, db, dout, inp, w, n, c, oc)?;
            let dpre = &mut dpre[..n * 2 * c];
            glue::zero(dpre);
            return self.activation_backward(act, dpre, &dact, &pre[..n * 2 * c], &inp[..n * c], c);
        }
        matmul::matmul_act_backward(act, dpre, dw, db, dout, inp, pre, w, n, c, oc, n * c * oc >= PAR_FLOPS);
        Ok(())
    }

    fn rope(&self, x: &mut [f32], lay: HeadLayout, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
        ops::rope_apply(x, lay, b, h, t, hs, pos0, theta, inverse);
        Ok(())
    }

    fn mean_cross_entropy(&self, dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, count: usize) -> Result<f32> {
        let par = targets.len() * v >= PAR_ELEMS;
        let (total, n) = pointwise::cross_entropy(dlogits, logits, targets, v, 1.0 / count.max(1) as f32, par);
        debug_assert_eq!(n, count);
        Ok(ops::mean_loss(total, count))
    }

    fn embedding_forward(&self, out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) -> Result<()> {
        glue::embedding_forward(out, ids, wte, wpe, sin, t, pos0, c);
        Ok(())
    }

    fn embedding_backward(&self, dwte: &mut [f32], dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) -> Result<()> {
        glue::embedding_backward(dwte, dwpe, dx, ids, t, c);
        Ok(())
    }

    fn add_scaled(&self, out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) -> Result<()> {
        glue::add_scaled(out, a, b, alpha);
        Ok(())
    }

    fn scale(&self, out: &mut [f32], a: &[f32], alpha: f32) -> Result<()> {
        glue::scale(out, a, alpha);
        Ok(())
    }

    fn add_into(&self, a: &mut [f32], b: &[f32]) -> Result<()> {
        glue::add_into(a, b);
        Ok(())
    }

    fn mul_into(&self, a: &mut [f32], m: &[f32]) -> Result<()> {
        glue::mul_into(a, m);
        Ok(())
    }

    fn append_heads(&self, out: &mut [f32], old: &[f32], new: &[f32], new_lay: HeadLayout, h: usize, len: usize, n: usize, hs: usize) -> Result<()> {
        // Whole rows of a head at a time: the reference's copies are what the CPU runs.
        ops::append_heads(out, old, new, new_lay, h, len, n, hs);
        Ok(())
    }

    fn moe_route(
        &self,
        probs: &mut [f32],
        choice: &mut [f32],
        slot: &mut [f32],
        weight: &mut [f32],
        stats: &mut [f32],
        logits: &[f32],
        n: usize,
        e: usize,
        k: usize,
        cap: usize,
    ) -> Result<()> {
        ops::moe_route(probs, choice, slot, weight, stats, logits, n, e, k, cap);
        Ok(())
    }

    fn moe_route_backward(&self, dlogits: &mut [f32], dweight: &[f32], probs: &[f32], r: Routing<&[f32]>, stats: &[f32], e: usize, aux: f32) -> Result<()> {
        ops::moe_route_backward(dlogits, dweight, probs, r, stats, e, aux);
        Ok(())
    }

    fn moe_gather(&self, xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        ops::moe_gather(xe, x, r, ex, rows, c);
        Ok(())
    }

    fn moe_scatter(&self, dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        ops::moe_scatter(dx, dxe, r, ex, rows, c);
        Ok(())
    }

    fn moe_combine(&self, out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        ops::moe_combine(out, ye, r, ex, rows, c);
        Ok(())
    }

    fn moe_combine_backward(
        &self,
        dye: &mut [f32],
        dweight: &mut [f32],
        dout: &[f32],
        ye: &[f32],
        r: Routing<&[f32]>,
        ex: usize,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        ops::moe_combine_backward(dye, dweight, dout, ye, r, ex, rows, c);
        Ok(())
    }

    /// Natively, yes: one call over all the experts wakes the pool once where a call per expert wakes it E times
    /// for small matmuls (docs/BENCHMARKS.md, "Mixture-of-Experts"). In the browser the experts run one by one,
    /// as measured there (within 1.1× of the dense step).
    fn groups_experts(&self) -> bool {
        !cfg!(target_arch = "wasm32")
    }

    fn moe_gather_grouped(&self, xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe::moe_gather_grouped(xe, x, r, rows, c);
        Ok(())
    }

    fn moe_scatter_grouped(&self, dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe::moe_scatter_grouped(dx, dxe, r, rows, c);
        Ok(())
    }

    fn moe_combine_grouped(&self, out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe::moe_combine_grouped(out, ye, r, rows, c);
        Ok(())
    }

    fn moe_combine_backward_grouped(&self, dye: &mut [f32], dweight: &mut [f32], dout: &[f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe::moe_combine_backward_grouped(dye, dweight, dout, ye, r, rows, c);
        Ok(())
    }

    fn matmul_grouped_forward(&self, out: &mut [f32], inp: &[f32], w: &[&[f32]], b: &[Option<&[f32]>], rows: &[usize], c: usize, oc: usize) -> Result<()> {
        matmul::matmul_grouped_forward(out, inp, w, b, rows, c, oc, rows.iter().sum::<usize>() * c * oc >= PAR_FLOPS);
        Ok(())
    }

    fn matmul_grouped_backward(
        &self,
        dinp: &mut [f32],
        dw: Vec<&mut [f32]>,
        db: Vec<Option<&mut [f32]>>,
        dout: &[f32],
        inp: &[f32],
        w: &[&[f32]],
        rows: &[usize],
        c: usize,
        oc: usize,
    ) -> Result<()> {
        matmul::matmul_grouped_backward(dinp, dw, db, dout, inp, w, rows, c, oc, rows.iter().sum::<usize>() * c * oc >= PAR_FLOPS);
        Ok(())
    }

    fn gru_forward(&self, h: &mut [f32], gates: &mut [f32], gi: &[f32], w_hh: &[f32], b_hh: Option<&[f32]>, h0: Option<&[f32]>, b: usize, t: usize, c: usize) -> Result<()> {
        gru::gru_forward(h, gates, gi, w_hh, b_hh, h0, b, t, c, b * c * 3 * c >= PAR_FLOPS);
        Ok(())
    }

    fn gru_backward(
        &self,
        dgi: &mut [f32],
        dw_hh: &mut [f32],
        db_hh: Option<&mut [f32]>,
        dh: &[f32],
        gates: &[f32],
        h: &[f32],
        h0: Option<&[f32]>,
        w_hh: &[f32],
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        gru::gru_backward(dgi, dw_hh, db_hh, dh, gates, h, h0, w_hh, b, t, c, b * c * 3 * c >= PAR_FLOPS);
        Ok(())
    }

    fn sums_of_squares(&self, out: &mut [f32], g: &[f32], segments: &[Segment]) -> Result<()> {
        let sums: Vec<f64> = segments
            .iter()
            .map(|s| pointwise::sum_squares(s.view.of(g), PAR_MEMORY_BOUND && s.view.len >= 4 * PAR_ELEMS))
            .collect();
        out[0] = sums.iter().sum::<f64>() as f32;
        out[1..].iter_mut().zip(&sums).for_each(|(o, s)| *o = *s as f32);
        Ok(())
    }

    fn clip_grad_norm(&self, g: &mut [f32], sq: &[f32], clip: f32) -> Result<()> {
        let coef = ops::clip_coef(sq[0], clip);
        if coef != 1.0 {
            glue::scale_in_place(g, coef);
        }
        Ok(())
    }

    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], segments: &[Segment], sq: &[f32], loss: f32, h: &AdamW) -> Result<()> {
        if ops::step_is_good(sq[0], loss) {
            for s in segments {
                let r = s.view;
                let par = PAR_MEMORY_BOUND && r.len >= 2 * PAR_ELEMS;
                pointwise::adamw(r.of_mut(p), r.of(g), r.of_mut(m), r.of_mut(v), h, s.decay, par);
            }
        }
        Ok(())
    }
}

/// Multiply-adds of one attention call (both products, masks ignored).
fn attention_work(sh: &AttnShape) -> usize {
    2 * sh.b * sh.nh * sh.t * sh.s * sh.hs
}

/// Runs `f` (a training step, a forward pass: many short parallel ops in a row) with the pool's other threads kept
/// awake between its ops. A rayon worker that finds no work soon sleeps on a futex (natively) or `Atomics.wait`
/// (in the browser), and the next op pays for waking it: once per op, hundreds of times a step. Here each other
/// worker runs a job that keeps asking the pool for work (`rayon::yield_now` steals and runs pending jobs) while
/// `f` runs, as OpenMP's active wait policy does, but gives up after IDLE_POLLS polls in a row find nothing (a
/// long serial stretch, or a busy machine where spinning would only take a core from someone else), and then
/// sleeps as usual. Results do not change: the ops split their work the same way; only who runs a piece differs.
/// Natively this shortens W1's 2-thread step; in Chromium's threaded build it measures no different, within that
/// build's run-to-run spread (both in docs/BENCHMARKS.md), so there the workers keep sleeping between ops rather
/// than burn a laptop's battery.
pub fn with_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Polls that found no work, in a row, before a worker stops spinning (each is a failed steal attempt,
    /// ≈ 0.1–1 µs).
    const IDLE_POLLS: u32 = 1 << 11;
    if rayon::current_num_threads() <= 1 || cfg!(target_arch = "wasm32") {
        return f();
    }
    let done = Arc::new(AtomicBool::new(false));
    let me = rayon::current_thread_index();
    // A broadcast job reaches every worker through its own queue, so the caller's thread cannot take another
    // worker's spinner off a shared deque before that worker has woken (a spawned job could be, and then nobody
    // spins). The caller's own copy returns at once.
    let flag = Arc::clone(&done);
    rayon::spawn_broadcast(move |ctx| {
        if Some(ctx.index()) == me {
            return;
        }
        let mut idle = 0;
        while idle < IDLE_POLLS && !flag.load(Ordering::Acquire) {
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle = 0;
            } else {
                idle += 1;
                std::hint::spin_loop();
            }
        }
    });
    let r = f();
    done.store(true, Ordering::Release);
    r
}
