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

// 1. A reader that goes away.

#[test]
fn logits_into_a_closed_pipe_exits_quietly() {
    let ck = gpt_checkpoint();
    let (code, err) = tp_into_closed_pipe(&["logits", "--checkpoint", &ck, "--text", "To be"]);
    assert_no_panic(&err);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn sample_into_a_closed_pipe_exits_quietly() {
    let ck = gpt_checkpoint();
    let (code, err) = tp_into_closed_pipe(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", "--tokens", "50"]);
    assert_no_panic(&err);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn train_into_a_closed_pipe_keeps_training_and_writes_its_checkpoint() {
    let cfg = write("gpt-pipe.json", &tiny("gpt", ""));
    let ck = tmp("gpt-pipe.safetensors");
    let (code, err) =
        tp_into_closed_pipe(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--log-every", "1", "--sample-tokens", "10"]);
    assert_no_panic(&err);
    assert_eq!(code, Some(0), "{err}");
    let bytes = std::fs::read(&ck).expect("the checkpoint was written");
    let loaded = transformer_playground::checkpoint::load(&bytes).unwrap();
    assert_eq!(loaded.step, 4, "all the steps ran");
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

// 3. Messages that name the option and the rule.

#[test]
fn logits_names_which_text_is_too_long() {
    let ck = encoder_decoder_checkpoint();
    let long = "1".repeat(40);
    let (ok, _, err) = tp(&["logits", "--checkpoint", &ck, "--text", "12", "--source", &long]);
    assert!(!ok && err.contains("--source") && err.contains("1..=16") && err.contains("40"), "{err}");
    let (ok, _, err) = tp(&["logits", "--checkpoint", &ck, "--text", &long, "--source", "12"]);
    assert!(!ok && err.contains("--text") && !err.contains("--source") && err.contains("1..=16"), "{err}");
}

#[test]
fn sample_tokens_errors_name_the_option_and_come_before_training() {
    let cfg = write("gpt-st.json", &tiny("gpt", ""));
    let ck = tmp("gpt-st.safetensors");
    let (ok, out, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--sample-tokens", "100001"]);
    assert!(!ok && out.is_empty(), "nothing trained: {out}");
    assert!(err.contains("--sample-tokens = 100001") && err.contains("at most 100000") && !err.contains("max_tokens"), "{err}");
    assert!(!err.contains("training on"), "refused before training: {err}");
    assert!(!std::path::Path::new(&ck).exists());
}

#[test]
fn an_out_path_in_a_missing_folder_is_refused_before_training() {
    let cfg = write("gpt-out.json", &tiny("gpt", ""));
    let (ok, out, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", "/nonexistent-dir/x.safetensors"]);
    assert!(!ok && out.is_empty() && err.contains("--out") && !err.contains("training on"), "{err}");
}

#[test]
fn negative_numbers_reach_validation_which_names_the_option() {
    let ck = gpt_checkpoint();
    let (ok, out, err) = tp(&["sample", "--checkpoint", &ck, "--temperature", "-1"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("--temperature = -1") && err.contains(">= 0") && !err.contains("unexpected argument"), "{err}");
    let (ok, _, err) = tp(&["sample", "--checkpoint", &ck, "--top-p", "-0.5"]);
    assert!(!ok && err.contains("--top-p = -0.5") && err.contains("(0, 1]"), "{err}");
    let (ok, _, err) = tp(&["sample", "--checkpoint", &ck, "--tokens", "100001"]);
    assert!(!ok && err.contains("--tokens = 100001") && !err.contains("max_tokens"), "{err}");
    let t5 = encoder_decoder_checkpoint();
    let (ok, _, err) = tp(&["decode", "--checkpoint", &t5, "--input", "12", "--temperature", "-1"]);
    assert!(!ok && err.contains("--temperature = -1"), "{err}");
}

#[test]
fn sample_refuses_an_unknown_character_before_printing_anything() {
    let ck = gpt_checkpoint();
    let (ok, out, err) = tp(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO\u{263A}", "--tokens", "5"]);
    assert!(!ok && out.is_empty(), "{out:?}");
    assert!(err.contains("not in the model's vocabulary"), "{err}");
}

/// Both outputs gone (stdout's reader has left, stderr closed): training still runs to the end and writes its
/// checkpoint — the "training on …" and "saved …" lines are lost, not the run.
#[test]
fn train_with_stdout_and_stderr_closed_still_writes_its_checkpoint() {
    let cfg = write("gpt-closed.json", &tiny("gpt", ""));
    let ck = tmp("gpt-closed.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tp"))
        .args(["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--log-every", "1", "--sample-tokens", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tp");
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let loaded = transformer_playground::checkpoint::load(&std::fs::read(&ck).expect("the checkpoint was written")).unwrap();
    assert_eq!(loaded.step, 4, "all the steps ran");
}

/// `--memory-budget GIB` sets the budget a config is checked against (issue 20 §2): a small budget refuses the
/// config naming the field and the budget; a bad value is refused naming the option and its range.
#[test]
fn the_memory_budget_flag_refuses_a_config_over_it_and_bad_values() {
    let cfg = write("gpt-budget.json", &tiny("gpt", ""));
    let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--memory-budget", "0.0001"]);
    assert!(!ok && (err.contains("train.batch_size") || err.contains("model")), "{err}");
    assert!(err.contains("over the memory budget of 0.00 GiB"), "{err}");
    for bad in ["0", "-1", "NaN", "5000"] {
        let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--memory-budget", bad]);
        assert!(!ok && err.contains("--memory-budget") && err.contains("(0, 1024]"), "{bad}: {err}");
        assert_no_panic(&err);
    }
    let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--memory-budget", "4", "--steps", "1", "--sample-tokens", "0"]);
    assert!(ok, "{err}");
}
