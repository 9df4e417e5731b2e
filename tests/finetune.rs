//! GPT-1 fine-tuning (`recipes::finetune`, docs/RECIPES.md section 1): the classifier head and the objective
//! L = L_task + λ·L_LM against PyTorch (tests/fixtures/make_fixtures.py `gpt_classifier`) on the reference and the
//! CPU backend, finite differences of its backward, the same bits on 1 and 2 threads, the tasks' labelling rules
//! on known speeches of Tiny Shakespeare and their split, fine-tuning the shipped pretrained model beating fresh
//! weights and the majority baseline at equal steps, and a fine-tune's checkpoint holding the head and continuing.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::backend::{BackendKind, Host, Reference};
use transformer_playground::config::{Config, FinetuneTask, SPEAKERS};
use transformer_playground::model::{Batch, Model};
use transformer_playground::recipes::finetune::tasks::{self, TaskData, VAL_EVERY};
use transformer_playground::recipes::finetune::{backward_on, combined, forward_on, ClassBatch, Finetune, FinetuneOptions};

struct Fixture {
    cfg: Config,
    vocab: usize,
    f32s: BTreeMap<String, Vec<f32>>,
    i32s: BTreeMap<String, Vec<i32>>,
}

fn fixture() -> Fixture {
    let path = format!("{}/tests/fixtures/gpt_classifier.safetensors", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let cfg = Config::from_json(&meta["config"]).unwrap();
    let vocab = meta["vocab_size"].parse().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut f32s, mut i32s) = (BTreeMap::new(), BTreeMap::new());
    for (n, t) in st.tensors() {
        let words = t.data().chunks_exact(4).map(|b| <[u8; 4]>::try_from(b).unwrap());
        match t.dtype() {
            Dtype::F32 => drop(f32s.insert(n.clone(), words.map(f32::from_le_bytes).collect())),
            Dtype::I32 => drop(i32s.insert(n.clone(), words.map(i32::from_le_bytes).collect())),
            d => panic!("unexpected dtype {d:?} for {n}"),
        }
    }
    Fixture { cfg, vocab, f32s, i32s }
}

fn model_of(fx: &Fixture) -> Model {
    let mut m = Model::new(&fx.cfg.model, fx.vocab, 0);
    let names = fx.f32s.keys().filter(|k| k.starts_with("param.")).count();
    assert_eq!(names, m.layout.tensors.len(), "every tensor, the head's included");
    for t in &m.layout.tensors {
        t.view.of_mut(&mut m.params).copy_from_slice(&fx.f32s[&format!("param.{}", t.name)]);
    }
    m
}

fn batch_of(fx: &Fixture) -> ClassBatch {
    let labels = fx.i32s["input.labels"].clone();
    let (b, idx) = (labels.len(), fx.i32s["input.idx"].iter().map(|&x| x as u32).collect::<Vec<_>>());
    let batch = Batch { b, t: idx.len() / b, idx, targets: fx.i32s["input.targets"].clone(), ..Default::default() };
    ClassBatch { batch, last: fx.i32s["input.last"].iter().map(|&x| x as u32).collect(), labels }
}

fn close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs() && g.is_finite(), "{what}[{i}]: got {g}, want {w}");
    }
}

/// Loss and gradients of the objective on a host backend.
fn loss_and_grads(be: &impl Host, model: &Model, cb: &ClassBatch, aux: f32) -> (f32, f32, f32, Vec<f32>, Vec<f32>) {
    let cf = forward_on(be, model, &model.params[..], cb, aux, None).unwrap();
    let mut grads = vec![0.0; model.params.len()];
    backward_on(be, model, &model.params[..], &cf, cb, &mut grads).unwrap();
    (cf.task_loss, cf.lm_loss, combined(cf.task_loss, cf.lm_loss, aux), cf.logits.clone(), grads)
}

fn against_pytorch(be: &impl Host) {
    let fx = fixture();
    let (model, cb) = (model_of(&fx), batch_of(&fx));
    for (aux, tag) in [(0.0, "0"), (0.5, "05")] {
        let (task, lm, loss, logits, grads) = loss_and_grads(be, &model, &cb, aux);
        let name = format!("{}/λ={aux}", be.name());
        close(&format!("{name}/class_logits"), &logits, &fx.f32s["out.class_logits"], 1e-5, 1e-4);
        close(&format!("{name}/task_loss"), &[task], &fx.f32s["out.task_loss"], 1e-6, 1e-5);
        close(&format!("{name}/lm_loss"), &[lm], &fx.f32s["out.lm_loss"], 1e-6, 1e-5);
        close(&format!("{name}/loss"), &[loss], &fx.f32s[&format!("out.loss{tag}")], 1e-6, 1e-5);
        for t in &model.layout.tensors {
            let want = &fx.f32s[&format!("grad{tag}.{}", t.name)];
            close(&format!("{name}/grad {}", t.name), t.view.of(&grads), want, 1e-6, 1e-3);
        }
    }
}

#[test]
fn the_objective_matches_pytorch_on_the_reference() {
    against_pytorch(&Reference);
}

#[test]
fn the_objective_matches_pytorch_on_the_cpu() {
    against_pytorch(&Cpu);
}

#[test]
fn lm_gradients_vanish_at_lambda_0_and_the_head_gets_none_from_the_lm_loss() {
    let fx = fixture();
    let (model, cb) = (model_of(&fx), batch_of(&fx));
    let (_, _, _, _, g0) = loss_and_grads(&Reference, &model, &cb, 0.0);
    let (_, _, _, _, g5) = loss_and_grads(&Reference, &model, &cb, 0.5);
    let head = model.layout.classifier.unwrap();
    // The head's gradient is L_task's alone; a body tensor's changes with λ.
    assert_eq!(head.w.of(&g0), head.w.of(&g5));
    assert_ne!(model.layout.wte.of(&g0), model.layout.wte.of(&g5));
}

/// Central differences of the combined loss (λ = 0.5) in f32 on the reference, against the backward, for
/// coordinates of the head, the final norm, the embeddings and a block's weights.
#[test]
fn finite_differences_of_the_objective() {
    let fx = fixture();
    let (mut model, cb) = (model_of(&fx), batch_of(&fx));
    let aux = 0.5;
    let (_, _, _, _, grads) = loss_and_grads(&Reference, &model, &cb, aux);
    let loss_at = |m: &Model| loss_and_grads(&Reference, m, &cb, aux).2 as f64;
    let mut checked = 0;
    for name in ["classifier.weight", "classifier.bias", "ln_f.weight", "ln_f.bias", "wte", "wpe", "blocks.1.mlp.proj.weight", "blocks.0.attn.qkv.weight"] {
        let t = model.layout.tensors.iter().find(|t| t.name == name).unwrap().clone();
        for k in [0, t.view.len / 3, t.view.len - 1] {
            let i = t.view.offset + k;
            let (x, eps) = (model.params[i], 1e-2f32);
            model.params[i] = x + eps;
            let up = loss_at(&model);
            model.params[i] = x - eps;
            let down = loss_at(&model);
            model.params[i] = x;
            let fd = ((up - down) / (2.0 * eps as f64)) as f32;
            let g = grads[i];
            assert!((fd - g).abs() <= 2e-4 + 2e-2 * g.abs(), "{name}[{k}]: backward {g}, finite difference {fd}");
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

fn tiny_config() -> Config {
    let text = std::fs::read_to_string(format!("{}/configs/recipes/finetune-verse-prose.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Config::from_json(&text).unwrap()
}

fn shakespeare() -> String {
    std::fs::read_to_string(format!("{}/www/data/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn same_losses_on_one_and_two_threads() {
    let text = shakespeare();
    let losses = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let o = FinetuneOptions { aux_lm: Some(0.5), ..Default::default() };
            let mut run = Finetune::from_config(tiny_config(), &text, &o, BackendKind::Cpu).unwrap();
            let mut out: Vec<f32> = (0..3).flat_map(|_| {
                let r = run.step().unwrap();
                [r.loss, r.task_loss, r.lm_loss]
            }).collect();
            out.extend(run.model.params.iter().step_by(97));
            out
        })
    };
    let (one, two) = (losses(1), losses(2));
    assert_eq!(one.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), two.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
}

#[test]
fn cpu_and_reference_agree_on_the_recipe() {
    let text = shakespeare();
    let o = FinetuneOptions { aux_lm: Some(0.5), batch: Some(4), ..Default::default() };
    let mut cpu = Finetune::from_config(tiny_config(), &text, &o, BackendKind::Cpu).unwrap();
    let mut reference = Finetune::from_config(tiny_config(), &text, &o, BackendKind::Reference).unwrap();
    // The gradients of a batch of real examples (lengths up to ctx_len).
    let inputs: Vec<(&[u32], usize)> = cpu.train[..6].iter().map(|(x, l)| (&x[..], *l)).collect();
    let cb = ClassBatch::new(&inputs);
    let (a, b) = (loss_and_grads(&Cpu, &cpu.model, &cb, 0.5), loss_and_grads(&Reference, &reference.model, &cb, 0.5));
    close("losses", &[a.0, a.1, a.2], &[b.0, b.1, b.2], 1e-6, 1e-5);
    close("class logits", &a.3, &b.3, 1e-6, 1e-4);
    close("gradients", &a.4, &b.4, 1e-6, 1e-3);
    // Two steps of the run: the same losses (AdamW turns rounding-level gradients into lr-sized steps, so the
    // parameters are compared through the losses).
    for _ in 0..2 {
        let (a, b) = (cpu.step().unwrap(), reference.step().unwrap());
        close("step", &[a.loss, a.task_loss, a.lm_loss, a.grad_norm], &[b.loss, b.task_loss, b.lm_loss, b.grad_norm], 1e-5, 1e-4);
    }
}

// -- The tasks ------------------------------------------------------------------------------------------------------

#[test]
fn the_speeches_and_the_labels_of_known_speeches() {
    let text = shakespeare();
    let all = tasks::speeches(&text);
    // The corpus opens with the First Citizen's "Before we proceed any further, hear me speak.": speech 0, held out.
    assert_eq!(all[0].speaker, "First Citizen");
    assert_eq!(all[0].lines, vec!["Before we proceed any further, hear me speak."]);
    assert!(all[0].is_val() && !all[1].is_val());
    assert_eq!(tasks::verse_or_prose(&all[0]), None, "one line: neither");
    // Speech 8, the First Citizen's "We are accounted poor citizens, ...": prose (its continuation lines run on in
    // lowercase: "would yield us but the superfluity, while it were").
    let poor = all.iter().find(|s| s.lines[0].starts_with("We are accounted poor citizens")).unwrap();
    assert_eq!(tasks::verse_or_prose(poor), Some(1));
    // Romeo's "He jests at scars that never felt a wound. / But, soft! what light through yonder window breaks?" is
    // verse.
    let soft = all.iter().find(|s| s.lines[0] == "He jests at scars that never felt a wound.").unwrap();
    assert_eq!(soft.lines[1], "But, soft! what light through yonder window breaks?");
    assert_eq!(soft.speaker, "ROMEO");
    assert_eq!(tasks::verse_or_prose(soft), Some(0));
    // The most frequent speakers, by speeches with a body (computed independently with Python: 211, 189, 161, 160).
    assert_eq!(tasks::top_speakers(&all, SPEAKERS), vec!["GLOUCESTER", "DUKE VINCENTIO", "MENENIUS", "ROMEO"]);
    let romeo = all.iter().filter(|s| s.speaker == "ROMEO").count();
    assert_eq!(romeo, 160);
    let speaker = TaskData::new(FinetuneTask::Speaker, &text, 64).unwrap();
    let ex = speaker.train.iter().chain(&speaker.val).find(|e| e.speech == soft.index).unwrap();
    assert_eq!(speaker.classes[ex.label], "ROMEO");
    assert_eq!(ex.text, soft.input(64));
    assert!(!ex.text.contains("ROMEO") && ex.text.chars().count() == 64 && ex.text.contains('\n'));
}

#[test]
fn splits_are_disjoint_by_speech_and_balanced_as_documented() {
    let text = shakespeare();
    for task in FinetuneTask::ALL {
        let d = TaskData::new(task, &text, 64).unwrap();
        assert!(d.train.iter().all(|e| e.speech % VAL_EVERY != 0) && d.val.iter().all(|e| e.speech % VAL_EVERY == 0));
        let train: std::collections::BTreeSet<usize> = d.train.iter().map(|e| e.speech).collect();
        assert!(d.val.iter().all(|e| !train.contains(&e.speech)));
        assert_eq!(train.len(), d.train.len(), "one example per speech");
        // Roughly a fifth held out, every class in both splits.
        let share = d.val.len() as f32 / (d.val.len() + d.train.len()) as f32;
        assert!((0.17..0.23).contains(&share), "{share}");
        assert!(d.counts(&d.val).iter().all(|&c| c > 0));
    }
    let vp = TaskData::new(FinetuneTask::VerseProse, &text, 64).unwrap();
    // 4,106 speeches of two lines or more (Python over the same rule): 3,342 verse and 764 prose.
    assert_eq!(vp.train.len() + vp.val.len(), 4106);
    let counts: Vec<usize> = vp.counts(&vp.train).iter().zip(vp.counts(&vp.val)).map(|(a, b)| a + b).collect();
    assert_eq!(counts, vec![3342, 764]);
    assert_eq!(vp.majority(), 0);
}

#[test]
fn a_text_without_speeches_is_refused() {
    let err = TaskData::new(FinetuneTask::Speaker, "just some text\nwith lines\n", 64).unwrap_err();
    assert!(err.to_string().contains("speaker task"), "{err}");
}

// -- Training -------------------------------------------------------------------------------------------------------

/// GPT-1's claim, at the smallest size where it holds: fine-tuning the shipped pretrained model
/// (`www/data/pretrained-gpt-tiny.safetensors`) beats the same model from fresh weights at equal steps, on the
/// held-out verse/prose speeches — the same config, head initialisation, batches and λ (0: the task loss alone, where
/// the fresh model stays at the majority class, docs/RECIPES.md §1) — and beats the majority baseline. Two seeds.
#[test]
fn fine_tuning_the_pretrained_model_beats_fresh_weights_at_equal_steps() {
    let text = shakespeare();
    let pretrained = std::fs::read(format!("{}/www/data/pretrained-gpt-tiny.safetensors", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for seed in [1, 2] {
        let o = FinetuneOptions { task: Some(FinetuneTask::VerseProse), aux_lm: Some(0.0), steps: Some(FT_STEPS), seed: Some(seed), ..Default::default() };
        let ck = transformer_playground::checkpoint::load(&pretrained).unwrap();
        let mut from_pre = Finetune::from_checkpoint(ck, &text, &o, BackendKind::Cpu).unwrap();
        let mut scratch = Finetune::from_config(tiny_config(), &text, &o, BackendKind::Cpu).unwrap();
        let training = |t: &transformer_playground::config::TrainConfig| (t.batch_size, t.steps, t.lr, t.min_lr, t.warmup, t.schedule, t.betas, t.weight_decay, t.grad_clip);
        assert_eq!(from_pre.cfg.model, scratch.cfg.model, "the same model");
        assert_eq!(training(&from_pre.cfg.train), training(&scratch.cfg.train), "the same training");
        for _ in 0..FT_STEPS {
            from_pre.step().unwrap();
            scratch.step().unwrap();
        }
        let (pre, fresh, base) = (from_pre.eval().unwrap().1.accuracy, scratch.eval().unwrap().1.accuracy, from_pre.baseline());
        eprintln!("seed {seed}, {FT_STEPS} steps: held-out accuracy from the pretrained model {pre:.3}, from scratch {fresh:.3}, majority {base:.3}");
        assert!(pre > fresh + 0.03, "seed {seed}: pretrained {pre} vs scratch {fresh}");
        assert!(pre > base + 0.03, "seed {seed}: pretrained {pre} vs the majority baseline {base}");
    }
}

/// Fine-tuning steps of the test above.
const FT_STEPS: usize = 60;

#[test]
fn a_fine_tunes_checkpoint_holds_the_head_and_continues() {
    let text = shakespeare();
    let o = FinetuneOptions { steps: Some(1), ..Default::default() };
    let mut run = Finetune::from_config(tiny_config(), &text, &o, BackendKind::Cpu).unwrap();
    let _ = run.step().unwrap();
    let bytes = run.save().unwrap();
    let ck = transformer_playground::checkpoint::load(&bytes).unwrap();
    assert_eq!(ck.config.model.classifier.unwrap().classes, 2);
    assert_eq!(ck.model.params, run.model.params);
    assert!(ck.model.layout.tensors.iter().any(|t| t.name == "classifier.weight"));
    // It continues: same task, its head and optimizer state, one more step.
    let mut more = Finetune::from_checkpoint(ck, &text, &FinetuneOptions { steps: Some(1), ..Default::default() }, BackendKind::Cpu).unwrap();
    assert_eq!((more.step, more.cfg.train.steps), (1, 2));
    assert_eq!(more.opt.t, 1);
    more.step().unwrap();
}
