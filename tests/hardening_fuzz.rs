//! Issue 20 §3, what fuzzing the engine's requests found and asks for (docs/RELIABILITY.md, "Fuzzing"): the
//! browser facade's request handling (`facade`, called by src/wasm.rs) refuses bad arguments with an error naming
//! the argument, and each crash the fuzz targets (fuzz/) found has its regression test here.

use transformer_playground::{facade, Config, Error};

fn refused_options(json: &str) -> String {
    match facade::sample_options(json) {
        Err(e @ Error::Invalid(_)) => e.to_string(),
        other => panic!("{json}: expected an 'invalid' error, got {other:?}"),
    }
}

#[test]
fn sampling_options_of_the_wrong_type_are_refused_naming_the_option() {
    for (json, name) in [
        (r#"{"temperature": "hot"}"#, "temperature"),
        (r#"{"max_tokens": 1.5}"#, "max_tokens"),
        (r#"{"max_tokens": -3}"#, "max_tokens"),
        (r#"{"top_k": null}"#, "top_k"),
        (r#"{"seed": 7, "top_p": [1]}"#, "top_p"),
        // Found by fuzz target `sampling`: a repeated option whose first value has the wrong type was refused
        // with serde's line and column only.
        (r#"{"top_k": 0.05, "top_k": 1}"#, "top_k"),
    ] {
        let msg = refused_options(json);
        assert!(msg.starts_with(&format!("sampling options: {name} = ")), "{json}: {msg}");
    }
}

#[test]
fn sampling_options_out_of_range_unknown_or_repeated_are_refused_naming_the_option() {
    for (json, name) in [
        (r#"{"temperature": -1}"#, "temperature"),
        (r#"{"top_p": 0}"#, "top_p"),
        (r#"{"max_tokens": 100001}"#, "max_tokens"),
        (r#"{"topk": 3}"#, "topk"),
        (r#"{"seed": 1, "seed": 2}"#, "seed"),
    ] {
        let msg = refused_options(json);
        assert!(msg.contains(name), "{json}: {msg}");
    }
}

#[test]
fn empty_sampling_options_are_the_defaults() {
    assert_eq!(facade::sample_options(" ").unwrap(), Default::default());
    assert_eq!(facade::sample_options("{}").unwrap(), Default::default());
}

/// Found by fuzz target `config`: relative positions with max_distance ≤ buckets / 2 were accepted for causal
/// attention, whose log-spaced buckets start at buckets / 2; log(max_distance / start) was then 0 or negative and
/// the bucket overflowed (a panic with overflow checks, a wrong bucket index without).
#[test]
fn relative_positions_whose_log_spaced_buckets_cannot_start_are_refused_for_causal_attention() {
    let config = |arch: &str, layers: &str, task: &str, max_distance: usize| {
        format!(
            r#"{{"model": {{"arch": "{arch}", "d_model": 4, {layers}, "n_heads": 2, "n_kv_heads": 2, "ctx_len": 8,
            "ffn": {{"activation": "gelu", "mult": 1}}, "norm": {{"kind": "rmsnorm", "placement": "pre"}},
            "position": {{"kind": "relative", "buckets": 6, "max_distance": {max_distance}}},
            "attention": {{"scale": "inv_sqrt_dk"}}}}, "train": {{"batch_size": 2, "steps": 2, "lr": 0.01}}, {task}
            "seed": 7}}"#
        )
    };
    let encdec = |d| config("encoder_decoder", r#""n_encoder_layers": 1, "n_decoder_layers": 1"#, r#""data": {"task": "reverse", "digits": 5},"#, d);
    let gpt = |d| config("gpt", r#""n_layers": 1"#, "", d);
    let bert = |d| config("bert", r#""n_layers": 1"#, "", d);
    for json in [encdec(3), gpt(3), gpt(2)] {
        match Config::from_json(&json) {
            Err(Error::Config { field, value, rule }) => {
                assert_eq!(field, "model.position.max_distance");
                assert!(rule.starts_with("must exceed buckets / 2 = 3"), "{value}: {rule}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }
    // Bidirectional attention splits the buckets in two: its log-spaced ones start at buckets / 4.
    Config::from_json(&bert(3)).expect("bert with max_distance 3 > 6 / 4");
    // Past buckets / 2 every stack trains.
    for json in [encdec(4), gpt(4), bert(4)] {
        let cfg = Config::from_json(&json).expect("valid");
        let text = (cfg.data.task == transformer_playground::config::Task::Text).then(|| "abcdefgh ".repeat(20));
        let mut run = facade::new_run(&json, text.as_deref()).expect("builds");
        run.step().expect("a step runs");
    }
}
