//! `tp finetune` end to end (docs/RECIPES.md section 1): a small pretrained GPT fine-tuned on a Tiny Shakespeare
//! task beats the majority baseline on the held-out speeches; seeded runs repeat; `--out` holds the head and
//! continues; bad input exits 1 with a message naming it, never a panic.

use std::process::Command;

fn tp(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-finetune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

const SHAKESPEARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt");
const SPEAKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/recipes/finetune-speaker.json");
const VERSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/recipes/finetune-verse-prose.json");

/// A gpt (or bert) of one layer, d_model 32, ctx_len 64, pretrained for `steps` on the corpus.
fn pretrain(name: &str, arch: &str, steps: usize) -> String {
    let cfg = tmp(&format!("{name}.json"));
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 64,
        "ffn": {{ "activation": "gelu", "mult": 4 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
        "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
        "train": {{ "batch_size": 16, "steps": {steps}, "lr": 0.003, "warmup": 20, "min_lr": 0.0003, "weight_decay": 0.1,
                   "grad_clip": 1.0, "eval_interval": 1000, "eval_iters": 1 }}, "seed": 5 }}"#
    );
    std::fs::write(&cfg, json).unwrap();
    let ck = tmp(&format!("{name}.safetensors"));
    let (code, _, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--out", &ck, "--log-every", "1000", "--sample-tokens", "0"]);
    assert_eq!(code, Some(0), "{err}");
    ck
}

fn lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).expect(l)).collect()
}

#[test]
fn a_pretrained_gpt_fine_tuned_on_verse_or_prose_beats_the_majority_baseline_and_its_checkpoint_continues() {
    let pre = pretrain("pre", "gpt", 300);
    let out = tmp("ft.safetensors");
    let args = ["finetune", "--checkpoint", &pre, "--task", "verse_prose", "--steps", "200", "--eval-every", "100", "--seed", "2", "--aux-lm", "0.5", "--lr", "0.002"];
    let (code, stdout, err) = tp(&[&args[..], &["--out", &out]].concat());
    assert_eq!(code, Some(0), "{err}");
    let l = lines(&stdout);
    assert_eq!(l.len(), 201, "200 steps and the final evaluation");
    for (i, s) in l[..200].iter().enumerate() {
        assert_eq!((s["stage"].as_str(), s["step"].as_u64()), (Some("finetune"), Some(i as u64)));
        let (loss, task, lm) = (s["loss"].as_f64().unwrap(), s["task_loss"].as_f64().unwrap(), s["lm_loss"].as_f64().unwrap());
        assert!((loss - (task + 0.5 * lm)).abs() < 1e-4 * loss.abs().max(1.0), "{s}");
        assert_eq!(s.get("val_accuracy").is_some(), i % 100 == 0, "{s}");
    }
    let last = &l[200];
    let (acc, base) = (last["val_accuracy"].as_f64().unwrap(), last["baseline"].as_f64().unwrap());
    // The held-out split is 80 % verse (the majority baseline); a model that learned nothing scores exactly that
    // (from-scratch runs of this length stay there: docs/RECIPES.md). With seeds 2,
    // 3 and 4 this fine-tune reached 0.934, 0.905 and 0.933.
    assert!((base - 668.0 / 839.0).abs() < 1e-6, "{base}");
    assert!(acc > base + 0.05, "held-out accuracy {acc} vs majority baseline {base}");
    assert!(last["accuracy"].as_f64().is_some() && last["val_lm_loss"].as_f64().is_some());

    // Same seed, same run (all but the time it took).
    let timeless = |out: &str| {
        let mut l = lines(out);
        l.last_mut().unwrap().as_object_mut().unwrap().remove("elapsed_s");
        l
    };
    assert_eq!(timeless(&tp(&args).1), timeless(&stdout));

    // The checkpoint holds the head; fine-tuning it again continues from step 200 with its accuracy.
    let (code, stdout, err) = tp(&["finetune", "--checkpoint", &out, "--steps", "2", "--eval-every", "1"]);
    assert_eq!(code, Some(0), "{err}");
    let l = lines(&stdout);
    assert_eq!(l[0]["step"], 200);
    assert_eq!(l.len(), 3, "2 more steps and the final evaluation");
    let resumed = l[0]["val_accuracy"].as_f64().unwrap();
    assert!((resumed - acc).abs() < 1e-6, "the checkpoint's model gives {resumed}, the run ended at {acc}");
}

#[test]
fn from_scratch_with_a_recipe_config() {
    let (code, stdout, err) = tp(&["finetune", "--config", SPEAKER, "--steps", "3", "--eval-every", "2", "--batch", "4"]);
    assert_eq!(code, Some(0), "{err}");
    let l = lines(&stdout);
    assert_eq!(l.len(), 4);
    assert!(l[0]["val_accuracy"].is_number() && l[1].get("val_accuracy").is_none() && l[2]["val_accuracy"].is_number());
    assert!(err.contains("task speaker") && err.contains("GLOUCESTER"), "{err}");
    // The config's aux_lm (0.5): the loss is the sum.
    let (loss, task, lm) = (l[0]["loss"].as_f64().unwrap(), l[0]["task_loss"].as_f64().unwrap(), l[0]["lm_loss"].as_f64().unwrap());
    assert!((loss - task - 0.5 * lm).abs() < 1e-4, "{}", l[0]);
}

#[test]
fn bad_input_is_refused_naming_it() {
    let bert = pretrain("bert", "bert", 1);
    let gpt = pretrain("gpt1", "gpt", 1);
    let bad_cfg = |name: &str, from: &str, to: &str| {
        let p = tmp(name);
        let text = std::fs::read_to_string(VERSE).unwrap();
        assert!(text.contains(from));
        std::fs::write(&p, text.replace(from, to)).unwrap();
        p
    };
    let neg_aux = bad_cfg("neg.json", "\"aux_lm\": 0.5", "\"aux_lm\": -1");
    let classes = bad_cfg("classes.json", "\"classes\": 2", "\"classes\": 3");
    let bert_cfg = bad_cfg("bertcfg.json", "\"arch\": \"gpt\"", "\"arch\": \"bert\"");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--checkpoint", &gpt, "--task", "play"], "unknown task; the known ones are speaker, verse_prose"),
        (vec!["--checkpoint", &gpt], "no task: give --task"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--aux-lm", "-0.5"], "--aux-lm = -0.5"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--aux-lm", "NaN"], "--aux-lm = NaN"),
        (vec!["--checkpoint", &bert, "--task", "speaker"], "needs a gpt checkpoint; this one is bert"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--steps", "0"], "train.steps"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--lr", "-1"], "train.lr"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--batch", "0"], "train.batch_size"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--eval-every", "0"], "--eval-every = 0"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--backend", "gpu"], "--backend gpu"),
        (vec!["--checkpoint", &gpt, "--task", "speaker", "--data", SPEAKER], "the speaker task's training split"),
        (vec!["--checkpoint", "/nonexistent.safetensors", "--task", "speaker"], "/nonexistent.safetensors"),
        (vec!["--task", "speaker"], "give --checkpoint CK"),
        (vec!["--config", &neg_aux], "finetune.aux_lm"),
        (vec!["--config", &classes], "model.classifier.classes"),
        (vec!["--config", &bert_cfg], "model.classifier"),
    ];
    for (args, want) in cases {
        let (code, _, err) = tp(&[&["finetune"][..], &args].concat());
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
