//! Bad input gets a clear error and loses nothing: a table of impossible configs, each refused with its own
//! message naming the field; bad text refused; a diverging run keeps its last good state.

use transformer_playground::backend::BackendKind;
use transformer_playground::config::Config;
use transformer_playground::model::Layout;
use transformer_playground::train::Run;
use transformer_playground::Error;

const BASE: &str = r#"{ "model": { "arch": "gpt", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 16,
  "ffn": { "activation": "gelu", "mult": 4 }, "norm": { "kind": "layernorm", "placement": "pre" },
  "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
  "train": { "batch_size": 4, "steps": 10, "lr": 0.001 }, "seed": 1 }"#;

/// BASE with a JSON-pointer path set to a value.
fn patched(path: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    let (parent, key) = path.rsplit_once('/').unwrap();
    let obj = if parent.is_empty() { &mut v } else { v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) };
    obj[key] = value;
    v.to_string()
}

#[test]
fn the_base_config_is_valid() {
    Config::from_json(BASE).unwrap();
}

#[test]
fn every_impossible_config_is_refused_with_a_message_naming_field_and_rule() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/model/n_heads", json!(5), "model.n_heads = 5: must divide model.d_model = 32"),
        ("/model/n_kv_heads", json!(3), "model.n_kv_heads = 3: must divide model.n_heads = 4"),
        ("/model/n_kv_heads", json!(8), "model.n_kv_heads = 8: must divide model.n_heads"),
        ("/model/d_model", json!(0), "model.d_model = 0: must be at least 1"),
        ("/model/n_layers", json!(0), "model.n_layers = 0: must be at least 1"),
        ("/model/ctx_len", json!(0), "model.ctx_len = 0: must be at least 1"),
        ("/model/n_heads", json!(0), "model.n_heads = 0: must be at least 1"),
        ("/model/d_model", json!(-4), "invalid value: integer `-4`"),
        ("/model/dropout", json!(1.0), "model.dropout = 1: must be in [0, 1)"),
        ("/model/init_std", json!(0.0), "model.init_std = 0: must be in (0, 1]"),
        ("/model/position", json!({"kind": "rope"}), ""),
        ("/model/position", json!({"kind": "sinusoidal"}), ""),
        ("/model/position", json!({"kind": "relative", "buckets": 3}), "model.position.buckets = 3: must be an even number in 4..=1024"),
        ("/model/position", json!({"kind": "relative", "buckets": 4096}), "model.position.buckets = 4096: must be an even number in 4..=1024"),
        ("/model/position", json!({"kind": "relative", "buckets": 32, "max_distance": 1u64 << 40}), "model.position.max_distance = 1099511627776: must be at most 1048576"),
        ("/model/ffn/mult", json!(1u64 << 40), "model.ffn.mult = 1099511627776: must be at most 64"),
        ("/model/ffn/hidden", json!(1u64 << 40), "model.ffn.hidden = 1099511627776: must be at most 65536"),
        ("/model/position", json!({"kind": "relative", "buckets": 32, "max_distance": 8}), "model.position.max_distance = 8: must exceed buckets / 4 = 8"),
        ("/model/position", json!({"kind": "rope", "theta": 0.5}), "model.position.theta = 0.5: must be a number > 1"),
        ("/model/position", json!({"kind": "wavelet"}), "unknown variant `wavelet`"),
        ("/model/arch", json!("rnn"), "unknown variant `rnn`"),
        ("/model/ffn/activation", json!("tanh"), "unknown variant `tanh`"),
        ("/model/norm/placement", json!("middle"), "unknown variant `middle`"),
        ("/model/norm/kind", json!("batchnorm"), "unknown variant `batchnorm`"),
        ("/model/attention/scale", json!("sqrt"), "unknown variant `sqrt`"),
        ("/model/norm", json!({"kind": "layernorm", "placement": "pre", "alpha": 2.0}), "alpha and beta apply only to placement \"deepnorm\""),
        ("/model/norm", json!({"kind": "layernorm", "placement": "deepnorm", "beta": -1.0}), "model.norm.beta = -1: must be a positive number"),
        ("/model/norm/eps", json!(0.0), "model.norm.eps = 0: must be positive"),
        ("/model/ffn/mult", json!(0), "model.ffn.mult = 0: must be at least 1"),
        ("/model/d_model", json!(65536), "model.d_model = 65536: must be at most 8192"),
        ("/model/n_layers", json!(1000), "model.n_layers = 1000: must be at most 64"),
        ("/train/batch_size", json!(0), "train.batch_size = 0: must be at least 1"),
        ("/train/lr", json!(-1.0), "train.lr = -1: must be a number in (0, 10]"),
        ("/train/lr", json!(0.0), "train.lr = 0: must be a number in (0, 10]"),
        ("/train/betas", json!([0.9, 1.0]), "train.betas[1] = 1: must be in [0, 1)"),
        ("/train/grad_clip", json!(-1.0), "train.grad_clip = -1: must be >= 0"),
        ("/train/weight_decay", json!(-0.1), "train.weight_decay = -0.1: must be >= 0"),
        ("/train", json!({"batch_size": 4, "steps": 10, "lr": 0.001, "min_lr": 0.01}), "train.min_lr = 0.01: must be in [0, train.lr]"),
        ("/train", json!({"batch_size": 4, "steps": 10, "lr": 0.001, "momentum": 0.9}), "unknown field `momentum`"),
        ("/seed", json!("abc"), "invalid type: string \"abc\""),
    ];
    let mut messages = std::collections::BTreeSet::new();
    for (path, value, want) in &cases {
        let mut json = patched(path, value.clone());
        // d_model 32 / 4 heads = head size 8 (even) — make rope and sinusoidal fail through an odd size instead.
        if want.is_empty() {
            json = json.replace("\"d_model\":32", "\"d_model\":36").replace("\"n_heads\":4", "\"n_heads\":12").replace("\"n_kv_heads\":4", "\"n_kv_heads\":12");
            if value["kind"] == "sinusoidal" {
                json = json.replace("\"d_model\":36", "\"d_model\":33").replace("\"n_heads\":12", "\"n_heads\":3").replace("\"n_kv_heads\":12", "\"n_kv_heads\":3");
            }
        }
        let err = Config::from_json(&json).expect_err(&format!("{path} = {value} should be refused"));
        let msg = err.to_string();
        let want = match *want {
            "" if value["kind"] == "rope" => "model.position.kind = rope: needs an even head size; d_model / n_heads = 3",
            "" => "model.position.kind = sinusoidal: needs an even d_model, got 33",
            w => w,
        };
        assert!(msg.contains(want), "{path} = {value}:\n  got  {msg}\n  want …{want}…");
        messages.insert(msg);
    }
    assert_eq!(messages.len(), cases.len(), "each case has its own message");
}

#[test]
fn a_model_over_the_parameter_limit_with_its_corpus_vocabulary_is_refused_naming_the_field() {
    // One layer of width 3840 holds about 88.5 M parameters; a corpus of 4000 distinct characters adds a token
    // embedding of 4000 · 3840 = 15.4 M, over the 100 M limit; a vocabulary of 256 would keep it under.
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    v["model"]["d_model"] = 3840.into();
    v["model"]["n_layers"] = 1.into();
    v["model"]["ffn"]["mult"] = 1.into();
    let cfg = Config::from_json(&v.to_string()).expect("the size is not checked without a vocabulary");
    Layout::check_size(&cfg.model, 256).expect("under the limit with 256 tokens");
    let text: String = (0x100..).filter_map(char::from_u32).take(4000).collect::<String>().repeat(2);
    let err = Run::new(cfg, Some(&text), BackendKind::Cpu).err().expect("refused");
    let Error::Config { field, value, rule } = &err else { panic!("{err}") };
    assert_eq!(field, "model");
    assert!(value.ends_with(" parameters"), "{err}");
    assert!(value.trim_end_matches(" parameters").parse::<usize>().unwrap() > 100_000_000, "{err}");
    assert!(rule.contains("must have at most 100000000 parameters; with a vocabulary of 4000 tokens"), "{err}");
}

#[test]
fn tasks_and_architectures_must_fit_together() {
    let enc_on_text = patched("/model/arch", serde_json::json!("encoder_decoder"));
    assert!(Config::from_json(&enc_on_text).unwrap_err().to_string().contains("data.task = text: encoder_decoder trains on a synthetic task"));
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    v["data"] = serde_json::json!({"task": "reverse", "digits": 8});
    assert!(Config::from_json(&v.to_string()).unwrap_err().to_string().contains("data.task = reverse: gpt and bert train on text"));
    v["model"]["arch"] = serde_json::json!("encoder_decoder");
    v["data"] = serde_json::json!({"task": "add", "digits": 9});
    let e = Config::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(e.contains("data.digits = 9: the task needs sequences of 19 tokens, more than model.ctx_len = 16"), "{e}");
}

#[test]
fn bad_text_is_refused_before_training() {
    let cfg = Config::from_json(BASE).unwrap();
    let err = |text: &str| Run::new(cfg.clone(), Some(text), BackendKind::Cpu).err().expect("refused").to_string();
    assert!(err("").contains("the text is empty"));
    assert!(err("short text").contains("the text is too short: 10 characters"));
    assert!(err(&"ab\u{1}\u{2}\u{3}".repeat(100)).contains("looks like a binary file"));
    let no_text = Run::new(cfg.clone(), None, BackendKind::Cpu).err().unwrap().to_string();
    assert!(no_text.contains("no text was given"));
    let many: String = (0..5000u32).filter_map(char::from_u32).filter(|c| !c.is_control()).collect::<String>().repeat(2);
    assert!(err(&many).contains("distinct characters"));
}

#[test]
fn the_text_check_refuses_what_making_a_run_refuses_for_the_same_reason() {
    use transformer_playground::data::{text_stats, TextStats, MAX_CHARS};
    use transformer_playground::error::DataIssue;
    let cfg = Config::from_json(BASE).unwrap();
    let many: String = (0..5000u32).filter_map(char::from_u32).filter(|c| !c.is_control()).collect();
    let cases: Vec<(String, DataIssue)> = vec![
        (String::new(), DataIssue::Empty),
        (" \n\t ".repeat(50), DataIssue::Empty),
        ("ab\u{1}\u{2}\u{3}".repeat(100), DataIssue::ControlCharacters),
        (many.clone(), DataIssue::TooManyCharacters { distinct: many.chars().count(), limit: MAX_CHARS }),
    ];
    for (text, issue) in cases {
        let checked = text_stats(text.as_bytes()).unwrap_err();
        let made = Run::new(cfg.clone(), Some(&text), BackendKind::Cpu).err().expect("refused");
        assert_eq!(checked, Error::Data(issue.clone()), "{text:?}");
        assert_eq!(made, checked, "{text:?}");
    }
    let not_utf8 = text_stats(&[b'a', b'b', 0xff, 0xfe]).unwrap_err();
    assert_eq!(not_utf8, Error::Data(DataIssue::NotUtf8 { at: 2 }));
    assert_eq!(text_stats("héllo\n".as_bytes()).unwrap(), TextStats { bytes: 7, chars: 6, distinct: 5 });
}

/// BASE, changed so that `field` applies (RoPE for theta, an encoder-decoder for its layer counts and digits, …).
fn base_for(field: &str) -> serde_json::Value {
    use serde_json::json;
    let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
    match field {
        "model.position.theta" => v["model"]["position"] = json!({"kind": "rope"}),
        "model.position.buckets" | "model.position.max_distance" => v["model"]["position"] = json!({"kind": "relative"}),
        "model.norm.alpha" | "model.norm.beta" => v["model"]["norm"]["placement"] = json!("deepnorm"),
        "model.n_encoder_layers" | "model.n_decoder_layers" | "data.digits" => {
            v["model"]["arch"] = json!("encoder_decoder");
            v["data"] = json!({"task": "reverse", "digits": 4});
        }
        f if f.starts_with("train.betas") => v["train"]["betas"] = json!([0.9, 0.99]),
        f if f.starts_with("model.ffn.moe.") => v["model"]["ffn"]["moe"] = json!({"experts": 4, "top_k": 2}),
        _ => {}
    }
    v
}

/// `v` with the field named as the core names it ("train.betas[1]") set to `x`.
fn with_field(mut v: serde_json::Value, field: &str, x: serde_json::Value) -> String {
    let mut at = &mut v;
    for key in field.replace('[', ".").replace(']', "").split('.') {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[key],
        };
    }
    *at = x;
    v.to_string()
}

#[test]
fn every_exported_bound_is_enforced_with_an_error_naming_its_field() {
    use serde_json::json;
    use transformer_playground::config::bounds;
    const REAL: &[&str] = &[
        "model.norm.eps", "model.norm.alpha", "model.norm.beta", "model.position.theta", "model.dropout",
        "model.init_std", "train.lr", "train.min_lr", "train.betas[0]", "train.betas[1]", "train.eps",
        "train.weight_decay", "train.grad_clip",
    ];
    let mut checked = 0;
    for (field, b) in bounds() {
        let real = REAL.contains(&field);
        // Just outside each end: one step past an inclusive end, the end itself where it is exclusive.
        let past = if real { 1e-3 } else { 1.0 };
        let mut outside: Vec<f64> = vec![];
        outside.extend(b.minimum.map(|m| m - past));
        outside.extend(b.exclusive_minimum);
        outside.extend(b.maximum.map(|m| m + past));
        outside.extend(b.exclusive_maximum);
        assert!(!outside.is_empty(), "{field}: a bound with no end");
        for x in outside {
            let value = if real { json!(x) } else { json!(x as i64) };
            let json = with_field(base_for(field), field, value.clone());
            match Config::from_json(&json) {
                Err(Error::Config { field: named, .. }) => assert_eq!(named, field, "{field} = {value}"),
                // Below 0 for an unsigned field: the JSON type refuses it.
                Err(Error::ConfigParse(msg)) if x < 0.0 && !real => assert!(msg.contains("invalid value"), "{msg}"),
                other => panic!("{field} = {value} should be refused naming {field}, got {other:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} ends checked");
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_state() {
    let cfg = Config::from_json(BASE).unwrap();
    let text = "All the world's a stage, and all the men and women merely players. ".repeat(40);
    let mut run = Run::new(cfg, Some(&text), BackendKind::Cpu).unwrap();
    for _ in 0..3 {
        run.step().unwrap();
    }
    // Blow up the token embedding (as a run with a far too high learning rate would): the logits overflow.
    let wte = run.model.layout.wte;
    wte.of_mut(&mut run.model.params).iter_mut().for_each(|x| *x = x.signum() * f32::MAX);
    let last_good = (run.model.params.clone(), run.opt.m.clone(), run.step);
    match run.step() {
        Ok(r) => panic!("a step with overflowing logits must be refused, got loss {}", r.loss),
        Err(e) => {
            assert!(matches!(e, Error::Diverged { .. }), "{e}");
            assert!(e.to_string().contains("the last good state is kept"));
            assert_eq!(run.step, last_good.2, "the failed step is not counted");
            assert_eq!(run.model.params, last_good.0, "parameters untouched by the failed step");
            assert_eq!(run.opt.m, last_good.1, "optimizer state untouched");
        }
    }
}
