//! One Transformer block, forward and backward: three kinds of sub-layer (self-attention, cross-attention, FFN),
//! each wrapped by the residual/norm arrangement of its placement. `*_backward` mirrors `*_forward` line by line
//! in reverse.

use super::layout::{BlockParams, CrossParams, Linear, Norm, SubNorms};
use super::{Ctx, StackCtx};
use crate::backend::{AttnBias, AttnShape};
use crate::config::{Placement, Position};

/// Saved activations of one sub-layer (shapes (B,T,C) unless noted).
#[derive(Default)]
pub struct SubCache<F> {
    pub x_in: Vec<f32>,
    /// Normed input fed to f (pre, sandwich); empty otherwise (f reads x_in).
    pub h: Vec<f32>,
    pub mean1: Vec<f32>, // (B·T)
    pub rstd1: Vec<f32>, // (B·T)
    /// f's output, after dropout.
    pub y: Vec<f32>,
    /// Dropout mask on y (0 or 1/(1−p)); empty when not dropping.
    pub mask: Vec<f32>,
    /// Input of the second norm: x_in + y (post), α·x_in + y (deepnorm), y (sandwich); empty for pre.
    pub r: Vec<f32>,
    pub mean2: Vec<f32>,
    pub rstd2: Vec<f32>,
    pub f: F,
}

#[derive(Default)]
pub struct AttnCache {
    pub q: Vec<f32>,   // (B,NH,T,HS), after RoPE
    pub k: Vec<f32>,   // (B,NKV,S,HS), after RoPE
    pub v: Vec<f32>,   // (B,NKV,S,HS)
    pub att: Vec<f32>, // (B,T,C) attention output, input of proj
    pub lse: Vec<f32>, // (B,NH,T)
}

#[derive(Default)]
pub struct FfnCache {
    pub a: Vec<f32>, // (B,T,F) or (B,T,2F) pre-activation
    pub act: Vec<f32>, // (B,T,F)
}

pub struct BlockCache {
    pub attn: SubCache<AttnCache>,
    pub cross: Option<SubCache<AttnCache>>,
    pub ffn: SubCache<FfnCache>,
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers over the backend: a linear layer and a norm reading their parameters from the flat buffer.

pub fn linear_forward(ctx: &Ctx, l: &Linear, x: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * l.out];
    ctx.be.matmul_forward(&mut out, x, l.w.of(ctx.params), l.b.map(|b| b.of(ctx.params)), n, l.inp, l.out);
    out
}

/// Returns dx (N, inp); accumulates dW, db into ctx.grads.
pub fn linear_backward(ctx: &mut Ctx, l: &Linear, dout: &[f32], x: &[f32], n: usize, need_dx: bool) -> Vec<f32> {
    let mut dx = if need_dx { vec![0.0; n * l.inp] } else { vec![] };
    let grads = ctx.grads.as_deref_mut().expect("backward needs gradients");
    let (dw, db) = split_wb(grads, l);
    ctx.be.matmul_backward(need_dx.then_some(&mut dx[..]), dw, db, dout, x, l.w.of(ctx.params), n, l.inp, l.out);
    dx
}

/// Disjoint mutable views of a linear layer's weight and bias gradients.
fn split_wb<'a>(grads: &'a mut [f32], l: &Linear) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    match l.b {
        None => (l.w.of_mut(grads), None),
        Some(b) => {
            debug_assert!(b.offset >= l.w.offset + l.w.len);
            let (lo, hi) = grads.split_at_mut(b.offset);
            (l.w.of_mut(lo), Some(&mut hi[..b.len]))
        }
    }
}

pub struct NormOut {
    pub out: Vec<f32>,
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

pub fn norm_forward(ctx: &Ctx, nm: &Norm, x: &[f32]) -> NormOut {
    let c = ctx.cfg.d_model;
    let n = x.len() / c;
    let (mut out, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; n], vec![0.0; n]);
    let (w, b) = (nm.w.of(ctx.params), nm.b.map(|b| b.of(ctx.params)));
    ctx.be.norm_forward(ctx.cfg.norm.kind, &mut out, &mut mean, &mut rstd, x, w, b, ctx.cfg.norm.eps, c);
    NormOut { out, mean, rstd }
}

/// dx += norm backward; accumulates dw, db.
pub fn norm_backward(ctx: &mut Ctx, nm: &Norm, dx: &mut [f32], dout: &[f32], x: &[f32], mean: &[f32], rstd: &[f32]) {
    let c = ctx.cfg.d_model;
    let grads = ctx.grads.as_deref_mut().expect("backward needs gradients");
    let (dw, db) = match nm.b {
        None => (nm.w.of_mut(grads), None),
        Some(b) => {
            let (lo, hi) = grads.split_at_mut(b.offset);
            (nm.w.of_mut(lo), Some(&mut hi[..b.len]))
        }
    };
    ctx.be.norm_backward(ctx.cfg.norm.kind, dx, dw, db, dout, x, nm.w.of(ctx.params), mean, rstd, c);
}

// ---------------------------------------------------------------------------------------------------------------
// The residual arrangement shared by every sub-layer.

/// Runs sub-layer f under the placement: post x←N(x+f(x)), pre x←x+f(N(x)), sandwich x←x+N₂(f(N(x))),
/// deepnorm x←N(α·x+f(x)). Returns the cache; its output is `out`.
pub fn sublayer_forward<F>(
    ctx: &mut Ctx,
    st: &StackCtx,
    norms: &SubNorms,
    x_in: Vec<f32>,
    f: impl FnOnce(&mut Ctx, &[f32]) -> (Vec<f32>, F),
) -> (SubCache<F>, Vec<f32>) {
    let placement = ctx.cfg.norm.placement;
    let normed_input = matches!(placement, Placement::Pre | Placement::Sandwich);
    let (h, mean1, rstd1) = if normed_input {
        let n = norm_forward(ctx, &norms.n, &x_in);
        (n.out, n.mean, n.rstd)
    } else {
        (vec![], vec![], vec![])
    };
    let (mut y, fc) = f(ctx, if normed_input { &h } else { &x_in });
    let mask = ctx.dropout_mask(y.len());
    if !mask.is_empty() {
        y.iter_mut().zip(&mask).for_each(|(a, m)| *a *= m);
    }
    let (r, mean2, rstd2, out) = match placement {
        Placement::Pre => {
            let out = x_in.iter().zip(&y).map(|(a, b)| a + b).collect();
            (vec![], vec![], vec![], out)
        }
        Placement::Sandwich => {
            let n = norm_forward(ctx, norms.post.as_ref().expect("sandwich has a post norm"), &y);
            let out = x_in.iter().zip(&n.out).map(|(a, b)| a + b).collect();
            (vec![], n.mean, n.rstd, out)
        }
        Placement::Post | Placement::Deepnorm => {
            let alpha = st.alpha;
            let r: Vec<f32> = x_in.iter().zip(&y).map(|(a, b)| alpha * a + b).collect();
            let n = norm_forward(ctx, &norms.n, &r);
            (r, n.mean, n.rstd, n.out)
        }
    };
    (SubCache { x_in, h, mean1, rstd1, y, mask, r, mean2, rstd2, f: fc }, out)
}

/// Mirror of `sublayer_forward`: from d out returns d x_in. `f_back(ctx, dy, f_input)` returns d f_input.
pub fn sublayer_backward<F>(
    ctx: &mut Ctx,
    st: &StackCtx,
    norms: &SubNorms,
    sc: &SubCache<F>,
    dout: &[f32],
    f_back: impl FnOnce(&mut Ctx, &[f32], &[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let placement = ctx.cfg.norm.placement;
    let n = dout.len();
    let mut dx_in;
    let mut dy = vec![0.0; n];
    match placement {
        Placement::Pre => {
            dx_in = dout.to_vec();
            dy.copy_from_slice(dout);
        }
        Placement::Sandwich => {
            dx_in = dout.to_vec();
            let post = norms.post.as_ref().expect("sandwich has a post norm");
            norm_backward(ctx, post, &mut dy, dout, &sc.y, &sc.mean2, &sc.rstd2);
        }
        Placement::Post | Placement::Deepnorm => {
            // dr = N'(dout); dy = dr; dx_in = α·dr (+ f's path below).
            norm_backward(ctx, &norms.n, &mut dy, dout, &sc.r, &sc.mean2, &sc.rstd2);
            dx_in = dy.iter().map(|d| st.alpha * d).collect();
        }
    }
    if !sc.mask.is_empty() {
        dy.iter_mut().zip(&sc.mask).for_each(|(a, m)| *a *= m);
    }
    let normed_input = matches!(placement, Placement::Pre | Placement::Sandwich);
    let dfin = f_back(ctx, &dy, if normed_input { &sc.h } else { &sc.x_in });
    if normed_input {
        norm_backward(ctx, &norms.n, &mut dx_in, &dfin, &sc.x_in, &sc.mean1, &sc.rstd1);
    } else {
        dx_in.iter_mut().zip(&dfin).for_each(|(a, b)| *a += b);
    }
    dx_in
}

// ---------------------------------------------------------------------------------------------------------------
// Head layout: projections produce rows (B·T, …, H·HS, …); attention wants (B, H, T, HS).

/// (B,T,stride)[.., off + h·HS + d] → (B,H,T,HS)
pub fn split_heads(src: &[f32], b: usize, t: usize, stride: usize, off: usize, nh: usize, hs: usize) -> Vec<f32> {
    let mut out = vec![0.0; b * nh * t * hs];
    for bi in 0..b {
        for ti in 0..t {
            let row = &src[(bi * t + ti) * stride + off..];
            for h in 0..nh {
                out[((bi * nh + h) * t + ti) * hs..][..hs].copy_from_slice(&row[h * hs..(h + 1) * hs]);
            }
        }
    }
    out
}

/// Inverse of `split_heads`, writing into dst's columns [off, off + H·HS).
pub fn merge_heads(dst: &mut [f32], src: &[f32], b: usize, t: usize, stride: usize, off: usize, nh: usize, hs: usize) {
    for bi in 0..b {
        for ti in 0..t {
            let row = &mut dst[(bi * t + ti) * stride + off..];
            for h in 0..nh {
                row[h * hs..(h + 1) * hs].copy_from_slice(&src[((bi * nh + h) * t + ti) * hs..][..hs]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The three sub-layer functions.

pub fn attn_shape(ctx: &Ctx, b: usize, t: usize, s: usize, causal: bool, q_offset: usize) -> AttnShape {
    let m = ctx.cfg;
    let scale = match m.attention.scale {
        crate::config::AttnScale::InvSqrtDk => 1.0 / (m.head_size() as f32).sqrt(),
        crate::config::AttnScale::None => 1.0,
    };
    AttnShape { b, t, s, nh: m.n_heads, nkv: m.n_kv_heads, hs: m.head_size(), causal, q_offset, scale }
}

pub fn self_bias<'a>(ctx: &Ctx<'a>, st: &'a StackCtx) -> AttnBias<'a> {
    match ctx.cfg.position {
        Position::Alibi => AttnBias::Alibi { slopes: &st.alibi },
        Position::Relative { .. } => AttnBias::Relative { table: st.rel_table.expect("relative table").of(ctx.params), bucket: &st.buckets },
        _ => AttnBias::None,
    }
}

/// Self-attention: qkv = h·Wqkvᵀ → RoPE(q, k) → softmax(qkᵀ)v → proj.
pub fn self_attention_forward(ctx: &mut Ctx, st: &StackCtx, p: &BlockParams, h: &[f32]) -> (Vec<f32>, AttnCache) {
    let (b, t) = (st.b, st.t);
    let m = ctx.cfg;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let qkv = linear_forward(ctx, &p.qkv, h, b * t);
    let w = p.qkv.out;
    let mut q = split_heads(&qkv, b, t, w, 0, nh, hs);
    let mut k = split_heads(&qkv, b, t, w, nh * hs, nkv, hs);
    let v = split_heads(&qkv, b, t, w, (nh + nkv) * hs, nkv, hs);
    if let Position::Rope { theta } = m.position {
        ctx.be.rope(&mut q, t, hs, st.pos0, theta, false);
        ctx.be.rope(&mut k, t, hs, st.pos0, theta, false);
    }
    let sh = attn_shape(ctx, b, t, t, st.causal, 0);
    let (mut att, mut lse) = (vec![0.0; b * t * nh * hs], vec![0.0; b * nh * t]);
    ctx.be.attention_forward(&mut att, &mut lse, &q, &k, &v, self_bias(ctx, st), &sh);
    let y = linear_forward(ctx, &p.proj, &att, b * t);
    (y, AttnCache { q, k, v, att, lse })
}

pub fn self_attention_backward(ctx: &mut Ctx, st: &StackCtx, p: &BlockParams, c: &AttnCache, dy: &[f32], h: &[f32]) -> Vec<f32> {
    let (b, t) = (st.b, st.t);
    let m = ctx.cfg;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let datt = linear_backward(ctx, &p.proj, dy, &c.att, b * t, true);
    let (mut dq, mut dk, mut dv) = (vec![0.0; c.q.len()], vec![0.0; c.k.len()], vec![0.0; c.v.len()]);
    let sh = attn_shape(ctx, b, t, t, st.causal, 0);
    let mut dtable = st.rel_table.map(|v| vec![0.0f32; v.len]);
    ctx.be.attention_backward(&mut dq, &mut dk, &mut dv, dtable.as_deref_mut(), &datt, &c.q, &c.k, &c.v, &c.att, &c.lse, self_bias(ctx, st), &sh);
    if let (Some(dt), Some(view)) = (dtable, st.rel_table) {
        let g = view.of_mut(ctx.grads.as_deref_mut().expect("grads"));
        g.iter_mut().zip(&dt).for_each(|(a, b)| *a += b);
    }
    if let Position::Rope { theta } = m.position {
        ctx.be.rope(&mut dq, t, hs, st.pos0, theta, true);
        ctx.be.rope(&mut dk, t, hs, st.pos0, theta, true);
    }
    let w = p.qkv.out;
    let mut dqkv = vec![0.0; b * t * w];
    merge_heads(&mut dqkv, &dq, b, t, w, 0, nh, hs);
    merge_heads(&mut dqkv, &dk, b, t, w, nh * hs, nkv, hs);
    merge_heads(&mut dqkv, &dv, b, t, w, (nh + nkv) * hs, nkv, hs);
    linear_backward(ctx, &p.qkv, &dqkv, h, b * t, true)
}

/// Cross-attention: queries from h (B,T,C), keys and values from the encoder output (B,S,C); no mask, no bias.
pub fn cross_attention_forward(ctx: &mut Ctx, st: &StackCtx, p: &CrossParams, h: &[f32]) -> (Vec<f32>, AttnCache) {
    let (b, t) = (st.b, st.t);
    let (mem, s) = st.memory.expect("decoder of an encoder-decoder has a memory");
    let m = ctx.cfg;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let qp = linear_forward(ctx, &p.q, h, b * t);
    let q = split_heads(&qp, b, t, nh * hs, 0, nh, hs);
    let kv = linear_forward(ctx, &p.kv, mem, b * s);
    let k = split_heads(&kv, b, s, 2 * nkv * hs, 0, nkv, hs);
    let v = split_heads(&kv, b, s, 2 * nkv * hs, nkv * hs, nkv, hs);
    let sh = attn_shape(ctx, b, t, s, false, 0);
    let (mut att, mut lse) = (vec![0.0; b * t * nh * hs], vec![0.0; b * nh * t]);
    ctx.be.attention_forward(&mut att, &mut lse, &q, &k, &v, AttnBias::None, &sh);
    let y = linear_forward(ctx, &p.proj, &att, b * t);
    (y, AttnCache { q, k, v, att, lse })
}

/// Returns dh; accumulates d memory into `dmem` (B,S,C).
pub fn cross_attention_backward(
    ctx: &mut Ctx,
    st: &StackCtx,
    p: &CrossParams,
    c: &AttnCache,
    dy: &[f32],
    h: &[f32],
    dmem: &mut [f32],
) -> Vec<f32> {
    let (b, t) = (st.b, st.t);
    let (mem, s) = st.memory.expect("memory");
    let m = ctx.cfg;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let datt = linear_backward(ctx, &p.proj, dy, &c.att, b * t, true);
    let (mut dq, mut dk, mut dv) = (vec![0.0; c.q.len()], vec![0.0; c.k.len()], vec![0.0; c.v.len()]);
    let sh = attn_shape(ctx, b, t, s, false, 0);
    ctx.be.attention_backward(&mut dq, &mut dk, &mut dv, None, &datt, &c.q, &c.k, &c.v, &c.att, &c.lse, AttnBias::None, &sh);
    let mut dkv = vec![0.0; b * s * 2 * nkv * hs];
    merge_heads(&mut dkv, &dk, b, s, 2 * nkv * hs, 0, nkv, hs);
    merge_heads(&mut dkv, &dv, b, s, 2 * nkv * hs, nkv * hs, nkv, hs);
    let dm = linear_backward(ctx, &p.kv, &dkv, mem, b * s, true);
    dmem.iter_mut().zip(&dm).for_each(|(a, b)| *a += b);
    let mut dqp = vec![0.0; b * t * nh * hs];
    merge_heads(&mut dqp, &dq, b, t, nh * hs, 0, nh, hs);
    linear_backward(ctx, &p.q, &dqp, h, b * t, true)
}

/// FFN: act(h·Wfcᵀ + b)·Wprojᵀ + b (gated: act(gate) ⊙ up).
pub fn ffn_forward(ctx: &mut Ctx, st: &StackCtx, p: &BlockParams, h: &[f32]) -> (Vec<f32>, FfnCache) {
    let n = st.b * st.t;
    let f = ctx.cfg.ffn_hidden();
    let a = linear_forward(ctx, &p.fc, h, n);
    let mut act = vec![0.0; n * f];
    ctx.be.activation_forward(ctx.cfg.ffn.activation, &mut act, &a, f);
    let y = linear_forward(ctx, &p.fc_proj, &act, n);
    (y, FfnCache { a, act })
}

pub fn ffn_backward(ctx: &mut Ctx, st: &StackCtx, p: &BlockParams, c: &FfnCache, dy: &[f32], h: &[f32]) -> Vec<f32> {
    let n = st.b * st.t;
    let f = ctx.cfg.ffn_hidden();
    let dact = linear_backward(ctx, &p.fc_proj, dy, &c.act, n, true);
    let mut da = vec![0.0; c.a.len()];
    ctx.be.activation_backward(ctx.cfg.ffn.activation, &mut da, &dact, &c.a, f);
    linear_backward(ctx, &p.fc, &da, h, n, true)
}

// ---------------------------------------------------------------------------------------------------------------

pub fn block_forward(ctx: &mut Ctx, st: &StackCtx, p: &BlockParams, x: Vec<f32>) -> (BlockCache, Vec<f32>) {
    let (attn, x) = sublayer_forward(ctx, st, &p.attn_norms, x, |ctx, h| self_attention_forward(ctx, st, p, h));
    let (cross, x) = match &p.cross {
        Some(cp) => {
            let (c, x) = sublayer_forward(ctx, st, &cp.norms, x, |ctx, h| cross_attention_forward(ctx, st, cp, h));
            (Some(c), x)
        }
        None => (None, x),
    };
    let (ffn, x) = sublayer_forward(ctx, st, &p.ffn_norms, x, |ctx, h| ffn_forward(ctx, st, p, h));
    (BlockCache { attn, cross, ffn }, x)
}

pub fn block_backward(ctx: &mut Ctx, st: &StackCtx, p: &BlockParams, c: &BlockCache, dx: &[f32], dmem: &mut [f32]) -> Vec<f32> {
    let dx = sublayer_backward(ctx, st, &p.ffn_norms, &c.ffn, dx, |ctx, dy, h| ffn_backward(ctx, st, p, &c.ffn.f, dy, h));
    let dx = match (&p.cross, &c.cross) {
        (Some(cp), Some(cc)) => {
            sublayer_backward(ctx, st, &cp.norms, cc, &dx, |ctx, dy, h| cross_attention_backward(ctx, st, cp, &cc.f, dy, h, dmem))
        }
        _ => dx,
    };
    sublayer_backward(ctx, st, &p.attn_norms, &c.attn, &dx, |ctx, dy, h| self_attention_backward(ctx, st, p, &c.attn.f, dy, h))
}
