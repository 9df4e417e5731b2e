//! One training step in slow motion (`trace`): the stages come in the order the step makes them, each forward
//! stage is the tensor the model computes, the loss and gradients are the step's, and the update is exactly what
//! the run's next step does to each parameter — while the run itself is not advanced.

use transformer_playground::backend::{cpu::Cpu, BackendKind};
use transformer_playground::config::Config;
use transformer_playground::trace::{heat, Stage, StepTrace};
use transformer_playground::train::Run;

fn run(arch: &str, placement: &str, ffn: &str, data: &str, steps: usize) -> Run {
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 16,
        "ffn": {ffn}, "norm": {{ "kind": "layernorm", "placement": "{placement}" }},
        "position": {{ "kind": "alibi" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
        "train": {{ "batch_size": 4, "steps": 100, "lr": 0.01, "warmup": 2, "min_lr": 0.001, "grad_clip": 1.0 }} {data}, "seed": 3 }}"#
    );
    let cfg = Config::from_json(&json).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt")).unwrap();
    let text = (arch != "encoder_decoder").then(|| &text[..50_000]);
    let mut run = Run::new(cfg, text, BackendKind::Cpu).unwrap();
    for _ in 0..steps {
        run.step().unwrap();
    }
    run
}

fn run_with(cfg: Config) -> StepTrace {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt")).unwrap();
    Run::new(cfg, Some(&text[..50_000]), BackendKind::Cpu).unwrap().trace().unwrap()
}

const DENSE: &str = r#"{ "activation": "gelu", "mult": 2 }"#;

fn ids(tr: &StepTrace, pass: &str) -> Vec<String> {
    tr.stages.iter().filter(|s| s.pass == pass).map(|s| format!("{}{}", s.stack.map_or(String::new(), |x| format!("{x}:")), s.id)).collect()
}

fn norm(x: &[f32]) -> f32 {
    x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32
}

fn close(a: f32, b: f32, what: &str) {
    assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{what}: {a} vs {b}");
}

#[test]
fn a_gpt_step_is_traced_in_order_and_the_run_is_not_advanced() {
    let mut r = run("gpt", "pre", DENSE, "", 3);
    let tr = r.trace().unwrap();
    assert_eq!(tr.step, 3);
    // Pre-LN: norm before each sub-layer, the final norm at the end.
    let attn = ["norm", "q", "k", "v", "scores", "heads_concatenated", "attention_output", "residual"];
    let ffn = ["norm", "ffn_up", "ffn_activation", "ffn_down", "residual"];
    let mut want = vec!["token_embedding"];
    for _ in 0..2 {
        want.extend(attn);
        want.extend(ffn);
    }
    want.extend(["final_norm", "logits"]);
    assert_eq!(ids(&tr, "forward"), want);
    assert_eq!(ids(&tr, "loss"), ["loss"]);
    // Backward: ∂loss/∂logits, then every parameter, the layout's last tensor first; the update: every parameter.
    let n = r.model.layout.tensors.len();
    let back: Vec<&Stage> = tr.stages.iter().filter(|s| s.pass == "backward").collect();
    assert_eq!(back[0].id, "dlogits");
    let names: Vec<&str> = back[1..].iter().map(|s| s.tensor.as_deref().unwrap()).collect();
    let layout: Vec<&str> = r.model.layout.tensors.iter().rev().map(|t| t.name.as_str()).collect();
    assert_eq!(names, layout);
    assert_eq!(tr.stages.iter().filter(|s| s.pass == "update").count(), n);

    // The forward stages are the model's tensors: the logits and loss of a forward pass on the same batch.
    let logits = tr.stages.iter().find(|s| s.id == "logits").unwrap();
    assert_eq!(logits.shape, vec![4, 16, r.model.vocab()]);
    // Each attention row of sequence 0 is a distribution over the keys: the mean probability is 1/T.
    for s in tr.stages.iter().filter(|s| s.id == "scores") {
        close(s.summary.mean * 16.0, 1.0, "attention rows sum to 1");
        assert!(s.summary.min >= 0.0 && s.summary.max <= 1.0);
    }

    // The update is the run's next step, tensor by tensor; the trace's loss is that step's.
    let before = r.model.params.clone();
    let rep = r.step().unwrap();
    close(tr.loss, rep.loss, "loss");
    close(tr.grad_norm, rep.grad_norm, "grad norm");
    for (ti, st) in r.model.layout.tensors.iter().zip(tr.stages.iter().filter(|s| s.pass == "update")) {
        assert_eq!(st.tensor.as_deref(), Some(ti.name.as_str()));
        let delta: Vec<f32> = ti.view.of(&r.model.params).iter().zip(ti.view.of(&before)).map(|(a, b)| a - b).collect();
        close(st.summary.norm, norm(&delta), &ti.name);
        close(st.param_norm.unwrap(), norm(ti.view.of(&before)), &ti.name);
        let m = ti.view.of(&r.opt.m);
        close(st.m_norm.unwrap(), norm(m), &ti.name);
    }
    // Gradients: their norms give the step's global norm.
    let g2: f64 = back[1..].iter().map(|s| (s.summary.norm as f64).powi(2)).sum();
    close(g2.sqrt() as f32, rep.grad_norm, "Σ of the traced gradients");
}

#[test]
fn the_traced_logits_are_a_forward_pass_of_the_same_batch() {
    // A trace at step 0 from a fresh run: its logits' statistics are those of the model on the run's first batch.
    let r = run("gpt", "post", DENSE, "", 0);
    let tr = r.trace().unwrap();
    let mut rng = transformer_playground::rng::Rng::new(3).fork(1); // the run's batch stream (Run::assemble)
    let batch = r.data.batch(transformer_playground::data::Split::Train, 4, 16, &mut rng);
    let fwd = r.model.forward(&Cpu, &batch, None);
    let logits = tr.stages.iter().find(|s| s.id == "logits").unwrap();
    close(logits.summary.norm, norm(&fwd.logits), "logits norm");
    assert_eq!(logits.summary.values, fwd.logits[..6].to_vec());
    close(tr.loss, fwd.loss, "loss");
    // Post-LN: no norm before the sub-layers, no final norm.
    let f = ids(&tr, "forward");
    assert_eq!(&f[..3], ["token_embedding", "q", "k"]);
    assert!(!f.contains(&"final_norm".to_string()) && !f.contains(&"norm".to_string()));
}

#[test]
fn bert_the_encoder_decoder_and_moe_are_traced() {
    let bert = run("bert", "pre", DENSE, "", 1).trace().unwrap();
    assert!(ids(&bert, "forward").iter().all(|s| !s.contains(':')), "one stack: no stack names");
    let ed = run("encoder_decoder", "pre", DENSE, r#", "data": { "task": "reverse", "digits": 4 }"#, 1).trace().unwrap();
    let f = ids(&ed, "forward");
    assert_eq!(f[0], "encoder:token_embedding");
    for id in ["decoder:cross_q", "decoder:cross_k", "decoder:cross_scores", "decoder:cross_output"] {
        assert!(f.contains(&id.to_string()), "{id} in {f:?}");
    }
    assert!(!ed.source_tokens.is_empty() && ed.s > 0);
    let cross = ed.stages.iter().find(|s| s.id == "cross_scores").unwrap();
    close(cross.summary.mean * ed.s as f32, 1.0, "cross-attention rows sum to 1");
    let moe = run("gpt", "pre", r#"{ "activation": "swiglu", "mult": 2, "moe": { "experts": 4, "top_k": 2 } }"#, "", 1).trace().unwrap();
    let f = ids(&moe, "forward");
    assert!(f.contains(&"moe_router".to_string()) && !f.contains(&"ffn_up".to_string()), "{f:?}");
    let router = moe.stages.iter().find(|s| s.id == "moe_router").unwrap();
    close(router.summary.mean * 4.0, 1.0, "router probabilities sum to 1 per token");
    // Each gradient names the backward function of its tensor's owner (the output head only for the head).
    let recurrent = {
        let mut r = run("gpt", "sandwich", DENSE, "", 0);
        r.cfg.model.position = transformer_playground::config::Position::Recurrent;
        run_with(r.cfg.clone())
    };
    for tr in [&bert, &ed, &moe, &recurrent] {
        for s in tr.stages.iter().filter(|s| s.id == "gradient") {
            let name = s.tensor.as_deref().unwrap();
            assert_eq!(s.source.contains("output head"), name.starts_with("lm_head"), "{name}: {}", s.source);
        }
    }
}

#[test]
fn a_heatmap_averages_blocks_of_cells() {
    // 4 × 6, values r·10 + c; at most 32 × 32 keeps it; a 64 × 3 column of ones averages to ones.
    let m: Vec<f32> = (0..24).map(|i| ((i / 6) * 10 + i % 6) as f32).collect();
    let h = heat(&m, 4, 6, ["T", "C"]);
    assert_eq!((h.rows, h.cols, h.cells.clone()), (4, 6, m));
    let big: Vec<f32> = (0..64 * 40).map(|i| (i / 40) as f32).collect(); // row r holds r
    let h = heat(&big, 64, 40, ["T", "C"]);
    assert_eq!((h.rows, h.cols, h.of), (32, 32, [64, 40]));
    // Cell row i averages rows 2i and 2i+1: 2i + 0.5.
    for (i, row) in h.cells.chunks(32).enumerate() {
        assert!(row.iter().all(|&v| (v - (2 * i) as f32 - 0.5).abs() < 1e-6), "row {i}: {row:?}");
    }
}
