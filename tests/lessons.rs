//! The lessons (`www/lessons/*.json`): each one's runs train here with the native trainer, on the configs the
//! page builds (the preset, the lesson's base settings, its test sizes, then each run's knob), and what the lesson
//! says happens at its test sizes must happen: for every comparison of `expect` the outcome in `test.outcome`
//! ("holds", "reversed" or "tie"). A lesson whose claim does not reproduce records that, and this checks it.
//!
//! It also refuses a malformed lesson: an unknown field, a missing text in either language, a knob path the
//! core's config does not have (checked by parsing and validating the config and reading the value back), a run
//! that differs from the others in more than its knob, an unknown metric or run id, an index that does not list
//! exactly the lesson files.
//!
//! A recipe lesson (`base.recipe`, issue 18's recipes) runs each of its runs through the core's recipe driver
//! (`recipes::engine::Driver`, what the engine steps in the browser) from the shipped pretrained checkpoint where
//! the recipe takes one; its `set`s are the recipe's knobs (`recipes::engine::KNOBS`), refused when they are not,
//! and its metrics are read from the stages' final evaluations as `pkg/lessons.js` reads them.
//!
//! `TP_LESSONS_SIZE=page cargo test --release --test lessons -- --nocapture` trains at the page's sizes instead
//! and prints each lesson's metrics without asserting: that is how the "measured" text of a lesson is written.
//! `TP_LESSON=<id>` runs one lesson; `TP_LESSONS_SEED=<n>` trains every run with seed n instead (the noise between
//! seeds, for the "measured" texts; the outcomes are then printed, not asserted).

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use transformer_playground::attention_cost::{attention_vs_ffn, cpu_row, CostSpec};
use std::borrow::Cow;
use transformer_playground::backend::{cpu::Cpu, BackendKind};
use transformer_playground::generate::{Continuations, SampleOptions};
use transformer_playground::config::Arch;
use transformer_playground::data::{Mlm, Split};
use transformer_playground::model::paged::PagedDecoder;
use transformer_playground::recipes::engine::{Driver, Event, Kind, Options, KNOBS};
use transformer_playground::train::Run;
use transformer_playground::{Config, Error};

/// A text in both languages of the page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    en: String,
    zh: String,
}

/// Config settings: a config path ("model.norm.placement", "train.betas.0") → its value.
type Settings = Map<String, Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Base {
    /// A preset: `configs/<preset>.json` (a training lesson).
    #[serde(default)]
    preset: String,
    /// The page's corpus for text models ("shakespeare"; a training lesson).
    #[serde(default)]
    corpus: String,
    /// A recipe lesson: the recipe's kind ("finetune", "icl", "rlhf" …); `set`s are then its knobs.
    recipe: Option<String>,
    /// A recipe lesson's finetune task.
    task: Option<String>,
    #[serde(default)]
    set: Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LessonRun {
    id: String,
    label: Text,
    set: Settings,
    /// A finetune recipe lesson's start, "pretrained" or "scratch" (engine.createRecipe's `checkpoint`): the
    /// lesson's knob when its runs differ in nothing else.
    checkpoint: Option<String>,
}

/// One claim to check: run `a` has a lower (higher) `metric` than run `b` (its `b_metric` when given: two metrics,
/// e.g. of one run), or the two are within `margin`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    metric: String,
    a: String,
    /// "lower", "higher" or "tie".
    is: String,
    b: String,
    #[serde(default)]
    b_metric: Option<String>,
    /// Differences within this are a tie.
    margin: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSizes {
    set: Settings,
    /// For each `expect`, what happens at these sizes: "holds", "reversed" or "tie" — or a list of those where the
    /// CPU decides: a comparison that is chaotic at these sizes (a stalled run that may or may not start to learn)
    /// comes out differently where the products' rounding differs (the `gemm` kernels use FMA on AVX2 and AVX-512
    /// with different blockings: docs/ARCHITECTURE.md, "Add a lesson").
    outcome: Vec<Outcome>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Outcome {
    One(String),
    AnyOf(Vec<String>),
}

impl Outcome {
    fn all(&self) -> Vec<&str> {
        match self {
            Outcome::One(o) => vec![o.as_str()],
            Outcome::AnyOf(os) => os.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the texts are read by the page; here they are only required to be there
struct Lesson {
    id: String,
    /// The claim's number in the course's list (issue 19).
    claim_no: u32,
    title: Text,
    claim: Text,
    source: Text,
    watch: Text,
    question: Text,
    /// What native runs at the page's sizes showed (written from `TP_LESSONS_SIZE=page`).
    measured: Text,
    /// Why the expected direction may not show at this size, said when it does not.
    why_not: Text,
    base: Base,
    runs: Vec<LessonRun>,
    /// The metrics shown for every run (each `expect` names one of them).
    metrics: Vec<String>,
    expect: Vec<Expect>,
    test: TestSizes,
}

/// The metrics a lesson can compare: what the core's step reports and evaluation carry (the page computes the
/// same from its progress events, `pkg/lessons.js`).
const METRICS: &[&str] =
    &["final_val_loss", "max_grad_norm", "grad_norm_ratio_step0", "kv_bytes_per_token", "expert_load_entropy", "attention_entropy", "permutation_gap", "val_loss_2x", "val_loss_4x", "params_total", "params_active", "ms_per_step", "pos_relative_raw", "pos_relative_projected", "val_loss_unmasked", "attn_naive_mib", "attn_flash_mib", "attn_naive_ms", "attn_flash_ms", "attn_flops_share", "kv_paged_share"];
/// The metrics of recipe lessons, read from the recipe's stage results (`measure_recipe`).
const RECIPE_METRICS: &[&str] = &["ft_accuracy", "ft_lm_loss", "icl_accuracy_k0", "icl_accuracy_kmax", "icl_gain", "ppo_score", "ppo_kl", "ppo_lm_loss"];
/// kv_paged_share's generation (pkg/lessons.js, probeRun, the same): continuations, tokens each, prompt characters.
const PAGED_N: usize = 4;
const PAGED_TOKENS: usize = 16;
const PAGED_PROMPT: usize = 16;
/// Metrics that depend on the machine: shown, never compared.
const UNCOMPARABLE: &[&str] = &["ms_per_step", "attn_naive_ms", "attn_flash_ms"];

fn root() -> String {
    env!("CARGO_MANIFEST_DIR").to_string()
}

fn lesson_files() -> Vec<(String, String)> {
    let dir = format!("{}/www/lessons", root());
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.file_stem().is_some_and(|s| s != "index"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Sets `path` ("model.norm.kind", "train.betas.0") in a JSON config, making the objects on the way.
fn set_path(cfg: &mut Value, path: &str, value: &Value) -> Result<(), String> {
    let keys: Vec<&str> = path.split('.').collect();
    let mut x = cfg;
    for (i, k) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        x = match x {
            Value::Object(m) => {
                if last {
                    m.insert(k.to_string(), value.clone());
                    return Ok(());
                }
                m.entry(k.to_string()).or_insert_with(|| Value::Object(Map::new()))
            }
            Value::Array(a) => {
                let j: usize = k.parse().map_err(|_| format!("{path}: \"{k}\" is not an index"))?;
                let n = a.len();
                let slot = a.get_mut(j).ok_or_else(|| format!("{path}: index {j} past the {n} elements"))?;
                if last {
                    *slot = value.clone();
                    return Ok(());
                }
                slot
            }
            _ => return Err(format!("{path}: \"{k}\" is inside a value that is not an object")),
        };
    }
    unreachable!()
}

fn get_path<'a>(cfg: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(cfg, |x, k| match x {
        Value::Object(m) => m.get(k),
        Value::Array(a) => a.get(k.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The config of one run of a lesson, as the page builds it: the preset, then the base settings, then (in a test)
/// the test sizes, then the run's knob. Each setting must be a field of the core's config that keeps its value
/// through parsing and validation, or this names the setting and the core's refusal.
fn run_config(lesson: &Lesson, run: &LessonRun, test: bool) -> Config {
    try_run_config(lesson, run, test).unwrap_or_else(|e| panic!("{e}"))
}

fn try_run_config(lesson: &Lesson, run: &LessonRun, test: bool) -> Result<Config, String> {
    let at = format!("lesson {} run {}", lesson.id, run.id);
    let preset = format!("{}/configs/{}.json", root(), lesson.base.preset);
    let text = std::fs::read_to_string(&preset).map_err(|e| format!("{at}: preset {preset}: {e}"))?;
    let mut cfg: Value = serde_json::from_str(&text).map_err(|e| format!("{at}: preset {preset}: {e}"))?;
    let layers: Vec<&Settings> = [Some(&lesson.base.set), test.then_some(&lesson.test.set), Some(&run.set)].into_iter().flatten().collect();
    for set in &layers {
        for (path, v) in set.iter() {
            set_path(&mut cfg, path, v).map_err(|e| format!("{at}: {e}"))?;
        }
    }
    let effective: Settings = layers.iter().flat_map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone()))).collect(); // the last setting wins
    let settings: Vec<String> = effective.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let config = Config::from_json(&cfg.to_string()).map_err(|e| format!("{at}: the core refuses its config ({}): {e}", settings.join(", ")))?;
    let back = serde_json::to_value(&config).unwrap();
    for (path, v) in &effective {
        let got = get_path(&back, path);
        if !kept(got, v) {
            return Err(format!("{at}: \"{path}\" is not a knob of the core's config (set to {v}, read back {got:?})"));
        }
    }
    Ok(config)
}

/// Whether a setting `want` came back as `got` from the core: numbers equal as numbers, objects field by field
/// (the core fills in defaults beside them), null as absent; numbers as the f32 the core keeps.
fn kept(got: Option<&Value>, want: &Value) -> bool {
    match (got, want) {
        (None | Some(Value::Null), Value::Null) => true,
        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64().map(|x| x as f32) == b.as_f64().map(|x| x as f32), // the core holds f32
        (Some(Value::Object(g)), Value::Object(w)) => w.iter().all(|(k, v)| kept(g.get(k), v)),
        (Some(g), w) => g == w,
        (None, _) => false,
    }
}

/// What one run measured: each metric (None: the run diverged before it could be measured).
struct Measured {
    metrics: BTreeMap<String, Option<f64>>,
    diverged_at: Option<usize>,
}

/// Trains one run to its last step (or its divergence) and measures the lesson's metrics, as the page does.
fn measure(cfg: Config, text: &str, metrics: &[String]) -> Measured {
    let steps = cfg.train.steps;
    let mut run = Run::new(cfg, Some(text), BackendKind::Cpu).expect("a lesson's run builds");
    let (mut max_grad, mut ratio0, mut entropy, mut ms) = (0f64, None, None, 0f64);
    let mut diverged_at = None;
    for s in 0..steps {
        let t0 = std::time::Instant::now();
        let r = match run.step() {
            Ok(r) => r,
            Err(Error::Diverged { step, .. }) => {
                diverged_at = Some(step);
                break;
            }
            Err(e) => panic!("step {s}: {e}"),
        };
        ms += t0.elapsed().as_secs_f64() * 1e3;
        max_grad = max_grad.max(r.grad_norm as f64);
        if s == 0 {
            let blocks: Vec<f64> = r.layer_grad_norms.iter().filter(|(n, _)| n.contains("blocks.")).map(|(_, g)| *g as f64).collect();
            ratio0 = Some(blocks[blocks.len() - 1] / blocks[0]);
        }
        if !r.expert_load.is_empty() {
            entropy = Some(r.expert_load.iter().map(|l| load_entropy(&l.load)).sum::<f64>() / r.expert_load.len() as f64);
        }
    }
    let val = if diverged_at.is_some() { None } else { run.eval(Split::Val).ok().map(|v| v as f64).filter(|v| v.is_finite()) };
    let kv = PagedDecoder::new(&run.model, 1).map(|d| d.stats().bytes_per_position as f64).ok();
    let attention = if metrics.iter().any(|m| m == "attention_entropy") && diverged_at.is_none() { Some(attention_entropy(&run, text)) } else { None };
    let gap = if metrics.iter().any(|m| m == "permutation_gap") && diverged_at.is_none() { Some(permutation_gap(&run, text)) } else { None };
    // The first layer's position–position term (src/position_terms.rs, the page's Run#positionTerms).
    let terms = (metrics.iter().any(|m| m.starts_with("pos_relative_")) && diverged_at.is_none())
        .then(|| transformer_playground::position_terms::position_terms(&run.model).expect("position terms"));
    // The core's count (the summary's "Parameters" and "Active / token"): every parameter, and those one token uses.
    let flow = transformer_playground::probe::shape_flow(&run.cfg.model, run.data.tokenizer().vocab_size(), 1, run.cfg.model.ctx_len);
    // The validation loss at 2× and 4× ctx_len (Run::eval_at, the page's Run#evalAt); none where the model is
    // refused there (learned positions: no row past ctx_len).
    let at = |k: usize| {
        let wanted = metrics.iter().any(|m| m == &format!("val_loss_{k}x")) && diverged_at.is_none();
        let learned = run.cfg.model.position == transformer_playground::config::Position::Learned;
        let got = wanted.then(|| run.eval_at(Split::Val, k * run.cfg.model.ctx_len));
        match got {
            Some(Ok(v)) => Some(v as f64).filter(|v| v.is_finite()),
            Some(Err(Error::Config { field, .. })) if learned && field == "model.position" => None,
            Some(Err(e)) => panic!("val_loss_{k}x: {e}"),
            None => None,
        }
    };
    let (val2, val4) = (at(2), at(4));
    // bert's masked-LM validation loss with the chosen positions left as they are, no [MASK] in the input
    // (Run::eval_with, the page's Run#evalAt with mlm {mask: 0, random: 0}); none for the other architectures.
    let unmasked = (metrics.iter().any(|m| m == "val_loss_unmasked") && diverged_at.is_none() && run.cfg.model.arch == Arch::Bert)
        .then(|| run.eval_with(Split::Val, run.cfg.model.ctx_len, Some(Mlm::UNMASKED)).expect("val_loss_unmasked") as f64)
        .filter(|v| v.is_finite());
    // One layer's attention at the run's training shape (B, NH, NKV, HS, T = ctx_len), forward and backward, the
    // naive path against the fused one: their extra memory and median time (attention_cost::cpu_row, the page's
    // engine.attentionCost); and attention's share of the forward FLOPs per token at T = ctx_len (attentionFlops).
    let cost = metrics.iter().any(|m| m.starts_with("attn_") && m != "attn_flops_share").then(|| {
        let m = &run.cfg.model;
        let spec = CostSpec {
            batch: run.cfg.train.batch_size,
            heads: m.n_heads,
            kv_heads: Some(m.n_kv_heads),
            head_size: m.head_size(),
            causal: m.arch != Arch::Bert,
            ..CostSpec::default()
        };
        let t0 = std::time::Instant::now();
        let clock = move || t0.elapsed().as_secs_f64() * 1e3;
        cpu_row(&spec, m.ctx_len, &clock).expect("the attention cost row")
    });
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let share = {
        let (rows, _) = attention_vs_ffn(&run.cfg.model, &[run.cfg.model.ctx_len]);
        rows[0].attention / (rows[0].attention + rows[0].ffn)
    };
    // PagedAttention's memory: 4 continuations of 16 tokens of the probe text's first 16 characters over blocks of 16,
    // the cache's peak bytes against 4 contiguous caches of ctx_len (the page's Run#generate with n = 4: kv.peak).
    let paged = (metrics.iter().any(|m| m == "kv_paged_share") && diverged_at.is_none()).then(|| {
        let o = SampleOptions { max_tokens: PAGED_TOKENS, temperature: 1.0, top_k: 0, top_p: 1.0, seed: run.cfg.seed };
        let prompt: String = text.chars().take(PAGED_PROMPT).collect();
        let (model, tok) = (Cow::Borrowed(&run.model), Cow::Borrowed(run.data.tokenizer()));
        let c = Continuations::start(model, tok, &Cpu, &prompt, &o, PAGED_N, 16).expect("paged generation").run(&Cpu, |_, _| {}).expect("paged generation");
        let p = c.peak();
        p.bytes_used as f64 / p.bytes_contiguous as f64
    });
    let done = diverged_at.unwrap_or(steps).max(1);
    let metrics = metrics
        .iter()
        .map(|m| {
            let v = match m.as_str() {
                "final_val_loss" => val,
                "val_loss_2x" => val2,
                "val_loss_4x" => val4,
                "val_loss_unmasked" => unmasked,
                "attn_naive_mib" => cost.as_ref().map(|c| mib(c.naive_bytes)),
                "attn_flash_mib" => cost.as_ref().map(|c| mib(c.flash_bytes)),
                "attn_naive_ms" => cost.as_ref().and_then(|c| c.naive_ms),
                "attn_flash_ms" => cost.as_ref().map(|c| c.flash_ms),
                "attn_flops_share" => Some(share),
                "kv_paged_share" => paged,
                "max_grad_norm" => Some(max_grad),
                "grad_norm_ratio_step0" => ratio0,
                "kv_bytes_per_token" => kv,
                "expert_load_entropy" => entropy,
                "attention_entropy" => attention,
                "permutation_gap" => gap,
                "pos_relative_raw" => terms.as_ref().map(|p| p.raw_relative as f64),
                "pos_relative_projected" => terms.as_ref().map(|p| p.projected_relative.iter().map(|&r| r as f64).sum::<f64>() / p.heads as f64),
                "params_total" => Some(flow.n_params as f64),
                "params_active" => Some(flow.active_params as f64),
                "ms_per_step" => Some(ms / done as f64),
                other => panic!("unknown metric {other}"),
            };
            (m.clone(), v)
        })
        .collect();
    Measured { metrics, diverged_at }
}

/// The knobs of one run of a recipe lesson: the base's, then (in a test) the test sizes', then the run's; each must
/// be a knob of the recipe (`recipes::engine::KNOBS`) with a number, or this names it.
fn recipe_knobs(lesson: &Lesson, run: &LessonRun, test: bool) -> Result<BTreeMap<String, f64>, String> {
    let at = format!("lesson {} run {}", lesson.id, run.id);
    let kind = Kind::parse(lesson.base.recipe.as_deref().unwrap_or_default()).map_err(|e| format!("{at}: base.recipe: {e}"))?;
    let mut knobs = BTreeMap::new();
    for set in [Some(&lesson.base.set), test.then_some(&lesson.test.set), Some(&run.set)].into_iter().flatten() {
        for (name, v) in set {
            if !KNOBS.iter().any(|k| k.kind == kind && k.name == name) {
                return Err(format!("{at}: \"{name}\" is not a knob of the {} recipe", kind.name()));
            }
            let x = v.as_f64().ok_or_else(|| format!("{at}: {name} = {v}: a knob is a number"))?;
            knobs.insert(name.clone(), x);
        }
    }
    Ok(knobs)
}

/// The driver of one run of a recipe lesson, as the page creates it (engine.createRecipe with the run's knobs and
/// the lesson's task, from the shipped pretrained checkpoint where the recipe takes one); refusals name the knob.
fn recipe_driver(lesson: &Lesson, run: &LessonRun, test: bool, text: &str, seed: Option<u64>) -> Result<Driver, String> {
    let kind = Kind::parse(lesson.base.recipe.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
    let scratch = run.checkpoint.as_deref() == Some("scratch");
    let checkpoint = (matches!(kind, Kind::Finetune | Kind::Rlhf) && !scratch).then(|| {
        let path = format!("{}/www/data/pretrained-gpt-tiny.safetensors", root());
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    });
    let corpus = (kind != Kind::Icl).then(|| text.to_string());
    let o = Options { checkpoint, corpus, task: lesson.base.task.clone(), knobs: recipe_knobs(lesson, run, test)?, seed, ..Default::default() };
    Driver::new(kind, &o).map_err(|e| format!("lesson {} run {}: the core refuses the recipe: {e}", lesson.id, run.id))
}

/// Runs a recipe lesson's run to its end and measures the lesson's metrics from the stages' final evaluations (the
/// 'stage' events), as pkg/lessons.js does: ft_* from finetune's, icl_* from icl's eval report (accuracy by k),
/// ppo_* from PPO's.
fn measure_recipe(mut d: Driver, metrics: &[String]) -> Measured {
    let mut stages: BTreeMap<&str, (BTreeMap<String, Value>, Value)> = BTreeMap::new();
    let mut diverged_at = None;
    while !d.done() {
        match d.unit() {
            Ok(events) => {
                for e in events {
                    if let Event::Stage { stage, metrics, report, .. } = e {
                        stages.insert(stage, (metrics, report));
                    }
                }
            }
            Err(Error::Diverged { step, .. }) => {
                diverged_at = Some(step);
                break;
            }
            Err(e) => panic!("recipe stage {}: {e}", d.stage()),
        }
    }
    let of = |stage: &str, name: &str| stages.get(stage).and_then(|(m, _)| m.get(name)).and_then(Value::as_f64);
    let by_k: Option<Vec<f64>> = stages.get("eval").and_then(|(_, r)| r["accuracy_by_k"].as_array()).map(|a| a.iter().filter_map(Value::as_f64).collect());
    let metrics = metrics
        .iter()
        .map(|m| {
            let v = match m.as_str() {
                "ft_accuracy" => of("finetune", "val_accuracy"),
                "ft_lm_loss" => of("finetune", "val_lm_loss"),
                "icl_accuracy_k0" => by_k.as_ref().and_then(|a| a.first().copied()),
                "icl_accuracy_kmax" => by_k.as_ref().and_then(|a| a.last().copied()),
                "icl_gain" => by_k.as_ref().filter(|a| !a.is_empty()).map(|a| a[a.len() - 1] - a[0]),
                "ppo_score" => of("ppo", "score"),
                "ppo_kl" => of("ppo", "kl"),
                "ppo_lm_loss" => of("ppo", "lm_loss"),
                other => panic!("{other} is not a recipe lesson's metric"),
            };
            (m.clone(), v)
        })
        .collect();
    Measured { metrics, diverged_at }
}

/// The mean entropy of the attention rows (over layers, heads and query positions t ≥ 1), each over ln(t + 1),
/// the entropy of attending evenly to the t + 1 keys a causal row has: 1 = spread evenly, 0 = on one key. The
/// probe text is the first `ctx_len` characters of the corpus (the page uses the same).
fn attention_entropy(run: &Run, corpus: &str) -> f64 {
    let text: String = corpus.chars().take(run.cfg.model.ctx_len).collect();
    assert_eq!(run.cfg.model.arch, transformer_playground::config::Arch::Gpt, "attention_entropy is defined for causal (gpt) attention");
    let maps = transformer_playground::probe::attention_maps(&run.model, &transformer_playground::backend::cpu::Cpu, run.data.tokenizer(), run.cfg.data.task, &text, None).expect("attention maps");
    let (mut sum, mut n) = (0.0, 0usize);
    for m in maps.maps.iter().filter(|m| m.kind == "self") {
        for h in 0..m.heads {
            for t in 1..m.t {
                let row = &m.probs[(h * m.t + t) * m.s..(h * m.t + t + 1) * m.s];
                let ent: f64 = row.iter().filter(|p| **p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum();
                sum += ent / ((t + 1) as f64).ln();
                n += 1;
            }
        }
    }
    sum / n as f64
}

/// How far self-attention is from permutation-equivariant: the largest |A'[h, T−1−i, T−1−j] − A[h, i, j]| over
/// layers and heads, where A are the attention weights on the probe text (its first `ctx_len` characters) and A'
/// those on the same text reversed (a permutation). 0 up to float rounding when nothing tells positions apart.
/// Bidirectional (bert) attention only: a causal mask is itself a position signal.
fn permutation_gap(run: &Run, corpus: &str) -> f64 {
    assert_eq!(run.cfg.model.arch, transformer_playground::config::Arch::Bert, "permutation_gap is defined for bidirectional (bert) attention");
    let text: String = corpus.chars().take(run.cfg.model.ctx_len).collect();
    let reversed: String = text.chars().rev().collect();
    let maps = |t: &str| {
        transformer_playground::probe::attention_maps(&run.model, &transformer_playground::backend::cpu::Cpu, run.data.tokenizer(), run.cfg.data.task, t, None)
            .expect("attention maps")
            .maps
    };
    let (a, b) = (maps(&text), maps(&reversed));
    let mut gap = 0f64;
    for (ma, mb) in a.iter().zip(&b).filter(|(m, _)| m.kind == "self") {
        let t = ma.t;
        for h in 0..ma.heads {
            for i in 0..t {
                for j in 0..t {
                    let x = ma.probs[(h * t + i) * t + j] as f64;
                    let y = mb.probs[(h * t + (t - 1 - i)) * t + (t - 1 - j)] as f64;
                    gap = gap.max((x - y).abs());
                }
            }
        }
    }
    gap
}

/// The entropy of an expert load, over that of a uniform load (1: every expert equally used; 0: one takes all).
fn load_entropy(load: &[f32]) -> f64 {
    let h: f64 = load.iter().filter(|p| **p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum();
    h / (load.len() as f64).ln()
}

/// "holds", "reversed" or "tie" for one comparison (a run that diverged counts as the worst: an infinite value
/// for a lower-is-better comparison, and no value at all for a higher-is-better one).
fn outcome(e: &Expect, a: Option<f64>, b: Option<f64>) -> &'static str {
    let worst = if e.is == "higher" { f64::NEG_INFINITY } else { f64::INFINITY };
    let (a, b) = (a.unwrap_or(worst), b.unwrap_or(worst));
    let d = a - b; // both worst: NaN, a tie
    let tie = d.is_nan() || d.abs() <= e.margin;
    match e.is.as_str() {
        "lower" if tie => "tie",
        "lower" => if d < 0.0 { "holds" } else { "reversed" },
        "higher" if tie => "tie",
        "higher" => if d > 0.0 { "holds" } else { "reversed" },
        "tie" => if tie { "holds" } else { "reversed" },
        other => panic!("expect.is must be lower, higher or tie, not {other}"),
    }
}

fn parse(id: &str, json: &str) -> Lesson {
    let l: Lesson = serde_json::from_str(json).unwrap_or_else(|e| panic!("www/lessons/{id}.json: {e}"));
    assert_eq!(l.id, id, "www/lessons/{id}.json: its id must be its file name");
    assert!(l.id.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'), "lesson id {id}: lowercase letters, digits and '-'");
    for (name, t) in [("title", &l.title), ("claim", &l.claim), ("source", &l.source), ("watch", &l.watch), ("question", &l.question), ("measured", &l.measured), ("why_not", &l.why_not)] {
        assert!(!t.en.trim().is_empty() && !t.zh.trim().is_empty(), "lesson {id}: {name} needs en and zh");
    }
    assert!((2..=4).contains(&l.runs.len()), "lesson {id}: 2 to 4 runs");
    // A run's start (finetune's checkpoint) is a knob too: every run names one or none does, and then they differ.
    let starts: Vec<Option<&str>> = l.runs.iter().map(|r| r.checkpoint.as_deref()).collect();
    if starts.iter().any(Option::is_some) {
        assert_eq!(l.base.recipe.as_deref(), Some("finetune"), "lesson {id}: a run's checkpoint is for finetune recipe lessons");
        assert!(starts.iter().all(|s| matches!(s, Some("pretrained" | "scratch"))), "lesson {id}: every run's checkpoint is \"pretrained\" or \"scratch\"");
        assert!(starts.windows(2).any(|w| w[0] != w[1]), "lesson {id}: the runs' checkpoints are the knob: they must differ");
    }
    for r in &l.runs {
        assert!(!r.label.en.is_empty() && !r.label.zh.is_empty(), "lesson {id} run {}: label needs en and zh", r.id);
        assert!(!r.set.is_empty() || r.checkpoint.is_some(), "lesson {id} run {}: a run sets its knob", r.id);
    }
    // Only the lesson's knob differs: every run sets the same paths.
    let knobs: Vec<&String> = l.runs[0].set.keys().collect();
    for r in &l.runs {
        assert_eq!(r.set.keys().collect::<Vec<_>>(), knobs, "lesson {id}: run {} sets other paths than run {}", r.id, l.runs[0].id);
        assert_eq!(l.runs.iter().filter(|o| o.id == r.id).count(), 1, "lesson {id}: run id {} twice", r.id);
    }
    for path in l.base.set.keys().chain(l.test.set.keys()) {
        assert!(!knobs.contains(&path), "lesson {id}: {path} is the lesson's knob, not a base or test setting");
    }
    for k in ["seed", "data.task"] {
        assert!(!knobs.iter().any(|p| p.as_str() == k), "lesson {id}: runs must share {k}");
    }
    let (known, other) = if l.base.recipe.is_some() { (RECIPE_METRICS, "a recipe lesson's") } else { (METRICS, "a training lesson's") };
    for m in &l.metrics {
        assert!(known.contains(&m.as_str()), "lesson {id}: {m} is not {other} metric (one of {known:?})");
    }
    assert_eq!(l.base.recipe.is_some(), l.base.preset.is_empty() && l.base.corpus.is_empty(), "lesson {id}: a lesson has a preset and corpus, or a recipe");
    assert!(!l.expect.is_empty(), "lesson {id}: expect names at least one comparison");
    assert_eq!(l.expect.len(), l.test.outcome.len(), "lesson {id}: test.outcome has one entry per expect");
    for e in &l.expect {
        for m in std::iter::once(&e.metric).chain(&e.b_metric) {
            assert!(l.metrics.contains(m) && !UNCOMPARABLE.contains(&m.as_str()), "lesson {id}: expect's metric {m} is not a comparable metric of the lesson");
        }
        assert!(e.a != e.b || e.b_metric.as_ref().is_some_and(|m| m != &e.metric), "lesson {id}: an expect compares a run with itself on one metric");
        for r in [&e.a, &e.b] {
            assert!(l.runs.iter().any(|x| &x.id == r), "lesson {id}: expect names run {r}, which it does not have");
        }
        assert!(["lower", "higher", "tie"].contains(&e.is.as_str()), "lesson {id}: expect.is must be lower, higher or tie");
        assert!(e.margin >= 0.0, "lesson {id}: margin must be ≥ 0");
    }
    for o in &l.test.outcome {
        let all = o.all();
        assert!(!all.is_empty() && all.iter().all(|o| ["holds", "reversed", "tie"].contains(o)), "lesson {id}: test.outcome entries are holds, reversed or tie, or a list of them");
        assert!(all.len() < 3, "lesson {id}: a test.outcome that allows every outcome checks nothing");
    }
    l
}

#[test]
fn the_index_lists_every_lesson_file_once() {
    let index: Value = serde_json::from_str(&std::fs::read_to_string(format!("{}/www/lessons/index.json", root())).unwrap()).unwrap();
    let ids: Vec<String> = index["lessons"].as_array().expect("index.json: {\"lessons\": [ids]}").iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "index.json lists a lesson twice");
    let files: Vec<String> = lesson_files().into_iter().map(|(id, _)| id).collect();
    assert_eq!(sorted, files, "index.json must list exactly the files www/lessons/*.json");
}

#[test]
fn every_lesson_is_well_formed_and_its_configs_are_valid() {
    let text = std::fs::read_to_string(format!("{}/www/data/tinyshakespeare.txt", root())).unwrap();
    for (id, json) in lesson_files() {
        let l = parse(&id, &json);
        if l.base.recipe.is_some() {
            // Its runs are recipes: each run's knobs at both sizes are the recipe's and the core takes them.
            for r in &l.runs {
                for test in [false, true] {
                    recipe_driver(&l, r, test, &text, None).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            continue;
        }
        let seeds: Vec<u64> = l.runs.iter().map(|r| run_config(&l, r, false).seed).collect();
        assert!(seeds.windows(2).all(|w| w[0] == w[1]), "lesson {id}: its runs share the seed");
        for r in &l.runs {
            run_config(&l, r, true);
        }
    }
}

#[test]
fn a_misspelt_knob_or_a_bad_value_is_refused() {
    let (id, json) = lesson_files().into_iter().find(|(_, j)| !j.contains("\"recipe\"")).expect("a training lesson");
    let v: Value = serde_json::from_str(&json).unwrap();
    let refusal = |set: Value| {
        let mut v = v.clone();
        v["runs"][0]["set"] = set;
        let bad = serde_json::from_value::<Lesson>(v).unwrap();
        try_run_config(&bad, &bad.runs[0], false).expect_err("refused")
    };
    let e = refusal(serde_json::json!({ "model.norm.placment": "post" }));
    assert!(e.contains("placment"), "lesson {id}: a misspelt knob path is refused, naming it: {e}");
    let e = refusal(serde_json::json!({ "model.n_heads": 3 }));
    assert!(e.contains("model.n_heads"), "lesson {id}: a config the core refuses is refused, naming the field: {e}");
    let e = refusal(serde_json::json!({ "model.norm": "post" }));
    assert!(e.contains("model.norm"), "lesson {id}: a value of the wrong type is refused: {e}");
    // A field the core fills in itself but that a lesson cannot set (a typo of a value inside an object).
    let e = refusal(serde_json::json!({ "train.betas.2": 0.5 }));
    assert!(e.contains("train.betas.2"), "lesson {id}: a path past the end of a list is refused: {e}");
}

#[test]
fn a_recipe_lesson_refuses_a_knob_its_recipe_does_not_have_or_a_bad_value() {
    let (id, json) = lesson_files().into_iter().find(|(_, j)| j.contains("\"recipe\"")).expect("a recipe lesson");
    let text = std::fs::read_to_string(format!("{}/www/data/tinyshakespeare.txt", root())).unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    let refusal = |set: Value| {
        let mut v = v.clone();
        v["runs"][0]["set"] = set;
        let bad = serde_json::from_value::<Lesson>(v).unwrap();
        recipe_driver(&bad, &bad.runs[0], true, &text, None).err().expect("refused")
    };
    let e = refusal(serde_json::json!({ "model.n_heads": 4 }));
    assert!(e.contains("model.n_heads") && e.contains("not a knob"), "lesson {id}: a config path is not a recipe knob: {e}");
    let e = refusal(serde_json::json!({ "steps": "many" }));
    assert!(e.contains("steps"), "lesson {id}: a knob is a number: {e}");
    let e = refusal(serde_json::json!({ "steps": 2.5 }));
    assert!(e.contains("knobs.steps"), "lesson {id}: the core's refusal names the knob: {e}");
}

#[test]
fn every_lesson_shows_at_its_test_sizes_what_it_says() {
    let seed: Option<u64> = std::env::var("TP_LESSONS_SEED").ok().map(|s| s.parse().expect("TP_LESSONS_SEED is a number"));
    let page = std::env::var("TP_LESSONS_SIZE").is_ok_and(|s| s == "page") || seed.is_some();
    let sizes = if std::env::var("TP_LESSONS_SIZE").is_ok_and(|s| s == "page") { "page" } else { "test" };
    let only = std::env::var("TP_LESSON").ok();
    let text = std::fs::read_to_string(format!("{}/www/data/tinyshakespeare.txt", root())).unwrap();
    let mut failures = vec![];
    for (id, json) in lesson_files() {
        if only.as_ref().is_some_and(|o| *o != id) {
            continue;
        }
        let l = parse(&id, &json);
        let t0 = std::time::Instant::now();
        let measured: BTreeMap<&str, Measured> = if l.base.recipe.is_some() {
            l.runs.iter().map(|r| (r.id.as_str(), measure_recipe(recipe_driver(&l, r, sizes == "test", &text, seed).unwrap_or_else(|e| panic!("{e}")), &l.metrics))).collect()
        } else {
            assert_eq!(l.base.corpus, "shakespeare", "lesson {id}: the test knows the shakespeare corpus only");
            let config = |r: &LessonRun| {
                let mut c = run_config(&l, r, sizes == "test");
                c.seed = seed.unwrap_or(c.seed);
                c
            };
            l.runs.iter().map(|r| (r.id.as_str(), measure(config(r), &text, &l.metrics))).collect()
        };
        eprintln!("lesson {id} ({:.1} s at {sizes} sizes{}):", t0.elapsed().as_secs_f64(), seed.map_or(String::new(), |s| format!(", seed {s}")));
        for r in &l.runs {
            let m = &measured[r.id.as_str()];
            let vals: Vec<String> = m.metrics.iter().map(|(k, v)| format!("{k} {}", v.map_or("—".into(), |x| format!("{x:.4}")))).collect();
            let div = m.diverged_at.map_or(String::new(), |s| format!(" (diverged at step {s})"));
            eprintln!("  {:>10}: {}{div}", r.id, vals.join(", "));
        }
        for (e, want) in l.expect.iter().zip(&l.test.outcome) {
            let b_metric = e.b_metric.as_ref().unwrap_or(&e.metric);
            let got = outcome(e, measured[e.a.as_str()].metrics[&e.metric], measured[e.b.as_str()].metrics[b_metric]);
            eprintln!("  {} of {} {} than {b_metric} of {} (margin {}): {got}", e.metric, e.a, e.is, e.b, e.margin);
            if !page && !want.all().contains(&got) {
                let want = want.all().join("\" or \"");
                failures.push(format!("lesson {id}: {} of {} {} than {}: the lesson says \"{want}\" at its test sizes, the runs give \"{got}\"", e.metric, e.a, e.is, e.b));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
