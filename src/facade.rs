//! What the browser facade (`src/wasm.rs`) does with each request of the engine Worker (pkg/worker.js,
//! pkg/protocol.js), as plain Rust over the strings, numbers and bytes a request carries: decoding its JSON
//! arguments, validating them and calling the core. `wasm.rs` only converts types and errors around these, so the
//! native tests and the fuzz targets (`fuzz/fuzz_targets/protocol.rs`) run exactly the code the page reaches.
//! Every function returns the core's `Error` for anything a caller can send; none panics.

use crate::backend::{cpu::Cpu, BackendKind};
use crate::checkpoint;
use std::borrow::Cow;
use crate::config::Arch;
use crate::data::{self, Dataset};
use crate::generate::{self, SampleOptions};
use crate::probe;
use crate::train::Run;
use crate::{Config, Error, Result};

fn to_json<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_string(x).expect("plain data serialises")
}

/// `validate`: parses and validates a config; the config in full (defaults filled in) as JSON.
pub fn validate_config(config: &str) -> Result<String> {
    let cfg = Config::from_json(config)?;
    cfg.validate()?;
    Ok(cfg.to_json())
}

/// `shapeFlow`: the shape-flow table for a config with `vocab` tokens, after validating the config and the model's
/// size and memory with that vocabulary.
pub fn shape_flow(config: &str, vocab: usize) -> Result<String> {
    shape_flow_for(config, vocab, BackendKind::Cpu)
}

/// `shape_flow` with the memory checked for a run on `backend` (`Layout::check_memory_on`).
pub fn shape_flow_for(config: &str, vocab: usize, backend: BackendKind) -> Result<String> {
    let cfg = Config::from_json(config)?;
    cfg.validate()?;
    crate::model::Layout::check_size(&cfg.model, vocab)?;
    crate::model::Layout::check_memory_on(&cfg.model, vocab, cfg.train.batch_size, crate::train::memory_budget(), backend)?;
    Ok(to_json(&probe::shape_flow(&cfg.model, vocab, cfg.train.batch_size, cfg.model.ctx_len)))
}

/// `checkText`: `{"bytes", "chars", "distinct"}` of a user's text, or the core's `data` error.
pub fn check_text(bytes: &[u8]) -> Result<String> {
    data::text_stats(bytes).map(|s| to_json(&s))
}

/// `create`: a fresh run on the cpu from config JSON and, for gpt and bert, the corpus.
pub fn new_run(config: &str, corpus: Option<&str>) -> Result<Run> {
    new_run_for(config, corpus, BackendKind::Cpu)
}

/// The backend a run is made for, as the engine names it: `cpu` (or none) or `webgpu`; anything else is refused.
pub fn backend_for(name: Option<&str>) -> Result<BackendKind> {
    match name {
        None | Some("cpu") => Ok(BackendKind::Cpu),
        Some("webgpu") => Ok(BackendKind::Gpu),
        Some(other) => Err(Error::Invalid(format!("backend = “{other}”: must be “cpu” or “webgpu”"))),
    }
}

/// `create` for `backend`: the run starts on the cpu and, made for the gpu, is checked against what it holds in
/// wasm memory rather than a whole host step (`Run::unattached`); `attachGpu` moves it onto the device.
pub fn new_run_for(config: &str, corpus: Option<&str>, backend: BackendKind) -> Result<Run> {
    let cfg = Config::from_json(config)?;
    cfg.validate()?;
    let data = Dataset::new(&cfg, corpus)?;
    Run::unattached(cfg, data, backend)
}

/// `load`: a run on the cpu continued from a checkpoint. Text models need their corpus again to keep training;
/// its characters must be in the checkpoint's vocabulary.
pub fn run_from_checkpoint(bytes: &[u8], corpus: Option<&str>) -> Result<Run> {
    run_from_checkpoint_for(bytes, corpus, BackendKind::Cpu)
}

/// `load` for `backend` (see `new_run_for`): on the cpu until `attachGpu`.
pub fn run_from_checkpoint_for(bytes: &[u8], corpus: Option<&str>, backend: BackendKind) -> Result<Run> {
    let ck = checkpoint::load(bytes)?;
    let data = match ck.config.model.arch {
        Arch::EncoderDecoder if !ck.config.data.task.is_denoising() => Dataset::new(&ck.config, None)?,
        _ => {
            let text = corpus.ok_or_else(|| {
                Error::Invalid("this checkpoint is a text model: give its corpus to continue training".into())
            })?;
            Dataset::from_text(text, ck.tokenizer.clone(), &ck.config)?
        }
    };
    // A checkpoint's config was valid where it was saved; its step must fit this machine's (or tab's) budget too.
    crate::model::Layout::check_memory_on(
        &ck.config.model,
        ck.tokenizer.vocab_size(),
        ck.config.train.batch_size,
        crate::train::memory_budget(),
        backend,
    )?;
    Ok(Run::resume(ck.config, ck.model, ck.opt, data, ck.step, BackendKind::Cpu))
}

/// The sampling options of `generate` and `decode`: SampleOptions JSON (`max_tokens`, `temperature`, `top_k`,
/// `top_p`, `seed`); empty means the defaults. A refusal names the option (serde's own message names an unknown
/// or repeated one, but gives only a line and column for a value of the wrong type).
pub fn sample_options(json: &str) -> Result<SampleOptions> {
    let o: SampleOptions = if json.trim().is_empty() {
        SampleOptions::default()
    } else {
        serde_json::from_str(json).map_err(|e| {
            let why = mistyped_option(json).unwrap_or_else(|| e.to_string());
            Error::Invalid(format!("sampling options: {why}"))
        })?
    };
    o.validate()?;
    Ok(o)
}

/// The first option of a JSON object whose value is not of its option's type, as "name = value: serde's reason".
/// Repeated options count each time (`{"top_k": 0.5, "top_k": 1}` is refused for its first `top_k`).
fn mistyped_option(json: &str) -> Option<String> {
    use serde_json::from_value;
    let Ok(Entries(fields)) = serde_json::from_str::<Entries>(json) else { return None };
    fields.iter().find_map(|(name, v)| {
        let err = match name.as_str() {
            "max_tokens" | "top_k" => from_value::<usize>(v.clone()).err(),
            "temperature" | "top_p" => from_value::<f32>(v.clone()).err(),
            "seed" => from_value::<u64>(v.clone()).err(),
            _ => None,
        };
        err.map(|e| format!("{name} = {v}: {e}"))
    })
}

/// `fillMask`: the top-`k` fillers for every [MASK] in `text`, as JSON.
pub fn fill_mask(run: &Run, text: &str, k: usize) -> Result<String> {
    Ok(to_json(&generate::fill_mask(&run.model, &Cpu, run.data.tokenizer(), text, k)?))
}

/// `decode`: the encoder-decoder's output for `input`, `{"output", "answer"}` (answer: the task's right output,
/// when the input is valid for it). `options` as for generate; max_tokens 0 means the task's output length.
pub fn decode(run: &Run, input: &str, options: &str) -> Result<String> {
    let mut o = sample_options(options)?;
    let answer = match &run.data {
        Dataset::Task { task, .. } => data::task_answer(*task, input),
        Dataset::Text { .. } | Dataset::Denoise { .. } => None,
    };
    if o.max_tokens == 0 {
        o.max_tokens = answer.as_ref().map_or(input.chars().count(), |a| a.chars().count());
    }
    let out = generate::decode(&run.model, &Cpu, run.data.tokenizer(), input, &o)?;
    Ok(serde_json::json!({ "output": out, "answer": answer }).to_string())
}

/// `generate` with `n`/`blockSize` (and the encoder-decoder's `decode` with `n`): N continuations of `prompt` (gpt),
/// or N decodings of it (encoder-decoder: max_tokens 0 means the input's length), decoded together over the paged
/// KV cache, from a copy of the weights as they are now (training may go on while it runs). Step it with
/// `Continuations::step`; `generation_view` gives the cache's figures and block table.
pub fn start_generation(run: &Run, prompt: &str, options: &str, n: usize, block_size: usize) -> Result<generate::Continuations<'static>> {
    let mut o = sample_options(options)?;
    let (model, tok) = (Cow::Owned(run.model.clone()), Cow::Owned(run.data.tokenizer().clone()));
    match run.cfg.model.arch {
        Arch::EncoderDecoder => {
            if o.max_tokens == 0 {
                o.max_tokens = prompt.chars().count();
            }
            generate::Continuations::start_decode(model, tok, &Cpu, prompt, &o, n, block_size)
        }
        _ => generate::Continuations::start(model, tok, &Cpu, prompt, &o, n, block_size),
    }
}

/// The cache of a generation for the page's view: `{"now", "peak"}` (`KvStats`: block_size, blocks_used,
/// bytes_used, bytes_contiguous, bytes_per_position), `"table"` (`KvTable`: block_size, seqs [[index, blocks,
/// positions]], refs per block, 0 = free), and `"bytes_per_position_mha"`: what one position would take with as many
/// KV heads as query heads (GQA/MQA's saving is the ratio).
pub fn generation_view(run_heads: (usize, usize), c: &generate::Continuations) -> String {
    let now = c.stats();
    let (nh, nkv) = run_heads;
    serde_json::json!({ "now": now, "peak": c.peak(), "table": c.table(), "done": c.done(),
        "bytes_per_position_mha": now.bytes_per_position / nkv * nh })
    .to_string()
}

/// `attention`: attention maps for `text` (and, for the encoder-decoder, the decoder `target`), as JSON.
pub fn attention(run: &Run, text: &str, target: Option<&str>) -> Result<String> {
    let maps = probe::attention_maps(&run.model, &Cpu, run.data.tokenizer(), run.cfg.data.task, text, target)?;
    Ok(to_json(&maps))
}

/// `evalAt`: the validation loss on sequences of `t` tokens (`Run::eval_at`: refused past ctx_len for learned
/// positions, naming model.position), on the host model: `{"t", "val"}`, val null when not finite. `mlm` (bert
/// only): show the chosen positions by this rule instead of the config's (`Run::eval_with`; {mask: 0, random: 0}:
/// no [MASK] in the input), each share in [0, 1] and their sum at most 1, or refused naming `mlm.mask` /
/// `mlm.random`.
pub fn eval_at(run: &Run, t: usize, mlm: Option<data::Mlm>) -> Result<String> {
    if let Some(m) = mlm {
        let names = ["mlm.mask", "mlm.random"];
        m.check(names).map_err(|(i, v, rule)| Error::Invalid(format!("{} = {v}: {rule}", names[i])))?;
    }
    let val = run.eval_with(data::Split::Val, t, mlm)?;
    Ok(serde_json::json!({ "t": t, "val": if val.is_finite() { Some(val) } else { None } }).to_string())
}

/// `trace`: the run's next step in slow motion (`trace::StepTrace`), as JSON; the run is not advanced.
pub fn trace(run: &Run) -> Result<String> {
    Ok(to_json(&run.trace()?))
}

/// `attentionFlops`: forward FLOPs per token of the config's attention and FFN as the context grows (T = 16, 32,
/// …, 65536): `{"rows": [{"t", "attention", "ffn"}, …], "crossover_t", "ctx_len"}` (`attention_cost::
/// attention_vs_ffn`); crossover_t: the shortest T at which attention's pass the FFN's.
pub fn attention_flops(config: &str) -> Result<String> {
    let cfg = Config::from_json(config)?;
    let ts: Vec<usize> = (4..=16).map(|k| 1 << k).collect();
    let (rows, crossover) = crate::attention_cost::attention_vs_ffn(&cfg.model, &ts);
    Ok(serde_json::json!({ "rows": rows, "crossover_t": crossover, "ctx_len": cfg.model.ctx_len }).to_string())
}

/// `attentionCost`'s spec (`attention_cost::CostSpec` as JSON, each field optional), validated; a bad value is an
/// "invalid" error naming it.
pub fn attention_cost_spec(spec: &str) -> Result<crate::attention_cost::CostSpec> {
    let spec: crate::attention_cost::CostSpec = serde_json::from_str(spec).map_err(|e| Error::Invalid(format!("attention cost spec: {e}")))?;
    spec.validate()?;
    Ok(spec)
}

/// A JSON object's entries in order, repeated keys included (serde_json's `Map` keeps only the last).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// `positionTerms`: the position–position term of the first layer's scores, raw (p_tᵀ p_s) and through each head's
/// projections (`position_terms::PositionTerms`), as JSON; refused for positions not added to the input.
pub fn position_terms(run: &Run) -> Result<String> {
    Ok(to_json(&crate::position_terms::position_terms(&run.model)?))
}

/// `createRecipe`'s options as the Worker sends them (pkg/worker.js): the recipe file's JSON, the corpus, the task,
/// the knobs, the seed, the backend, and the lengths of the checkpoints packed one after another in the request's bytes: first
/// `checkpoint` (finetune, rlhf), then `from.checkpoints` in their order.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecipeRequest {
    recipe: Option<String>,
    corpus: Option<String>,
    task: Option<String>,
    #[serde(default)]
    knobs: std::collections::BTreeMap<String, f64>,
    seed: Option<u64>,
    checkpoint: Option<usize>,
    from: Option<FromRequest>,
    /// "cpu" (the default) or "gpu": zeroshot's and icl's pretraining stages on WebGPU.
    backend: Option<crate::backend::BackendKind>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FromRequest {
    stage: String,
    checkpoints: Vec<(String, usize)>,
}

/// `createRecipe`: a recipe of `kind` (`recipes::engine::Driver`) from the options JSON and the packed checkpoint
/// bytes (see `RecipeRequest`). Bad options are refused naming them.
pub fn new_recipe(kind: &str, options: &str, bytes: &[u8]) -> Result<crate::recipes::engine::Driver> {
    use crate::recipes::engine::{Driver, Kind, Options};
    let kind = Kind::parse(kind)?;
    let r: RecipeRequest = if options.trim().is_empty() {
        RecipeRequest::default()
    } else {
        serde_json::from_str(options).map_err(|e| Error::Invalid(format!("recipe options: {e}")))?
    };
    let mut rest = bytes;
    let mut take = |n: usize, what: &str| -> Result<Vec<u8>> {
        if n > rest.len() {
            return Err(Error::Invalid(format!("{what}: {n} bytes announced, {} left", rest.len())));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a.to_vec())
    };
    let checkpoint = r.checkpoint.map(|n| take(n, "checkpoint")).transpose()?;
    let from = match r.from {
        Some(f) => {
            let mut cks = std::collections::BTreeMap::new();
            for (name, n) in f.checkpoints {
                let b = take(n, &format!("from.checkpoints.{name}"))?;
                cks.insert(name, b);
            }
            Some((f.stage, cks))
        }
        None => None,
    };
    let o = Options { recipe: r.recipe, checkpoint, corpus: r.corpus, task: r.task, knobs: r.knobs, seed: r.seed, from, backend: r.backend };
    Driver::new(kind, &o)
}

/// `recipeInfo`: a kind's stages, knobs (with defaults) and shipped recipe, as JSON.
pub fn recipe_info(kind: &str) -> Result<String> {
    let kind = crate::recipes::engine::Kind::parse(kind)?;
    Ok(to_json(&crate::recipes::engine::info(kind)?))
}

/// The recipe's position and description: `{"kind", "stages", "knobs", "recipe", "stage", "step", "done",
/// "backend"}`.
pub fn recipe_state(d: &crate::recipes::engine::Driver) -> String {
    let mut v = serde_json::to_value(&d.info).expect("plain data serialises");
    v["stage"] = d.stage().into();
    v["step"] = d.step.into();
    v["done"] = d.done().into();
    v["backend"] = serde_json::to_value(d.backend()).unwrap_or_default();
    v.to_string()
}
