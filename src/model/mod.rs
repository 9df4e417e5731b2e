//! The Transformer, written once over the op trait (`backend::Backend`): GPT (causal decoder), BERT
//! (bidirectional encoder) and the encoder-decoder (T5/BART), assembled from the same blocks. docs/MODEL.md is the
//! exact specification. The same code runs on the host backends (`Model::forward`, `Model::backward`) and on the
//! GPU (`forward_on`, `backward_on` over `backend::gpu::GpuStep`, recording one submission).
//!
//! `forward` returns every activation the backward needs (`Forward`); `backward` walks them in exact reverse,
//! accumulating into a gradient buffer laid out like the parameters.

pub mod block;
pub mod infer;
pub mod layout;
pub mod paged;
pub mod position;
pub mod recurrent;

pub use layout::{Layout, TensorInfo, View};

use crate::backend::{on_host, Backend, Host};
use crate::config::{ModelConfig, Placement, Position};
use crate::error::Result;
use crate::rng::Rng;
use block::BlockCache;
use layout::StackParams;

/// Everything an op call needs: the backend, the config, the parameters, and (in backward) the gradients.
pub struct Ctx<'a, D: Backend> {
    pub be: &'a D,
    pub cfg: &'a ModelConfig,
    pub params: &'a D::Params,
    pub grads: Option<&'a mut D::Params>,
    /// (p, rng) while training with dropout.
    pub dropout: Option<(f32, &'a mut Rng)>,
}

impl<D: Backend> Ctx<'_, D> {
    /// A fresh inverted-dropout mask (values 0 or 1/(1−p)), or empty when not dropping. Always drawn on the
    /// host, so every device sees the masks the CPU sees.
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
pub struct StackCtx<'m, D: Backend + 'm> {
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
    pub memory: Option<(D::In<'m>, usize)>,
    /// A Mixture-of-Experts layer limits each expert to its capacity (training, evaluation: a batch); false when
    /// generating, where every token is routed (docs/MODEL.md).
    pub capacity: bool,
}

impl<'m, D: Backend + 'm> StackCtx<'m, D> {
    pub fn on(cfg: &ModelConfig, sp: &StackParams, b: usize, t: usize, pos0: usize, memory: Option<(D::In<'m>, usize)>) -> Self {
        let alibi = if cfg.position == Position::Alibi { position::alibi_slopes(cfg.n_heads) } else { vec![] };
        let buckets = match cfg.position {
            Position::Relative { buckets, max_distance } => {
                position::t5_bucket_table(t, pos0 + t, pos0, !sp.causal, buckets, max_distance)
            }
            _ => vec![],
        };
        StackCtx { b, t, pos0, causal: sp.causal, alpha: sp.alpha, alibi, rel_table: sp.rel_bias, buckets, memory, capacity: true }
    }
}

/// Saved activations of one stack.
pub struct StackCache<B = Vec<f32>> {
    pub blocks: Vec<BlockCache<B>>,
    /// Input of ln_f (the last block's output) and its stats, when the stack has ln_f.
    pub pre_lnf: Option<B>,
    pub lnf_mean: Option<B>,
    pub lnf_rstd: Option<B>,
    /// Embedding dropout mask (None when not dropping).
    pub emb_mask: Option<B>,
    /// The recurrent position encoding's activations (position `recurrent`).
    pub rnn: Option<recurrent::RnnCache<B>>,
    /// Stack output (B,T,C).
    pub out: B,
}

/// Moves every buffer a forward pass's caches hold into `out`: a finished step gives them back to its backend
/// (`Backend::recycle`), which may lend them again as the next step's op outputs. Each impl takes its value apart
/// field by field (no `..`), so a field added to a cache is a compile error here until it is listed.
pub trait Buffers<B> {
    fn buffers_into(self, out: &mut Vec<B>);
}

impl<B, T: Buffers<B>> Buffers<B> for Option<T> {
    fn buffers_into(self, out: &mut Vec<B>) {
        if let Some(x) = self {
            x.buffers_into(out)
        }
    }
}

impl<B, T: Buffers<B>> Buffers<B> for Vec<T> {
    fn buffers_into(self, out: &mut Vec<B>) {
        self.into_iter().for_each(|x| x.buffers_into(out))
    }
}

impl<B> Buffers<B> for StackCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let StackCache { blocks, pre_lnf, lnf_mean, lnf_rstd, emb_mask, rnn, out: y } = self;
        blocks.buffers_into(out);
        out.extend([pre_lnf, lnf_mean, lnf_rstd, emb_mask].into_iter().flatten());
        rnn.buffers_into(out);
        out.push(y);
    }
}

impl<B, L> Buffers<B> for Forward<B, L> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let Forward { enc, dec, head_in, logits, loss: _, count: _, dlogits } = self;
        enc.buffers_into(out);
        dec.buffers_into(out);
        out.extend([head_in, logits, dlogits]);
    }
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

/// What a forward pass keeps for the backward pass, and its results. B is the device's buffer, L its loss (on the
/// host: `Vec<f32>` and `f32`).
pub struct Forward<B = Vec<f32>, L = f32> {
    pub enc: Option<StackCache<B>>,
    pub dec: Option<StackCache<B>>,
    /// Input of the LM head (B,T,C).
    pub head_in: B,
    pub logits: B, // (B,T,V)
    /// Mean cross-entropy over counted targets (NaN if none are counted).
    pub loss: L,
    pub count: usize,
    pub dlogits: B, // (B,T,V), ∂loss/∂logits
}

impl<B, L> Forward<B, L> {
    /// The statistics of every Mixture-of-Experts layer (`Backend::moe_route`), in layout order (encoder first).
    pub fn moe_stats(&self) -> Vec<&B> {
        let stacks = [&self.enc, &self.dec].into_iter().flatten();
        stacks
            .flat_map(|s| &s.blocks)
            .filter_map(|b| match &b.ffn.f {
                block::FfnCache::Moe(m) => Some(&m.stats),
                block::FfnCache::Dense(_) => None,
            })
            .collect()
    }
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
            if name.ends_with(".bias") || name.ends_with(".bias_ih") || name.ends_with(".bias_hh") {
                continue; // zeros
            }
            if t.shape.len() == 1 {
                p.fill(1.0); // norm weights
                continue;
            }
            let layers = if name.starts_with("encoder.") || (cfg.arch == crate::config::Arch::Bert) { ne } else { nd };
            let expert_proj = name.contains(".mlp.experts.") && name.ends_with(".proj.weight");
            let residual_out =
                name.ends_with("attn.proj.weight") || name.ends_with("cross.proj.weight") || name.ends_with("mlp.proj.weight") || expert_proj;
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
                // The FFN's weights (the experts', not the router's) and the output projections.
                let ffn_or_out = (name.contains(".mlp.") && !name.contains(".mlp.router")) || residual_out;
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
    fn embed<D: Backend>(&self, ctx: &Ctx<D>, sp: &StackParams, idx: &[u32], b: usize, t: usize, pos0: usize) -> Result<D::Buf> {
        let (d, c) = (ctx.be, self.cfg.d_model);
        let mut x = d.output(b * t * c)?;
        let sin = if self.cfg.position == Position::Sinusoidal { position::sinusoidal_table(t, c, pos0) } else { vec![] };
        let (wte, wpe) = (D::param(ctx.params, self.layout.wte)?, sp.wpe.map(|w| D::param(ctx.params, w)).transpose()?);
        d.embedding_forward(D::view_mut(&mut x), idx, wte, wpe, &sin, t, pos0, c)?;
        Ok(x)
    }

    fn embed_backward<D: Backend>(&self, ctx: &mut Ctx<D>, sp: &StackParams, dx: &D::Buf, idx: &[u32], t: usize) -> Result<()> {
        let (d, c) = (ctx.be, self.cfg.d_model);
        let (dwte, dwpe) = D::grad_pair(ctx.grads.as_deref_mut().expect("grads"), self.layout.wte, sp.wpe)?;
        d.embedding_backward(dwte, dwpe, D::view(dx), idx, t, c)
    }

    pub(crate) fn stack_forward<D: Backend>(&self, ctx: &mut Ctx<D>, sp: &StackParams, st: &StackCtx<D>, idx: &[u32]) -> Result<StackCache<D::Buf>> {
        let d = ctx.be;
        let mut x = self.embed(ctx, sp, idx, st.b, st.t, st.pos0)?;
        let rnn = match &sp.rnn {
            Some(r) => Some(recurrent::recurrent_forward(ctx, r, &mut x, None, st.b, st.t)?),
            None => None,
        };
        let mask = ctx.dropout_mask(block::len::<D>(&x));
        let emb_mask = if mask.is_empty() { None } else { Some(d.upload(mask)?) };
        if let Some(m) = &emb_mask {
            d.mul_into(D::view_mut(&mut x), D::view(m))?;
        }
        let mut blocks = Vec::with_capacity(sp.blocks.len());
        for bp in &sp.blocks {
            let (cache, out) = block::block_forward(ctx, st, bp, x, None)?;
            blocks.push(cache);
            x = out;
        }
        let (pre_lnf, lnf_mean, lnf_rstd, out) = match &sp.ln_f {
            Some(n) => {
                let o = block::norm_forward(ctx, n, D::view(&x))?;
                (Some(x), Some(o.mean), Some(o.rstd), o.out)
            }
            None => (None, None, None, x),
        };
        Ok(StackCache { blocks, pre_lnf, lnf_mean, lnf_rstd, emb_mask, rnn, out })
    }

    /// Returns d memory (B,S,C) accumulated by cross-attention (None for stacks without it).
    fn stack_backward<D: Backend>(
        &self,
        ctx: &mut Ctx<D>,
        sp: &StackParams,
        st: &StackCtx<D>,
        sc: &StackCache<D::Buf>,
        dout: D::Buf,
        idx: &[u32],
    ) -> Result<Option<D::Buf>> {
        let d = ctx.be;
        let mut dmem = match st.memory {
            Some((m, _)) => Some(d.zeros(D::len(m))?),
            None => None,
        };
        let mut dx = match (&sp.ln_f, &sc.pre_lnf, &sc.lnf_mean, &sc.lnf_rstd) {
            (Some(n), Some(x), Some(mean), Some(rstd)) => {
                let mut dx = d.zeros(block::len::<D>(&dout))?;
                block::norm_backward(ctx, n, D::view_mut(&mut dx), D::view(&dout), D::view(x), D::view(mean), D::view(rstd))?;
                dx
            }
            _ => dout,
        };
        for (bp, bc) in sp.blocks.iter().zip(&sc.blocks).rev() {
            dx = block::block_backward(ctx, st, bp, bc, &dx, dmem.as_mut())?;
        }
        if let Some(m) = &sc.emb_mask {
            d.mul_into(D::view_mut(&mut dx), D::view(m))?;
        }
        if let (Some(r), Some(rc)) = (&sp.rnn, &sc.rnn) {
            recurrent::recurrent_backward(ctx, r, rc, &mut dx, st.b, st.t)?;
        }
        self.embed_backward(ctx, sp, &dx, idx, st.t)?;
        Ok(dmem)
    }

    /// Full forward pass with loss on a host backend. `dropout` = Some(rng) while training (ignored when config
    /// dropout is 0).
    pub fn forward<H: Host>(&self, be: &H, batch: &Batch, dropout: Option<&mut Rng>) -> Forward {
        on_host(self.forward_on(be, &self.params[..], batch, dropout))
    }

    /// Full forward pass with loss on a device, with `params` laid out like `self.params` (which it ignores).
    pub fn forward_on<D: Backend>(&self, d: &D, params: &D::Params, batch: &Batch, dropout: Option<&mut Rng>) -> Result<Forward<D::Buf, D::Loss>> {
        let p = self.cfg.dropout;
        let mut ctx = Ctx { be: d, cfg: &self.cfg, params, grads: None, dropout: dropout.filter(|_| p > 0.0).map(|r| (p, r)) };
        let (b, t) = (batch.b, batch.t);
        let (enc, dec) = match (&self.layout.encoder, &self.layout.decoder) {
            (Some(e), Some(dl)) => {
                let est = StackCtx::on(&self.cfg, e, b, batch.s, 0, None);
                let enc = self.stack_forward(&mut ctx, e, &est, &batch.src)?;
                let dst = StackCtx::on(&self.cfg, dl, b, t, 0, Some((D::view(&enc.out), batch.s)));
                let dec = self.stack_forward(&mut ctx, dl, &dst, &batch.idx)?;
                drop(dst); // it borrows enc
                (Some(enc), Some(dec))
            }
            (Some(e), None) => {
                let est = StackCtx::on(&self.cfg, e, b, t, 0, None);
                (Some(self.stack_forward(&mut ctx, e, &est, &batch.idx)?), None)
            }
            (None, Some(dl)) => {
                let dst = StackCtx::on(&self.cfg, dl, b, t, 0, None);
                (None, Some(self.stack_forward(&mut ctx, dl, &dst, &batch.idx)?))
            }
            (None, None) => unreachable!("a model has at least one stack"),
        };
        let head_in = d.copy_of(D::view(&dec.as_ref().or(enc.as_ref()).expect("a stack").out))?;
        let (logits, loss, count, dlogits) = self.head_and_loss(&ctx, D::view(&head_in), &batch.targets, b * t)?;
        Ok(Forward { enc, dec, head_in, logits, loss, count, dlogits })
    }

    /// logits = x·Wᵀ (tied or lm_head); mean cross-entropy and its gradient.
    #[allow(clippy::type_complexity)]
    fn head_and_loss<D: Backend>(&self, ctx: &Ctx<D>, x: D::In<'_>, targets: &[i32], n: usize) -> Result<(D::Buf, D::Loss, usize, D::Buf)> {
        let (d, c, v) = (ctx.be, self.cfg.d_model, self.vocab());
        let mut logits = d.output(n * v)?;
        d.matmul_forward(D::view_mut(&mut logits), x, D::param(ctx.params, self.layout.head())?, None, n, c, v)?;
        let count = targets.iter().filter(|&&t| t >= 0).count();
        let mut dlogits = d.output(n * v)?;
        let loss = d.mean_cross_entropy(D::view_mut(&mut dlogits), D::view(&logits), targets, v, count)?;
        Ok((logits, loss, count, dlogits))
    }

    /// Accumulates ∂loss/∂params into `grads` (same layout as params), on a host backend.
    pub fn backward<H: Host>(&self, be: &H, fwd: &Forward, batch: &Batch, grads: &mut [f32]) {
        on_host(self.backward_on(be, &self.params[..], fwd, batch, grads))
    }

    /// Accumulates ∂loss/∂params into `grads` on a device.
    pub fn backward_on<D: Backend>(
        &self,
        d: &D,
        params: &D::Params,
        fwd: &Forward<D::Buf, D::Loss>,
        batch: &Batch,
        grads: &mut D::Params,
    ) -> Result<()> {
        self.backward_with(d, params, fwd, batch, grads, None)
    }

    /// `backward_on` for an objective with another term on the stack's output: `dhead_in` (B,T,C), ∂/∂`head_in` of
    /// that term (a classifier head's, `recipes::finetune`), is added to what the LM head's backward gives (from
    /// `fwd.dlogits`, which the caller may have scaled).
    pub fn backward_with<D: Backend>(
        &self,
        d: &D,
        params: &D::Params,
        fwd: &Forward<D::Buf, D::Loss>,
        batch: &Batch,
        grads: &mut D::Params,
        dhead_in: Option<D::In<'_>>,
    ) -> Result<()> {
        let (c, v, n) = (self.cfg.d_model, self.vocab(), batch.b * batch.t);
        let head = self.layout.head();
        let mut dx = d.zeros(n * c)?;
        let (dl, hi) = (D::view(&fwd.dlogits), D::view(&fwd.head_in));
        d.matmul_backward(Some(D::view_mut(&mut dx)), D::grad(grads, head)?, None, dl, hi, D::param(params, head)?, n, c, v)?;
        if let Some(extra) = dhead_in {
            d.add_into(D::view_mut(&mut dx), extra)?;
        }
        let mut ctx = Ctx { be: d, cfg: &self.cfg, params, grads: Some(grads), dropout: None };
        let (b, t) = (batch.b, batch.t);
        match (&self.layout.encoder, &self.layout.decoder) {
            (Some(e), Some(dl)) => {
                let (enc, dec) = (fwd.enc.as_ref().expect("enc"), fwd.dec.as_ref().expect("dec"));
                let dst = StackCtx::on(&self.cfg, dl, b, t, 0, Some((D::view(&enc.out), batch.s)));
                let dmem = self.stack_backward(&mut ctx, dl, &dst, dec, dx, &batch.idx)?;
                let dmem = dmem.expect("cross-attention gives the memory a gradient");
                let est = StackCtx::on(&self.cfg, e, b, batch.s, 0, None);
                self.stack_backward(&mut ctx, e, &est, enc, dmem, &batch.src)?;
            }
            (Some(e), None) => {
                let est = StackCtx::on(&self.cfg, e, b, t, 0, None);
                self.stack_backward(&mut ctx, e, &est, fwd.enc.as_ref().expect("enc"), dx, &batch.idx)?;
            }
            (None, Some(dl)) => {
                let dst = StackCtx::on(&self.cfg, dl, b, t, 0, None);
                self.stack_backward(&mut ctx, dl, &dst, fwd.dec.as_ref().expect("dec"), dx, &batch.idx)?;
            }
            (None, None) => unreachable!(),
        }
        Ok(())
    }
}
