//! What the UI looks at: attention probabilities of every layer and head for a text (self- and cross-attention),
//! and the shape flow of a config — the tensor shape at each stage for a batch B×T, the parameters of each
//! stage, FLOPs per token and a memory estimate.

use crate::backend::{on_host, ops, Host};
use crate::config::{Arch, ModelConfig, Position, Task};
use crate::data::{Tokenizer, BOS};
use crate::error::{Error, Result};
use crate::model::block::{self, AttnCache};
use crate::model::layout::StackParams;
use crate::model::{Batch, Ctx, Model, StackCache, StackCtx};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct AttentionMap {
    /// "encoder" or "decoder" (gpt's only stack is its decoder, bert's its encoder).
    pub stack: String,
    /// "self" or "cross".
    pub kind: String,
    pub layer: usize,
    pub heads: usize,
    /// Query positions.
    pub t: usize,
    /// Key positions.
    pub s: usize,
    /// (heads, t, s), each row sums to 1.
    pub probs: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttentionMaps {
    /// Tokens along the query axis (the decoder input for an encoder-decoder).
    pub tokens: Vec<String>,
    /// Encoder tokens (encoder-decoder only): the key axis of cross-attention.
    pub source_tokens: Vec<String>,
    pub maps: Vec<AttentionMap>,
    /// Where each Mixture-of-Experts layer sent each token (empty for a dense FFN).
    pub routes: Vec<Routes>,
}

/// One Mixture-of-Experts layer's routing of the tokens of a text.
#[derive(Clone, Debug, Serialize)]
pub struct Routes {
    /// "encoder" or "decoder", as for the attention maps.
    pub stack: String,
    pub layer: usize,
    /// Experts per token.
    pub k: usize,
    /// (tokens, k): each token's experts, best first.
    pub experts: Vec<u32>,
    /// (tokens, k): their weights (summing to 1 per token).
    pub weights: Vec<f32>,
    /// (tokens, k): the assignment was over its expert's capacity and dropped.
    pub dropped: Vec<bool>,
}

fn stack_routes(sc: &StackCache, k: usize, name: &str) -> Vec<Routes> {
    let moe = sc.blocks.iter().enumerate().filter_map(|(i, b)| match &b.ffn.f {
        block::FfnCache::Moe(m) => Some((i, m)),
        block::FfnCache::Dense(_) => None,
    });
    moe.map(|(layer, m)| Routes {
        stack: name.into(),
        layer,
        k,
        experts: m.choice.iter().map(|&e| e as u32).collect(),
        weights: m.weight.clone(),
        dropped: m.slot.iter().map(|&s| s < 0.0).collect(),
    })
    .collect()
}

fn stack_maps<H: Host>(model: &Model, be: &H, sp: &StackParams, sc: &StackCache, t: usize, memory: Option<(&[f32], usize)>, name: &str) -> Vec<AttentionMap> {
    let m = &model.cfg;
    let ctx = Ctx { be, cfg: m, params: &model.params[..], grads: None, dropout: None };
    let st = StackCtx::on(m, sp, 1, t, 0, memory);
    let mut out = vec![];
    let map = |c: &AttnCache, kind: &str, layer: usize, s: usize, bias| {
        // Self-attention reads q and k from its qkv rows, cross-attention q from its q rows and k from the kv rows.
        let (sh, k) = if kind == "self" { (block::self_attn_shape(&ctx, 1, t, sp.causal), &c.qkv) } else { (block::cross_attn_shape(&ctx, 1, t, s), &c.kv) };
        AttentionMap {
            stack: name.into(),
            kind: kind.into(),
            layer,
            heads: m.n_heads,
            t,
            s,
            probs: ops::attention_probs(&c.qkv, k, &c.lse, bias, &sh),
        }
    };
    for (i, bc) in sc.blocks.iter().enumerate() {
        out.push(map(&bc.attn.f, "self", i, t, on_host(block::bias_of(&ctx, &st))));
        if let (Some(cc), Some((_, s))) = (&bc.cross, memory) {
            out.push(map(&cc.f, "cross", i, s, crate::backend::AttnBias::None));
        }
    }
    out
}

/// Attention maps for `text` (gpt, bert), or for the source `text` of an encoder-decoder, whose decoder input is
/// [BOS] followed by `target` (or, without one, by the model's own greedy decoding of `task`'s target length for
/// a source as long as `text`).
pub fn attention_maps<H: Host>(model: &Model, be: &H, tok: &Tokenizer, task: Task, text: &str, target: Option<&str>) -> Result<AttentionMaps> {
    let ids = tok.encode(text)?;
    if ids.is_empty() || ids.len() > model.cfg.ctx_len {
        return Err(Error::Invalid(format!("the text must have 1..={} tokens, got {}", model.cfg.ctx_len, ids.len())));
    }
    let names = |ids: &[u32]| ids.iter().map(|&i| tok.token(i)).collect::<Vec<String>>();
    let batch = if model.cfg.arch == Arch::EncoderDecoder {
        let tgt = match target {
            Some(t) => t.to_string(),
            None => {
                let o = crate::generate::SampleOptions { temperature: 0.0, max_tokens: model.cfg.ctx_len - 1, ..Default::default() };
                let n = if task.is_denoising() { o.max_tokens } else { task.lengths(task.digits_in(ids.len())).1.min(o.max_tokens) };
                crate::generate::decode(model, be, tok, text, &crate::generate::SampleOptions { max_tokens: n, ..o })?
            }
        };
        let mut dec = vec![tok.special(BOS).ok_or_else(|| Error::Invalid("the tokenizer has no [BOS]".into()))?];
        dec.extend(tok.encode(&tgt)?);
        dec.truncate(model.cfg.ctx_len);
        Batch { b: 1, t: dec.len(), targets: vec![-1; dec.len()], idx: dec, s: ids.len(), src: ids.clone() }
    } else {
        Batch { b: 1, t: ids.len(), targets: vec![-1; ids.len()], idx: ids.clone(), ..Default::default() }
    };
    let fwd = model.forward(be, &batch, None);
    let mut maps = vec![];
    let l = &model.layout;
    if let (Some(sp), Some(sc)) = (&l.encoder, &fwd.enc) {
        maps.extend(stack_maps(model, be, sp, sc, if batch.s > 0 { batch.s } else { batch.t }, None, "encoder"));
    }
    if let (Some(sp), Some(sc)) = (&l.decoder, &fwd.dec) {
        let memory = fwd.enc.as_ref().filter(|_| batch.s > 0).map(|e| (&e.out[..], batch.s));
        maps.extend(stack_maps(model, be, sp, sc, batch.t, memory, "decoder"));
    }
    let k = model.cfg.ffn.moe.as_ref().map_or(0, |m| m.top_k);
    let routes: Vec<Routes> = [(&fwd.enc, "encoder"), (&fwd.dec, "decoder")]
        .into_iter()
        .filter_map(|(sc, name)| sc.as_ref().map(|sc| stack_routes(sc, k, name)))
        .flatten()
        .collect();
    let (tokens, source_tokens) = if batch.s > 0 { (names(&batch.idx), names(&batch.src)) } else { (names(&batch.idx), vec![]) };
    Ok(AttentionMaps { tokens, source_tokens, maps, routes })
}

/// What a stage of the shape flow is, for a front end to group and colour them by (its `name` is for people).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The token ids.
    Input,
    /// The token embedding.
    Embedding,
    /// Positions added to the embedding, or the relative-position bias table.
    Position,
    Norm,
    /// Self-attention: Q, K and V, the scores, the heads concatenated, the output projection.
    Attention,
    /// The decoder's attention over the encoder's output.
    CrossAttention,
    Ffn,
    /// The logits over the vocabulary.
    Head,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// The stage in English, for people (the CLI's JSON); a front end names it from `id`, `stack` and `per_layer`.
    pub name: String,
    /// Which stage this is, one stable word: input_ids, token_embedding, learned_positions, sinusoidal_positions,
    /// relative_bias_table, norm, q, kv, scores, heads_concatenated, attention_output, cross_q, cross_kv,
    /// cross_output, moe_router, ffn_up, ffn_activation, ffn_down, final_norm, logits.
    pub id: &'static str,
    /// The stack it belongs to in an encoder-decoder ("encoder", "decoder"); absent for gpt and bert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<&'static str>,
    /// How many of it each layer has (the norms: 2 to 6, by placement and cross-attention); 1 otherwise.
    pub per_layer: usize,
    pub kind: StageKind,
    /// Symbolic shape, e.g. ["B", "NH", "T", "HS"].
    pub shape: Vec<String>,
    /// The same with numbers.
    pub dims: Vec<usize>,
    /// Parameters this stage owns (for one layer; see `repeat`).
    pub params: usize,
    /// How many times the stage occurs (layers of its stack).
    pub repeat: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShapeFlow {
    pub stages: Vec<Stage>,
    pub n_params: usize,
    /// Parameters one token uses: all but the experts it is not sent to (Mixture-of-Experts); `n_params` otherwise.
    pub active_params: usize,
    /// Forward FLOPs per token (2 per multiply-add of every matmul, attention scores and mixing at length T).
    pub forward_flops_per_token: f64,
    /// Forward + backward ≈ 3 × forward.
    pub train_flops_per_token: f64,
    /// Parameters, gradients and both Adam moments, plus the activations one step keeps (f32), in bytes.
    pub memory_bytes: f64,
}

/// The dimension table of the config for a batch B×T (T is also the source length of an encoder-decoder).
pub fn shape_flow(m: &ModelConfig, vocab: usize, b: usize, t: usize) -> ShapeFlow {
    let layout = crate::model::Layout::new(m, vocab);
    let (c, nh, nkv, hs, f, v) = (m.d_model, m.n_heads, m.n_kv_heads, m.head_size(), m.ffn_hidden(), vocab);
    let gated = m.ffn.activation.is_gated();
    let bias = |n: usize| if m.bias { n } else { 0 };
    let norm_p = match (m.norm.kind, m.bias) {
        (crate::config::NormKind::Layernorm, true) => 2 * c,
        _ => c,
    };
    let mut stages = vec![];
    // (stack, norms per layer) of the stage being added.
    let mut at: (Option<&'static str>, usize) = (None, 1);
    let mut st = |at: (Option<&'static str>, usize), kind: StageKind, id: &'static str, name: &str, shape: &[&str], dims: &[usize], params: usize, repeat: usize| {
        let shape = shape.iter().map(|s| s.to_string()).collect();
        let (stack, per_layer) = at;
        stages.push(Stage { name: name.into(), id, stack, per_layer, kind, shape, dims: dims.to_vec(), params, repeat });
    };
    use StageKind as K;
    st(at, K::Input, "input_ids", "input ids", &["B", "T"], &[b, t], 0, 1);
    st(at, K::Embedding, "token_embedding", "token embedding", &["B", "T", "C"], &[b, t, c], v * c, 1);
    let (ne, nd) = m.stack_layers();
    let stacks: Vec<(&'static str, usize, bool)> = match m.arch {
        Arch::Gpt => vec![("", nd, false)],
        Arch::Bert => vec![("", ne, false)],
        Arch::EncoderDecoder => vec![("encoder ", ne, false), ("decoder ", nd, true)],
    };
    let mut fwd_flops = 0.0f64;
    for (prefix, layers, cross) in stacks {
        at = (prefix.strip_suffix(' ').filter(|p| !p.is_empty()), 1);
        match m.position {
            Position::Learned => st(at, K::Position, "learned_positions", &format!("{prefix}+ learned positions"), &["B", "T", "C"], &[b, t, c], m.ctx_len * c, 1),
            Position::Sinusoidal => st(at, K::Position, "sinusoidal_positions", &format!("{prefix}+ sinusoidal positions"), &["B", "T", "C"], &[b, t, c], 0, 1),
            Position::Relative { buckets, .. } => st(at, K::Position, "relative_bias_table", &format!("{prefix}relative bias table"), &["buckets", "NH"], &[buckets, nh], buckets * nh, 1),
            Position::Recurrent => {
                // The GRU: W_ih and W_hh (3C, C) each, a matmul over every position plus the recurrence's mat-vec.
                st(at, K::Position, "recurrent_positions", &format!("{prefix}+ GRU positions"), &["B", "T", "C"], &[b, t, c], 6 * c * c + bias(6 * c), 1);
                fwd_flops += 2.0 * 6.0 * (c as f64) * (c as f64);
            }
            _ => {}
        }
        let l = layers;
        let norms = (if cross { 3 } else { 2 }) * if m.norm.placement == crate::config::Placement::Sandwich { 2 } else { 1 };
        st((at.0, norms), K::Norm, "norm", &format!("{prefix}norm ({norms} per layer)"), &["B", "T", "C"], &[b, t, c], norms * norm_p, l);
        st(at, K::Attention, "q", &format!("{prefix}Q"), &["B", "NH", "T", "HS"], &[b, nh, t, hs], c * nh * hs + bias(nh * hs), l);
        st(at, K::Attention, "kv", &format!("{prefix}K, V"), &["B", "NKV", "T", "HS"], &[b, nkv, t, hs], 2 * (c * nkv * hs + bias(nkv * hs)), l);
        st(at, K::Attention, "scores", &format!("{prefix}scores"), &["B", "NH", "T", "T"], &[b, nh, t, t], 0, l);
        st(at, K::Attention, "heads_concatenated", &format!("{prefix}heads concatenated"), &["B", "T", "C"], &[b, t, c], 0, l);
        st(at, K::Attention, "attention_output", &format!("{prefix}attention output projection"), &["B", "T", "C"], &[b, t, c], c * c + bias(c), l);
        // Counts in f64: their products pass 2³² for configs a 32-bit usize (wasm32) cannot count.
        let f64s = |x: &[usize]| x.iter().map(|&v| v as f64).product::<f64>();
        let mut per_layer_mm = f64s(&[nh + 2 * nkv, hs, c]) + f64s(&[c, c]);
        fwd_flops += 4.0 * f64s(&[l, t, nh, hs]); // q·k and p·v
        if cross {
            st(at, K::CrossAttention, "cross_q", &format!("{prefix}cross-attention Q"), &["B", "NH", "T", "HS"], &[b, nh, t, hs], c * c + bias(c), l);
            st(at, K::CrossAttention, "cross_kv", &format!("{prefix}cross-attention K, V (from encoder)"), &["B", "NKV", "S", "HS"], &[b, nkv, t, hs], 2 * (c * nkv * hs + bias(nkv * hs)), l);
            st(at, K::CrossAttention, "cross_output", &format!("{prefix}cross-attention output"), &["B", "T", "C"], &[b, t, c], c * c + bias(c), l);
            per_layer_mm += 2.0 * f64s(&[c, c]) + 2.0 * f64s(&[nkv, hs, c]);
            fwd_flops += 4.0 * f64s(&[l, t, nh, hs]);
        }
        let up = if gated { 2 * f } else { f };
        // A Mixture-of-Experts FFN: the router, then E experts of which each token runs k (parameters: all E; the
        // FLOPs: k, and the router's).
        let (experts, active) = m.ffn.moe.as_ref().map_or((1, 1), |moe| (moe.experts, moe.top_k));
        let of = if experts > 1 { format!(" (×{experts} experts, {active} per token)") } else { String::new() };
        if experts > 1 {
            st(at, K::Ffn, "moe_router", &format!("{prefix}MoE router"), &["B", "T", "E"], &[b, t, experts], experts * c, l);
            per_layer_mm += f64s(&[experts, c]);
        }
        st(at, K::Ffn, "ffn_up", &format!("{prefix}FFN up{of}"), &["B", "T", if gated { "2F" } else { "F" }], &[b, t, up], experts * (up * c + bias(up)), l);
        st(at, K::Ffn, "ffn_activation", &format!("{prefix}FFN activation{of}"), &["B", "T", "F"], &[b, t, f], 0, l);
        st(at, K::Ffn, "ffn_down", &format!("{prefix}FFN down{of}"), &["B", "T", "C"], &[b, t, c], experts * (f * c + bias(c)), l);
        per_layer_mm += active as f64 * (f64s(&[up, c]) + f64s(&[f, c]));
        fwd_flops += 2.0 * l as f64 * per_layer_mm;
        if matches!(m.norm.placement, crate::config::Placement::Pre | crate::config::Placement::Sandwich) {
            st(at, K::Norm, "final_norm", &format!("{prefix}final norm"), &["B", "T", "C"], &[b, t, c], norm_p, 1);
        }
    }
    at = (None, 1);
    st(at, K::Head, "logits", "logits", &["B", "T", "V"], &[b, t, v], if m.tie_embeddings { 0 } else { v * c }, 1);
    fwd_flops += 2.0 * (v as f64) * (c as f64);
    ShapeFlow {
        stages,
        n_params: layout.n_params,
        active_params: layout.active_params(m),
        forward_flops_per_token: fwd_flops,
        train_flops_per_token: 3.0 * fwd_flops,
        memory_bytes: crate::model::Layout::step_memory_bytes(m, vocab, b, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_flow_parameters_add_up_to_the_layout() {
        for json in [
            r#"{"arch":"gpt","d_model":128,"n_layers":4,"n_heads":4,"n_kv_heads":4,"ctx_len":64,"ffn":{"activation":"gelu","mult":4},"norm":{"kind":"layernorm","placement":"pre"},"position":{"kind":"learned"},"attention":{"scale":"inv_sqrt_dk"}}"#,
            r#"{"arch":"encoder_decoder","d_model":32,"n_layers":2,"n_heads":4,"n_kv_heads":2,"ctx_len":16,"ffn":{"activation":"swiglu","mult":4},"norm":{"kind":"rmsnorm","placement":"sandwich"},"position":{"kind":"relative"},"attention":{"scale":"none"},"bias":false,"tie_embeddings":false}"#,
            r#"{"arch":"encoder_decoder","d_model":32,"n_layers":2,"n_heads":4,"n_kv_heads":2,"ctx_len":16,"ffn":{"activation":"gelu","mult":4},"norm":{"kind":"layernorm","placement":"pre"},"position":{"kind":"recurrent"},"attention":{"scale":"inv_sqrt_dk"}}"#,
        ] {
            let m: ModelConfig = serde_json::from_str(json).unwrap();
            let sf = shape_flow(&m, 65, 12, 64);
            let total: usize = sf.stages.iter().map(|s| s.params * s.repeat).sum();
            assert_eq!(total, sf.n_params, "{json}");
            assert!(sf.forward_flops_per_token > 2.0 * (sf.n_params - 65 * 32) as f64 * 0.5);
        }
    }

    #[test]
    fn a_moe_shape_flow_counts_every_expert_and_the_active_ones() {
        let dense = r#"{"arch":"gpt","d_model":32,"n_layers":2,"n_heads":4,"n_kv_heads":4,"ctx_len":16,"ffn":{"activation":"swiglu","mult":2},"norm":{"kind":"rmsnorm","placement":"pre"},"position":{"kind":"rope"},"attention":{"scale":"inv_sqrt_dk"}}"#;
        let moe = dense.replace(r#""mult":2}"#, r#""mult":2,"moe":{"experts":8,"top_k":2}}"#);
        let (d, m): (ModelConfig, ModelConfig) = (serde_json::from_str(dense).unwrap(), serde_json::from_str(&moe).unwrap());
        let (sd, sm) = (shape_flow(&d, 65, 4, 16), shape_flow(&m, 65, 4, 16));
        let total: usize = sm.stages.iter().map(|s| s.params * s.repeat).sum();
        assert_eq!(total, sm.n_params, "the stages hold every parameter");
        let layout = crate::model::Layout::new(&d, 65);
        let ffn: usize = layout.tensors.iter().filter(|t| t.name.contains(".mlp.")).map(|t| t.view.len).sum();
        // 8 experts instead of one FFN per layer, plus an 8 × 32 router; a token runs 2 of them.
        assert_eq!(sm.n_params, sd.n_params + 7 * ffn + 2 * 8 * 32);
        assert_eq!(sm.active_params, sd.n_params + ffn + 2 * 8 * 32);
        assert_eq!(sd.active_params, sd.n_params);
        let ffn_weights: usize = layout.tensors.iter().filter(|t| t.name.contains(".mlp.") && t.name.ends_with(".weight")).map(|t| t.view.len).sum();
        let ffn_flops = 2.0 * ffn_weights as f64; // per token, forward: 2 per weight of the second active expert
        let router = 2.0 * 2.0 * 8.0 * 32.0;
        assert!((sm.forward_flops_per_token - sd.forward_flops_per_token - ffn_flops - router).abs() < 1e-6);
    }

    #[test]
    fn every_stage_carries_its_kind_as_one_word() {
        let json = r#"{"arch":"encoder_decoder","d_model":32,"n_layers":2,"n_heads":4,"n_kv_heads":2,"ctx_len":16,"ffn":{"activation":"gelu","mult":4},"norm":{"kind":"layernorm","placement":"pre"},"position":{"kind":"learned"},"attention":{"scale":"inv_sqrt_dk"}}"#;
        let m: ModelConfig = serde_json::from_str(json).unwrap();
        let sf = shape_flow(&m, 12, 4, 16);
        let of = |k: StageKind| sf.stages.iter().filter(move |s| s.kind == k);
        assert_eq!(sf.stages.first().map(|s| s.kind), Some(StageKind::Input));
        assert_eq!(sf.stages.last().map(|s| s.kind), Some(StageKind::Head));
        assert_eq!(of(StageKind::CrossAttention).count(), 3);
        assert!(of(StageKind::CrossAttention).all(|s| s.name.starts_with("decoder ")), "only the decoder attends to the encoder");
        assert_eq!(of(StageKind::Ffn).count(), 6, "up, activation, down in each stack");
        // Two stacks, each with its learned positions, per-layer norms and final norm (pre-norm).
        assert_eq!(of(StageKind::Position).count(), 2);
        assert_eq!(of(StageKind::Norm).count(), 4);
        let j = serde_json::to_value(&sf.stages).unwrap();
        let words: std::collections::BTreeSet<&str> = j.as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
        let want = ["attention", "cross_attention", "embedding", "ffn", "head", "input", "norm", "position"];
        assert_eq!(words.into_iter().collect::<Vec<_>>(), want);
    }

    #[test]
    fn every_stage_is_named_by_a_stable_id_its_stack_and_its_count() {
        let ids = [
            "input_ids", "token_embedding", "learned_positions", "sinusoidal_positions", "relative_bias_table", "norm", "q", "kv",
            "scores", "heads_concatenated", "attention_output", "cross_q", "cross_kv", "cross_output", "moe_router", "ffn_up", "ffn_activation",
            "ffn_down", "final_norm", "logits",
        ];
        for (arch, placement) in [("gpt", "pre"), ("encoder_decoder", "sandwich")] {
            let json = format!(
                r#"{{"arch":"{arch}","d_model":32,"n_layers":2,"n_heads":4,"n_kv_heads":2,"ctx_len":16,"ffn":{{"activation":"gelu","mult":4}},"norm":{{"kind":"layernorm","placement":"{placement}"}},"position":{{"kind":"learned"}},"attention":{{"scale":"inv_sqrt_dk"}}}}"#
            );
            let m: ModelConfig = serde_json::from_str(&json).unwrap();
            for s in shape_flow(&m, 12, 4, 16).stages {
                assert!(ids.contains(&s.id), "{}: unknown id {}", s.name, s.id);
                // The English name is the id's, after its stack.
                match s.stack {
                    Some(stack) => assert!(arch == "encoder_decoder" && s.name.starts_with(&format!("{stack} ")), "{}", s.name),
                    None => assert!(arch == "gpt" || ["input_ids", "token_embedding", "logits"].contains(&s.id), "{}", s.name),
                }
                if s.id == "norm" {
                    assert!(s.name.ends_with(&format!("norm ({} per layer)", s.per_layer)), "{}", s.name);
                    let want = match (arch, s.stack) { ("gpt", _) => 2, (_, Some("encoder")) => 4, _ => 6 };
                    assert_eq!(s.per_layer, want, "{}", s.name);
                } else {
                    assert_eq!(s.per_layer, 1, "{}", s.name);
                }
            }
        }
    }
}
