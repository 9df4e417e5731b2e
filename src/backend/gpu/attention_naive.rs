//! Naive (materialising) attention (`wgsl/attention_naive_forward.wgsl`, `attention_naive_backward.wgsl`): the
//! textbook counterpart of the fused kernels in `attention.rs`, kept for teaching and for the fused-vs-naive
//! benchmark (`examples/gpu_bench.rs`); training never calls it. The forward writes the scores to a (B,NH,T,S)
//! matrix, turns each row into probabilities P in place and multiplies by V; P is kept for the backward, which
//! needs a second (B,NH,T,S) matrix (dP, then dS). Those two matrices are the memory FlashAttention avoids.
//!
//! Same layouts, masks (causal with q_offset, bidirectional, cross) and head sharing (MHA, GQA, MQA) as the fused
//! kernels, so the same inputs give the same out, dq, dk, dv; no score bias. One invocation per output element,
//! no workgroup memory: readability first.

use super::{gpu_error, need, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::backend::AttnShape;
use crate::error::Result;

/// The kernels' uniform parameters (both files' `Params`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    s: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    causal: u32,
    q_offset: u32,
    scale: f32,
}

/// Invocations per workgroup (the kernels' @workgroup_size).
const WG: usize = 64;

const FORWARD_SRC: &str = include_str!("wgsl/attention_naive_forward.wgsl");
/// q, k, v (read); probs, out (read-write).
const FORWARD_BINDS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
const fn forward(entry: &'static str) -> Kernel {
    Kernel { name: "attention_naive_forward.wgsl", src: FORWARD_SRC, entry, binds: FORWARD_BINDS }
}
static SCORES: Kernel = forward("scores");
static SOFTMAX: Kernel = forward("softmax");
static WEIGHTED_SUM: Kernel = forward("weighted_sum");

const BACKWARD_SRC: &str = include_str!("wgsl/attention_naive_backward.wgsl");
/// q, k, v, dout, probs (read); dscores, grad (read-write).
const BACKWARD_BINDS: &[Access] =
    &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
const fn backward(entry: &'static str) -> Kernel {
    Kernel { name: "attention_naive_backward.wgsl", src: BACKWARD_SRC, entry, binds: BACKWARD_BINDS }
}
static DV: Kernel = backward("dv");
static DPROBS: Kernel = backward("dprobs");
static SOFTMAX_BACKWARD: Kernel = backward("softmax_backward");
static DQ: Kernel = backward("dq");
static DK: Kernel = backward("dk");

/// Every naive kernel (none has compile-time constants), for `Gpu::prepare_attention`.
pub(crate) static KERNELS: &[&Kernel] = &[&SCORES, &SOFTMAX, &WEIGHTED_SUM, &DV, &DPROBS, &SOFTMAX_BACKWARD, &DQ, &DK];

impl Gpu {
    /// Elements of the (B,NH,T,S) probability matrix `attention_naive_forward` fills and its backward reads.
    pub fn attention_naive_probs_len(sh: &AttnShape) -> usize {
        sh.b * sh.nh * sh.t * sh.s
    }

    fn naive_params(sh: &AttnShape) -> Result<Params> {
        if sh.nkv == 0 || !sh.nh.is_multiple_of(sh.nkv) {
            return Err(gpu_error(format!("{} query heads cannot share {} kv heads", sh.nh, sh.nkv)));
        }
        if *sh != sh.with_heads() {
            return Err(gpu_error("naive attention takes q, k, v (and writes dq, dk, dv) in the heads layout, each in its own buffer"));
        }
        // Every index the kernels form must fit in u32, the largest being the (B,NH,T,S) matrix's.
        u32_of("naive attention B·NH·T·S", Gpu::attention_naive_probs_len(sh))?;
        u32_of("naive attention B·NH·T·HS", sh.b * sh.nh * sh.t * sh.hs)?;
        u32_of("naive attention B·NKV·S·HS", sh.b * sh.nkv * sh.s * sh.hs)?;
        Ok(Params {
            b: sh.b as u32,
            t: sh.t as u32,
            s: sh.s as u32,
            nh: sh.nh as u32,
            nkv: sh.nkv as u32,
            hs: sh.hs as u32,
            causal: sh.causal as u32,
            q_offset: u32_of("q_offset", sh.q_offset)?,
            scale: sh.scale,
        })
    }

    /// One invocation per element: the workgroups for `n` of them.
    fn naive_grid(&self, n: usize) -> Result<[u32; 3]> {
        self.grid(n.div_ceil(WG))
    }

    /// out (B,T,NH·HS) = softmax(scale·q·kᵀ, masked) · v, the naive way: probs (B,NH,T,S) receives the
    /// probabilities and keeps them for `attention_naive_backward`. q (B,NH,T,HS), k, v (B,NKV,S,HS).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_naive_forward(
        &self,
        enc: &mut Encoder,
        out: GpuSlice<f32>,
        probs: GpuSlice<f32>,
        q: GpuSlice<f32>,
        k: GpuSlice<f32>,
        v: GpuSlice<f32>,
        sh: &AttnShape,
    ) -> Result<()> {
        if sh.b == 0 || sh.t == 0 {
            return Ok(());
        }
        let p = Gpu::naive_params(sh)?;
        let (nq, nkv, np) =
            (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nkv * sh.s * sh.hs, Gpu::attention_naive_probs_len(sh));
        need("naive attention out", &out, nq)?;
        need("naive attention probs", &probs, np)?;
        need("naive attention q", &q, nq)?;
        need("naive attention k", &k, nkv)?;
        need("naive attention v", &v, nkv)?;
        if sh.s == 0 {
            // No keys: every row's output is 0 (as the fused kernel's).
            self.clear(enc, out.sub(0, nq)?);
            return Ok(());
        }
        let bufs = [q.bind(nq), k.bind(nkv), v.bind(nkv), probs.bind(np), out.bind(nq)];
        let rows = sh.b * sh.nh * sh.t;
        self.dispatch(enc, &SCORES, &[], &p, &bufs, self.naive_grid(np)?)?;
        self.dispatch(enc, &SOFTMAX, &[], &p, &bufs, self.naive_grid(rows)?)?;
        self.dispatch(enc, &WEIGHTED_SUM, &[], &p, &bufs, self.naive_grid(nq)?)
    }

    /// dq (B,NH,T,HS), dk, dv (B,NKV,S,HS) += the gradients of `attention_naive_forward` from the probabilities
    /// it kept. A second (B,NH,T,S) matrix (dP, then dS) comes from the pool for the duration of the submission.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_naive_backward(
        &self,
        enc: &mut Encoder,
        dq: GpuSlice<f32>,
        dk: GpuSlice<f32>,
        dv: GpuSlice<f32>,
        dout: GpuSlice<f32>,
        q: GpuSlice<f32>,
        k: GpuSlice<f32>,
        v: GpuSlice<f32>,
        probs: GpuSlice<f32>,
        sh: &AttnShape,
    ) -> Result<()> {
        if sh.b == 0 || sh.t == 0 || sh.s == 0 {
            return Ok(());
        }
        let p = Gpu::naive_params(sh)?;
        let (nq, nkv, np) =
            (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nkv * sh.s * sh.hs, Gpu::attention_naive_probs_len(sh));
        for (what, s, n) in [("dq", &dq, nq), ("dk", &dk, nkv), ("dv", &dv, nkv), ("dout", &dout, nq), ("q", &q, nq)] {
            need(&format!("naive attention {what}"), s, n)?;
        }
        for (what, s, n) in [("k", &k, nkv), ("v", &v, nkv), ("probs", &probs, np)] {
            need(&format!("naive attention {what}"), s, n)?;
        }
        let dscores = self.pooled::<f32>(np)?;
        let inputs = [q.bind(nq), k.bind(nkv), v.bind(nkv), dout.bind(nq), probs.bind(np), dscores.all().bind(np)];
        let with = |grad| {
            let [a, b, c, d, e, f] = inputs;
            [a, b, c, d, e, f, grad]
        };
        let rows = sh.b * sh.nh * sh.t;
        self.dispatch(enc, &DV, &[], &p, &with(dv.bind(nkv)), self.naive_grid(nkv)?)?;
        self.dispatch(enc, &DPROBS, &[], &p, &with(self.no_output()), self.naive_grid(np)?)?;
        self.dispatch(enc, &SOFTMAX_BACKWARD, &[], &p, &with(self.no_output()), self.naive_grid(rows)?)?;
        self.dispatch(enc, &DQ, &[], &p, &with(dq.bind(nq)), self.naive_grid(nq)?)?;
        self.dispatch(enc, &DK, &[], &p, &with(dk.bind(nkv)), self.naive_grid(nkv)?)
        // dscores goes back to the pool, reusable after this submission.
    }
}
