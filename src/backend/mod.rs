//! The op set the model is written against. One model, several backends: `ops/` is the scalar reference
//! ("version 1": obviously correct, slow), `cpu/` the fast rayon + SIMD-friendly versions (same names, same
//! argument order). Every method has the reference as its default, so a backend overrides only what it speeds up,
//! and tests hold each override to the reference.
//!
//! Argument order follows llm.c: outputs first, then saved caches, then inputs, then parameters, then sizes.
//! Backward methods ACCUMULATE (`+=`) into parameter gradients and into input gradients; callers zero them.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod ops;

use crate::config::{Activation, NormKind};

/// Shape of one attention call. Queries are (B, NH, T, HS), keys and values (B, NKV, S, HS), all contiguous;
/// the output is (B, T, NH·HS), heads concatenated head-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub b: usize,
    /// Query positions in this call.
    pub t: usize,
    /// Key/value positions.
    pub s: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    /// Mask keys after the query's position.
    pub causal: bool,
    /// Absolute position of query 0 (nonzero when decoding with a KV cache: queries come after the cached keys).
    pub q_offset: usize,
    /// Multiplies q·k (1/sqrt(HS) or 1).
    pub scale: f32,
}

impl AttnShape {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.nh / self.nkv
    }
}

/// An additive bias on the attention scores, a function of (head, query position, key position).
#[derive(Clone, Copy, Debug)]
pub enum AttnBias<'a> {
    None,
    /// ALiBi: `-slope[h] · (i - j)` (causal) or `-slope[h] · |i - j|` (bidirectional). slopes (NH)
    Alibi { slopes: &'a [f32] },
    /// T5 relative bias: `table[bucket[i·S + j] · NH + h]`. table (buckets, NH); bucket (T, S) holds the bucket
    /// of key j for query i (absolute query position q_offset + i).
    Relative { table: &'a [f32], bucket: &'a [u32] },
}

impl AttnBias<'_> {
    /// The bias for head `h`, query row `i` (relative to this call), key `j`.
    #[inline]
    pub fn at(&self, sh: &AttnShape, h: usize, i: usize, j: usize) -> f32 {
        match *self {
            AttnBias::None => 0.0,
            AttnBias::Alibi { slopes } => {
                let d = (sh.q_offset + i) as f32 - j as f32;
                -slopes[h] * if sh.causal { d } else { d.abs() }
            }
            AttnBias::Relative { table, bucket } => table[bucket[i * sh.s + j] as usize * sh.nh + h],
        }
    }
}

/// AdamW hyper-parameters for one step (t counts from 1).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub t: u32,
}

pub trait Backend: Sync {
    fn name(&self) -> &'static str;

    /// out (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC)
    fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) {
        ops::matmul_forward(out, inp, w, b, n, c, oc)
    }

    /// dinp (N,C) += dout·w; dw (OC,C) += doutᵀ·inp; db (OC) += Σ_n dout.
    #[allow(clippy::too_many_arguments)]
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
        ops::matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc)
    }

    /// out (N,C) = norm(inp) · w + b; saves mean (N) (layernorm only) and rstd (N).
    #[allow(clippy::too_many_arguments)]
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
        ops::norm_forward(kind, out, mean, rstd, inp, w, b, eps, c)
    }

    /// dinp (N,C) += ∂L/∂inp; dw, db (C) +=.
    #[allow(clippy::too_many_arguments)]
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
        ops::norm_backward(kind, dinp, dw, db, dout, inp, w, mean, rstd, c)
    }

    /// out (B,T,NH·HS) = softmax(scale·q·kᵀ + bias, masked) · v; lse (B,NH,T) = log-sum-exp of each score row.
    fn attention_forward(&self, out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: AttnBias, sh: &AttnShape) {
        ops::attention_forward(out, lse, q, k, v, bias, sh)
    }

    /// dq (B,NH,T,HS), dk, dv (B,NKV,S,HS) +=; dtable (buckets,NH) += for a relative bias. Probabilities are
    /// recomputed from lse, so no (T,S) matrix is kept between forward and backward.
    #[allow(clippy::too_many_arguments)]
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
        ops::attention_backward(dq, dk, dv, dtable, dout, q, k, v, out, lse, bias, sh)
    }

    /// out (N,F) = act(inp): inp is (N,F), or (N,2F) [gate | up] for gated activations.
    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) {
        ops::activation_forward(act, out, inp, f)
    }

    /// dinp (N,F or 2F) += ∂L/∂inp. out (N,F) is the forward's output, which a backend may use (the cpu backend
    /// forms GELU's derivative from it); the reference works from inp alone.
    #[allow(clippy::too_many_arguments)]
    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize) {
        let _ = out;
        ops::activation_backward(act, dinp, dout, inp, f)
    }

    /// Fused softmax + cross-entropy + its gradient: returns Σ loss over rows whose target is not -1 and their
    /// count; dlogits (N,V) = (softmax − onehot) · dscale on those rows, 0 on ignored rows.
    fn cross_entropy(&self, dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, dscale: f32) -> (f64, usize) {
        ops::cross_entropy(dlogits, logits, targets, v, dscale)
    }

    /// One AdamW step over a flat buffer; `decay` multiplies weight_decay per element-range (1 or 0).
    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, decay: bool) {
        ops::adamw(p, g, m, v, h, decay)
    }

    /// RoPE in place on x (B·H, T, HS), positions pos0.. ; `inverse` applies the transpose (for the backward).
    fn rope(&self, x: &mut [f32], t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) {
        ops::rope_apply(x, t, hs, pos0, theta, inverse)
    }

    /// Σ g² in f64 (for the global grad norm).
    fn sum_squares(&self, g: &[f32]) -> f64 {
        ops::sum_squares(g)
    }
}

/// The scalar reference backend.
pub struct Reference;
impl Backend for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }
}

/// Which backend a run uses (CLI `--backend`, JS `backend:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Reference,
    Cpu,
    /// Training on the GPU (feature `gpu`): `train::Run` keeps the parameters, gradients, optimizer state and
    /// activations on the device (`gpu::GpuTrainer`). Asking for it in a build without the feature, or where
    /// there is no adapter, is an error when the run is made.
    Gpu,
}

impl BackendKind {
    /// The host backend for this kind. A gpu run trains on the device; what it does on the host (generation,
    /// fill-mask, decoding, attention probes, from its synced copy) runs on the CPU backend.
    pub fn get(self) -> &'static dyn Backend {
        match self {
            BackendKind::Reference => &Reference,
            BackendKind::Cpu | BackendKind::Gpu => &cpu::Cpu,
        }
    }
    pub fn parse(s: &str) -> crate::Result<BackendKind> {
        match s {
            "reference" => Ok(BackendKind::Reference),
            "cpu" => Ok(BackendKind::Cpu),
            "gpu" => Ok(BackendKind::Gpu),
            _ => Err(crate::Error::Invalid(format!("unknown backend {s:?}: expected reference, cpu or gpu"))),
        }
    }
}
