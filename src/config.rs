//! Model and training configuration: plain serde data, and `validate()`, which refuses every config that cannot
//! work — before anything is allocated — with an error naming the field, the value and the rule.
//! The JSON schema and every field's meaning are in `docs/MODEL.md` and `README.md`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Decoder-only, causal LM (GPT-2).
    Gpt,
    /// Bidirectional encoder, masked LM (BERT).
    Bert,
    /// Encoder + decoder with cross-attention (T5 / BART).
    EncoderDecoder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Swish,
    Glu,
    Geglu,
    Swiglu,
}

impl Activation {
    /// Gated activations (Shazeer 2020) multiply act(gate) by a second linear "up" projection.
    pub fn is_gated(self) -> bool {
        matches!(self, Activation::Glu | Activation::Geglu | Activation::Swiglu)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfnConfig {
    pub activation: Activation,
    /// Width multiplier: F = mult·C (plain) or 8·ceil(2·mult·C/24) (gated, the 2/3 rule).
    #[serde(default = "default_mult")]
    pub mult: usize,
    /// Explicit hidden width F; overrides `mult`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// A Mixture-of-Experts FFN (absent: one dense FFN). docs/MODEL.md "Mixture-of-Experts".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeConfig>,
}
fn default_mult() -> usize {
    4
}

/// A Mixture-of-Experts FFN (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2021; Mixtral, Jiang et al.
/// 2024): `experts` FFNs of the configured activation and width, each token sent to the `top_k` experts its router
/// rates highest, their outputs mixed by the router's renormalised probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeConfig {
    pub experts: usize,
    pub top_k: usize,
    /// Weight of the load-balancing loss added per layer (Switch Transformer's α); 0 disables it.
    #[serde(default = "default_aux_loss")]
    pub aux_loss: f32,
    /// Each expert takes at most ceil(capacity_factor · top_k · tokens / experts) assignments per batch (in token
    /// order; the rest are dropped). null: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f32>,
}
fn default_aux_loss() -> f32 {
    0.01
}

impl MoeConfig {
    /// Assignments one expert takes from a batch of `tokens` tokens (all of them without a capacity factor).
    pub fn capacity(&self, tokens: usize) -> usize {
        match self.capacity_factor {
            Some(f) => ((f as f64 * self.top_k as f64 * tokens as f64 / self.experts as f64).ceil() as usize).clamp(1, tokens.max(1)),
            None => tokens,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    Layernorm,
    Rmsnorm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    Post,
    Pre,
    Sandwich,
    Deepnorm,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormConfig {
    pub kind: NormKind,
    pub placement: Placement,
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// DeepNorm residual scale α (default: the DeepNet paper's value for the architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// DeepNorm init scale β (default: the DeepNet paper's value for the architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f32>,
}
fn default_eps() -> f32 {
    1e-5
}

/// Positional scheme; each variant carries its own parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Position {
    None,
    Learned,
    Sinusoidal,
    Relative {
        #[serde(default = "default_buckets")]
        buckets: usize,
        #[serde(default = "default_max_distance")]
        max_distance: usize,
    },
    Rope {
        #[serde(default = "default_theta")]
        theta: f32,
    },
    Alibi,
    /// A one-layer GRU (Cho et al. 2014) of width C over the token embeddings, added to them: x ← x + GRU(x).
    /// Unidirectional in every stack (causal in gpt and the decoder; docs/MODEL.md says why the encoder too).
    Recurrent,
}
/// serde's `deny_unknown_fields` does not reach the variants without fields of an internally tagged enum, so
/// `{"kind": "recurrent", "theta": 10000}` would parse and the theta be dropped without a word: refuse a field the
/// position's kind does not take, naming it.
fn check_position_fields(text: &str) -> Result<()> {
    // Not JSON: serde's own parse says where.
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return Ok(()) };
    let Some(p) = v.pointer("/model/position").and_then(|p| p.as_object()) else { return Ok(()) };
    let kind = p.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let takes: &[&str] = match kind {
        "relative" => &["kind", "buckets", "max_distance"],
        "rope" => &["kind", "theta"],
        _ => &["kind"],
    };
    match p.keys().find(|k| !takes.contains(&k.as_str())) {
        Some(field) => Err(Error::ConfigParse(format!(
            "model.position.{field}: the position kind \"{kind}\" takes no {field} (its fields: {})",
            takes.join(", ")
        ))),
        None => Ok(()),
    }
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_theta() -> f32 {
    10000.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnScale {
    /// 1/sqrt(d_k), Vaswani et al. 2017.
    InvSqrtDk,
    /// No scaling (T5; also the "why 1/sqrt(d_k)" lesson).
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    pub scale: AttnScale,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    pub d_model: usize,
    /// Layers of a gpt/bert stack; default for both stacks of an encoder-decoder.
    #[serde(default)]
    pub n_layers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_encoder_layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_decoder_layers: Option<usize>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ctx_len: usize,
    pub ffn: FfnConfig,
    pub norm: NormConfig,
    pub position: Position,
    pub attention: AttentionConfig,
    #[serde(default)]
    pub dropout: f32,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    #[serde(default = "default_init_std")]
    pub init_std: f32,
    /// A classifier head on the last position (GPT-1's fine-tuning, `recipes::finetune`); gpt only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierConfig>,
}

/// The task head of a fine-tuned GPT (Radford et al. 2018): `classifier.weight` (classes, C) and
/// `classifier.bias` (classes), a linear layer on the final hidden state (after the final norm) of the last
/// position of each sequence. One class is a scalar head: RLHF's reward model (on the last position) and value head
/// (on every position), `recipes::rlhf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub classes: usize,
}

/// Most classes a classifier head may have.
pub const MAX_CLASSES: usize = 1024;

/// A labelled task on Tiny Shakespeare for fine-tuning (`recipes::finetune` holds the labelling rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinetuneTask {
    /// Who is speaking: the speaker of each speech, among the corpus's most frequent speakers.
    Speaker,
    /// Is this speech verse or prose: from the capitals that open its continuation lines.
    VerseProse,
}

impl FinetuneTask {
    /// Every task, in the order the CLI lists them.
    pub const ALL: [FinetuneTask; 2] = [FinetuneTask::Speaker, FinetuneTask::VerseProse];

    /// The task's name in the config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FinetuneTask::Speaker => "speaker",
            FinetuneTask::VerseProse => "verse_prose",
        }
    }

    /// The task named `s`; an error listing the known ones otherwise.
    pub fn parse(s: &str) -> Result<FinetuneTask> {
        FinetuneTask::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let known: Vec<&str> = FinetuneTask::ALL.iter().map(|t| t.name()).collect();
            bad("finetune.task", format!("{s:?}"), &format!("unknown task; the known ones are {}", known.join(", ")))
        })
    }

    /// Classes of the task: the speaker task's speakers, or verse and prose.
    pub fn classes(self) -> usize {
        match self {
            FinetuneTask::Speaker => SPEAKERS,
            FinetuneTask::VerseProse => 2,
        }
    }
}

/// Speakers of the speaker task: the corpus's this many most frequent.
pub const SPEAKERS: usize = 4;

/// Largest weight of the auxiliary LM loss.
pub const MAX_AUX_LM: f32 = 100.0;

/// Fine-tuning a GPT with a classifier head on a task (GPT-1): the objective is L_task + aux_lm · L_LM, with L_LM
/// the next-character loss on the same inputs (0 disables it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    pub task: FinetuneTask,
    /// λ, the weight of the auxiliary language-model loss (GPT-1 used 0.5).
    #[serde(default)]
    pub aux_lm: f32,
}
fn yes() -> bool {
    true
}
fn default_init_std() -> f32 {
    0.02
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Cosine,
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub steps: usize,
    pub lr: f32,
    #[serde(default)]
    pub min_lr: f32,
    #[serde(default)]
    pub warmup: usize,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    #[serde(default = "default_betas")]
    pub betas: [f32; 2],
    #[serde(default = "default_adam_eps")]
    pub eps: f32,
    #[serde(default)]
    pub weight_decay: f32,
    /// Global grad-norm clip; 0 disables clipping.
    #[serde(default)]
    pub grad_clip: f32,
    #[serde(default = "default_eval_interval")]
    pub eval_interval: usize,
    #[serde(default = "default_eval_iters")]
    pub eval_iters: usize,
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_betas() -> [f32; 2] {
    [0.9, 0.99]
}
fn default_adam_eps() -> f32 {
    1e-8
}
fn default_eval_interval() -> usize {
    250
}
fn default_eval_iters() -> usize {
    20
}

/// What the model learns from: a text corpus (gpt, bert), a synthetic sequence-to-sequence task, or a denoising
/// objective over a text corpus (encoder-decoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Character-level text (next-token for gpt, masked LM for bert).
    Text,
    /// Reverse a string of digits.
    Reverse,
    /// Sort a string of digits.
    Sort,
    /// Add two zero-padded numbers.
    Add,
    /// T5's span corruption (Raffel et al. 2020) of the corpus: spans become sentinels, the target lists them.
    SpanCorruption,
    /// BART's text infilling (Lewis et al. 2020) of the corpus: spans become one [MASK], the target is the text.
    TextInfilling,
}

impl Task {
    /// Span corruption or text infilling: an encoder-decoder objective drawn from a text corpus
    /// (`crate::denoise`).
    pub fn is_denoising(self) -> bool {
        matches!(self, Task::SpanCorruption | Task::TextInfilling)
    }

    /// Reverse, sort or add: generated digits, no corpus.
    pub fn is_synthetic(self) -> bool {
        matches!(self, Task::Reverse | Task::Sort | Task::Add)
    }

    /// The task's name in the config (`"span_corruption"`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Text => "text",
            Task::Reverse => "reverse",
            Task::Sort => "sort",
            Task::Add => "add",
            Task::SpanCorruption => "span_corruption",
            Task::TextInfilling => "text_infilling",
        }
    }

    /// (source length, target length) in tokens with `digits` digits per operand: "0042+0917" → "00959" for add.
    pub fn lengths(self, digits: usize) -> (usize, usize) {
        match self {
            Task::Text | Task::SpanCorruption | Task::TextInfilling => (0, 0),
            Task::Reverse | Task::Sort => (digits, digits),
            Task::Add => (2 * digits + 1, digits + 1),
        }
    }

    /// Digits per operand of a source of `len` tokens: the inverse of `lengths(digits).0`, rounding down.
    pub fn digits_in(self, len: usize) -> usize {
        match self {
            Task::Text | Task::SpanCorruption | Task::TextInfilling => 0,
            Task::Reverse | Task::Sort => len,
            Task::Add => len.saturating_sub(1) / 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    #[serde(default = "default_task")]
    pub task: Task,
    /// Digits per operand for the synthetic tasks.
    #[serde(default = "default_digits")]
    pub digits: usize,
    /// bert: the share of the positions chosen for prediction (15%) that the input shows as `[MASK]` (Devlin et al.
    /// 2019, §3.1: 80%; Appendix C.2 ablates it). Ignored by the other architectures.
    #[serde(default = "default_mlm_mask")]
    pub mlm_mask: f64,
    /// bert: the share of the chosen positions that show a random character instead (10%); the rest
    /// (1 − mlm_mask − mlm_random, 10%) keep their own character. Ignored by the other architectures.
    #[serde(default = "default_mlm_random")]
    pub mlm_random: f64,
}
/// Shortest context the denoising tasks accept: a shorter source leaves too few tokens to corrupt.
pub const MIN_DENOISE_CTX_LEN: usize = 8;

/// `x` rounded to the nearest integer, halves to even (as `tf.round` in T5's code), for `x = num / den` exactly.
fn round_half_even(num: usize, den: usize) -> usize {
    let (q, r) = (num / den, num % den);
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q % 2),
    }
}

/// The fixed shape of every example of a denoising task for a model of context `ctx_len` (the rules in
/// docs/MODEL.md, "Denoising objectives"): every source has exactly `source` tokens (the encoder has no padding
/// mask, so sources are never padded), every target `target` positions (text infilling pads the end of shorter
/// originals with ignored targets), and `window` corpus tokens are read per example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenoiseLengths {
    pub source: usize,
    pub target: usize,
    pub window: usize,
    /// Span corruption: the sentinels `[S0]`..`[S{sentinels-1}]` the tokenizer holds (one per span, and the final
    /// one that ends the target); 0 for text infilling.
    pub sentinels: usize,
}

impl DenoiseLengths {
    /// T5's noise tokens in an original of `n` tokens: round(0.15·n), at least 1 and at most n − 1.
    pub fn span_noise(n: usize) -> usize {
        round_half_even(3 * n, 20).clamp(1, n.saturating_sub(1).max(1))
    }
    /// T5's span count for `noise` noise tokens: round(noise / 3), at least 1 (mean span length 3).
    pub fn span_count(noise: usize) -> usize {
        round_half_even(noise, 3).max(1)
    }
    /// Span corruption's source length for an original of `n` tokens: kept tokens plus one sentinel a span.
    pub fn span_source(n: usize) -> usize {
        let noise = DenoiseLengths::span_noise(n);
        n - noise + DenoiseLengths::span_count(noise)
    }
    /// BART's masked tokens in an original of `n` tokens: ceil(0.3·n) (fairseq's `num_to_mask`).
    pub fn infill_masked(n: usize) -> usize {
        (3 * n).div_ceil(10)
    }

    pub fn new(task: Task, ctx_len: usize) -> DenoiseLengths {
        let c = ctx_len.max(MIN_DENOISE_CTX_LEN);
        match task {
            Task::SpanCorruption => {
                // The longest original whose corrupted source is exactly c tokens (T5's random_spans_helper picks
                // the longest too). span_source grows by 0 or 1 with n, so it takes every value.
                let mut n = c;
                while DenoiseLengths::span_source(n + 1) <= c {
                    n += 1;
                }
                let noise = DenoiseLengths::span_noise(n);
                let spans = DenoiseLengths::span_count(noise);
                DenoiseLengths { source: c, target: noise + spans + 1, window: n, sentinels: spans + 1 }
            }
            _ => {
                // Targets of at most c − 1 positions; a source of t − ceil(0.3·t) tokens keeps every original
                // shorter than t (n − ceil(0.3·n) + spans = source, with at least one span).
                let t = c - 1;
                DenoiseLengths { source: t - DenoiseLengths::infill_masked(t), target: t, window: t, sentinels: 0 }
            }
        }
    }
}

impl DataConfig {
    /// (source length, target length) in tokens of every example of the task for a model of context `ctx_len`:
    /// the synthetic tasks' `Task::lengths`, the denoising tasks' `denoise::Lengths` (text: (0, ctx_len)).
    pub fn lengths(&self, ctx_len: usize) -> (usize, usize) {
        match self.task {
            Task::Text => (0, ctx_len),
            t if t.is_denoising() => {
                let l = DenoiseLengths::new(t, ctx_len);
                (l.source, l.target)
            }
            t => t.lengths(self.digits),
        }
    }
}

fn default_task() -> Task {
    Task::Text
}
fn default_digits() -> usize {
    6
}
fn default_mlm_mask() -> f64 {
    0.8
}
fn default_mlm_random() -> f64 {
    0.1
}
impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { task: Task::Text, digits: default_digits(), mlm_mask: default_mlm_mask(), mlm_random: default_mlm_random() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub seed: u64,
    /// Fine-tuning with a classifier head (`recipes::finetune`); needs `model.classifier` with the task's classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneConfig>,
}

fn bad(field: &str, value: impl std::fmt::Display, rule: &str) -> Error {
    Error::Config { field: field.to_string(), value: value.to_string(), rule: rule.to_string() }
}

/// Largest d_model and ctx_len: past these a tab runs out of memory long before the parameter limit matters.
pub const MAX_D_MODEL: usize = 8192;
pub const MAX_CTX_LEN: usize = 8192;
/// Most layers in one stack.
pub const MAX_LAYERS: usize = 64;
/// Most query heads (and so key/value heads).
pub const MAX_HEADS: usize = 64;
pub const MAX_FFN_MULT: usize = 64;
pub const MAX_FFN_HIDDEN: usize = 65536;
/// Experts of a Mixture-of-Experts FFN.
pub const MIN_EXPERTS: usize = 2;
pub const MAX_EXPERTS: usize = 64;
/// Largest load-balancing weight (Switch used 0.01; past 100 the balancing term is all the objective is).
pub const MAX_AUX_LOSS: f32 = 100.0;
/// Largest capacity factor: at top_k · tokens / experts · 64 a batch's assignments never reach it.
pub const MAX_CAPACITY_FACTOR: f32 = 64.0;
pub const MAX_BATCH_SIZE: usize = 4096;
pub const MAX_LR: f32 = 10.0;
/// Most optimizer steps in one run: ten million is days of training even for the smallest model, and keeps the
/// schedule's arithmetic (`warmup + 1`, `steps − warmup`) far from overflowing.
pub const MAX_STEPS: usize = 10_000_000;
/// Longest warmup, the same as the longest run; a warmup longer than `steps` is allowed (the run ends before the
/// learning rate reaches `lr`, as in PyTorch or Hugging Face), one past this is a typo.
pub const MAX_WARMUP: usize = MAX_STEPS;
/// Most batches per split in one evaluation: every evaluation runs `2 · eval_iters` forward passes, and PyTorch's
/// own figure is 200; past ten thousand an evaluation outlasts the training it measures.
pub const MAX_EVAL_ITERS: usize = 10_000;
/// Largest AdamW weight decay: common values are 0–0.1, grokking runs use up to 1–5. The rule that matters is
/// `lr · weight_decay < 1` (checked beside it): the decoupled step scales weights by `1 − lr·wd`.
pub const MAX_WEIGHT_DECAY: f32 = 10.0;
/// Largest global grad-norm clip: clipping is for norms of order 1 (0.5–5 in practice); a clip above every norm a
/// run sees is no clip, which `grad_clip = 0` already says.
pub const MAX_GRAD_CLIP: f32 = 1000.0;
/// Largest norm eps: models use 1e-12 to 1e-5; an eps near the variance itself stops normalising.
pub const MAX_NORM_EPS: f32 = 0.1;
/// Range of a DeepNorm α or β set by hand: the paper's values for 1 to 64 layers lie in about [0.19, 3.7].
pub const MIN_DEEPNORM: f32 = 1e-3;
pub const MAX_DEEPNORM: f32 = 1e3;
/// Relative-position buckets: bidirectional stacks split them in two halves, each with an exact and a log-spaced
/// part, so at least 4, and even.
pub const MIN_BUCKETS: usize = 4;
pub const MAX_BUCKETS: usize = 1024;
pub const MAX_DISTANCE: usize = 1 << 20;
/// Digits per operand of the synthetic tasks.
pub const MAX_DIGITS: usize = 32;

/// The range of a numeric field. An end is either inclusive (`minimum`, `maximum`) or exclusive; serialised with
/// JSON Schema's names, absent ends left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bound {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_minimum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_maximum: Option<f64>,
}

/// The range of every numeric field, as `validate` enforces it (and, for an unsigned field without a rule, as its
/// JSON type does), for front ends to draw their controls with: the wasm export `limits` hands it to the page.
/// Rules that tie one field to another (n_heads divides d_model, min_lr ≤ lr, max_distance > buckets / 4, …) are
/// not ranges; a field they bound is given the widest range any config allows.
pub fn bounds() -> Vec<(&'static str, Bound)> {
    // An f32 limit as the decimal it was written as (0.1, not 0.10000000149011612).
    let wide = |x: f32| -> f64 { x.to_string().parse().expect("an f32 prints as a number") };
    let ints = |min: usize, max: Option<usize>| Bound {
        minimum: Some(min as f64),
        maximum: max.map(|m| m as f64),
        ..Bound::default()
    };
    let positive = Bound { exclusive_minimum: Some(0.0), ..Bound::default() };
    let non_negative = Bound { minimum: Some(0.0), ..Bound::default() };
    let deepnorm = Bound { minimum: Some(wide(MIN_DEEPNORM)), maximum: Some(wide(MAX_DEEPNORM)), ..Bound::default() };
    let fraction = Bound { minimum: Some(0.0), exclusive_maximum: Some(1.0), ..Bound::default() };
    vec![
        ("model.d_model", ints(1, Some(MAX_D_MODEL))),
        ("model.n_layers", ints(1, Some(MAX_LAYERS))),
        ("model.n_encoder_layers", ints(1, Some(MAX_LAYERS))),
        ("model.n_decoder_layers", ints(1, Some(MAX_LAYERS))),
        ("model.n_heads", ints(1, Some(MAX_HEADS))),
        ("model.n_kv_heads", ints(1, Some(MAX_HEADS))),
        ("model.ctx_len", ints(1, Some(MAX_CTX_LEN))),
        ("model.ffn.mult", ints(1, Some(MAX_FFN_MULT))),
        ("model.ffn.hidden", ints(1, Some(MAX_FFN_HIDDEN))),
        ("model.ffn.moe.experts", ints(MIN_EXPERTS, Some(MAX_EXPERTS))),
        ("model.ffn.moe.top_k", ints(1, Some(MAX_EXPERTS))),
        ("model.ffn.moe.aux_loss", Bound { minimum: Some(0.0), maximum: Some(MAX_AUX_LOSS as f64), ..Bound::default() }),
        ("model.ffn.moe.capacity_factor", Bound { minimum: Some(1.0), maximum: Some(MAX_CAPACITY_FACTOR as f64), ..Bound::default() }),
        ("model.norm.eps", Bound { exclusive_minimum: Some(0.0), maximum: Some(wide(MAX_NORM_EPS)), ..Bound::default() }),
        ("model.norm.alpha", deepnorm),
        ("model.norm.beta", deepnorm),
        ("model.position.theta", Bound { exclusive_minimum: Some(1.0), ..Bound::default() }),
        ("model.position.buckets", ints(MIN_BUCKETS, Some(MAX_BUCKETS))),
        ("model.position.max_distance", ints(MIN_BUCKETS / 4 + 1, Some(MAX_DISTANCE))),
        ("model.dropout", fraction),
        ("model.init_std", Bound { exclusive_minimum: Some(0.0), maximum: Some(1.0), ..Bound::default() }),
        ("train.batch_size", ints(1, Some(MAX_BATCH_SIZE))),
        ("train.steps", ints(1, Some(MAX_STEPS))),
        ("train.lr", Bound { exclusive_minimum: Some(0.0), maximum: Some(MAX_LR as f64), ..Bound::default() }),
        ("train.min_lr", non_negative),
        ("train.warmup", ints(0, Some(MAX_WARMUP))),
        ("train.betas[0]", fraction),
        ("train.betas[1]", fraction),
        ("train.eps", positive),
        ("train.weight_decay", Bound { minimum: Some(0.0), maximum: Some(MAX_WEIGHT_DECAY as f64), ..Bound::default() }),
        ("train.grad_clip", Bound { minimum: Some(0.0), maximum: Some(wide(MAX_GRAD_CLIP)), ..Bound::default() }),
        ("train.eval_interval", ints(1, None)),
        ("train.eval_iters", ints(1, Some(MAX_EVAL_ITERS))),
        ("data.digits", ints(1, Some(MAX_DIGITS))),
        ("data.mlm_mask", Bound { minimum: Some(0.0), maximum: Some(1.0), ..Bound::default() }),
        ("data.mlm_random", Bound { minimum: Some(0.0), maximum: Some(1.0), ..Bound::default() }),
        ("seed", ints(0, None)),
    ]
}

impl Config {
    pub fn from_json(text: &str) -> Result<Config> {
        check_position_fields(text)?;
        let cfg: Config = serde_json::from_str(text).map_err(|e| Error::ConfigParse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }

    /// Refuses every config that cannot work, naming field, value and rule.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(bad("train.batch_size", t.batch_size, "must be at least 1"));
        }
        if t.batch_size > MAX_BATCH_SIZE {
            return Err(bad("train.batch_size", t.batch_size, &format!("must be at most {MAX_BATCH_SIZE}")));
        }
        if t.steps == 0 {
            return Err(bad("train.steps", 0, "must be at least 1"));
        }
        if t.steps > MAX_STEPS {
            return Err(bad("train.steps", t.steps, &format!("must be in 1..={MAX_STEPS}")));
        }
        if t.warmup > MAX_WARMUP {
            return Err(bad("train.warmup", t.warmup, &format!("must be in 0..={MAX_WARMUP}")));
        }
        if !(t.lr.is_finite() && t.lr > 0.0 && t.lr <= MAX_LR) {
            return Err(bad("train.lr", t.lr, &format!("must be a number in (0, {MAX_LR}]")));
        }
        if !(t.min_lr.is_finite() && t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return Err(bad("train.min_lr", t.min_lr, "must be in [0, train.lr]"));
        }
        for (i, b) in t.betas.iter().enumerate() {
            if !(b.is_finite() && *b >= 0.0 && *b < 1.0) {
                return Err(bad(&format!("train.betas[{i}]"), b, "must be in [0, 1)"));
            }
        }
        if !(t.eps.is_finite() && t.eps > 0.0) {
            return Err(bad("train.eps", t.eps, "must be positive"));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0 && t.weight_decay <= MAX_WEIGHT_DECAY) {
            let rule = format!("must be >= 0 and at most {MAX_WEIGHT_DECAY} (range [0, {MAX_WEIGHT_DECAY}])");
            return Err(bad("train.weight_decay", t.weight_decay, &rule));
        }
        // AdamW's decoupled decay p ← p(1 − lr·wd) runs at the schedule's lr, never above train.lr.
        let decay = t.lr as f64 * t.weight_decay as f64;
        if decay >= 1.0 {
            let rule = format!(
                "train.lr · train.weight_decay must be < 1, here {} · {} = {decay:.3} (each step scales the weights by \
                 1 − lr·weight_decay: at 1 that zeroes them, past 1 it flips their sign)",
                t.lr, t.weight_decay
            );
            return Err(bad("train.weight_decay", t.weight_decay, &rule));
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0 && t.grad_clip <= MAX_GRAD_CLIP) {
            let rule = format!("must be >= 0 and at most {MAX_GRAD_CLIP} (range [0, {MAX_GRAD_CLIP}]; 0 disables clipping)");
            return Err(bad("train.grad_clip", t.grad_clip, &rule));
        }
        if t.eval_interval == 0 {
            return Err(bad("train.eval_interval", 0, "must be at least 1"));
        }
        if t.eval_iters == 0 {
            return Err(bad("train.eval_iters", 0, "must be at least 1"));
        }
        if t.eval_iters > MAX_EVAL_ITERS {
            let rule = format!("must be in 1..={MAX_EVAL_ITERS} (each evaluation runs eval_iters batches of each split)");
            return Err(bad("train.eval_iters", t.eval_iters, &rule));
        }
        let a = self.model.arch;
        match (a, self.data.task) {
            (Arch::EncoderDecoder, Task::Text) => {
                return Err(bad(
                    "data.task",
                    "text",
                    "encoder_decoder trains on a synthetic task (reverse, sort, add) or a denoising one \
                     (span_corruption, text_infilling)",
                ))
            }
            (Arch::Bert | Arch::Gpt, t) if t != Task::Text => {
                let kind = if t.is_denoising() { "the denoising objectives" } else { "the synthetic tasks" };
                return Err(bad(
                    "data.task",
                    t.name(),
                    &format!("gpt and bert train on text; {kind} are for encoder_decoder (model.arch)"),
                ));
            }
            _ => {}
        }
        let names = ["data.mlm_mask", "data.mlm_random"];
        if let Err((i, v, rule)) = (crate::data::Mlm { mask: self.data.mlm_mask, random: self.data.mlm_random }).check(names) {
            return Err(bad(names[i], v, &rule));
        }
        if self.data.task.is_synthetic() {
            let d = self.data.digits;
            if d == 0 || d > MAX_DIGITS {
                return Err(bad("data.digits", d, &format!("must be in 1..={MAX_DIGITS}")));
            }
            let (src, tgt) = self.data.task.lengths(d);
            let need = src.max(tgt + 1);
            if need > self.model.ctx_len {
                return Err(bad(
                    "data.digits",
                    d,
                    &format!("the task needs sequences of {need} tokens, more than model.ctx_len = {}", self.model.ctx_len),
                ));
            }
        }
        if let Some(f) = &self.finetune {
            if !(f.aux_lm.is_finite() && f.aux_lm >= 0.0 && f.aux_lm <= MAX_AUX_LM) {
                return Err(bad("finetune.aux_lm", f.aux_lm, &format!("must be in [0, {MAX_AUX_LM}] (0 disables the LM loss)")));
            }
            let classes = self.model.classifier.map(|c| c.classes);
            if classes != Some(f.task.classes()) {
                let value = classes.map_or("none".to_string(), |c| c.to_string());
                let rule = format!("finetune.task = {} needs model.classifier.classes = {}", f.task.name(), f.task.classes());
                return Err(bad("model.classifier.classes", value, &rule));
            }
        }
        if self.data.task.is_denoising() && self.model.ctx_len < MIN_DENOISE_CTX_LEN {
            return Err(bad(
                "model.ctx_len",
                self.model.ctx_len,
                &format!(
                    "data.task = {} needs model.ctx_len >= {} (a shorter source leaves too few tokens to corrupt)",
                    self.data.task.name(),
                    MIN_DENOISE_CTX_LEN
                ),
            ));
        }
        Ok(())
    }
}

impl ModelConfig {
    pub fn head_size(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// The factor attention's scores q·k are multiplied by (`attention.scale`): 1/√HS, or 1.
    pub fn score_scale(&self) -> f32 {
        match self.attention.scale {
            AttnScale::InvSqrtDk => 1.0 / (self.head_size() as f32).sqrt(),
            AttnScale::None => 1.0,
        }
    }

    /// FFN hidden width F (see docs/MODEL.md for the gated 2/3 rule).
    pub fn ffn_hidden(&self) -> usize {
        if let Some(h) = self.ffn.hidden {
            return h;
        }
        let c = self.d_model;
        if self.ffn.activation.is_gated() {
            8 * (2 * self.ffn.mult * c).div_ceil(24)
        } else {
            self.ffn.mult * c
        }
    }

    /// (encoder layers, decoder layers); gpt has only a decoder-style stack, bert only an encoder.
    pub fn stack_layers(&self) -> (usize, usize) {
        match self.arch {
            Arch::Gpt => (0, self.n_layers),
            Arch::Bert => (self.n_layers, 0),
            Arch::EncoderDecoder => (
                self.n_encoder_layers.unwrap_or(self.n_layers),
                self.n_decoder_layers.unwrap_or(self.n_layers),
            ),
        }
    }

    /// DeepNorm (α, β) for the encoder stack and the decoder stack (DeepNet, Wang et al. 2022, Table 1).
    pub fn deepnorm_alpha_beta(&self) -> [(f32, f32); 2] {
        let (n, m) = self.stack_layers();
        let (n, m) = (n as f32, m as f32);
        let mut ab = match self.arch {
            Arch::Gpt => [(1.0, 1.0), ((2.0 * m).powf(0.25), (8.0 * m).powf(-0.25))],
            Arch::Bert => [((2.0 * n).powf(0.25), (8.0 * n).powf(-0.25)), (1.0, 1.0)],
            Arch::EncoderDecoder => {
                let x = (n.powi(4) * m).powf(1.0 / 16.0);
                [(0.81 * x, 0.87 / x), ((3.0 * m).powf(0.25), (12.0 * m).powf(-0.25))]
            }
        };
        for s in ab.iter_mut() {
            if let Some(a) = self.norm.alpha {
                s.0 = a;
            }
            if let Some(b) = self.norm.beta {
                s.1 = b;
            }
        }
        ab
    }

    pub fn validate(&self) -> Result<()> {
        let m = self;
        let pos = |f: &str, v: usize| if v == 0 { Err(bad(f, v, "must be at least 1")) } else { Ok(()) };
        pos("model.d_model", m.d_model)?;
        pos("model.n_heads", m.n_heads)?;
        pos("model.n_kv_heads", m.n_kv_heads)?;
        pos("model.ctx_len", m.ctx_len)?;
        pos("model.ffn.mult", if m.ffn.hidden.is_some() { 1 } else { m.ffn.mult })?;
        if let Some(k) = m.classifier {
            if m.arch != Arch::Gpt {
                return Err(bad("model.classifier", "present", "a classifier head is for gpt (model.arch) only"));
            }
            if !(1..=MAX_CLASSES).contains(&k.classes) {
                return Err(bad("model.classifier.classes", k.classes, &format!("must be in 1..={MAX_CLASSES} (1: a scalar head)")));
            }
        }
        if let Some(h) = m.ffn.hidden {
            pos("model.ffn.hidden", h)?;
        }
        match m.arch {
            Arch::EncoderDecoder => {
                let (e, d) = m.stack_layers();
                pos("model.n_encoder_layers", e)?;
                pos("model.n_decoder_layers", d)?;
            }
            _ => {
                pos("model.n_layers", m.n_layers)?;
                if m.n_encoder_layers.is_some() || m.n_decoder_layers.is_some() {
                    return Err(bad(
                        "model.n_encoder_layers",
                        format!("{:?}", m.n_encoder_layers.or(m.n_decoder_layers).unwrap_or(0)),
                        "only an encoder_decoder has separate encoder/decoder layer counts; use n_layers",
                    ));
                }
            }
        }
        let (e, d) = m.stack_layers();
        let (e_field, d_field) = match m.arch {
            Arch::EncoderDecoder => ("model.n_encoder_layers", "model.n_decoder_layers"),
            _ => ("model.n_layers", "model.n_layers"),
        };
        for (field, n) in [(e_field, e), (d_field, d)] {
            if n > MAX_LAYERS {
                return Err(bad(field, n, &format!("must be at most {MAX_LAYERS}")));
            }
        }
        if m.ffn.mult > MAX_FFN_MULT {
            return Err(bad("model.ffn.mult", m.ffn.mult, &format!("must be at most {MAX_FFN_MULT}")));
        }
        if let Some(h) = m.ffn.hidden {
            if h > MAX_FFN_HIDDEN {
                return Err(bad("model.ffn.hidden", h, &format!("must be at most {MAX_FFN_HIDDEN}")));
            }
        }
        if let Some(moe) = &m.ffn.moe {
            if !(MIN_EXPERTS..=MAX_EXPERTS).contains(&moe.experts) {
                return Err(bad("model.ffn.moe.experts", moe.experts, &format!("must be in {MIN_EXPERTS}..={MAX_EXPERTS}")));
            }
            if !(1..=moe.experts).contains(&moe.top_k) {
                let rule = format!("must be in 1..=model.ffn.moe.experts = {} (each token goes to top_k distinct experts)", moe.experts);
                return Err(bad("model.ffn.moe.top_k", moe.top_k, &rule));
            }
            if !(moe.aux_loss.is_finite() && (0.0..=MAX_AUX_LOSS).contains(&moe.aux_loss)) {
                return Err(bad("model.ffn.moe.aux_loss", moe.aux_loss, &format!("must be a number in [0, {MAX_AUX_LOSS}] (0 disables the balancing loss)")));
            }
            if let Some(f) = moe.capacity_factor {
                if !(f.is_finite() && (1.0..=MAX_CAPACITY_FACTOR).contains(&f)) {
                    let rule = format!("must be null (no limit) or a number in [1, {MAX_CAPACITY_FACTOR}]");
                    return Err(bad("model.ffn.moe.capacity_factor", f, &rule));
                }
            }
        }
        if m.d_model > MAX_D_MODEL {
            return Err(bad("model.d_model", m.d_model, &format!("must be at most {MAX_D_MODEL}")));
        }
        if m.ctx_len > MAX_CTX_LEN {
            return Err(bad("model.ctx_len", m.ctx_len, &format!("must be at most {MAX_CTX_LEN}")));
        }
        if m.n_heads > MAX_HEADS {
            return Err(bad("model.n_heads", m.n_heads, &format!("must be at most {MAX_HEADS}")));
        }
        if !m.d_model.is_multiple_of(m.n_heads) {
            return Err(bad(
                "model.n_heads",
                m.n_heads,
                &format!("must divide model.d_model = {} (head size = d_model / n_heads)", m.d_model),
            ));
        }
        if m.n_kv_heads > m.n_heads || !m.n_heads.is_multiple_of(m.n_kv_heads) {
            return Err(bad(
                "model.n_kv_heads",
                m.n_kv_heads,
                &format!("must divide model.n_heads = {} (each KV head serves n_heads / n_kv_heads query heads)", m.n_heads),
            ));
        }
        match &m.position {
            Position::Rope { theta } => {
                if !m.head_size().is_multiple_of(2) {
                    return Err(bad(
                        "model.position.kind",
                        "rope",
                        &format!("needs an even head size; d_model / n_heads = {}", m.head_size()),
                    ));
                }
                if !(theta.is_finite() && *theta > 1.0) {
                    return Err(bad("model.position.theta", theta, "must be a number > 1"));
                }
            }
            Position::Sinusoidal if !m.d_model.is_multiple_of(2) => {
                return Err(bad("model.position.kind", "sinusoidal", &format!("needs an even d_model, got {}", m.d_model)));
            }
            Position::Relative { buckets, max_distance } => {
                if *buckets < MIN_BUCKETS || buckets % 2 != 0 || *buckets > MAX_BUCKETS {
                    let rule = format!("must be an even number in {MIN_BUCKETS}..={MAX_BUCKETS}");
                    return Err(bad("model.position.buckets", buckets, &rule));
                }
                if *max_distance > MAX_DISTANCE {
                    let rule = format!("must be at most {MAX_DISTANCE}");
                    return Err(bad("model.position.max_distance", max_distance, &rule));
                }
                if *max_distance <= buckets / 4 {
                    return Err(bad(
                        "model.position.max_distance",
                        max_distance,
                        &format!("must exceed buckets / 4 = {} (where the log-spaced buckets start)", buckets / 4),
                    ));
                }
                // Causal attention (gpt, the encoder-decoder's decoder) does not split the buckets into two halves:
                // its log-spaced buckets start at buckets / 2 (model::position::t5_bucket).
                if m.arch != Arch::Bert && *max_distance <= buckets / 2 {
                    return Err(bad(
                        "model.position.max_distance",
                        max_distance,
                        &format!(
                            "must exceed buckets / 2 = {} for causal attention (gpt, the encoder_decoder's decoder), \
                             where its log-spaced buckets start",
                            buckets / 2
                        ),
                    ));
                }
            }
            _ => {}
        }
        if !(m.dropout.is_finite() && (0.0..1.0).contains(&m.dropout)) {
            return Err(bad("model.dropout", m.dropout, "must be in [0, 1)"));
        }
        if !(m.init_std.is_finite() && m.init_std > 0.0 && m.init_std <= 1.0) {
            return Err(bad("model.init_std", m.init_std, "must be in (0, 1]"));
        }
        if !(m.norm.eps.is_finite() && m.norm.eps > 0.0 && m.norm.eps <= MAX_NORM_EPS) {
            let rule = format!("must be positive and at most {MAX_NORM_EPS} (range (0, {MAX_NORM_EPS}])");
            return Err(bad("model.norm.eps", m.norm.eps, &rule));
        }
        if m.norm.placement != Placement::Deepnorm && (m.norm.alpha.is_some() || m.norm.beta.is_some()) {
            return Err(bad(
                "model.norm.alpha",
                format!("{:?}", m.norm.alpha.or(m.norm.beta).unwrap_or(0.0)),
                "alpha and beta apply only to placement \"deepnorm\"",
            ));
        }
        for (f, v) in [("model.norm.alpha", m.norm.alpha), ("model.norm.beta", m.norm.beta)] {
            if let Some(v) = v {
                if !(v.is_finite() && (MIN_DEEPNORM..=MAX_DEEPNORM).contains(&v)) {
                    return Err(bad(f, v, &format!("must be a positive number in [{MIN_DEEPNORM}, {MAX_DEEPNORM}]")));
                }
            }
        }
        Ok(())
    }
}
