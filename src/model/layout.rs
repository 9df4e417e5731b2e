//! Parameters are one flat f32 buffer cut into named tensors (llm.c style). `Layout` computes, from a config and a
//! vocabulary size, where every tensor lives, its documented name (docs/MODEL.md, docs/CHECKPOINT.md), its shape,
//! and whether weight decay applies. Offsets are aligned to 64 floats (256 bytes, the GPU's storage-offset rule).

use crate::backend::BackendKind;
use crate::config::{Arch, ModelConfig, NormKind, Placement, Position};
use crate::error::{Error, Result};

const ALIGN: usize = 64;

pub use crate::backend::View;

/// Largest total parameter count we build (keeps a browser tab alive: 4 bytes × 4 copies × this ≈ 1.6 GB).
pub const MAX_PARAMS: usize = 100_000_000;

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub view: View,
    /// AdamW weight decay applies (tensors with ≥ 2 dims).
    pub decay: bool,
}

/// y = x Wᵀ + b: w (out, inp), b (out).
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub w: View,
    pub b: Option<View>,
    pub out: usize,
    pub inp: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Norm {
    pub w: View, // (C)
    pub b: Option<View>, // (C), layernorm with bias only
}

/// A sub-layer's norms: `n` always; `post` only for sandwich placement.
#[derive(Clone, Copy, Debug)]
pub struct SubNorms {
    pub n: Norm,
    pub post: Option<Norm>,
}

#[derive(Clone, Copy, Debug)]
pub struct CrossParams {
    pub norms: SubNorms,
    pub q: Linear,    // (C, C)
    pub kv: Linear,   // (2·NKV·HS, C)
    pub proj: Linear, // (C, C)
}

/// One FFN: act(x·fcᵀ + b)·projᵀ + b.
#[derive(Clone, Copy, Debug)]
pub struct Mlp {
    pub fc: Linear,   // (F or 2F, C)
    pub proj: Linear, // (C, F)
}

/// A block's FFN: one dense FFN, or a router (E, C, no bias) and E experts (Mixture-of-Experts).
#[derive(Clone, Debug)]
pub enum FfnParams {
    Dense(Mlp),
    Moe { router: Linear, experts: Vec<Mlp> },
}

#[derive(Clone, Debug)]
pub struct BlockParams {
    pub attn_norms: SubNorms,
    pub qkv: Linear,  // ((NH+2·NKV)·HS, C)
    pub proj: Linear, // (C, C)
    pub cross: Option<CrossParams>,
    pub ffn_norms: SubNorms,
    pub ffn: FfnParams,
}

/// The recurrent position encoding's GRU (PyTorch's `torch.nn.GRU` tensors, gate rows r, z, n).
#[derive(Clone, Copy, Debug)]
pub struct Rnn {
    pub w_ih: View,         // (3C, C)
    pub w_hh: View,         // (3C, C)
    pub b_ih: Option<View>, // (3C), with `bias`
    pub b_hh: Option<View>, // (3C), with `bias`
}

/// One stack of blocks: the encoder (bidirectional) or the decoder (causal; with cross-attention in an
/// encoder-decoder). gpt has only a decoder stack, bert only an encoder stack.
#[derive(Clone, Debug)]
pub struct StackParams {
    pub prefix: String,
    pub causal: bool,
    pub wpe: Option<View>,      // (ctx_len, C)
    pub rel_bias: Option<View>, // (buckets, NH)
    pub rnn: Option<Rnn>,       // position `recurrent`
    pub blocks: Vec<BlockParams>,
    pub ln_f: Option<Norm>,
    /// DeepNorm α (1 for other placements).
    pub alpha: f32,
    /// DeepNorm β (1 for other placements).
    pub beta: f32,
}

#[derive(Clone, Debug)]
pub struct Layout {
    pub vocab: usize,
    pub wte: View,             // (V, C)
    pub lm_head: Option<View>, // (V, C) when not tied
    pub encoder: Option<StackParams>,
    pub decoder: Option<StackParams>,
    /// The classifier head (classes, C) + bias, last in the buffer, when `model.classifier` is set (gpt).
    pub classifier: Option<Linear>,
    pub tensors: Vec<TensorInfo>,
    /// Real parameters (without alignment padding).
    pub n_params: usize,
    /// Length of the flat buffer (with padding).
    pub size: usize,
}

struct Builder {
    tensors: Vec<TensorInfo>,
    size: usize,
    /// Counted in u64, so the count is right where usize is 32 bits (wasm32) and the layout would not fit.
    n_params: u64,
    /// A length or an offset did not fit in usize: the layout is not usable (`Layout::check_size` refuses it).
    overflow: bool,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize]) -> View {
        self.n_params = self.n_params.saturating_add(shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64)));
        let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let end = len.and_then(|len| len.div_ceil(ALIGN).checked_mul(ALIGN)).and_then(|padded| self.size.checked_add(padded));
        let view = View { offset: self.size, len: len.unwrap_or(0) };
        match end {
            Some(end) => self.size = end,
            None => self.overflow = true,
        }
        self.tensors.push(TensorInfo { name, shape: shape.to_vec(), view, decay: shape.len() >= 2 });
        view
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Linear {
        let w = self.add(format!("{name}.weight"), &[out, inp]);
        let b = bias.then(|| self.add(format!("{name}.bias"), &[out]));
        Linear { w, b, out, inp }
    }

    fn norm(&mut self, name: &str, m: &ModelConfig) -> Norm {
        let w = self.add(format!("{name}.weight"), &[m.d_model]);
        let b = (m.norm.kind == NormKind::Layernorm && m.bias).then(|| self.add(format!("{name}.bias"), &[m.d_model]));
        Norm { w, b }
    }

    /// An FFN: fc (F or 2F for gated activations, C) and proj (C, F).
    fn mlp(&mut self, name: &str, m: &ModelConfig) -> Mlp {
        let (c, f) = (m.d_model, m.ffn_hidden());
        let fc_out = if m.ffn.activation.is_gated() { 2 * f } else { f };
        Mlp { fc: self.linear(&format!("{name}.fc"), fc_out, c, m.bias), proj: self.linear(&format!("{name}.proj"), c, f, m.bias) }
    }

    fn sub_norms(&mut self, name: &str, m: &ModelConfig) -> SubNorms {
        let n = self.norm(name, m);
        let post = (m.norm.placement == Placement::Sandwich).then(|| self.norm(&format!("{name}_post"), m));
        SubNorms { n, post }
    }

    fn stack(&mut self, m: &ModelConfig, prefix: &str, layers: usize, causal: bool, cross: bool, ab: (f32, f32)) -> StackParams {
        let (c, hs) = (m.d_model, m.head_size());
        let wpe = matches!(m.position, Position::Learned).then(|| self.add(format!("{prefix}wpe"), &[m.ctx_len, c]));
        let rel_bias = match m.position {
            Position::Relative { buckets, .. } => Some(self.add(format!("{prefix}rel_bias"), &[buckets, m.n_heads])),
            _ => None,
        };
        let rnn = matches!(m.position, Position::Recurrent).then(|| Rnn {
            w_ih: self.add(format!("{prefix}rnn.weight_ih"), &[3 * c, c]),
            w_hh: self.add(format!("{prefix}rnn.weight_hh"), &[3 * c, c]),
            b_ih: m.bias.then(|| self.add(format!("{prefix}rnn.bias_ih"), &[3 * c])),
            b_hh: m.bias.then(|| self.add(format!("{prefix}rnn.bias_hh"), &[3 * c])),
        });
        let blocks = (0..layers)
            .map(|i| {
                let p = format!("{prefix}blocks.{i}.");
                let attn_norms = self.sub_norms(&format!("{p}ln1"), m);
                let qkv = self.linear(&format!("{p}attn.qkv"), (m.n_heads + 2 * m.n_kv_heads) * hs, c, m.bias);
                let proj = self.linear(&format!("{p}attn.proj"), c, c, m.bias);
                let cross = cross.then(|| CrossParams {
                    norms: self.sub_norms(&format!("{p}lnx"), m),
                    q: self.linear(&format!("{p}cross.q"), c, c, m.bias),
                    kv: self.linear(&format!("{p}cross.kv"), 2 * m.n_kv_heads * hs, c, m.bias),
                    proj: self.linear(&format!("{p}cross.proj"), c, c, m.bias),
                });
                let ffn_norms = self.sub_norms(&format!("{p}ln2"), m);
                let ffn = match &m.ffn.moe {
                    None => FfnParams::Dense(self.mlp(&format!("{p}mlp"), m)),
                    Some(moe) => {
                        let router = self.linear(&format!("{p}mlp.router"), moe.experts, c, false);
                        let experts = (0..moe.experts).map(|e| self.mlp(&format!("{p}mlp.experts.{e}"), m)).collect();
                        FfnParams::Moe { router, experts }
                    }
                };
                BlockParams { attn_norms, qkv, proj, cross, ffn_norms, ffn }
            })
            .collect();
        let ln_f = matches!(m.norm.placement, Placement::Pre | Placement::Sandwich).then(|| self.norm(&format!("{prefix}ln_f"), m));
        let (alpha, beta) = if m.norm.placement == Placement::Deepnorm { ab } else { (1.0, 1.0) };
        StackParams { prefix: prefix.to_string(), causal, wpe, rel_bias, rnn, blocks, ln_f, alpha, beta }
    }
}

impl Layout {
    /// The layout of a model; build models only from configs that `check_size` accepts (a larger one may not fit
    /// the address space: its views are then meaningless).
    pub fn new(m: &ModelConfig, vocab: usize) -> Layout {
        Layout::counted(m, vocab).0
    }

    /// The layout, its exact parameter count, and whether it overflowed usize.
    fn counted(m: &ModelConfig, vocab: usize) -> (Layout, u64, bool) {
        let mut bd = Builder { tensors: vec![], size: 0, n_params: 0, overflow: false };
        let wte = bd.add("wte".into(), &[vocab, m.d_model]);
        let lm_head = (!m.tie_embeddings).then(|| bd.add("lm_head.weight".into(), &[vocab, m.d_model]));
        let (ne, nd) = m.stack_layers();
        let [ab_enc, ab_dec] = m.deepnorm_alpha_beta();
        let (encoder, decoder) = match m.arch {
            Arch::Gpt => (None, Some(bd.stack(m, "", nd, true, false, ab_dec))),
            Arch::Bert => (Some(bd.stack(m, "", ne, false, false, ab_enc)), None),
            Arch::EncoderDecoder => {
                let e = bd.stack(m, "encoder.", ne, false, false, ab_enc);
                let d = bd.stack(m, "decoder.", nd, true, true, ab_dec);
                (Some(e), Some(d))
            }
        };
        let classifier = m.classifier.map(|k| bd.linear("classifier", k.classes, m.d_model, true));
        let n_params = usize::try_from(bd.n_params).unwrap_or(usize::MAX);
        let layout = Layout { vocab, wte, lm_head, encoder, decoder, classifier, tensors: bd.tensors, n_params, size: bd.size };
        (layout, bd.n_params, bd.overflow)
    }

    /// Every tensor as the optimizer sees it (in layout order).
    pub fn segments(&self) -> Vec<crate::backend::Segment> {
        self.tensors.iter().map(|t| crate::backend::Segment { view: t.view, decay: t.decay }).collect()
    }

    /// Refuses a model of more than [`MAX_PARAMS`] parameters with this vocabulary. Checked where a model is built
    /// from a config and a tokenizer: `config.validate()` does not know the vocabulary, and the token embedding
    /// (and an untied lm_head) grow with it.
    /// The count is exact on every target (u64), so a model too large for a 32-bit address space is refused there
    /// too rather than counted modulo 2³².
    pub fn check_size(m: &ModelConfig, vocab: usize) -> Result<()> {
        let (_, n, overflow) = Layout::counted(m, vocab);
        if n <= MAX_PARAMS as u64 && !overflow {
            return Ok(());
        }
        let embeddings = vocab as u64 * m.d_model as u64 * if m.tie_embeddings { 1 } else { 2 };
        Err(Error::Config {
            field: "model".into(),
            value: format!("{n} parameters"),
            rule: format!(
                "must have at most {MAX_PARAMS} parameters; with a vocabulary of {vocab} tokens, {embeddings} of them \
                 are token embeddings{}",
                if m.tie_embeddings { "" } else { " and lm_head" }
            ),
        })
    }

    /// Bytes one training step holds at its peak, estimated: the parameters, their gradients and AdamW's two
    /// moments (4 f32 copies), plus the activations the backward keeps for a batch of B sequences of T tokens (per
    /// layer ≈ 6 (B,T,C) tensors, the qkv projection's output (q, k, v: attention reads them there, so there are no
    /// head-major copies), and the FFN's pre-activation and activation; at the head the logits,
    /// their gradient and the probabilities). Formed in f64: the products pass 2³² where usize cannot count them.
    pub fn step_memory_bytes(m: &ModelConfig, vocab: usize, b: usize, t: usize) -> f64 {
        let (_, n_params, _) = Layout::counted(m, vocab);
        let (c, nh, nkv, hs, f) = (m.d_model, m.n_heads, m.n_kv_heads, m.head_size(), m.ffn_hidden());
        let up = if m.ffn.activation.is_gated() { 2 * f } else { f };
        let (ne, nd) = m.stack_layers();
        let layers = match m.arch {
            Arch::Gpt => nd,
            Arch::Bert => ne,
            Arch::EncoderDecoder => ne + nd,
        };
        // An MoE FFN keeps, per token, each of its k experts' input, activations and output, and the router's
        // logits and probabilities.
        let ffn = match &m.ffn.moe {
            None => up + f,
            Some(moe) => moe.top_k * (up + f + 2 * c) + 2 * moe.experts + 3 * moe.top_k,
        };
        let per_token_per_layer = (6 * c + (nh + 2 * nkv) * hs + ffn) as f64;
        let tokens = b as f64 * t as f64;
        // The recurrent positions keep per stack the GRU's input, gi (3C), the gates (4C) and h.
        let stacks = if m.arch == Arch::EncoderDecoder { 2.0 } else { 1.0 };
        let rnn = if m.position == Position::Recurrent { stacks * tokens * (9 * c) as f64 } else { 0.0 };
        let activations = layers as f64 * tokens * per_token_per_layer + 3.0 * tokens * vocab as f64 + rnn;
        4.0 * (4.0 * n_params as f64 + activations)
    }

    /// Bytes a run training on `backend` holds in this process's memory at its peak (a browser tab's wasm memory):
    /// on a host backend the whole step (`step_memory_bytes`); on the gpu, whose parameters, gradients, moments and
    /// activations live on the device (`train::gpu`), the host copies of the parameters and AdamW's two moments,
    /// twice over while a sync reads the device's copies back beside them (6 f32 copies), plus what a step passes
    /// from the host: its token ids and targets and one dropout mask at a time, a (B,T,C) tensor.
    pub fn held_memory_bytes(m: &ModelConfig, vocab: usize, b: usize, t: usize, backend: BackendKind) -> f64 {
        if backend != BackendKind::Gpu {
            return Layout::step_memory_bytes(m, vocab, b, t);
        }
        let (_, n_params, _) = Layout::counted(m, vocab);
        let tokens = b as f64 * t as f64;
        let mask = if m.dropout > 0.0 { m.d_model as f64 } else { 0.0 };
        4.0 * (6.0 * n_params as f64 + tokens * (2.0 + mask))
    }

    /// Refuses a config whose training step on a host backend would hold more than `budget` bytes
    /// (`check_memory_on` with `BackendKind::Cpu`).
    pub fn check_memory(m: &ModelConfig, vocab: usize, batch_size: usize, budget: f64) -> Result<()> {
        Layout::check_memory_on(m, vocab, batch_size, budget, BackendKind::Cpu)
    }

    /// Refuses a config whose run on `backend` would hold more than `budget` bytes here (`held_memory_bytes` for its
    /// batch_size and ctx_len), naming what to lower: the batch (or context) when activations are most of it, the
    /// model otherwise. A gpu run's activations are on the device, whose limits the gpu backend checks as it
    /// allocates (`backend::gpu::GpuContext`).
    pub fn check_memory_on(m: &ModelConfig, vocab: usize, batch_size: usize, budget: f64, backend: BackendKind) -> Result<()> {
        let need = Layout::held_memory_bytes(m, vocab, batch_size, m.ctx_len, backend);
        if need <= budget {
            return Ok(());
        }
        let (_, n_params, _) = Layout::counted(m, vocab);
        let copies = if backend == BackendKind::Gpu { 6.0 } else { 4.0 };
        let state = 4.0 * copies * n_params as f64;
        let gib = |x: f64| x / (1u64 << 30) as f64;
        let (field, lower) = if state < need / 2.0 {
            ("train.batch_size", "lower train.batch_size or model.ctx_len")
        } else {
            ("model", "make the model smaller (d_model, layers, ffn)")
        };
        let (what, state_is, rest_is) = if backend == BackendKind::Gpu {
            ("a run on the gpu would hold here", "host copies of the parameters and AdamW state, read back beside them", "a step's host data")
        } else {
            ("a training step would hold", "parameters, gradients and AdamW state", "activations")
        };
        Err(Error::Config {
            field: field.into(),
            value: format!("{batch_size} × {} tokens", m.ctx_len),
            rule: format!(
                "{what} about {:.2} GiB ({:.2} GiB of {state_is}, {:.2} GiB of {rest_is}), over the memory budget of \
                 {:.2} GiB: {lower}",
                gib(need),
                gib(state),
                gib(need - state),
                gib(budget)
            ),
        })
    }

    /// Parameters one token's forward pass uses: all of them except, in each Mixture-of-Experts FFN, the experts
    /// the token is not sent to (experts − top_k of them).
    pub fn active_params(&self, m: &ModelConfig) -> usize {
        let k = m.ffn.moe.as_ref().map_or(0, |moe| moe.top_k);
        let idle: usize = [&self.encoder, &self.decoder]
            .into_iter()
            .flatten()
            .flat_map(|s| &s.blocks)
            .map(|b| match &b.ffn {
                FfnParams::Dense(_) => 0,
                FfnParams::Moe { experts, .. } => {
                    let size = |l: &Linear| l.w.len + l.b.map_or(0, |b| b.len);
                    experts.iter().skip(k).map(|e| size(&e.fc) + size(&e.proj)).sum()
                }
            })
            .sum();
        self.n_params - idle
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The output projection: lm_head when untied, else the token embedding.
    pub fn head(&self) -> View {
        self.lm_head.unwrap_or(self.wte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// One gpt layer of width 3840 (FFN width F = C): about 88.5 M parameters before the token embedding.
    fn wide_one_layer_gpt() -> ModelConfig {
        let json = r#"{ "model": { "arch": "gpt", "d_model": 3840, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4,
          "ctx_len": 16, "ffn": { "activation": "gelu", "mult": 1 }, "norm": { "kind": "layernorm", "placement": "pre" },
          "position": { "kind": "rope" }, "attention": { "scale": "inv_sqrt_dk" } },
          "train": { "batch_size": 1, "steps": 1, "lr": 0.001 } }"#;
        Config::from_json(json).unwrap().model
    }

    #[test]
    fn the_size_limit_counts_the_real_vocabulary() {
        let m = wide_one_layer_gpt();
        Layout::check_size(&m, 65).unwrap();
        // 4000 tokens add 4000 · 3840 = 15.4 M embedding parameters: over the limit.
        let err = Layout::check_size(&m, 4000).unwrap_err();
        let Error::Config { field, value, rule } = &err else { panic!("{err}") };
        assert_eq!(field, "model");
        let n = Layout::new(&m, 4000).n_params;
        assert!(n > MAX_PARAMS && value == &format!("{n} parameters"), "{value}");
        assert!(rule.contains("at most 100000000 parameters") && rule.contains("vocabulary of 4000 tokens"), "{rule}");
        assert!(rule.contains("15360000 of them are token embeddings"), "{rule}");
    }

    /// d_model 8192 and 64 layers pass `validate` (each within its own range) but hold ≈ 51.5 billion parameters: more
    /// than a 32-bit usize counts. The count must be exact on every target, wasm32 included (it runs there too).
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_model_too_large_for_32_bits_is_refused_with_its_exact_count() {
        let json = r#"{ "model": { "arch": "gpt", "d_model": 8192, "n_layers": 64, "n_heads": 64, "n_kv_heads": 64,
          "ctx_len": 64, "ffn": { "activation": "gelu", "mult": 4 }, "norm": { "kind": "layernorm", "placement": "pre" },
          "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
          "train": { "batch_size": 1, "steps": 1, "lr": 0.001 } }"#;
        let m = Config::from_json(json).unwrap().model;
        let (c, l, v, t) = (8192u64, 64u64, 65u64, 64u64);
        // Per layer: two layernorms (2C each), qkv (3C² + 3C), proj (C² + C), fc (4C² + 4C), fc proj (4C² + C).
        let want = l * (12 * c * c + 13 * c) + v * c + t * c + 2 * c;
        let err = Layout::check_size(&m, 65).unwrap_err();
        let Error::Config { field, value, .. } = &err else { panic!("{err}") };
        assert_eq!(field, "model");
        assert_eq!(value, &format!("{want} parameters"));
    }
}
