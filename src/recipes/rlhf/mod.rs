//! InstructGPT's recipe in miniature (Ouyang et al. 2022, "Training language models to follow instructions with
//! human feedback"), docs/RECIPES.md §4: from a pretrained character-level GPT,
//!
//! 1. **SFT** — fine-tune on demonstrations that satisfy the preference (`Data::demos`: corpus lines chosen by a
//!    documented rule), the plain next-character loss through the project's trainer (`train::train_step`);
//! 2. **reward model** — the SFT model with a scalar head on the last position (`model.classifier` with 1 class),
//!    trained on every pair of K sampled completions of a prompt that the preference ranks, −log σ(r_w − r_l);
//! 3. **PPO** — the policy (SFT weights plus a value head: the same 1-class head read at every position) samples
//!    completions with the KV cache; per-token reward −β·(log π_old − log π_SFT) plus the reward model's score at the
//!    last token; GAE; the clipped objective, the (clipped) value loss and γ_ptx times the LM loss on a corpus batch
//!    ("PPO-ptx"). The gradients wrt the logits and values are computed on the host (`losses`) and pushed through
//!    `Model::backward_with`, then `train::record_update` clips and takes the guarded AdamW step.
//!
//! The "human" is `preference::Preference`. Each stage is a struct with a `step()` (one update) and an evaluation, so
//! a caller (the CLI, an engine) can interleave, pause, and save between stages; every report is serialisable.
//! Same config, checkpoint and seed → the same numbers, on every thread count.

pub mod losses;
pub mod preference;
pub mod stages;

pub use preference::Preference;
pub use stages::{Ppo, PpoReport, RewardModel, RmEval, RmReport, Sft, SftReport};

use crate::backend::{BackendKind, Host};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{Arch, ClassifierConfig, Config};
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{Continuations, SampleOptions};
use crate::model::{Batch, Model};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// SFT's knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    pub steps: usize,
    pub lr: f32,
    /// Windows of ctx_len characters of the demonstrations a step.
    pub batch: usize,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig { steps: 150, lr: 1e-3, batch: 16 }
    }
}

/// The reward model's knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmConfig {
    pub steps: usize,
    pub lr: f32,
    /// Completions sampled per prompt (K); a prompt gives at most C(K, 2) pairs.
    pub k: usize,
    /// Training prompts a step (the batch holds prompts·K sequences).
    pub prompts: usize,
}

impl Default for RmConfig {
    fn default() -> Self {
        RmConfig { steps: 150, lr: 1e-3, k: 4, prompts: 8 }
    }
}

/// PPO's knobs (Huang et al. 2022's names in brackets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    pub steps: usize,
    pub lr: f32,
    /// Completions sampled a step, one per training prompt [batch size].
    pub rollouts: usize,
    /// Updates on each batch of rollouts (the whole batch each time) [noptepochs].
    pub epochs: usize,
    /// Weight of the KL penalty in the reward (0: none — watch the reward get hacked).
    pub beta: f32,
    /// Weight of the LM loss on a corpus batch ("PPO-ptx"; 0: plain PPO).
    pub gamma_ptx: f32,
    /// Windows of ctx_len characters of the corpus's training split in the PPO-ptx batch.
    pub ptx_batch: usize,
    /// The policy ratio's clip range ε [cliprange].
    pub clip: f32,
    /// The value's clip range around its old value (0: the value loss is not clipped) [cliprange_value].
    pub value_clip: f32,
    /// Weight of the value loss [vf_coef].
    pub vf_coef: f32,
    /// GAE's discount γ and λ.
    pub gamma: f32,
    pub lam: f32,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            steps: 40,
            lr: 3e-4,
            rollouts: 32,
            epochs: 4,
            beta: 0.05,
            gamma_ptx: 0.0,
            ptx_batch: 8,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.5,
            gamma: 1.0,
            lam: 0.95,
        }
    }
}

/// A mini-RLHF recipe: `configs/recipes/rlhf.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlhfConfig {
    /// The pretrained gpt checkpoint SFT starts from (the command line's --checkpoint overrides it).
    pub checkpoint: Option<String>,
    pub preference: Preference,
    pub seed: u64,
    /// Characters in a prompt: a window of the corpus.
    pub prompt_len: usize,
    /// Characters sampled after a prompt (fixed, so a batch of completions is one tensor).
    pub completion_len: usize,
    /// Held-out prompts (evenly spaced windows of the corpus's last 10%) the evaluations use.
    pub eval_prompts: usize,
    pub sft: SftConfig,
    pub rm: RmConfig,
    pub ppo: PpoConfig,
}

impl Default for RlhfConfig {
    fn default() -> Self {
        RlhfConfig {
            checkpoint: None,
            preference: Preference::default(),
            seed: 1,
            prompt_len: 32,
            completion_len: 24,
            eval_prompts: 32,
            sft: SftConfig::default(),
            rm: RmConfig::default(),
            ppo: PpoConfig::default(),
        }
    }
}

fn bad(field: &str, value: impl ToString, rule: &str) -> Error {
    Error::Config { field: format!("rlhf.{field}"), value: value.to_string(), rule: rule.into() }
}

impl RlhfConfig {
    /// Parses a config (unknown fields refused) and validates it.
    pub fn from_json(json: &str) -> Result<RlhfConfig> {
        let c: RlhfConfig = serde_json::from_str(json).map_err(|e| Error::ConfigParse(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Refuses a value that breaks its rule, naming the field. `ctx_len` checks are made against the model
    /// (`Rlhf::new`).
    pub fn validate(&self) -> Result<()> {
        self.preference.validate()?;
        let pos = |f: &str, v: usize| if v == 0 { Err(bad(f, v, "must be at least 1")) } else { Ok(()) };
        let lr = |f: &str, v: f32| if v.is_finite() && v > 0.0 && v <= 1.0 { Ok(()) } else { Err(bad(f, v, "must be in (0, 1]")) };
        let nonneg = |f: &str, v: f32| if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(bad(f, v, "must be a number >= 0")) };
        let unit = |f: &str, v: f32| if v.is_finite() && (0.0..=1.0).contains(&v) { Ok(()) } else { Err(bad(f, v, "must be in [0, 1]")) };
        pos("prompt_len", self.prompt_len)?;
        pos("completion_len", self.completion_len)?;
        pos("eval_prompts", self.eval_prompts)?;
        if self.eval_prompts > MAX_PROMPTS {
            return Err(bad("eval_prompts", self.eval_prompts, &format!("must be at most {MAX_PROMPTS}")));
        }
        pos("sft.batch", self.sft.batch)?;
        lr("sft.lr", self.sft.lr)?;
        lr("rm.lr", self.rm.lr)?;
        if !(2..=crate::generate::MAX_N).contains(&self.rm.k) {
            return Err(bad("rm.k", self.rm.k, &format!("must be in 2..={}", crate::generate::MAX_N)));
        }
        pos("rm.prompts", self.rm.prompts)?;
        if self.rm.prompts > MAX_PROMPTS {
            return Err(bad("rm.prompts", self.rm.prompts, &format!("must be at most {MAX_PROMPTS}")));
        }
        let p = &self.ppo;
        lr("ppo.lr", p.lr)?;
        pos("ppo.rollouts", p.rollouts)?;
        if p.rollouts > MAX_PROMPTS {
            return Err(bad("ppo.rollouts", p.rollouts, &format!("must be at most {MAX_PROMPTS}")));
        }
        pos("ppo.epochs", p.epochs)?;
        pos("ppo.ptx_batch", p.ptx_batch)?;
        nonneg("ppo.beta", p.beta)?;
        nonneg("ppo.gamma_ptx", p.gamma_ptx)?;
        nonneg("ppo.value_clip", p.value_clip)?;
        nonneg("ppo.vf_coef", p.vf_coef)?;
        if !(p.clip.is_finite() && p.clip > 0.0 && p.clip < 1.0) {
            return Err(bad("ppo.clip", p.clip, "must be in (0, 1)"));
        }
        unit("ppo.gamma", p.gamma)?;
        unit("ppo.lam", p.lam)
    }
}

/// Most prompts in one batch or evaluation.
pub const MAX_PROMPTS: usize = 4096;

/// Demonstrations are corpus lines of at least this many characters.
pub const MIN_DEMO_CHARS: usize = 16;

/// Held-out windows the LM loss is measured on.
pub const EVAL_WINDOWS: usize = 32;

/// The recipe's data, all from the corpus by documented rules: the 90/10 split of the text (as `tp train`'s), the
/// SFT demonstrations, and the held-out prompts.
pub struct Data {
    pub tok: Tokenizer,
    /// The first 90% of the text's characters.
    pub train: Vec<u32>,
    /// The last 10%.
    pub val: Vec<u32>,
    /// The demonstrations, joined by newlines: the training split's lines of at least `MIN_DEMO_CHARS` characters
    /// whose preference score per character is above 0 and at least the upper quartile's (the 75th percentile of
    /// the score per character over those lines).
    pub demos: Vec<u32>,
    /// How many lines are demonstrations, of how many long enough, and the quartile's score per character.
    pub demo_lines: usize,
    pub long_lines: usize,
    pub demo_threshold: f32,
    /// `eval_prompts` windows of `prompt_len` characters evenly spaced through the held-out split.
    pub eval_prompts: Vec<Vec<u32>>,
}

impl Data {
    /// The recipe's data from the corpus `text`, in the tokenizer's characters.
    pub fn new(text: &str, tok: Tokenizer, cfg: &RlhfConfig, ctx_len: usize) -> Result<Data> {
        let text = crate::data::check_text(text.as_bytes())?;
        let ids = tok.encode(text)?;
        let need = 10 * (ctx_len + 2).max(cfg.prompt_len + cfg.eval_prompts);
        if ids.len() < need {
            return Err(crate::error::DataIssue::TooShort { chars: ids.len(), need }.into());
        }
        let n = ids.len() * 9 / 10;
        let (train, val): (Vec<u32>, Vec<u32>) = (ids[..n].to_vec(), ids[n..].to_vec());
        let train_text = tok.decode(&train);
        let long: Vec<&str> = train_text.lines().filter(|l| l.chars().count() >= MIN_DEMO_CHARS).collect();
        let per_char = |l: &str| cfg.preference.score(l) / l.chars().count() as f32;
        let mut rates: Vec<f32> = long.iter().map(|l| per_char(l)).collect();
        rates.sort_by(f32::total_cmp);
        let threshold = rates.get((rates.len().saturating_sub(1)) * 3 / 4).copied().unwrap_or(0.0);
        let chosen: Vec<&str> = long.iter().copied().filter(|l| per_char(l) > 0.0 && per_char(l) >= threshold).collect();
        if chosen.is_empty() {
            return Err(Error::Invalid(format!(
                "rlhf.preference = {}: no line of the corpus scores above 0, so there is nothing to demonstrate",
                cfg.preference.describe()
            )));
        }
        let mut demo_text = chosen.join("\n");
        demo_text.push('\n');
        let demos = tok.encode(&demo_text)?;
        if demos.len() < ctx_len + 2 {
            return Err(Error::Invalid(format!("the demonstrations have {} characters; need at least ctx_len + 2", demos.len())));
        }
        let (p, k) = (cfg.prompt_len, cfg.eval_prompts);
        let every = (val.len() - p) / k;
        let eval_prompts = (0..k).map(|i| val[i * every..i * every + p].to_vec()).collect();
        Ok(Data { tok, train, val, demos, demo_lines: chosen.len(), long_lines: long.len(), demo_threshold: threshold, eval_prompts })
    }

    /// A training prompt: a window of `p` characters of the training split at a seeded offset.
    pub fn train_prompt(&self, p: usize, rng: &mut Rng) -> Vec<u32> {
        let i = rng.below(self.train.len() - p);
        self.train[i..i + p].to_vec()
    }

    /// `b` windows of `t` + 1 characters of `ids` at seeded offsets, as an LM batch.
    pub fn lm_batch(ids: &[u32], b: usize, t: usize, rng: &mut Rng) -> Batch {
        let mut batch = Batch { b, t, ..Default::default() };
        for _ in 0..b {
            let i = rng.below(ids.len() - t);
            batch.idx.extend_from_slice(&ids[i..i + t]);
            batch.targets.extend(ids[i + 1..i + t + 1].iter().map(|&x| x as i32));
        }
        batch
    }

    /// The held-out LM loss: the mean next-character loss on `EVAL_WINDOWS` windows of ctx_len evenly spaced
    /// through the held-out split.
    pub fn heldout_lm_loss<H: Host>(&self, be: &H, model: &Model) -> f32 {
        let t = model.cfg.ctx_len.min(self.val.len() - 1);
        let every = (self.val.len() - t - 1) / EVAL_WINDOWS;
        let mut batch = Batch { b: EVAL_WINDOWS, t, ..Default::default() };
        for w in 0..EVAL_WINDOWS {
            let i = w * every;
            batch.idx.extend_from_slice(&self.val[i..i + t]);
            batch.targets.extend(self.val[i + 1..i + t + 1].iter().map(|&x| x as i32));
        }
        model.forward(be, &batch, None).loss
    }
}

/// `n` completions of `len` characters of each prompt, sampled from `model` at temperature 1 (no top-k, no top-p:
/// the policy's own distribution, so the log-probabilities PPO computes are those the tokens were drawn with) with
/// the KV cache (`generate::Continuations`). The prompt's completions come from the seeds `seed + 1000·i + j`.
/// Returns prompts·n completions, prompt after prompt.
pub fn sample<H: Host>(be: &H, model: &Model, tok: &Tokenizer, prompts: &[Vec<u32>], n: usize, len: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(prompts.len() * n);
    for (i, p) in prompts.iter().enumerate() {
        let o = SampleOptions { max_tokens: len, temperature: 1.0, top_k: 0, top_p: 1.0, seed: seed.wrapping_add(1000 * i as u64) };
        let prompt = tok.decode(p);
        let c = Continuations::start(Cow::Borrowed(model), Cow::Borrowed(tok), be, &prompt, &o, n, crate::model::paged::DEFAULT_BLOCK_SIZE)?;
        out.extend(c.run(be, |_, _| {})?.tokens());
    }
    Ok(out)
}

/// Prompt + completion sequences (all the same length) as a batch with no target (−1 everywhere).
pub fn sequences(prompts: &[Vec<u32>], completions: &[Vec<u32>], n: usize) -> Batch {
    let t = prompts[0].len() + completions[0].len();
    let mut batch = Batch { b: completions.len(), t, ..Default::default() };
    for (j, c) in completions.iter().enumerate() {
        batch.idx.extend_from_slice(&prompts[j / n]);
        batch.idx.extend_from_slice(c);
    }
    batch.targets = vec![-1; batch.b * t];
    batch
}

/// The recipe: its config, the config of the pretrained model (no head), the data, and the backend.
pub struct Rlhf {
    pub cfg: RlhfConfig,
    /// The checkpoint's config, `model.classifier` removed; each stage's model config derives from it.
    pub base: Config,
    pub data: Data,
    pub backend: BackendKind,
}

impl Rlhf {
    /// The recipe over `text` with the tokenizer and model config of a gpt checkpoint (pretrained, or a stage's).
    pub fn new(cfg: RlhfConfig, ck: &Checkpoint, text: &str, backend: BackendKind) -> Result<Rlhf> {
        cfg.validate()?;
        if backend == BackendKind::Gpu {
            return Err(Error::Invalid("--backend gpu: the RLHF recipe runs on the cpu or reference backend".into()));
        }
        if ck.config.model.arch != Arch::Gpt || !ck.tokenizer.specials.is_empty() {
            return Err(Error::Invalid("--checkpoint: the RLHF recipe needs a gpt checkpoint (a character tokenizer, no special token)".into()));
        }
        let ctx = ck.config.model.ctx_len;
        if cfg.prompt_len + cfg.completion_len > ctx {
            return Err(bad(
                "completion_len",
                cfg.completion_len,
                &format!("prompt_len + completion_len must be at most the model's ctx_len {ctx} (prompt_len = {})", cfg.prompt_len),
            ));
        }
        let mut base = ck.config.clone();
        base.model.classifier = None;
        base.finetune = None;
        let data = Data::new(text, ck.tokenizer.clone(), &cfg, ctx)?;
        Ok(Rlhf { cfg, base, data, backend })
    }

    /// A seeded stream of the recipe for one purpose (`tag`): the same seed gives the same stream.
    pub fn stream(&self, tag: u64) -> Rng {
        Rng::new(self.cfg.seed).fork(tag)
    }

    /// A checkpoint of a stage's model (the config's model section is the model's: with or without the head).
    pub fn save(&self, model: &Model, step: usize, opt: Option<&crate::train::OptState>) -> Result<Vec<u8>> {
        let mut cfg = self.base.clone();
        cfg.model = model.cfg.clone();
        checkpoint::save(&cfg, &self.data.tok, step, model, opt)
    }

    /// A stage's model from a checkpoint, refused when its body is not this recipe's model or its head is not
    /// `head` (None: no head; Some(1): a scalar head).
    pub fn model_of(&self, ck: Checkpoint, head: Option<usize>, what: &str) -> Result<Model> {
        let mut want = self.base.model.clone();
        want.classifier = head.map(|classes| ClassifierConfig { classes });
        if ck.model.cfg != want || ck.tokenizer.chars != self.data.tok.chars {
            return Err(Error::Invalid(format!("{what}: not a checkpoint of this recipe's model (its config, head or characters differ)")));
        }
        Ok(ck.model)
    }

    /// `model` with a scalar head (`model.classifier` with 1 class): the body's weights copied, the head zero (a
    /// value of 0 everywhere, a reward of 0) so it starts from nothing rather than noise.
    pub fn with_scalar_head(&self, model: &Model) -> Model {
        let mut cfg = self.base.model.clone();
        cfg.classifier = Some(ClassifierConfig { classes: 1 });
        let mut m = Model::new(&cfg, model.vocab(), self.cfg.seed);
        for t in &model.layout.tensors {
            if let Some(n) = m.layout.tensors.iter().find(|n| n.name == t.name && n.shape == t.shape) {
                n.view.of_mut(&mut m.params).copy_from_slice(t.view.of(&model.params));
            }
        }
        if let Some(h) = m.layout.classifier {
            h.w.of_mut(&mut m.params).fill(0.0);
            if let Some(b) = h.b {
                b.of_mut(&mut m.params).fill(0.0);
            }
        }
        m
    }

    /// The training config of a stage: the checkpoint's (clipping, AdamW's betas, eps and weight decay) with the
    /// stage's learning rate, steps and batch, no warmup and a constant rate.
    pub fn train_config(&self, lr: f32, steps: usize, batch: usize) -> crate::config::TrainConfig {
        let mut t = self.base.train.clone();
        (t.lr, t.steps, t.batch_size, t.warmup, t.min_lr) = (lr, steps, batch, 0, 0.0);
        t.schedule = crate::config::Schedule::Constant;
        t
    }
}
