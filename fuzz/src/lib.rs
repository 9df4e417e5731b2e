//! What the fuzz targets share: tiny configs and runs to drive the core with, and the error contract every target
//! asserts (docs/RELIABILITY.md, "Fuzzing"): bad input gives an `Error` of the right kind whose message says what
//! is wrong, naming the field where the API promises one; nothing panics or hangs.
//!
//! The harness bounds the work it asks of an accepted input (a model's size before building it, tokens before
//! generating them), so that an iteration stays short: that is the fuzzer's budget, not the contract. The checks
//! that decide whether the input is accepted always run on the input as given.

use transformer_playground::config::Config;
use transformer_playground::error::Error;
use transformer_playground::facade;
use transformer_playground::model::Layout;
use transformer_playground::train::Run;

/// Models the harness builds and runs: at most this many parameters ...
pub const MAX_FUZZ_PARAMS: usize = 50_000;
/// ... and at most this many tokens per batch (batch_size × ctx_len).
pub const MAX_FUZZ_TOKENS: usize = 512;
/// Tokens the harness generates or decodes at most in one call (the options' own limit is checked as given).
pub const MAX_FUZZ_GENERATE: usize = 16;

/// A tiny gpt (d_model 8, one layer, ctx_len 8): cheap enough to build and run on every iteration.
pub const GPT: &str = r#"{"model": {"arch": "gpt", "d_model": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
  "ctx_len": 8, "ffn": {"activation": "swiglu", "mult": 2}, "norm": {"kind": "rmsnorm", "placement": "pre"},
  "position": {"kind": "rope"}, "attention": {"scale": "inv_sqrt_dk"}},
  "train": {"batch_size": 2, "steps": 10, "lr": 0.001, "eval_iters": 1}, "seed": 7}"#;
/// A tiny bert.
pub const BERT: &str = r#"{"model": {"arch": "bert", "d_model": 8, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
  "ctx_len": 8, "ffn": {"activation": "gelu", "mult": 2}, "norm": {"kind": "layernorm", "placement": "post"},
  "position": {"kind": "learned"}, "attention": {"scale": "inv_sqrt_dk"}},
  "train": {"batch_size": 2, "steps": 10, "lr": 0.001, "eval_iters": 1}, "seed": 7}"#;
/// A tiny encoder-decoder on the reverse task.
pub const ENCDEC: &str = r#"{"model": {"arch": "encoder_decoder", "d_model": 8, "n_encoder_layers": 1,
  "n_decoder_layers": 1, "n_heads": 2, "n_kv_heads": 2, "ctx_len": 8, "ffn": {"activation": "relu", "mult": 2},
  "norm": {"kind": "rmsnorm", "placement": "pre"}, "position": {"kind": "relative", "buckets": 4, "max_distance": 8},
  "attention": {"scale": "none"}},
  "train": {"batch_size": 2, "steps": 10, "lr": 0.001, "eval_iters": 1}, "data": {"task": "reverse", "digits": 4},
  "seed": 7}"#;

/// A corpus long enough for a ctx_len of 8 (10 × (8 + 2) characters), of lowercase letters and spaces.
pub fn corpus() -> String {
    "the quick brown fox jumps over the lazy dog ".repeat(4)
}

/// A run of one of the tiny configs above, on `corpus()` where it trains on text.
pub fn tiny_run(config: &str) -> Run {
    let cfg = Config::from_json(config).expect("the tiny config is valid");
    let text = (cfg.data.task == transformer_playground::config::Task::Text).then(corpus);
    facade::new_run(config, text.as_deref()).expect("the tiny run builds")
}

/// Whether the harness may build and train this config (see the module docs).
pub fn small_enough(cfg: &Config, vocab: usize) -> bool {
    Layout::check_size(&cfg.model, vocab).is_ok()
        && Layout::new(&cfg.model, vocab).n_params <= MAX_FUZZ_PARAMS
        && cfg.train.batch_size.saturating_mul(cfg.model.ctx_len) <= MAX_FUZZ_TOKENS
}

/// The contract of every refusal: a message, of one of the core's kinds, in `kinds`. A config error names its
/// field (a path such as `model.d_model` or `train.betas[1]`), the value and the rule, and its message says all
/// three.
pub fn check_error(e: &Error, kinds: &[&str], input: &dyn std::fmt::Debug) {
    let msg = e.to_string();
    assert!(!msg.trim().is_empty(), "an error without a message for {input:?}: {e:?}");
    assert!(kinds.contains(&e.kind()), "error of kind {} (expected one of {kinds:?}) for {input:?}: {msg}", e.kind());
    if let Error::Config { field, value, rule } = e {
        assert!(known_field(field), "config error names no known field ({field:?}) for {input:?}: {msg}");
        assert!(!rule.is_empty(), "config error without a rule for {input:?}: {msg}");
        assert!(msg.contains(field.as_str()) && msg.contains(value.as_str()), "message lacks field or value: {msg}");
    }
}

/// A config field as the core's errors name them: a section and a key (`model.norm.eps`, `train.betas[0]`), `seed`,
/// or `model` itself (a model too large as a whole: `Layout::check_size`).
pub fn known_field(field: &str) -> bool {
    let sections = ["model.", "train.", "data."];
    field == "seed"
        || field == "model"
        || sections.iter().any(|s| {
            field.strip_prefix(s).is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
            })
        })
}
