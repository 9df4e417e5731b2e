//! Choosing the gpu backend in a build without the `gpu` feature is a clear error, not a panic or a silent cpu run.
#![cfg(not(feature = "gpu"))]

use transformer_playground::backend::BackendKind;
use transformer_playground::train::Run;
use transformer_playground::Config;

#[test]
fn the_gpu_backend_without_the_gpu_feature_is_refused_with_the_reason() {
    assert_eq!(BackendKind::parse("gpu").unwrap(), BackendKind::Gpu);
    let cfg = Config::from_json(
        r#"{ "model": { "arch": "encoder_decoder", "d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "ctx_len": 16,
            "ffn": { "activation": "gelu" }, "norm": { "kind": "layernorm", "placement": "pre" },
            "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
            "train": { "batch_size": 2, "steps": 10, "lr": 0.001 }, "data": { "task": "reverse", "digits": 4 }, "seed": 1 }"#,
    )
    .unwrap();
    let err = Run::new(cfg, None, BackendKind::Gpu).err().expect("refused").to_string();
    assert!(err.contains("this build has no gpu backend (build with --features gpu)"), "{err}");
    let bad = BackendKind::parse("tpu").unwrap_err().to_string();
    assert!(bad.contains("expected reference, cpu or gpu"), "{bad}");
}
