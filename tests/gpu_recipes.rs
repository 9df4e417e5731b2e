//! The recipes' pretraining stages on the GPU (zeroshot's and icl's: plain language-model training, a `train::Run`):
//! the recipe driver (`recipes::engine::Driver`, what `tp icl|zeroshot --backend gpu` and the engine's 'webgpu' run)
//! trains icl's model, and zeroshot's two models (the pattern and the baseline), on the device with the CPU's losses
//! and validation losses (within the GPU's rounding), keeps each trained model and AdamW's state for its saved stage,
//! and evaluates on the CPU; finetune and rlhf refuse the GPU naming why. On Mesa's lavapipe natively; no adapter is a FAILURE, not a skip:
//! `cargo test --release --features gpu --test gpu_recipes`.
#![cfg(feature = "gpu")]

use std::collections::BTreeMap;

use transformer_playground::backend::BackendKind;
use transformer_playground::checkpoint;
use transformer_playground::recipes::engine::{Driver, Event, Kind, Options};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn knobs(k: &[(&str, f64)]) -> BTreeMap<String, f64> {
    k.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// Every event of icl's driver run to the end, and the driver.
fn run_all(backend: BackendKind, steps_per_unit: usize) -> (Vec<Event>, Driver) {
    let k = knobs(&[("steps", 6.0), ("train_episodes", 400.0), ("eval_episodes", 12.0), ("eval_every", 3.0)]);
    drive(Driver::new(Kind::Icl, &Options { knobs: k, backend: Some(backend), ..Options::default() }).unwrap(), steps_per_unit)
}

/// Every event of a driver run to the end, `steps_per_unit` pretraining steps a unit, and the driver.
fn drive(mut d: Driver, steps_per_unit: usize) -> (Vec<Event>, Driver) {
    d.steps_per_unit = steps_per_unit;
    let mut out = Vec::new();
    while !d.done() {
        out.extend(d.unit().expect("a unit"));
    }
    (out, d)
}

/// (step, eval, the metric `name`) of each pretraining progress event.
fn metric(ev: &[Event], name: &str) -> Vec<(usize, bool, f64)> {
    metric_of(ev, "pretrain", name)
}

/// (step, eval, the metric `name`) of each progress event of `stage`.
fn metric_of(ev: &[Event], stage: &str, name: &str) -> Vec<(usize, bool, f64)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Progress { stage: s, step, eval, metrics, .. } if *s == stage => metrics.get(name).and_then(|v| v.as_f64()).map(|x| (*step, *eval, x)),
            _ => None,
        })
        .collect()
}

/// Two metric series of the same steps, each value within `tol`·|cpu's|.
fn agree(what: &str, gpu: &[(usize, bool, f64)], cpu: &[(usize, bool, f64)], tol: f64) {
    assert!(!cpu.is_empty(), "{what}");
    assert_eq!(gpu.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), cpu.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), "{what}: the same steps");
    for ((s, _, a), (_, _, b)) in gpu.iter().zip(cpu) {
        assert!((a - b).abs() <= tol * b.abs(), "{what} at step {s}: gpu {a} vs cpu {b}");
    }
}

#[test]
fn icl_pretrains_on_the_gpu_with_the_cpus_losses_and_evaluates_on_the_cpu() {
    let (gpu, mut dg) = run_all(BackendKind::Gpu, usize::MAX);
    let (cpu, dc) = run_all(BackendKind::Cpu, 1);
    for name in ["loss", "val_loss", "grad_norm"] {
        let tol = if name == "grad_norm" { 2e-3 } else { 2e-4 };
        agree(name, &metric(&gpu, name), &metric(&cpu, name), tol);
    }
    // The stage's result says where it trained; the evaluation (on the cpu, from the read-back model) is close.
    let end = |ev: &[Event]| ev.iter().find_map(|e| match e {
        Event::Stage { stage: "pretrain", report, .. } => Some(report.clone()),
        _ => None,
    });
    let (eg, ec) = (end(&gpu).unwrap(), end(&cpu).unwrap());
    assert!(eg["backend"].as_str().unwrap().starts_with("gpu ("), "{eg}");
    assert_eq!(ec["backend"], "cpu");
    let acc = |ev: &[Event]| ev.iter().find_map(|e| match e {
        Event::Stage { stage: "eval", report, .. } => Some(report["induction"]["best"]["score"].as_f64().unwrap()),
        _ => None,
    });
    let (ag, ac) = (acc(&gpu).unwrap(), acc(&cpu).unwrap());
    assert!((ag - ac).abs() <= 1e-3 * ac.abs().max(1e-3), "induction score gpu {ag} vs cpu {ac}");
    // The saved stage holds the trained model and AdamW's state (read back from the device).
    let (sg, sc) = (checkpoint::load(&dg.save(Some("pretrain")).unwrap()).unwrap(), checkpoint::load(&dc.save(Some("pretrain")).unwrap()).unwrap());
    let (og, oc) = (sg.opt.expect("AdamW state"), sc.opt.expect("AdamW state"));
    assert_eq!((sg.step, og.t), (6, oc.t));
    let far = sg.model.params.iter().zip(&sc.model.params).filter(|(a, b)| (*a - *b).abs() > 3e-4 + 2e-3 * b.abs()).count();
    assert_eq!(far, 0, "parameters after 6 steps on the gpu and the cpu");
    dg.sync().unwrap();
}

/// zeroshot's two pretraining stages (the model that sees the templated lines and the baseline) on the GPU: the
/// CPU's losses and validation losses, both stages' models kept with AdamW's state, the evaluation on the CPU from
/// the read-back models. A small model (d_model 16, one layer) on the shipped Tiny Shakespeare.
#[test]
fn zeroshot_pretrains_both_models_on_the_gpu_with_the_cpus_losses_and_evaluates_on_the_cpu() {
    let corpus = std::fs::read_to_string(format!("{ROOT}/www/data/tinyshakespeare.txt")).unwrap();
    let mut recipe: serde_json::Value = serde_json::from_str(transformer_playground::recipes::engine::ZEROSHOT).unwrap();
    (recipe["model"]["d_model"], recipe["model"]["n_layers"], recipe["train"]["batch_size"], recipe["train"]["eval_iters"]) = (16.into(), 1.into(), 8.into(), 2.into());
    let run = |backend: BackendKind, steps_per_unit: usize| {
        let k = knobs(&[("steps", 6.0), ("eval_questions", 8.0), ("eval_every", 3.0)]);
        let o = Options { recipe: Some(recipe.to_string()), corpus: Some(corpus.clone()), knobs: k, backend: Some(backend), ..Options::default() };
        drive(Driver::new(Kind::Zeroshot, &o).unwrap(), steps_per_unit)
    };
    let (gpu, mut dg) = run(BackendKind::Gpu, usize::MAX);
    let (cpu, dc) = run(BackendKind::Cpu, 1);
    for stage in ["pattern", "baseline"] {
        for name in ["loss", "val_loss", "grad_norm"] {
            let tol = if name == "grad_norm" { 2e-3 } else { 2e-4 };
            agree(&format!("{stage} {name}"), &metric_of(&gpu, stage, name), &metric_of(&cpu, stage, name), tol);
        }
        let end = |ev: &[Event]| ev.iter().find_map(|e| match e {
            Event::Stage { stage: s, report, .. } if *s == stage => Some(report.clone()),
            _ => None,
        });
        let (eg, ec) = (end(&gpu).unwrap(), end(&cpu).unwrap());
        assert!(eg["backend"].as_str().unwrap().starts_with("gpu ("), "{stage}: {eg}");
        assert_eq!(ec["backend"], "cpu", "{stage}");
        let (sg, sc) = (checkpoint::load(&dg.save(Some(stage)).unwrap()).unwrap(), checkpoint::load(&dc.save(Some(stage)).unwrap()).unwrap());
        let (og, oc) = (sg.opt.expect("AdamW state"), sc.opt.expect("AdamW state"));
        assert_eq!((sg.step, og.t), (6, oc.t), "{stage}");
        let far = sg.model.params.iter().zip(&sc.model.params).filter(|(a, b)| (*a - *b).abs() > 3e-4 + 2e-3 * b.abs()).count();
        assert_eq!(far, 0, "{stage}: parameters after 6 steps on the gpu and the cpu");
    }
    // The two stages trained different models (one text has the templated lines), and both were evaluated.
    assert_ne!(metric_of(&cpu, "pattern", "loss"), metric_of(&cpu, "baseline", "loss"));
    let eval = |ev: &[Event]| ev.iter().find_map(|e| match e {
        Event::Stage { stage: "eval", report, .. } => Some(report.clone()),
        _ => None,
    });
    let (eg, ec) = (eval(&gpu).unwrap(), eval(&cpu).unwrap());
    assert_eq!(eg["questions"], 8);
    for k in ["accuracy", "baseline_accuracy", "chance"] {
        assert!((0.0..=1.0).contains(&eg[k].as_f64().unwrap()), "{k}: {eg}");
    }
    assert_eq!(eg["chance"], ec["chance"], "the same questions");
    dg.sync().unwrap();
}

#[test]
fn finetune_and_rlhf_refuse_the_gpu_naming_why() {
    let pretrained = std::fs::read(format!("{ROOT}/www/data/pretrained-gpt-tiny.safetensors")).unwrap();
    let corpus = std::fs::read_to_string(format!("{ROOT}/www/data/tinyshakespeare.txt")).unwrap();
    for kind in [Kind::Finetune, Kind::Rlhf] {
        let o = Options { checkpoint: Some(pretrained.clone()), corpus: Some(corpus.clone()), backend: Some(BackendKind::Gpu), ..Options::default() };
        let e = Driver::new(kind, &o).err().expect("refused").to_string();
        assert!(e.contains("gpu") && e.contains("cpu"), "{kind:?}: {e}");
    }
}

#[test]
fn tp_icl_trains_on_the_gpu() {
    let mut cfg: serde_json::Value = serde_json::from_str(transformer_playground::recipes::engine::ICL).unwrap();
    (cfg["train"]["steps"], cfg["icl"]["train_episodes"], cfg["icl"]["eval_episodes"], cfg["train"]["eval_interval"]) = (4.into(), 400.into(), 12.into(), 2.into());
    let path = std::env::temp_dir().join(format!("tp-gpu-icl-{}.json", std::process::id()));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tp"))
        .args(["icl", "--config", path.to_str().unwrap(), "--backend", "gpu", "--log-every", "1"])
        .output()
        .expect("run tp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l["loss"].is_number()).count(), 4);
    let end = lines.iter().find(|l| l["stage"] == "pretrain" && l.get("loss").is_none()).expect("the stage's line");
    assert!(end["backend"].as_str().unwrap().starts_with("gpu ("), "{end}");
    assert_eq!(lines.last().unwrap()["stage"], "eval");
}
