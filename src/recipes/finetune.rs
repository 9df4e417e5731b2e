//! GPT-1's fine-tuning (Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training", §3.2):
//! a linear classifier on the final hidden state of each sequence's last position, trained with
//!
//! ```text
//! L = L_task + λ · L_LM
//! ```
//!
//! where L_task is the mean cross-entropy of the class logits, L_LM the usual next-character loss on the same
//! inputs (counted where the next character is in the input) and λ = `finetune.aux_lm` (0 disables it; GPT-1 used
//! 0.5). The head is `classifier.weight` (K, C) and `classifier.bias` (K), the last tensors of the model's layout
//! (`model.classifier`), so checkpoints hold it like any other parameter.
//!
//! Everything here is written over the op trait (`Backend`) with the ops the model already has: the last
//! position's row of each sequence is gathered with `embedding_forward` (a row gather: the stack's output is the
//! "table", the rows' indices the "ids"), its gradient scattered back with `embedding_backward`; the head is
//! `matmul_forward`/`matmul_backward`; its loss `mean_cross_entropy`. A step (`finetune_step`) runs on the host
//! backends (reference and CPU), where the two losses are numbers that can be added; `train::record_update` then
//! clips and takes the guarded AdamW step over every tensor, body and head.

pub mod tasks;

use crate::backend::{on_host, Backend, BackendKind, Host};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{ClassifierConfig, Config, FinetuneConfig, FinetuneTask};
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::model::{Batch, Forward, Model};
use crate::rng::Rng;
use crate::train::{adamw_at, finish_step, lr_at, record_update, step::scalars_len, OptState, StepBuffers};
use tasks::{Example, TaskData};

/// A batch of classification examples: the token batch (right-padded to the longest input; LM targets −1 past each
/// input's last character), the row of each sequence's last character in the (B·T) rows, and the labels.
#[derive(Clone, Debug)]
pub struct ClassBatch {
    pub batch: Batch,
    /// (B) row b·T + len_b − 1 of each sequence's last real position.
    pub last: Vec<u32>,
    /// (B) the class of each sequence.
    pub labels: Vec<i32>,
}

impl ClassBatch {
    /// A batch of encoded inputs (each non-empty) and their labels. Padding repeats the last character; since
    /// attention is causal, what follows the last position never changes its hidden state.
    pub fn new(inputs: &[(&[u32], usize)]) -> ClassBatch {
        let (b, t) = (inputs.len(), inputs.iter().map(|(x, _)| x.len()).max().unwrap_or(1).max(1));
        let (mut idx, mut targets, mut last, mut labels) = (vec![], vec![], vec![], vec![]);
        for (i, (x, label)) in inputs.iter().enumerate() {
            for p in 0..t {
                idx.push(x[p.min(x.len() - 1)]);
                targets.push(if p + 1 < x.len() { x[p + 1] as i32 } else { -1 });
            }
            last.push((i * t + x.len() - 1) as u32);
            labels.push(*label as i32);
        }
        ClassBatch { batch: Batch { b, t, idx, targets, ..Default::default() }, last, labels }
    }
}

/// What the fine-tuning forward keeps for the backward, and its results. `fwd.dlogits` holds λ·∂L_LM/∂logits.
pub struct ClassForward<B = Vec<f32>, L = f32> {
    pub fwd: Forward<B, L>,
    /// (B, C) the final hidden state of each sequence's last position.
    pub h_last: B,
    /// (B, K) the class logits.
    pub logits: B,
    /// (B, K) ∂L_task/∂logits.
    pub dlogits: B,
    /// L_task, the mean cross-entropy of the classes.
    pub task_loss: L,
    /// L_LM, the mean next-character loss (NaN when no position has a next character).
    pub lm_loss: L,
}

/// The classifier head's views: weight (K, C) and bias (K), and K.
fn head(model: &Model) -> Result<(crate::model::View, crate::model::View, usize)> {
    match model.layout.classifier {
        Some(l) => Ok((l.w, l.b.expect("the classifier has a bias"), l.out)),
        None => Err(Error::Invalid("the model has no classifier head (model.classifier)".into())),
    }
}

/// The forward pass of the fine-tuning objective on any backend, with `params` laid out like `model.params`.
pub fn forward_on<D: Backend>(
    d: &D,
    model: &Model,
    params: &D::Params,
    cb: &ClassBatch,
    aux_lm: f32,
    dropout: Option<&mut Rng>,
) -> Result<ClassForward<D::Buf, D::Loss>> {
    let (w, bias, k) = head(model)?;
    let (b, c) = (cb.batch.b, model.cfg.d_model);
    let mut fwd = model.forward_on(d, params, &cb.batch, dropout)?;
    let mut h_last = d.zeros(b * c)?;
    d.embedding_forward(D::view_mut(&mut h_last), &cb.last, D::view(&fwd.head_in), None, &[], 1, 0, c)?;
    let mut logits = d.zeros(b * k)?;
    d.matmul_forward(D::view_mut(&mut logits), D::view(&h_last), D::param(params, w)?, Some(D::param(params, bias)?), b, c, k)?;
    let mut dlogits = d.zeros(b * k)?;
    let task_loss = d.mean_cross_entropy(D::view_mut(&mut dlogits), D::view(&logits), &cb.labels, k, b)?;
    let mut scaled = d.zeros(D::len(D::view(&fwd.dlogits)))?;
    d.scale(D::view_mut(&mut scaled), D::view(&fwd.dlogits), aux_lm)?;
    fwd.dlogits = scaled;
    let lm_loss = fwd.loss;
    Ok(ClassForward { fwd, h_last, logits, dlogits, task_loss, lm_loss })
}

/// Accumulates ∂L/∂params of the fine-tuning objective into `grads`: the head's, then the body's from both losses.
pub fn backward_on<D: Backend>(d: &D, model: &Model, params: &D::Params, cf: &ClassForward<D::Buf, D::Loss>, cb: &ClassBatch, grads: &mut D::Params) -> Result<()> {
    let (w, bias, k) = head(model)?;
    let (b, t, c) = (cb.batch.b, cb.batch.t, model.cfg.d_model);
    let mut dh_last = d.zeros(b * c)?;
    let (dw, db) = D::grad_pair(grads, w, Some(bias))?;
    d.matmul_backward(Some(D::view_mut(&mut dh_last)), dw, db, D::view(&cf.dlogits), D::view(&cf.h_last), D::param(params, w)?, b, c, k)?;
    let mut dhead_in = d.zeros(b * t * c)?;
    d.embedding_backward(D::view_mut(&mut dhead_in), None, D::view(&dh_last), &cb.last, 1, c)?;
    model.backward_with(d, params, &cf.fwd, &cb.batch, grads, Some(D::view(&dhead_in)))
}

/// The objective's value from its two losses: L_task + λ·L_LM (L_task alone when λ = 0, even if L_LM is NaN).
pub fn combined(task_loss: f32, lm_loss: f32, aux_lm: f32) -> f32 {
    if aux_lm == 0.0 { task_loss } else { task_loss + aux_lm * lm_loss }
}

/// What one fine-tuning step reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FinetuneReport {
    pub step: usize,
    /// L_task + λ·L_LM.
    pub loss: f32,
    pub task_loss: f32,
    pub lm_loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// One fine-tuning step on a host backend: forward, backward, then `train::record_update` (clipping, the guarded
/// AdamW). Refuses, leaving the model and the optimizer state as they were, when the loss or the gradients are not
/// finite.
pub fn finetune_step<H: Host>(
    be: &H,
    model: &mut Model,
    opt: &mut OptState,
    t: &crate::config::TrainConfig,
    cb: &ClassBatch,
    aux_lm: f32,
    step: usize,
    dropout: Option<&mut Rng>,
) -> Result<FinetuneReport> {
    let lr = lr_at(t, step);
    let h = adamw_at(t, lr, opt.t + 1);
    let mut grads = vec![0.0; model.params.len()];
    let mut scalars = vec![0.0; scalars_len(model)];
    let mut params = std::mem::take(&mut model.params);
    let result = (|| -> Result<(f32, f32, f32, Vec<f32>)> {
        let cf = forward_on(be, model, &params[..], cb, aux_lm, dropout)?;
        backward_on(be, model, &params[..], &cf, cb, &mut grads)?;
        let loss = combined(cf.task_loss, cf.lm_loss, aux_lm);
        drop(cf.fwd);
        let bufs = StepBuffers { params: &mut params[..], grads: &mut grads[..], m: &mut opt.m[..], v: &mut opt.v[..], scalars: &mut scalars[..] };
        let rec = record_update(be, model, bufs, loss, &h, t.grad_clip)?;
        Ok((loss, cf.task_loss, cf.lm_loss, rec.scalars))
    })();
    model.params = params;
    let (loss, task_loss, lm_loss, scalars) = result?;
    let r = finish_step::<H>(model, loss, &scalars, step, lr)?;
    opt.t += 1;
    Ok(FinetuneReport { step, loss, task_loss, lm_loss, lr, grad_norm: r.grad_norm })
}

/// Accuracy and mean losses of a model on a set of examples (no dropout, no gradients).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Evaluation {
    pub accuracy: f32,
    pub task_loss: f32,
    /// NaN when no example has two characters.
    pub lm_loss: f32,
}

/// Examples evaluated per forward pass.
const EVAL_BATCH: usize = 64;

/// The class each example's logits rank first (ties: the lower class) and the losses, over `examples` encoded.
pub fn evaluate<H: Host>(be: &H, model: &Model, examples: &[(Vec<u32>, usize)]) -> Result<Evaluation> {
    let (mut right, mut task, mut lm, mut lm_n) = (0usize, 0f64, 0f64, 0usize);
    for chunk in examples.chunks(EVAL_BATCH) {
        let inputs: Vec<(&[u32], usize)> = chunk.iter().map(|(x, l)| (&x[..], *l)).collect();
        let cb = ClassBatch::new(&inputs);
        let cf = on_host(forward_on(be, model, &model.params[..], &cb, 0.0, None));
        let k = cf.logits.len() / chunk.len();
        for (row, (_, label)) in cf.logits.chunks_exact(k).zip(chunk) {
            let best = (0..k).fold(0, |m, j| if row[j] > row[m] { j } else { m });
            right += (best == *label) as usize;
        }
        task += cf.task_loss as f64 * chunk.len() as f64;
        if cf.fwd.count > 0 {
            lm += cf.lm_loss as f64 * cf.fwd.count as f64;
            lm_n += cf.fwd.count;
        }
    }
    let n = examples.len().max(1) as f64;
    let lm_loss = if lm_n > 0 { (lm / lm_n as f64) as f32 } else { f32::NAN };
    Ok(Evaluation { accuracy: (right as f64 / n) as f32, task_loss: (task / n) as f32, lm_loss })
}

/// Training examples the `accuracy` of an evaluation is measured on: this many, evenly spaced through the training
/// split (so every play is in it); the held-out split is measured whole.
pub const TRAIN_EVAL_EXAMPLES: usize = 256;

/// The fine-tuning knobs a command line gives (`tp finetune`); None keeps the config's (or, from a pretrained
/// checkpoint, the default below).
#[derive(Clone, Debug, Default)]
pub struct FinetuneOptions {
    pub task: Option<FinetuneTask>,
    pub aux_lm: Option<f32>,
    pub steps: Option<usize>,
    pub lr: Option<f32>,
    pub batch: Option<usize>,
    pub seed: Option<u64>,
}

/// Steps, learning rate and batch of a fine-tune from a pretrained checkpoint when not given.
pub const DEFAULT_STEPS: usize = 300;
pub const DEFAULT_LR: f32 = 1e-3;
pub const DEFAULT_BATCH: usize = 32;

/// A fine-tuning run: the config (with `model.classifier` and `finetune`), the model with its head, AdamW's
/// state, the tokenizer, the task's examples (encoded) and the seeded streams. Same config, corpus and seed → the
/// same batches and losses, on every thread count.
pub struct Finetune {
    pub cfg: Config,
    pub model: Model,
    pub opt: OptState,
    pub tok: Tokenizer,
    pub data: TaskData,
    pub train: Vec<(Vec<u32>, usize)>,
    pub val: Vec<(Vec<u32>, usize)>,
    /// Steps taken (counting a continued checkpoint's).
    pub step: usize,
    pub backend: BackendKind,
    batches: Rng,
    dropout: Rng,
}

impl Finetune {
    /// From scratch: `cfg` (a gpt config; `finetune` and `model.classifier` are set from `o` where it gives them),
    /// a fresh model and the corpus's own character tokenizer.
    pub fn from_config(mut cfg: Config, text: &str, o: &FinetuneOptions, backend: BackendKind) -> Result<Finetune> {
        let task = o.task.or(cfg.finetune.as_ref().map(|f| f.task)).ok_or_else(|| {
            Error::Invalid("no task: give --task or a finetune section in the config (finetune.task)".into())
        })?;
        let aux_lm = o.aux_lm.or(cfg.finetune.as_ref().map(|f| f.aux_lm)).unwrap_or(0.0);
        cfg.finetune = Some(FinetuneConfig { task, aux_lm });
        cfg.model.classifier = Some(ClassifierConfig { classes: task.classes() });
        apply(&mut cfg, o, 0);
        let tok = Tokenizer::for_text(crate::data::check_text(text.as_bytes())?, cfg.model.arch)?;
        check(&cfg, tok.vocab_size())?;
        let model = Model::new(&cfg.model, tok.vocab_size(), cfg.seed);
        let opt = OptState::new(model.params.len());
        Finetune::build(cfg, model, opt, tok, 0, text, backend)
    }

    /// From a checkpoint: a pretrained gpt gets a fresh head (initialised from the seed) and fresh AdamW state; a
    /// fine-tuned one of the same task continues with its head, its optimizer state and its step count (`o.steps`
    /// more steps); a fine-tuned one of another task keeps its body and gets a fresh head.
    pub fn from_checkpoint(ck: Checkpoint, text: &str, o: &FinetuneOptions, backend: BackendKind) -> Result<Finetune> {
        if ck.config.model.arch != crate::config::Arch::Gpt {
            return Err(Error::Invalid(format!(
                "--checkpoint: fine-tuning needs a gpt checkpoint; this one is {}",
                serde_json::to_value(ck.config.model.arch).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
            )));
        }
        let old = ck.config.finetune.clone();
        let task = o.task.or(old.as_ref().map(|f| f.task)).ok_or_else(|| Error::Invalid("no task: give --task".into()))?;
        let same = old.as_ref().is_some_and(|f| f.task == task);
        let aux_lm = o.aux_lm.or(old.as_ref().filter(|_| same).map(|f| f.aux_lm)).unwrap_or(0.0);
        let mut cfg = ck.config.clone();
        cfg.finetune = Some(FinetuneConfig { task, aux_lm });
        cfg.model.classifier = Some(ClassifierConfig { classes: task.classes() });
        let start = if same { ck.step } else { 0 };
        if !same {
            // The pretraining's schedule is not the fine-tune's: these defaults unless the options say otherwise.
            cfg.train.steps = DEFAULT_STEPS;
            cfg.train.lr = DEFAULT_LR;
            cfg.train.batch_size = DEFAULT_BATCH;
            cfg.train.warmup = 0;
            cfg.train.schedule = crate::config::Schedule::Constant;
            cfg.train.min_lr = 0.0;
        }
        apply(&mut cfg, o, start);
        check(&cfg, ck.model.vocab())?;
        let mut model = Model::new(&cfg.model, ck.model.vocab(), cfg.seed);
        for t in &ck.model.layout.tensors {
            let keep_head = same || !t.name.starts_with("classifier.");
            if let Some(n) = model.layout.tensors.iter().find(|n| n.name == t.name && n.shape == t.shape && keep_head) {
                n.view.of_mut(&mut model.params).copy_from_slice(t.view.of(&ck.model.params));
            }
        }
        let opt = match (same, ck.opt) {
            (true, Some(o)) => o,
            _ => OptState::new(model.params.len()),
        };
        Finetune::build(cfg, model, opt, ck.tokenizer, start, text, backend)
    }

    fn build(cfg: Config, model: Model, opt: OptState, tok: Tokenizer, step: usize, text: &str, backend: BackendKind) -> Result<Finetune> {
        if backend == BackendKind::Gpu {
            return Err(Error::Invalid("--backend gpu: fine-tuning runs on the cpu or reference backend".into()));
        }
        let task = cfg.finetune.as_ref().expect("set by the constructors").task;
        let data = TaskData::new(task, text, cfg.model.ctx_len)?;
        let enc = |ex: &[Example]| -> Result<Vec<(Vec<u32>, usize)>> {
            ex.iter().filter(|e| !e.text.is_empty()).map(|e| Ok((tok.encode(&e.text)?, e.label))).collect()
        };
        let (train, val) = (enc(&data.train)?, enc(&data.val)?);
        let mut seeds = Rng::new(cfg.seed ^ 0xF1_7E);
        let (batches, dropout) = (seeds.fork(1), seeds.fork(2));
        Ok(Finetune { cfg, model, opt, tok, data, train, val, step, backend, batches, dropout })
    }

    /// λ, the weight of the LM loss.
    pub fn aux_lm(&self) -> f32 {
        self.cfg.finetune.as_ref().map_or(0.0, |f| f.aux_lm)
    }

    /// One step on a batch of `train.batch_size` training examples drawn uniformly (with replacement) by the seeded
    /// stream.
    pub fn step(&mut self) -> Result<FinetuneReport> {
        let b = self.cfg.train.batch_size;
        let picks: Vec<usize> = (0..b).map(|_| self.batches.below(self.train.len())).collect();
        let inputs: Vec<(&[u32], usize)> = picks.iter().map(|&i| (&self.train[i].0[..], self.train[i].1)).collect();
        let cb = ClassBatch::new(&inputs);
        let aux = self.aux_lm();
        let dropout = (self.cfg.model.dropout > 0.0).then_some(&mut self.dropout);
        let r = crate::with_host!(self.backend, |be| finetune_step(be, &mut self.model, &mut self.opt, &self.cfg.train, &cb, aux, self.step, dropout))?;
        self.step += 1;
        Ok(r)
    }

    /// (the evaluation of `TRAIN_EVAL_EXAMPLES` training examples evenly spaced, the held-out split's).
    pub fn eval(&self) -> Result<(Evaluation, Evaluation)> {
        let every = self.train.len().div_ceil(TRAIN_EVAL_EXAMPLES).max(1);
        let some: Vec<(Vec<u32>, usize)> = self.train.iter().step_by(every).cloned().collect();
        crate::with_host!(self.backend, |be| Ok((evaluate(be, &self.model, &some)?, evaluate(be, &self.model, &self.val)?)))
    }

    /// The majority-class baseline on the held-out split.
    pub fn baseline(&self) -> f32 {
        self.data.baseline(&self.data.val)
    }

    /// The run as a checkpoint (config with `finetune` and `model.classifier`, the head among the tensors, AdamW's
    /// state).
    pub fn save(&self) -> Result<Vec<u8>> {
        checkpoint::save(&self.cfg, &self.tok, self.step, &self.model, Some(&self.opt))
    }
}

/// The checks `train::Run` makes before building a model: the config's rules, the parameter count and the memory
/// a step plans to hold.
fn check(cfg: &Config, vocab: usize) -> Result<()> {
    cfg.validate()?;
    crate::model::Layout::check_size(&cfg.model, vocab)?;
    crate::model::Layout::check_memory(&cfg.model, vocab, cfg.train.batch_size, crate::train::memory_budget())
}

/// Applies the options to `cfg`: aux_lm, steps (a run continued from step `start` > 0 takes `o.steps` or
/// `DEFAULT_STEPS` more: its total becomes start + that), lr (min_lr follows it down when above it), batch, seed.
fn apply(cfg: &mut Config, o: &FinetuneOptions, start: usize) {
    if let (Some(a), Some(f)) = (o.aux_lm, cfg.finetune.as_mut()) {
        f.aux_lm = a;
    }
    if start > 0 {
        cfg.train.steps = start.saturating_add(o.steps.unwrap_or(DEFAULT_STEPS));
    } else if let Some(s) = o.steps {
        cfg.train.steps = s;
    }
    if let Some(lr) = o.lr {
        cfg.train.lr = lr;
        cfg.train.min_lr = cfg.train.min_lr.min(lr.max(0.0));
    }
    if let Some(b) = o.batch {
        cfg.train.batch_size = b;
    }
    if let Some(s) = o.seed {
        cfg.seed = s;
    }
}
