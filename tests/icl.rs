//! GPT-3's in-context learning recipe (`recipes::icl`): the generated corpus is seeded, every pair follows its
//! episode's rule (checked by code written here, not the generator's), held-out rules never reach training; the
//! metrics are tested on answers and attention patterns whose scores are known; a tiny run end to end.

use transformer_playground::backend::{cpu::Cpu, BackendKind, Reference};
use transformer_playground::data::Dataset;
use transformer_playground::recipes::engine::{Driver, Kind, Options};
use transformer_playground::recipes::icl::attention::induction_targets;
use transformer_playground::recipes::icl::eval::{self, score};
use transformer_playground::recipes::icl::rules::{self, Family, RuleSplit};
use transformer_playground::recipes::icl::Recipe;
use transformer_playground::rng::Rng;
use transformer_playground::Error;

const RECIPE: &str = include_str!("../configs/recipes/icl.json");

fn recipe(patch: impl FnOnce(&mut serde_json::Value)) -> Result<Recipe, Error> {
    let mut v: serde_json::Value = serde_json::from_str(RECIPE).unwrap();
    patch(&mut v);
    Recipe::from_json(&v.to_string())
}

/// The generator's tests draw from a shape of their own, whatever the shipped recipe's: every family, inputs of
/// three letters out of eight, eight pairs (64 characters), a small corpus.
fn small() -> Recipe {
    recipe(|v| {
        v["model"]["ctx_len"] = 64.into();
        v["icl"] = serde_json::json!({ "alphabet": 8, "length": 3, "pairs": 8,
            "families": ["substitution", "shift", "affine", "reverse_shift"], "train_episodes": 400,
            "eval_episodes": 200, "induction_sequences": 4 });
    })
    .unwrap()
}

#[test]
fn the_shipped_recipe_is_valid() {
    let r = recipe(|_| {}).unwrap();
    assert!(r.episode_chars() <= r.config.model.ctx_len);
}

fn train_and_val(d: &Dataset) -> (Vec<u32>, Vec<u32>) {
    match d {
        Dataset::Text { train, val, mlm: None, .. } => (train.clone(), val.clone()),
        _ => panic!("a recipe trains a gpt on text"),
    }
}

#[test]
fn the_corpus_is_the_same_for_a_seed_and_another_for_another_seed() {
    let a = train_and_val(&small().dataset().unwrap());
    assert_eq!(a, train_and_val(&small().dataset().unwrap()));
    let mut other = small();
    other.config.seed += 1;
    let b = train_and_val(&other.dataset().unwrap());
    assert_ne!(a.0, b.0);
    assert_ne!(a.1, b.1);
    // The evaluation's episodes too.
    assert_eq!(eval::eval_episodes(&small()).unwrap(), eval::eval_episodes(&small()).unwrap());
    assert_ne!(eval::eval_episodes(&small()).unwrap(), eval::eval_episodes(&other).unwrap());
}

/// Letters of a string as 0..n, counted from `first` (`a` for inputs, `A` for outputs); None for a character
/// outside the n letters.
fn parse_letters(s: &str, n: usize, first: u8) -> Option<Vec<usize>> {
    s.bytes().map(|b| (b >= first && ((b - first) as usize) < n).then(|| (b - first) as usize)).collect()
}

/// Whether some per-letter map, one-to-one, sends every input to its output, after reversing the input or not.
/// Every family is such a map (a permutation of the letters); this does not use the generator's code.
fn one_rule_explains(pairs: &[(Vec<usize>, Vec<usize>)], n: usize, reverse: bool) -> bool {
    let (mut fwd, mut back) = (vec![None; n], vec![None; n]);
    for (x, y) in pairs {
        let x: Vec<usize> = if reverse { x.iter().rev().copied().collect() } else { x.clone() };
        for (&a, &b) in x.iter().zip(y) {
            if *fwd[a].get_or_insert(b) != b || *back[b].get_or_insert(a) != a {
                return false;
            }
        }
    }
    true
}

#[test]
fn every_episode_of_the_corpus_shows_one_rule_on_well_formed_pairs() {
    let r = small();
    let text = r.corpus(RuleSplit::Train, 300, &mut Rng::new(9)).unwrap();
    let (n, len) = (r.icl.alphabet, r.icl.length);
    let episodes: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(episodes.len(), 300);
    for ep in episodes {
        let pairs: Vec<(Vec<usize>, Vec<usize>)> = ep
            .split('|')
            .map(|p| {
                let (x, y) = p.split_once('>').unwrap_or_else(|| panic!("no '>' in {p:?}"));
                (parse_letters(x, n, b'a').expect(x), parse_letters(y, n, b'A').expect(y))
            })
            .collect();
        assert_eq!(pairs.len(), r.icl.pairs, "{ep}");
        assert!(pairs.iter().all(|(x, y)| x.len() == len && y.len() == len), "{ep}");
        assert!(one_rule_explains(&pairs, n, false) || one_rule_explains(&pairs, n, true), "no one rule explains {ep}");
    }
    // The checker can fail: two different shifts in one episode are no one rule.
    let shift = |x: &[usize], r: usize| (x.to_vec(), x.iter().map(|c| (c + r) % n).collect::<Vec<usize>>());
    let mixed = [shift(&[0, 1, 2], 1), shift(&[0, 3, 4], 2)];
    assert!(!one_rule_explains(&mixed, n, false) && !one_rule_explains(&mixed, n, true));
}

/// The family's closed form, from its parameters (module doc of `rules`), written again here.
fn family_explains(f: Family, table: &[u8], reverse: bool, n: usize) -> bool {
    let t: Vec<usize> = table.iter().map(|&c| c as usize).collect();
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let is_perm = { let mut s = t.clone(); s.sort(); s == (0..n).collect::<Vec<_>>() };
    match f {
        Family::Substitution => !reverse && is_perm && t != (0..n).collect::<Vec<_>>(),
        Family::Shift => !reverse && (1..n).any(|r| (0..n).all(|c| t[c] == (c + r) % n)),
        Family::Affine => !reverse && (2..n).filter(|&a| gcd(a, n) == 1).any(|a| (0..n).any(|b| (0..n).all(|c| t[c] == (a * c + b) % n))),
        Family::ReverseShift => reverse && (0..n).any(|r| (0..n).all(|c| t[c] == (c + r) % n)),
    }
}

#[test]
fn each_pair_follows_its_rule_and_each_rule_is_of_its_family() {
    let r = small();
    let shape = r.icl.shape();
    let mut rng = Rng::new(4);
    let mut seen = std::collections::BTreeSet::new();
    for split in [RuleSplit::Train, RuleSplit::HeldOut] {
        for _ in 0..400 {
            let ep = rules::episode(&shape, split, &mut rng).unwrap();
            let n = r.icl.alphabet;
            assert!(family_explains(ep.rule.family, &ep.rule.table, ep.rule.reverse, n), "{:?}", ep.rule);
            seen.insert(ep.rule.family);
            for (x, y) in &ep.pairs {
                let mut want: Vec<u8> = x.iter().map(|&c| ep.rule.table[c as usize]).collect();
                if ep.rule.reverse {
                    want.reverse();
                }
                assert_eq!(y, &want);
            }
            // The text says the same pairs.
            let text = rules::episode_text(&ep);
            let shown: Vec<String> = ep.pairs.iter().map(|(x, y)| format!("{}>{}", rules::letters(x), rules::capitals(y))).collect();
            assert_eq!(text, format!("{}\n", shown.join("|")));
        }
    }
    assert_eq!(seen.len(), 4, "every family drawn");
}

#[test]
fn held_out_rules_never_appear_in_training_and_every_family_has_both() {
    let r = small();
    let shape = r.icl.shape();
    let n = r.icl.alphabet;
    let mut rng = Rng::new(11);
    let mut draw = |split| {
        (0..3000).map(|_| rules::episode(&shape, split, &mut rng).unwrap().rule).map(|rule| (rule.reverse, rule.table)).collect::<std::collections::BTreeSet<_>>()
    };
    let (train, held) = (draw(RuleSplit::Train), draw(RuleSplit::HeldOut));
    assert!(train.len() > 100 && held.len() > 100, "{} {}", train.len(), held.len());
    assert!(train.is_disjoint(&held), "a function drawn on both sides");
    // The split is the function's, whatever family draws it: the small families' rules, drawn as substitutions
    // where they can be (no reversal), fall on the same side.
    for f in [Family::Shift, Family::Affine, Family::ReverseShift] {
        let all = rules::enumerate(f, n).unwrap();
        let held_out = all.iter().filter(|r| r.is_held_out()).count();
        assert!(held_out > 0 && held_out < all.len(), "{f:?}: {held_out} of {} held out", all.len());
        for rule in all {
            let as_substitution = rules::Rule { family: Family::Substitution, ..rule.clone() };
            assert_eq!(as_substitution.is_held_out(), rule.is_held_out());
        }
    }
    // A quarter of the substitutions, about.
    let subs: Vec<bool> = (0..4000)
        .map(|_| {
            let mut t: Vec<u8> = (0..n as u8).collect();
            for i in (1..n).rev() {
                t.swap(i, rng.below(i + 1));
            }
            rules::Rule { family: Family::Substitution, reverse: false, table: t }.is_held_out()
        })
        .collect();
    let share = subs.iter().filter(|&&h| h).count() as f64 / subs.len() as f64;
    assert!((share - 0.25).abs() < 0.03, "{share}");
    // The validation corpus and the evaluation are held-out rules only.
    assert!(eval::eval_episodes(&r).unwrap().iter().all(|e| e.rule.is_held_out()));
}

#[test]
fn prompts_show_k_examples_then_the_query() {
    let r = small();
    let ep = rules::episode(&r.icl.shape(), RuleSplit::HeldOut, &mut Rng::new(2)).unwrap();
    let text = rules::episode_text(&ep);
    for k in 0..r.icl.pairs {
        let p = rules::prompt(&ep, k);
        assert_eq!(p.matches('|').count(), k);
        let q = rules::letters(&ep.pairs[r.icl.pairs - 1].0);
        assert!(p.starts_with('\n') && p.ends_with(&format!("{q}>")));
        // Prompt and answer are the episode's text with the middle pairs left out.
        let full = format!("{p}{}\n", rules::answer(&ep));
        if k == r.icl.pairs - 1 {
            assert_eq!(full, format!("\n{text}"));
        }
        assert!(full.len() <= r.config.model.ctx_len + 1);
    }
}

#[test]
fn the_accuracy_of_a_perfect_oracle_is_one_and_of_a_constant_wrong_answer_zero() {
    let r = small();
    let eps = eval::eval_episodes(&r).unwrap();
    let truths: Vec<String> = eps.iter().map(rules::answer).collect();
    // The oracle applies the rule to the query.
    let oracle: Vec<String> = eps.iter().map(|e| rules::capitals(&e.rule.apply(&e.pairs[e.pairs.len() - 1].0))).collect();
    assert_eq!(score(&oracle, &truths), eval::Score { exact: 1.0, chars: 1.0 });
    // A constant of a character no answer holds.
    let wrong = vec!["|||".to_string(); truths.len()];
    assert_eq!(score(&wrong, &truths), eval::Score { exact: 0.0, chars: 0.0 });
    // Two of three characters right in every answer: exact 0, chars 2/3; a short answer misses the rest.
    let two: Vec<String> = truths.iter().map(|t| format!("{}|", &t[..2])).collect();
    let s = score(&two, &truths);
    assert!(s.exact == 0.0 && (s.chars - 2.0 / 3.0).abs() < 1e-6, "{s:?}");
    let short: Vec<String> = truths.iter().map(|t| t[..1].to_string()).collect();
    assert!((score(&short, &truths).chars - 1.0 / 3.0).abs() < 1e-6);
    // Half right.
    let half: Vec<String> = truths.iter().enumerate().map(|(i, t)| if i % 2 == 0 { t.clone() } else { wrong[i].clone() }).collect();
    assert!((score(&half, &truths).exact - 0.5).abs() < 1e-6);
}

#[test]
fn the_induction_score_of_hand_made_attention_patterns() {
    let (r, heads) = (5, 3);
    let t = 2 * r;
    let mut probs = vec![0.0f32; heads * t * t];
    for i in 0..t {
        let row = |h: usize| (h * t + i) * t;
        // Head 0: an induction head — from i in the second copy to i − r + 1; elsewhere to the first token.
        probs[row(0) + if i >= r { i - r + 1 } else { 0 }] = 1.0;
        // Head 1: a previous-token head.
        probs[row(1) + i.saturating_sub(1)] = 1.0;
        // Head 2: uniform over the causal prefix.
        for j in 0..=i {
            probs[row(2) + j] = 1.0 / (i + 1) as f32;
        }
    }
    let s = eval::induction_score(&probs, heads, t, r);
    let uniform: f32 = (r..t).map(|i| 1.0 / (i + 1) as f32).sum::<f32>() / r as f32;
    assert_eq!(s[0], 1.0);
    assert_eq!(s[1], 0.0);
    assert!((s[2] - uniform).abs() < 1e-6, "{} vs {uniform}", s[2]);
    // Half the weight on the induction target: half the score.
    let mut half = vec![0.0f32; t * t];
    for i in 0..t {
        half[i * t] += 0.5;
        half[i * t + if i >= r { i - r + 1 } else { 0 }] += 0.5;
    }
    assert_eq!(eval::induction_score(&half, 1, t, r), vec![0.5]);
}

#[test]
fn a_bad_recipe_is_refused_naming_the_field() {
    let base = serde_json::to_value(small()).unwrap();
    let of = |patch: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base["config"].clone();
        v["icl"] = base["icl"].clone();
        patch(&mut v);
        Recipe::from_json(&v.to_string())
    };
    let refused = |patch: &dyn Fn(&mut serde_json::Value), field: &str| {
        let e = of(patch).unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    };
    refused(&|v| v["icl"]["alphabet"] = 2.into(), "icl.alphabet");
    refused(&|v| v["icl"]["alphabet"] = 27.into(), "icl.alphabet");
    refused(&|v| v["icl"]["length"] = 0.into(), "icl.length");
    refused(&|v| v["icl"]["length"] = 1.into(), "icl.families"); // reverse_shift of one letter is a shift
    refused(&|v| v["icl"]["pairs"] = 9.into(), "icl.pairs"); // 9 × 8 = 72 characters > ctx_len 64
    refused(&|v| v["icl"]["train_episodes"] = 10.into(), "icl.train_episodes");
    refused(&|v| v["icl"]["train_episodes"] = 900_000.into(), "icl.train_episodes"); // 57.6 M characters
    refused(&|v| v["icl"]["eval_episodes"] = 0.into(), "icl.eval_episodes");
    refused(&|v| v["icl"]["induction_sequences"] = 0.into(), "icl.induction_sequences");
    refused(&|v| v["icl"]["families"] = serde_json::json!([]), "icl.families");
    refused(&|v| v["icl"]["families"] = serde_json::json!(["shift", "shift"]), "icl.families");
    refused(&|v| v["icl"]["families"] = serde_json::json!(["rot13"]), "rot13");
    refused(&|v| v["icl"]["temperature"] = 1.into(), "temperature");
    refused(&|v| { v.as_object_mut().unwrap().remove("icl"); }, "icl");
    refused(&|v| v["model"]["arch"] = "bert".into(), "model.arch");
    refused(&|v| v["data"] = serde_json::json!({"task": "reverse"}), "data.task");
    refused(&|v| v["model"]["n_heads"] = 5.into(), "model.n_heads");
    refused(&|v| v["train"]["batch_size"] = 0.into(), "train.batch_size");
    // A family with no rule on one side of the split at an alphabet size is refused, naming it; one with rules on
    // both sides is accepted.
    let mut refusals = 0;
    for n in 3..=12usize {
        for f in [Family::Shift, Family::Affine, Family::ReverseShift] {
            let all = rules::enumerate(f, n).unwrap();
            let both = all.iter().any(|r| r.is_held_out()) && all.iter().any(|r| !r.is_held_out());
            let got = of(&|v| {
                v["icl"]["alphabet"] = n.into();
                v["icl"]["families"] = serde_json::json!([f]);
            });
            match got {
                Ok(_) => assert!(both, "{f:?} over {n} letters accepted"),
                Err(e) => {
                    assert!(!both && e.to_string().contains("icl.families") && e.to_string().contains(f.name()), "{f:?}, {n}: {e}");
                    refusals += 1;
                }
            }
        }
    }
    assert!(refusals > 0, "some small family has rules on one side only");
}

#[test]
fn a_checkpoint_of_another_vocabulary_is_refused() {
    let r = small();
    let mut other = small();
    other.icl.alphabet = 6;
    let run = other.run(BackendKind::Cpu).unwrap();
    let e = r.check_model(&run.model, run.data.tokenizer()).unwrap_err().to_string();
    assert!(e.contains("vocabulary") && e.contains("icl.alphabet"), "{e}");
    assert!(eval::evaluate(&run.model, &Cpu, run.data.tokenizer(), &r).is_err());
}

// The command line: `tp icl`.

fn tp(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-icl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// A recipe of a few seconds: the shipped one, shrunk, written to a file.
fn tiny_recipe_file(name: &str, patch: impl FnOnce(&mut serde_json::Value)) -> String {
    let path = tmp(name);
    std::fs::write(&path, tiny_recipe(patch).to_string()).unwrap();
    path
}

/// The shipped recipe, shrunk.
fn tiny_recipe(patch: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(RECIPE).unwrap();
    v["model"]["d_model"] = 16.into();
    v["model"]["n_layers"] = 2.into();
    v["model"]["n_heads"] = 2.into();
    v["model"]["n_kv_heads"] = 2.into();
    v["model"]["ctx_len"] = 32.into();
    v["train"]["batch_size"] = 4.into();
    v["train"]["steps"] = 4.into();
    v["train"]["eval_interval"] = 2.into();
    v["train"]["eval_iters"] = 2.into();
    v["icl"] = serde_json::json!({ "alphabet": 6, "length": 1, "pairs": 8, "families": ["substitution", "shift", "affine"],
        "train_episodes": 200, "eval_episodes": 12, "induction_sequences": 2 });
    patch(&mut v);
    v
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).expect(l)).collect()
}

#[test]
fn tp_icl_prints_pretrain_and_eval_lines_the_same_on_a_rerun_and_from_its_checkpoint() {
    let cfg = tiny_recipe_file("tiny.json", |_| {});
    let ck = tmp("tiny.safetensors");
    let args = ["icl", "--config", &cfg, "--steps", "3", "--seed", "5", "--log-every", "1", "--out", &ck];
    let (ok, out, err) = tp(&args);
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    let pretrain: Vec<&serde_json::Value> = lines.iter().filter(|l| l["stage"] == "pretrain").collect();
    assert_eq!(pretrain.len(), 4, "steps 0, 1, 2 and the final validation: {out}");
    for (i, l) in pretrain.iter().enumerate() {
        assert_eq!(l["step"], i);
    }
    assert!(pretrain[0]["loss"].as_f64().unwrap() > 0.0 && pretrain[0]["val_loss"].as_f64().is_some());
    assert!(pretrain[3]["val_loss"].as_f64().is_some());
    let eval = lines.last().unwrap();
    assert_eq!(eval["stage"], "eval");
    let by_k = |key: &str| eval[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    assert_eq!(eval["k"], serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7]));
    for key in ["accuracy_by_k", "char_accuracy_by_k"] {
        assert_eq!(by_k(key).len(), 8);
        assert!(by_k(key).iter().all(|a| (0.0..=1.0).contains(a)), "{key}");
    }
    assert_eq!(eval["baseline"]["k0_accuracy"], eval["accuracy_by_k"][0]);
    assert!((eval["baseline"]["chance"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-6);
    assert_eq!(eval["by_family"].as_object().unwrap().len(), 3);
    let ind = &eval["induction"];
    let table = ind["scores"].as_array().unwrap();
    assert_eq!((table.len(), table[0].as_array().unwrap().len()), (2, 2), "layers × heads");
    let best = table[ind["best"]["layer"].as_u64().unwrap() as usize][ind["best"]["head"].as_u64().unwrap() as usize].clone();
    assert_eq!(best, ind["best"]["score"]);
    assert_eq!(ind["length"], 16);
    let lookup = eval["lookup"]["scores"].as_array().unwrap();
    assert_eq!((lookup.len(), lookup[0].as_array().unwrap().len()), (2, 2), "layers × heads");
    assert!(eval["lookup"]["episodes"].as_u64().unwrap() > 0);

    // The same seed, the same lines; another seed, others.
    let (ok, again, err) = tp(&args);
    assert!(ok, "{err}");
    assert_eq!(out, again);
    let (_, other, _) = tp(&["icl", "--config", &cfg, "--steps", "3", "--seed", "6", "--log-every", "1"]);
    assert_ne!(out, other);

    // From the checkpoint: the evaluation alone, the same one.
    let (ok, from_ck, err) = tp(&["icl", "--config", &cfg, "--seed", "5", "--checkpoint", &ck]);
    assert!(ok, "{err}");
    assert_eq!(from_ck.lines().collect::<Vec<_>>(), vec![out.lines().last().unwrap()]);
}

#[test]
fn tp_icl_refuses_bad_input_naming_it() {
    let fails = |args: &[&str], says: &str| {
        let (ok, out, err) = tp(args);
        assert!(!ok && out.is_empty() && err.contains(says) && !err.contains("panicked"), "{args:?}: {err}");
    };
    let cfg = tiny_recipe_file("ok.json", |_| {});
    fails(&["icl", "--config", &tmp("missing.json")], "missing.json");
    fails(&["icl", "--config", &tiny_recipe_file("bad.json", |v| v["icl"]["alphabet"] = 40.into())], "icl.alphabet");
    fails(&["icl", "--config", &tiny_recipe_file("nosec.json", |v| { v.as_object_mut().unwrap().remove("icl"); })], "icl");
    fails(&["icl", "--config", &tiny_recipe_file("long.json", |v| v["icl"]["pairs"] = 20.into())], "icl.pairs");
    fails(&["icl", "--config", &cfg, "--steps", "0"], "train.steps");
    fails(&["icl", "--config", &cfg, "--out", &format!("{}/no/such/dir/x.safetensors", tmp(""))], "--out");
    fails(&["icl", "--config", &cfg, "--checkpoint", &tmp("missing.safetensors")], "missing.safetensors");
    fails(&["icl", "--config", &cfg, "--checkpoint", &tmp("whatever.safetensors"), "--steps", "3"], "--checkpoint");
    // A checkpoint of another vocabulary.
    let other = tiny_recipe_file("other.json", |v| v["icl"]["alphabet"] = 4.into());
    let ck = tmp("other.safetensors");
    let (ok, _, err) = tp(&["icl", "--config", &other, "--steps", "1", "--out", &ck]);
    assert!(ok, "{err}");
    fails(&["icl", "--config", &cfg, "--checkpoint", &ck], "vocabulary");
}

#[test]
fn tp_icl_into_a_closed_pipe_keeps_training_and_writes_its_checkpoint() {
    use std::io::Read;
    let cfg = tiny_recipe_file("pipe.json", |_| {});
    let ck = tmp("pipe.safetensors");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tp"))
        .args(["icl", "--config", &cfg, "--steps", "3", "--log-every", "1", "--out", &ck])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tp");
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let loaded = transformer_playground::checkpoint::load(&std::fs::read(&ck).expect("the checkpoint was written")).unwrap();
    assert_eq!(loaded.step, 3, "all the steps ran");
}

#[test]
fn look_up_targets_are_the_earlier_answers_to_the_same_letter_and_score_as_hand_made_patterns_say() {
    // A substitution over three letters, one-letter inputs: a→B, b→C, c→A; pairs a, b, a, c, a.
    let rule = rules::Rule { family: Family::Substitution, reverse: false, table: vec![1, 2, 0] };
    let pairs = [0u8, 1, 0, 2, 0].iter().map(|&x| (vec![x], rule.apply(&[x]))).collect();
    let ep = rules::Episode { rule, pairs };
    let text = format!("\n{}", rules::episode_text(&ep).trim_end());
    assert_eq!(text, "\na>B|b>C|a>B|c>A|a>B");
    let targets = eval::lookup_targets(&ep, 1);
    // Pair 2's '>' (position 10) looks back at pair 0's answer (3); pair 4's '>' (18) at pairs 0 and 2 (3, 11).
    assert_eq!(targets, vec![(10, vec![3]), (18, vec![3, 11])]);
    for (p, ts) in &targets {
        assert_eq!(text.as_bytes()[*p], b'>');
        assert!(ts.iter().all(|&s| text.as_bytes()[s] == b'B'));
    }
    // Head 0 attends to its targets only, head 1 to the first token, head 2 evenly over its prefix.
    let t = text.len();
    let mut probs = vec![0.0f32; 3 * t * t];
    for i in 0..t {
        let row = |h: usize| (h * t + i) * t;
        match targets.iter().find(|(p, _)| *p == i) {
            Some((_, ts)) => ts.iter().for_each(|&s| probs[row(0) + s] = 1.0 / ts.len() as f32),
            None => probs[row(0)] = 1.0,
        }
        probs[row(1)] = 1.0;
        (0..=i).for_each(|j| probs[row(2) + j] = 1.0 / (i + 1) as f32);
    }
    let s = eval::lookup_score(&probs, 3, t, &targets);
    assert!((s[0] - 1.0).abs() < 1e-6 && s[1] == 0.0, "{s:?}");
    let uniform = (1.0 / 11.0 + 2.0 / 19.0) / 2.0;
    assert!((s[2] - uniform).abs() < 1e-6, "{} vs {uniform}", s[2]);
}

#[test]
fn induction_targets_are_right_after_each_earlier_occurrence_of_the_query_token() {
    // The look-up test's episode: a→B, b→C, c→A on the inputs a, b, a, c, a.
    let rule = rules::Rule { family: Family::Substitution, reverse: false, table: vec![1, 2, 0] };
    let pairs = [0u8, 1, 0, 2, 0].iter().map(|&x| (vec![x], rule.apply(&[x]))).collect();
    let text = rules::probe_text(&rules::Episode { rule, pairs });
    assert_eq!(text, "\na>B|b>C|a>B|c>A|a>B");
    let chars: Vec<char> = text.chars().collect();
    let targets = induction_targets(&chars);
    // Positions: 0 \n, 1 a, 2 >, 3 B, 4 |, 5 b, 6 >, 7 C, 8 |, 9 a, 10 >, 11 B, 12 |, 13 c, 14 >, 15 A, 16 |, 17 a,
    // 18 >, 19 B. The second `a` (9) looks at the `>` after the first (2); the last `>` (18) at the answer after
    // each earlier `>` (3, 7, 11, 15); a token seen for the first time looks nowhere.
    let want: Vec<Vec<usize>> = vec![
        vec![], vec![], vec![], vec![], vec![], vec![], vec![3], vec![], vec![5], vec![2], vec![3, 7], vec![4], vec![5, 9],
        vec![], vec![3, 7, 11], vec![], vec![5, 9, 13], vec![2, 10], vec![3, 7, 11, 15], vec![4, 12],
    ];
    assert_eq!(targets, want);
    for (i, ts) in targets.iter().enumerate() {
        for &s in ts {
            assert!(s <= i && chars[s - 1] == chars[i], "position {i}: {s} is not right after an earlier {:?}", chars[i]);
        }
    }
}

#[test]
fn the_recipe_attention_is_the_trained_model_own_on_the_first_held_out_episode() {
    let file = tiny_recipe(|v| v["train"]["warmup"] = 0.into()); // steps that move the weights, so that the trained model is told apart
    let o = Options { recipe: Some(file.to_string()), knobs: [("steps".to_string(), 3.0), ("eval_episodes".to_string(), 2.0)].into(), ..Default::default() };
    let mut d = Driver::new(Kind::Icl, &o).unwrap();
    let e = d.attention(0).unwrap_err();
    assert!(e.to_string().contains("no model yet"), "{e}");
    while !d.done() {
        d.unit().unwrap();
    }
    let a = d.attention(0).unwrap();
    // The episode is the evaluation's first, read as the look-up score reads it.
    let r = Recipe::from_json(&d.info.recipe.to_string()).unwrap();
    let ep = eval::eval_episodes(&r).unwrap().remove(0);
    assert_eq!((a.episode, a.family, a.text.as_str()), (0, ep.rule.family, rules::probe_text(&ep).as_str()));
    let t = a.text.chars().count();
    assert_eq!(t, r.episode_chars());
    assert_eq!(a.tokens, a.text.chars().map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!(a.induction_targets, induction_targets(&a.text.chars().collect::<Vec<_>>()));
    // The trained model's (the pretraining stage's checkpoint), as the reference backend computes it.
    let ck = transformer_playground::checkpoint::load(&d.save(Some("pretrain")).unwrap()).unwrap();
    let own = transformer_playground::probe::attention_maps(&ck.model, &Reference, &ck.tokenizer, transformer_playground::config::Task::Text, &a.text, None).unwrap();
    assert_eq!(a.maps.len(), 2, "one map per layer");
    for (m, o) in a.maps.iter().zip(&own.maps) {
        assert_eq!((m.kind.as_str(), m.layer, m.heads, m.t, m.s), ("self", o.layer, 2, t, t));
        for (h, rows) in m.probs.chunks(t * t).enumerate() {
            for (i, row) in rows.chunks(t).enumerate() {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "layer {} head {h} row {i} sums to {sum}", m.layer);
                assert!(row[i + 1..].iter().all(|&p| p == 0.0), "layer {} head {h} row {i} attends to the future", m.layer);
            }
        }
        for (x, y) in m.probs.iter().zip(&o.probs) {
            assert!((x - y).abs() < 1e-5, "layer {}: {x} vs the reference's {y}", m.layer);
        }
    }
    // Not the untrained model's (the same recipe and seed, before its first step).
    let fresh = r.run(BackendKind::Cpu).unwrap();
    let init = transformer_playground::probe::attention_maps(&fresh.model, &Reference, fresh.data.tokenizer(), transformer_playground::config::Task::Text, &a.text, None).unwrap();
    let moved = a.maps.iter().zip(&init.maps).flat_map(|(m, o)| m.probs.iter().zip(&o.probs).map(|(x, y)| (x - y).abs())).fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "the maps are the trained model's: they moved by {moved} from the initial model's");
    // An episode past the evaluation's is refused naming the field; another recipe has no such view.
    match d.attention(2) {
        Err(Error::Config { field, value, .. }) => assert_eq!((field.as_str(), value.as_str()), ("episode", "2")),
        other => panic!("{other:?}"),
    }
    let ft = Options { corpus: Some(std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt")).unwrap()), ..Default::default() };
    let e = Driver::new(Kind::Finetune, &ft).unwrap().attention(0).unwrap_err();
    assert!(e.to_string().contains("only the icl recipe"), "{e}");
}
