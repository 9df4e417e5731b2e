//! GPT-2's zero-shot recipe (`recipes::zeroshot`): the templated lines are inserted exactly as documented (checked
//! by code written here, not the recipe's), held-out questions never reach the pretraining text, the answers follow
//! the rule, the metric scores known answers, bad input is refused by name, a tiny CLI run end to end, and the
//! claim: the model that saw the pattern answers held-out questions better than the baseline that never did.

use std::process::Command;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::backend::BackendKind;
use transformer_playground::recipes::zeroshot::{self, accuracy, majority, Recipe, Task};
use transformer_playground::Error;

const RECIPE: &str = include_str!("../configs/recipes/zeroshot.json");
const SHAKESPEARE: &str = include_str!("../www/data/tinyshakespeare.txt");

fn recipe(patch: impl FnOnce(&mut serde_json::Value)) -> Result<Recipe, Error> {
    let mut v: serde_json::Value = serde_json::from_str(RECIPE).unwrap();
    patch(&mut v);
    Recipe::from_json(&v.to_string())
}

/// The held-out rule, written again: FNV-1a 64 of the word's bytes, 0 mod held_out_mod.
fn held_out(word: &str, m: u64) -> bool {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in word.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h.is_multiple_of(m)
}

#[test]
fn insertion_is_as_documented() {
    let r = recipe(|_| {}).unwrap();
    let z = r.zeroshot.clone();
    let c = r.corpus(SHAKESPEARE).unwrap();
    // Same size; the baseline is the plain corpus's prefix; the pattern text ends at a whole line.
    assert_eq!(c.with_pattern.len(), c.baseline.len());
    assert!(SHAKESPEARE.starts_with(&c.baseline));
    assert!(c.with_pattern.ends_with('\n') && c.with_pattern.len() <= SHAKESPEARE.len());
    assert!(SHAKESPEARE.len() - c.with_pattern.len() < 200, "cut at the last whole line within the corpus's length");
    // Positions: every (every + 1)-th line of the pattern text is templated and the others are the corpus's lines
    // in order; nothing else starts with "Q: ".
    let lines: Vec<&str> = c.with_pattern.lines().collect();
    let corpus_lines: Vec<&str> = SHAKESPEARE.lines().collect();
    let (mut q, mut plain) = (0usize, 0usize);
    for (i, l) in lines.iter().enumerate() {
        if (i + 1) % (z.every + 1) == 0 {
            let rest = l.strip_prefix("Q: first letter of ").expect("a templated line");
            let (word, ans) = rest.split_once(" A: ").unwrap();
            assert_eq!(ans, &word[..1]);
            assert!((z.min_len..=z.max_len).contains(&word.len()) && word.chars().all(|ch| ch.is_ascii_lowercase()));
            assert!(!held_out(word, z.held_out_mod), "{word} is held out");
            assert!(SHAKESPEARE.contains(word));
            q += 1;
        } else {
            assert_eq!(*l, corpus_lines[plain]);
            plain += 1;
        }
    }
    assert_eq!(q, c.inserted);
    // The count: one per `every` corpus lines kept, less the last one if the cut fell between a corpus line and
    // the templated line after it.
    let cut_before_q = !lines.last().unwrap().starts_with("Q: ") && plain % z.every == 0;
    assert_eq!(c.inserted, plain / z.every - cut_before_q as usize);
    assert!(c.inserted > 7000, "{}", c.inserted);
    // The words drawn vary: a seeded draw, not one word.
    let distinct: std::collections::BTreeSet<&str> = lines.iter().filter_map(|l| l.strip_prefix("Q: ")).collect();
    assert!(distinct.len() > 3000, "{}", distinct.len());
}

#[test]
fn held_out_questions_never_in_pretraining_text() {
    let r = recipe(|_| {}).unwrap();
    let c = r.corpus(SHAKESPEARE).unwrap();
    assert!(!c.held_out_words.is_empty() && c.held_out_words.iter().all(|w| held_out(w, r.zeroshot.held_out_mod)));
    assert!(c.train_words.iter().all(|w| !held_out(w, r.zeroshot.held_out_mod)));
    // Independent: every question the evaluation asks, as text, is absent from what the model trains on.
    let qs = r.questions(SHAKESPEARE, &c).unwrap();
    assert_eq!(qs.len(), r.zeroshot.eval_questions);
    for (prompt, truth) in &qs {
        let tail = &prompt[prompt.rfind("Q: ").unwrap()..];
        assert!(tail.ends_with(" A:"));
        assert!(!c.with_pattern.contains(&format!("{tail} ")), "{tail}");
        assert_eq!(prompt.len(), r.zeroshot.context + tail.len());
        assert!(prompt.len() + truth.len() + 2 <= r.config.model.ctx_len);
        // The context is corpus text from its validation part, ending at a line.
        let ctx = &prompt[..r.zeroshot.context];
        assert!(ctx.ends_with('\n') && SHAKESPEARE[SHAKESPEARE.len() * 9 / 10..].contains(ctx));
    }
}

#[test]
fn seeded_and_deterministic() {
    let a = recipe(|_| {}).unwrap().corpus(SHAKESPEARE).unwrap();
    let b = recipe(|_| {}).unwrap().corpus(SHAKESPEARE).unwrap();
    let c = recipe(|v| v["seed"] = 2.into()).unwrap().corpus(SHAKESPEARE).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.with_pattern, c.with_pattern);
    // A corpus that is not ASCII is refused, not cut mid-character.
    let r = recipe(|_| {}).unwrap();
    assert!(matches!(r.corpus(&format!("{}é\n", &SHAKESPEARE[..100_000])), Err(Error::Invalid(_))));
    // The words differ, so the templated lines' lengths and the cut do: about as many lines either way.
    assert!(a.inserted.abs_diff(c.inserted) < 20, "{} {}", a.inserted, c.inserted);
}

#[test]
fn answers_follow_the_rule() {
    assert_eq!(Task::Capitalise.answer("romeo"), "ROMEO");
    assert_eq!(Task::FirstLetter.answer("romeo"), "r");
    assert_eq!(Task::Reverse.answer("romeo"), "oemor");
    assert_eq!(zeroshot::template(Task::Capitalise, "abc"), "Q: capitalise abc A: ABC");
    assert_eq!(zeroshot::template(Task::FirstLetter, "abc"), "Q: first letter of abc A: a");
    assert_eq!(zeroshot::template(Task::Reverse, "abc"), "Q: reverse abc A: cba");
    for task in ["capitalise", "reverse"] {
        let r = recipe(|v| v["zeroshot"]["task"] = task.into()).unwrap();
        let c = r.corpus(SHAKESPEARE).unwrap();
        for l in c.with_pattern.lines().filter(|l| l.starts_with("Q: ")) {
            let (q, a) = l[3..].split_once(" A: ").unwrap();
            let word = q.rsplit(' ').next().unwrap();
            assert_eq!(a, r.zeroshot.task.answer(word));
        }
    }
}

#[test]
fn metric_scores_known_answers() {
    let truths: Vec<String> = ["ABC", "DEF", "ABC", "GH"].iter().map(|s| s.to_string()).collect();
    assert_eq!(accuracy(&truths, &truths), 1.0);
    let wrong = vec!["ZZZ".to_string(); 4];
    assert_eq!(accuracy(&wrong, &truths), 0.0);
    let half: Vec<String> = ["ABC", "x", "ABC", "y"].iter().map(|s| s.to_string()).collect();
    assert_eq!(accuracy(&half, &truths), 0.5);
    assert_eq!(majority(&truths), 0.5);
    assert_eq!(zeroshot::top_answers(&truths, 2), vec![("ABC".to_string(), 0.5), ("DEF".to_string(), 0.25)]);
}

#[test]
fn bad_input_is_named() {
    let field = |e: Error| match e {
        Error::Config { field, .. } => field,
        e => format!("{e}"),
    };
    let cases: [(&str, serde_json::Value); 6] = [
        ("every", 0.into()),
        ("min_len", 0.into()),
        ("max_len", 2.into()),
        ("held_out_mod", 1.into()),
        ("eval_questions", 0.into()),
        ("context", 60.into()),
    ];
    for (name, value) in cases {
        let e = recipe(|v| v["zeroshot"][name] = value.clone()).unwrap_err();
        assert_eq!(field(e), format!("zeroshot.{name}"));
    }
    let e = recipe(|v| v["model"]["arch"] = "bert".into()).unwrap_err();
    assert_eq!(field(e), "model.arch");
    assert!(matches!(recipe(|v| v["zeroshot"]["task"] = "sing".into()), Err(Error::ConfigParse(_))));
    assert!(matches!(recipe(|v| v["zeroshot"]["typo"] = 1.into()), Err(Error::ConfigParse(_))));
    assert!(matches!(recipe(|v| { v.as_object_mut().unwrap().remove("zeroshot"); }), Err(Error::ConfigParse(_))));
}

/// GPT-2's claim in miniature, at a size a test affords: the model pretrained on the text with the templated lines
/// answers the 200 held-out questions (words never asked about) better than the same model trained on as much plain
/// Shakespeare, with no weight update. At this size (d_model 32, 500 steps of 16 windows) what transfers is the
/// format and the prior over first letters — seeds 1–4 scored 0.13, 0.10, 0.115, 0.09 (mostly `s`), the baseline 0
/// (it ends the line) — not yet the rule: the majority answer scores 0.135 (docs/RECIPES.md §2 for the recipe's size,
/// where the rule shows).
#[test]
fn the_model_that_saw_the_pattern_answers_held_out_questions_better_than_the_baseline() {
    for seed in [1, 2] {
        let r = recipe(|v| {
            v["model"]["d_model"] = 32.into();
            v["train"]["batch_size"] = 16.into();
            v["train"]["steps"] = ZS_STEPS.into();
            v["train"]["warmup"] = 20.into();
            v["seed"] = seed.into();
        })
        .unwrap();
        let c = r.corpus(SHAKESPEARE).unwrap();
        let (mut pattern, mut baseline) = r.runs(&c, BackendKind::Cpu).unwrap();
        for _ in 0..ZS_STEPS {
            pattern.step().unwrap();
            baseline.step().unwrap();
        }
        let tok = Recipe::tokenizer(&c).unwrap();
        let e = zeroshot::evaluate(&pattern.model, &baseline.model, &Cpu, &tok, &r, SHAKESPEARE, &c).unwrap();
        eprintln!(
            "seed {seed}, {ZS_STEPS} steps: accuracy {:.3} (top {:?}), baseline {:.3} (top {:?}), chance {:.3}",
            e.accuracy, e.top_answers, e.baseline_accuracy, e.baseline_top_answers, e.chance
        );
        assert!(e.accuracy > e.baseline_accuracy + 0.05, "seed {seed}: {} vs the baseline's {}", e.accuracy, e.baseline_accuracy);
    }
}

/// Pretraining steps of each model in the test above.
const ZS_STEPS: usize = 500;

fn tp(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tp")).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn cli_lines_and_rerun() {
    let dir = std::env::temp_dir().join(format!("tp-zeroshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tiny.json");
    let mut v: serde_json::Value = serde_json::from_str(RECIPE).unwrap();
    v["model"]["d_model"] = 16.into();
    v["model"]["n_layers"] = 1.into();
    v["train"]["batch_size"] = 4.into();
    v["train"]["eval_interval"] = 2.into();
    v["train"]["eval_iters"] = 1.into();
    v["zeroshot"]["eval_questions"] = 4.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = dir.join("models");
    let args = ["zeroshot", "--config", cfg, "--steps", "3", "--log-every", "1"];
    let (ok, stdout, stderr) = tp(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pre: Vec<&serde_json::Value> = lines.iter().filter(|l| l["stage"] == "pretrain").collect();
    for model in ["pattern", "baseline"] {
        let mine: Vec<_> = pre.iter().filter(|l| l["model"] == model).collect();
        assert_eq!(mine.len(), 4, "{model}: steps 0..=3");
        assert!(mine[..3].iter().all(|l| l["loss"].is_number() && l["step"].is_number()));
        assert!(mine[3]["val_loss"].is_number());
    }
    let eval = lines.last().unwrap();
    assert_eq!(eval["stage"], "eval");
    for k in ["accuracy", "baseline_accuracy", "chance"] {
        let x = eval[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k} = {x}");
    }
    assert_eq!(eval["questions"], 4);
    assert!(!eval["examples"].as_array().unwrap().is_empty());
    // Seeded: the same lines again; the saved models evaluate to the same eval line.
    let (_, again, _) = tp(&args);
    assert_eq!(stdout, again);
    let (ok, evaluated, stderr) = tp(&["zeroshot", "--config", cfg, "--checkpoints", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(evaluated.trim(), stdout.lines().last().unwrap());
    // Bad input: refused, named, no panic.
    let (ok, _, stderr) = tp(&["zeroshot", "--config", cfg, "--checkpoints", dir.join("none").to_str().unwrap()]);
    assert!(!ok && stderr.contains("pattern.ckpt") && !stderr.contains("panick"), "{stderr}");
    let (ok, _, stderr) = tp(&["zeroshot", "--config", cfg, "--steps", "0"]);
    assert!(!ok && stderr.contains("train.steps") && !stderr.contains("panick"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
