//! The model against PyTorch: for every fixture written by tests/fixtures/make_fixtures.py (14 configs that together
//! cover every option value, Mixture-of-Experts FFNs and recurrent positions included), load PyTorch's parameters
//! and batch, then compare logits, loss, every gradient, and
//! 5 AdamW steps (loss, grad norm, lr, every parameter after) — on every backend. The fine-tuning objective's
//! fixture (`gpt_classifier`: a classifier head, L_task + λ·L_LM) is checked in tests/finetune.rs.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use transformer_playground::backend::{Host, Reference};
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::config::{Config, Position};
use transformer_playground::model::{Batch, Model};
use transformer_playground::train::{train_step, OptState};

const FIXTURES: [&str; 14] = [
    "gpt_nano",
    "gpt_llama",
    "gpt_original",
    "gpt_sandwich_alibi",
    "gpt_none_swish",
    "bert_deepnorm",
    "t5_mini",
    "encdec_deepnorm",
    "encdec_post_learned",
    "gpt_moe_top2",
    "gpt_moe_top1_capacity",
    "encdec_moe_capacity",
    "gpt_recurrent",
    "encdec_recurrent",
];

struct Fixture {
    cfg: Config,
    vocab: usize,
    f32s: BTreeMap<String, Vec<f32>>,
    i32s: BTreeMap<String, (Vec<i32>, Vec<usize>)>,
}

fn load(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("fixture metadata");
    let cfg = Config::from_json(&meta["config"]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vocab: usize = meta["vocab_size"].parse().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut f32s, mut i32s) = (BTreeMap::new(), BTreeMap::new());
    for (n, t) in st.tensors() {
        match t.dtype() {
            Dtype::F32 => {
                f32s.insert(n.clone(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect());
            }
            Dtype::I32 => {
                let v = t.data().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect();
                i32s.insert(n.clone(), (v, t.shape().to_vec()));
            }
            d => panic!("{name}: unexpected dtype {d:?} for {n}"),
        }
    }
    Fixture { cfg, vocab, f32s, i32s }
}

fn model_from(fx: &Fixture, prefix: &str) -> Model {
    let mut m = Model::new(&fx.cfg.model, fx.vocab, 0);
    m.params.fill(0.0);
    let names: Vec<String> = fx.f32s.keys().filter_map(|k| k.strip_prefix("param.")).map(String::from).collect();
    assert_eq!(names.len(), m.layout.tensors.len(), "tensor count: fixture {names:?}");
    for t in &m.layout.tensors {
        let src = fx.f32s.get(&format!("{prefix}{}", t.name)).unwrap_or_else(|| panic!("fixture lacks {prefix}{}", t.name));
        assert_eq!(src.len(), t.view.len, "{}: size", t.name);
        t.view.of_mut(&mut m.params).copy_from_slice(src);
    }
    m
}

fn batch_from(fx: &Fixture) -> Batch {
    let (targets, shape) = fx.i32s["input.targets"].clone();
    let ids = |k: &str| fx.i32s[k].0.iter().map(|&x| x as u32).collect::<Vec<u32>>();
    let (b, t) = (shape[0], shape[1]);
    match fx.i32s.get("input.src") {
        Some((_, s)) => Batch { b, t, idx: ids("input.dec"), targets, s: s[1], src: ids("input.src") },
        None => Batch { b, t, idx: ids("input.idx"), targets, s: 0, src: vec![] },
    }
}

/// Max of |got − want| / (atol + rtol·|want|) must be ≤ 1.
fn check(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32, worst: &mut f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let r = (g - w).abs() / (atol + rtol * w.abs());
        assert!(r <= 1.0 && g.is_finite(), "{what}[{i}]: got {g}, PyTorch {w} (atol {atol}, rtol {rtol})");
        *worst = worst.max(r);
    }
}

/// Rows whose gradient is mathematically zero (a bias on keys shifts every score of a softmax row equally), so
/// that AdamW amplifies rounding noise into their updates: checked loosely after training (see make_fixtures.py).
fn noisy_rows(fx: &Fixture, name: &str) -> Option<std::ops::Range<usize>> {
    let m = &fx.cfg.model;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    if name.ends_with("attn.qkv.bias") && !matches!(m.position, Position::Rope { .. }) {
        return Some(nh * hs..(nh + nkv) * hs);
    }
    if name.ends_with("cross.kv.bias") {
        return Some(0..nkv * hs);
    }
    None
}

fn run_fixture(name: &str, be: &impl Host) {
    let fx = load(name);
    let batch = batch_from(&fx);
    let mut model = model_from(&fx, "param.");
    let mut worst = [0.0f32; 4];

    let fwd = model.forward(be, &batch, None);
    check(&format!("{name}/logits"), &fwd.logits, &fx.f32s["out.logits"], 1e-4, 1e-4, &mut worst[0]);
    check(&format!("{name}/loss"), &[fwd.loss], &fx.f32s["out.loss"], 1e-5, 1e-5, &mut worst[0]);
    // Mixture-of-Experts: the weighted balancing loss added to the objective (the gradients below are the objective's).
    if let Some(want) = fx.f32s.get("out.aux_loss") {
        let coef = fx.cfg.model.ffn.moe.as_ref().expect("an MoE fixture").aux_loss;
        let aux: f32 = fwd.moe_stats().iter().map(|s| coef * s[0]).sum();
        check(&format!("{name}/aux_loss"), &[aux], want, 1e-6, 1e-4, &mut worst[0]);
    }

    let mut grads = vec![0.0; model.params.len()];
    model.backward(be, &fwd, &batch, &mut grads);
    for t in &model.layout.tensors {
        check(&format!("{name}/grad.{}", t.name), t.view.of(&grads), &fx.f32s[&format!("grad.{}", t.name)], 2e-5, 1e-3, &mut worst[1]);
    }

    let mut opt = OptState::new(model.params.len());
    for step in 0..5 {
        let r = train_step(be, &mut model, &mut opt, &fx.cfg.train, &batch, step, None).unwrap();
        let at = |k: &str| fx.f32s[k][step];
        check(&format!("{name}/train.loss[{step}]"), &[r.loss], &[at("train.loss")], 1e-5, 1e-4, &mut worst[2]);
        check(&format!("{name}/train.grad_norm[{step}]"), &[r.grad_norm], &[at("train.grad_norm")], 1e-5, 1e-4, &mut worst[2]);
        check(&format!("{name}/train.lr[{step}]"), &[r.lr], &[at("train.lr")], 1e-9, 1e-6, &mut worst[2]);
    }
    for t in &model.layout.tensors {
        let (got, want) = (t.view.of(&model.params), &fx.f32s[&format!("final.{}", t.name)]);
        let what = format!("{name}/final.{}", t.name);
        match noisy_rows(&fx, &t.name) {
            Some(rows) => {
                let strict: Vec<usize> = (0..got.len()).filter(|i| !rows.contains(i)).collect();
                let pick = |v: &[f32]| strict.iter().map(|&i| v[i]).collect::<Vec<f32>>();
                check(&what, &pick(got), &pick(want), 2e-5, 1e-3, &mut worst[3]);
                check(&format!("{what} (zero-gradient key-bias rows)"), &got[rows.clone()], &want[rows], 5e-3, 0.0, &mut 0.0);
            }
            None => check(&what, got, want, 2e-5, 1e-3, &mut worst[3]),
        }
    }
    eprintln!("{name} on {}: worst error/tolerance — forward {:.3}, grads {:.3}, steps {:.3}, final params {:.3}", be.name(), worst[0], worst[1], worst[2], worst[3]);
}

#[test]
fn every_fixture_matches_pytorch_on_the_reference_backend() {
    for name in FIXTURES {
        run_fixture(name, &Reference);
    }
}

#[test]
fn every_fixture_matches_pytorch_on_the_cpu_backend() {
    for name in FIXTURES {
        run_fixture(name, &Cpu);
    }
}

#[test]
fn fixtures_cover_every_option_value() {
    use std::collections::BTreeSet;
    let mut seen = BTreeSet::new();
    for name in FIXTURES {
        let m = load(name).cfg.model;
        let kv = if m.n_kv_heads == m.n_heads { "mha" } else if m.n_kv_heads == 1 { "mqa" } else { "gqa" };
        for s in [
            format!("arch={:?}", m.arch),
            format!("norm={:?}", m.norm.kind),
            format!("placement={:?}", m.norm.placement),
            format!("position={}", serde_json::to_value(&m.position).unwrap()["kind"]),
            format!("act={:?}", m.ffn.activation),
            format!("scale={:?}", m.attention.scale),
            format!("heads={kv}"),
            format!("bias={}", m.bias),
            format!("tied={}", m.tie_embeddings),
        ] {
            seen.insert(s);
        }
    }
    assert_eq!(seen.len(), 3 + 2 + 4 + 7 + 6 + 2 + 3 + 2 + 2, "covered: {seen:?}");
}

/// The MoE fixtures exercise what they are named for: top-1 and top-2, plain and gated experts, and a capacity
/// that really drops assignments in the batch.
#[test]
fn moe_fixtures_cover_top1_top2_gated_and_dropping() {
    let mut seen = std::collections::BTreeSet::new();
    for name in FIXTURES {
        let fx = load(name);
        let Some(moe) = fx.cfg.model.ffn.moe.clone() else { continue };
        let model = model_from(&fx, "param.");
        let fwd = model.forward(&Reference, &batch_from(&fx), None);
        let dropped: f32 = fwd.moe_stats().iter().map(|s| s[1]).sum();
        assert_eq!(dropped > 0.0, moe.capacity_factor.is_some(), "{name}: a capacity drops assignments here, none drop without one");
        seen.insert(format!("top{}", moe.top_k));
        seen.insert(format!("gated={}", fx.cfg.model.ffn.activation.is_gated()));
        seen.insert(format!("capacity={}", moe.capacity_factor.is_some()));
    }
    assert_eq!(seen.len(), 6, "covered: {seen:?}");
}
