//! The tiny config the training tests share (`config`), and the configs that together reach every op a backend
//! may hand an uncleared output (`output_cases`: the gpu's and the cpu's poison tests train them). Used by
//! tests/gpu_harness and tests/cpu_outputs.rs (which also runs in the browser).

#![allow(dead_code)] // each test file uses part of it

use serde_json::json;
use transformer_playground::config::Config;

/// The tiny config of the training tests (C = 36, 6 heads sharing 2 kv heads, 2 layers), with `patch` over its model.
pub fn config(arch: &str, patch: serde_json::Value) -> Config {
    let layers = if arch == "encoder_decoder" { r#""n_encoder_layers": 2, "n_decoder_layers": 2,"# } else { "" };
    let data = if arch == "encoder_decoder" { r#""data": {"task": "reverse", "digits": 4},"# } else { "" };
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 36, "n_layers": 2, {layers} "n_heads": 6, "n_kv_heads": 2, "ctx_len": 16,
             "ffn": {{ "activation": "gelu", "mult": 2 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
             "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
             "train": {{ "batch_size": 2, "steps": 100, "lr": 0.01, "warmup": 0, "schedule": "constant", "weight_decay": 0.1, "grad_clip": 1.0, "eval_iters": 2 }},
             {data} "seed": 1 }}"#
    );
    let c = Config::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    let mut v = serde_json::to_value(&c).unwrap();
    for (k, x) in patch.as_object().unwrap() {
        v["model"][k] = x.clone();
    }
    let c: Config = serde_json::from_value(v).unwrap();
    c.validate().unwrap();
    c
}

/// Configs that together run every op given an `output` buffer: each position scheme, norm kind and placement,
/// activation (plain, gated, GLU), biases on and off, dropout, GQA, the three architectures and Mixture-of-Experts.
pub fn output_cases() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("gpt", json!({})),
        ("gpt", json!({"position": {"kind": "rope"}, "norm": {"kind": "rmsnorm", "placement": "pre"}, "dropout": 0.1})),
        ("gpt", json!({"position": {"kind": "alibi"}, "norm": {"kind": "rmsnorm", "placement": "sandwich"}, "ffn": {"activation": "swiglu", "mult": 2}})),
        // No biases anywhere: the linears' outputs start from x·Wᵀ alone.
        ("gpt", json!({"position": {"kind": "recurrent"}, "norm": {"kind": "layernorm", "placement": "post"}, "bias": false})),
        ("bert", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "rmsnorm", "placement": "deepnorm"}, "ffn": {"activation": "glu", "mult": 2}})),
        ("encoder_decoder", json!({"position": {"kind": "sinusoidal"}, "ffn": {"activation": "swish", "mult": 2}, "n_kv_heads": 6})),
        ("gpt", json!({"ffn": {"activation": "swiglu", "mult": 2, "moe": {"experts": 4, "top_k": 2, "aux_loss": 0.05}}})),
    ]
}
