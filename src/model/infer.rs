//! Inference with a KV cache (batch 1): each new token attends to the cached keys and values of the tokens before
//! it, so a sampled token costs one row of every matmul instead of a full forward. The encoder-decoder also caches
//! the encoder output's cross-attention keys and values once per input. The result must equal the full forward
//! (tested: `incremental_decoding_equals_the_full_forward`).

use super::block::{self, linear_forward};
use super::device::on_host;
use super::layout::StackParams;
use super::{Ctx, Model, StackCtx};
use crate::backend::{AttnBias, Backend};
use crate::config::Position;
use crate::error::Result;

/// (B,T,stride) columns off.. → (B,H,T,HS) on the host.
fn split_heads(be: &dyn Backend, src: &[f32], b: usize, t: usize, stride: usize, off: usize, nh: usize, hs: usize) -> Vec<f32> {
    on_host(block::split_heads(be, src, b, t, stride, off, nh, hs))
}

/// Keys and values of one layer: (NKV, len, HS) each.
#[derive(Clone, Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Appends `new` (NKV, n, HS) after `old` (NKV, len, HS) head by head.
fn append_heads(old: &[f32], new: &[f32], nkv: usize, len: usize, n: usize, hs: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(old.len() + new.len());
    for g in 0..nkv {
        out.extend_from_slice(&old[g * len * hs..(g + 1) * len * hs]);
        out.extend_from_slice(&new[g * n * hs..(g + 1) * n * hs]);
    }
    out
}

/// An incremental decoder over the model's decoder stack (gpt, or the decoder of an encoder-decoder).
pub struct Decoder<'a> {
    model: &'a Model,
    be: &'a dyn Backend,
    kv: Vec<LayerKv>,
    /// Cross-attention keys/values per layer (NKV, S, HS), from the encoder output.
    cross: Vec<LayerKv>,
    src_len: usize,
    /// Tokens in the cache.
    pub len: usize,
}

impl<'a> Decoder<'a> {
    /// For gpt. For an encoder-decoder use `with_source`.
    pub fn new(model: &'a Model, be: &'a dyn Backend) -> Decoder<'a> {
        let n = model.layout.decoder.as_ref().map_or(0, |d| d.blocks.len());
        Decoder { model, be, kv: vec![LayerKv::default(); n], cross: vec![], src_len: 0, len: 0 }
    }

    /// Encodes the source once and caches every decoder layer's cross-attention keys and values.
    pub fn with_source(model: &'a Model, be: &'a dyn Backend, src: &[u32]) -> Decoder<'a> {
        let mut d = Decoder::new(model, be);
        let memory = model.encode(be, src);
        let m = &model.cfg;
        let (nkv, hs, s) = (m.n_kv_heads, m.head_size(), src.len());
        let ctx = Ctx { be, cfg: m, params: &model.params, grads: None, dropout: None };
        let dec = model.layout.decoder.as_ref().expect("encoder-decoder has a decoder");
        d.cross = dec
            .blocks
            .iter()
            .map(|bp| {
                let cp = bp.cross.as_ref().expect("decoder blocks have cross-attention");
                let kv = on_host(linear_forward(&ctx, &cp.kv, &memory, s));
                LayerKv { k: split_heads(be, &kv, 1, s, 2 * nkv * hs, 0, nkv, hs), v: split_heads(be, &kv, 1, s, 2 * nkv * hs, nkv * hs, nkv, hs) }
            })
            .collect();
        d.src_len = s;
        d
    }

    /// Drops the self-attention cache (the cross-attention cache of the source is kept).
    pub fn reset(&mut self) {
        self.kv.iter_mut().for_each(|l| *l = LayerKv::default());
        self.len = 0;
    }

    /// Feeds `ids` at positions len.. and returns their logits (n, V).
    pub fn feed(&mut self, ids: &[u32]) -> Vec<f32> {
        let model = self.model;
        let m = &model.cfg;
        let sp: &StackParams = model.layout.decoder.as_ref().expect("a decoder stack");
        let (n, pos0) = (ids.len(), self.len);
        let mut ctx = Ctx { be: self.be, cfg: m, params: &model.params, grads: None, dropout: None };
        let st = StackCtx::new(m, sp, 1, n, pos0, None);
        let mut x = on_host(model.embed(&ctx, sp, ids, 1, n, pos0));
        for (li, bp) in sp.blocks.iter().enumerate() {
            let kv = &mut self.kv[li];
            let (_, y) = on_host(block::sublayer_forward(&mut ctx, &st, &bp.attn_norms, x, |ctx, h| Ok((cached_self_attention(ctx, &st, bp, h, kv, pos0)?, ()))));
            x = y;
            if let Some(cp) = &bp.cross {
                let ckv = &self.cross[li];
                let s = self.src_len;
                let (_, y) = on_host(block::sublayer_forward(&mut ctx, &st, &cp.norms, x, |ctx, h| {
                    let (nh, hs) = (m.n_heads, m.head_size());
                    let q = split_heads(ctx.be, &linear_forward(ctx, &cp.q, h, n)?, 1, n, nh * hs, 0, nh, hs);
                    let sh = block::attn_shape(ctx, 1, n, s, false, 0);
                    let (mut att, mut lse) = (vec![0.0; n * nh * hs], vec![0.0; nh * n]);
                    ctx.be.attention_forward(&mut att, &mut lse, &q, &ckv.k, &ckv.v, AttnBias::None, &sh);
                    Ok((linear_forward(ctx, &cp.proj, &att, n)?, ()))
                }));
                x = y;
            }
            let (_, y) = on_host(block::sublayer_forward(&mut ctx, &st, &bp.ffn_norms, x, |ctx, h| {
                let (y, _) = block::ffn_forward(ctx, &st, bp, h)?;
                Ok((y, ()))
            }));
            x = y;
        }
        if let Some(nf) = &sp.ln_f {
            x = on_host(block::norm_forward(&ctx, nf, &x)).out;
        }
        self.len += n;
        let (c, v) = (m.d_model, model.vocab());
        let mut logits = vec![0.0; n * v];
        self.be.matmul_forward(&mut logits, &x, model.layout.head().of(&model.params), None, n, c, v);
        logits
    }
}

/// Self-attention of n new rows against the cache plus themselves; appends their keys and values to the cache.
fn cached_self_attention<'x>(
    ctx: &mut Ctx<dyn Backend + 'x>,
    st: &StackCtx<dyn Backend + 'x>,
    bp: &super::layout::BlockParams,
    h: &[f32],
    kv: &mut LayerKv,
    pos0: usize,
) -> Result<Vec<f32>> {
    let (m, be) = (ctx.cfg, ctx.be);
    let (nh, nkv, hs, n) = (m.n_heads, m.n_kv_heads, m.head_size(), st.t);
    let qkv = linear_forward(ctx, &bp.qkv, h, n)?;
    let w = bp.qkv.out;
    let mut q = split_heads(be, &qkv, 1, n, w, 0, nh, hs);
    let mut k = split_heads(be, &qkv, 1, n, w, nh * hs, nkv, hs);
    let v = split_heads(be, &qkv, 1, n, w, (nh + nkv) * hs, nkv, hs);
    if let Position::Rope { theta } = m.position {
        ctx.be.rope(&mut q, n, hs, pos0, theta, false);
        ctx.be.rope(&mut k, n, hs, pos0, theta, false);
    }
    kv.k = append_heads(&kv.k, &k, nkv, pos0, n, hs);
    kv.v = append_heads(&kv.v, &v, nkv, pos0, n, hs);
    let sh = block::attn_shape(ctx, 1, n, pos0 + n, st.causal, pos0);
    let (mut att, mut lse) = (vec![0.0; n * nh * hs], vec![0.0; nh * n]);
    ctx.be.attention_forward(&mut att, &mut lse, &q, &kv.k, &kv.v, block::self_bias(ctx, st), &sh);
    linear_forward(ctx, &bp.proj, &att, n)
}

impl Model {
    /// Encoder output (S, C) for one source sequence (encoder-decoder), without gradients.
    pub fn encode(&self, be: &dyn Backend, src: &[u32]) -> Vec<f32> {
        let e = self.layout.encoder.as_ref().expect("an encoder stack");
        let mut ctx = Ctx { be, cfg: &self.cfg, params: &self.params, grads: None, dropout: None };
        let st = StackCtx::new(&self.cfg, e, 1, src.len(), 0, None);
        on_host(self.stack_forward(&mut ctx, e, &st, src)).out
    }
}
