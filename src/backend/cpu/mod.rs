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
pub(crate) mod math;
mod matmul;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
mod norm;
mod pointwise;
pub mod portable;
mod simd;
mod tile;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm128;

use super::{AdamW, AttnBias, AttnShape, Backend};
use crate::config::{Activation, NormKind};

pub struct Cpu;

/// Multiply-adds below which a matmul or attention call runs on the calling thread.
const PAR_FLOPS: usize = 1 << 17;
/// Elements below which an element-wise or row-wise op runs on the calling thread.
const PAR_ELEMS: usize = 1 << 14;

/// Whether memory-bound work (zeroing and copying buffers, element-wise adds, norms, AdamW, Σg², clipping) may be
/// split over the pool. Not in the browser: timed op by op inside W1's step in Chromium's threaded build, each of
/// these took longer on 2 threads than on 1 (zeroing 6.4 vs 4.0 ms a step, head split/merge 1.9 vs 0.9, AdamW 1.6
/// vs 1.0, Σg² 0.9 vs 0.5, norm backward 1.5 vs 1.0): waking the sleeping worker for a short pass over memory costs
/// more than it saves. Compute-bound ops (matmul, attention, activations) are split everywhere.
pub const PAR_MEMORY_BOUND: bool = !cfg!(target_arch = "wasm32");

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn matmul_forward(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        matmul::matmul_forward(out, inp, w, b, n, c, oc, n * c * oc >= PAR_FLOPS)
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
    ) {
        matmul::matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc, n * c * oc >= PAR_FLOPS)
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
    ) {
        norm::norm_forward(kind, out, mean, rstd, inp, w, b, eps, c, PAR_MEMORY_BOUND && inp.len() >= PAR_ELEMS)
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
    ) {
        norm::norm_backward(kind, dinp, dw, db, dout, inp, w, mean, rstd, c, PAR_MEMORY_BOUND && inp.len() >= PAR_ELEMS)
    }

    fn attention_forward(
        &self,
        out: &mut [f32],
        lse: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) {
        attention::attention_forward(out, lse, q, k, v, bias, sh, attention_work(sh) >= PAR_FLOPS)
    }

    fn attention_backward(
        &self,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        dtable: Option<&mut [f32]>,
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) {
        let par = attention_work(sh) >= PAR_FLOPS;
        attention::attention_backward(dq, dk, dv, dtable, dout, q, k, v, out, lse, bias, sh, par)
    }

    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) {
        pointwise::activation_forward(act, out, inp, f, inp.len() >= PAR_ELEMS)
    }

    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize) {
        pointwise::activation_backward(act, dinp, dout, inp, out, f, inp.len() >= PAR_ELEMS)
    }

    fn cross_entropy(
        &self,
        dlogits: &mut [f32],
        logits: &[f32],
        targets: &[i32],
        v: usize,
        dscale: f32,
    ) -> (f64, usize) {
        pointwise::cross_entropy(dlogits, logits, targets, v, dscale, targets.len() * v >= PAR_ELEMS)
    }

    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, decay: bool) {
        pointwise::adamw(p, g, m, v, h, decay, PAR_MEMORY_BOUND && p.len() >= 2 * PAR_ELEMS)
    }

    fn sum_squares(&self, g: &[f32]) -> f64 {
        pointwise::sum_squares(g, PAR_MEMORY_BOUND && g.len() >= 4 * PAR_ELEMS)
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
/// sleeps as usual. Results do not change: the ops split their work as before; only who runs a piece differs.
/// Natively this took W1's 2-thread step from 30.5 to 28.4 ms; in Chromium's threaded build it measured no
/// different (104 vs 103 ms with spawned spinners, 117 vs 114 with broadcast ones, within that build's run-to-run
/// spread), so there the workers keep sleeping between ops rather than burn a laptop's battery.
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
