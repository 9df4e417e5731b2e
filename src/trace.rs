//! One training step in slow motion: every tensor the step makes, in the order it makes them. The forward pass
//! stage by stage (the shape flow's stages, with the live tensor), the loss, the backward pass in reverse (each
//! parameter's gradient, last layer first) and AdamW's update of each parameter tensor (its moments, the step it
//! takes). Each stage names the function that computes it and the section of docs/MODEL.md with its formula.
//!
//! The trace is of the step the run would take next: its next batch, its parameters and optimizer state. It runs
//! on a copy (the run is not advanced) on the host, without dropout, so it is the same on every backend up to
//! rounding. Each tensor is summarised — its first values, mean, spread, extremes and norm — and drawn as a small
//! heatmap: sequence 0 of the batch (head 0 where there are heads) as a matrix, averaged over blocks of cells to at
//! most `HEAT` × `HEAT`.

use serde::Serialize;

use crate::backend::{on_host, Host};
use crate::config::Config;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::model::block::{self, AttnCache, FfnCache, SubCache};
use crate::model::{Batch, Ctx, Model, StackCache, StackCtx};
use crate::train::OptState;

/// The largest side of a stage's heatmap.
pub const HEAT: usize = 32;
/// How many leading values of a tensor a stage lists.
pub const VALUES: usize = 6;

/// A tensor reduced to what a person can look at.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The first `VALUES` elements (sequence 0, head 0 where the tensor has heads).
    pub values: Vec<f32>,
    pub mean: f32,
    pub std: f32,
    pub min: f32,
    pub max: f32,
    /// √Σx² over the whole tensor.
    pub norm: f32,
}

/// A matrix averaged over blocks of cells: `rows` × `cols` cells, row-major, and the matrix it came from.
#[derive(Clone, Debug, Serialize)]
pub struct Heat {
    pub rows: usize,
    pub cols: usize,
    /// What the rows and columns are, e.g. ["T", "C"].
    pub axes: [&'static str; 2],
    /// The matrix before averaging (rows, cols).
    pub of: [usize; 2],
    pub cells: Vec<f32>,
}

/// One stage of the step.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// "forward", "loss", "backward" or "update".
    pub pass: &'static str,
    /// Which stage, one stable word. Forward: the shape flow's ids (`token_embedding`, `norm`, `q`, `k`, `v`,
    /// `scores`, `heads_concatenated`, `attention_output`, `cross_q`, `cross_k`, `cross_v`, `cross_scores`,
    /// `cross_output`, `moe_router`, `ffn_up`, `ffn_activation`, `ffn_down`, `final_norm`, `logits`) and
    /// `residual` (a sub-layer's output added to its input); `loss`; `dlogits` (∂loss/∂logits, where the backward
    /// pass starts); backward: `gradient`; update: `adamw`.
    pub id: &'static str,
    /// "encoder" or "decoder" in an encoder-decoder; absent for gpt and bert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// The parameter tensor (backward, update).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor: Option<String>,
    pub shape: Vec<usize>,
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heat: Option<Heat>,
    /// Backward: the parameter's norm beside its gradient's. Update: ‖θ‖ before the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_norm: Option<f32>,
    /// Update: ‖m‖ and √(mean v) after the step (AdamW's first and second moments), and ‖Δθ‖ / ‖θ‖.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m_norm: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v_rms: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f32>,
    /// The function that computes it.
    pub source: &'static str,
    /// The section of docs/MODEL.md with its formula.
    pub doc: &'static str,
}

impl Stage {
    /// A stage with no stack, layer, tensor or optimizer figures (the callers set those that apply).
    fn new(pass: &'static str, id: &'static str, shape: Vec<usize>, summary: Summary, heat: Option<Heat>, source: &'static str, doc: &'static str) -> Stage {
        Stage { pass, id, stack: None, layer: None, tensor: None, shape, summary, heat, param_norm: None, m_norm: None, v_rms: None, ratio: None, source, doc }
    }
}

/// The whole step.
#[derive(Clone, Debug, Serialize)]
pub struct StepTrace {
    /// The step this is (the run's next).
    pub step: usize,
    pub lr: f32,
    /// The batch: B, T, and S (the source length of an encoder-decoder, else 0).
    pub b: usize,
    pub t: usize,
    pub s: usize,
    /// Sequence 0's tokens (the decoder's input for an encoder-decoder) and source tokens.
    pub tokens: Vec<String>,
    pub source_tokens: Vec<String>,
    pub loss: f32,
    /// Global gradient norm before clipping, and the clip threshold (0: none).
    pub grad_norm: f32,
    pub grad_clip: f32,
    pub stages: Vec<Stage>,
}

/// Mean, spread, extremes and norm of `x`, with its first values taken from `first`.
fn summary(x: &[f32], first: &[f32]) -> Summary {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    Summary { values: first.iter().take(VALUES).copied().collect(), mean: mean as f32, std: var.sqrt() as f32, min, max, norm: norm as f32 }
}

/// The (rows, cols) matrix `m` averaged over blocks to at most `HEAT` × `HEAT` cells.
pub fn heat(m: &[f32], rows: usize, cols: usize, axes: [&'static str; 2]) -> Heat {
    let (hr, hc) = (rows.clamp(1, HEAT), cols.clamp(1, HEAT));
    let mut cells = vec![0.0f32; hr * hc];
    for (i, cell) in cells.iter_mut().enumerate() {
        let (r0, r1) = ((i / hc) * rows / hr, ((i / hc) + 1) * rows / hr);
        let (c0, c1) = ((i % hc) * cols / hc, ((i % hc) + 1) * cols / hc);
        let mut sum = 0.0f64;
        for r in r0..r1 {
            sum += m[r * cols + c0..r * cols + c1].iter().map(|&v| v as f64).sum::<f64>();
        }
        *cell = (sum / ((r1 - r0) * (c1 - c0)).max(1) as f64) as f32;
    }
    Heat { rows: hr, cols: hc, axes, of: [rows, cols], cells }
}

/// Builds the forward stages of one stack from its saved activations.
struct Tracer<'a> {
    model: &'a Model,
    stages: Vec<Stage>,
    stack: Option<&'static str>,
    b: usize,
}

impl Tracer<'_> {
    /// A forward stage for an activation laid out (B, rows, cols): sequence 0 is the heatmap.
    fn rows(&mut self, id: &'static str, layer: Option<usize>, x: &[f32], rows: usize, cols: usize, axes: [&'static str; 2], source: &'static str, doc: &'static str) {
        let one = &x[..rows * cols];
        let stage = Stage::new("forward", id, vec![self.b, rows, cols], summary(x, one), Some(heat(one, rows, cols, axes)), source, doc);
        self.stages.push(Stage { stack: self.stack, layer, ..stage });
    }

    /// A forward stage for a per-head tensor (B, H, rows, cols): sequence 0's head 0 is the heatmap.
    fn heads(&mut self, id: &'static str, layer: usize, x: &[f32], h: usize, rows: usize, cols: usize, axes: [&'static str; 2], source: &'static str) {
        let one = &x[..rows * cols];
        let stage = Stage::new("forward", id, vec![self.b, h, rows, cols], summary(x, one), Some(heat(one, rows, cols, axes)), source, "MODEL.md#attention");
        self.stages.push(Stage { stack: self.stack, layer: Some(layer), ..stage });
    }

    /// The stages of one sub-layer: its norm (pre, sandwich), what `f` makes inside (`inner`), f's output `y`
    /// (stage `y_id`) and the sub-layer's output (`next`: the residual sum, normed where the placement says so).
    #[allow(clippy::too_many_arguments)]
    fn sub<F>(&mut self, layer: usize, sc: &SubCache<F>, next: &[f32], t: usize, inner: impl FnOnce(&mut Self, &F), y_id: &'static str, source: &'static str, doc: &'static str) {
        let c = self.model.cfg.d_model;
        if let Some(h) = &sc.h {
            self.rows("norm", Some(layer), h, t, c, ["T", "C"], "model::block::norm_forward", "MODEL.md#norms-and-where-they-sit");
        }
        inner(self, &sc.f);
        self.rows(y_id, Some(layer), &sc.y, t, c, ["T", "C"], source, doc);
        self.rows("residual", Some(layer), next, t, c, ["T", "C"], "model::block::sublayer_forward", "MODEL.md#norms-and-where-they-sit");
    }

    /// q, k, v, the attention probabilities of head 0 and the heads concatenated, of one attention sub-layer.
    fn attention(&mut self, layer: usize, a: &AttnCache, probs: &[f32], t: usize, s: usize, cross: bool) {
        let m = &self.model.cfg;
        let (nh, nkv, hs, c) = (m.n_heads, m.n_kv_heads, m.head_size(), m.d_model);
        let ids = if cross { ["cross_q", "cross_k", "cross_v", "cross_scores", "cross_heads_concatenated"] } else { ["q", "k", "v", "scores", "heads_concatenated"] };
        let src = if cross { "model::block::cross_attention_forward" } else { "model::block::qkv_projection" };
        // q, k, v as (B, H, ·, HS), gathered from the projection rows attention reads them from.
        let ([ql, kl, vl], kv) = if cross { (block::cross_layouts(m, t, s), &a.kv) } else { (block::qkv_layouts(m, t), &a.qkv) };
        let b = self.b;
        self.heads(ids[0], layer, &gather_heads(&a.qkv, ql, b, nh, t, hs), nh, t, hs, ["T", "HS"], src);
        self.heads(ids[1], layer, &gather_heads(kv, kl, b, nkv, s, hs), nkv, s, hs, ["S", "HS"], src);
        self.heads(ids[2], layer, &gather_heads(kv, vl, b, nkv, s, hs), nkv, s, hs, ["S", "HS"], src);
        // The probabilities are sequence 0's only (recomputed from q, k and the saved log-sum-exp).
        let (p, sh) = (probs, [1, nh, t, s]);
        let stage = Stage::new("forward", ids[3], sh.to_vec(), summary(p, p), Some(heat(&p[..t * s], t, s, ["T", "S"])), "backend::Backend::attention_forward", "MODEL.md#attention");
        self.stages.push(Stage { stack: self.stack, layer: Some(layer), ..stage });
        self.rows(ids[4], Some(layer), &a.att, t, c, ["T", "C"], "backend::Backend::attention_forward", "MODEL.md#attention");
    }

    /// The feed-forward sub-layer's inside: the up projection and activation (dense), or the router (MoE).
    fn ffn(&mut self, layer: usize, f: &FfnCache, t: usize) {
        let m = &self.model.cfg;
        match f {
            FfnCache::Dense(mlp) => {
                let (up, fh) = (mlp.a.len() / (self.b * t), mlp.act.len() / (self.b * t));
                self.rows("ffn_up", Some(layer), &mlp.a, t, up, ["T", "F"], "model::block::ffn_forward", "MODEL.md#feed-forward");
                self.rows("ffn_activation", Some(layer), &mlp.act, t, fh, ["T", "F"], "backend::Backend::matmul_act_forward", "MODEL.md#feed-forward");
            }
            FfnCache::Moe(moe) => {
                let e = m.ffn.moe.as_ref().map_or(1, |x| x.experts);
                self.rows("moe_router", Some(layer), &moe.probs, t, e, ["T", "E"], "backend::Backend::moe_route", "MODEL.md#mixture-of-experts");
            }
        }
    }

    /// Every forward stage of one stack: the embedding (with positions), each block's sub-layers, the final norm.
    fn stack(&mut self, sc: &StackCache, t: usize, self_probs: &[Vec<f32>], cross_probs: &[Vec<f32>], s: usize) {
        let c = self.model.cfg.d_model;
        if let Some(b0) = sc.blocks.first() {
            self.rows("token_embedding", None, &b0.attn.x_in, t, c, ["T", "C"], "model::Model::embed", "MODEL.md#embedding-and-positions");
        }
        for (i, bc) in sc.blocks.iter().enumerate() {
            let after_attn = bc.cross.as_ref().map_or(&bc.ffn.x_in, |cr| &cr.x_in);
            let (sa, ca, ff) = ("model::block::self_attention_forward", "model::block::cross_attention_forward", "model::block::ffn_forward");
            self.sub(i, &bc.attn, after_attn, t, |tr, a| tr.attention(i, a, &self_probs[i], t, t, false), "attention_output", sa, "MODEL.md#attention");
            if let Some(cr) = &bc.cross {
                self.sub(i, cr, &bc.ffn.x_in, t, |tr, a| tr.attention(i, a, &cross_probs[i], t, s, true), "cross_output", ca, "MODEL.md#attention");
            }
            let next = sc.blocks.get(i + 1).map_or_else(|| sc.pre_lnf.as_ref().unwrap_or(&sc.out), |nb| &nb.attn.x_in);
            self.sub(i, &bc.ffn, next, t, |tr, f| tr.ffn(i, f, t), "ffn_down", ff, "MODEL.md#feed-forward");
        }
        if sc.pre_lnf.is_some() {
            self.rows("final_norm", None, &sc.out, t, c, ["T", "C"], "model::block::norm_forward", "MODEL.md#norms-and-where-they-sit");
        }
    }
}

/// The (B, H, N, HS) tensor at `lay` in x, as a contiguous copy (for display).
fn gather_heads(x: &[f32], lay: crate::backend::HeadLayout, b: usize, h: usize, n: usize, hs: usize) -> Vec<f32> {
    (0..b).flat_map(|bi| (0..h).flat_map(move |hi| (0..n).flat_map(move |t| &x[lay.at(bi, hi, t)..][..hs]))).copied().collect()
}

/// The attention probabilities of sequence 0 in every layer of a stack, self- and cross-attention (recomputed
/// from the saved q, k and log-sum-exp, as the attention view does).
fn stack_probs<H: Host>(model: &Model, be: &H, sp: &crate::model::layout::StackParams, sc: &StackCache, t: usize, memory: Option<(&[f32], usize)>) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let m = &model.cfg;
    let ctx = Ctx { be, cfg: m, params: &model.params[..], grads: None, dropout: None };
    let st = StackCtx::on(m, sp, 1, t, 0, memory);
    let lse = |a: &AttnCache| a.lse[..m.n_heads * t].to_vec();
    let (mut selfp, mut crossp) = (vec![], vec![]);
    for bc in &sc.blocks {
        // Sequence 0's rows are the first of the projections' outputs, so a batch-1 shape reads them in place.
        let (a, sh) = (&bc.attn.f, block::self_attn_shape(&ctx, 1, t, sp.causal));
        selfp.push(crate::backend::ops::attention_probs(&a.qkv, &a.qkv, &lse(a), on_host(block::bias_of(&ctx, &st)), &sh));
        if let (Some(cc), Some((_, s))) = (&bc.cross, memory) {
            let (a, sh) = (&cc.f, block::cross_attn_shape(&ctx, 1, t, s));
            crossp.push(crate::backend::ops::attention_probs(&a.qkv, &a.kv, &lse(a), crate::backend::AttnBias::None, &sh));
        }
    }
    (selfp, crossp)
}

/// Where each parameter tensor's gradient is made (the backward function of the stage that owns it).
fn grad_source(name: &str) -> (&'static str, &'static str) {
    let has = |s: &str| name.contains(s);
    let last = name.rsplit('.').nth(1).unwrap_or(name); // the tensor's owner: "qkv", "fc", "ln1", "router", …
    if has("wte") || has("wpe") {
        ("model::Model::embed_backward", "MODEL.md#embedding-and-positions")
    } else if name.starts_with("rnn.") || has(".rnn.") {
        ("model::recurrent::recurrent_backward", "MODEL.md#embedding-and-positions")
    } else if has("rel_bias") {
        ("model::block::self_attention_backward (the relative bias)", "MODEL.md#embedding-and-positions")
    } else if has(".router.") || has(".experts.") {
        ("model::block::moe_backward", "MODEL.md#mixture-of-experts")
    } else if has(".mlp.") {
        ("model::block::ffn_backward", "MODEL.md#feed-forward")
    } else if has(".attn.") {
        ("model::block::self_attention_backward", "MODEL.md#attention")
    } else if has(".cross.") {
        ("model::block::cross_attention_backward", "MODEL.md#attention")
    } else if last.starts_with("ln") {
        ("model::block::norm_backward", "MODEL.md#norms-and-where-they-sit")
    } else {
        ("model::Model::backward_on (the output head)", "MODEL.md#loss-and-optimizer")
    }
}

/// The layer a tensor belongs to, from its name (`….blocks.{i}.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.split("blocks.").nth(1)?.split('.').next()?.parse().ok()
}

fn stack_of(name: &str) -> Option<&'static str> {
    if name.starts_with("encoder.") {
        Some("encoder")
    } else if name.starts_with("decoder.") {
        Some("decoder")
    } else {
        None
    }
}

/// A 2-D view of a parameter-shaped tensor for its heatmap: (rows, cols) = its first dimension × the rest.
fn as_matrix(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
    }
}

/// The trace of one training step of `model` on `batch` from optimizer state `opt` at step `step` (which are not
/// changed): forward, loss, backward, AdamW.
pub fn trace_step<H: Host>(be: &H, cfg: &Config, model: &Model, opt: &OptState, tok: &Tokenizer, batch: &Batch, step: usize) -> Result<StepTrace> {
    let (b, t, s) = (batch.b, batch.t, batch.s);
    let fwd = model.forward(be, batch, None);
    if !fwd.loss.is_finite() {
        return Err(Error::Invalid(format!("the step's loss is not finite ({}): nothing to trace", fwd.loss)));
    }
    let mut tr = Tracer { model, stages: vec![], stack: None, b };
    let layout = &model.layout;
    let two = layout.encoder.is_some() && layout.decoder.is_some();
    let src_t = if two { s } else { t };
    if let (Some(sp), Some(sc)) = (&layout.encoder, &fwd.enc) {
        tr.stack = two.then_some("encoder");
        let (selfp, _) = stack_probs(model, be, sp, sc, src_t, None);
        tr.stack(sc, src_t, &selfp, &[], 0);
    }
    if let (Some(sp), Some(sc)) = (&layout.decoder, &fwd.dec) {
        tr.stack = two.then_some("decoder");
        let enc0 = fwd.enc.as_ref().filter(|_| two).map(|e| e.out[..s * model.cfg.d_model].to_vec());
        let (selfp, crossp) = stack_probs(model, be, sp, sc, t, enc0.as_deref().map(|m| (m, s)));
        tr.stack(sc, t, &selfp, &crossp, s);
    }
    tr.stack = None;
    let v = model.vocab();
    tr.rows("logits", None, &fwd.logits, t, v, ["T", "V"], "model::Model::head_and_loss", "MODEL.md#loss-and-optimizer");
    let mut stages = tr.stages;
    let lossv = [fwd.loss];
    stages.push(Stage::new("loss", "loss", vec![], summary(&lossv, &lossv), None, "backend::Backend::mean_cross_entropy", "MODEL.md#loss-and-optimizer"));
    let d0 = &fwd.dlogits[..t * v];
    stages.push(Stage::new("backward", "dlogits", vec![b, t, v], summary(&fwd.dlogits, d0), Some(heat(d0, t, v, ["T", "V"])), "backend::Backend::mean_cross_entropy", "MODEL.md#loss-and-optimizer"));

    // Backward: every parameter's gradient, the last tensors of the layout first (the order backward reaches them).
    let mut grads = vec![0.0f32; model.params.len()];
    model.backward(be, &fwd, batch, &mut grads);
    for ti in layout.tensors.iter().rev() {
        let (g, p) = (ti.view.of(&grads), ti.view.of(&model.params));
        let (r, c) = as_matrix(&ti.shape);
        let (source, doc) = grad_source(&ti.name);
        let pn = summary(p, &[]).norm;
        stages.push(Stage {
            stack: stack_of(&ti.name),
            layer: layer_of(&ti.name),
            tensor: Some(ti.name.clone()),
            param_norm: Some(pn),
            ..Stage::new("backward", "gradient", ti.shape.clone(), summary(g, g), Some(heat(g, r, c, ["rows", "cols"])), source, doc)
        });
    }

    // The update: the real step (clipping, AdamW) on copies of the parameters and moments.
    let (mut after, mut opt2) = (model.clone(), OptState { m: opt.m.clone(), v: opt.v.clone(), t: opt.t });
    if opt2.m.len() != after.params.len() {
        opt2 = OptState::new(after.params.len());
    }
    let report = crate::train::train_step(be, &mut after, &mut opt2, &cfg.train, batch, step, None)?;
    for ti in &layout.tensors {
        let (p0, p1) = (ti.view.of(&model.params), ti.view.of(&after.params));
        let delta: Vec<f32> = p0.iter().zip(p1).map(|(a, b)| b - a).collect();
        let (m, vv) = (ti.view.of(&opt2.m), ti.view.of(&opt2.v));
        let pn = summary(p0, &[]).norm;
        let dn = summary(&delta, &[]).norm;
        let v_rms = (vv.iter().map(|&x| x as f64).sum::<f64>() / vv.len().max(1) as f64).sqrt() as f32;
        let (r, c) = as_matrix(&ti.shape);
        stages.push(Stage {
            stack: stack_of(&ti.name),
            layer: layer_of(&ti.name),
            tensor: Some(ti.name.clone()),
            param_norm: Some(pn),
            m_norm: Some(summary(m, &[]).norm),
            v_rms: Some(v_rms),
            ratio: Some(if pn > 0.0 { dn / pn } else { 0.0 }),
            ..Stage::new("update", "adamw", ti.shape.clone(), summary(&delta, &delta), Some(heat(&delta, r, c, ["rows", "cols"])), "train::step::record_step (backend::Backend::adamw)", "MODEL.md#loss-and-optimizer")
        });
    }
    let names = |ids: &[u32]| ids.iter().map(|&i| tok.token(i)).collect::<Vec<String>>();
    Ok(StepTrace {
        step,
        lr: report.lr,
        b,
        t,
        s,
        tokens: names(&batch.idx[..t]),
        source_tokens: if s > 0 { names(&batch.src[..s]) } else { vec![] },
        loss: fwd.loss,
        grad_norm: report.grad_norm,
        grad_clip: cfg.train.grad_clip,
        stages,
    })
}
