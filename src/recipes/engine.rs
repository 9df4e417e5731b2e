//! The recipes step by step, for the engine (the browser's Worker, through `facade` and `wasm.rs`) and for native
//! tests and for the command line: a `Driver` holds one recipe (finetune, zeroshot, icl or rlhf) and its stages,
//! and `Driver::unit` does a bounded piece of work — one training step, one reward-model or PPO step, one
//! evaluation — so a caller can show progress, pause between units and resume. It is the one copy of each
//! recipe's order of work: `tp finetune|zeroshot|icl|rlhf` (src/bin/tp.rs) drive it too and only label, filter and
//! time its events as JSON lines.
//!
//! What a unit reports is an `Event`: `Progress` (a step's report, or a held-out evaluation: `eval`) or `Stage` (a
//! stage finished, with its final evaluation). Its `metrics` are the numbers of the core's report structs as they
//! serialise, not a list of names kept here; its `report` is the report whole, the fields of the CLI's line.
//!
//! Knobs: a few named numbers per kind (`KNOBS`), each setting one field of the recipe file (or, for finetune, one
//! option of `FinetuneOptions`), checked by the recipe's own validation; an error names the knob.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::backend::cpu::Cpu;
use crate::backend::BackendKind;
use crate::checkpoint::{self, Checkpoint};
use crate::config::FinetuneTask;
use crate::data::{Split, Tokenizer};
use crate::model::Model;
use crate::recipes::finetune::{self, Finetune, FinetuneOptions};
use crate::recipes::rlhf::stages::{evaluate_policy, PolicyEval};
use crate::recipes::rlhf::{Ppo, RewardModel, Rlhf, RlhfConfig, Sft};
use crate::recipes::{icl, zeroshot};
use crate::train::Run;
use crate::{Error, Result};

/// The shipped recipe files, by kind (configs/recipes/). finetune's is a from-scratch config, used with checkpoint
/// 'scratch' (the task picks the file).
pub const FINETUNE_VERSE_PROSE: &str = include_str!("../../configs/recipes/finetune-verse-prose.json");
pub const FINETUNE_SPEAKER: &str = include_str!("../../configs/recipes/finetune-speaker.json");
pub const ZEROSHOT: &str = include_str!("../../configs/recipes/zeroshot.json");
pub const ICL: &str = include_str!("../../configs/recipes/icl.json");
pub const RLHF: &str = include_str!("../../configs/recipes/rlhf.json");

/// The recipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Finetune,
    Zeroshot,
    Icl,
    Rlhf,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Finetune, Kind::Zeroshot, Kind::Icl, Kind::Rlhf];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Finetune => "finetune",
            Kind::Zeroshot => "zeroshot",
            Kind::Icl => "icl",
            Kind::Rlhf => "rlhf",
        }
    }

    /// The kind named `s`, or an error naming `kind` and the known ones.
    pub fn parse(s: &str) -> Result<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::Invalid(format!("kind = {s:?}: must be one of finetune, zeroshot, icl, rlhf"))
        })
    }

    /// Its stages, in order (the names the CLI's lines carry in `stage`; zeroshot's two pretraining models are
    /// stages of their own here).
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            Kind::Finetune => &["finetune"],
            Kind::Zeroshot => &["pattern", "baseline", "eval"],
            Kind::Icl => &["pretrain", "eval"],
            Kind::Rlhf => &["sft", "rm", "ppo"],
        }
    }
}

/// A knob: a name the page shows, the field of the recipe file it sets (finetune: of `FinetuneOptions`, written
/// `finetune.<option>`), and whether it is an integer. `eval_every` is the driver's own (held-out evaluations
/// every that many steps); for zeroshot and icl it sets `train.eval_interval`, where the trainer evaluates.
pub struct Knob {
    pub kind: Kind,
    pub name: &'static str,
    pub field: &'static str,
    pub integer: bool,
}

const fn knob(kind: Kind, name: &'static str, field: &'static str, integer: bool) -> Knob {
    Knob { kind, name, field, integer }
}

/// Every knob of every kind: the one list (the API's docs name them; `info` gives their defaults).
pub const KNOBS: &[Knob] = &[
    knob(Kind::Finetune, "steps", "finetune.steps", true),
    knob(Kind::Finetune, "aux_lm", "finetune.aux_lm", false),
    knob(Kind::Finetune, "lr", "finetune.lr", false),
    knob(Kind::Finetune, "batch", "finetune.batch", true),
    knob(Kind::Finetune, "eval_every", "eval_every", true),
    knob(Kind::Zeroshot, "steps", "train.steps", true),
    knob(Kind::Zeroshot, "every", "zeroshot.every", true),
    knob(Kind::Zeroshot, "eval_questions", "zeroshot.eval_questions", true),
    knob(Kind::Zeroshot, "eval_every", "train.eval_interval", true),
    knob(Kind::Icl, "steps", "train.steps", true),
    knob(Kind::Icl, "train_episodes", "icl.train_episodes", true),
    knob(Kind::Icl, "eval_episodes", "icl.eval_episodes", true),
    knob(Kind::Icl, "eval_every", "train.eval_interval", true),
    knob(Kind::Rlhf, "sft_steps", "sft.steps", true),
    knob(Kind::Rlhf, "rm_steps", "rm.steps", true),
    knob(Kind::Rlhf, "ppo_steps", "ppo.steps", true),
    knob(Kind::Rlhf, "beta", "ppo.beta", false),
    knob(Kind::Rlhf, "gamma_ptx", "ppo.gamma_ptx", false),
    knob(Kind::Rlhf, "clip", "ppo.clip", false),
    knob(Kind::Rlhf, "k", "rm.k", true),
    knob(Kind::Rlhf, "rollouts", "ppo.rollouts", true),
    knob(Kind::Rlhf, "epochs", "ppo.epochs", true),
    knob(Kind::Rlhf, "eval_every", "eval_every", true),
];

/// The CLI's `--eval-every` defaults (tp finetune: 50, tp rlhf: 10).
pub const FINETUNE_EVAL_EVERY: usize = 50;
pub const RLHF_EVAL_EVERY: usize = 10;

/// Largest integer knob (steps, episodes, …): far above anything that runs in minutes.
pub const MAX_KNOB: f64 = 1e7;

/// A held-out prompt and the model's completion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub prompt: String,
    pub completion: String,
}

/// What a unit of work reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A step's report (`eval` false) or a held-out evaluation made before the step of that number (`eval` true).
    Progress {
        stage: &'static str,
        step: usize,
        steps: usize,
        eval: bool,
        metrics: BTreeMap<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        samples: Option<Vec<Sample>>,
        /// Something the user should know, said once (a GPU lost, training going on on the CPU).
        #[serde(skip_serializing_if = "Option::is_none")]
        notice: Option<String>,
        /// The report whole (its `step` the CLI's: before the update, counting a continued checkpoint's), the
        /// fields of the CLI's line; not sent to the page, which reads `metrics`.
        #[serde(skip)]
        report: Value,
    },
    /// A stage finished: its final evaluation (`report`: the whole line the CLI prints for it).
    Stage {
        stage: &'static str,
        step: usize,
        metrics: BTreeMap<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        samples: Option<Vec<Sample>>,
        report: Value,
    },
}

/// A serialisable report as JSON (non-finite numbers become null, as in the CLI's lines).
fn json<T: Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

/// The numbers of a report's JSON object (null for a non-finite one), a nested object's named after it
/// (`baseline.chance`, `induction.best.score`): the metrics of an event.
pub fn metrics_of(v: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    if let Value::Object(o) = v {
        for (k, x) in o {
            match x {
                Value::Number(_) | Value::Null if k != "step" => {
                    m.insert(k.clone(), x.clone());
                }
                Value::Object(_) => m.extend(metrics_of(x).into_iter().map(|(n, y)| (format!("{k}.{n}"), y))),
                _ => {}
            }
        }
    }
    m
}

/// rlhf's samples ("prompt|completion", the prompt `prompt_len` characters) as pairs.
fn split_samples(samples: &[String], prompt_len: usize) -> Vec<Sample> {
    samples
        .iter()
        .map(|s| {
            let cut = s.char_indices().nth(prompt_len).map_or(s.len(), |(i, _)| i);
            let completion = s[cut..].strip_prefix('|').unwrap_or(&s[cut..]);
            Sample { prompt: s[..cut].to_string(), completion: completion.to_string() }
        })
        .collect()
}

/// What a recipe is made from: the recipe file (None: the shipped one), the starting checkpoint (finetune, rlhf;
/// None: fine-tune from scratch), the corpus (finetune, zeroshot, rlhf: Tiny Shakespeare as the CLI uses it),
/// finetune's task, the knobs and the seed, the stage to start at with the checkpoints of the stages before it,
/// and the backend (None: the cpu; the pretraining stages of zeroshot and icl may train on the gpu, the other
/// recipes refuse it).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub recipe: Option<String>,
    pub checkpoint: Option<Vec<u8>>,
    pub corpus: Option<String>,
    pub task: Option<String>,
    pub knobs: BTreeMap<String, f64>,
    pub seed: Option<u64>,
    pub from: Option<(String, BTreeMap<String, Vec<u8>>)>,
    pub backend: Option<BackendKind>,
}

/// The shipped recipe file of a kind (finetune: by task).
pub fn default_recipe(kind: Kind, task: Option<FinetuneTask>) -> &'static str {
    match kind {
        Kind::Finetune if task == Some(FinetuneTask::Speaker) => FINETUNE_SPEAKER,
        Kind::Finetune => FINETUNE_VERSE_PROSE,
        Kind::Zeroshot => ZEROSHOT,
        Kind::Icl => ICL,
        Kind::Rlhf => RLHF,
    }
}

/// A field of a JSON object by its dotted path, created (as an object) where missing.
fn field_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut at = v;
    for part in path.split('.') {
        if at.is_null() {
            *at = Value::Object(Default::default());
        }
        at = at.as_object_mut()?.entry(part).or_insert(Value::Null);
    }
    Some(at)
}

/// Checks the knobs of `kind` (known names, finite numbers, integers where they must be) and returns them with
/// their knob.
fn check_knobs(kind: Kind, knobs: &BTreeMap<String, f64>) -> Result<Vec<(&'static Knob, f64)>> {
    knobs
        .iter()
        .map(|(name, &v)| {
            let k = KNOBS.iter().find(|k| k.kind == kind && k.name == name).ok_or_else(|| {
                let known: Vec<&str> = KNOBS.iter().filter(|k| k.kind == kind).map(|k| k.name).collect();
                knob_error(name, v, format!("{} has no such knob; its knobs are {}", kind.name(), known.join(", ")))
            })?;
            if !v.is_finite() || (k.integer && (v.fract() != 0.0 || !(0.0..=MAX_KNOB).contains(&v))) {
                let want = if k.integer { format!("an integer from 0 to {MAX_KNOB}") } else { "a finite number".into() };
                return Err(knob_error(name, v, format!("must be {want} ({})", k.field)));
            }
            Ok((k, v))
        })
        .collect()
}

/// A knob's value refused: a config error whose field is `knobs.<name>` (so the page can mark the knob), the rule
/// saying why (with the recipe field it sets where that helps).
fn knob_error(name: &str, value: f64, rule: String) -> Error {
    Error::Config { field: format!("knobs.{name}"), value: value.to_string(), rule }
}

/// An error of the recipe's validation, with the knob that set its field named (`knobs.beta`, the core's message
/// as the rule).
fn name_knob(e: Error, set: &[(&'static Knob, f64)]) -> Error {
    // The recipe's own refusal as the rule: its field, value and rule (not "invalid config: " twice).
    let msg = match &e {
        Error::Config { field, value, rule } => format!("{field} = {value}: {rule}"),
        other => other.to_string(),
    };
    match set.iter().find(|(k, _)| msg.contains(k.field)) {
        Some((k, v)) => knob_error(k.name, *v, msg),
        None => e,
    }
}

/// `eval_every` from the knobs, or the kind's default; at least 1.
fn eval_every(set: &[(&'static Knob, f64)], default: usize) -> Result<usize> {
    match set.iter().find(|(k, _)| k.name == "eval_every") {
        Some((_, v)) if *v < 1.0 => Err(knob_error("eval_every", *v, "must be at least 1".into())),
        Some((_, v)) => Ok(*v as usize),
        None => Ok(default),
    }
}

/// The recipe file's JSON with the knobs (of recipe-file fields) and the seed written in.
fn recipe_json(text: &str, set: &[(&'static Knob, f64)], seed: Option<u64>) -> Result<Value> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| Error::Invalid(format!("recipe: not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::Invalid("recipe: must be a JSON object (a recipe file of configs/recipes/)".into()));
    }
    for (k, x) in set {
        if k.field == "eval_every" || k.field.starts_with("finetune.") {
            continue;
        }
        let f = field_mut(&mut v, k.field).ok_or_else(|| Error::Invalid(format!("recipe: {} is not an object", k.field)))?;
        *f = if k.integer { Value::from(*x as u64) } else { Value::from(*x) };
    }
    if let Some(s) = seed {
        v["seed"] = Value::from(s);
    }
    Ok(v)
}

/// A kind's stages with their units of work, its knobs with their values, and the recipe as it runs.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    pub kind: Kind,
    pub stages: Vec<StageInfo>,
    pub knobs: BTreeMap<String, Value>,
    pub recipe: Value,
}

/// A stage and its units of work (steps; 1 for an evaluation).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageInfo {
    pub name: &'static str,
    pub steps: usize,
}

/// Each recipe's state: its core objects, and the models its finished stages left. A finished pretraining stage
/// is kept as its checkpoint (config, tokenizer, step, model and AdamW's state), as `tp`'s `--out` writes it.
#[allow(clippy::large_enum_variant)] // one per driver, never moved in a loop: its size costs nothing
enum State {
    Finetune(Box<Finetune>),
    Zeroshot {
        recipe: Box<zeroshot::Recipe>,
        corpus: Box<zeroshot::Corpus>,
        tok: Tokenizer,
        text: String,
        run: Option<Box<Run>>,
        pattern: Option<Box<Checkpoint>>,
        baseline: Option<Box<Checkpoint>>,
        eval: Option<Value>,
    },
    Icl {
        recipe: Box<icl::Recipe>,
        run: Option<Box<Run>>,
        model: Option<Box<Checkpoint>>,
        eval: Option<Value>,
    },
    Rlhf {
        r: Box<Rlhf>,
        sft: Option<Box<Sft>>,
        sft_model: Option<Model>,
        rm: Option<Box<RewardModel>>,
        rm_model: Option<Model>,
        ppo: Option<Box<Ppo>>,
        /// The pretrained model SFT starts from (taken when SFT starts).
        start: Option<Model>,
    },
}

/// One recipe, stepped a unit at a time.
pub struct Driver {
    pub kind: Kind,
    pub info: Info,
    /// The stage under way (its index in `info.stages`); = the number of stages when all are done.
    pub at: usize,
    /// Units done in the stage under way.
    pub step: usize,
    /// Most pretraining steps one unit takes (never past the next evaluation or the stage's end): 1 for the page,
    /// which pauses between units; `tp` takes them all, so a gpu run pipelines them (`Run::steps`).
    pub steps_per_unit: usize,
    eval_every: usize,
    backend: BackendKind,
    state: State,
    /// An error that came after some steps of a unit: those steps' events went out; the next unit returns it.
    deferred: Option<Error>,
}

/// A checkpoint's bytes, read; an error names `what` (the option it came from).
fn read_ck(bytes: &[u8], what: &str) -> Result<Checkpoint> {
    checkpoint::load(bytes).map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

impl Driver {
    /// A recipe of `kind` from `o`; nothing is trained yet. Refuses bad options naming them.
    pub fn new(kind: Kind, o: &Options) -> Result<Driver> {
        let set = check_knobs(kind, &o.knobs)?;
        let stages = kind.stages();
        let (first, from) = match &o.from {
            Some((stage, cks)) => {
                let i = stages.iter().position(|s| s == stage).ok_or_else(|| {
                    Error::Invalid(format!("from.stage = {stage:?}: {} has the stages {}", kind.name(), stages.join(", ")))
                })?;
                (i, Some(cks))
            }
            None => (0, None),
        };
        let need = |name: &str| -> Result<Checkpoint> {
            let bytes = from.and_then(|c| c.get(name)).ok_or_else(|| {
                Error::Invalid(format!("from.checkpoints.{name}: starting at {} needs the {name} stage's checkpoint (recipe.save('{name}'))", stages[first]))
            })?;
            read_ck(bytes, &format!("from.checkpoints.{name}"))
        };
        // The text is the caller's (the engine fetches Tiny Shakespeare, www/data/tinyshakespeare.txt, by default):
        // it is not built into the wasm module. icl generates its own.
        let corpus = match (&o.corpus, kind) {
            (Some(c), _) => c.as_str(),
            (None, Kind::Icl) => "",
            (None, _) => return Err(Error::Invalid(format!("corpus: {} needs its text (Tiny Shakespeare, www/data/tinyshakespeare.txt)", kind.name()))),
        };
        if o.corpus.is_some() && kind == Kind::Icl {
            return Err(Error::Invalid("corpus: icl generates its own corpus; leave it out".into()));
        }
        let mut task = o.task.as_deref().map(FinetuneTask::parse).transpose().map_err(|e| Error::Invalid(format!("task: {e}")))?;
        if kind == Kind::Finetune && task.is_none() && from.is_none() && o.checkpoint.is_some() {
            // A pretrained start gets the default task; a continued fine-tune (`from`) keeps its checkpoint's, a
            // recipe file (from scratch) its own.
            task = Some(FinetuneTask::VerseProse);
        }
        let backend = o.backend.unwrap_or(BackendKind::Cpu);
        if task.is_some() && kind != Kind::Finetune {
            return Err(Error::Invalid(format!("task: only finetune has tasks, not {}", kind.name())));
        }
        if o.checkpoint.is_some() && !matches!(kind, Kind::Finetune | Kind::Rlhf) {
            return Err(Error::Invalid(format!("checkpoint: {} trains its own models from scratch; leave it out", kind.name())));
        }
        let text = o.recipe.as_deref().unwrap_or(default_recipe(kind, task));
        let recipe = recipe_json(text, &set, o.seed)?;
        let (state, eval_every, steps): (State, usize, Vec<usize>) = match kind {
            Kind::Finetune => {
                let knob = |n: &str| set.iter().find(|(k, _)| k.name == n).map(|(_, v)| *v);
                let fo = FinetuneOptions {
                    task,
                    aux_lm: knob("aux_lm").map(|v| v as f32),
                    steps: knob("steps").map(|v| v as usize),
                    lr: knob("lr").map(|v| v as f32),
                    batch: knob("batch").map(|v| v as usize),
                    seed: o.seed,
                };
                if let Some(l) = fo.aux_lm {
                    if l < 0.0 {
                        return Err(knob_error("aux_lm", l as f64, "the LM loss's weight must be a number >= 0 (0 disables it)".into()));
                    }
                }
                let ft = match (from, &o.checkpoint) {
                    (Some(_), _) => Finetune::from_checkpoint(need("finetune")?, corpus, &fo, backend),
                    (None, Some(bytes)) => Finetune::from_checkpoint(read_ck(bytes, "checkpoint")?, corpus, &fo, backend),
                    (None, None) => {
                        let cfg = crate::Config::from_json(&recipe.to_string()).map_err(|e| Error::Invalid(format!("recipe: {e}")))?;
                        Finetune::from_config(cfg, corpus, &fo, backend)
                    }
                }
                .map_err(|e| name_knob(e, &set))?;
                let steps = ft.cfg.train.steps - ft.step;
                (State::Finetune(Box::new(ft)), eval_every(&set, FINETUNE_EVAL_EVERY)?, vec![steps])
            }
            Kind::Zeroshot => {
                let mut z = zeroshot::Recipe::from_json(&recipe.to_string()).map_err(|e| name_knob(e, &set))?;
                if let Some(s) = o.seed {
                    z.config.seed = s;
                }
                z.validate().map_err(|e| name_knob(e, &set))?;
                let zc = z.corpus(corpus)?;
                let tok = zeroshot::Recipe::tokenizer(&zc)?;
                let model_of = |name: &str| -> Result<Option<Box<Checkpoint>>> {
                    if first <= stages.iter().position(|s| *s == name).expect("a stage") {
                        return Ok(None);
                    }
                    let ck = need(name)?;
                    if ck.model.cfg.arch != crate::config::Arch::Gpt || ck.tokenizer != tok {
                        return Err(Error::Invalid(format!("from.checkpoints.{name}: not a gpt with this recipe's vocabulary")));
                    }
                    let (ctx, chars) = (ck.model.cfg.ctx_len, z.zeroshot.prompt_chars());
                    if ctx < chars {
                        return Err(Error::Invalid(format!("from.checkpoints.{name}: ctx_len = {ctx} is shorter than this recipe's prompts ({chars} characters)")));
                    }
                    Ok(Some(Box::new(ck)))
                };
                let (pattern, baseline) = (model_of("pattern")?, model_of("baseline")?);
                let n = z.config.train.steps;
                let state = State::Zeroshot { recipe: Box::new(z), corpus: Box::new(zc), tok, text: corpus.to_string(), run: None, pattern, baseline, eval: None };
                (state, 0, vec![n, n, 1])
            }
            Kind::Icl => {
                let mut r = icl::Recipe::from_json(&recipe.to_string()).map_err(|e| name_knob(e, &set))?;
                if let Some(s) = o.seed {
                    r.config.seed = s;
                }
                r.validate().map_err(|e| name_knob(e, &set))?;
                let model = if first > 0 {
                    let ck = need("pretrain")?;
                    r.check_model(&ck.model, &ck.tokenizer).map_err(|e| Error::Invalid(format!("from.checkpoints.pretrain: {e}")))?;
                    Some(Box::new(ck))
                } else {
                    None
                };
                let n = r.config.train.steps;
                (State::Icl { recipe: Box::new(r), run: None, model, eval: None }, 0, vec![n, 1])
            }
            Kind::Rlhf => {
                let mut cfg = rlhf_config(o)?;
                cfg.checkpoint = None; // the file's path is the CLI's; the driver is given the bytes
                // As `tp rlhf`: the recipe reads its model config and tokenizer from the checkpoint it starts from
                // (the pretrained model, or the SFT model for a later stage).
                let ck = match (first, &o.checkpoint) {
                    (0, Some(bytes)) => read_ck(bytes, "checkpoint")?,
                    (0, None) => return Err(Error::Invalid("checkpoint: rlhf starts from a pretrained gpt: give its bytes (the page's default is the shipped checkpoint)".into())),
                    _ => need("sft")?,
                };
                let r = Rlhf::new(cfg, &ck, corpus, backend).map_err(|e| name_knob(e, &set))?;
                let model = r.model_of(ck, None, if first == 0 { "checkpoint" } else { "from.checkpoints.sft" })?;
                let rm_model = if first == 2 { Some(r.model_of(need("rm")?, Some(1), "from.checkpoints.rm")?) } else { None };
                let c = &r.cfg;
                let steps = vec![c.sft.steps, c.rm.steps, c.ppo.steps];
                let (start, sft_model) = if first == 0 { (Some(model), None) } else { (None, Some(model)) };
                let state = State::Rlhf { r: Box::new(r), sft: None, sft_model, rm: None, rm_model, ppo: None, start };
                (state, eval_every(&set, RLHF_EVAL_EVERY)?, steps)
            }
        };
        let mut knobs: BTreeMap<String, Value> = BTreeMap::new();
        for k in KNOBS.iter().filter(|k| k.kind == kind) {
            let v = match (&state, k.field) {
                (_, "eval_every") => Value::from(eval_every),
                (State::Finetune(ft), f) => match f {
                    "finetune.steps" => Value::from(ft.cfg.train.steps - ft.step),
                    "finetune.aux_lm" => json(&ft.aux_lm()),
                    "finetune.lr" => json(&ft.cfg.train.lr),
                    _ => Value::from(ft.cfg.train.batch_size),
                },
                (State::Rlhf { r, .. }, f) => f.split('.').try_fold(json(&r.cfg), |v, p| v.get(p).cloned()).unwrap_or(Value::Null),
                (_, f) => f.split('.').try_fold(recipe.clone(), |v, p| v.get(p).cloned()).unwrap_or(Value::Null),
            };
            knobs.insert(k.name.to_string(), v);
        }
        let recipe = match &state {
            State::Finetune(ft) => serde_json::from_str(&ft.cfg.to_json()).unwrap_or(Value::Null),
            State::Rlhf { r, .. } => json(&r.cfg),
            _ => recipe,
        };
        let stages = stages.iter().zip(steps).map(|(&name, steps)| StageInfo { name, steps }).collect();
        let info = Info { kind, stages, knobs, recipe };
        Ok(Driver { kind, info, at: first, step: 0, steps_per_unit: 1, eval_every, backend, state, deferred: None })
    }

    /// Whether every stage has finished.
    pub fn done(&self) -> bool {
        self.at >= self.info.stages.len()
    }

    /// The stage under way (the last one when all are done).
    pub fn stage(&self) -> &'static str {
        self.info.stages[self.at.min(self.info.stages.len() - 1)].name
    }

    /// What the recipe's data came to, in a sentence (finetune: the task's examples and baseline; rlhf: the
    /// preference's demonstrations); None for the others.
    pub fn summary(&self) -> Option<String> {
        match &self.state {
            State::Finetune(ft) => {
                let d = &ft.data;
                Some(format!(
                    "task {}: {} training and {} held-out examples; classes {:?}, held out {:?}; majority baseline {:.3}",
                    d.task.name(), ft.train.len(), ft.val.len(), d.classes, d.counts(&d.val), ft.baseline()
                ))
            }
            State::Rlhf { r, .. } => {
                let d = &r.data;
                Some(format!(
                    "preference {}: {} demonstration lines of {} with at least {} characters (score per character >= {:.4}), {} demonstration characters",
                    r.cfg.preference.describe(), d.demo_lines, d.long_lines, crate::recipes::rlhf::MIN_DEMO_CHARS, d.demo_threshold, d.demos.len()
                ))
            }
            _ => None,
        }
    }

    /// What the pretraining stage under way trains on ("cpu", "gpu (<adapter>)"); None between runs and in the
    /// other recipes.
    pub fn backend_name(&self) -> Option<String> {
        match &self.state {
            State::Zeroshot { run: Some(r), .. } | State::Icl { run: Some(r), .. } => Some(r.backend_name()),
            _ => None,
        }
    }

    /// Reads the device state of the pretraining run under way back to the host (on the cpu, nothing to do), so
    /// that `save` holds it: after a divergence, the last good state.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sync(&mut self) -> Result<()> {
        match &mut self.state {
            State::Zeroshot { run: Some(r), .. } | State::Icl { run: Some(r), .. } => r.sync(),
            _ => Ok(()),
        }
    }

    /// One unit of work of the stage under way: the events it produced (a progress event, an evaluation before it
    /// when one is due, and the stage's result when it finished). Nothing when all stages are done.
    pub fn unit(&mut self) -> Result<Vec<Event>> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if self.done() {
            return Ok(Vec::new());
        }
        let stage = self.stage();
        let steps = self.info.stages[self.at].steps;
        let every = self.eval_every;
        let mut out = Vec::new();
        let max = self.steps_per_unit;
        if let Some(run) = self.pretraining_run()? {
            let deferred = pretrain_unit(run, steps, stage, max, &mut out)?;
            self.pretrain_after(deferred, &out);
            return Ok(out);
        }
        let progress = |step: usize, eval: bool, line: Value, samples: Option<Vec<Sample>>| Event::Progress {
            stage, step, steps, eval, metrics: metrics_of(&line), samples, notice: None, report: line,
        };
        let finished = |step: usize, line: Value, samples: Option<Vec<Sample>>| Event::Stage { stage, step, metrics: metrics_of(&line), samples, report: line };
        match &mut self.state {
            State::Finetune(ft) => {
                // An evaluation step measures the model before the step's update; the CLI prints both in one line.
                let step = ft.step;
                let first = ft.cfg.train.steps - steps;
                if (step - first).is_multiple_of(every) {
                    out.push(progress(step - first, true, finetune_eval(ft)?, None));
                }
                let r = ft.step()?;
                out.push(progress(ft.step - first, false, json(&r), None));
                if ft.step >= ft.cfg.train.steps {
                    out.push(finished(ft.step - first, finetune_eval(ft)?, None));
                }
                self.step = ft.step - first;
            }
            State::Zeroshot { recipe, corpus, tok, text, pattern, baseline, eval, .. } => {
                {
                    let (Some(a), Some(b)) = (pattern.as_ref(), baseline.as_ref()) else {
                        return Err(Error::Invalid("the evaluation needs both models (pattern, baseline)".into()));
                    };
                    let e = zeroshot::evaluate(&a.model, &b.model, &Cpu, tok, recipe, text, corpus)?;
                    let line = json(&e);
                    let samples = e.examples.iter().map(|x| Sample { prompt: x.prompt.clone(), completion: x.answer.clone() }).collect();
                    *eval = Some(line.clone());
                    out.push(finished(1, line, Some(samples)));
                    self.step = 1;
                }
            }
            State::Icl { recipe, model, eval, .. } => {
                let ck = model.as_ref().expect("the eval stage follows pretraining");
                let e = icl::evaluate(&ck.model, &Cpu, &ck.tokenizer, recipe)?;
                let line = json(&e);
                *eval = Some(line.clone());
                out.push(finished(1, line, None));
                self.step = 1;
            }
            State::Rlhf { r, sft, sft_model, rm, rm_model, ppo, start } => {
                let pl = r.cfg.prompt_len;
                let policy_line = |e: PolicyEval| {
                    let samples = split_samples(&e.samples, pl);
                    (json(&e), samples)
                };
                match stage {
                    "sft" => {
                        let s = sft.get_or_insert_with(|| Box::new(Sft::new(r, start.take().expect("the pretrained model"))));
                        if s.step.is_multiple_of(every) {
                            let (l, smp) = policy_line(evaluate_policy(r, &s.model, None, None)?);
                            out.push(progress(s.step, true, l, Some(smp)));
                        }
                        let rep = s.step(r)?;
                        out.push(progress(s.step, false, json(&rep), None));
                        if s.done() {
                            let (l, smp) = policy_line(evaluate_policy(r, &s.model, None, None)?);
                            out.push(finished(s.step, l, Some(smp)));
                        }
                        self.step = s.step;
                        if s.done() {
                            *sft_model = Some(sft.take().expect("the stage").model);
                        }
                    }
                    "rm" => {
                        if rm.is_none() {
                            *rm = Some(Box::new(RewardModel::new(r, sft_model.clone().expect("rm follows sft"))?));
                        }
                        let m = rm.as_mut().expect("made above");
                        if m.step.is_multiple_of(every) {
                            out.push(progress(m.step, true, json(&m.eval(r)?), None));
                        }
                        let rep = m.step(r)?;
                        out.push(progress(m.step, false, json(&rep), None));
                        if m.done() {
                            let (mu, sd) = m.normalise(r)?;
                            let mut l = json(&m.eval(r)?);
                            (l["reward_mean"], l["reward_std"]) = (json(&mu), json(&sd));
                            out.push(finished(m.step, l, None));
                        }
                        self.step = m.step;
                        if m.done() {
                            *rm_model = Some(rm.take().expect("the stage").model);
                        }
                    }
                    _ => {
                        if ppo.is_none() {
                            let (s, m) = (sft_model.clone().expect("ppo follows sft"), rm_model.clone().expect("ppo follows rm"));
                            *ppo = Some(Box::new(Ppo::new(r, s, m)));
                        }
                        let p = ppo.as_mut().expect("made above");
                        if p.step.is_multiple_of(every) {
                            let (l, smp) = policy_line(evaluate_policy(r, &p.policy, Some(&p.reference), Some(&p.rm))?);
                            out.push(progress(p.step, true, l, Some(smp)));
                        }
                        let rep = p.step(r)?;
                        out.push(progress(p.step, false, json(&rep), None));
                        if p.done(r) {
                            let (l, smp) = policy_line(evaluate_policy(r, &p.policy, Some(&p.reference), Some(&p.rm))?);
                            out.push(finished(p.step, l, Some(smp)));
                        }
                        self.step = p.step;
                    }
                }
            }
        }
        self.advance(&out);
        Ok(out)
    }

    /// After a unit whose events are `out`: past a stage that finished.
    fn advance(&mut self, out: &[Event]) {
        if out.iter().any(|e| matches!(e, Event::Stage { .. })) {
            self.at += 1;
            if !self.done() {
                self.step = 0; // the next stage has not started (when all are done, the last one's steps stay)
            }
        }
    }

    /// The pretraining run of the stage under way (zeroshot's two models, icl's), made now if the stage has not
    /// started; None in any other stage. In the browser a run is made on the cpu whatever the backend: the engine
    /// moves it onto WebGPU (`Run::attach_gpu`, awaited) before its first step.
    pub fn pretraining_run(&mut self) -> Result<Option<&mut Run>> {
        if self.done() || self.stage() == "eval" {
            return Ok(None);
        }
        let stage = self.stage();
        let on = if cfg!(target_arch = "wasm32") && self.backend == BackendKind::Gpu { BackendKind::Cpu } else { self.backend };
        Ok(match &mut self.state {
            State::Zeroshot { recipe, corpus, run, .. } => Some(match run {
                Some(r) => &mut **r,
                None => run.insert(Box::new(recipe.run(corpus, stage == "pattern", on)?)),
            }),
            State::Icl { recipe, run, .. } => Some(match run {
                Some(r) => &mut **r,
                None => run.insert(Box::new(recipe.run(on)?)),
            }),
            _ => None,
        })
    }

    /// After a pretraining unit (events `out`; `deferred`: an error to return next): the steps done, and at the
    /// stage's end its run kept as its checkpoint.
    fn pretrain_after(&mut self, deferred: Option<Error>, out: &[Event]) {
        self.deferred = deferred;
        let ended = out.iter().any(|e| matches!(e, Event::Stage { .. }));
        let stage = self.stage();
        let (run, slot) = match &mut self.state {
            State::Zeroshot { run, pattern, baseline, .. } => (run, if stage == "pattern" { pattern } else { baseline }),
            State::Icl { run, model, .. } => (run, model),
            _ => return,
        };
        self.step = run.as_ref().map_or(self.step, |r| r.step);
        if ended {
            *slot = run.take().map(|r| Box::new(trained(*r)));
        }
        self.advance(out);
    }

    /// The backend the recipe was made with.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// `unit`, awaiting the device of a pretraining run on the GPU (the browser's WebGPU: its steps, evaluations
    /// and read-back are asynchronous); any other unit as `unit`.
    pub async fn unit_async(&mut self) -> Result<Vec<Event>> {
        if self.deferred.is_some() || self.done() {
            return self.unit();
        }
        let (stage, steps, max) = (self.stage(), self.info.stages[self.at].steps, self.steps_per_unit);
        let Some(run) = self.pretraining_run()?.filter(|r| r.on_gpu()) else { return self.unit() };
        let mut out = Vec::new();
        let (due, n) = pretrain_plan(run, steps, max);
        if due {
            let val = run.eval_async(Split::Val).await?;
            out.push(val_event(stage, run.step, steps, val));
        }
        let mut reports = Vec::with_capacity(n);
        let done = run.steps_async(n, |r| reports.push(r)).await;
        let deferred = pretrain_steps(reports, steps, stage, done, &mut out)?;
        if deferred.is_none() && run.step == steps {
            let synced = run.sync_async().await;
            let val = run.eval_async(Split::Val).await?;
            pretrain_end(run, steps, stage, val, synced, &mut out);
        }
        self.pretrain_after(deferred, &out);
        Ok(out)
    }

    /// `evaluate`, awaiting the device of a pretraining run on the GPU.
    pub async fn evaluate_async(&self) -> Result<Event> {
        if let State::Zeroshot { run: Some(r), .. } | State::Icl { run: Some(r), .. } = &self.state {
            if r.on_gpu() {
                let steps = self.info.stages[self.at].steps;
                return Ok(val_event(self.stage(), self.step, steps, r.eval_async(Split::Val).await?));
            }
        }
        self.evaluate()
    }

    /// Brings the host copy of a pretraining run on the GPU up to date (before `save`); nothing to do otherwise.
    pub async fn sync_async(&mut self) -> Result<()> {
        match &mut self.state {
            State::Zeroshot { run: Some(r), .. } | State::Icl { run: Some(r), .. } => r.sync_async().await,
            _ => Ok(()),
        }
    }

    /// The held-out evaluation of the stage under way's model now (no weight update), as a progress event with
    /// `eval` true. An evaluation stage not yet done reports nothing to measure (its metrics are empty).
    pub fn evaluate(&self) -> Result<Event> {
        let stage = self.stage();
        let steps = self.info.stages[self.at.min(self.info.stages.len() - 1)].steps;
        let ev = |line: &Value, samples| Event::Progress {
            stage, step: self.step, steps, eval: true, metrics: metrics_of(line), samples, notice: None, report: line.clone(),
        };
        Ok(match &self.state {
            State::Finetune(ft) => ev(&finetune_eval(ft)?, None),
            State::Zeroshot { run, eval, .. } | State::Icl { run, eval, .. } => match (run, eval) {
                (Some(r), _) => ev(&serde_json::json!({ "val_loss": json(&r.eval(Split::Val)?) }), None),
                (None, Some(e)) => ev(e, None),
                (None, None) => ev(&Value::Null, None),
            },
            State::Rlhf { r, sft, sft_model, rm, ppo, start, .. } => {
                let pl = r.cfg.prompt_len;
                if let Some(p) = ppo {
                    let e = evaluate_policy(r, &p.policy, Some(&p.reference), Some(&p.rm))?;
                    ev(&json(&e), Some(split_samples(&e.samples, pl)))
                } else if let Some(m) = rm {
                    ev(&json(&m.eval(r)?), None)
                } else {
                    // The SFT model as it is (or the one the next stage starts from, or the pretrained one before SFT).
                    let m = sft.as_ref().map(|s| &s.model).or(sft_model.as_ref()).or(start.as_ref()).expect("a model");
                    let e = evaluate_policy(r, m, None, None)?;
                    ev(&json(&e), Some(split_samples(&e.samples, pl)))
                }
            }
        })
    }

    /// The checkpoint of stage `stage`'s model (None: the stage under way, or the last when all are done) as it is
    /// now. Refused for a stage that has not started or has no model.
    pub fn save(&self, stage: Option<&str>) -> Result<Vec<u8>> {
        let stage = stage.unwrap_or(self.stage());
        let i = self.info.stages.iter().position(|s| s.name == stage).ok_or_else(|| {
            Error::Invalid(format!("stage = {stage:?}: {} has the stages {}", self.kind.name(), self.kind.stages().join(", ")))
        })?;
        let not_yet = || Error::Invalid(format!("stage = {stage:?}: the stage has not started, so it has no model yet"));
        if i > self.at || stage == "eval" {
            return Err(if stage == "eval" { Error::Invalid("stage = \"eval\": an evaluation stage has no model of its own".into()) } else { not_yet() });
        }
        match &self.state {
            State::Finetune(ft) => ft.save(),
            State::Zeroshot { run, pattern, baseline, .. } => {
                let m = if stage == "pattern" { pattern } else { baseline };
                match (m, run) {
                    (Some(ck), _) => save_ck(ck),
                    (None, Some(r)) => checkpoint::save(&r.cfg, r.data.tokenizer(), r.step, &r.model, Some(&r.opt)),
                    (None, None) => Err(not_yet()),
                }
            }
            State::Icl { run, model, .. } => match (model, run) {
                (Some(ck), _) => save_ck(ck),
                (None, Some(r)) => checkpoint::save(&r.cfg, r.data.tokenizer(), r.step, &r.model, Some(&r.opt)),
                (None, None) => Err(not_yet()),
            },
            State::Rlhf { r, sft, sft_model, rm, rm_model, ppo, .. } => match stage {
                "sft" => match (sft, sft_model) {
                    (Some(s), _) => r.save(&s.model, s.step, None),
                    (None, Some(m)) => r.save(m, r.cfg.sft.steps, None),
                    _ => Err(not_yet()),
                },
                "rm" => match (rm, rm_model) {
                    (Some(m), _) => r.save(&m.model, m.step, None),
                    (None, Some(m)) => r.save(m, r.cfg.rm.steps, None),
                    _ => Err(not_yet()),
                },
                _ => match ppo {
                    Some(p) => r.save(&p.policy, p.step, None),
                    None => Err(not_yet()),
                },
            },
        }
    }

    /// Held-out samples of the current model: rlhf's policy completions (the evaluation's), zeroshot's examples
    /// after its evaluation; none otherwise.
    pub fn samples(&self) -> Result<Vec<Sample>> {
        match &self.state {
            State::Rlhf { r, sft, sft_model, ppo, start, .. } => {
                // The policy: PPO's, else the SFT model (as it is, or finished), else the pretrained one before SFT.
                let e = match ppo {
                    Some(p) => evaluate_policy(r, &p.policy, None, None)?,
                    None => {
                        let m = sft.as_ref().map(|s| &s.model).or(sft_model.as_ref()).or(start.as_ref()).expect("a model");
                        evaluate_policy(r, m, None, None)?
                    }
                };
                Ok(split_samples(&e.samples, r.cfg.prompt_len))
            }
            State::Zeroshot { eval: Some(e), .. } => Ok(e["examples"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| Sample { prompt: x["prompt"].as_str().unwrap_or("").into(), completion: x["answer"].as_str().unwrap_or("").into() })
                        .collect()
                })
                .unwrap_or_default()),
            _ => Ok(Vec::new()),
        }
    }
}

impl Driver {
    /// icl: the model's attention maps on held-out episode `episode` with the induction pattern
    /// (`icl::attention`): the pretrained model once pretraining has ended, else the model training now (a gpu
    /// run's host copy: `sync` first). Refused for the other kinds, before pretraining has started, and for an
    /// episode past the evaluation's (naming `episode`).
    pub fn attention(&self, episode: usize) -> Result<icl::EpisodeAttention> {
        let State::Icl { recipe, run, model, .. } = &self.state else {
            return Err(Error::Invalid(format!("attention: only the icl recipe shows an episode's attention, not {}", self.kind.name())));
        };
        match (model, run) {
            (Some(ck), _) => icl::episode_attention(&ck.model, &Cpu, &ck.tokenizer, recipe, episode),
            (None, Some(r)) => icl::episode_attention(&r.model, &Cpu, r.data.tokenizer(), recipe, episode),
            (None, None) => Err(Error::Invalid("attention: the recipe has no model yet; run its pretraining first".into())),
        }
    }
}

/// A checkpoint kept by the driver, as bytes.
fn save_ck(ck: &Checkpoint) -> Result<Vec<u8>> {
    checkpoint::save(&ck.config, &ck.tokenizer, ck.step, &ck.model, ck.opt.as_ref())
}

/// A finished pretraining run as its checkpoint: config, tokenizer, step, model and AdamW's state (a gpu run's
/// host copy, read back when its stage ended), so a saved stage can be trained on.
fn trained(run: Run) -> Checkpoint {
    let tokenizer = run.data.tokenizer().clone();
    Checkpoint { config: run.cfg, tokenizer, step: run.step, model: run.model, opt: Some(run.opt) }
}

/// tp finetune's evaluation line: the step (the CLI's, counting a continued checkpoint's), training-sample and
/// held-out accuracy, held-out task and LM loss, baseline.
fn finetune_eval(ft: &Finetune) -> Result<Value> {
    let (tr, val) = ft.eval()?;
    Ok(serde_json::json!({
        "step": ft.step, "accuracy": json(&tr.accuracy), "val_accuracy": json(&val.accuracy),
        "val_task_loss": json(&val.task_loss), "val_lm_loss": json(&val.lm_loss), "baseline": json(&ft.baseline()),
    }))
}

/// One unit of a pretraining stage (zeroshot's models, icl's), in `tp train`'s order: the validation loss first
/// when the step is at the config's eval_interval (an evaluation event), then up to `max` steps, never past the
/// next evaluation or the stage's end (on a gpu run pipelined: `Run::steps`); after the last step, the final
/// validation loss as the stage's result. An error after some steps: their events, and the error to return from
/// the next unit.
fn pretrain_unit(run: &mut Run, steps: usize, stage: &'static str, max: usize, out: &mut Vec<Event>) -> Result<Option<Error>> {
    let (due, n) = pretrain_plan(run, steps, max);
    if due {
        out.push(val_event(stage, run.step, steps, run.eval(Split::Val)?));
    }
    let mut reports = Vec::with_capacity(n);
    #[cfg(not(target_arch = "wasm32"))]
    let done = run.steps(n, |r| reports.push(r));
    #[cfg(target_arch = "wasm32")]
    let done = (0..n).try_for_each(|_| run.step().map(|r| reports.push(r)));
    let deferred = pretrain_steps(reports, steps, stage, done, out)?;
    if deferred.is_none() && run.step == steps {
        #[cfg(not(target_arch = "wasm32"))]
        let synced = run.sync();
        #[cfg(target_arch = "wasm32")]
        let synced = Ok(());
        let val = run.eval(Split::Val)?;
        pretrain_end(run, steps, stage, val, synced, out);
    }
    Ok(deferred)
}

/// Whether a pretraining unit starts with an evaluation (at the config's eval_interval), and how many steps it
/// takes: up to `max`, never past the next evaluation or the stage's end.
fn pretrain_plan(run: &Run, steps: usize, max: usize) -> (bool, usize) {
    let (step, ei) = (run.step, run.cfg.train.eval_interval.max(1));
    (step.is_multiple_of(ei), ((step / ei + 1) * ei).min(steps).min(step.saturating_add(max.max(1))) - step)
}

/// A pretraining run's validation loss before step `step`, as an evaluation event.
fn val_event(stage: &'static str, step: usize, steps: usize, val: f32) -> Event {
    let line = serde_json::json!({ "val_loss": json(&val) });
    Event::Progress { stage, step, steps, eval: true, metrics: metrics_of(&line), samples: None, notice: None, report: line }
}

/// The steps' events (`tp train`'s fields: step, loss, lr, grad_norm, and a Mixture-of-Experts model's aux_loss
/// and expert_load); an error after at least one step is handed back to be returned later.
fn pretrain_steps(reports: Vec<crate::train::StepReport>, steps: usize, stage: &'static str, done: Result<()>, out: &mut Vec<Event>) -> Result<Option<Error>> {
    let deferred = match done {
        Err(e) if reports.is_empty() => return Err(e),
        Err(e) => Some(e),
        Ok(()) => None,
    };
    for r in reports {
        let mut line = serde_json::json!({ "step": r.step, "loss": json(&r.loss), "lr": r.lr, "grad_norm": json(&r.grad_norm) });
        if let Some(aux) = r.aux_loss {
            line["aux_loss"] = json(&aux);
            line["expert_load"] = json(&r.expert_load);
        }
        let metrics = metrics_of(&line);
        out.push(Event::Progress { stage, step: r.step + 1, steps, eval: false, metrics, samples: None, notice: r.notice, report: line });
    }
    Ok(deferred)
}

/// A pretraining stage's result: its final validation loss and what it trained on (a gpu run whose state could
/// not be read back goes on from the last state read back, and says so).
fn pretrain_end(run: &Run, steps: usize, stage: &'static str, val: f32, synced: Result<()>, out: &mut Vec<Event>) {
    if let (Err(e), Some(Event::Progress { notice, .. })) = (synced, out.last_mut()) {
        *notice = Some(format!("reading the model back from the gpu failed ({e}); using the last state read back"));
    }
    let line = serde_json::json!({ "step": steps, "val_loss": json(&val), "backend": run.backend_name() });
    out.push(Event::Stage { stage, step: steps, metrics: metrics_of(&line), samples: None, report: line });
}

/// rlhf's recipe (`o.recipe`, or the shipped one) with the knobs and the seed written in, checked (an error names
/// the knob that set a refused field), before any checkpoint is read: its `checkpoint` is a path for `tp rlhf`.
pub fn rlhf_config(o: &Options) -> Result<RlhfConfig> {
    let set = check_knobs(Kind::Rlhf, &o.knobs)?;
    let recipe = recipe_json(o.recipe.as_deref().unwrap_or(RLHF), &set, o.seed)?;
    let cfg: RlhfConfig = serde_json::from_value(recipe).map_err(|e| Error::Invalid(format!("recipe: {e}")))?;
    cfg.validate().map_err(|e| name_knob(e, &set))?;
    eval_every(&set, RLHF_EVAL_EVERY)?;
    Ok(cfg)
}

/// A kind's stages, knobs and shipped recipe, without building anything heavy: the recipe file's numbers (finetune
/// from a pretrained checkpoint: the fine-tune defaults `tp finetune` uses).
pub fn info(kind: Kind) -> Result<Info> {
    let text = default_recipe(kind, None);
    let recipe: Value = serde_json::from_str(text).map_err(|e| Error::ConfigParse(e.to_string()))?;
    let get = |path: &str| path.split('.').try_fold(recipe.clone(), |v, p| v.get(p).cloned());
    let mut knobs = BTreeMap::new();
    for k in KNOBS.iter().filter(|k| k.kind == kind) {
        let v = match (kind, k.field) {
            (Kind::Finetune, "finetune.steps") => Value::from(finetune::DEFAULT_STEPS),
            (Kind::Finetune, "finetune.lr") => json(&finetune::DEFAULT_LR),
            (Kind::Finetune, "finetune.batch") => Value::from(finetune::DEFAULT_BATCH),
            (Kind::Finetune, "finetune.aux_lm") => Value::from(0.0),
            (Kind::Finetune, "eval_every") => Value::from(FINETUNE_EVAL_EVERY),
            (Kind::Rlhf, "eval_every") => Value::from(RLHF_EVAL_EVERY),
            (_, f) => get(f).unwrap_or(Value::Null),
        };
        knobs.insert(k.name.to_string(), v);
    }
    let n = |k: &str| knobs.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
    let steps: Vec<usize> = match kind {
        Kind::Finetune => vec![n("steps")],
        Kind::Zeroshot => vec![n("steps"), n("steps"), 1],
        Kind::Icl => vec![n("steps"), 1],
        Kind::Rlhf => vec![n("sft_steps"), n("rm_steps"), n("ppo_steps")],
    };
    let stages = kind.stages().iter().zip(steps).map(|(&name, steps)| StageInfo { name, steps }).collect();
    Ok(Info { kind, stages, knobs, recipe })
}
