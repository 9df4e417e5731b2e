//! One Transformer block, forward and backward: three kinds of sub-layer (self-attention, cross-attention, FFN),
//! each wrapped by the residual/norm arrangement of its placement. `*_backward` mirrors `*_forward` line by line
//! in reverse. Written once over the op trait: the same code runs on the host backends and, recorded into one
//! submission, on the GPU. Decoding with a KV cache runs the same forward with a cache argument (`BlockKv`): the
//! new rows' keys and values are appended to the cache and the queries attend to all of them.

use super::layout::{BlockParams, CrossParams, FfnParams, Linear, Mlp, Norm, SubNorms};
use super::{Buffers, Ctx, StackCtx};
use crate::backend::{moe_stats_len, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Routing};
use crate::config::{ModelConfig, NormKind, Placement, Position};
use crate::error::Result;

/// Saved activations of one sub-layer (shapes (B,T,C) unless noted). `None` where the placement has no such
/// tensor.
pub struct SubCache<F, B = Vec<f32>> {
    pub x_in: B,
    /// Normed input fed to f (pre, sandwich); None otherwise (f reads x_in).
    pub h: Option<B>,
    pub mean1: Option<B>, // (B·T)
    pub rstd1: Option<B>, // (B·T)
    /// f's output, after dropout.
    pub y: B,
    /// Dropout mask on y (0 or 1/(1−p)); None when not dropping.
    pub mask: Option<B>,
    /// Input of the second norm: x_in + y (post), α·x_in + y (deepnorm); None for pre and sandwich (whose second
    /// norm reads y).
    pub r: Option<B>,
    pub mean2: Option<B>,
    pub rstd2: Option<B>,
    pub f: F,
}

/// One attention sub-layer's saved activations. Attention reads q, k and v straight from the projections' outputs
/// (`AttnShape`'s layouts), so those outputs are what is kept.
pub struct AttnCache<B = Vec<f32>> {
    /// The rows attention reads its queries from. Self-attention: qkv (B,T,(NH+2·NKV)·HS), q then k then v in each
    /// row, q and k after RoPE. Cross-attention: q (B,T,NH·HS).
    pub qkv: B,
    /// Cross-attention: kv (B,S,2·NKV·HS), k then v in each row (empty when decoding from a cache).
    /// Self-attention: empty (its k and v are in `qkv`).
    pub kv: B,
    pub att: B, // (B,T,C) attention output, input of proj
    pub lse: B, // (B,NH,T)
}

/// One FFN's saved activations: the dense FFN's over every token, or an expert's over its rows.
pub struct MlpCache<B = Vec<f32>> {
    pub a: B,   // (N,F) or (N,2F) pre-activation
    pub act: B, // (N,F)
}

/// One expert's rows of a Mixture-of-Experts layer: its input, activations and output, (rows, ·) each.
pub struct ExpertCache<B = Vec<f32>> {
    pub rows: usize,
    pub xe: B,
    pub mlp: MlpCache<B>,
    pub ye: B,
}

/// A Mixture-of-Experts layer's routing (see `Backend::moe_route`) and its experts' caches.
pub struct MoeCache<B = Vec<f32>> {
    pub probs: B, // (N,E)
    pub choice: B,
    pub slot: B,
    pub weight: B,
    /// [balancing loss, dropped, assignments per expert]
    pub stats: B,
    pub experts: ExpertCaches<B>,
}

/// The experts' saved activations: each expert's own, run one by one (None: no rows), or every expert's rows in
/// one set of buffers, expert-major (`Backend::groups_experts`), with the rows of each expert.
pub enum ExpertCaches<B = Vec<f32>> {
    Each(Vec<Option<ExpertCache<B>>>),
    Grouped { rows: Vec<usize>, all: ExpertCache<B> },
}

pub enum FfnCache<B = Vec<f32>> {
    Dense(MlpCache<B>),
    Moe(MoeCache<B>),
}

/// Keys and values of one attention layer kept between decoding calls: (NKV, len, HS) each.
pub struct KvCache<B = Vec<f32>> {
    pub k: B,
    pub v: B,
    /// Positions held.
    pub len: usize,
}

/// A block's KV cache: its self-attention's (growing with every call) and, in an encoder-decoder, its
/// cross-attention's (the source's keys and values, computed once per source).
pub struct BlockKv<B = Vec<f32>> {
    pub self_kv: KvCache<B>,
    pub cross: Option<KvCache<B>>,
}

pub struct BlockCache<B = Vec<f32>> {
    pub attn: SubCache<AttnCache<B>, B>,
    pub cross: Option<SubCache<AttnCache<B>, B>>,
    pub ffn: SubCache<FfnCache<B>, B>,
}

impl<F: Buffers<B>, B> Buffers<B> for SubCache<F, B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let SubCache { x_in, h, mean1, rstd1, y, mask, r, mean2, rstd2, f } = self;
        out.extend([x_in, y]);
        out.extend([h, mean1, rstd1, mask, r, mean2, rstd2].into_iter().flatten());
        f.buffers_into(out);
    }
}

impl<B> Buffers<B> for AttnCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let AttnCache { qkv, kv, att, lse } = self;
        out.extend([qkv, kv, att, lse]);
    }
}

impl<B> Buffers<B> for MlpCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let MlpCache { a, act } = self;
        out.extend([a, act]);
    }
}

impl<B> Buffers<B> for ExpertCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let ExpertCache { rows: _, xe, mlp, ye } = self;
        out.extend([xe, ye]);
        mlp.buffers_into(out);
    }
}

impl<B> Buffers<B> for MoeCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let MoeCache { probs, choice, slot, weight, stats, experts } = self;
        out.extend([probs, choice, slot, weight, stats]);
        match experts {
            ExpertCaches::Each(each) => each.into_iter().flatten().for_each(|e| e.buffers_into(out)),
            ExpertCaches::Grouped { rows: _, all } => all.buffers_into(out),
        }
    }
}

impl<B> Buffers<B> for FfnCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        match self {
            FfnCache::Dense(m) => m.buffers_into(out),
            FfnCache::Moe(m) => m.buffers_into(out),
        }
    }
}

impl<B> Buffers<B> for BlockCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let BlockCache { attn, cross, ffn } = self;
        attn.buffers_into(out);
        cross.buffers_into(out);
        ffn.buffers_into(out);
    }
}

/// Elements of a buffer.
pub fn len<D: Backend>(x: &D::Buf) -> usize {
    D::len(D::view(x))
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers over the device: a linear layer and a norm reading their parameters from the flat buffer.

/// out (N, out) = x (N, inp) · Wᵀ + b.
pub fn linear_forward<D: Backend>(ctx: &Ctx<D>, l: &Linear, x: D::In<'_>, n: usize) -> Result<D::Buf> {
    let d = ctx.be;
    let mut out = d.output(n * l.out)?;
    let b = l.b.map(|b| D::param(ctx.params, b)).transpose()?;
    d.matmul_forward(D::view_mut(&mut out), x, D::param(ctx.params, l.w)?, b, n, l.inp, l.out)?;
    Ok(out)
}

/// Returns dx (N, inp); accumulates dW, db into ctx.grads.
pub fn linear_backward<D: Backend>(ctx: &mut Ctx<D>, l: &Linear, dout: D::In<'_>, x: D::In<'_>, n: usize) -> Result<D::Buf> {
    let d = ctx.be;
    let mut dx = d.zeros(n * l.inp)?;
    let grads = ctx.grads.as_deref_mut().expect("backward needs gradients");
    let (dw, db) = D::grad_pair(grads, l.w, l.b)?;
    d.matmul_backward(Some(D::view_mut(&mut dx)), dw, db, dout, x, D::param(ctx.params, l.w)?, n, l.inp, l.out)?;
    Ok(dx)
}

pub struct NormOut<B = Vec<f32>> {
    pub out: B,
    pub mean: B,
    pub rstd: B,
}

pub fn norm_forward<D: Backend>(ctx: &Ctx<D>, nm: &Norm, x: D::In<'_>) -> Result<NormOut<D::Buf>> {
    let (d, c) = (ctx.be, ctx.cfg.d_model);
    let len = D::len(x);
    let n = len / c;
    // LayerNorm writes the means; RMSNorm has none and leaves `mean` as it is.
    let mean = if ctx.cfg.norm.kind == NormKind::Layernorm { d.output(n)? } else { d.zeros(n)? };
    let (mut out, mut mean, mut rstd) = (d.output(len)?, mean, d.output(n)?);
    let (w, b) = (D::param(ctx.params, nm.w)?, nm.b.map(|b| D::param(ctx.params, b)).transpose()?);
    let (o, m, r) = (D::view_mut(&mut out), D::view_mut(&mut mean), D::view_mut(&mut rstd));
    d.norm_forward(ctx.cfg.norm.kind, o, m, r, x, w, b, ctx.cfg.norm.eps, c)?;
    Ok(NormOut { out, mean, rstd })
}

/// dx += norm backward; accumulates dw, db.
pub fn norm_backward<D: Backend>(
    ctx: &mut Ctx<D>,
    nm: &Norm,
    dx: D::Out<'_>,
    dout: D::In<'_>,
    x: D::In<'_>,
    mean: D::In<'_>,
    rstd: D::In<'_>,
) -> Result<()> {
    let (d, c, kind) = (ctx.be, ctx.cfg.d_model, ctx.cfg.norm.kind);
    let grads = ctx.grads.as_deref_mut().expect("backward needs gradients");
    let (dw, db) = D::grad_pair(grads, nm.w, nm.b)?;
    d.norm_backward(kind, dx, dw, db, dout, x, D::param(ctx.params, nm.w)?, mean, rstd, c)
}

/// The saved statistics of a norm that ran.
fn stats<B>(x: &Option<B>) -> &B {
    x.as_ref().expect("the placement saved this norm's statistics")
}

// ---------------------------------------------------------------------------------------------------------------
// The residual arrangement shared by every sub-layer.

/// A sub-layer's cache (f's own cache F) and its output.
pub type SubOut<F, B> = (SubCache<F, B>, B);

/// Runs sub-layer f under the placement: post x←N(x+f(x)), pre x←x+f(N(x)), sandwich x←x+N₂(f(N(x))),
/// deepnorm x←N(α·x+f(x)). Returns the cache; its output is `out`.
pub fn sublayer_forward<D: Backend, F>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    norms: &SubNorms,
    x_in: D::Buf,
    f: impl FnOnce(&mut Ctx<D>, &D::Buf) -> Result<(D::Buf, F)>,
) -> Result<SubOut<F, D::Buf>> {
    let d = ctx.be;
    let placement = ctx.cfg.norm.placement;
    let normed_input = matches!(placement, Placement::Pre | Placement::Sandwich);
    let (h, mean1, rstd1) = if normed_input {
        let n = norm_forward(ctx, &norms.n, D::view(&x_in))?;
        (Some(n.out), Some(n.mean), Some(n.rstd))
    } else {
        (None, None, None)
    };
    let (mut y, fc) = f(ctx, h.as_ref().unwrap_or(&x_in))?;
    let n = len::<D>(&y);
    let mask = ctx.dropout_mask(n);
    let mask = if mask.is_empty() { None } else { Some(d.upload(mask)?) };
    if let Some(m) = &mask {
        d.mul_into(D::view_mut(&mut y), D::view(m))?;
    }
    let (r, mean2, rstd2, out) = match placement {
        Placement::Pre => {
            let mut out = d.output(n)?;
            d.add_scaled(D::view_mut(&mut out), D::view(&x_in), D::view(&y), 1.0)?;
            (None, None, None, out)
        }
        Placement::Sandwich => {
            let nm = norm_forward(ctx, norms.post.as_ref().expect("sandwich has a post norm"), D::view(&y))?;
            let mut out = d.output(n)?;
            d.add_scaled(D::view_mut(&mut out), D::view(&x_in), D::view(&nm.out), 1.0)?;
            (None, Some(nm.mean), Some(nm.rstd), out)
        }
        Placement::Post | Placement::Deepnorm => {
            let mut r = d.output(n)?;
            d.add_scaled(D::view_mut(&mut r), D::view(&x_in), D::view(&y), st.alpha)?;
            let nm = norm_forward(ctx, &norms.n, D::view(&r))?;
            (Some(r), Some(nm.mean), Some(nm.rstd), nm.out)
        }
    };
    Ok((SubCache { x_in, h, mean1, rstd1, y, mask, r, mean2, rstd2, f: fc }, out))
}

/// Mirror of `sublayer_forward`: from d out returns d x_in. `f_back(ctx, dy, f_input)` returns d f_input.
pub fn sublayer_backward<D: Backend, F>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    norms: &SubNorms,
    sc: &SubCache<F, D::Buf>,
    dout: &D::Buf,
    f_back: impl FnOnce(&mut Ctx<D>, &D::Buf, &D::Buf) -> Result<D::Buf>,
) -> Result<D::Buf> {
    let d = ctx.be;
    let placement = ctx.cfg.norm.placement;
    let n = len::<D>(dout);
    let (mut dx_in, mut dy) = match placement {
        Placement::Pre => (d.copy_of(D::view(dout))?, d.copy_of(D::view(dout))?),
        Placement::Sandwich => {
            let dx_in = d.copy_of(D::view(dout))?;
            let post = norms.post.as_ref().expect("sandwich has a post norm");
            let mut dy = d.zeros(n)?;
            let (m, r) = (D::view(stats(&sc.mean2)), D::view(stats(&sc.rstd2)));
            norm_backward(ctx, post, D::view_mut(&mut dy), D::view(dout), D::view(&sc.y), m, r)?;
            (dx_in, dy)
        }
        Placement::Post | Placement::Deepnorm => {
            // dr = N'(dout); dy = dr; dx_in = α·dr (+ f's path below).
            let mut dy = d.zeros(n)?;
            let (x, m, r) = (D::view(stats(&sc.r)), D::view(stats(&sc.mean2)), D::view(stats(&sc.rstd2)));
            norm_backward(ctx, &norms.n, D::view_mut(&mut dy), D::view(dout), x, m, r)?;
            let mut dx_in = d.output(n)?;
            d.scale(D::view_mut(&mut dx_in), D::view(&dy), st.alpha)?;
            (dx_in, dy)
        }
    };
    if let Some(m) = &sc.mask {
        d.mul_into(D::view_mut(&mut dy), D::view(m))?;
    }
    let dfin = f_back(ctx, &dy, sc.h.as_ref().unwrap_or(&sc.x_in))?;
    if sc.h.is_some() {
        let (m, r) = (D::view(stats(&sc.mean1)), D::view(stats(&sc.rstd1)));
        norm_backward(ctx, &norms.n, D::view_mut(&mut dx_in), D::view(&dfin), D::view(&sc.x_in), m, r)?;
    } else {
        d.add_into(D::view_mut(&mut dx_in), D::view(&dfin))?;
    }
    Ok(dx_in)
}

// ---------------------------------------------------------------------------------------------------------------
// The three sub-layer functions.

/// The shape of an attention call with q, k, v each in a contiguous (B,H,·,HS) buffer; callers that read them from
/// projection rows set the layouts (`self_attn_shape`, `cross_attn_shape`).
pub fn attn_shape<D: Backend>(ctx: &Ctx<D>, b: usize, t: usize, s: usize, causal: bool, q_offset: usize) -> AttnShape {
    let m = ctx.cfg;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let (q, kv) = (HeadLayout::heads(nh, t, hs), HeadLayout::heads(nkv, s, hs));
    AttnShape { b, t, s, nh, nkv, hs, causal, q_offset, scale: m.score_scale(), q, k: kv, v: kv }
}

/// Where self-attention's q, k, v lie in the qkv projection's rows (B,T,(NH+2·NKV)·HS): q at column 0, k at NH·HS,
/// v at (NH+NKV)·HS.
pub fn qkv_layouts(m: &ModelConfig, t: usize) -> [HeadLayout; 3] {
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let w = (nh + 2 * nkv) * hs;
    [0, nh * hs, (nh + nkv) * hs].map(|off| HeadLayout::rows(t, w, off, hs))
}

/// Self-attention over its own keys (no cache): q, k, v all read from the qkv rows.
pub fn self_attn_shape<D: Backend>(ctx: &Ctx<D>, b: usize, t: usize, causal: bool) -> AttnShape {
    let [q, k, v] = qkv_layouts(ctx.cfg, t);
    AttnShape { q, k, v, ..attn_shape(ctx, b, t, t, causal, 0) }
}

/// Where cross-attention's q, k, v lie: q in the query projection's rows (B,T,NH·HS), k and v in the memory's kv
/// rows (B,S,2·NKV·HS), k at column 0, v at NKV·HS.
pub fn cross_layouts(m: &ModelConfig, t: usize, s: usize) -> [HeadLayout; 3] {
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let kv = |off| HeadLayout::rows(s, 2 * nkv * hs, off, hs);
    [HeadLayout::rows(t, nh * hs, 0, hs), kv(0), kv(nkv * hs)]
}

/// Cross-attention reading q, k, v from the projections' rows (`cross_layouts`).
pub fn cross_attn_shape<D: Backend>(ctx: &Ctx<D>, b: usize, t: usize, s: usize) -> AttnShape {
    let [q, k, v] = cross_layouts(ctx.cfg, t, s);
    AttnShape { q, k, v, ..attn_shape(ctx, b, t, s, false, 0) }
}

/// The self-attention bias of the position scheme (ALiBi, T5 relative), the table a view of the parameters.
pub fn bias_of<'s, 'c, D: Backend>(ctx: &Ctx<'c, D>, st: &'s StackCtx<D>) -> Result<AttnBias<'s, D::In<'c>>> {
    Ok(match ctx.cfg.position {
        Position::Alibi => AttnBias::Alibi { slopes: &st.alibi },
        Position::Relative { .. } => {
            AttnBias::Relative { table: D::param(ctx.params, st.rel_table.expect("relative table"))?, bucket: &st.buckets }
        }
        _ => AttnBias::None,
    })
}

/// Self-attention's qkv = h·Wqkvᵀ (B,T,(NH+2·NKV)·HS) of h (B,T,C), with RoPE applied in place to its q and k
/// columns at positions pos0.. (the same positions for every row of the batch). Attention reads q, k, v from it
/// at `qkv_layouts`.
pub fn qkv_projection<D: Backend>(ctx: &Ctx<D>, st: &StackCtx<D>, p: &BlockParams, h: &D::Buf) -> Result<D::Buf> {
    let (m, b, t) = (ctx.cfg, st.b, st.t);
    let mut qkv = linear_forward(ctx, &p.qkv, D::view(h), b * t)?;
    if let Position::Rope { theta } = m.position {
        rope_qk(ctx, &mut qkv, b, t, st.pos0, theta, false)?;
    }
    Ok(qkv)
}

/// RoPE (or its inverse, for the backward) in place on the q and k columns of qkv or of its gradient.
fn rope_qk<D: Backend>(ctx: &Ctx<D>, x: &mut D::Buf, b: usize, t: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
    let (d, m) = (ctx.be, ctx.cfg);
    let [ql, kl, _] = qkv_layouts(m, t);
    d.rope(D::view_mut(x), ql, b, m.n_heads, t, m.head_size(), pos0, theta, inverse)?;
    d.rope(D::view_mut(x), kl, b, m.n_kv_heads, t, m.head_size(), pos0, theta, inverse)
}

/// Self-attention: qkv = h·Wqkvᵀ → RoPE(q, k) → softmax(qkᵀ)v → proj. With a KV cache (batch 1), this call's keys
/// and values are appended to it (the cache holds contiguous heads) and the queries, read from qkv, attend to every
/// cached position.
pub fn self_attention_forward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &BlockParams,
    h: &D::Buf,
    kv: Option<&mut KvCache<D::Buf>>,
) -> Result<(D::Buf, AttnCache<D::Buf>)> {
    let (d, m, b, t) = (ctx.be, ctx.cfg, st.b, st.t);
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let qkv = qkv_projection(ctx, st, p, h)?;
    let (mut att, mut lse) = (d.output(b * t * nh * hs)?, d.output(b * nh * t)?);
    let (o, l) = (D::view_mut(&mut att), D::view_mut(&mut lse));
    let x = D::view(&qkv);
    match kv {
        None => {
            let sh = self_attn_shape(ctx, b, t, st.causal);
            d.attention_forward(o, l, x, x, x, bias_of(ctx, st)?, &sh)?;
        }
        Some(kv) => {
            debug_assert_eq!((b, kv.len), (1, st.pos0), "a KV cache holds one sequence, up to this call's first position");
            let len = kv.len;
            let [ql, kl, vl] = qkv_layouts(m, t);
            let (mut k_all, mut v_all) = (d.zeros(nkv * (len + t) * hs)?, d.zeros(nkv * (len + t) * hs)?);
            d.append_heads(D::view_mut(&mut k_all), D::view(&kv.k), x, kl, nkv, len, t, hs)?;
            d.append_heads(D::view_mut(&mut v_all), D::view(&kv.v), x, vl, nkv, len, t, hs)?;
            *kv = KvCache { k: k_all, v: v_all, len: len + t };
            let sh = AttnShape { q: ql, ..attn_shape(ctx, 1, t, len + t, st.causal, len) };
            d.attention_forward(o, l, x, D::view(&kv.k), D::view(&kv.v), bias_of(ctx, st)?, &sh)?;
        }
    }
    let y = linear_forward(ctx, &p.proj, D::view(&att), b * t)?;
    Ok((y, AttnCache { qkv, kv: d.zeros(0)?, att, lse }))
}

pub fn self_attention_backward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &BlockParams,
    c: &AttnCache<D::Buf>,
    dy: &D::Buf,
    h: &D::Buf,
) -> Result<D::Buf> {
    let (d, m, b, t) = (ctx.be, ctx.cfg, st.b, st.t);
    let datt = linear_backward(ctx, &p.proj, D::view(dy), D::view(&c.att), b * t)?;
    // dq, dk, dv go straight into their columns of dqkv, the gradient of the qkv projection's output.
    let mut dqkv = d.zeros(len::<D>(&c.qkv))?;
    let sh = self_attn_shape(ctx, b, t, st.causal);
    let mut dtable = st.rel_table.map(|v| d.zeros(v.len)).transpose()?;
    let (x, att, lse) = (D::view(&c.qkv), D::view(&c.att), D::view(&c.lse));
    let grads = AttnGrads::Qkv(D::view_mut(&mut dqkv));
    d.attention_backward(grads, dtable.as_mut().map(D::view_mut), D::view(&datt), x, x, x, att, lse, bias_of(ctx, st)?, &sh)?;
    if let (Some(dt), Some(view)) = (&dtable, st.rel_table) {
        let g = D::grad(ctx.grads.as_deref_mut().expect("grads"), view)?;
        d.add_into(g, D::view(dt))?;
    }
    if let Position::Rope { theta } = m.position {
        rope_qk(ctx, &mut dqkv, b, t, st.pos0, theta, true)?;
    }
    linear_backward(ctx, &p.qkv, D::view(&dqkv), D::view(h), b * t)
}

/// Cross-attention's keys and values from the encoder output `mem` (B,S,C): kv = mem·Wkvᵀ (B,S,2·NKV·HS), k then
/// v in each row (`cross_attn_shape`'s layouts).
pub fn memory_kv<D: Backend>(ctx: &Ctx<D>, p: &CrossParams, mem: D::In<'_>, b: usize, s: usize) -> Result<D::Buf> {
    linear_forward(ctx, &p.kv, mem, b * s)
}

/// A decoding cache of cross-attention's keys and values, (NKV, S, HS) each, from the encoder output `mem` (S,C)
/// of one source: `memory_kv`'s rows appended to empty heads.
pub fn memory_kv_cache<D: Backend>(ctx: &Ctx<D>, p: &CrossParams, mem: D::In<'_>, s: usize) -> Result<KvCache<D::Buf>> {
    let d = ctx.be;
    let (nkv, hs) = (ctx.cfg.n_kv_heads, ctx.cfg.head_size());
    let kv = memory_kv(ctx, p, mem, 1, s)?;
    let sh = cross_attn_shape(ctx, 1, 0, s);
    let (mut k, mut v, none) = (d.zeros(nkv * s * hs)?, d.zeros(nkv * s * hs)?, d.zeros(0)?);
    d.append_heads(D::view_mut(&mut k), D::view(&none), D::view(&kv), sh.k, nkv, 0, s, hs)?;
    d.append_heads(D::view_mut(&mut v), D::view(&none), D::view(&kv), sh.v, nkv, 0, s, hs)?;
    Ok(KvCache { k, v, len: s })
}

/// Cross-attention: queries from h (B,T,C), keys and values from the encoder output (B,S,C); no mask, no bias.
/// With a cache (decoding), the keys and values are the cached ones of the source (`memory_kv_cache`, once per
/// source), and the returned cache holds no kv (empty: inference has no backward).
pub fn cross_attention_forward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &CrossParams,
    h: &D::Buf,
    kv: Option<&KvCache<D::Buf>>,
) -> Result<(D::Buf, AttnCache<D::Buf>)> {
    let (d, m, b, t) = (ctx.be, ctx.cfg, st.b, st.t);
    let (nh, hs) = (m.n_heads, m.head_size());
    let q = linear_forward(ctx, &p.q, D::view(h), b * t)?;
    let (mut att, mut lse) = (d.output(b * t * nh * hs)?, d.output(b * nh * t)?);
    let (o, l) = (D::view_mut(&mut att), D::view_mut(&mut lse));
    let kv = match kv {
        Some(kv) => {
            let sh = AttnShape { q: cross_attn_shape(ctx, b, t, kv.len).q, ..attn_shape(ctx, b, t, kv.len, false, 0) };
            d.attention_forward(o, l, D::view(&q), D::view(&kv.k), D::view(&kv.v), AttnBias::None, &sh)?;
            d.zeros(0)?
        }
        None => {
            let (mem, s) = st.memory.expect("decoder of an encoder-decoder has a memory");
            let kv = memory_kv(ctx, p, mem, b, s)?;
            let sh = cross_attn_shape(ctx, b, t, s);
            d.attention_forward(o, l, D::view(&q), D::view(&kv), D::view(&kv), AttnBias::None, &sh)?;
            kv
        }
    };
    let y = linear_forward(ctx, &p.proj, D::view(&att), b * t)?;
    Ok((y, AttnCache { qkv: q, kv, att, lse }))
}

/// Returns dh; accumulates d memory into `dmem` (B,S,C).
pub fn cross_attention_backward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &CrossParams,
    c: &AttnCache<D::Buf>,
    dy: &D::Buf,
    h: &D::Buf,
    dmem: &mut D::Buf,
) -> Result<D::Buf> {
    let (d, b, t) = (ctx.be, st.b, st.t);
    let (mem, s) = st.memory.expect("memory");
    let datt = linear_backward(ctx, &p.proj, D::view(dy), D::view(&c.att), b * t)?;
    // dq into the query projection's output gradient, dk and dv into the memory kv projection's.
    let (mut dq, mut dkv) = (d.zeros(len::<D>(&c.qkv))?, d.zeros(len::<D>(&c.kv))?);
    let sh = cross_attn_shape(ctx, b, t, s);
    let (q, kv, att, lse) = (D::view(&c.qkv), D::view(&c.kv), D::view(&c.att), D::view(&c.lse));
    let grads = AttnGrads::QAndKv { dq: D::view_mut(&mut dq), dkv: D::view_mut(&mut dkv) };
    d.attention_backward(grads, None, D::view(&datt), q, kv, kv, att, lse, AttnBias::None, &sh)?;
    let dm = linear_backward(ctx, &p.kv, D::view(&dkv), mem, b * s)?;
    d.add_into(D::view_mut(dmem), D::view(&dm))?;
    linear_backward(ctx, &p.q, D::view(&dq), D::view(h), b * t)
}

/// One FFN over n rows: act(x·Wfcᵀ + b)·Wprojᵀ + b (gated: act(gate) ⊙ up). The fc layer and the activation are
/// one op (`matmul_act_forward`: the activation in the matmul's epilogue where the backend fuses it).
fn mlp_forward<D: Backend>(ctx: &mut Ctx<D>, p: &Mlp, x: D::In<'_>, n: usize) -> Result<(D::Buf, MlpCache<D::Buf>)> {
    let (d, f) = (ctx.be, ctx.cfg.ffn_hidden());
    let (mut a, mut act) = (d.output(n * p.fc.out)?, d.output(n * f)?);
    let b = p.fc.b.map(|b| D::param(ctx.params, b)).transpose()?;
    let (a_out, act_out) = (D::view_mut(&mut a), D::view_mut(&mut act));
    d.matmul_act_forward(ctx.cfg.ffn.activation, a_out, act_out, x, D::param(ctx.params, p.fc.w)?, b, n, p.fc.inp, p.fc.out)?;
    let y = linear_forward(ctx, &p.proj, D::view(&act), n)?;
    Ok((y, MlpCache { a, act }))
}

/// Returns dx (n, C). The proj layer's backward and the activation's are one op (`matmul_act_backward`), which
/// writes da = (dy·Wproj) ⊙ act'(a) without keeping dy·Wproj.
fn mlp_backward<D: Backend>(ctx: &mut Ctx<D>, p: &Mlp, c: &MlpCache<D::Buf>, dy: D::In<'_>, x: D::In<'_>, n: usize) -> Result<D::Buf> {
    let d = ctx.be;
    let mut da = d.output(len::<D>(&c.a))?; // written, not added to
    let grads = ctx.grads.as_deref_mut().expect("backward needs gradients");
    let (dw, db) = D::grad_pair(grads, p.proj.w, p.proj.b)?;
    let (act, l) = (ctx.cfg.ffn.activation, &p.proj);
    let w = D::param(ctx.params, l.w)?;
    d.matmul_act_backward(act, D::view_mut(&mut da), dw, db, dy, D::view(&c.act), D::view(&c.a), w, n, l.inp, l.out)?;
    linear_backward(ctx, &p.fc, D::view(&da), x, n)
}

/// Every expert's linear layer `ls[ex]` over its rows of x (Σrows, inp), grouped: out (Σrows, out).
fn grouped_linear_forward<D: Backend>(ctx: &Ctx<D>, ls: &[&Linear], x: D::In<'_>, rows: &[usize]) -> Result<D::Buf> {
    let (d, l) = (ctx.be, ls[0]);
    let mut out = d.zeros(rows.iter().sum::<usize>() * l.out)?;
    let w = ls.iter().map(|l| D::param(ctx.params, l.w)).collect::<Result<Vec<_>>>()?;
    let b = ls.iter().map(|l| l.b.map(|b| D::param(ctx.params, b)).transpose()).collect::<Result<Vec<_>>>()?;
    d.matmul_grouped_forward(D::view_mut(&mut out), x, &w, &b, rows, l.inp, l.out)?;
    Ok(out)
}

/// Returns dx (Σrows, inp); accumulates every expert's dW, db into ctx.grads.
fn grouped_linear_backward<D: Backend>(ctx: &mut Ctx<D>, ls: &[&Linear], dout: D::In<'_>, x: D::In<'_>, rows: &[usize]) -> Result<D::Buf> {
    let (d, l) = (ctx.be, ls[0]);
    let mut dx = d.zeros(rows.iter().sum::<usize>() * l.inp)?;
    let w = ls.iter().map(|l| D::param(ctx.params, l.w)).collect::<Result<Vec<_>>>()?;
    let grads = ctx.grads.as_deref_mut().expect("backward needs gradients");
    let views: Vec<_> = ls.iter().flat_map(|l| std::iter::once(l.w).chain(l.b)).collect();
    let mut g = D::grad_many(grads, &views)?.into_iter();
    let (mut dw, mut db) = (Vec::with_capacity(ls.len()), Vec::with_capacity(ls.len()));
    for l in ls {
        dw.push(g.next().expect("a gradient per weight"));
        db.push(l.b.map(|_| g.next().expect("a gradient per bias")));
    }
    d.matmul_grouped_backward(D::view_mut(&mut dx), dw, db, dout, x, &w, rows, l.inp, l.out)?;
    Ok(dx)
}

/// Every expert's FFN over its rows of x, grouped: `mlp_forward` with one grouped matmul for all the experts' fc,
/// one activation over all the rows, one grouped matmul for their proj.
fn mlp_grouped_forward<D: Backend>(ctx: &mut Ctx<D>, ps: &[Mlp], x: D::In<'_>, rows: &[usize]) -> Result<(D::Buf, MlpCache<D::Buf>)> {
    let (d, f) = (ctx.be, ctx.cfg.ffn_hidden());
    let (fc, proj): (Vec<_>, Vec<_>) = ps.iter().map(|p| (&p.fc, &p.proj)).unzip();
    let a = grouped_linear_forward(ctx, &fc, x, rows)?;
    let mut act = d.zeros(rows.iter().sum::<usize>() * f)?;
    d.activation_forward(ctx.cfg.ffn.activation, D::view_mut(&mut act), D::view(&a), f)?;
    let y = grouped_linear_forward(ctx, &proj, D::view(&act), rows)?;
    Ok((y, MlpCache { a, act }))
}

/// Returns dx (Σrows, C): `mlp_backward`, grouped.
fn mlp_grouped_backward<D: Backend>(ctx: &mut Ctx<D>, ps: &[Mlp], c: &MlpCache<D::Buf>, dy: D::In<'_>, x: D::In<'_>, rows: &[usize]) -> Result<D::Buf> {
    let (d, f) = (ctx.be, ctx.cfg.ffn_hidden());
    let (fc, proj): (Vec<_>, Vec<_>) = ps.iter().map(|p| (&p.fc, &p.proj)).unzip();
    let dact = grouped_linear_backward(ctx, &proj, dy, D::view(&c.act), rows)?;
    let mut da = d.zeros(len::<D>(&c.a))?;
    d.activation_backward(ctx.cfg.ffn.activation, D::view_mut(&mut da), D::view(&dact), D::view(&c.a), D::view(&c.act), f)?;
    grouped_linear_backward(ctx, &fc, D::view(&da), x, rows)
}

fn routing<'a, D: Backend>(c: &'a MoeCache<D::Buf>, n: usize, k: usize) -> Routing<D::In<'a>> {
    Routing { choice: D::view(&c.choice), slot: D::view(&c.slot), weight: D::view(&c.weight), n, k }
}

/// Mixture-of-Experts FFN: the router's logits h·Wrᵀ (N,E) pick each token's top-k experts (`moe_route`); each
/// expert runs its FFN over the rows routed to it (gathered), and its outputs are added back to their tokens,
/// weighted. How many rows each expert gets is data: a host backend knows it and runs exactly those; a device
/// runs every expert over its capacity (rows past its assignments are zeros, and no token reads them). A backend
/// that `groups_experts` (the CPU natively) gathers every expert's rows into one buffer, expert-major, and runs
/// each step as one call over all the experts (as MegaBlocks does): E small matmuls become one grouped matmul,
/// which wakes the thread pool once instead of E times; the others run the experts one by one. The
/// capacity limits a batch (training, evaluation); generating (`capacity` false: the KV cache, the encoder of a
/// source) routes every token, so a token's output does not depend on what else is decoded with it.
fn moe_forward<D: Backend>(
    ctx: &mut Ctx<D>,
    router: &Linear,
    experts: &[Mlp],
    h: &D::Buf,
    n: usize,
    capacity: bool,
) -> Result<(D::Buf, MoeCache<D::Buf>)> {
    let (d, c) = (ctx.be, ctx.cfg.d_model);
    let moe = ctx.cfg.ffn.moe.as_ref().expect("an MoE block has an MoE config");
    let (e, k) = (moe.experts, moe.top_k);
    let cap = if capacity { moe.capacity(n) } else { n };
    let logits = linear_forward(ctx, router, D::view(h), n)?;
    let (mut probs, mut choice, mut slot, mut weight) = (d.zeros(n * e)?, d.zeros(n * k)?, d.zeros(n * k)?, d.zeros(n * k)?);
    let mut stats = d.zeros(moe_stats_len(e))?;
    {
        let (p, ch, sl, w) = (D::view_mut(&mut probs), D::view_mut(&mut choice), D::view_mut(&mut slot), D::view_mut(&mut weight));
        d.moe_route(p, ch, sl, w, D::view_mut(&mut stats), D::view(&logits), n, e, k, cap)?;
    }
    let rows: Vec<usize> = match d.known(D::view(&stats)) {
        Some(s) => (0..e).map(|x| (s[2 + x] as usize).min(cap)).collect(),
        None => vec![cap; e],
    };
    let mut cache = MoeCache { probs, choice, slot, weight, stats, experts: ExpertCaches::Each(Vec::with_capacity(e)) };
    let mut y = d.zeros(n * c)?;
    let r = routing::<D>(&cache, n, k);
    if d.groups_experts() {
        // Every expert's rows gathered into one buffer, expert-major, and each step one call over all the experts.
        let total = rows.iter().sum();
        let mut xe = d.zeros(total * c)?;
        d.moe_gather_grouped(D::view_mut(&mut xe), D::view(h), r, &rows, c)?;
        let (ye, mlp) = mlp_grouped_forward(ctx, experts, D::view(&xe), &rows)?;
        d.moe_combine_grouped(D::view_mut(&mut y), D::view(&ye), r, &rows, c)?;
        cache.experts = ExpertCaches::Grouped { rows, all: ExpertCache { rows: total, xe, mlp, ye } };
        return Ok((y, cache));
    }
    let mut each = Vec::with_capacity(e);
    for (ex, p) in experts.iter().enumerate() {
        let rows = rows[ex];
        if rows == 0 {
            each.push(None);
            continue;
        }
        let mut xe = d.zeros(rows * c)?;
        d.moe_gather(D::view_mut(&mut xe), D::view(h), r, ex, rows, c)?;
        let (ye, mlp) = mlp_forward(ctx, p, D::view(&xe), rows)?;
        d.moe_combine(D::view_mut(&mut y), D::view(&ye), r, ex, rows, c)?;
        each.push(Some(ExpertCache { rows, xe, mlp, ye }));
    }
    cache.experts = ExpertCaches::Each(each);
    Ok((y, cache))
}

fn moe_backward<D: Backend>(ctx: &mut Ctx<D>, router: &Linear, experts: &[Mlp], mc: &MoeCache<D::Buf>, dy: &D::Buf, h: &D::Buf, n: usize) -> Result<D::Buf> {
    let (d, c) = (ctx.be, ctx.cfg.d_model);
    let moe = ctx.cfg.ffn.moe.as_ref().expect("an MoE block has an MoE config");
    let (e, k) = (moe.experts, moe.top_k);
    let r = routing::<D>(mc, n, k);
    let (mut dh, mut dweight) = (d.zeros(n * c)?, d.zeros(n * k)?);
    match &mc.experts {
        ExpertCaches::Grouped { rows, all } => {
            let mut dye = d.zeros(all.rows * c)?;
            d.moe_combine_backward_grouped(D::view_mut(&mut dye), D::view_mut(&mut dweight), D::view(dy), D::view(&all.ye), r, rows, c)?;
            let dxe = mlp_grouped_backward(ctx, experts, &all.mlp, D::view(&dye), D::view(&all.xe), rows)?;
            d.moe_scatter_grouped(D::view_mut(&mut dh), D::view(&dxe), r, rows, c)?;
        }
        ExpertCaches::Each(each) => {
            for (ex, (p, cache)) in experts.iter().zip(each).enumerate() {
                let Some(ec) = cache else { continue };
                let mut dye = d.zeros(ec.rows * c)?;
                d.moe_combine_backward(D::view_mut(&mut dye), D::view_mut(&mut dweight), D::view(dy), D::view(&ec.ye), r, ex, ec.rows, c)?;
                let dxe = mlp_backward(ctx, p, &ec.mlp, D::view(&dye), D::view(&ec.xe), ec.rows)?;
                d.moe_scatter(D::view_mut(&mut dh), D::view(&dxe), r, ex, ec.rows, c)?;
            }
        }
    }
    let mut dlogits = d.zeros(n * e)?;
    d.moe_route_backward(D::view_mut(&mut dlogits), D::view(&dweight), D::view(&mc.probs), r, D::view(&mc.stats), e, moe.aux_loss)?;
    let dr = linear_backward(ctx, router, D::view(&dlogits), D::view(h), n)?;
    d.add_into(D::view_mut(&mut dh), D::view(&dr))?;
    Ok(dh)
}

/// The FFN sub-layer: dense, or Mixture-of-Experts.
pub fn ffn_forward<D: Backend>(ctx: &mut Ctx<D>, st: &StackCtx<D>, p: &BlockParams, h: &D::Buf, capacity: bool) -> Result<(D::Buf, FfnCache<D::Buf>)> {
    let n = st.b * st.t;
    match &p.ffn {
        FfnParams::Dense(mlp) => {
            let (y, c) = mlp_forward(ctx, mlp, D::view(h), n)?;
            Ok((y, FfnCache::Dense(c)))
        }
        FfnParams::Moe { router, experts } => {
            let (y, c) = moe_forward(ctx, router, experts, h, n, capacity)?;
            Ok((y, FfnCache::Moe(c)))
        }
    }
}

pub fn ffn_backward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &BlockParams,
    c: &FfnCache<D::Buf>,
    dy: &D::Buf,
    h: &D::Buf,
) -> Result<D::Buf> {
    let n = st.b * st.t;
    match (&p.ffn, c) {
        (FfnParams::Dense(mlp), FfnCache::Dense(mc)) => mlp_backward(ctx, mlp, mc, D::view(dy), D::view(h), n),
        (FfnParams::Moe { router, experts }, FfnCache::Moe(mc)) => moe_backward(ctx, router, experts, mc, dy, h, n),
        _ => unreachable!("a block's cache matches its parameters"),
    }
}

// ---------------------------------------------------------------------------------------------------------------

/// One block forward; with `kv` (decoding, batch 1) its attention reads and extends the block's KV cache.
pub fn block_forward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &BlockParams,
    x: D::Buf,
    mut kv: Option<&mut BlockKv<D::Buf>>,
) -> Result<(BlockCache<D::Buf>, D::Buf)> {
    let self_kv = kv.as_deref_mut().map(|kv| &mut kv.self_kv);
    let (attn, x) = sublayer_forward(ctx, st, &p.attn_norms, x, |ctx, h| self_attention_forward(ctx, st, p, h, self_kv))?;
    let (cross, x) = match &p.cross {
        Some(cp) => {
            let cross_kv = kv.as_deref().and_then(|kv| kv.cross.as_ref());
            let (c, x) = sublayer_forward(ctx, st, &cp.norms, x, |ctx, h| cross_attention_forward(ctx, st, cp, h, cross_kv))?;
            (Some(c), x)
        }
        None => (None, x),
    };
    let capacity = kv.is_none() && st.capacity;
    let (ffn, x) = sublayer_forward(ctx, st, &p.ffn_norms, x, |ctx, h| ffn_forward(ctx, st, p, h, capacity))?;
    Ok((BlockCache { attn, cross, ffn }, x))
}

/// From d out returns d x; accumulates d memory into `dmem` when the block has cross-attention.
pub fn block_backward<D: Backend>(
    ctx: &mut Ctx<D>,
    st: &StackCtx<D>,
    p: &BlockParams,
    c: &BlockCache<D::Buf>,
    dx: &D::Buf,
    dmem: Option<&mut D::Buf>,
) -> Result<D::Buf> {
    let dx = sublayer_backward(ctx, st, &p.ffn_norms, &c.ffn, dx, |ctx, dy, h| ffn_backward(ctx, st, p, &c.ffn.f, dy, h))?;
    let dx = match (&p.cross, &c.cross, dmem) {
        (Some(cp), Some(cc), Some(dmem)) => sublayer_backward(ctx, st, &cp.norms, cc, &dx, |ctx, dy, h| {
            cross_attention_backward(ctx, st, cp, &cc.f, dy, h, dmem)
        })?,
        _ => dx,
    };
    sublayer_backward(ctx, st, &p.attn_norms, &c.attn, &dx, |ctx, dy, h| self_attention_backward(ctx, st, p, &c.attn.f, dy, h))
}
