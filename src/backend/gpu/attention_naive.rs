//! Naive (materialising) attention (`wgsl/attention_naive_forward.wgsl`, `attention_naive_backward.wgsl`): the
//! textbook counterpart of the fused kernels in `attention.rs`, kept for teaching and for the fused-vs-naive
//! benchmark (`examples/gpu_bench.rs`); training never calls it. The forward writes the scores to a (B,NH,T,S)
//! matrix, turns each row into probabilities P in place and multiplies by V; P is kept for the backward, which
//! needs a second (B,NH,T,S) matrix (dP, then dS). Those two matrices are the memory FlashAttention avoids.
//!
//! Same layouts (q, k, v read and dq, dk, dv added at `AttnShape`'s `HeadLayout`s), masks (causal with q_offset,
//! bidirectional, cross) and head sharing (MHA, GQA, MQA) as the fused kernels, so the same inputs give the same
//! out, dq, dk, dv; no score bias. One invocation per output element,
//! no workgroup memory: readability first.

use super::{gpu_error, layout_u32, need, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::backend::{AttnGrads, AttnShape};
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
    _pad: [u32; 3],
    /// Layouts of q (and dq), k (dk), v (dv): offset, batch, head, row strides.
    q_lay: [u32; 4],
    k_lay: [u32; 4],
    v_lay: [u32; 4],
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
            _pad: [0; 3],
            q_lay: layout_u32(sh.q)?,
            k_lay: layout_u32(sh.k)?,
            v_lay: layout_u32(sh.v)?,
        })
    }

    /// One invocation per element: the workgroups for `n` of them.
    fn naive_grid(&self, n: usize) -> Result<[u32; 3]> {
        self.grid(n.div_ceil(WG))
    }

    /// out (B,T,NH·HS) = softmax(scale·q·kᵀ, masked) · v, the naive way: probs (B,NH,T,S) receives the
    /// probabilities and keeps them for `attention_naive_backward`. q (B,NH,T,HS), k, v (B,NKV,S,HS) at their
    /// layouts in `sh`.
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
        let (nq, np) = (sh.b * sh.nh * sh.t * sh.hs, Gpu::attention_naive_probs_len(sh));
        let (qe, ke, ve) = (sh.q_end(), sh.k_end(), sh.v_end());
        need("naive attention out", &out, nq)?;
        need("naive attention probs", &probs, np)?;
        need("naive attention q", &q, qe)?;
        need("naive attention k", &k, ke)?;
        need("naive attention v", &v, ve)?;
        if sh.s == 0 {
            // No keys: every row's output is 0 (as the fused kernel's).
            self.clear(enc, out.sub(0, nq)?);
            return Ok(());
        }
        let bufs = [q.bind(qe), k.bind(ke), v.bind(ve), probs.bind(np), out.bind(nq)];
        let rows = sh.b * sh.nh * sh.t;
        self.dispatch(enc, &SCORES, &[], &p, &bufs, self.naive_grid(np)?)?;
        self.dispatch(enc, &SOFTMAX, &[], &p, &bufs, self.naive_grid(rows)?)?;
        self.dispatch(enc, &WEIGHTED_SUM, &[], &p, &bufs, self.naive_grid(nq)?)
    }

    /// dq (B,NH,T,HS), dk, dv (B,NKV,S,HS) += the gradients of `attention_naive_forward` at the layouts of q, k,
    /// v, into `grads`, from the probabilities it kept. A second (B,NH,T,S) matrix (dP, then dS) comes from the
    /// pool for the duration of the submission.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_naive_backward(
        &self,
        enc: &mut Encoder,
        grads: AttnGrads<GpuSlice<f32>>,
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
        let (dq, dkv) = match grads {
            AttnGrads::Qkv(all) => (all, all),
            AttnGrads::QAndKv { dq, dkv } => (dq, dkv),
        };
        let (nq, nkv, np) =
            (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nkv * sh.s * sh.hs, Gpu::attention_naive_probs_len(sh));
        let (qe, ke, ve, kve) = (sh.q_end(), sh.k_end(), sh.v_end(), sh.k_end().max(sh.v_end()));
        for (what, s, n) in [("dq", &dq, qe), ("dk, dv", &dkv, kve), ("dout", &dout, nq), ("q", &q, qe)] {
            need(&format!("naive attention {what}"), s, n)?;
        }
        for (what, s, n) in [("k", &k, ke), ("v", &v, ve), ("probs", &probs, np)] {
            need(&format!("naive attention {what}"), s, n)?;
        }
        let dscores = self.pooled::<f32>(np)?;
        let inputs = [q.bind(qe), k.bind(ke), v.bind(ve), dout.bind(nq), probs.bind(np), dscores.all().bind(np)];
        let with = |grad| {
            let [a, b, c, d, e, f] = inputs;
            [a, b, c, d, e, f, grad]
        };
        let rows = sh.b * sh.nh * sh.t;
        self.dispatch(enc, &DV, &[], &p, &with(dkv.bind(kve)), self.naive_grid(nkv)?)?;
        self.dispatch(enc, &DPROBS, &[], &p, &with(self.no_output()), self.naive_grid(np)?)?;
        self.dispatch(enc, &SOFTMAX_BACKWARD, &[], &p, &with(self.no_output()), self.naive_grid(rows)?)?;
        self.dispatch(enc, &DQ, &[], &p, &with(dq.bind(qe)), self.naive_grid(nq)?)?;
        self.dispatch(enc, &DK, &[], &p, &with(dkv.bind(kve)), self.naive_grid(nkv)?)
        // dscores goes back to the pool, reusable after this submission.
    }
}
