//! The Transformer, written once over the `Backend` op set: GPT (causal decoder), BERT (bidirectional encoder) and
//! the encoder-decoder (T5/BART), assembled from the same blocks. docs/MODEL.md is the exact specification.
//!
//! `forward` returns every activation the backward needs (`Forward`); `backward` walks them in exact reverse,
//! accumulating into a gradient buffer laid out like the parameters.

pub mod block;
pub mod infer;
pub mod layout;
pub mod position;

pub use layout::{Layout, TensorInfo, View};

use crate::backend::Backend;
use crate::config::{ModelConfig, Placement, Position};
use crate::rng::Rng;
use block::BlockCache;
use layout::StackParams;

/// Everything an op call needs: the backend, the config, the parameters, and (in backward) the gradients.
pub struct Ctx<'a> {
    pub be: &'a dyn Backend,
    pub cfg: &'a ModelConfig,
    pub params: &'a [f32],
    pub grads: Option<&'a mut [f32]>,
    /// (p, rng) while training with dropout.
    pub dropout: Option<(f32, &'a mut Rng)>,
}

impl Ctx<'_> {
    /// A fresh inverted-dropout mask (values 0 or 1/(1−p)), or empty when not dropping.
    pub fn dropout_mask(&mut self, n: usize) -> Vec<f32> {
        match self.dropout.as_mut() {
            Some((p, rng)) if *p > 0.0 => {
                let keep = 1.0 / (1.0 - *p);
                (0..n).map(|_| if rng.uniform() < *p as f64 { 0.0 } else { keep }).collect()
            }
            _ => vec![],
        }
    }
}

/// Per-call facts about one stack: sizes, positions, masks, and the encoder output for cross-attention.
pub struct StackCtx<'m> {
    pub b: usize,
    pub t: usize,
    /// Absolute position of row 0 (0 in training).
    pub pos0: usize,
    pub causal: bool,
    pub alpha: f32,
    pub alibi: Vec<f32>,
    pub rel_table: Option<View>,
    /// T5 buckets (T, T) for this stack's direction.
    pub buckets: Vec<u32>,
    /// Encoder output (B,S,C) and S.
    pub memory: Option<(&'m [f32], usize)>,
}

impl<'m> StackCtx<'m> {
    pub fn new(cfg: &ModelConfig, sp: &StackParams, b: usize, t: usize, pos0: usize, memory: Option<(&'m [f32], usize)>) -> Self {
        let alibi = if cfg.position == Position::Alibi { position::alibi_slopes(cfg.n_heads) } else { vec![] };
        let buckets = match cfg.position {
            Position::Relative { buckets, max_distance } => {
                position::t5_bucket_table(t, pos0 + t, pos0, !sp.causal, buckets, max_distance)
            }
            _ => vec![],
        };
        StackCtx { b, t, pos0, causal: sp.causal, alpha: sp.alpha, alibi, rel_table: sp.rel_bias, buckets, memory }
    }
}

/// Saved activations of one stack.
pub struct StackCache {
    pub blocks: Vec<BlockCache>,
    /// Input of ln_f (the last block's output) and its stats, when the stack has ln_f.
    pub pre_lnf: Vec<f32>,
    pub lnf_mean: Vec<f32>,
    pub lnf_rstd: Vec<f32>,
    /// Embedding dropout mask (empty when not dropping).
    pub emb_mask: Vec<f32>,
    /// Stack output (B,T,C).
    pub out: Vec<f32>,
}

/// A batch of token ids. For gpt and bert `idx` is (B,T); for the encoder-decoder `src` (B,S) feeds the encoder
/// and `idx` (B,T) is the shifted decoder input. `targets` (B,T), −1 = not counted.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub idx: Vec<u32>,
    pub targets: Vec<i32>,
    pub s: usize,
    pub src: Vec<u32>,
}

/// What a forward pass keeps for the backward pass, and its results.
pub struct Forward {
    pub enc: Option<StackCache>,
    pub dec: Option<StackCache>,
    /// Input of the LM head (B,T,C).
    pub head_in: Vec<f32>,
    pub logits: Vec<f32>, // (B,T,V)
    /// Mean cross-entropy over counted targets (NaN if none are counted).
    pub loss: f32,
    pub count: usize,
    pub dlogits: Vec<f32>, // (B,T,V), ∂loss/∂logits
}

#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub layout: Layout,
    pub params: Vec<f32>,
}

impl Model {
    /// A model with the documented initialisation (docs/MODEL.md), from a seed.
    pub fn new(cfg: &ModelConfig, vocab: usize, seed: u64) -> Model {
        let layout = Layout::new(cfg, vocab);
        let mut params = vec![0.0f32; layout.size];
        let mut rng = Rng::new(seed);
        let (ne, nd) = cfg.stack_layers();
        let deep = cfg.norm.placement == Placement::Deepnorm;
        for t in &layout.tensors {
            let name = t.name.as_str();
            let p = t.view.of_mut(&mut params);
            if name.ends_with(".bias") {
                continue; // zeros
            }
            if t.shape.len() == 1 {
                p.fill(1.0); // norm weights
                continue;
            }
            let layers = if name.starts_with("encoder.") || (cfg.arch == crate::config::Arch::Bert) { ne } else { nd };
            let residual_out = name.ends_with("attn.proj.weight") || name.ends_with("cross.proj.weight") || name.ends_with("mlp.proj.weight");
            let mut std = cfg.init_std;
            if residual_out && !deep {
                std /= (2.0 * layers.max(1) as f32).sqrt(); // GPT-2 scaled residual init
            }
            for x in p.iter_mut() {
                *x = (rng.normal() as f32) * std;
            }
            if deep {
                let stack = if name.starts_with("encoder.") || cfg.arch == crate::config::Arch::Bert { &layout.encoder } else { &layout.decoder };
                let beta = stack.as_ref().map_or(1.0, |s| s.beta);
                let ffn_or_out = name.contains(".mlp.") || residual_out;
                if ffn_or_out {
                    p.iter_mut().for_each(|x| *x *= beta);
                } else if name.ends_with("attn.qkv.weight") || name.ends_with("cross.kv.weight") {
                    // Only the value rows are scaled: they are the last NKV·HS rows.
                    let c = cfg.d_model;
                    let vrows = cfg.n_kv_heads * cfg.head_size();
                    let start = p.len() - vrows * c;
                    p[start..].iter_mut().for_each(|x| *x *= beta);
                }
            }
        }
        Model { cfg: cfg.clone(), layout, params }
    }

    pub fn vocab(&self) -> usize {
        self.layout.vocab
    }

    /// Embedding of ids (B,T) at positions pos0..: wte + learned or sinusoidal positions.
    fn embed(&self, sp: &StackParams, idx: &[u32], b: usize, t: usize, pos0: usize) -> Vec<f32> {
        let c = self.cfg.d_model;
        let wte = self.layout.wte.of(&self.params);
        let mut x = vec![0.0f32; b * t * c];
        let sin = if self.cfg.position == Position::Sinusoidal { position::sinusoidal_table(t, c, pos0) } else { vec![] };
        for r in 0..b * t {
            let row = &mut x[r * c..(r + 1) * c];
            row.copy_from_slice(&wte[idx[r] as usize * c..][..c]);
            let tp = r % t;
            if let Some(wpe) = sp.wpe {
                let wpe = wpe.of(&self.params);
                row.iter_mut().zip(&wpe[(pos0 + tp) * c..][..c]).for_each(|(a, b)| *a += b);
            }
            if !sin.is_empty() {
                row.iter_mut().zip(&sin[tp * c..][..c]).for_each(|(a, b)| *a += b);
            }
        }
        x
    }

    fn embed_backward(&self, sp: &StackParams, grads: &mut [f32], dx: &[f32], idx: &[u32], t: usize) {
        let c = self.cfg.d_model;
        for (r, d) in dx.chunks_exact(c).enumerate() {
            let g = &mut self.layout.wte.of_mut(grads)[idx[r] as usize * c..][..c];
            g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            if let Some(wpe) = sp.wpe {
                let g = &mut wpe.of_mut(grads)[(r % t) * c..][..c];
                g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
        }
    }

    pub(crate) fn stack_forward(&self, ctx: &mut Ctx, sp: &StackParams, st: &StackCtx, idx: &[u32]) -> StackCache {
        let mut x = self.embed(sp, idx, st.b, st.t, st.pos0);
        let emb_mask = ctx.dropout_mask(x.len());
        if !emb_mask.is_empty() {
            x.iter_mut().zip(&emb_mask).for_each(|(a, m)| *a *= m);
        }
        let mut blocks = Vec::with_capacity(sp.blocks.len());
        for bp in &sp.blocks {
            let (cache, out) = block::block_forward(ctx, st, bp, x);
            blocks.push(cache);
            x = out;
        }
        let (pre_lnf, lnf_mean, lnf_rstd, out) = match &sp.ln_f {
            Some(n) => {
                let o = block::norm_forward(ctx, n, &x);
                (x, o.mean, o.rstd, o.out)
            }
            None => (vec![], vec![], vec![], x),
        };
        StackCache { blocks, pre_lnf, lnf_mean, lnf_rstd, emb_mask, out }
    }

    /// Returns d memory (B,S,C) accumulated by cross-attention (empty for stacks without it).
    fn stack_backward(&self, ctx: &mut Ctx, sp: &StackParams, st: &StackCtx, sc: &StackCache, dout: Vec<f32>, idx: &[u32]) -> Vec<f32> {
        let mut dmem = match st.memory {
            Some((m, _)) => vec![0.0; m.len()],
            None => vec![],
        };
        let mut dx = match &sp.ln_f {
            Some(n) => {
                let mut dx = vec![0.0; dout.len()];
                block::norm_backward(ctx, n, &mut dx, &dout, &sc.pre_lnf, &sc.lnf_mean, &sc.lnf_rstd);
                dx
            }
            None => dout,
        };
        for (bp, bc) in sp.blocks.iter().zip(&sc.blocks).rev() {
            dx = block::block_backward(ctx, st, bp, bc, &dx, &mut dmem);
        }
        if !sc.emb_mask.is_empty() {
            dx.iter_mut().zip(&sc.emb_mask).for_each(|(a, m)| *a *= m);
        }
        self.embed_backward(sp, ctx.grads.as_deref_mut().expect("grads"), &dx, idx, st.t);
        dmem
    }

    /// Full forward pass with loss. `dropout` = Some(rng) while training (ignored when config dropout is 0).
    pub fn forward(&self, be: &dyn Backend, batch: &Batch, dropout: Option<&mut Rng>) -> Forward {
        let p = self.cfg.dropout;
        let mut ctx = Ctx { be, cfg: &self.cfg, params: &self.params, grads: None, dropout: dropout.filter(|_| p > 0.0).map(|r| (p, r)) };
        let (b, t) = (batch.b, batch.t);
        let (enc, dec) = match (&self.layout.encoder, &self.layout.decoder) {
            (Some(e), Some(d)) => {
                let est = StackCtx::new(&self.cfg, e, b, batch.s, 0, None);
                let enc = self.stack_forward(&mut ctx, e, &est, &batch.src);
                let dst = StackCtx::new(&self.cfg, d, b, t, 0, Some((&enc.out, batch.s)));
                let dec = self.stack_forward(&mut ctx, d, &dst, &batch.idx);
                (Some(enc), Some(dec))
            }
            (Some(e), None) => {
                let est = StackCtx::new(&self.cfg, e, b, t, 0, None);
                (Some(self.stack_forward(&mut ctx, e, &est, &batch.idx)), None)
            }
            (None, Some(d)) => {
                let dst = StackCtx::new(&self.cfg, d, b, t, 0, None);
                (None, Some(self.stack_forward(&mut ctx, d, &dst, &batch.idx)))
            }
            (None, None) => unreachable!("a model has at least one stack"),
        };
        let head_in = dec.as_ref().or(enc.as_ref()).expect("a stack").out.clone();
        let (logits, loss, count, dlogits) = self.head_and_loss(be, &head_in, &batch.targets, b * t);
        Forward { enc, dec, head_in, logits, loss, count, dlogits }
    }

    /// logits = x·Wᵀ (tied or lm_head); mean cross-entropy and its gradient.
    fn head_and_loss(&self, be: &dyn Backend, x: &[f32], targets: &[i32], n: usize) -> (Vec<f32>, f32, usize, Vec<f32>) {
        let (c, v) = (self.cfg.d_model, self.vocab());
        let mut logits = vec![0.0; n * v];
        be.matmul_forward(&mut logits, x, self.layout.head().of(&self.params), None, n, c, v);
        let count = targets.iter().filter(|&&t| t >= 0).count();
        let mut dlogits = vec![0.0; n * v];
        let (total, count2) = be.cross_entropy(&mut dlogits, &logits, targets, v, 1.0 / count.max(1) as f32);
        debug_assert_eq!(count, count2);
        let loss = if count == 0 { f32::NAN } else { (total / count as f64) as f32 };
        (logits, loss, count, dlogits)
    }

    /// Accumulates ∂loss/∂params into `grads` (same layout as params).
    pub fn backward(&self, be: &dyn Backend, fwd: &Forward, batch: &Batch, grads: &mut [f32]) {
        let (c, v, n) = (self.cfg.d_model, self.vocab(), batch.b * batch.t);
        let mut dx = vec![0.0; n * c];
        be.matmul_backward(Some(&mut dx), self.layout.head().of_mut(grads), None, &fwd.dlogits, &fwd.head_in, self.layout.head().of(&self.params), n, c, v);
        let mut ctx = Ctx { be, cfg: &self.cfg, params: &self.params, grads: Some(grads), dropout: None };
        let (b, t) = (batch.b, batch.t);
        match (&self.layout.encoder, &self.layout.decoder) {
            (Some(e), Some(d)) => {
                let (enc, dec) = (fwd.enc.as_ref().expect("enc"), fwd.dec.as_ref().expect("dec"));
                let dst = StackCtx::new(&self.cfg, d, b, t, 0, Some((&enc.out, batch.s)));
                let dmem = self.stack_backward(&mut ctx, d, &dst, dec, dx, &batch.idx);
                let est = StackCtx::new(&self.cfg, e, b, batch.s, 0, None);
                self.stack_backward(&mut ctx, e, &est, enc, dmem, &batch.src);
            }
            (Some(e), None) => {
                let est = StackCtx::new(&self.cfg, e, b, t, 0, None);
                self.stack_backward(&mut ctx, e, &est, fwd.enc.as_ref().expect("enc"), dx, &batch.idx);
            }
            (None, Some(d)) => {
                let dst = StackCtx::new(&self.cfg, d, b, t, 0, None);
                self.stack_backward(&mut ctx, d, &dst, fwd.dec.as_ref().expect("dec"), dx, &batch.idx);
            }
            (None, None) => unreachable!(),
        }
    }
}
