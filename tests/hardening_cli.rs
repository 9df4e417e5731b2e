//! The command line under hostile conditions (issue 20): a reader that goes away mid-output, a checkpoint whose
//! vocabulary has nothing to emit, and options that are wrong — each ends quietly or with a message that names the
//! option and the rule, never with a panic, and never loses a training run's checkpoint.

use std::io::Read;
use std::process::{Command, Stdio};
use transformer_playground::config::Config;
use transformer_playground::data::Tokenizer;
use transformer_playground::model::Model;

fn tp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs tp with its stdout a pipe whose reader has already gone (as after `| head -c 0`): (exit code, stderr).
#[allow(dead_code)]
fn tp_into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tp"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tp");
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap().code(), err)
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn write(name: &str, text: &str) -> String {
    let p = tmp(name);
    std::fs::write(&p, text).unwrap();
    p
}

const SHAKESPEARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt");

fn tiny(arch: &str, extra: &str) -> String {
    format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 16,
        "ffn": {{ "activation": "swiglu", "mult": 2 }}, "norm": {{ "kind": "rmsnorm", "placement": "pre" }},
        "position": {{ "kind": "rope" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
        "train": {{ "batch_size": 2, "steps": 4, "lr": 0.003, "eval_interval": 2, "eval_iters": 1 }} {extra}, "seed": 3 }}"#
    )
}

/// A trained tiny gpt checkpoint, made once per test binary run and shared.
#[allow(dead_code)]
fn gpt_checkpoint() -> String {
    static CK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CK.get_or_init(|| {
        let cfg = write("gpt.json", &tiny("gpt", ""));
        let ck = tmp("gpt.safetensors");
        let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--sample-tokens", "0"]);
        assert!(ok, "{err}");
        ck
    })
    .clone()
}

fn encoder_decoder_checkpoint() -> String {
    static CK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CK.get_or_init(|| {
        let cfg = write("t5.json", &tiny("encoder_decoder", r#", "data": {"task": "reverse", "digits": 3}"#));
        let ck = tmp("t5.safetensors");
        let (ok, _, err) = tp(&["train", "--config", &cfg, "--out", &ck, "--sample-tokens", "0"]);
        assert!(ok, "{err}");
        ck
    })
    .clone()
}

fn assert_no_panic(err: &str) {
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

// 2. A vocabulary with nothing to emit.

/// An encoder-decoder whose tokenizer has no characters, only [BOS] (`wte` of one row).
fn specials_only_checkpoint() -> String {
    let cfg = Config::from_json(&tiny("encoder_decoder", r#", "data": {"task": "reverse", "digits": 3}"#)).unwrap();
    let tok: Tokenizer = serde_json::from_str(r#"{"chars": [], "specials": ["[BOS]"]}"#).unwrap();
    let model = Model::new(&cfg.model, tok.vocab_size(), 5);
    let bytes = transformer_playground::checkpoint::save(&cfg, &tok, 0, &model, None).unwrap();
    let p = tmp("specials-only.safetensors");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn decoding_with_only_special_tokens_is_refused_sampled_or_greedy() {
    let ck = specials_only_checkpoint();
    for temperature in ["0.5", "0"] {
        let (ok, out, err) = tp(&["decode", "--checkpoint", &ck, "--input", "[BOS]", "--temperature", temperature]);
        assert_no_panic(&err);
        assert!(!ok && out.is_empty(), "temperature {temperature}: {out:?} {err}");
        assert!(err.contains("no character") && err.contains("special"), "{err}");
    }
}

#[test]
fn sample_next_never_panics_on_an_empty_row() {
    use transformer_playground::generate::{sample_next, SampleOptions};
    let mut rng = transformer_playground::rng::Rng::new(1);
    for temperature in [0.0, 0.5] {
        let o = SampleOptions { temperature, ..Default::default() };
        let _ = sample_next(&[], &o, &mut rng);
    }
}

#[test]
fn a_trained_encoder_decoder_still_decodes_only_characters() {
    let ck = encoder_decoder_checkpoint();
    for temperature in ["0", "1.5"] {
        let (ok, out, err) = tp(&["decode", "--checkpoint", &ck, "--input", "123", "--temperature", temperature, "--tokens", "3"]);
        assert!(ok, "{err}");
        assert!(!out.contains("[BOS]") && out.trim().chars().count() == 3, "{out:?}");
    }
}
