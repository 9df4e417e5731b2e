//! The command line end to end: train writes JSON lines and a checkpoint; sample, fill-mask, decode and logits
//! read it; bad input exits non-zero with the core's message on stderr.

use std::process::Command;

fn tp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn write_config(name: &str, json: &str) -> String {
    let p = tmp(name);
    std::fs::write(&p, json).unwrap();
    p
}

const SHAKESPEARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt");

fn tiny(arch: &str, extra: &str) -> String {
    format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 24,
        "ffn": {{ "activation": "swiglu", "mult": 2 }}, "norm": {{ "kind": "rmsnorm", "placement": "pre" }},
        "position": {{ "kind": "rope" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
        "train": {{ "batch_size": 4, "steps": 6, "lr": 0.003, "eval_interval": 3, "eval_iters": 2 }} {extra}, "seed": 3 }}"#
    )
}

#[test]
fn train_prints_json_lines_and_its_checkpoint_feeds_sample_and_logits() {
    let cfg = write_config("gpt.json", &tiny("gpt", ""));
    let ck = tmp("gpt.safetensors");
    let (ok, out, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--log-every", "1", "--sample-tokens", "20"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 6);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"], i);
        assert!(s["loss"].as_f64().unwrap() > 0.0 && s["lr"].as_f64().unwrap() > 0.0 && s["ms"].as_f64().is_some());
    }
    assert!(steps[0]["val_loss"].as_f64().is_some() && steps[3]["val_loss"].as_f64().is_some() && steps[1]["val_loss"].is_null());
    let sample = lines.last().unwrap();
    assert_eq!(sample["sample"].as_str().unwrap().chars().count(), 20);

    let (ok, out, err) = tp(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", "--tokens", "15", "--seed", "4"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ROMEO:") && out.trim_end().chars().count() >= 6 + 10, "{out}");
    let (_, again, _) = tp(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", "--tokens", "15", "--seed", "4"]);
    assert_eq!(out, again, "same seed, same sample");

    let (ok, out, err) = tp(&["logits", "--checkpoint", &ck, "--text", "To be"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["logits"].as_array().unwrap().len(), 5);
    assert_eq!(v["logits"][0].as_array().unwrap().len(), v["vocab"].as_array().unwrap().len());
}

/// A Mixture-of-Experts run logs its balancing term and each layer's expert load beside the loss, and its
/// checkpoint samples.
#[test]
fn a_moe_run_logs_aux_loss_and_expert_load_and_its_checkpoint_samples() {
    let json = tiny("gpt", "").replace(r#""mult": 2 }"#, r#""mult": 2, "moe": { "experts": 4, "top_k": 2, "capacity_factor": 1.0 } }"#);
    let cfg = write_config("moe.json", &json);
    let ck = tmp("moe.safetensors");
    let (ok, out, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--log-every", "1"]);
    assert!(ok, "{err}");
    let steps: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect(l)).filter(|l: &serde_json::Value| l.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 6);
    for s in &steps {
        let aux = s["aux_loss"].as_f64().expect("aux_loss on every MoE step");
        let load = s["expert_load"].as_array().expect("expert_load");
        assert_eq!(load.len(), 1, "one MoE layer");
        let shares: Vec<f64> = load[0]["load"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(shares.len(), 4);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{shares:?}");
        let balance = load[0]["balance"].as_f64().unwrap();
        // The default weight 0.01 times E·Σ f·P, which is at least 1 (Cauchy–Schwarz-ish for balanced P) — here ≥ 0.5.
        assert!((aux - 0.01 * balance).abs() < 1e-6 && balance > 0.5, "aux {aux}, balance {balance}");
        assert!(load[0]["dropped"].as_u64().is_some());
    }
    let (ok, out, err) = tp(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", "--tokens", "10", "--seed", "4"]);
    assert!(ok && out.starts_with("ROMEO:"), "{err}");
}

#[test]
fn bert_and_encoder_decoder_checkpoints_fill_masks_and_decode() {
    let cfg = write_config("bert.json", &tiny("bert", ""));
    let ck = tmp("bert.safetensors");
    let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--sample-tokens", "0"]);
    assert!(ok, "{err}");
    let (ok, out, err) = tp(&["fill-mask", "--checkpoint", &ck, "--text", "to be or [MASK]ot", "--top-k", "3"]);
    assert!(ok, "{err}");
    let fills: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(fills[0]["position"], 9);
    assert_eq!(fills[0]["candidates"].as_array().unwrap().len(), 3);

    let cfg = write_config("t5.json", &tiny("encoder_decoder", r#", "data": {"task": "reverse", "digits": 5}"#));
    let ck = tmp("t5.safetensors");
    let (ok, out, err) = tp(&["train", "--config", &cfg, "--out", &ck]);
    assert!(ok, "{err}");
    assert!(out.lines().last().unwrap().contains("exact_match"));
    let (ok, out, err) = tp(&["decode", "--checkpoint", &ck, "--input", "12345"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().chars().count(), 5);
    // --n: three sampled decodings together over the paged cache (the source's cross-attention keys and values
    // computed once), each equal to --n 1 with seed + i.
    let (ok, out, err) = tp(&["decode", "--checkpoint", &ck, "--input", "12345", "--temperature", "1", "--seed", "5", "--n", "3", "--block-size", "2"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    for i in 0..3 {
        let (ok, one, err) = tp(&["decode", "--checkpoint", &ck, "--input", "12345", "--temperature", "1", "--seed", &(5 + i).to_string()]);
        assert!(ok, "{err}");
        assert_eq!(v["samples"][i].as_str().unwrap(), one.trim_end_matches('\n'), "decoding {i}");
    }
    assert_eq!(v["kv"]["block_size"], 2);
    let (ok, _, err) = tp(&["decode", "--checkpoint", &ck, "--input", "12345", "--n", "0"]);
    assert!(!ok && err.contains("--n = 0"), "{err}");
}

#[test]
fn bad_input_exits_non_zero_with_the_message_on_stderr() {
    let bad = write_config("bad.json", &tiny("gpt", "").replace("\"n_kv_heads\": 2", "\"n_kv_heads\": 3"));
    let (ok, out, err) = tp(&["train", "--config", &bad, "--data", SHAKESPEARE]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("invalid config: model.n_kv_heads = 3: must divide model.n_heads = 4"), "{err}");

    let cfg = write_config("ok.json", &tiny("gpt", ""));
    let binary = tmp("binary.bin");
    std::fs::write(&binary, [0u8, 159, 146, 150, 0, 1, 2]).unwrap();
    let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", &binary]);
    assert!(!ok && err.contains("not valid UTF-8"), "{err}");

    let (ok, _, err) = tp(&["sample", "--checkpoint", &binary]);
    assert!(!ok && err.contains("bad checkpoint"), "{err}");
    let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--backend", "quantum"]);
    assert!(!ok && err.contains("unknown backend \"quantum\""), "{err}");
    let (ok, _, err) = tp(&["train", "--config", "/nonexistent.json"]);
    assert!(!ok && err.contains("/nonexistent.json"), "{err}");
}

#[test]
fn tp_trains_the_shipped_recurrent_positions_config_and_samples_from_its_checkpoint() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/gpt-recurrent.json");
    let ck = tmp("gpt-recurrent.safetensors");
    let (ok, out, err) = tp(&["train", "--config", cfg, "--data", SHAKESPEARE, "--steps", "3", "--out", &ck, "--log-every", "1", "--sample-tokens", "10"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    let losses: Vec<f64> = lines.iter().filter_map(|l| l.get("loss").and_then(|x| x.as_f64())).collect();
    assert_eq!(losses.len(), 3);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    let (ok, out, err) = tp(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", "--tokens", "12", "--seed", "4"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ROMEO:") && out.trim_end().chars().count() >= 6 + 6, "{out}");
}

/// `tp sample --n`: N continuations decoded together over the paged cache, one JSON object; each equals
/// `--n 1 --seed seed+i`; `--kv-cache contiguous` gives the same texts; with `--n 1` the paged and the contiguous
/// path print the same text. Bad flags are refused naming the flag.
#[test]
fn sample_n_continuations_over_the_paged_cache() {
    let cfg = write_config("gpt-n.json", &tiny("gpt", ""));
    let ck = tmp("gpt-n.safetensors");
    let (ok, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--sample-tokens", "1"]);
    assert!(ok, "{err}");
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", "--tokens", "40", "--temperature", "1"];
        args.extend_from_slice(extra);
        let (ok, out, err) = tp(&args);
        assert!(ok, "{err}");
        out
    };
    // 40 tokens at ctx_len 24: the continuations restart past ctx_len.
    let paged = sample(&["--n", "3", "--seed", "7", "--block-size", "4"]);
    let v: serde_json::Value = serde_json::from_str(&paged).expect(&paged);
    let samples: Vec<&str> = v["samples"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(samples.len(), 3);
    for (i, s) in samples.iter().enumerate() {
        let one = sample(&["--seed", &(7 + i).to_string()]);
        assert_eq!(one, format!("ROMEO:{s}\n"), "continuation {i}");
    }
    let kv = &v["kv"];
    assert_eq!((kv["kind"].as_str(), kv["block_size"].as_u64()), (Some("paged"), Some(4)));
    assert!(kv["bytes_used"].as_u64().unwrap() > 0);
    assert!(kv["bytes_used"].as_u64().unwrap() <= kv["bytes_contiguous"].as_u64().unwrap());
    let contiguous: serde_json::Value = serde_json::from_str(&sample(&["--n", "3", "--seed", "7", "--kv-cache", "contiguous"])).unwrap();
    assert_eq!(contiguous["samples"], v["samples"]);
    assert_eq!(contiguous["kv"]["kind"], "contiguous");
    assert_eq!(sample(&["--seed", "2"]), sample(&["--seed", "2", "--kv-cache", "contiguous"]));
    for (flag, value, named) in [("--n", "0", "--n = 0"), ("--n", "65", "--n = 65"), ("--block-size", "0", "--block-size = 0"), ("--kv-cache", "ring", "--kv-cache = ring")] {
        let (ok, out, err) = tp(&["sample", "--checkpoint", &ck, "--prompt", "ROMEO:", flag, value]);
        assert!(!ok && out.is_empty() && err.contains(named), "{flag} {value}: {err}");
    }
}

#[test]
fn trace_prints_one_step_in_slow_motion_and_refuses_a_bad_config() {
    let cfg = write_config("trace.json", &tiny("gpt", ""));
    let (ok, out, err) = tp(&["trace", "--config", &cfg, "--data", SHAKESPEARE, "--steps", "2"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["step"], 2);
    let stages = v["stages"].as_array().unwrap();
    let passes: Vec<&str> = stages.iter().map(|s| s["pass"].as_str().unwrap()).collect();
    // forward … loss, backward …, update …, in that order.
    let first = |p: &str| passes.iter().position(|&x| x == p).unwrap();
    assert!(first("forward") < first("loss") && first("loss") < first("backward") && first("backward") < first("update"));
    assert!(v["loss"].as_f64().unwrap() > 0.0 && stages[0]["heat"]["cells"].as_array().is_some());
    let bad = write_config("trace-bad.json", &tiny("gpt", "").replace(r#""n_kv_heads": 2"#, r#""n_kv_heads": 3"#));
    let (ok, _, err) = tp(&["trace", "--config", &bad, "--data", SHAKESPEARE]);
    assert!(!ok && err.contains("n_kv_heads"), "{err}");
}
