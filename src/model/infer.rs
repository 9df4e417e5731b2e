//! Inference with a KV cache (batch 1): each new token attends to the cached keys and values of the tokens before
//! it, so a sampled token costs one row of every matmul instead of a full forward. It runs the training forward
//! (`block::block_forward`) with each block's cache (`BlockKv`); the encoder-decoder also caches the source's
//! cross-attention keys and values once per input. The result equals the full forward (tested in
//! `tests/invariants.rs`: `incremental_decoding_with_the_kv_cache_equals_the_full_forward`).

use super::block::{self, BlockKv, KvCache};
use super::layout::StackParams;
use super::recurrent;
use super::{Ctx, Model, StackCtx};
use crate::backend::{on_host, Host};

/// An incremental decoder over the model's decoder stack (gpt, or the decoder of an encoder-decoder).
pub struct Decoder<'a, H: Host> {
    model: &'a Model,
    be: &'a H,
    /// One cache per block of the decoder stack.
    kv: Vec<BlockKv>,
    /// Tokens in the cache.
    pub len: usize,
    /// The recurrent position encoding's GRU state after the last token fed (C); empty before the first.
    rnn_h: Vec<f32>,
}

fn empty() -> KvCache {
    KvCache { k: vec![], v: vec![], len: 0 }
}

impl<'a, H: Host> Decoder<'a, H> {
    /// For gpt. For an encoder-decoder use `with_source`.
    pub fn new(model: &'a Model, be: &'a H) -> Decoder<'a, H> {
        let n = model.layout.decoder.as_ref().map_or(0, |d| d.blocks.len());
        Decoder { model, be, kv: (0..n).map(|_| BlockKv { self_kv: empty(), cross: None }).collect(), len: 0, rnn_h: vec![] }
    }

    /// Encodes the source once and caches every decoder layer's cross-attention keys and values.
    pub fn with_source(model: &'a Model, be: &'a H, src: &[u32]) -> Decoder<'a, H> {
        let mut d = Decoder::new(model, be);
        let memory = model.encode(be, src);
        let s = src.len();
        let ctx = Ctx { be, cfg: &model.cfg, params: &model.params[..], grads: None, dropout: None };
        let dec = model.layout.decoder.as_ref().expect("encoder-decoder has a decoder");
        for (kv, bp) in d.kv.iter_mut().zip(&dec.blocks) {
            let cp = bp.cross.as_ref().expect("decoder blocks have cross-attention");
            kv.cross = Some(on_host(block::memory_kv_cache(&ctx, cp, &memory, s)));
        }
        d
    }

    /// The recurrent position encoding's GRU state after the tokens fed so far (C); empty before the first token
    /// and for other position schemes.
    pub fn rnn_state(&self) -> &[f32] {
        &self.rnn_h
    }

    /// Drops the self-attention cache and the GRU state (the cross-attention cache of the source is kept).
    pub fn reset(&mut self) {
        self.kv.iter_mut().for_each(|kv| kv.self_kv = empty());
        self.len = 0;
        self.rnn_h.clear();
    }

    /// Feeds `ids` at positions len.. and returns their logits (n, V).
    pub fn feed(&mut self, ids: &[u32]) -> Vec<f32> {
        let model = self.model;
        let m = &model.cfg;
        let sp: &StackParams = model.layout.decoder.as_ref().expect("a decoder stack");
        let (n, pos0) = (ids.len(), self.len);
        let mut ctx = Ctx { be: self.be, cfg: m, params: &model.params[..], grads: None, dropout: None };
        let st = StackCtx::on(m, sp, 1, n, pos0, None);
        let mut x = on_host(model.embed(&ctx, sp, ids, 1, n, pos0));
        if let Some(r) = &sp.rnn {
            // The GRU goes on from the state the previous tokens left, as the full forward's recurrence would.
            let h0 = (!self.rnn_h.is_empty()).then_some(&self.rnn_h[..]);
            let rc = on_host(recurrent::recurrent_forward(&ctx, r, &mut x, h0, 1, n));
            let c = m.d_model;
            if n > 0 {
                self.rnn_h = rc.h[(n - 1) * c..n * c].to_vec();
            }
        }
        for (bp, kv) in sp.blocks.iter().zip(&mut self.kv) {
            x = on_host(block::block_forward(&mut ctx, &st, bp, x, Some(kv))).1;
        }
        if let Some(nf) = &sp.ln_f {
            x = on_host(block::norm_forward(&ctx, nf, &x)).out;
        }
        self.len += n;
        let (c, v) = (m.d_model, model.vocab());
        let mut logits = vec![0.0; n * v];
        on_host(self.be.matmul_forward(&mut logits, &x, model.layout.head().of(&model.params), None, n, c, v));
        logits
    }
}

impl Model {
    /// Encoder output (S, C) for one source sequence (encoder-decoder), without gradients.
    pub fn encode<H: Host>(&self, be: &H, src: &[u32]) -> Vec<f32> {
        let e = self.layout.encoder.as_ref().expect("an encoder stack");
        let mut ctx = Ctx { be, cfg: &self.cfg, params: &self.params[..], grads: None, dropout: None };
        let st = StackCtx { capacity: false, ..StackCtx::on(&self.cfg, e, 1, src.len(), 0, None) };
        on_host(self.stack_forward(&mut ctx, e, &st, src)).out
    }
}
