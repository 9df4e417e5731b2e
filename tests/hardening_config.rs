//! Issue 20, config findings: values that `validate()` used to accept and that then hung the run (eval_iters),
//! overflowed the schedule (warmup), destroyed the weights (weight_decay) or meant nothing (eps, alpha, beta,
//! grad_clip, steps). Each is refused naming the field, the value and the range; each range is exported by
//! `config::bounds()`; and every shipped config stays valid.

use serde_json::{json, Value};
use transformer_playground::config::{bounds, Bound};
use transformer_playground::{Config, Error};

const BASE: &str = r#"{ "model": { "arch": "gpt", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 16,
  "ffn": { "activation": "gelu", "mult": 4 }, "norm": { "kind": "layernorm", "placement": "deepnorm" },
  "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
  "train": { "batch_size": 4, "steps": 10, "lr": 0.001 }, "seed": 1 }"#;

/// BASE with `section.key` (and any further pairs) set.
fn with(pairs: &[(&str, &str, Value)]) -> String {
    let mut v: Value = serde_json::from_str(BASE).unwrap();
    for (section, key, x) in pairs {
        match section.split_once('.') {
            Some((a, b)) => v[a][b][key] = x.clone(),
            None => v[section][key] = x.clone(),
        }
    }
    v.to_string()
}

/// The config error for `json`, as (field, value, rule); panics when the config is accepted.
fn refused(json: &str) -> (String, String, String) {
    match Config::from_json(json) {
        Err(Error::Config { field, value, rule }) => (field, value, rule),
        other => panic!("should be refused with a config error, got {other:?}\n{json}"),
    }
}

fn bound(field: &str) -> Bound {
    bounds().into_iter().find(|(f, _)| *f == field).unwrap_or_else(|| panic!("{field} not exported")).1
}

#[test]
fn a_billion_eval_iters_is_refused_naming_the_field_value_and_range() {
    let (field, value, rule) = refused(&with(&[("train", "eval_iters", json!(1_000_000_000u64))]));
    assert_eq!((field.as_str(), value.as_str()), ("train.eval_iters", "1000000000"));
    assert!(rule.contains("1..=10000"), "{rule}");
    Config::from_json(&with(&[("train", "eval_iters", json!(10_000))])).expect("the maximum is allowed");
    assert_eq!(bound("train.eval_iters").maximum, Some(10_000.0));
}

#[test]
fn a_warmup_that_overflows_the_schedule_is_refused_and_every_allowed_one_gives_a_finite_lr() {
    let (field, value, rule) = refused(&with(&[("train", "warmup", json!(u64::MAX))]));
    assert_eq!((field.as_str(), value.as_str()), ("train.warmup", "18446744073709551615"));
    assert!(rule.contains("0..=10000000"), "{rule}");
    assert_eq!(bound("train.warmup").maximum, Some(10_000_000.0));
    // The largest warmup, longer than the run (allowed: the run ends before lr reaches train.lr), keeps lr finite.
    let cfg = Config::from_json(&with(&[("train", "warmup", json!(10_000_000))])).expect("the maximum is allowed");
    for it in [0, 1, 9, 9_999_999, 10_000_000, 20_000_000] {
        let lr = transformer_playground::train::lr_at(&cfg.train, it);
        assert!(lr.is_finite() && lr >= cfg.train.min_lr && lr <= cfg.train.lr, "lr_at({it}) = {lr}");
    }
}

#[test]
fn steps_past_ten_million_are_refused_naming_the_field_value_and_range() {
    let (field, value, rule) = refused(&with(&[("train", "steps", json!(u64::MAX))]));
    assert_eq!((field.as_str(), value.as_str()), ("train.steps", "18446744073709551615"));
    assert!(rule.contains("1..=10000000"), "{rule}");
    assert_eq!(bound("train.steps").maximum, Some(10_000_000.0));
    Config::from_json(&with(&[("train", "steps", json!(10_000_000))])).expect("the maximum is allowed");
}

#[test]
fn a_huge_weight_decay_is_refused_naming_the_field_value_and_range() {
    let (field, value, rule) = refused(&with(&[("train", "weight_decay", json!(1e19))]));
    assert_eq!(field, "train.weight_decay");
    assert_eq!(value, 1e19f32.to_string());
    assert!(rule.contains("[0, 10]"), "{rule}");
    assert_eq!(bound("train.weight_decay").maximum, Some(10.0));
    Config::from_json(&with(&[("train", "weight_decay", json!(10.0))])).expect("10 with lr 1e-3 is allowed");
}

#[test]
fn a_weight_decay_whose_product_with_lr_reaches_one_is_refused_because_the_decay_overshoots_zero() {
    // p ← p(1 − lr·wd): at lr·wd = 1 every decayed weight is zeroed each step, past it flips sign.
    let (field, value, rule) = refused(&with(&[("train", "lr", json!(0.5)), ("train", "weight_decay", json!(2.0))]));
    assert_eq!((field.as_str(), value.as_str()), ("train.weight_decay", "2"));
    assert!(rule.contains("train.lr") && rule.contains("< 1"), "{rule}");
    let (field, ..) = refused(&with(&[("train", "lr", json!(10.0)), ("train", "weight_decay", json!(0.5))]));
    assert_eq!(field, "train.weight_decay");
    Config::from_json(&with(&[("train", "lr", json!(0.5)), ("train", "weight_decay", json!(1.5))])).expect("0.75 < 1");
}

#[test]
fn a_norm_eps_past_a_tenth_is_refused_naming_the_field_value_and_range() {
    let (field, value, rule) = refused(&with(&[("model.norm", "eps", json!(1e38))]));
    assert_eq!(field, "model.norm.eps");
    assert_eq!(value, 1e38f32.to_string());
    assert!(rule.contains("(0, 0.1]"), "{rule}");
    assert_eq!(bound("model.norm.eps").maximum, Some(0.1));
    Config::from_json(&with(&[("model.norm", "eps", json!(0.1))])).expect("0.1 is allowed");
}

#[test]
fn deepnorm_alpha_and_beta_outside_a_thousandth_to_a_thousand_are_refused() {
    for key in ["alpha", "beta"] {
        for x in [1e-30, 1e30, 9e-4, 1001.0] {
            let (field, value, rule) = refused(&with(&[("model.norm", key, json!(x))]));
            assert_eq!(field, format!("model.norm.{key}"));
            assert_eq!(value, (x as f32).to_string());
            assert!(rule.contains("[0.001, 1000]"), "{rule}");
        }
        for x in [1e-3, 1.0, 1e3] {
            Config::from_json(&with(&[("model.norm", key, json!(x))])).unwrap_or_else(|e| panic!("{key} = {x}: {e}"));
        }
        let b = bound(&format!("model.norm.{key}"));
        assert_eq!((b.minimum, b.maximum), (Some(1e-3), Some(1e3)));
    }
}

#[test]
fn a_grad_clip_past_a_thousand_is_refused_naming_the_field_value_and_range() {
    let (field, value, rule) = refused(&with(&[("train", "grad_clip", json!(1.8e19))]));
    assert_eq!(field, "train.grad_clip");
    assert_eq!(value, 1.8e19f32.to_string());
    assert!(rule.contains("[0, 1000]"), "{rule}");
    assert_eq!(bound("train.grad_clip").maximum, Some(1e3));
    Config::from_json(&with(&[("train", "grad_clip", json!(1e3))])).expect("1000 is allowed");
}

#[test]
fn every_shipped_config_is_still_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            Config::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "{n} configs");
}

// ---------------------------------------------------------------------------------------------------------------
// Memory: a config whose training step cannot fit is refused before anything is allocated.

const GIB: f64 = (1u64 << 30) as f64;

#[test]
fn a_batch_too_large_for_memory_is_refused_naming_the_batch_before_anything_is_allocated() {
    // batch_size 4096 × ctx_len 8192 at d_model 32 used to pass validation and abort in the allocator.
    let json = with(&[("model", "ctx_len", json!(8192)), ("train", "batch_size", json!(4096))]);
    let c = Config::from_json(&json).unwrap();
    let need = transformer_playground::model::Layout::step_memory_bytes(&c.model, 65, 4096, 8192);
    assert!(need > 100.0 * GIB, "{need}");
    let text = "To be, or not to be, that is the question. ".repeat(5000);
    let err = transformer_playground::train::Run::new(c, Some(&text), transformer_playground::backend::BackendKind::Cpu)
        .err()
        .expect("refused");
    let Error::Config { field, value, rule } = &err else { panic!("{err}") };
    assert_eq!(field, "train.batch_size");
    assert_eq!(value, "4096 × 8192 tokens");
    assert!(rule.contains("over the memory budget") && rule.contains("lower train.batch_size or model.ctx_len"), "{rule}");
}

#[test]
fn the_memory_check_names_the_batch_or_the_model_by_what_dominates_and_passes_what_fits() {
    use transformer_playground::model::Layout;
    let small = Config::from_json(BASE).unwrap().model;
    Layout::check_memory(&small, 65, 12, 2.0 * GIB).unwrap();
    let err = Layout::check_memory(&small, 65, 4096, 1e6).unwrap_err();
    assert!(matches!(&err, Error::Config { field, .. } if field == "train.batch_size"), "{err}");
    // A wide model with a batch of one: its parameters and their optimizer state are most of the step.
    let wide = Config::from_json(&with(&[("model", "d_model", json!(2048)), ("model", "n_heads", json!(16)), ("model", "n_kv_heads", json!(16))])).unwrap().model;
    let err = Layout::check_memory(&wide, 65, 1, 0.5 * GIB).unwrap_err();
    assert!(matches!(&err, Error::Config { field, .. } if field == "model"), "{err}");
    // The shape flow shows the same estimate the check uses.
    let flow = transformer_playground::probe::shape_flow(&small, 65, 12, small.ctx_len);
    assert_eq!(flow.memory_bytes, Layout::step_memory_bytes(&small, 65, 12, small.ctx_len));
}

/// configs/baby-gpt.json, nanoGPT's `config/train_shakespeare_char.py` (issue 21): what it holds, on each backend.
#[test]
fn the_baby_gpt_is_valid_nanogpts_shakespeare_char_config_and_too_large_for_a_tab_only_on_the_cpu() {
    use transformer_playground::backend::BackendKind;
    use transformer_playground::model::Layout;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/baby-gpt.json")).unwrap();
    let c = Config::from_json(&text).unwrap();
    c.validate().unwrap();
    let (m, t) = (&c.model, &c.train);
    assert_eq!((m.n_layers, m.n_heads, m.d_model, m.ctx_len, t.batch_size, t.steps, t.warmup), (6, 6, 384, 256, 64, 5000, 100));
    assert_eq!((m.dropout, m.bias, m.tie_embeddings, t.lr, t.min_lr, t.betas, t.weight_decay, t.grad_clip), (0.2, false, true, 1e-3, 1e-4, [0.9, 0.99], 0.1, 1.0));
    // 65 characters: per layer 12·C² weights and two norms' C, the tied embedding, wpe, ln_f. nanoGPT reports
    // "10.65M", its count without wpe.
    let n = Layout::new(m, 65).n_params;
    assert_eq!(n, 6 * (12 * 384 * 384 + 2 * 384) + 65 * 384 + 256 * 384 + 384);
    assert_eq!(n - 256 * 384, 10_646_784);
    let (host, gpu) = (Layout::held_memory_bytes(m, 65, 64, 256, BackendKind::Cpu), Layout::held_memory_bytes(m, 65, 64, 256, BackendKind::Gpu));
    eprintln!("baby GPT: {n} parameters; held in this memory: {:.3} GiB on the cpu, {:.3} GiB on the gpu", host / GIB, gpu / GIB);
    assert_eq!(host, Layout::step_memory_bytes(m, 65, 64, 256));
    // A tab's 2 GiB: refused on the cpu naming the batch (activations are most of it), accepted for the gpu.
    let err = Layout::check_memory_on(m, 65, 64, 2.0 * GIB, BackendKind::Cpu).unwrap_err();
    let Error::Config { field, value, rule } = &err else { panic!("{err}") };
    assert_eq!((field.as_str(), value.as_str()), ("train.batch_size", "64 × 256 tokens"));
    assert!(rule.contains("a training step would hold about 2.") && rule.contains("over the memory budget of 2.00 GiB"), "{rule}");
    Layout::check_memory_on(m, 65, 64, 2.0 * GIB, BackendKind::Gpu).unwrap();
    assert!(gpu < 0.5 * GIB && host > 2.0 * GIB, "{gpu} {host}");
    // The gpu's rule names what it counts, and the model when the parameters' copies are most of it.
    let err = Layout::check_memory_on(m, 65, 64, 0.1 * GIB, BackendKind::Gpu).unwrap_err();
    let Error::Config { field, rule, .. } = &err else { panic!("{err}") };
    assert_eq!(field, "model");
    assert!(rule.contains("a run on the gpu would hold here about 0.2") && rule.contains("host copies of the parameters"), "{rule}");
}

/// A run made for the gpu is checked for what it holds on the host; a host step of it (before a device is attached,
/// or after one fails) is refused naming the field, and the run stays as it was.
#[test]
fn a_run_made_for_the_gpu_refuses_a_host_step_the_budget_cannot_hold() {
    use transformer_playground::backend::BackendKind;
    use transformer_playground::train::Run;
    // 4096 × 8192 tokens of a tiny model: over a terabyte-sized budget's reach on the host, 0.3 GiB here on the gpu.
    let c = Config::from_json(&with(&[("model", "ctx_len", json!(8192)), ("train", "batch_size", json!(4096))])).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt")).unwrap();
    let data = transformer_playground::data::Dataset::new(&c, Some(&text)).unwrap();
    let mut r = Run::unattached(c, data, BackendKind::Gpu).expect("what a gpu run holds here fits");
    let err = r.step().unwrap_err();
    let Error::Config { field, value, rule } = &err else { panic!("{err}") };
    assert_eq!((field.as_str(), value.as_str()), ("train.batch_size", "4096 × 8192 tokens"));
    assert!(rule.contains("a training step would hold about") && rule.contains("lower train.batch_size"), "{rule}");
    assert_eq!(r.step, 0);
    assert!(r.trace().is_err(), "the step-through runs a host step too");
}

#[test]
fn the_native_memory_budget_is_half_the_machines_memory_unless_overridden() {
    let b = transformer_playground::train::memory_budget();
    match std::env::var("TP_MEMORY_BUDGET_GIB").ok().and_then(|v| v.parse::<f64>().ok()) {
        Some(g) => assert_eq!(b, g * GIB),
        None => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
            let kib: f64 = meminfo.lines().find(|l| l.starts_with("MemTotal:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(b, kib * 1024.0 / 2.0);
        }
    }
}

/// Issue 16: every Mixture-of-Experts field is refused outside its range, naming the field, the value and the rule,
/// and the ranges are exported; an unknown MoE field is a parse error naming it.
#[test]
fn moe_fields_out_of_range_are_refused_naming_the_field_and_the_range() {
    let moe = |m: Value| with(&[("model.ffn", "moe", m)]);
    Config::from_json(&moe(json!({"experts": 8, "top_k": 2}))).expect("a valid MoE config (aux_loss defaults to 0.01)");
    let cases = [
        (json!({"experts": 1, "top_k": 1}), "model.ffn.moe.experts", "1", "2..=64"),
        (json!({"experts": 65, "top_k": 1}), "model.ffn.moe.experts", "65", "2..=64"),
        (json!({"experts": 4, "top_k": 0}), "model.ffn.moe.top_k", "0", "1..=model.ffn.moe.experts = 4"),
        (json!({"experts": 4, "top_k": 5}), "model.ffn.moe.top_k", "5", "1..=model.ffn.moe.experts = 4"),
        (json!({"experts": 4, "top_k": 2, "aux_loss": -0.5}), "model.ffn.moe.aux_loss", "-0.5", "[0, 100]"),
        (json!({"experts": 4, "top_k": 2, "aux_loss": 1e9}), "model.ffn.moe.aux_loss", "1000000000", "[0, 100]"),
        (json!({"experts": 4, "top_k": 2, "capacity_factor": 0.5}), "model.ffn.moe.capacity_factor", "0.5", "[1, 64]"),
        (json!({"experts": 4, "top_k": 2, "capacity_factor": 100.0}), "model.ffn.moe.capacity_factor", "100", "[1, 64]"),
    ];
    for (m, field, value, range) in cases {
        let (f, v, rule) = refused(&moe(m.clone()));
        assert_eq!((f.as_str(), v.as_str()), (field, value), "{m}");
        assert!(rule.contains(range), "{m}: {rule}");
    }
    assert_eq!((bound("model.ffn.moe.experts").minimum, bound("model.ffn.moe.experts").maximum), (Some(2.0), Some(64.0)));
    assert_eq!(bound("model.ffn.moe.aux_loss").maximum, Some(100.0));
    assert_eq!(bound("model.ffn.moe.capacity_factor").minimum, Some(1.0));
    let err = Config::from_json(&moe(json!({"experts": 4, "top_k": 2, "expert": 3}))).unwrap_err();
    assert!(matches!(err, Error::ConfigParse(_)) && err.to_string().contains("expert"), "{err}");
}

/// A position field the kind does not take (`theta` on recurrent, `buckets` on rope…) is refused naming it,
/// where serde's own check does not reach the kinds without fields; the fields a kind takes stay accepted.
#[test]
fn a_position_field_its_kind_does_not_take_is_refused_naming_it() {
    for (position, field) in [
        (json!({"kind": "recurrent", "theta": 10000.0}), "model.position.theta"),
        (json!({"kind": "learned", "buckets": 8}), "model.position.buckets"),
        (json!({"kind": "alibi", "theta": 1.0}), "model.position.theta"),
        (json!({"kind": "rope", "buckets": 8}), "model.position.buckets"),
        (json!({"kind": "relative", "buckets": 8, "theta": 1.0}), "model.position.theta"),
    ] {
        let e = Config::from_json(&with(&[("model", "position", position.clone())])).unwrap_err().to_string();
        assert!(e.contains(field), "{position}: {e}");
    }
    for position in [json!({"kind": "rope", "theta": 500.0}), json!({"kind": "relative", "buckets": 8, "max_distance": 12}), json!({"kind": "recurrent"})] {
        Config::from_json(&with(&[("model", "position", position.clone())])).unwrap_or_else(|e| panic!("{position}: {e}"));
    }
}

/// bert's masking rule (`data.mlm_mask`, `data.mlm_random`): each share in [0, 1], their sum at most 1; refused
/// naming the field, the value and the rule; the defaults are BERT's 0.8 and 0.1 and both ends are allowed.
#[test]
fn mlm_shares_out_of_range_are_refused_naming_the_field() {
    let data = |m: Value, r: Value| with(&[("model", "arch", json!("bert")), ("data", "mlm_mask", m), ("data", "mlm_random", r)]);
    let c = Config::from_json(&with(&[("model", "arch", json!("bert"))])).unwrap();
    assert_eq!((c.data.mlm_mask, c.data.mlm_random), (0.8, 0.1));
    for (m, r) in [(1.0, 0.0), (0.0, 1.0), (0.0, 0.0), (0.5, 0.5)] {
        Config::from_json(&data(json!(m), json!(r))).unwrap_or_else(|e| panic!("{m} {r}: {e}"));
    }
    let cases = [
        (json!(-0.1), json!(0.1), "data.mlm_mask", "-0.1", "[0, 1]"),
        (json!(1.5), json!(0.0), "data.mlm_mask", "1.5", "[0, 1]"),
        (json!(0.8), json!(-1), "data.mlm_random", "-1", "[0, 1]"),
        (json!(0.8), json!(0.3), "data.mlm_random", "0.3", "at most 1"),
    ];
    for (m, r, field, value, rule_has) in cases {
        let (f, v, rule) = refused(&data(m.clone(), r.clone()));
        assert_eq!((f.as_str(), v.as_str()), (field, value), "{m} {r}");
        assert!(rule.contains(rule_has), "{m} {r}: {rule}");
    }
    assert_eq!((bound("data.mlm_mask").minimum, bound("data.mlm_mask").maximum), (Some(0.0), Some(1.0)));
    assert_eq!((bound("data.mlm_random").minimum, bound("data.mlm_random").maximum), (Some(0.0), Some(1.0)));
}
