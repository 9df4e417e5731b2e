//! Training on the GPU: parameters, gradients, AdamW moments and activations resident on the device, a whole step
//! (`train::step::record_step`, the step every backend runs) recorded over `GpuStep` into one submission, only the
//! scalars read back (`train::gpu::GpuTrainer`). Held to the CPU backend with `atol + rtol·|ref|` on tiny shapes
//! (lavapipe is a CPU emulation); and the same step run op by op through `gpu_harness::OnGpu`.
//!
//! No adapter is a FAILURE, not a skip: `cargo test --release --features gpu --test gpu_training`.
#![cfg(feature = "gpu")]

mod gpu_harness;

use gpu_harness::{config, lab_batch, new_gpu, OnGpu};
use serde_json::json;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::backend::{BackendKind, Host};
use transformer_playground::config::Config;
use transformer_playground::data::Split;
use transformer_playground::model::Model;
use transformer_playground::rng::Rng;
use transformer_playground::train::gpu::GpuTrainer;
use transformer_playground::train::{adamw_at, train_step, OptState, Run, StepReport};
use transformer_playground::Error;

const SHAKESPEARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt");

fn text() -> String {
    std::fs::read_to_string(SHAKESPEARE).expect("the corpus")[..20_000].to_string()
}

/// A run of `c` on `backend` (text for gpt and bert; the encoder-decoder trains on its task).
fn run(c: &Config, backend: BackendKind) -> Run {
    let text = text();
    let t = (c.model.arch != transformer_playground::config::Arch::EncoderDecoder).then_some(&text[..]);
    let mut r = Run::new(c.clone(), t, backend).unwrap_or_else(|e| panic!("{e}"));
    r.sync_every = 0;
    r
}

fn steps(r: &mut Run, n: usize) -> Vec<StepReport> {
    (0..n).map(|_| r.step().unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// Trains `c` for `n` steps on the gpu and on the cpu; holds the gpu's losses, gradient norms (global and per
/// layer), evaluation, parameters and AdamW moments to the cpu's.
fn gpu_trains_like_cpu(c: &Config, n: usize, what: &str) {
    let (mut g, mut cpu) = (run(c, BackendKind::Gpu), run(c, BackendKind::Cpu));
    assert!(g.backend_name().starts_with("gpu ("), "{what}: trained on {}", g.backend_name());
    let (rg, rc) = (steps(&mut g, n), steps(&mut cpu, n));
    for (a, b) in rg.iter().zip(&rc) {
        let s = a.step;
        assert!((a.loss - b.loss).abs() <= 2e-4 * b.loss.abs(), "{what} step {s}: loss gpu {} cpu {}", a.loss, b.loss);
        assert!((a.grad_norm - b.grad_norm).abs() <= 2e-3 * b.grad_norm, "{what} step {s}: grad norm {} vs {}", a.grad_norm, b.grad_norm);
        assert_eq!(a.lr, b.lr);
        for ((ka, na), (kb, nb)) in a.layer_grad_norms.iter().zip(&b.layer_grad_norms) {
            assert_eq!(ka, kb);
            assert!((na - nb).abs() <= 1e-6 + 2e-3 * nb, "{what} step {s}: {ka} grad norm {na} vs {nb}");
        }
    }
    let (eg, ec) = (g.eval(Split::Val).unwrap(), cpu.eval(Split::Val).unwrap());
    assert!((eg - ec).abs() <= 2e-4 * ec.abs(), "{what}: val loss {eg} vs {ec}");
    g.sync().unwrap();
    assert_eq!(g.opt.t, cpu.opt.t, "{what}: AdamW steps");
    assert_close(&format!("{what}: parameters after {n} steps"), &g.model.params, &cpu.model.params, 3e-4, 2e-3);
    let mscale = cpu.opt.m.iter().fold(0f32, |a, x| a.max(x.abs()));
    assert_close(&format!("{what}: AdamW m"), &g.opt.m, &cpu.opt.m, 2e-3 * mscale, 2e-3);
    let vscale = cpu.opt.v.iter().fold(0f32, |a, x| a.max(x.abs()));
    assert_close(&format!("{what}: AdamW v"), &g.opt.v, &cpu.opt.v, 2e-3 * vscale, 5e-3);
    eprintln!("{what}: {n} steps, final loss gpu {} cpu {}", rg[n - 1].loss, rc[n - 1].loss);
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, want {w} (|err| {err})");
    }
}

/// Loss, raw gradients, and the parameters after one whole training step (clipping, AdamW), on `be`.
fn one_step(be: &impl Host, c: &Config, arch: &str) -> (f32, Vec<f32>, Vec<f32>) {
    let vocab = 13;
    let mut model = Model::new(&c.model, vocab, 7);
    let batch = lab_batch(arch, 2, 7, 5, vocab, 3);
    let fwd = model.forward(be, &batch, None);
    let mut grads = vec![0.0; model.params.len()];
    model.backward(be, &fwd, &batch, &mut grads);
    let mut opt = OptState::new(model.params.len());
    let r = train_step(be, &mut model, &mut opt, &c.train, &batch, 0, None).unwrap_or_else(|e| panic!("{e}"));
    assert!((r.loss - fwd.loss).abs() <= 1e-6 * fwd.loss, "{}: the step's forward is the forward", be.name());
    (fwd.loss, grads, model.params)
}

#[test]
fn a_training_step_of_every_architecture_through_the_gpu_ops_matches_the_cpu_backend() {
    // (Adam's first step moves every parameter by ±lr·sign(g), so the comparison of the parameters skips those
    // whose gradient is within rounding of 0, where the sign is noise.)
    let cases = [
        ("gpt", json!({"position": {"kind": "rope"}})),
        ("gpt", json!({"position": {"kind": "alibi"}, "norm": {"kind": "rmsnorm", "placement": "sandwich"}, "ffn": {"activation": "swiglu", "mult": 2}})),
        ("gpt", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "ffn": {"activation": "relu", "mult": 2}, "n_kv_heads": 1})),
        ("bert", json!({"norm": {"kind": "layernorm", "placement": "post"}, "ffn": {"activation": "geglu", "mult": 2}})),
        ("bert", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "rmsnorm", "placement": "deepnorm"}, "ffn": {"activation": "glu", "mult": 2}, "attention": {"scale": "none"}})),
        ("encoder_decoder", json!({"position": {"kind": "sinusoidal"}, "ffn": {"activation": "swish", "mult": 2}, "n_kv_heads": 6})),
        ("encoder_decoder", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "layernorm", "placement": "sandwich"}, "bias": false})),
        // Mixture-of-Experts: on the device every expert runs over its capacity (the host: over its rows).
        ("gpt", json!({"ffn": {"activation": "swiglu", "mult": 2, "moe": {"experts": 4, "top_k": 2, "aux_loss": 0.05}}})),
        ("encoder_decoder", json!({"ffn": {"activation": "gelu", "mult": 2, "moe": {"experts": 3, "top_k": 1, "aux_loss": 0.1, "capacity_factor": 1.0}}})),
    ];
    for (arch, patch) in cases {
        let c = config(arch, patch.clone());
        let ((gl, gg, gp), (cl, cg, cp)) = (one_step(&OnGpu, &c, arch), one_step(&Cpu, &c, arch));
        let what = format!("{arch} {patch}");
        assert!((gl - cl).abs() <= 1e-4 * cl.abs(), "{what}: loss {gl} vs {cl}");
        let scale = cg.iter().fold(0.0f32, |a, &g| a.max(g.abs()));
        assert_close(&format!("{what}: gradients"), &gg, &cg, 1e-4 * scale, 1e-3);
        let (sure_p, sure_c): (Vec<f32>, Vec<f32>) =
            gp.iter().zip(&cp).zip(&cg).filter(|(_, g)| g.abs() > 2e-4 * scale).map(|((a, b), _)| (*a, *b)).unzip();
        eprintln!("{what}: {} of {} parameters compared after AdamW", sure_p.len(), gp.len());
        assert!(sure_p.len() > 1000, "{what}: only {} of {} gradients are clear of 0", sure_p.len(), gp.len());
        assert_close(&format!("{what}: parameters after AdamW"), &sure_p, &sure_c, 1e-5, 1e-4);
    }
}

#[test]
fn trainer_steps_match_the_cpu_train_step() {
    let cases = [
        ("gpt", json!({"position": {"kind": "rope"}, "dropout": 0.1})),
        ("gpt", json!({"position": {"kind": "alibi"}, "norm": {"kind": "rmsnorm", "placement": "sandwich"}, "ffn": {"activation": "swiglu", "mult": 2}})),
        ("bert", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "rmsnorm", "placement": "deepnorm"}, "ffn": {"activation": "glu", "mult": 2}})),
        ("encoder_decoder", json!({"position": {"kind": "sinusoidal"}, "tie_embeddings": false, "norm": {"kind": "layernorm", "placement": "post"}})),
        ("gpt", json!({"ffn": {"activation": "gelu", "mult": 2, "moe": {"experts": 4, "top_k": 2, "aux_loss": 0.05, "capacity_factor": 1.25}}})),
    ];
    for (arch, patch) in cases {
        let c = config(arch, patch.clone());
        let what = format!("{arch} {patch}");
        let vocab = 13;
        let mut cpu_model = Model::new(&c.model, vocab, 7);
        let mut opt = OptState::new(cpu_model.params.len());
        let mut tr = GpuTrainer::new(new_gpu(), &cpu_model, &[], &[], 0).unwrap();
        let (mut rc, mut rg) = (Rng::new(9), Rng::new(9));
        for step in 0..3 {
            // Step 1's batch has other shapes: the trainer's recorded step (`Tape`) is re-recorded there and at
            // step 2, and must stay exact.
            let batch = lab_batch(arch, 2 + step % 2, 7 - step % 2, 5, vocab, 3 + step as u64);
            let r = train_step(&Cpu, &mut cpu_model, &mut opt, &c.train, &batch, step, Some(&mut rc)).unwrap();
            let h = adamw_at(&c.train, r.lr, tr.t + 1);
            // The trainer reads the config and the layout from the model, its parameters from the device.
            let s = tr.step(&cpu_model, &batch, Some(&mut rg), &h, c.train.grad_clip, step).unwrap();
            eprintln!("{what} step {step}: loss gpu {} cpu {}, norm gpu {} cpu {}", s.loss, r.loss, s.grad_norm, r.grad_norm);
            assert_eq!((s.step, s.lr), (step, r.lr));
            assert!((s.loss - r.loss).abs() <= 1e-4 * r.loss.abs(), "{what}: loss {} vs {}", s.loss, r.loss);
            assert!((s.grad_norm - r.grad_norm).abs() <= 1e-3 * r.grad_norm, "{what}: grad norm {} vs {}", s.grad_norm, r.grad_norm);
            assert_eq!(s.layer_grad_norms.len(), r.layer_grad_norms.len());
            for ((ka, na), (kb, nb)) in s.layer_grad_norms.iter().zip(&r.layer_grad_norms) {
                assert_eq!(ka, kb);
                assert!((na - nb).abs() <= 1e-6 + 1e-3 * nb, "{what} step {step}: {ka} grad norm {na} vs {nb}");
            }
            // The routing statistics come back in the step's one readback: the same routing, the same balance.
            assert_eq!(s.expert_load.len(), r.expert_load.len(), "{what}: MoE layers reported");
            assert_eq!(s.aux_loss.is_some(), c.model.ffn.moe.is_some());
            for (a, b) in s.expert_load.iter().zip(&r.expert_load) {
                assert_eq!((&a.layer, &a.load, a.dropped), (&b.layer, &b.load, b.dropped), "{what} step {step}: expert load");
                assert!((a.balance - b.balance).abs() <= 1e-5 * b.balance, "{what}: balance {} vs {}", a.balance, b.balance);
            }
        }
        assert_eq!((tr.t, opt.t), (3, 3), "{what}: AdamW steps counted");
        let (p, m, v) = pollster::block_on(tr.download()).unwrap();
        assert_close(&format!("{what}: parameters after 3 steps"), &p, &cpu_model.params, 2e-4, 1e-3);
        let mscale = opt.m.iter().fold(0f32, |a, x| a.max(x.abs()));
        assert_close(&format!("{what}: AdamW m"), &m, &opt.m, 2e-3 * mscale, 2e-3);
        let vscale = opt.v.iter().fold(0f32, |a, x| a.max(x.abs()));
        assert_close(&format!("{what}: AdamW v"), &v, &opt.v, 2e-3 * vscale, 5e-3);
    }
}

#[test]
fn the_trainers_evaluation_matches_the_cpu_forward() {
    let c = config("bert", json!({"position": {"kind": "alibi"}}));
    let vocab = 13;
    let model = Model::new(&c.model, vocab, 7);
    let tr = GpuTrainer::new(new_gpu(), &model, &[], &[], 0).unwrap();
    let batches: Vec<_> = (0..3).map(|i| lab_batch("bert", 2, 7, 5, vocab, 20 + i)).collect();
    let got = pollster::block_on(tr.eval_losses(&model, &batches)).unwrap();
    assert_eq!(got.len(), 3);
    for (b, (loss, count)) in batches.iter().zip(&got) {
        let f = model.forward(&Cpu, b, None);
        assert_eq!(*count, f.count);
        assert!((loss - f.loss).abs() <= 1e-4 * f.loss, "eval loss {loss} vs {}", f.loss);
    }
}

#[test]
fn a_gpu_run_trains_like_the_cpu_run_for_every_architecture() {
    for arch in ["gpt", "bert", "encoder_decoder"] {
        gpu_trains_like_cpu(&config(arch, json!({})), 5, arch);
    }
}

#[test]
fn every_config_option_trains_on_the_gpu_like_the_cpu() {
    let cases = [
        ("gpt", json!({"position": {"kind": "rope"}, "dropout": 0.1, "n_kv_heads": 1, "ffn": {"activation": "swiglu", "mult": 2}, "norm": {"kind": "rmsnorm", "placement": "pre"}, "bias": false})),
        ("gpt", json!({"position": {"kind": "alibi"}, "norm": {"kind": "layernorm", "placement": "sandwich"}, "ffn": {"activation": "geglu", "mult": 2}, "tie_embeddings": false})),
        ("gpt", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "layernorm", "placement": "post"}, "ffn": {"activation": "relu", "mult": 2}, "n_kv_heads": 6})),
        ("gpt", json!({"position": {"kind": "none"}, "norm": {"kind": "rmsnorm", "placement": "deepnorm"}, "ffn": {"activation": "swish", "mult": 2}, "attention": {"scale": "none"}})),
        ("bert", json!({"position": {"kind": "sinusoidal"}, "norm": {"kind": "rmsnorm", "placement": "sandwich"}, "ffn": {"activation": "glu", "mult": 2}, "dropout": 0.1})),
        ("bert", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "layernorm", "placement": "deepnorm"}, "tie_embeddings": false, "n_kv_heads": 3})),
        ("bert", json!({"position": {"kind": "alibi"}, "norm": {"kind": "layernorm", "placement": "post"}, "ffn": {"activation": "swiglu", "mult": 2}})),
        ("encoder_decoder", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "rmsnorm", "placement": "pre"}, "ffn": {"activation": "geglu", "mult": 2}, "dropout": 0.1})),
        ("encoder_decoder", json!({"position": {"kind": "rope"}, "norm": {"kind": "layernorm", "placement": "deepnorm"}, "n_kv_heads": 1, "tie_embeddings": false, "bias": false})),
        ("encoder_decoder", json!({"position": {"kind": "alibi"}, "norm": {"kind": "rmsnorm", "placement": "sandwich"}, "ffn": {"activation": "relu", "mult": 2}, "attention": {"scale": "none"}})),
        ("gpt", json!({"position": {"kind": "rope"}, "norm": {"kind": "rmsnorm", "placement": "pre"}, "ffn": {"activation": "swiglu", "mult": 2, "moe": {"experts": 4, "top_k": 2}}})),
    ];
    for (arch, patch) in cases {
        gpu_trains_like_cpu(&config(arch, patch.clone()), 3, &format!("{arch} {patch}"));
    }
}

#[test]
fn a_gpu_step_is_one_submission_and_really_runs_on_the_gpu() {
    let c = config("gpt", json!({}));
    let mut r = run(&c, BackendKind::Gpu);
    assert_eq!(r.backend, BackendKind::Gpu);
    let name = r.backend_name();
    assert!(name.starts_with("gpu (") && !name.contains("Noop"), "{name}");
    let before = r.with_gpu(|g| (g.submissions(), g.dispatches())).expect("a gpu run holds its gpu");
    steps(&mut r, 3);
    let after = r.with_gpu(|g| (g.submissions(), g.dispatches())).expect("still on the gpu");
    assert_eq!(after.0 - before.0, 3, "one submission per step, readback included");
    eprintln!("{} dispatches per step ({} tensors)", (after.1 - before.1) / 3, r.model.layout.tensors.len());
    // The host copy is the initial model until it is synced: the steps ran on the device, not on the host.
    let initial = Model::new(&c.model, r.model.vocab(), c.seed);
    assert_eq!(r.model.params, initial.params, "the host copy was not trained");
    r.sync().unwrap();
    assert_ne!(r.model.params, initial.params, "the device's parameters were trained");
    assert_eq!(r.opt.t, 3);
}

#[test]
fn a_trainer_step_is_one_submission_that_carries_its_own_readback() {
    let c = config("gpt", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "dropout": 0.1}));
    let vocab = 13;
    let model = Model::new(&c.model, vocab, 7);
    let mut tr = GpuTrainer::new(new_gpu(), &model, &[], &[], 0).unwrap();
    let mut masks = Rng::new(4);
    for step in 0..2 {
        let batch = lab_batch("gpt", 2, 7, 5, vocab, 3 + step as u64);
        let h = adamw_at(&c.train, c.train.lr, tr.t + 1);
        let before = (tr.gpu.submissions(), tr.gpu.dispatches());
        let pending = tr.submit_step(&model, &batch, Some(&mut masks), &h, c.train.grad_clip, step).unwrap();
        let submitted = (tr.gpu.submissions(), tr.gpu.dispatches());
        assert_eq!(submitted.0 - before.0, 1, "step {step}: the whole step is one submission");
        assert!(submitted.1 > before.1, "step {step}: the step's kernels were recorded");
        let report = pollster::block_on(tr.finish_step(&model, pending)).unwrap();
        // The scalars' readback was recorded in the step's submission: finishing only waits for it.
        assert_eq!((tr.gpu.submissions(), tr.gpu.dispatches()), submitted, "step {step}: finishing submits nothing");
        assert!(report.loss.is_finite() && report.grad_norm > 0.0, "step {step}: {report:?}");
        assert_eq!(report.layer_grad_norms.len(), 3, "embeddings & head, blocks.0, blocks.1");
    }
    assert_eq!(tr.t, 2);
}

#[test]
fn a_recorded_step_creates_no_bind_group_after_its_first() {
    let c = config("gpt", json!({"position": {"kind": "rope"}, "dropout": 0.1}));
    let mut r = run(&c, BackendKind::Gpu);
    let mut seen = vec![];
    for _ in 0..3 {
        steps(&mut r, 1);
        seen.push(r.gpu_issue().expect("a gpu run reports its issue"));
    }
    eprintln!("issue per step: {seen:?}");
    let first = seen[0];
    assert!(first.dispatches_per_step > 20, "{first:?}");
    assert_eq!(first.bind_groups_per_step, first.dispatches_per_step, "the first step records one bind group a dispatch");
    for s in &seen[1..] {
        assert_eq!(s.dispatches_per_step, first.dispatches_per_step, "the same step: {s:?}");
        assert_eq!(s.bind_groups_per_step, 0, "replayed: nothing created ({s:?})");
        // AdamW's parameters (its bias corrections change every step); the rest are the same values as before.
        assert_eq!(s.param_writes_per_step, 1, "one slot rewritten: {s:?}");
        assert!(s.issue_ms > 0.0 && s.issue_ms.is_finite());
    }
}

#[test]
fn pipelined_steps_report_every_step_as_single_steps_do() {
    // Dropout draws from its stream each step, so the streams must go exactly as one step at a time; sync_every 2
    // reads the state back after steps 2 and 4, so a step must not be in flight then.
    let c = config("gpt", json!({"dropout": 0.1}));
    let (mut one, mut piped) = (run(&c, BackendKind::Gpu), run(&c, BackendKind::Gpu));
    one.sync_every = 2;
    piped.sync_every = 2;
    let singles = steps(&mut one, 5);
    let mut reports = vec![];
    piped.steps(5, |r| reports.push(r)).unwrap();
    assert_eq!(reports.len(), 5, "every step reports");
    for (a, b) in reports.iter().zip(&singles) {
        assert_eq!((a.step, a.lr), (b.step, b.lr));
        assert_eq!(a.loss, b.loss, "step {}: the same kernels on the same state", a.step);
        assert_eq!(a.grad_norm, b.grad_norm, "step {}", a.step);
    }
    assert_eq!(piped.step, 5);
    assert_eq!(piped.model.params, one.model.params, "the state read back after step 4 is step 4's");
    // Steps 1 and 3 were read back while the next one was in flight (none was submitted past a read-back at 2 and 4,
    // nor past the last).
    let overlapped = piped.gpu_issue().unwrap().overlapped_steps;
    assert_eq!(overlapped, 2, "steps read back with the next one submitted");
    assert_eq!(one.gpu_issue().unwrap().overlapped_steps, 0);
    piped.sync_every = 0;
    piped.steps(4, |_| ()).unwrap();
    assert_eq!(piped.gpu_issue().unwrap().overlapped_steps, 2 + 3, "without read-backs every step but the last");
}

#[test]
fn a_step_submitted_after_a_diverging_one_changes_nothing() {
    // Token 5's embedding overflows (an untied head, so only a batch holding token 5 sees it): batch A diverges,
    // batch B alone would train. B is submitted before A is read back, as `Run::steps` does.
    let c = config("gpt", json!({"tie_embeddings": false}));
    let vocab = 13;
    let mut model = Model::new(&c.model, vocab, 7);
    let (wte, d) = (model.layout.wte, c.model.d_model);
    wte.of_mut(&mut model.params)[5 * d..6 * d].iter_mut().for_each(|x| *x = x.signum() * f32::MAX);
    let batch = |idx: Vec<u32>| transformer_playground::model::Batch { b: 1, t: 4, targets: idx.iter().map(|&x| ((x + 1) % 13) as i32).collect(), idx, s: 0, src: vec![] };
    let (a, b) = (batch(vec![5, 1, 2, 3]), batch(vec![1, 2, 3, 4]));
    let mut tr = GpuTrainer::new(new_gpu(), &model, &[], &[], 0).unwrap();
    let h = |t| adamw_at(&c.train, c.train.lr, t);
    let pa = tr.submit_step(&model, &a, None, &h(1), c.train.grad_clip, 0).unwrap();
    let pb = tr.submit_step(&model, &b, None, &h(2), c.train.grad_clip, 1).unwrap();
    let err = pollster::block_on(tr.finish_step(&model, pa)).expect_err("batch A overflows");
    assert!(matches!(err, Error::Diverged { step: 0, .. }), "{err}");
    drop(pb); // dropped, as `Run::steps` drops it
    let (p, m, v) = pollster::block_on(tr.download()).unwrap();
    assert_eq!(p, model.params, "the step submitted after the diverging one left the parameters alone");
    assert!(m.iter().chain(&v).all(|&x| x == 0.0), "and the moments");
    assert_eq!(tr.t, 0);
    // B on its own trains: the guard of A no longer holds once the host has seen the divergence.
    let rep = tr.step(&model, &b, None, &h(1), c.train.grad_clip, 0).unwrap();
    assert!(rep.loss.is_finite(), "{rep:?}");
    assert_ne!(pollster::block_on(tr.download()).unwrap().0, model.params, "batch B updates");
}

#[test]
fn pipelined_steps_stop_at_a_divergence_with_the_last_good_state() {
    let c = config("gpt", json!({}));
    let mut r = run(&c, BackendKind::Gpu);
    r.steps(2, |_| ()).unwrap();
    r.sync().unwrap();
    let wte = r.model.layout.wte;
    wte.of_mut(&mut r.model.params).iter_mut().for_each(|x| *x = x.signum() * f32::MAX);
    r.attach_gpu(new_gpu()).unwrap();
    let last_good = (r.model.params.clone(), r.opt.m.clone(), r.opt.v.clone(), r.opt.t, r.step);
    let mut reports = 0;
    let err = r.steps(3, |_| reports += 1).expect_err("overflowing logits diverge");
    assert!(matches!(err, Error::Diverged { step: 2, .. }), "{err}");
    assert_eq!((reports, r.step), (0, last_good.4), "nothing reported, the failed step not counted");
    assert!(r.on_gpu());
    r.sync().unwrap();
    assert_eq!((&r.model.params, &r.opt.m, &r.opt.v, r.opt.t), (&last_good.0, &last_good.1, &last_good.2, last_good.3));
}

#[test]
fn the_step_buffers_are_allocated_once_and_reused() {
    let c = config("encoder_decoder", json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "dropout": 0.1}));
    let mut r = run(&c, BackendKind::Gpu);
    steps(&mut r, 2);
    let held = r.with_gpu(|g| g.pool_bytes()).unwrap();
    steps(&mut r, 3);
    assert_eq!(r.with_gpu(|g| g.pool_bytes()).unwrap(), held, "later steps of the same shapes allocate nothing");
}

#[test]
fn a_diverging_gpu_step_keeps_the_last_good_state() {
    let c = config("gpt", json!({}));
    let mut r = run(&c, BackendKind::Gpu);
    steps(&mut r, 3);
    r.sync().unwrap();
    // Blow up the token embedding (as a far too high learning rate would) and put that state on a fresh device.
    let wte = r.model.layout.wte;
    wte.of_mut(&mut r.model.params).iter_mut().for_each(|x| *x = x.signum() * f32::MAX);
    r.attach_gpu(new_gpu()).unwrap();
    let last_good = (r.model.params.clone(), r.opt.m.clone(), r.opt.v.clone(), r.opt.t, r.step);
    match r.step() {
        Ok(rep) => panic!("a step with overflowing logits must be refused, got loss {}", rep.loss),
        Err(e) => {
            assert!(matches!(e, Error::Diverged { .. }), "{e}");
            assert!(e.to_string().contains("the last good state is kept"), "{e}");
        }
    }
    assert_eq!(r.step, last_good.4, "the failed step is not counted");
    assert!(r.on_gpu(), "a divergence is not a device failure");
    r.sync().unwrap();
    assert_eq!(r.model.params, last_good.0, "parameters on the device untouched by the failed step");
    assert_eq!(r.opt.m, last_good.1, "first moments untouched");
    assert_eq!(r.opt.v, last_good.2, "second moments untouched");
    assert_eq!(r.opt.t, last_good.3, "the AdamW step count untouched");
}

#[test]
fn a_lost_device_continues_on_the_cpu_from_the_last_state_read_back() {
    let c = config("gpt", json!({"dropout": 0.1}));
    let mut r = run(&c, BackendKind::Gpu);
    let mut reference = run(&c, BackendKind::Gpu);
    let before = steps(&mut r, 3);
    r.sync().unwrap(); // the state at step 3 is on the host
    let synced_params = r.model.params.clone();
    let lost = steps(&mut r, 2); // steps 3 and 4 happen on the device only
    r.with_gpu(|g| g.ctx.device.destroy()).expect("on the gpu");
    let rep = r.step().expect("the run continues on the cpu");
    let notice = rep.notice.clone().expect("a notice says what happened");
    assert!(notice.contains("continues on the cpu from step 3") && notice.contains("2 steps lost"), "{notice}");
    assert_eq!(r.backend, BackendKind::Cpu);
    assert!(!r.on_gpu() && r.backend_name() == "cpu");
    assert_eq!(rep.step, 3, "the step after the last read-back is taken again");
    // Same batch, same dropout masks, same parameters as the device's step 3: the same loss up to rounding.
    assert!((rep.loss - lost[0].loss).abs() <= 2e-4 * lost[0].loss, "cpu {} vs gpu {}", rep.loss, lost[0].loss);
    assert_ne!(r.model.params, synced_params, "the cpu step trained the read-back state");
    // The continuation goes on like an uninterrupted run.
    let rest = steps(&mut r, 2);
    assert!(rest.iter().all(|x| x.notice.is_none()), "the notice is said once");
    let uninterrupted = steps(&mut reference, 6);
    for x in before.iter().chain(std::iter::once(&rep)).chain(&rest) {
        let y = &uninterrupted[x.step];
        assert!((x.loss - y.loss).abs() <= 1e-3 * y.loss, "step {}: {} vs {}", x.step, x.loss, y.loss);
    }
}

#[test]
fn evaluation_on_a_lost_device_is_an_error_not_a_nan() {
    let c = config("gpt", json!({}));
    let mut r = run(&c, BackendKind::Gpu);
    steps(&mut r, 1);
    assert!(r.eval(Split::Val).unwrap().is_finite());
    r.with_gpu(|g| g.ctx.device.destroy()).expect("on the gpu");
    let err = r.eval(Split::Val).expect_err("a lost device cannot evaluate");
    assert!(matches!(err, transformer_playground::Error::Gpu(_)), "{err:?}");
}

#[test]
fn a_gpu_run_resumed_from_its_checkpoint_continues_like_the_uninterrupted_run() {
    use transformer_playground::checkpoint;
    use transformer_playground::data::Dataset;
    let c = config("encoder_decoder", json!({}));
    let mut whole = run(&c, BackendKind::Gpu);
    let all = steps(&mut whole, 5);
    let mut first = run(&c, BackendKind::Gpu);
    steps(&mut first, 3);
    first.sync().unwrap();
    let bytes = checkpoint::save(&first.cfg, first.data.tokenizer(), first.step, &first.model, Some(&first.opt)).unwrap();
    let ck = checkpoint::load(&bytes).unwrap();
    let data = Dataset::new(&ck.config, None).unwrap();
    let mut resumed = Run::resume(ck.config, ck.model, ck.opt, data, ck.step, BackendKind::Gpu);
    assert!(resumed.on_gpu(), "{}", resumed.backend_name());
    let rest = steps(&mut resumed, 2);
    for (a, b) in rest.iter().zip(&all[3..]) {
        assert_eq!(a.step, b.step);
        assert!((a.loss - b.loss).abs() <= 1e-5 * b.loss, "step {}: {} vs {}", a.step, a.loss, b.loss);
    }
}

#[test]
fn a_gpu_run_reads_its_state_back_every_sync_every_steps() {
    let c = config("bert", json!({}));
    let mut r = run(&c, BackendKind::Gpu);
    r.sync_every = 2;
    let initial = r.model.params.clone();
    steps(&mut r, 1);
    assert_eq!(r.model.params, initial);
    steps(&mut r, 1);
    assert_ne!(r.model.params, initial, "read back after step 2");
    assert_eq!(r.opt.t, 2);
}

#[test]
fn the_cli_trains_and_benchmarks_on_the_gpu() {
    let dir = std::env::temp_dir().join(format!("tp-gpu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gpt.json");
    let mut c = config("gpt", json!({"position": {"kind": "rope"}}));
    c.train.steps = 4;
    c.train.eval_interval = 2;
    std::fs::write(&cfg, c.to_json()).unwrap();
    let ck = dir.join("gpt.safetensors");
    let tp = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (cfg, ck) = (cfg.to_str().unwrap(), ck.to_str().unwrap());
    let (ok, out, err) = tp(&["train", "--config", cfg, "--data", SHAKESPEARE, "--backend", "gpu", "--out", ck, "--log-every", "1", "--sample-tokens", "10"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    assert_eq!(lines.iter().filter(|l| l.get("loss").is_some()).count(), 4);
    let end = lines.iter().find(|l| l.get("elapsed_s").is_some()).expect("the final line");
    assert!(end["backend"].as_str().unwrap().starts_with("gpu ("), "trained on {}", end["backend"]);
    assert!(err.contains("training on gpu ("), "{err}");
    // The checkpoint holds the trained (read-back) state: it differs from the initial model.
    let ckpt = transformer_playground::checkpoint::load(&std::fs::read(ck).unwrap()).unwrap();
    assert_eq!(ckpt.step, 4);
    let initial = Model::new(&c.model, ckpt.model.vocab(), c.seed);
    assert_ne!(ckpt.model.params, initial.params);
    assert_eq!(ckpt.opt.expect("optimizer state").t, 4);

    let (ok, out, err) = tp(&["bench", "--config", cfg, "--data", SHAKESPEARE, "--backend", "gpu", "--steps", "3", "--warmup", "1"]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(line["ran_on"].as_str().unwrap().starts_with("gpu ("), "{line}");
    assert!(line["median_ms"].as_f64().unwrap() > 0.0);
    assert!(line["issue_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["dispatches_per_step"].as_u64().unwrap() > 0, "{line}");
    assert_eq!(line["bind_groups_per_step"].as_u64(), Some(0), "after the warm-up the step is replayed: {line}");
}

#[test]
fn no_adapter_is_a_clear_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("tp-gpu-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gpt.json");
    std::fs::write(&cfg, config("gpt", json!({})).to_json()).unwrap();
    // No Vulkan driver to find: wgpu has no adapter.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tp"))
        .args(["train", "--config", cfg.to_str().unwrap(), "--data", SHAKESPEARE, "--backend", "gpu"])
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .output()
        .expect("run tp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("error: gpu: no GPU adapter found") && err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn recurrent_positions_train_on_the_gpu_like_the_cpu() {
    let cases = [
        ("gpt", json!({"position": {"kind": "recurrent"}, "dropout": 0.1})),
        ("bert", json!({"position": {"kind": "recurrent"}, "norm": {"kind": "rmsnorm", "placement": "pre"}})),
        ("encoder_decoder", json!({"position": {"kind": "recurrent"}, "bias": false, "tie_embeddings": false})),
    ];
    for (arch, patch) in cases {
        gpu_trains_like_cpu(&config(arch, patch.clone()), 3, &format!("{arch} {patch}"));
    }
}

/// configs/baby-gpt.json (nanoGPT's train_shakespeare_char, issue 21) on a device held to WebGPU's DEFAULT limits
/// (`wgpu::Limits::default()`: what a page's device gets when it asks for nothing more — 128 MiB per storage
/// binding, 256 MiB per buffer, 65535 workgroups per dimension). Two steps at a reduced batch (1 × 256 tokens:
/// the full batch is ~1 TFLOP a step, too slow for lavapipe) match the cpu's; the full batch of 64 is recorded,
/// not run (`GpuTrainer::plan_step`): every buffer it allocates and binds, and every dispatch's grid, within the
/// limits, and its bytes on the device reported.
#[test]
fn the_baby_gpt_trains_within_webgpus_default_limits_and_its_full_batch_step_fits_them() {
    let _turn = gpu_harness::gpu(); // lavapipe is shared: one test on it at a time
    let limits = wgpu::Limits::default();
    assert_eq!((limits.max_storage_buffer_binding_size, limits.max_buffer_size, limits.max_compute_workgroups_per_dimension), (128 << 20, 256 << 20, 65535));
    let json = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/baby-gpt.json")).unwrap();
    let full = Config::from_json(&json).unwrap();
    let corpus = std::fs::read_to_string(SHAKESPEARE).unwrap();
    let webgpu = || pollster::block_on(transformer_playground::backend::gpu::Gpu::with_limits(wgpu::Limits::default())).unwrap_or_else(|e| panic!("{e}"));

    // Two steps of one sequence of 256 tokens, on the gpu and on the cpu: the same losses (the same batches and
    // dropout masks), finite and at ln 65 ≈ 4.17 from the initialisation.
    let mut small = full.clone();
    small.train.batch_size = 1;
    let make = |backend| {
        let data = transformer_playground::data::Dataset::new(&small, Some(&corpus)).unwrap();
        let mut r = Run::unattached(small.clone(), data, backend).unwrap();
        r.sync_every = 0;
        r
    };
    let (mut g, mut cpu) = (make(BackendKind::Gpu), make(BackendKind::Cpu));
    g.attach_gpu(webgpu()).unwrap_or_else(|e| panic!("{e}"));
    let (rg, rc) = (steps(&mut g, 2), steps(&mut cpu, 2));
    for (a, b) in rg.iter().zip(&rc) {
        assert!(a.loss.is_finite() && (a.loss - 65f32.ln()).abs() < 0.3, "step {}: loss {}", a.step, a.loss);
        assert!((a.loss - b.loss).abs() <= 2e-4 * b.loss, "step {}: loss gpu {} cpu {}", a.step, a.loss, b.loss);
        assert!((a.grad_norm - b.grad_norm).abs() <= 2e-3 * b.grad_norm, "step {}: grad norm {} vs {}", a.step, a.grad_norm, b.grad_norm);
    }
    let small_pool = g.with_gpu(|gpu| gpu.pool_bytes()).unwrap();

    // The full batch, recorded and not run.
    let data = transformer_playground::data::Dataset::new(&full, Some(&corpus)).unwrap();
    let model = Model::new(&full.model, data.tokenizer().vocab_size(), full.seed);
    let mut rng = Rng::new(1);
    let batch = data.batch(Split::Train, 64, 256, &mut rng);
    let h = adamw_at(&full.train, 1e-3, 1);
    let mut trainer = GpuTrainer::new(webgpu(), &model, &[], &[], 0).unwrap();
    let plan = trainer.plan_step(&model, &batch, Some(&mut Rng::new(2)), &h, 1.0).unwrap_or_else(|e| panic!("the full batch: {e}"));
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    eprintln!(
        "baby GPT on the gpu, batch 64 × 256: {:.1} MiB of parameters, gradients and AdamW state, {:.1} MiB of activations and \
         scratch ({:.1} MiB at batch 1), {} dispatches a step",
        mib(plan.state_bytes),
        mib(plan.pool_bytes),
        mib(small_pool),
        plan.dispatches
    );
    // Within a 4 GiB GPU: the pool lends a buffer the step's commands fill again as soon as it is given back
    // (src/backend/gpu/buffer.rs), so a step holds its saved activations plus one layer's temporaries, not every
    // temporary it makes (which came to 6.5 GiB); the pool grows with the batch (activations), the state does not.
    assert!(plan.state_bytes + plan.pool_bytes < 4 << 30, "{plan:?}");
    assert!(plan.pool_bytes > 32 * small_pool, "{plan:?} vs {small_pool} at batch 1");

    // The checks bite: under a quarter of the default binding size, the full batch's largest activations do not
    // fit, and the refusal names the limit.
    let tight = wgpu::Limits { max_storage_buffer_binding_size: 32 << 20, ..wgpu::Limits::default() };
    let gpu = pollster::block_on(transformer_playground::backend::gpu::Gpu::with_limits(tight)).unwrap();
    let mut trainer = GpuTrainer::new(gpu, &model, &[], &[], 0).unwrap();
    let err = trainer.plan_step(&model, &batch, None, &h, 1.0).err().expect("refused");
    assert!(err.to_string().contains("maxStorageBufferBindingSize"), "{err}");
}

/// A run made for the gpu (too large for a host step here) whose device fails does not fall back to the cpu: it
/// stops with the memory check's refusal, naming the field and saying that the GPU failed.
#[test]
fn a_run_only_the_gpu_can_hold_stops_naming_the_field_when_its_device_fails() {
    let c = config("gpt", json!({}));
    let mut c = c;
    (c.model.ctx_len, c.train.batch_size) = (8192, 4096);
    let data = transformer_playground::data::Dataset::new(&c, Some(&std::fs::read_to_string(SHAKESPEARE).unwrap())).unwrap();
    let mut r = Run::unattached(c, data, BackendKind::Gpu).unwrap();
    r.attach_gpu(new_gpu()).unwrap();
    r.with_gpu(|g| g.ctx.device.destroy()).expect("on the gpu");
    let err = r.step().unwrap_err();
    let Error::Config { field, rule, .. } = &err else { panic!("{err}") };
    assert_eq!(field, "train.batch_size");
    assert!(rule.contains("the GPU failed") && rule.contains("but on the cpu a training step would hold"), "{rule}");
    assert_eq!((r.step, r.on_gpu()), (0, false));
    assert!(r.step().is_err(), "and stays refused");
}

/// `Backend::output` hands a training step's op outputs out of the pool without clearing them (a clear is a command
/// of its own). Every such op must write its whole output: with `Gpu::set_poison_outputs` each of those buffers is
/// filled with NaN first, and across the architectures, norms, placements, positions, activations, dropout and
/// Mixture-of-Experts, three steps still give the cpu's losses (a NaN left anywhere would reach the loss or the
/// gradient norm).
#[test]
fn every_op_given_an_uncleared_output_writes_all_of_it() {
    for (arch, patch) in gpu_harness::output_cases() {
        let c = config(arch, patch.clone());
        let (mut g, mut cpu) = (run(&c, BackendKind::Gpu), run(&c, BackendKind::Cpu));
        g.with_gpu(|gpu| gpu.set_poison_outputs(true)).expect("a gpu run");
        let (rg, rc) = (steps(&mut g, 3), steps(&mut cpu, 3));
        for (a, b) in rg.iter().zip(&rc) {
            assert!(a.loss.is_finite() && a.grad_norm.is_finite(), "{arch} {patch} step {}: loss {} grad norm {}", a.step, a.loss, a.grad_norm);
            assert!((a.loss - b.loss).abs() <= 2e-4 * b.loss.abs(), "{arch} {patch} step {}: loss gpu {} cpu {}", a.step, a.loss, b.loss);
        }
    }
}
