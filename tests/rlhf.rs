//! Mini-RLHF (`recipes::rlhf`, docs/RECIPES.md §4): every loss against PyTorch (tests/fixtures/make_fixtures.py
//! `rlhf_losses`, `gpt_reward`, `gpt_ppo`) and by finite differences — the pairwise reward-model loss (through the
//! scalar head and the model, on the reference and CPU backends), PPO's clipped objective wrt the logits, the value
//! loss, GAE, the KL-penalty rewards, whitening, and PPO-ptx's whole objective through the model (on both backends,
//! and the CPU's gradients equal to the reference's on a real rollout); the preference on known strings; the reward
//! model's pairs; the demonstrations' rule; a tiny end-to-end run (the reward model beats 0.5 on held-out pairs, PPO
//! raises the preference's score); the pretraining mix keeping the held-out LM loss lower; the same numbers on 1 and
//! 2 threads and on a rerun; `tp rlhf` stage by stage through its checkpoints, repeating, and its refusals.

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::process::Command;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::backend::{BackendKind, Host, Reference};
use transformer_playground::checkpoint;
use transformer_playground::config::Config;
use transformer_playground::model::{Batch, Model};
use transformer_playground::recipes::finetune::ClassBatch;
use transformer_playground::recipes::rlhf::losses::{gae, kl_rewards, log_softmax, pairwise_loss, policy_loss, rm_pairs, value_loss, whiten};
use transformer_playground::recipes::rlhf::stages::{evaluate_policy, ppo_grads, rm_grads, PpoLoss, Rollout};
use transformer_playground::recipes::rlhf::{Data, PpoConfig, Ppo, Preference, RewardModel, Rlhf, RlhfConfig, Sft, MIN_DEMO_CHARS};
use transformer_playground::rng::Rng;
use transformer_playground::train::Run;

struct Fixture {
    cfg: Option<Config>,
    vocab: usize,
    f32s: BTreeMap<String, Vec<f32>>,
    i32s: BTreeMap<String, Vec<i32>>,
}

fn fixture(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let cfg = meta.get("config").map(|c| Config::from_json(c).unwrap());
    let vocab = meta.get("vocab_size").map_or(0, |v| v.parse().unwrap());
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

fn close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs() && g.is_finite(), "{what}[{i}]: got {g}, want {w}");
    }
}

// ------------------------------------------------------------------------------------------ the losses alone

#[test]
fn ppo_pieces_match_pytorch() {
    let fx = fixture("rlhf_losses");
    let f = |k: &str| fx.f32s[k].clone();
    // The clipped policy objective: some tokens clipped, some not (the fixture asserts both).
    let actions: Vec<u32> = fx.i32s["policy.actions"].iter().map(|&a| a as u32).collect();
    let pl = policy_loss(&f("policy.logits"), 7, &actions, &f("policy.logp_old"), &f("policy.adv"), 0.2);
    close("policy loss", &[pl.loss], &f("policy.loss"), 1e-6, 1e-5);
    close("policy dlogits", &pl.dlogits, &f("policy.dlogits"), 1e-7, 1e-4);
    close("clipfrac", &[pl.clipfrac], &f("policy.clipfrac"), 0.0, 0.0);
    assert!(pl.clipfrac > 0.0 && pl.clipfrac < 1.0);
    // The value loss, plain and clipped.
    let (v, old, ret) = (f("value.v"), f("value.old"), f("value.returns"));
    let (l, d) = value_loss(&v, &old, &ret, None);
    close("value loss", &[l], &f("value.loss"), 1e-6, 1e-5);
    close("value dv", &d, &f("value.dv"), 1e-7, 1e-5);
    let (l, d) = value_loss(&v, &old, &ret, Some(0.2));
    close("clipped value loss", &[l], &f("value.loss_clipped"), 1e-6, 1e-5);
    close("clipped value dv", &d, &f("value.dv_clipped"), 1e-7, 1e-5);
    assert_ne!(f("value.dv"), f("value.dv_clipped"), "the clip must matter somewhere in the fixture");
    // GAE, γ = 0.9, λ = 0.8.
    let (adv, returns) = gae(&f("gae.rewards"), &f("gae.values"), 6, 0.9, 0.8);
    close("gae advantages", &adv, &f("gae.adv"), 1e-6, 1e-5);
    close("gae returns", &returns, &f("gae.returns"), 1e-6, 1e-5);
    // The KL-penalty rewards, β = 0.1.
    close("kl rewards", &kl_rewards(&f("kl.logp"), &f("kl.logp_ref"), &f("kl.score"), 6, 0.1), &f("kl.rewards"), 1e-6, 1e-5);
    let mut x = f("whiten.x");
    whiten(&mut x);
    close("whiten", &x, &f("whiten.out"), 1e-6, 1e-5);
}

/// Central differences in f64 of a function of f32 inputs.
fn numeric(f: &dyn Fn(&[f32]) -> f64, x: &[f32], i: usize, h: f32) -> f64 {
    let (mut a, mut b) = (x.to_vec(), x.to_vec());
    a[i] += h;
    b[i] -= h;
    (f(&a) - f(&b)) / (2.0 * h as f64)
}

#[test]
fn host_gradients_match_finite_differences() {
    let fx = fixture("rlhf_losses");
    let f = |k: &str| fx.f32s[k].clone();
    // The pairwise loss wrt the rewards.
    let r = vec![0.3f32, -0.2, 1.1, 0.5, -0.7];
    let pairs = [(0, 1), (2, 1), (3, 4), (2, 0), (4, 1)];
    let (_, d) = pairwise_loss(&r, &pairs);
    for (i, &di) in d.iter().enumerate() {
        let n = numeric(&|x| pairwise_loss(x, &pairs).0 as f64, &r, i, 1e-2);
        assert!((n - di as f64).abs() < 1e-4, "pairwise d r[{i}]: {di} vs {n}");
    }
    // The clipped policy loss wrt the logits, on tokens away from the clip boundary.
    let (lg, lo, adv) = (f("policy.logits"), f("policy.logp_old"), f("policy.adv"));
    let actions: Vec<u32> = fx.i32s["policy.actions"].iter().map(|&a| a as u32).collect();
    let pl = policy_loss(&lg, 7, &actions, &lo, &adv, 0.2);
    let mut checked = 0;
    for t in 0..actions.len() {
        let ratio = (log_softmax(&lg[t * 7..(t + 1) * 7])[actions[t] as usize] - lo[t]).exp();
        if (ratio - 0.8).abs() < 0.02 || (ratio - 1.2).abs() < 0.02 {
            continue;
        }
        for j in 0..7 {
            let i = t * 7 + j;
            let n = numeric(&|x| policy_loss(x, 7, &actions, &lo, &adv, 0.2).loss as f64, &lg, i, 1e-3);
            assert!((n - pl.dlogits[i] as f64).abs() < 2e-4, "policy d logits[{i}]: {} vs {n}", pl.dlogits[i]);
            checked += 1;
        }
    }
    assert!(checked >= 7 * 8, "checked {checked}");
    // The clipped value loss wrt the values.
    let (v, old, ret) = (f("value.v"), f("value.old"), f("value.returns"));
    let (_, d) = value_loss(&v, &old, &ret, Some(0.2));
    for i in 0..v.len() {
        if ((v[i] - old[i]).abs() - 0.2).abs() < 0.02 {
            continue;
        }
        let n = numeric(&|x| value_loss(x, &old, &ret, Some(0.2)).0 as f64, &v, i, 1e-3);
        assert!((n - d[i] as f64).abs() < 2e-4, "value d v[{i}]: {} vs {n}", d[i]);
    }
}

// --------------------------------------------------------------------------- the reward model through the model

fn model_of(fx: &Fixture) -> Model {
    let cfg = fx.cfg.as_ref().unwrap();
    let mut m = Model::new(&cfg.model, fx.vocab, 0);
    assert_eq!(fx.f32s.keys().filter(|k| k.starts_with("param.")).count(), m.layout.tensors.len());
    for t in &m.layout.tensors {
        t.view.of_mut(&mut m.params).copy_from_slice(&fx.f32s[&format!("param.{}", t.name)]);
    }
    m
}

fn reward_batch(fx: &Fixture) -> ClassBatch {
    let idx: Vec<u32> = fx.i32s["input.idx"].iter().map(|&x| x as u32).collect();
    let (b, t) = (8, idx.len() / 8);
    let batch = Batch { b, t, targets: vec![-1; b * t], idx, ..Default::default() };
    ClassBatch { batch, last: (0..b).map(|i| ((i + 1) * t - 1) as u32).collect(), labels: vec![0; b] }
}

fn reward_model_against_pytorch(be: &impl Host) {
    let fx = fixture("gpt_reward");
    let (model, cb) = (model_of(&fx), reward_batch(&fx));
    let pairs = rm_pairs(&fx.f32s["input.scores"], 4);
    let want: Vec<(usize, usize)> = fx.i32s["input.pairs"].chunks(2).map(|p| (p[0] as usize, p[1] as usize)).collect();
    assert_eq!(pairs, want, "the pairs: every differing pair of a group, winner first, ties skipped");
    let mut grads = vec![0.0; model.params.len()];
    let (loss, rw) = rm_grads(be, &model, &model.params, &cb, &pairs, &mut grads).unwrap();
    let name = be.name();
    close(&format!("{name}/rewards"), &rw, &fx.f32s["out.rewards"], 1e-5, 1e-4);
    close(&format!("{name}/loss"), &[loss], &fx.f32s["out.loss"], 1e-6, 1e-5);
    close(&format!("{name}/d rewards"), &pairwise_loss(&rw, &pairs).1, &fx.f32s["out.drewards"], 1e-6, 1e-4);
    for t in &model.layout.tensors {
        close(&format!("{name}/grad {}", t.name), t.view.of(&grads), &fx.f32s[&format!("grad.{}", t.name)], 2e-5, 2e-3);
    }
}

#[test]
fn reward_model_matches_pytorch_on_reference_and_cpu() {
    reward_model_against_pytorch(&Reference);
    reward_model_against_pytorch(&Cpu);
}

#[test]
fn rm_pairs_skip_ties_and_put_the_winner_first() {
    assert_eq!(rm_pairs(&[1.0, 3.0, 1.0, 0.0], 4), vec![(1, 0), (0, 3), (1, 2), (1, 3), (2, 3)]);
    assert_eq!(rm_pairs(&[2.0, 2.0, 2.0, 5.0, 4.0, 5.0], 3), vec![(3, 4), (5, 4)]);
    assert!(rm_pairs(&[1.0; 8], 4).is_empty());
    assert_eq!(rm_pairs(&[0.0, 1.0, 2.0, 3.0], 4).len(), 6, "C(4,2) when no two tie");
}

/// PPO's whole objective (clipped policy loss + vf_coef·value loss + γ_ptx·LM loss) through the model by central
/// differences on parameters of every kind: the gradients computed on the host and pushed through `backward_with`.
#[test]
fn ppo_objective_through_the_model_matches_finite_differences() {
    let fx = fixture("gpt_reward");
    let model = model_of(&fx);
    let cb = reward_batch(&fx);
    let (p, l, v) = (3, 5, model.vocab());
    let batch = cb.batch.clone();
    let fwd = model.forward(&Reference, &batch, None);
    let logp = transformer_playground::recipes::rlhf::stages::token_logps(&fwd.logits, v, &batch, p, l);
    let n = batch.b * l;
    let wobble = |i: usize, s: f32| ((i as f32 * 0.37 + s).sin()) * 0.5;
    let roll = Rollout {
        p,
        l,
        actions: (0..batch.b).flat_map(|b| (0..l).map(move |t| b * batch.t + p + t)).map(|i| batch.idx[i]).collect(),
        logp_old: logp.iter().enumerate().map(|(i, x)| x + 0.1 * wobble(i, 1.0)).collect(),
        values_old: (0..n).map(|i| wobble(i, 2.0)).collect(),
        adv: (0..n).map(|i| 2.0 * wobble(i, 3.0)).collect(),
        returns: (0..n).map(|i| wobble(i, 4.0)).collect(),
        batch: batch.clone(),
    };
    let mut ptx = batch.clone();
    ptx.targets = ptx.idx.iter().skip(1).chain([&0u32]).map(|&x| x as i32).collect();
    let k = PpoConfig { gamma_ptx: 0.5, vf_coef: 0.5, value_clip: 0.0, clip: 0.2, ..Default::default() };
    let mut grads = vec![0.0; model.params.len()];
    let parts = ppo_grads(&Reference, &model, &model.params, &roll, Some((&ptx, 0.5)), &k, &mut grads).unwrap();
    assert!(parts.clipfrac < 1.0 && parts.ptx_loss.is_some());
    let loss = |params: &[f32]| -> f64 {
        let mut g = vec![0.0; params.len()];
        ppo_grads(&Reference, &model, params, &roll, Some((&ptx, 0.5)), &k, &mut g).unwrap().loss as f64
    };
    let mut checked = 0;
    for t in &model.layout.tensors {
        for j in [0, t.view.len / 2, t.view.len - 1] {
            let i = t.view.offset + j;
            let num = numeric(&loss, &model.params, i, 1e-2);
            let g = grads[i] as f64;
            assert!((num - g).abs() <= 2e-3 + 0.05 * g.abs(), "{}[{j}]: analytic {g}, numeric {num}", t.name);
            checked += 1;
        }
    }
    assert!(checked >= 3 * 10);
}

/// `gpt_ppo`'s rollout (4 sequences of 3 prompt + 5 completion tokens), PPO-ptx batch and knobs
/// (tests/fixtures/make_fixtures.py `build_ppo`).
fn ppo_case(fx: &Fixture) -> (Rollout, Batch, PpoConfig) {
    let (b, t) = (4, 8);
    let ids = |k: &str| fx.i32s[k].iter().map(|&x| x as u32).collect::<Vec<u32>>();
    let f = |k: &str| fx.f32s[k].clone();
    let batch = Batch { b, t, targets: vec![-1; b * t], idx: ids("input.idx"), ..Default::default() };
    let roll = Rollout {
        batch,
        p: 3,
        l: 5,
        actions: ids("input.actions"),
        logp_old: f("input.logp_old"),
        values_old: f("input.values_old"),
        adv: f("input.adv"),
        returns: f("input.returns"),
    };
    let ptx = Batch { b: 2, t, idx: ids("input.ptx_idx"), targets: fx.i32s["input.ptx_targets"].clone(), ..Default::default() };
    let k = PpoConfig { clip: 0.2, value_clip: 0.2, vf_coef: 0.5, gamma_ptx: 0.5, ..Default::default() };
    (roll, ptx, k)
}

fn ppo_against_pytorch(be: &impl Host) {
    let fx = fixture("gpt_ppo");
    let model = model_of(&fx);
    let (roll, ptx, k) = ppo_case(&fx);
    // Pre-filled: ppo_grads must add its gradient, not overwrite.
    let mut grads = vec![0.25; model.params.len()];
    let parts = ppo_grads(be, &model, &model.params, &roll, Some((&ptx, k.gamma_ptx)), &k, &mut grads).unwrap();
    grads.iter_mut().for_each(|g| *g -= 0.25);
    let name = be.name();
    close(&format!("{name}/loss"), &[parts.loss], &fx.f32s["out.loss"], 1e-6, 1e-5);
    close(&format!("{name}/pg_loss"), &[parts.pg_loss], &fx.f32s["out.pg_loss"], 1e-6, 1e-5);
    close(&format!("{name}/vf_loss"), &[parts.vf_loss], &fx.f32s["out.vf_loss"], 1e-6, 1e-5);
    close(&format!("{name}/ptx_loss"), &[parts.ptx_loss.unwrap()], &fx.f32s["out.ptx_loss"], 1e-6, 1e-5);
    close(&format!("{name}/clipfrac"), &[parts.clipfrac], &fx.f32s["out.clipfrac"], 0.0, 0.0);
    for t in &model.layout.tensors {
        close(&format!("{name}/grad {}", t.name), t.view.of(&grads), &fx.f32s[&format!("grad.{}", t.name)], 2e-5, 2e-3);
    }
}

/// PPO-ptx's whole objective (the clipped policy loss, the clipped value loss through the value head, the LM loss on
/// a second batch) through a tiny GPT, its parts and every gradient, against PyTorch on both host backends.
#[test]
fn ppo_objective_through_the_model_matches_pytorch_on_reference_and_cpu() {
    ppo_against_pytorch(&Reference);
    ppo_against_pytorch(&Cpu);
}

fn ppo_grads_of(be: &impl Host, model: &Model, roll: &Rollout, ptx: &Batch, k: &PpoConfig) -> (PpoLoss, Vec<f32>) {
    let mut g = vec![0.0; model.params.len()];
    (ppo_grads(be, model, &model.params, roll, Some((ptx, k.gamma_ptx)), k, &mut g).unwrap(), g)
}

fn rm_grads_of(be: &impl Host, model: &Model, cb: &ClassBatch, pairs: &[(usize, usize)]) -> ((f32, Vec<f32>), Vec<f32>) {
    let mut g = vec![0.0; model.params.len()];
    (rm_grads(be, model, &model.params, cb, pairs, &mut g).unwrap(), g)
}

/// The CPU backend's PPO gradients (policy, value head and body, PPO-ptx) equal the reference backend's on a real
/// rollout of the recipe: completions the policy sampled, scored by a reward model, GAE and whitening — with the old
/// log-probabilities and values moved off the policy's so the clips bind (a rollout's first update has ρ = 1); and
/// the reward model's pairwise-loss gradients on the same completions.
#[test]
fn ppo_and_reward_model_gradients_on_cpu_equal_the_reference_on_a_real_rollout() {
    let text = shakespeare();
    let ck = pretrained(&text);
    let mut c = tiny_recipe();
    (c.ppo.rollouts, c.eval_prompts, c.ppo.gamma_ptx, c.ppo.ptx_batch) = (6, 4, 0.5, 3);
    let r = Rlhf::new(c, &ck, &text, BackendKind::Cpu).unwrap();
    let sft = r.model_of(ck.clone(), None, "pretrained").unwrap();
    // Heads of seeded noise: a reward model whose scores differ, a value head whose gradient reaches the body.
    let noisy_head = |m: &mut Model, seed: u64| {
        let mut rng = Rng::new(seed);
        let h = m.layout.classifier.unwrap();
        h.w.of_mut(&mut m.params).iter_mut().for_each(|w| *w = 0.3 * rng.normal() as f32);
        h.b.unwrap().of_mut(&mut m.params)[0] = 0.1;
    };
    let mut rm = r.with_scalar_head(&sft);
    noisy_head(&mut rm, 11);
    let mut ppo = Ppo::new(&r, sft, rm);
    noisy_head(&mut ppo.policy, 12);
    let (mut roll, _) = ppo.rollout(&Cpu, &r).unwrap();
    let mut rng = Rng::new(13);
    roll.logp_old.iter_mut().for_each(|x| *x += 0.3 * rng.normal() as f32);
    roll.values_old.iter_mut().for_each(|x| *x += 0.3 * rng.normal() as f32);
    let ptx = Data::lm_batch(&r.data.train, 3, ppo.policy.cfg.ctx_len, &mut rng);
    let k = &r.cfg.ppo;
    let (pc, gc) = ppo_grads_of(&Cpu, &ppo.policy, &roll, &ptx, k);
    let (pr, gr) = ppo_grads_of(&Reference, &ppo.policy, &roll, &ptx, k);
    assert!(pr.clipfrac > 0.0 && pr.clipfrac < 1.0, "some ratios clipped, not all: {}", pr.clipfrac);
    assert_eq!(pc.clipfrac, pr.clipfrac);
    close("loss parts", &[pc.loss, pc.pg_loss, pc.vf_loss, pc.ptx_loss.unwrap()], &[pr.loss, pr.pg_loss, pr.vf_loss, pr.ptx_loss.unwrap()], 1e-6, 1e-5);
    let worst = same_grads("ppo", &ppo.policy, &gc, &gr);
    eprintln!("ppo: largest |cpu − reference| / max |reference| of a tensor: {:.2e} ({})", worst.0, worst.1);
    // The reward model's pairwise loss on the same completions, in groups of 3 ranked by the preference.
    let comps: Vec<String> = roll.actions.chunks(roll.l).map(|a| r.data.tok.decode(a)).collect();
    let pairs = rm_pairs(&comps.iter().map(|c| r.cfg.preference.score(c)).collect::<Vec<_>>(), 3);
    assert!(pairs.len() >= 2, "{pairs:?}");
    let last = (0..roll.batch.b).map(|b| ((b + 1) * roll.batch.t - 1) as u32).collect();
    let cb = ClassBatch { batch: roll.batch.clone(), last, labels: vec![0; roll.batch.b] };
    let ((lc, rc), gc) = rm_grads_of(&Cpu, &ppo.rm, &cb, &pairs);
    let ((lr, rr), gr) = rm_grads_of(&Reference, &ppo.rm, &cb, &pairs);
    close("rm loss", &[lc], &[lr], 1e-6, 1e-5);
    close("rewards", &rc, &rr, 1e-6, 1e-5);
    let worst = same_grads("rm", &ppo.rm, &gc, &gr);
    eprintln!("rm: largest |cpu − reference| / max |reference| of a tensor: {:.2e} ({})", worst.0, worst.1);
}

/// Each tensor's gradients on the CPU within 10⁻⁵ of the reference's largest (and 10⁻⁴ relative); every tensor gets
/// one. Returns the largest |cpu − reference| / max |reference| and its tensor.
fn same_grads<'a>(what: &str, model: &'a Model, cpu: &[f32], reference: &[f32]) -> (f32, &'a str) {
    let mut worst = (0.0f32, "");
    for t in &model.layout.tensors {
        let (a, b) = (t.view.of(cpu), t.view.of(reference));
        assert!(b.iter().any(|&x| x != 0.0), "{what}: {}: no gradient", t.name);
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, &t.name);
        }
        close(&format!("{what}: grad {}", t.name), a, b, 1e-5 * scale, 1e-4);
    }
    worst
}

// ----------------------------------------------------------------------------------- the preference and the data

#[test]
fn the_preference_scores_known_strings() {
    let e = Preference::Chars { chars: "e".into() };
    assert_eq!(e.score("eee be"), 4.0);
    assert_eq!(e.score("EeE"), 1.0, "case-sensitive");
    assert_eq!(e.score(""), 0.0);
    assert_eq!(Preference::Chars { chars: "ae".into() }.score("a bee at sea"), 6.0);
    let w = Preference::Word { word: "the".into() };
    assert_eq!(w.score("the other the, bathe The thee\nthe"), 3.0, "whole words only, case-sensitive");
    assert_eq!(w.score("thethe"), 0.0);
    assert_eq!(Preference::Word { word: "love".into() }.score("love, love! lovely loved"), 2.0);
    for bad in [Preference::Chars { chars: "".into() }, Preference::Word { word: "".into() }, Preference::Word { word: "a b".into() }] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("rlhf.preference."), "{e}");
    }
    let c: RlhfConfig = serde_json::from_str(r#"{"preference": {"kind": "word", "word": "love"}}"#).unwrap();
    assert_eq!(c.preference, Preference::Word { word: "love".into() });
}

fn shakespeare() -> String {
    std::fs::read_to_string(format!("{}/www/data/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn demonstrations_follow_the_documented_rule() {
    let text = shakespeare();
    let cfg = RlhfConfig::default();
    let tok = transformer_playground::data::Tokenizer::for_text(&text, transformer_playground::config::Arch::Gpt).unwrap();
    let d = Data::new(&text, tok.clone(), &cfg, 64).unwrap();
    // Independently: the training split's long lines, their upper quartile of e's per character.
    let train: String = text.chars().take(text.chars().count() * 9 / 10).collect();
    let long: Vec<&str> = train.lines().filter(|l| l.chars().count() >= MIN_DEMO_CHARS).collect();
    let rate = |l: &str| l.chars().filter(|&c| c == 'e').count() as f32 / l.chars().count() as f32;
    let above = long.iter().filter(|l| rate(l) >= d.demo_threshold).count();
    let below = long.iter().filter(|l| rate(l) < d.demo_threshold).count();
    assert!(above * 4 >= long.len() && below * 4 <= 3 * long.len() + 4, "the threshold is the upper quartile: {above} above, {below} below");
    assert_eq!(d.long_lines, long.len());
    assert_eq!(d.demo_lines, above);
    let demos = tok.decode(&d.demos);
    assert_eq!(demos.lines().count(), above);
    assert!(demos.lines().all(|l| l.chars().count() >= MIN_DEMO_CHARS && rate(l) >= d.demo_threshold));
    assert_eq!(d.eval_prompts.len(), cfg.eval_prompts);
    let val = tok.decode(&d.val);
    assert!(d.eval_prompts.iter().all(|p| p.len() == cfg.prompt_len && val.contains(&tok.decode(p))), "held-out prompts come from the last 10%");
}

// ------------------------------------------------------------------------------------------------ end to end

/// A gpt of one layer, d_model 32, ctx_len 64, pretrained 300 steps on the corpus, as a checkpoint (made once, shared
/// by the tests).
fn pretrained(text: &str) -> checkpoint::Checkpoint {
    static CK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    checkpoint::load(CK.get_or_init(|| pretrain(text))).unwrap()
}

fn pretrain(text: &str) -> Vec<u8> {
    let cfg = Config::from_json(
        r#"{ "model": { "arch": "gpt", "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 64,
        "ffn": { "activation": "gelu", "mult": 4 }, "norm": { "kind": "layernorm", "placement": "pre" },
        "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
        "train": { "batch_size": 16, "steps": 300, "lr": 0.003, "warmup": 20, "min_lr": 0.0003, "weight_decay": 0.1,
                   "grad_clip": 1.0, "eval_interval": 1000, "eval_iters": 1 }, "seed": 5 }"#,
    )
    .unwrap();
    let mut run = Run::new(cfg, Some(text), BackendKind::Cpu).unwrap();
    for _ in 0..300 {
        run.step().unwrap();
    }
    checkpoint::save(&run.cfg, run.data.tokenizer(), run.step, &run.model, None).unwrap()
}

fn tiny_recipe() -> RlhfConfig {
    let mut c = RlhfConfig { eval_prompts: 32, ..Default::default() };
    (c.sft.steps, c.rm.steps, c.ppo.steps, c.ppo.rollouts) = (30, 60, 15, 32);
    c
}

#[test]
fn a_tiny_run_learns_the_preference() {
    let text = shakespeare();
    let ck = pretrained(&text);
    let too_long = RlhfConfig { prompt_len: 48, completion_len: 24, ..tiny_recipe() };
    let e = Rlhf::new(too_long, &ck, &text, BackendKind::Cpu).err().expect("prompt + completion past ctx_len").to_string();
    assert!(e.contains("rlhf.completion_len") && e.contains("ctx_len 64"), "{e}");
    let e = Rlhf::new(tiny_recipe(), &ck, "abc", BackendKind::Cpu).err().expect("a corpus too short").to_string();
    assert!(e.contains("chars") || e.contains("characters"), "{e}");
    let r = Rlhf::new(tiny_recipe(), &ck, &text, BackendKind::Cpu).unwrap();
    let mut sft = Sft::new(&r, r.model_of(ck, None, "pretrained").unwrap());
    while !sft.done() {
        sft.step(&r).unwrap();
    }
    let mut rm = RewardModel::new(&r, sft.model.clone()).unwrap();
    assert!(rm.eval_pairs.len() >= 100, "held-out pairs: {}", rm.eval_pairs.len());
    while !rm.done() {
        rm.step(&r).unwrap();
    }
    let before = rm.eval(&r).unwrap();
    let (mu, sd) = rm.normalise(&r).unwrap();
    let after = rm.eval(&r).unwrap();
    eprintln!("rm held-out accuracy {} (pairs {}), normalised by mean {mu} sd {sd}", after.rm_accuracy, after.pairs);
    assert!(before.rm_accuracy > 0.6, "the reward model ranks held-out pairs better than chance 0.5: {}", before.rm_accuracy);
    assert_eq!(before.rm_accuracy, after.rm_accuracy, "normalising keeps the ranking");
    let mut ppo = Ppo::new(&r, sft.model.clone(), rm.model.clone());
    let start = evaluate_policy(&r, &ppo.policy, Some(&ppo.reference), Some(&ppo.rm)).unwrap();
    assert_eq!(start.kl, Some(0.0), "the policy starts as the SFT model");
    let mut scores = vec![];
    while !ppo.done(&r) {
        scores.push(ppo.step(&r).unwrap().score);
    }
    let end = evaluate_policy(&r, &ppo.policy, Some(&ppo.reference), Some(&ppo.rm)).unwrap();
    eprintln!("ppo: held-out score {} -> {}, reward {:?} -> {:?}, kl {:?}; rollout scores {scores:?}", start.score, end.score, start.reward, end.reward, end.kl);
    let (first, last) = (scores[..5].iter().sum::<f32>() / 5.0, scores[scores.len() - 5..].iter().sum::<f32>() / 5.0);
    assert!(last > first, "PPO raises the rollouts' mean preference score: first 5 steps {first}, last 5 {last}");
    assert!(end.score > start.score, "and the held-out score: {} -> {}", start.score, end.score);
    assert!(end.kl.unwrap() > 0.0, "the policy moved away from the SFT model");
}

/// InstructGPT's PPO-ptx claim, at the smallest size where it holds: from the same SFT model and reward model, the
/// same PPO steps (the same prompts and sampling streams) with γ_ptx > 0 end with a lower held-out LM loss than with
/// γ_ptx = 0. Two seeds.
#[test]
fn the_pretraining_mix_keeps_the_held_out_lm_loss_lower() {
    let text = shakespeare();
    let ck = pretrained(&text);
    for seed in [1, 2] {
        let mut c = RlhfConfig { seed, ..tiny_recipe() };
        (c.rm.steps, c.ppo.steps) = (PTX_RM_STEPS, PTX_PPO_STEPS);
        let mut r = Rlhf::new(c, &ck, &text, BackendKind::Cpu).unwrap();
        let mut sft = Sft::new(&r, r.model_of(ck.clone(), None, "pretrained").unwrap());
        while !sft.done() {
            sft.step(&r).unwrap();
        }
        let mut rm = RewardModel::new(&r, sft.model.clone()).unwrap();
        while !rm.done() {
            rm.step(&r).unwrap();
        }
        rm.normalise(&r).unwrap();
        let sft_loss = r.data.heldout_lm_loss(&Cpu, &sft.model);
        let mut lm_loss = |gamma: f32| {
            r.cfg.ppo.gamma_ptx = gamma;
            let mut ppo = Ppo::new(&r, sft.model.clone(), rm.model.clone());
            while !ppo.done(&r) {
                ppo.step(&r).unwrap();
            }
            evaluate_policy(&r, &ppo.policy, Some(&ppo.reference), Some(&ppo.rm)).unwrap()
        };
        let (plain, mixed) = (lm_loss(0.0), lm_loss(PTX_GAMMA));
        eprintln!(
            "seed {seed}: held-out LM loss after SFT {sft_loss:.3}; after {PTX_PPO_STEPS} PPO steps γ_ptx 0: {:.3} (score {:.2}, kl {:.1}), γ_ptx {PTX_GAMMA}: {:.3} (score {:.2}, kl {:.1})",
            plain.lm_loss, plain.score, plain.kl.unwrap(), mixed.lm_loss, mixed.score, mixed.kl.unwrap()
        );
        assert!(mixed.lm_loss < plain.lm_loss - 0.1, "seed {seed}: γ_ptx {PTX_GAMMA} {} vs γ_ptx 0 {}", mixed.lm_loss, plain.lm_loss);
    }
}

/// The sizes of the test above.
const PTX_RM_STEPS: usize = 60;
const PTX_PPO_STEPS: usize = 15;
const PTX_GAMMA: f32 = 0.5;

#[test]
fn seeded_steps_repeat_and_agree_on_one_and_two_threads() {
    let text = shakespeare();
    let ck = pretrained(&text);
    let mut c = tiny_recipe();
    (c.rm.prompts, c.ppo.rollouts, c.ppo.gamma_ptx, c.eval_prompts) = (2, 4, 0.5, 4);
    let numbers = |threads: usize| -> Vec<u32> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let r = Rlhf::new(c.clone(), &ck, &text, BackendKind::Cpu).unwrap();
            let mut sft = Sft::new(&r, r.model_of(ck.clone(), None, "pretrained").unwrap());
            let mut out = vec![sft.step(&r).unwrap().loss];
            let mut rm = RewardModel::new(&r, sft.model.clone()).unwrap();
            let s = rm.step(&r).unwrap();
            out.extend([s.loss, s.accuracy, rm.eval(&r).unwrap().loss]);
            let mut ppo = Ppo::new(&r, sft.model.clone(), rm.model.clone());
            let p = ppo.step(&r).unwrap();
            out.extend([p.reward, p.score, p.kl, p.losses.loss, p.losses.ptx_loss.unwrap()]);
            out.extend(ppo.policy.params.iter().step_by(101));
            out.iter().map(|x| x.to_bits()).collect()
        })
    };
    let (one, two) = (numbers(1), numbers(2));
    assert_eq!(one, two, "1 and 2 threads");
    assert_eq!(one, numbers(2), "a rerun");
}

// ------------------------------------------------------------------------------------------------- the CLI

fn tp(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tp-rlhf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn tp_rlhf_refuses_bad_input_naming_it() {
    let write = |name: &str, json: &str| {
        let p = tmp(name);
        std::fs::write(&p, json).unwrap();
        p
    };
    let ok = write("ok.json", "{}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--config".into(), write("beta.json", r#"{"ppo": {"beta": -1}}"#)], "rlhf.ppo.beta"),
        (vec!["--config".into(), write("k.json", r#"{"rm": {"k": 1}}"#)], "rlhf.rm.k"),
        (vec!["--config".into(), write("clip.json", r#"{"ppo": {"clip": 1.5}}"#)], "rlhf.ppo.clip"),
        (vec!["--config".into(), write("pref.json", r#"{"preference": {"kind": "chars", "chars": ""}}"#)], "rlhf.preference.chars"),
        (vec!["--config".into(), write("kind.json", r#"{"preference": {"kind": "rhyme"}}"#)], "rhyme"),
        (vec!["--config".into(), write("unknown.json", r#"{"ppo": {"betta": 0.1}}"#)], "betta"),
        (vec!["--config".into(), ok.clone(), "--stage".into(), "dpo".into()], "--stage"),
        (vec!["--config".into(), ok.clone(), "--beta".into(), "-0.5".into()], "--beta"),
        (vec!["--config".into(), ok.clone()], "--checkpoint"),
        (vec!["--config".into(), ok.clone(), "--checkpoint".into(), tmp("missing.safetensors")], "missing.safetensors"),
        (vec!["--config".into(), ok.clone(), "--stage".into(), "ppo".into(), "--out".into(), tmp("empty-dir")], "sft.safetensors"),
    ];
    for (args, want) in cases {
        let mut all = vec!["rlhf"];
        all.extend(args.iter().map(String::as_str));
        let (code, _, err) = tp(&all);
        assert_eq!(code, Some(1), "{all:?}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{all:?}: want {want:?} in {err}");
    }
}

#[test]
fn tp_rlhf_runs_each_stage_from_the_last_ones_checkpoint_and_repeats() {
    let text = shakespeare();
    let ck = tmp("pretrained.safetensors");
    let pre = pretrained(&text);
    std::fs::write(&ck, checkpoint::save(&pre.config, &pre.tokenizer, pre.step, &pre.model, None).unwrap()).unwrap();
    let cfg = tmp("tiny.json");
    std::fs::write(&cfg, r#"{"eval_prompts": 4, "sft": {"steps": 3}, "rm": {"steps": 3, "prompts": 2}, "ppo": {"steps": 2, "rollouts": 4, "epochs": 2}}"#).unwrap();
    let lines = |out: &str| -> Vec<serde_json::Value> { out.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    // Stage by stage through the --out folder.
    let dir = tmp("stages");
    let (code, out, err) = tp(&["rlhf", "--config", &cfg, "--stage", "sft", "--checkpoint", &ck, "--out", &dir, "--eval-every", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let sft = lines(&out);
    assert!(sft.iter().all(|l| l["stage"] == "sft"));
    assert_eq!(sft.iter().filter(|l| l["eval"] == true).count(), 3, "steps 0 and 2, and the end");
    assert!(sft.iter().filter(|l| l["eval"] == true).all(|l| l["score"].is_number() && l["lm_loss"].is_number() && l["samples"].as_array().unwrap().len() == 3));
    assert!(sft.iter().filter(|l| l["eval"].is_null()).all(|l| l["loss"].is_number()));
    let (code, out, err) = tp(&["rlhf", "--config", &cfg, "--stage", "rm", "--out", &dir]);
    assert_eq!(code, Some(0), "{err}");
    let rm = lines(&out);
    let last = rm.last().unwrap();
    assert!(last["stage"] == "rm" && last["rm_accuracy"].is_number() && last["baseline"] == 0.5, "{last}");
    let (code, out, err) = tp(&["rlhf", "--config", &cfg, "--stage", "ppo", "--out", &dir, "--beta", "0.1", "--gamma-ptx", "0.5"]);
    assert_eq!(code, Some(0), "{err}");
    let ppo = lines(&out);
    let step = ppo.iter().find(|l| l["eval"].is_null()).unwrap();
    for k in ["reward", "score", "kl", "loss", "pg_loss", "vf_loss", "ptx_loss", "clipfrac"] {
        assert!(step[k].is_number(), "ppo step line lacks {k}: {step}");
    }
    let end = ppo.last().unwrap();
    assert!(end["eval"] == true && end["kl"].is_number() && end["reward"].is_number() && end["lm_loss"].is_number(), "{end}");
    for f in ["sft", "rm", "ppo"] {
        let ck = checkpoint::load(&std::fs::read(format!("{dir}/{f}.safetensors")).unwrap()).unwrap();
        assert_eq!(ck.config.model.classifier.map(|c| c.classes), if f == "sft" { None } else { Some(1) }, "{f}");
    }
    // All at once, twice: the same lines but the timings.
    let all = |d: &str| {
        let (code, out, err) = tp(&["rlhf", "--config", &cfg, "--checkpoint", &ck, "--out", &tmp(d)]);
        assert_eq!(code, Some(0), "{err}");
        lines(&out).into_iter().map(|mut l| { l.as_object_mut().unwrap().remove("elapsed_s"); l }).collect::<Vec<_>>()
    };
    let a = all("all-a");
    assert_eq!(a, all("all-b"));
    assert_eq!(a.iter().map(|l| l["stage"].as_str().unwrap()).collect::<std::collections::BTreeSet<_>>().len(), 3);
}
