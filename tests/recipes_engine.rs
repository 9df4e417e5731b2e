//! The recipes' step-wise driver (`recipes::engine::Driver`, what the browser engine runs): the same numbers as the
//! CLI (`tp finetune|zeroshot|icl|rlhf`, run here as a program) for a few steps of each recipe; stepping with
//! evaluations, samples and saves in between (what a paused page does) gives the same numbers as stepping straight
//! through; a later stage started from the earlier stages' saved checkpoints gives the same numbers as running
//! through; bad options are refused naming the option. Small knobs, so it takes seconds.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use transformer_playground::recipes::engine::{self, Driver, Event, Kind, Options};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn pretrained_path() -> String {
    format!("{ROOT}/www/data/pretrained-gpt-tiny.safetensors")
}

fn pretrained() -> Vec<u8> {
    std::fs::read(pretrained_path()).expect("the shipped checkpoint (scripts/recipes-pretrain.sh)")
}

fn shakespeare() -> Option<String> {
    Some(std::fs::read_to_string(format!("{ROOT}/www/data/tinyshakespeare.txt")).unwrap())
}

fn knobs(k: &[(&str, f64)]) -> BTreeMap<String, f64> {
    k.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// Every event of a driver run to the end (or until `stop` stages are done).
fn run_all(d: &mut Driver) -> Vec<Event> {
    let mut out = Vec::new();
    while !d.done() {
        out.extend(d.unit().expect("a unit"));
    }
    out
}

/// The CLI's JSON lines (stdout) of `tp args`.
fn tp(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    assert!(out.status.success(), "tp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-recipes-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// (stage, step, eval, metrics) of each event; a stage's result counts as an evaluation at its last step.
type Row = (String, usize, bool, BTreeMap<String, Value>);

fn rows(ev: &[Event]) -> Vec<Row> {
    ev.iter()
        .map(|e| match e {
            Event::Progress { stage, step, eval, metrics, .. } => (stage.to_string(), *step, *eval, metrics.clone()),
            Event::Stage { stage, step, metrics, .. } => (format!("{stage}/end"), *step, true, metrics.clone()),
        })
        .collect()
}

/// Asserts every number of the CLI line `line` is the driver's metric of that name.
fn same_numbers(line: &Value, metrics: &BTreeMap<String, Value>, what: &str) {
    let want = engine::metrics_of(line);
    let mut n = 0;
    for (k, v) in &want {
        if ["elapsed_s", "ms", "eval"].contains(&k.as_str()) {
            continue;
        }
        // null in a CLI line: not measured at this step (a training line between evaluations has val_loss null).
        let Some(got) = metrics.get(k).or(v.is_null().then_some(v)) else { panic!("{what}: no metric {k} (have {:?})", metrics.keys()) };
        // The numbers are f32s; compared as such (serde_json's parser may be one f64 ulp off the printed digits).
        assert_eq!(got.as_f64().map(|x| x as f32), v.as_f64().map(|x| x as f32), "{what}: {k}");
        n += 1;
    }
    assert!(n > 0, "{what}: no number compared in {line}");
}

/// A step's metrics with those of the evaluation made before it (the CLI prints both in the step's line).
fn with_eval(got: &[Row], stage: &str, line: &Value, row: &Row) -> BTreeMap<String, Value> {
    let mut m = row.3.clone();
    if line.get("loss").is_some() {
        if let Some(e) = got.iter().find(|r| r.0 == stage && r.1 + 1 == row.1 && r.2) {
            m.extend(e.3.clone());
        }
    }
    m
}

#[test]
fn rlhf_gives_the_clis_numbers_and_resumes_from_saved_stages() {
    let k = knobs(&[("sft_steps", 3.0), ("rm_steps", 3.0), ("ppo_steps", 3.0), ("rollouts", 8.0), ("eval_every", 2.0)]);
    let o = Options { checkpoint: Some(pretrained()), knobs: k.clone(), corpus: shakespeare(), ..Options::default() };
    let mut d = Driver::new(Kind::Rlhf, &o).unwrap();
    assert_eq!(d.info.stages.iter().map(|s| (s.name, s.steps)).collect::<Vec<_>>(), [("sft", 3), ("rm", 3), ("ppo", 3)]);
    assert_eq!(d.info.knobs["beta"], serde_json::json!(0.05f32));
    let ev = run_all(&mut d);
    let got = rows(&ev);

    // The CLI on the same recipe (the knobs written into a copy of configs/recipes/rlhf.json).
    let mut cfg: Value = serde_json::from_str(engine::RLHF).unwrap();
    (cfg["sft"]["steps"], cfg["rm"]["steps"], cfg["ppo"]["steps"], cfg["ppo"]["rollouts"]) = (3.into(), 3.into(), 3.into(), 8.into());
    let path = tmp("rlhf.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = tmp("rlhf-out");
    let lines = tp(&["rlhf", "--config", &path, "--checkpoint", &pretrained_path(), "--out", &out, "--eval-every", "2"]);
    let mut matched = 0;
    for l in &lines {
        let stage = l["stage"].as_str().unwrap();
        let step = l["step"].as_u64().unwrap() as usize;
        let eval = l["eval"] == Value::Bool(true);
        // A step line is numbered before its update (the driver's event after it); the last evaluation is the
        // stage's result.
        let row = if eval && l.get("elapsed_s").is_some() {
            got.iter().find(|r| r.0 == format!("{stage}/end"))
        } else if eval {
            got.iter().find(|r| r.0 == stage && r.1 == step && r.2)
        } else {
            got.iter().find(|r| r.0 == stage && r.1 == step + 1 && !r.2)
        };
        let row = row.unwrap_or_else(|| panic!("no driver event for the CLI line {l}"));
        same_numbers(l, &row.3, &format!("{stage} step {step} eval {eval}"));
        matched += 1;
    }
    assert_eq!(matched, got.len(), "every driver event has its CLI line");

    // PPO again from the saved SFT and reward models: the same numbers as running through.
    let cks: BTreeMap<String, Vec<u8>> = [("sft", d.save(Some("sft")).unwrap()), ("rm", d.save(Some("rm")).unwrap())]
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    let o2 = Options { knobs: k.clone(), from: Some(("ppo".into(), cks.clone())), corpus: shakespeare(), ..Options::default() };
    let mut d2 = Driver::new(Kind::Rlhf, &o2).unwrap();
    assert_eq!(d2.stage(), "ppo");
    let ppo: Vec<_> = got.iter().filter(|r| r.0.starts_with("ppo")).cloned().collect();
    assert_eq!(rows(&run_all(&mut d2)), ppo);
    // The CLI's saved files are the engine's bytes.
    assert_eq!(std::fs::read(format!("{out}/sft.safetensors")).unwrap(), cks["sft"]);
    assert_eq!(std::fs::read(format!("{out}/rm.safetensors")).unwrap(), cks["rm"]);

    // Stepping with evaluations, samples and saves between the units (what a paused page does) changes nothing.
    let mut d3 = Driver::new(Kind::Rlhf, &o).unwrap();
    let mut ev3 = Vec::new();
    while !d3.done() {
        let e = d3.evaluate().unwrap();
        assert!(matches!(e, Event::Progress { eval: true, .. }));
        assert!(!d3.samples().unwrap().is_empty());
        if d3.step > 0 {
            d3.save(None).unwrap();
        } else {
            assert!(d3.save(None).unwrap_err().to_string().contains("not started"));
        }
        ev3.extend(d3.unit().unwrap());
    }
    assert_eq!(rows(&ev3), got);
    let s = d3.samples().unwrap();
    assert_eq!(s[0].prompt.chars().count(), 32, "a sample's prompt is prompt_len characters: {s:?}");
    assert_eq!(s[0].completion.chars().count(), 24);
    assert!(d3.unit().unwrap().is_empty(), "nothing after the last stage");
}

#[test]
fn finetune_gives_the_clis_numbers() {
    let k = knobs(&[("steps", 4.0), ("aux_lm", 0.5), ("eval_every", 2.0)]);
    let o = Options { checkpoint: Some(pretrained()), knobs: k, seed: Some(1), corpus: shakespeare(), ..Options::default() };
    let mut d = Driver::new(Kind::Finetune, &o).unwrap();
    let ev = run_all(&mut d);
    let got = rows(&ev);
    let lines = tp(&["finetune", "--checkpoint", &pretrained_path(), "--task", "verse_prose", "--aux-lm", "0.5", "--steps", "4", "--eval-every", "2", "--seed", "1"]);
    assert_eq!(lines.len(), 5);
    for l in &lines {
        let step = l["step"].as_u64().unwrap() as usize;
        if l.get("elapsed_s").is_some() {
            same_numbers(l, &got.iter().find(|r| r.0 == "finetune/end").unwrap().3, "final");
            continue;
        }
        // The CLI's line holds the evaluation before the step and the step's report: two driver events.
        let mut m = got.iter().find(|r| r.1 == step + 1 && !r.2).unwrap().3.clone();
        if let Some(e) = got.iter().find(|r| r.0 == "finetune" && r.1 == step && r.2) {
            m.extend(e.3.clone());
        }
        same_numbers(l, &m, &format!("finetune step {step}"));
    }
    // A fine-tuned checkpoint continues (its head, AdamW state and step), as `tp finetune --checkpoint` does.
    let saved = d.save(None).unwrap();
    let o2 = Options { knobs: knobs(&[("steps", 2.0)]), from: Some(("finetune".into(), [("finetune".to_string(), saved)].into())), corpus: shakespeare(), ..Options::default() };
    let d2 = Driver::new(Kind::Finetune, &o2).unwrap();
    assert_eq!(d2.info.stages[0].steps, 2);
}

#[test]
fn icl_and_zeroshot_give_the_clis_numbers() {
    // icl: a few steps on a small generated corpus, then the evaluation; and the evaluation again from the saved model.
    let k = knobs(&[("steps", 4.0), ("train_episodes", 400.0), ("eval_episodes", 12.0), ("eval_every", 2.0)]);
    let mut d = Driver::new(Kind::Icl, &Options { knobs: k.clone(), ..Options::default() }).unwrap();
    let ev = run_all(&mut d);
    let mut cfg: Value = serde_json::from_str(engine::ICL).unwrap();
    (cfg["train"]["steps"], cfg["icl"]["train_episodes"], cfg["icl"]["eval_episodes"], cfg["train"]["eval_interval"]) = (4.into(), 400.into(), 12.into(), 2.into());
    let path = tmp("icl.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let lines = tp(&["icl", "--config", &path, "--log-every", "1"]);
    let got = rows(&ev);
    for l in &lines {
        let stage = l["stage"].as_str().unwrap();
        let row = if stage == "eval" {
            got.iter().find(|r| r.0 == "eval/end")
        } else if l.get("loss").is_none() {
            got.iter().find(|r| r.0 == "pretrain/end")
        } else {
            got.iter().find(|r| r.0 == "pretrain" && r.1 == l["step"].as_u64().unwrap() as usize + 1 && !r.2)
        };
        same_numbers(l, &with_eval(&got, stage, l, row.unwrap()), &format!("icl {l}"));
    }
    let Some(Event::Stage { report, .. }) = ev.last() else { panic!("the evaluation's result") };
    assert_eq!(report["accuracy_by_k"], lines.last().unwrap()["accuracy_by_k"], "the whole report is the CLI's");
    let saved: BTreeMap<String, Vec<u8>> = [("pretrain".to_string(), d.save(Some("pretrain")).unwrap())].into();
    let mut d2 = Driver::new(Kind::Icl, &Options { knobs: k, from: Some(("eval".into(), saved)), ..Options::default() }).unwrap();
    assert_eq!(rows(&run_all(&mut d2)), got[got.len() - 1..].to_vec());

    // zeroshot: both models a few steps, then the held-out questions.
    let k = knobs(&[("steps", 3.0), ("eval_questions", 6.0), ("eval_every", 2.0)]);
    let mut d = Driver::new(Kind::Zeroshot, &Options { knobs: k, corpus: shakespeare(), ..Options::default() }).unwrap();
    let ev = run_all(&mut d);
    let got = rows(&ev);
    let mut cfg: Value = serde_json::from_str(engine::ZEROSHOT).unwrap();
    (cfg["train"]["steps"], cfg["zeroshot"]["eval_questions"], cfg["train"]["eval_interval"]) = (3.into(), 6.into(), 2.into());
    let path = tmp("zeroshot.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let lines = tp(&["zeroshot", "--config", &path, "--log-every", "1"]);
    for l in &lines {
        let stage = match (l["stage"].as_str().unwrap(), l["model"].as_str()) {
            ("eval", _) => "eval".to_string(),
            (_, Some(m)) => m.to_string(),
            _ => panic!("a pretraining line names its model: {l}"),
        };
        let row = if stage == "eval" || l.get("loss").is_none() {
            got.iter().find(|r| r.0 == format!("{stage}/end"))
        } else {
            got.iter().find(|r| r.0 == stage && r.1 == l["step"].as_u64().unwrap() as usize + 1 && !r.2)
        };
        let row = row.unwrap_or_else(|| panic!("no event for {l}"));
        same_numbers(l, &with_eval(&got, &stage, l, row), &format!("zeroshot {l}"));
    }
    assert_eq!(d.samples().unwrap().len(), lines.last().unwrap()["examples"].as_array().unwrap().len());
}

#[test]
fn bad_options_are_refused_naming_them() {
    let err = |kind: Kind, o: Options| Driver::new(kind, &o).err().expect("refused").to_string();
    let ck = || Some(pretrained());
    let e = err(Kind::Rlhf, Options { checkpoint: ck(), knobs: knobs(&[("beta", -1.0)]), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("knobs.beta") && e.contains("ppo.beta"), "{e}");
    let e = err(Kind::Rlhf, Options { checkpoint: ck(), knobs: knobs(&[("betta", 1.0)]), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("knobs.betta") && e.contains("beta"), "{e}");
    let e = err(Kind::Rlhf, Options { checkpoint: ck(), knobs: knobs(&[("k", 2.5)]), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("knobs.k") && e.contains("integer"), "{e}");
    let e = err(Kind::Rlhf, Options { checkpoint: ck(), knobs: knobs(&[("clip", 1.5)]), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("knobs.clip"), "{e}");
    let e = err(Kind::Rlhf, Options { corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("checkpoint"), "{e}");
    let e = err(Kind::Rlhf, Options { checkpoint: Some(b"not a checkpoint".to_vec()), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("checkpoint"), "{e}");
    let e = err(Kind::Rlhf, Options { from: Some(("ppo".into(), BTreeMap::new())), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("from.checkpoints.sft"), "{e}");
    let e = err(Kind::Rlhf, Options { from: Some(("nope".into(), BTreeMap::new())), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("from.stage"), "{e}");
    let e = err(Kind::Finetune, Options { task: Some("poetry".into()), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("task") && e.contains("verse_prose"), "{e}");
    let e = err(Kind::Finetune, Options { checkpoint: ck(), knobs: knobs(&[("aux_lm", -0.5)]), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("knobs.aux_lm"), "{e}");
    let e = err(Kind::Icl, Options { knobs: knobs(&[("eval_every", 0.0)]), ..Options::default() });
    assert!(e.contains("knobs.eval_every"), "{e}");
    let e = err(Kind::Icl, Options { checkpoint: ck(), ..Options::default() });
    assert!(e.contains("checkpoint"), "{e}");
    let e = err(Kind::Icl, Options { corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("corpus"), "{e}");
    let e = err(Kind::Rlhf, Options { checkpoint: ck(), corpus: None, ..Options::default() });
    assert!(e.contains("corpus"), "{e}");
    let e = err(Kind::Zeroshot, Options { knobs: knobs(&[("every", 0.0)]), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("knobs.every"), "{e}");
    let e = err(Kind::Rlhf, Options { checkpoint: ck(), recipe: Some("[1]".into()), corpus: shakespeare(), ..Options::default() });
    assert!(e.contains("recipe"), "{e}");
    assert!(Kind::parse("sft").unwrap_err().to_string().contains("kind"));
    // A stage not yet started has no checkpoint.
    let d = Driver::new(Kind::Rlhf, &Options { checkpoint: ck(), corpus: shakespeare(), ..Options::default() }).unwrap();
    assert!(d.save(Some("ppo")).unwrap_err().to_string().contains("not started"));
    assert!(d.save(Some("xyz")).unwrap_err().to_string().contains("stage"));
    // The facade's packed bytes: a length past the end is refused, not read.
    let e = transformer_playground::facade::new_recipe("rlhf", r#"{"checkpoint": 99}"#, b"abc").err().unwrap().to_string();
    assert!(e.contains("checkpoint"), "{e}");
    let e = transformer_playground::facade::new_recipe("rlhf", r#"{"knobz": {}}"#, b"").err().unwrap().to_string();
    assert!(e.contains("knobz"), "{e}");
}

#[test]
fn info_lists_every_kinds_stages_and_knobs() {
    for kind in Kind::ALL {
        let i = engine::info(kind).unwrap();
        assert_eq!(i.stages.iter().map(|s| s.name).collect::<Vec<_>>(), kind.stages());
        assert!(i.stages.iter().all(|s| s.steps > 0), "{kind:?}");
        let names: Vec<&str> = engine::KNOBS.iter().filter(|k| k.kind == kind).map(|k| k.name).collect();
        assert_eq!(i.knobs.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), names.iter().copied().collect());
        assert!(i.knobs.values().all(|v| v.is_number()), "{kind:?}: {:?}", i.knobs);
    }
    assert_eq!(engine::info(Kind::Rlhf).unwrap().stages.iter().map(|s| s.steps).collect::<Vec<_>>(), [150, 150, 40]);
}
