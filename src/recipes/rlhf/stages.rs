//! The three stages of mini-RLHF (`recipes::rlhf`), each a struct with `step()` and an evaluation.

use super::losses::{gae, kl_rewards, log_softmax, pairwise_accuracy, pairwise_loss, policy_loss, rm_pairs, value_loss, whiten};
use super::{sample, sequences, Data, Rlhf};
use crate::backend::Host;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::model::{Batch, Model};
use crate::recipes::finetune::{self, ClassBatch};
use crate::rng::Rng;
use crate::train::step::{scalars_len, StepBuffers};
use crate::train::{adamw_at, finish_step, lr_at, record_update, train_step, OptState};

/// Stream tags (`Rlhf::stream`).
const SFT_BATCHES: u64 = 1;
const RM_PROMPTS: u64 = 2;
const RM_SAMPLES: u64 = 3;
const RM_EVAL: u64 = 4;
const PPO_PROMPTS: u64 = 5;
const PPO_SAMPLES: u64 = 6;
const PPO_PTX: u64 = 7;
const EVAL_SAMPLES: u64 = 8;

/// Held-out completions shown in an evaluation.
pub const SHOWN_SAMPLES: usize = 3;

// ------------------------------------------------------------------------------------------------------------ SFT

/// What one SFT step reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SftReport {
    pub step: usize,
    /// The next-character loss on the demonstrations.
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
}

/// Supervised fine-tuning: the plain LM objective on windows of the demonstrations, through `train::train_step`.
pub struct Sft {
    pub model: Model,
    pub opt: OptState,
    pub train: TrainConfig,
    pub step: usize,
    batches: Rng,
}

impl Sft {
    /// SFT of a pretrained model (no head), fresh AdamW state.
    pub fn new(r: &Rlhf, model: Model) -> Sft {
        let c = &r.cfg.sft;
        let opt = OptState::new(model.params.len());
        Sft { model, opt, train: r.train_config(c.lr, c.steps, c.batch), step: 0, batches: r.stream(SFT_BATCHES) }
    }

    /// One step on `sft.batch` windows of ctx_len characters of the demonstrations at seeded offsets.
    pub fn step(&mut self, r: &Rlhf) -> Result<SftReport> {
        let batch = Data::lm_batch(&r.data.demos, self.train.batch_size, self.model.cfg.ctx_len, &mut self.batches);
        let rep = crate::with_host!(r.backend, |be| train_step(be, &mut self.model, &mut self.opt, &self.train, &batch, self.step, None))?;
        self.step += 1;
        Ok(SftReport { step: rep.step, loss: rep.loss, lr: rep.lr, grad_norm: rep.grad_norm })
    }

    pub fn done(&self) -> bool {
        self.step >= self.train.steps
    }
}

// ------------------------------------------------------------------------------------------ evaluating a policy

/// A policy measured on the held-out prompts (the same prompts and the same random stream every time, so two
/// evaluations differ only by the model).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyEval {
    /// The mean preference score of one completion per held-out prompt.
    pub score: f32,
    /// The reward model's mean score of them (when there is one).
    pub reward: Option<f32>,
    /// The mean over them of Σ_tokens (log π − log π_SFT), the sampled estimate of KL(π ‖ π_SFT) (when there is a
    /// reference).
    pub kl: Option<f32>,
    /// The held-out LM loss (`Data::heldout_lm_loss`).
    pub lm_loss: f32,
    /// The first `SHOWN_SAMPLES` prompts and their completions, "prompt|completion".
    pub samples: Vec<String>,
}

/// log π of each completion token (B·L) from a forward's logits over prompt + completion sequences.
pub fn token_logps(logits: &[f32], v: usize, batch: &Batch, p: usize, l: usize) -> Vec<f32> {
    completion_rows(batch, p, l).into_iter().map(|row| log_softmax(&logits[row * v..(row + 1) * v])[batch.idx[row + 1] as usize]).collect()
}

/// The scalar head's value at the last position of each sequence: the reward model's score.
pub fn rewards<H: Host>(be: &H, rm: &Model, batch: &Batch) -> Result<Vec<f32>> {
    let last = (0..batch.b).map(|b| ((b + 1) * batch.t - 1) as u32).collect();
    let cb = ClassBatch { batch: batch.clone(), last, labels: vec![0; batch.b] };
    Ok(finetune::forward_on(be, rm, &rm.params[..], &cb, 0.0, None)?.logits)
}

/// Evaluates `policy` on the held-out prompts; the KL and the reward when given a reference and a reward model.
pub fn evaluate_policy(r: &Rlhf, policy: &Model, reference: Option<&Model>, rm: Option<&Model>) -> Result<PolicyEval> {
    let (p, l, d) = (r.cfg.prompt_len, r.cfg.completion_len, &r.data);
    let seed = r.stream(EVAL_SAMPLES).next_u64();
    crate::with_host!(r.backend, |be| {
        let comps = sample(be, policy, &d.tok, &d.eval_prompts, 1, l, seed)?;
        let scores: Vec<f32> = comps.iter().map(|c| r.cfg.preference.score(&d.tok.decode(c))).collect();
        let batch = sequences(&d.eval_prompts, &comps, 1);
        let kl = match reference {
            Some(rf) => {
                let lp = token_logps(&policy.forward(be, &batch, None).logits, policy.vocab(), &batch, p, l);
                let lq = token_logps(&rf.forward(be, &batch, None).logits, rf.vocab(), &batch, p, l);
                Some(lp.iter().zip(&lq).map(|(a, b)| a - b).sum::<f32>() / batch.b as f32)
            }
            None => None,
        };
        let reward = match rm {
            Some(rm) => Some(mean(&rewards(be, rm, &batch)?)),
            None => None,
        };
        let samples = (0..SHOWN_SAMPLES.min(comps.len())).map(|i| format!("{}|{}", d.tok.decode(&d.eval_prompts[i]), d.tok.decode(&comps[i]))).collect();
        Ok(PolicyEval { score: mean(&scores), reward, kl, lm_loss: d.heldout_lm_loss(be, policy), samples })
    })
}

fn mean(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64).sum::<f64>() as f32 / x.len().max(1) as f32
}

// ------------------------------------------------------------------------------------------------- reward model

/// What one reward-model step reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RmReport {
    pub step: usize,
    /// mean −log σ(r_w − r_l) over the step's pairs (0 with none: the step is then skipped).
    pub loss: f32,
    /// The fraction of the step's pairs ranked as the preference ranks them, before the update.
    pub accuracy: f32,
    pub pairs: usize,
    pub grad_norm: f32,
}

/// The reward model on the held-out prompts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RmEval {
    /// Pairwise accuracy over every held-out pair whose preference scores differ.
    pub rm_accuracy: f32,
    pub loss: f32,
    pub pairs: usize,
    /// What ranking at random (or by a constant) scores: 0.5.
    pub baseline: f32,
}

/// The reward model's loss and its gradient in `grads` (laid out like `model.params`): the scalar head on each
/// sequence's last position, mean −log σ(r_w − r_l) over `pairs`. Returns (loss, the rewards).
pub fn rm_grads<H: Host>(be: &H, model: &Model, params: &[f32], cb: &ClassBatch, pairs: &[(usize, usize)], grads: &mut [f32]) -> Result<(f32, Vec<f32>)> {
    let mut cf = finetune::forward_on(be, model, params, cb, 0.0, None)?;
    let (loss, dr) = pairwise_loss(&cf.logits, pairs);
    cf.dlogits = dr;
    finetune::backward_on(be, model, params, &cf, cb, grads)?;
    Ok((loss, cf.logits))
}

/// The reward model: the SFT model with a scalar head, trained on ranked pairs of its own completions.
pub struct RewardModel {
    pub model: Model,
    /// The SFT model the completions are sampled from (frozen).
    pub sft: Model,
    pub opt: OptState,
    pub train: TrainConfig,
    pub step: usize,
    prompts: Rng,
    samples: Rng,
    /// The held-out prompts' K completions each (sampled once), as sequences, and their pairs.
    eval_batch: Batch,
    pub eval_pairs: Vec<(usize, usize)>,
}

impl RewardModel {
    /// A reward model on the SFT model `sft` (no head): its body with a zero scalar head. Samples the held-out
    /// prompts' completions once.
    pub fn new(r: &Rlhf, sft: Model) -> Result<RewardModel> {
        let c = &r.cfg.rm;
        let model = r.with_scalar_head(&sft);
        let seed = r.stream(RM_EVAL).next_u64();
        let d = &r.data;
        let comps = crate::with_host!(r.backend, |be| sample(be, &sft, &d.tok, &d.eval_prompts, c.k, r.cfg.completion_len, seed))?;
        let scores: Vec<f32> = comps.iter().map(|x| r.cfg.preference.score(&d.tok.decode(x))).collect();
        let eval_batch = sequences(&d.eval_prompts, &comps, c.k);
        let eval_pairs = rm_pairs(&scores, c.k);
        let opt = OptState::new(model.params.len());
        let train = r.train_config(c.lr, c.steps, c.prompts * c.k);
        Ok(RewardModel { model, sft, opt, train, step: 0, prompts: r.stream(RM_PROMPTS), samples: r.stream(RM_SAMPLES), eval_batch, eval_pairs })
    }

    /// One step: `rm.prompts` training prompts, K completions of each from the SFT model, every pair with different
    /// scores, one update.
    pub fn step(&mut self, r: &Rlhf) -> Result<RmReport> {
        let (c, d) = (&r.cfg.rm, &r.data);
        let prompts: Vec<Vec<u32>> = (0..c.prompts).map(|_| d.train_prompt(r.cfg.prompt_len, &mut self.prompts)).collect();
        let seed = self.samples.next_u64();
        let comps = crate::with_host!(r.backend, |be| sample(be, &self.sft, &d.tok, &prompts, c.k, r.cfg.completion_len, seed))?;
        let scores: Vec<f32> = comps.iter().map(|x| r.cfg.preference.score(&d.tok.decode(x))).collect();
        let pairs = rm_pairs(&scores, c.k);
        let batch = sequences(&prompts, &comps, c.k);
        let step = self.step;
        self.step += 1;
        if pairs.is_empty() {
            return Ok(RmReport { step, loss: 0.0, accuracy: f32::NAN, pairs: 0, grad_norm: 0.0 });
        }
        let last = (0..batch.b).map(|b| ((b + 1) * batch.t - 1) as u32).collect();
        let cb = ClassBatch { batch, last, labels: vec![0; comps.len()] };
        let (model, opt, t) = (&mut self.model, &mut self.opt, &self.train);
        let (loss, acc, norm) = crate::with_host!(r.backend, |be| {
            update(be, model, opt, t, step, |be, m, params, grads| {
                let (loss, rw) = rm_grads(be, m, params, &cb, &pairs, grads)?;
                Ok((loss, pairwise_accuracy(&rw, &pairs)))
            })
        })?;
        Ok(RmReport { step, loss, accuracy: acc, pairs: pairs.len(), grad_norm: norm })
    }

    pub fn done(&self) -> bool {
        self.step >= self.train.steps
    }

    /// The rewards of the held-out completions.
    fn eval_rewards(&self, r: &Rlhf) -> Result<Vec<f32>> {
        crate::with_host!(r.backend, |be| rewards(be, &self.model, &self.eval_batch))
    }

    /// Pairwise accuracy and loss on the held-out prompts.
    pub fn eval(&self, r: &Rlhf) -> Result<RmEval> {
        let rw = self.eval_rewards(r)?;
        let (loss, _) = pairwise_loss(&rw, &self.eval_pairs);
        Ok(RmEval { rm_accuracy: pairwise_accuracy(&rw, &self.eval_pairs), loss, pairs: self.eval_pairs.len(), baseline: 0.5 })
    }

    /// Normalises the head so the rewards of the held-out SFT completions have mean 0 and standard deviation 1
    /// (Huang et al. 2022, "reward normalisation"; the ranking, so the accuracy, is unchanged): w ← w/σ,
    /// b ← (b − μ)/σ. Returns (μ, σ).
    pub fn normalise(&mut self, r: &Rlhf) -> Result<(f32, f32)> {
        let rw = self.eval_rewards(r)?;
        let mu = mean(&rw);
        let sd = (rw.iter().map(|&x| ((x - mu) as f64).powi(2)).sum::<f64>() / rw.len().max(1) as f64).sqrt() as f32;
        let sd = if sd > 1e-6 { sd } else { 1.0 };
        let head = self.model.layout.classifier.expect("the reward model has a scalar head");
        head.w.of_mut(&mut self.model.params).iter_mut().for_each(|w| *w /= sd);
        let b = head.b.expect("the head has a bias");
        b.of_mut(&mut self.model.params).iter_mut().for_each(|x| *x = (*x - mu) / sd);
        Ok((mu, sd))
    }
}

/// One optimizer step of an objective whose gradients `grads_of(be, model, params, grads)` computes (returning the
/// loss and one more number): `train::record_update` then clips and takes the guarded AdamW step. Returns (loss,
/// the number, the gradient norm); refuses, leaving the model and `opt` as they were, when either is not finite.
fn update<H: Host, X>(
    be: &H,
    model: &mut Model,
    opt: &mut OptState,
    t: &TrainConfig,
    step: usize,
    grads_of: impl FnOnce(&H, &Model, &[f32], &mut [f32]) -> Result<(f32, X)>,
) -> Result<(f32, X, f32)> {
    let lr = lr_at(t, step);
    let h = adamw_at(t, lr, opt.t + 1);
    let mut grads = vec![0.0; model.params.len()];
    let mut scalars = vec![0.0; scalars_len(model)];
    let mut params = std::mem::take(&mut model.params);
    let result = (|| -> Result<(f32, X, Vec<f32>)> {
        let (loss, x) = grads_of(be, model, &params[..], &mut grads[..])?;
        let bufs = StepBuffers { params: &mut params[..], grads: &mut grads[..], m: &mut opt.m[..], v: &mut opt.v[..], scalars: &mut scalars[..] };
        let rec = record_update(be, model, bufs, loss, &h, t.grad_clip)?;
        Ok((loss, x, rec.scalars))
    })();
    model.params = params;
    let (loss, x, scalars) = result?;
    let rep = finish_step::<H>(model, loss, &scalars, step, lr)?;
    opt.t += 1;
    Ok((loss, x, rep.grad_norm))
}

// ---------------------------------------------------------------------------------------------------------- PPO

/// A batch of rollouts, ready for PPO's updates: B prompt + completion sequences of P + L tokens, and per
/// completion token (B·L) the action, log π_old, V_old, the whitened advantage and the return.
#[derive(Clone, Debug)]
pub struct Rollout {
    pub batch: Batch,
    pub p: usize,
    pub l: usize,
    pub actions: Vec<u32>,
    pub logp_old: Vec<f32>,
    pub values_old: Vec<f32>,
    pub adv: Vec<f32>,
    pub returns: Vec<f32>,
}

impl Rollout {
    /// The rows (in the B·T rows of the batch) whose logits give each completion token, and whose value is the
    /// value of the state before it: b·T + P − 1 + t.
    pub fn rows(&self) -> Vec<usize> {
        completion_rows(&self.batch, self.p, self.l)
    }
}

/// The rows b·T + P − 1 + t (t < L) of a batch of prompt + completion sequences: the logits there give completion
/// token t, the value there is the value of the state before it.
pub fn completion_rows(batch: &Batch, p: usize, l: usize) -> Vec<usize> {
    (0..batch.b).flat_map(|b| (0..l).map(move |t| b * batch.t + p - 1 + t)).collect()
}

/// The value head (the 1-class `model.classifier`) at `rows` of the stack's output `head_in` (rows, C).
pub fn values_at(model: &Model, params: &[f32], head_in: &[f32], rows: &[usize]) -> Vec<f32> {
    let c = model.cfg.d_model;
    let head = model.layout.classifier.expect("the policy has a value head");
    let (w, b) = (head.w.of(params), head.b.expect("the head has a bias").of(params)[0]);
    rows.iter().map(|&r| head_in[r * c..(r + 1) * c].iter().zip(w).map(|(h, w)| h * w).sum::<f32>() + b).collect()
}

/// The parts of PPO's objective on one update.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PpoLoss {
    /// pg_loss + vf_coef · vf_loss + γ_ptx · ptx_loss.
    pub loss: f32,
    pub pg_loss: f32,
    pub vf_loss: f32,
    /// The LM loss on the PPO-ptx batch (None when γ_ptx = 0).
    pub ptx_loss: Option<f32>,
    pub clipfrac: f32,
}

/// PPO's objective on a rollout (and the PPO-ptx batch, weighted γ_ptx) and its gradient in `grads`: the clipped
/// policy loss's gradient wrt the logits goes in `fwd.dlogits`, the value loss's wrt the values becomes a gradient at
/// the stack's output `head_in` (and the head's own), both pushed through `Model::backward_with`; the LM loss's
/// through `backward_on`.
pub fn ppo_grads<H: Host>(
    be: &H,
    model: &Model,
    params: &[f32],
    roll: &Rollout,
    ptx: Option<(&Batch, f32)>,
    k: &super::PpoConfig,
    grads: &mut [f32],
) -> Result<PpoLoss> {
    let (v, c) = (model.vocab(), model.cfg.d_model);
    let head = model.layout.classifier.ok_or_else(|| Error::Invalid("the policy has no value head (model.classifier)".into()))?;
    let bias = head.b.expect("the head has a bias");
    let mut fwd = model.forward_on(be, params, &roll.batch, None)?;
    let rows = roll.rows();
    let mut sel = Vec::with_capacity(rows.len() * v);
    for &r in &rows {
        sel.extend_from_slice(&fwd.logits[r * v..(r + 1) * v]);
    }
    let pl = policy_loss(&sel, v, &roll.actions, &roll.logp_old, &roll.adv, k.clip);
    let mut dlogits = vec![0.0f32; fwd.logits.len()];
    for (i, &r) in rows.iter().enumerate() {
        dlogits[r * v..(r + 1) * v].copy_from_slice(&pl.dlogits[i * v..(i + 1) * v]);
    }
    fwd.dlogits = dlogits;
    let values = values_at(model, params, &fwd.head_in, &rows);
    let (vf_loss, dv) = value_loss(&values, &roll.values_old, &roll.returns, (k.value_clip > 0.0).then_some(k.value_clip));
    let w = head.w.of(params).to_vec();
    let mut dhead_in = vec![0.0f32; fwd.head_in.len()];
    for (i, &r) in rows.iter().enumerate() {
        let g = k.vf_coef * dv[i];
        for j in 0..c {
            dhead_in[r * c + j] = g * w[j];
            grads[head.w.offset + j] += g * fwd.head_in[r * c + j];
        }
        grads[bias.offset] += g;
    }
    model.backward_with(be, params, &fwd, &roll.batch, grads, Some(&dhead_in[..]))?;
    drop(fwd);
    let mut loss = pl.loss + k.vf_coef * vf_loss;
    let ptx_loss = match ptx {
        Some((pb, g)) => {
            let mut f = model.forward_on(be, params, pb, None)?;
            f.dlogits.iter_mut().for_each(|x| *x *= g);
            model.backward_on(be, params, &f, pb, grads)?;
            loss += g * f.loss;
            Some(f.loss)
        }
        None => None,
    };
    Ok(PpoLoss { loss, pg_loss: pl.loss, vf_loss, ptx_loss, clipfrac: pl.clipfrac })
}

/// What one PPO step (a batch of rollouts, then `ppo.epochs` updates on it) reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PpoReport {
    pub step: usize,
    /// The reward model's mean score of the rollouts (normalised: 0 is the SFT model's mean).
    pub reward: f32,
    /// The preference's mean score of the rollouts: what the "human" thinks.
    pub score: f32,
    /// The mean over the rollouts of Σ_tokens (log π_old − log π_SFT).
    pub kl: f32,
    /// The mean of the per-token rewards' sums (reward − β·kl).
    pub return_mean: f32,
    /// The objective's parts, averaged over the epochs' updates.
    #[serde(flatten)]
    pub losses: PpoLoss,
    pub grad_norm: f32,
}

/// PPO with a KL penalty to the SFT model and an optional pretraining mix.
pub struct Ppo {
    /// The policy with its value head.
    pub policy: Model,
    /// π_SFT (frozen).
    pub reference: Model,
    /// The reward model (frozen).
    pub rm: Model,
    pub opt: OptState,
    pub train: TrainConfig,
    pub step: usize,
    prompts: Rng,
    samples: Rng,
    ptx: Rng,
}

impl Ppo {
    /// The policy and the reference from the SFT model `sft` (no head); the value head starts at zero.
    pub fn new(r: &Rlhf, sft: Model, rm: Model) -> Ppo {
        let c = &r.cfg.ppo;
        let policy = r.with_scalar_head(&sft);
        let opt = OptState::new(policy.params.len());
        let train = r.train_config(c.lr, c.steps * c.epochs, c.rollouts);
        Ppo { policy, reference: sft, rm, opt, train, step: 0, prompts: r.stream(PPO_PROMPTS), samples: r.stream(PPO_SAMPLES), ptx: r.stream(PPO_PTX) }
    }

    /// Samples `ppo.rollouts` completions of training prompts from the policy and scores them: returns the rollout
    /// (advantages whitened over the batch) and (mean RM reward, mean preference score, mean KL, mean return).
    pub fn rollout<H: Host>(&mut self, be: &H, r: &Rlhf) -> Result<(Rollout, [f32; 4])> {
        let (c, d) = (&r.cfg.ppo, &r.data);
        let (p, l) = (r.cfg.prompt_len, r.cfg.completion_len);
        let prompts: Vec<Vec<u32>> = (0..c.rollouts).map(|_| d.train_prompt(p, &mut self.prompts)).collect();
        let comps = sample(be, &self.policy, &d.tok, &prompts, 1, l, self.samples.next_u64())?;
        let batch = sequences(&prompts, &comps, 1);
        let fwd = self.policy.forward(be, &batch, None);
        let roll_rows = completion_rows(&batch, p, l);
        let logp_old = token_logps(&fwd.logits, self.policy.vocab(), &batch, p, l);
        let values_old = values_at(&self.policy, &self.policy.params, &fwd.head_in, &roll_rows);
        drop(fwd);
        let logp_ref = token_logps(&self.reference.forward(be, &batch, None).logits, self.reference.vocab(), &batch, p, l);
        let score_rm = rewards(be, &self.rm, &batch)?;
        let scores: Vec<f32> = comps.iter().map(|x| r.cfg.preference.score(&d.tok.decode(x))).collect();
        let rew = kl_rewards(&logp_old, &logp_ref, &score_rm, l, c.beta);
        let (mut adv, returns) = gae(&rew, &values_old, l, c.gamma, c.lam);
        whiten(&mut adv);
        let kl = logp_old.iter().zip(&logp_ref).map(|(a, b)| a - b).sum::<f32>() / batch.b as f32;
        let ret = rew.iter().sum::<f32>() / batch.b as f32;
        let actions = comps.concat();
        let stats = [mean(&score_rm), mean(&scores), kl, ret];
        Ok((Rollout { batch, p, l, actions, logp_old, values_old, adv, returns }, stats))
    }

    /// One PPO step: a batch of rollouts, then `ppo.epochs` updates on the whole batch (each with a fresh PPO-ptx
    /// batch when γ_ptx > 0).
    pub fn step(&mut self, r: &Rlhf) -> Result<PpoReport> {
        let c = r.cfg.ppo.clone();
        let step = self.step;
        crate::with_host!(r.backend, |be| {
            let (roll, [reward, score, kl, return_mean]) = self.rollout(be, r)?;
            let mut sum = PpoLoss::default();
            let (mut ptx_sum, mut norm) = (0.0f32, 0.0f32);
            for e in 0..c.epochs {
                let ptx = (c.gamma_ptx > 0.0).then(|| Data::lm_batch(&r.data.train, c.ptx_batch, self.policy.cfg.ctx_len, &mut self.ptx));
                let (_, parts, n) = update(be, &mut self.policy, &mut self.opt, &self.train, step * c.epochs + e, |be, m, params, grads| {
                    let parts = ppo_grads(be, m, params, &roll, ptx.as_ref().map(|b| (b, c.gamma_ptx)), &c, grads)?;
                    Ok((parts.loss, parts))
                })?;
                sum.loss += parts.loss / c.epochs as f32;
                sum.pg_loss += parts.pg_loss / c.epochs as f32;
                sum.vf_loss += parts.vf_loss / c.epochs as f32;
                sum.clipfrac += parts.clipfrac / c.epochs as f32;
                ptx_sum += parts.ptx_loss.unwrap_or(0.0) / c.epochs as f32;
                norm = n;
            }
            sum.ptx_loss = (c.gamma_ptx > 0.0).then_some(ptx_sum);
            self.step += 1;
            Ok(PpoReport { step, reward, score, kl, return_mean, losses: sum, grad_norm: norm })
        })
    }

    pub fn done(&self, r: &Rlhf) -> bool {
        self.step >= r.cfg.ppo.steps
    }
}
