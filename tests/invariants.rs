//! Invariants the maths promises: GQA equals MHA with repeated KV heads, DeepNorm with α = β = 1 equals Post-LN,
//! RoPE at position 0 is the identity, incremental decoding with the KV cache equals the full forward, and the
//! same seed gives the same losses whatever the thread count. Plus: every architecture can overfit one batch.

use transformer_playground::backend::{cpu::Cpu, Backend, HeadLayout, Host, Reference};
use transformer_playground::config::{Arch, Config, Position};
use transformer_playground::model::infer::Decoder;
use transformer_playground::model::{Batch, Model};
use transformer_playground::rng::Rng;
use transformer_playground::train::{train_step, OptState};

mod positions;
use positions::every_position;

fn cfg(arch: &str) -> Config {
    let layers = if arch == "encoder_decoder" { r#""n_encoder_layers": 2, "n_decoder_layers": 2,"# } else { "" };
    let data = if arch == "encoder_decoder" { r#""data": {"task": "reverse", "digits": 4},"# } else { "" };
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 24, "n_layers": 2, {layers} "n_heads": 4, "n_kv_heads": 4, "ctx_len": 16,
             "ffn": {{ "activation": "gelu", "mult": 2 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
             "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
             "train": {{ "batch_size": 2, "steps": 100, "lr": 0.01, "warmup": 0, "schedule": "constant", "weight_decay": 0.0 }},
             {data} "seed": 1 }}"#
    );
    Config::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

/// A config with some model fields replaced, e.g. with(&c, json!({"position": {"kind": "rope"}})).
fn with(c: &Config, patch: serde_json::Value) -> Config {
    let mut v = serde_json::to_value(c).unwrap();
    for (k, x) in patch.as_object().unwrap() {
        v["model"][k] = x.clone();
    }
    let c: Config = serde_json::from_value(v).unwrap();
    c.validate().unwrap();
    c
}

fn random_batch(b: usize, t: usize, s: usize, vocab: usize, seed: u64) -> Batch {
    let mut r = Rng::new(seed);
    let mut ids = |n: usize| (0..n).map(|_| r.below(vocab) as u32).collect::<Vec<u32>>();
    let idx = ids(b * t);
    let src = ids(b * s);
    let targets = idx.iter().map(|&x| ((x as usize + 1) % vocab) as i32).collect();
    Batch { b, t, idx, targets, s, src }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn gqa_equals_mha_with_each_kv_head_repeated_for_its_group() {
    for nkv in [1, 2] {
        let base = cfg("gpt");
        let gqa_cfg = with(&base, serde_json::json!({"n_kv_heads": nkv}));
        let gqa = Model::new(&gqa_cfg.model, 11, 5);
        let mut mha = Model::new(&base.model, 11, 6);
        let (nh, hs, c) = (4, 6, 24);
        let group = nh / nkv;
        for t in &mha.layout.tensors {
            let src = gqa.layout.tensor(&t.name).unwrap();
            let from = src.view.of(&gqa.params).to_vec();
            let to = t.view.of_mut(&mut mha.params);
            if t.name.ends_with("attn.qkv.weight") || t.name.ends_with("attn.qkv.bias") {
                let row = if t.name.ends_with("weight") { c } else { 1 };
                // q rows as they are; k and v: head h of MHA = head h / group of GQA.
                to[..nh * hs * row].copy_from_slice(&from[..nh * hs * row]);
                for part in 0..2 {
                    for h in 0..nh {
                        let g = h / group;
                        let dst = (nh * hs + part * nh * hs + h * hs) * row;
                        let src = (nh * hs + part * nkv * hs + g * hs) * row;
                        to[dst..dst + hs * row].copy_from_slice(&from[src..src + hs * row]);
                    }
                }
            } else {
                to.copy_from_slice(&from);
            }
        }
        let batch = random_batch(2, 9, 0, 11, 3);
        let (a, b) = (gqa.forward(&Reference, &batch, None), mha.forward(&Reference, &batch, None));
        let d = max_diff(&a.logits, &b.logits);
        assert!(d < 1e-5, "nkv={nkv}: logits differ by {d}");
    }
}

#[test]
fn deepnorm_with_alpha_and_beta_one_equals_post_ln() {
    for arch in ["gpt", "bert", "encoder_decoder"] {
        let post = with(&cfg(arch), serde_json::json!({"norm": {"kind": "layernorm", "placement": "post"}}));
        let deep = with(&post, serde_json::json!({"norm": {"kind": "layernorm", "placement": "deepnorm", "alpha": 1.0, "beta": 1.0}}));
        let a = Model::new(&post.model, 13, 2);
        let mut b = Model::new(&deep.model, 13, 3);
        assert_eq!(a.layout.size, b.layout.size);
        b.params.copy_from_slice(&a.params);
        let batch = random_batch(2, 7, 5, 13, 4);
        let (fa, fb) = (a.forward(&Reference, &batch, None), b.forward(&Reference, &batch, None));
        assert_eq!(fa.logits, fb.logits, "{arch}");
        let (mut ga, mut gb) = (vec![0.0; a.params.len()], vec![0.0; b.params.len()]);
        a.backward(&Reference, &fa, &batch, &mut ga);
        b.backward(&Reference, &fb, &batch, &mut gb);
        assert_eq!(ga, gb, "{arch}");
        // And α ≠ 1 does change the result, so the test can tell them apart. (LayerNorm is scale-invariant, so α
        // only matters through the ratio of residual to sub-layer output: make the sub-layers' output large.)
        let deep2 = with(&post, serde_json::json!({"norm": {"kind": "layernorm", "placement": "deepnorm", "alpha": 1.5, "beta": 1.0}}));
        let mut c = Model::new(&deep2.model, 13, 3);
        c.params.copy_from_slice(&a.params);
        let mut a2 = a.clone();
        for t in a.layout.tensors.iter().filter(|t| t.name.contains("blocks.") && t.shape.len() == 2) {
            t.view.of_mut(&mut c.params).iter_mut().for_each(|x| *x *= 30.0);
            t.view.of_mut(&mut a2.params).iter_mut().for_each(|x| *x *= 30.0);
        }
        let d = max_diff(&c.forward(&Reference, &batch, None).logits, &a2.forward(&Reference, &batch, None).logits);
        assert!(d > 1e-3, "{arch}: alpha 1.5 vs post-LN differ by only {d}");
    }
}

#[test]
fn rope_at_position_zero_is_the_identity_and_rotations_keep_the_norm() {
    let mut r = Rng::new(9);
    let x: Vec<f32> = (0..3 * 8).map(|_| r.normal() as f32).collect();
    let mut y = x.clone();
    Reference.rope(&mut y, HeadLayout::heads(3, 1, 8), 1, 3, 1, 8, 0, 10000.0, false).unwrap(); // three heads of one row, at position 0
    assert_eq!(x, y);
    let mut z = x.clone();
    Reference.rope(&mut z, HeadLayout::heads(1, 3, 8), 1, 1, 3, 8, 5, 10000.0, false).unwrap();
    assert!(max_diff(&x, &z) > 1e-2);
    for (a, b) in x.chunks(8).zip(z.chunks(8)) {
        let (na, nb): (f32, f32) = (a.iter().map(|v| v * v).sum(), b.iter().map(|v| v * v).sum());
        assert!((na - nb).abs() < 1e-4);
    }
    Reference.rope(&mut z, HeadLayout::heads(1, 3, 8), 1, 1, 3, 8, 5, 10000.0, true).unwrap();
    assert!(max_diff(&x, &z) < 1e-5);
}

#[test]
fn incremental_decoding_with_the_kv_cache_equals_the_full_forward() {
    for pos in every_position() {
        for (arch, nkv, placement) in [("gpt", 2, "pre"), ("gpt", 1, "sandwich"), ("encoder_decoder", 2, "post")] {
            let c = with(
                &cfg(arch),
                serde_json::json!({"position": pos, "n_kv_heads": nkv, "norm": {"kind": "rmsnorm", "placement": placement}}),
            );
            let m = Model::new(&c.model, 12, 7);
            let (t, s) = (11, 6);
            let batch = random_batch(1, t, s, 12, 8);
            fn check<H: Host>(be: &H, m: &Model, batch: &Batch, arch: &str, what: &str) {
                let full = m.forward(be, batch, None).logits;
                let mut dec = if arch == "gpt" { Decoder::new(m, be) } else { Decoder::with_source(m, be, &batch.src) };
                // A prefill of 4 tokens, then one token at a time.
                let mut inc = dec.feed(&batch.idx[..4]);
                for i in 4..batch.t {
                    inc.extend(dec.feed(&batch.idx[i..i + 1]));
                }
                let d = max_diff(&full, &inc);
                assert!(d < 2e-5, "{what} on {}: differ by {d}", be.name());
            }
            let what = format!("{arch} {pos} nkv={nkv} {placement}");
            check(&Reference, &m, &batch, arch, &what);
            check(&Cpu, &m, &batch, arch, &what);
        }
    }
}

/// Mixture-of-Experts: decoding with the KV cache routes every token as the full forward does (no capacity); with a
/// capacity, the cache routes every token anyway (docs/MODEL.md), so it equals the full forward without one.
#[test]
fn incremental_decoding_of_a_moe_model_equals_the_full_forward_and_ignores_the_capacity() {
    for arch in ["gpt", "encoder_decoder"] {
        let moe = |cf: serde_json::Value| {
            with(
                &cfg(arch),
                serde_json::json!({"position": {"kind": "rope", "theta": 10000.0}, "ffn": {"activation": "swiglu", "mult": 2,
                    "moe": {"experts": 4, "top_k": 2, "capacity_factor": cf}}}),
            )
        };
        let (free, capped) = (moe(serde_json::Value::Null), moe(serde_json::json!(1.0)));
        let (m, mc) = (Model::new(&free.model, 12, 7), Model::new(&capped.model, 12, 7));
        assert_eq!(m.params, mc.params);
        let batch = random_batch(1, 11, 6, 12, 8);
        let full = m.forward(&Cpu, &batch, None);
        let dropped: f32 = mc.forward(&Cpu, &batch, None).moe_stats().iter().map(|s| s[1]).sum();
        assert!(dropped > 0.0, "{arch}: the capacity drops something in the full forward");
        for model in [&m, &mc] {
            let mut dec = if arch == "gpt" { Decoder::new(model, &Cpu) } else { Decoder::with_source(model, &Cpu, &batch.src) };
            let mut inc = dec.feed(&batch.idx[..4]);
            for i in 4..batch.t {
                inc.extend(dec.feed(&batch.idx[i..i + 1]));
            }
            let d = max_diff(&full.logits, &inc);
            assert!(d < 2e-5, "{arch}: cached decoding differs from the uncapped full forward by {d}");
        }
    }
}

/// The GRU's state passes from one `feed` to the next: with weights large enough that the recurrence matters
/// (init_std 0.3), a prefill then token-by-token decoding gives the full forward's logits, and the decoder's GRU state
/// after the last token is the full forward's last hidden state.
#[test]
fn decoding_with_recurrent_positions_carries_the_gru_state_between_calls() {
    for arch in ["gpt", "encoder_decoder"] {
        let c = with(&cfg(arch), serde_json::json!({"position": {"kind": "recurrent"}, "init_std": 0.3}));
        let m = Model::new(&c.model, 12, 9);
        let (t, s, cw) = (9, 5, c.model.d_model);
        let batch = random_batch(1, t, s, 12, 10);
        fn check<H: Host>(be: &H, m: &Model, batch: &Batch, arch: &str, cw: usize) {
            let fwd = m.forward(be, batch, None);
            let mut dec = if arch == "gpt" { Decoder::new(m, be) } else { Decoder::with_source(m, be, &batch.src) };
            assert!(dec.rnn_state().is_empty());
            let mut inc = dec.feed(&batch.idx[..3]);
            for i in 3..batch.t {
                inc.extend(dec.feed(&batch.idx[i..i + 1]));
            }
            let d = max_diff(&fwd.logits, &inc);
            assert!(d < 2e-5, "{arch} recurrent on {}: cached decoding differs from the full forward by {d}", be.name());
            let h = &fwd.dec.as_ref().unwrap().rnn.as_ref().expect("the decoder stack has a GRU").h;
            let last = &h[(batch.t - 1) * cw..batch.t * cw];
            assert!(last.iter().map(|x| x.abs()).fold(0.0, f32::max) > 1e-2, "{arch}: the GRU state is ~0; the test could not tell");
            let d = max_diff(last, dec.rnn_state());
            assert!(d < 1e-6, "{arch} on {}: the decoder's GRU state differs from h_(T-1) by {d}", be.name());
            dec.reset();
            assert!(dec.rnn_state().is_empty(), "reset drops the GRU state");
        }
        check(&Reference, &m, &batch, arch, cw);
        check(&Cpu, &m, &batch, arch, cw);
    }
}

fn shakespeare() -> String {
    let p = format!("{}/www/data/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(p).unwrap()[..200_000].to_string()
}

#[test]
fn same_seed_gives_the_same_losses_with_one_and_two_threads() {
    let c = Config::from_json(
        r#"{ "model": { "arch": "gpt", "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 64,
             "ffn": { "activation": "swiglu", "mult": 4 }, "norm": { "kind": "rmsnorm", "placement": "pre" },
             "position": { "kind": "rope" }, "attention": { "scale": "inv_sqrt_dk" }, "dropout": 0.1 },
             "train": { "batch_size": 8, "steps": 6, "lr": 0.003 }, "seed": 11 }"#,
    )
    .unwrap();
    let text = shakespeare();
    let losses = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut run = transformer_playground::train::Run::new(c.clone(), Some(&text), transformer_playground::backend::BackendKind::Cpu).unwrap();
            (0..6).map(|_| run.step().unwrap().loss).collect::<Vec<f32>>()
        })
    };
    let (one, two) = (losses(1), losses(2));
    assert_eq!(one, two);
    assert!(one[5] < one[0], "{one:?}");
}

#[test]
fn every_architecture_overfits_one_tiny_batch() {
    for arch in ["gpt", "bert", "encoder_decoder"] {
        let c = with(&cfg(arch), serde_json::json!({"d_model": 32}));
        let mut m = Model::new(&c.model, 10, 1);
        let mut batch = random_batch(2, 8, 6, 9, 2);
        if arch == "bert" {
            // Mask half the positions with token 9 ([MASK]); predict the originals.
            for i in 0..batch.idx.len() {
                batch.targets[i] = if i % 2 == 0 { batch.idx[i] as i32 } else { -1 };
                if i % 2 == 0 {
                    batch.idx[i] = 9;
                }
            }
        }
        let mut opt = OptState::new(m.params.len());
        let mut last = f32::NAN;
        for step in 0..300 {
            last = train_step(&Cpu, &mut m, &mut opt, &c.train, &batch, step, None).unwrap().loss;
        }
        assert!(last < 0.05, "{arch}: loss after 300 steps on one batch is {last}");
    }
}

#[test]
fn position_schemes_that_need_no_table_generalise_their_bias_with_the_cache_offset() {
    // ALiBi and relative biases depend on (query position − key position): a query fed at position 5 after a
    // prefill must see the same logits as in the full forward (covered above); here check the relative table is
    // actually used: zeroing it changes the logits.
    let c = with(&cfg("gpt"), serde_json::json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 12}}));
    let mut m = Model::new(&c.model, 12, 3);
    let batch = random_batch(1, 8, 0, 12, 1);
    let before = m.forward(&Reference, &batch, None).logits;
    let rel = m.layout.tensor("rel_bias").unwrap().view;
    rel.of_mut(&mut m.params).iter_mut().for_each(|x| *x *= 50.0);
    assert!(max_diff(&before, &m.forward(&Reference, &batch, None).logits) > 1e-3);
    assert_eq!(c.model.position, Position::Relative { buckets: 8, max_distance: 12 });
    assert_eq!(c.model.arch, Arch::Gpt);
}

#[test]
fn dropout_masks_come_from_the_seed_and_its_backward_matches_finite_differences() {
    let c = with(&cfg("gpt"), serde_json::json!({"dropout": 0.3, "d_model": 16}));
    let m = Model::new(&c.model, 9, 4);
    let batch = random_batch(2, 6, 0, 9, 5);
    let rng = Rng::new(77);
    let loss = |m: &Model| m.forward(&Reference, &batch, Some(&mut rng.clone())).loss;
    assert_eq!(loss(&m), loss(&m), "same rng, same masks");
    let plain = m.forward(&Reference, &batch, None).loss;
    assert_ne!(loss(&m), plain, "dropout changes the training loss");
    let fwd = m.forward(&Reference, &batch, Some(&mut rng.clone()));
    let mut g = vec![0.0; m.params.len()];
    m.backward(&Reference, &fwd, &batch, &mut g);
    let mut r = Rng::new(3);
    let mut checked = 0;
    for _ in 0..40 {
        let t = &m.layout.tensors[r.below(m.layout.tensors.len())];
        let i = t.view.offset + r.below(t.view.len);
        let eps = 3e-3f32;
        let (mut a, mut b) = (m.clone(), m.clone());
        a.params[i] += eps;
        b.params[i] -= eps;
        let fd = (loss(&a) as f64 - loss(&b) as f64) / (2.0 * eps as f64);
        let an = g[i] as f64;
        assert!((fd - an).abs() <= 2e-4 + 3e-2 * fd.abs(), "{}[{}]: backward {an}, finite differences {fd}", t.name, i - t.view.offset);
        checked += (fd.abs() > 1e-4) as usize;
    }
    assert!(checked > 10, "too few informative checks: {checked}");
}

#[test]
fn a_run_resumed_from_a_checkpoint_continues_with_the_same_losses() {
    let c = Config::from_json(
        r#"{ "model": { "arch": "gpt", "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 16,
             "ffn": { "activation": "gelu", "mult": 2 }, "norm": { "kind": "layernorm", "placement": "pre" },
             "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
             "train": { "batch_size": 4, "steps": 8, "lr": 0.003 }, "seed": 21 }"#,
    )
    .unwrap();
    let text = shakespeare();
    let kind = transformer_playground::backend::BackendKind::Cpu;
    let mut straight = transformer_playground::train::Run::new(c.clone(), Some(&text), kind).unwrap();
    let all: Vec<f32> = (0..8).map(|_| straight.step().unwrap().loss).collect();

    let mut first = transformer_playground::train::Run::new(c.clone(), Some(&text), kind).unwrap();
    for _ in 0..4 {
        first.step().unwrap();
    }
    let bytes = transformer_playground::checkpoint::save(&first.cfg, first.data.tokenizer(), first.step, &first.model, Some(&first.opt)).unwrap();
    let ck = transformer_playground::checkpoint::load(&bytes).unwrap();
    let data = transformer_playground::data::Dataset::from_text(&text, ck.tokenizer, &ck.config).unwrap();
    let mut resumed = transformer_playground::train::Run::resume(ck.config, ck.model, ck.opt, data, ck.step, kind);
    let rest: Vec<f32> = (0..4).map(|_| resumed.step().unwrap().loss).collect();
    assert_eq!(&all[4..], &rest[..]);
}

#[test]
fn a_model_whose_loss_is_not_finite_on_some_batches_reports_a_non_finite_validation_loss() {
    // One token's embedding row is NaN: batches that contain that token have a NaN loss, the others a finite one.
    // Averaging only the finite batches would report a finite validation loss and hide the divergence.
    // Untied, so the NaN row is not also the output projection of every position.
    let c = with(&cfg("gpt"), serde_json::json!({ "ctx_len": 16, "tie_embeddings": false }));
    let mut c = c;
    (c.train.batch_size, c.train.eval_iters) = (2, 8);
    let text = shakespeare();
    let mut run = transformer_playground::train::Run::new(c.clone(), Some(&text), transformer_playground::backend::BackendKind::Cpu).unwrap();
    let healthy = run.eval(transformer_playground::data::Split::Val).unwrap();
    assert!(healthy.is_finite());
    // The batches the evaluation draws; a token that some of them contain and some do not.
    let mut rng = Rng::new(c.seed ^ 0x5EED_E7A1);
    let batches: Vec<Vec<u32>> = (0..c.train.eval_iters)
        .map(|_| run.data.batch(transformer_playground::data::Split::Val, c.train.batch_size, c.model.ctx_len, &mut rng).idx)
        .collect();
    let splits = |id: u32| batches.iter().any(|b| b.contains(&id)) && !batches.iter().all(|b| b.contains(&id));
    let rare = (0..run.model.vocab() as u32).find(|&id| splits(id)).expect("a token in some evaluation batches only");
    let d = run.model.cfg.d_model;
    run.model.layout.wte.of_mut(&mut run.model.params)[rare as usize * d] = f32::NAN;
    let val = run.eval(transformer_playground::data::Split::Val).unwrap();
    assert!(!val.is_finite(), "a model with a NaN on some batches reported a finite validation loss {val}");
}
