//! The engine Worker's protocol messages (pkg/protocol.js), as the Rust side decodes them: a session of requests
//! `{"op", ...arguments}` is handled as pkg/worker.js handles it — the same argument checks (`checkString`,
//! `checkInt`, `checkOptions`, `checkBytes`), then the same calls into the core (`facade`, which src/wasm.rs's
//! exports call) — with the runs it creates kept by `runId` for the later requests.
//!
//! Input: a JSON array of requests (or one request). Contract: every request gets a result or an error of a
//! kind the protocol documents for it; nothing panics; a run's `save` loads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::HashMap;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::config::Config;
use transformer_playground::data::Split;
use transformer_playground::generate::{self, SampleOptions};
use transformer_playground::train::Run;
use transformer_playground::{checkpoint, facade, Error, Result};
use transformer_playground_fuzz::{check_error, small_enough, MAX_FUZZ_GENERATE};

/// Requests handled in one input at most.
const MAX_REQUESTS: usize = 16;
/// `evaluate` runs eval_iters batches of each split: the harness evaluates runs with at most this many.
const MAX_FUZZ_EVAL_ITERS: usize = 4;
/// pkg/protocol.js's VOCAB_MAX and U32_MAX.
const VOCAB_MAX: u64 = 1 << 24;
const U32_MAX: u64 = u32::MAX as u64;

/// An 'invalid' refusal by the Worker's own argument checks (pkg/protocol.js).
fn invalid(name: &str, expected: &str) -> Error {
    Error::Invalid(format!("{name}: must be {expected}"))
}

fn check_string<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name).and_then(Value::as_str).ok_or_else(|| invalid(name, "a string"))
}

fn check_optional_string<'a>(v: &'a Value, name: &str) -> Result<Option<&'a str>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(name, "a string, if given")),
    }
}

fn check_int(v: &Value, name: &str, min: u64, max: u64, default: Option<u64>) -> Result<usize> {
    let x = match (v.get(name), default) {
        (None, Some(d)) => Some(d),
        (x, _) => x.and_then(Value::as_u64),
    };
    match x {
        Some(x) if (min..=max).contains(&x) => Ok(x as usize),
        _ => Err(invalid(name, &format!("an integer from {min} to {max}"))),
    }
}

/// `checkOptions`, then `JSON.stringify` as the Worker does before handing options to the core.
fn check_options(v: &Value, name: &str) -> Result<String> {
    match v.get(name) {
        None => Ok("{}".into()),
        Some(o @ Value::Object(_)) => Ok(o.to_string()),
        Some(_) => Err(invalid(name, "an object")),
    }
}

/// Bytes: an array of numbers 0..=255 stands for a Uint8Array.
fn check_bytes(v: &Value, name: &str) -> Result<Vec<u8>> {
    let bad = || invalid(name, "a Uint8Array or an ArrayBuffer");
    let a = v.get(name).and_then(Value::as_array).ok_or_else(bad)?;
    a.iter().map(|x| x.as_u64().filter(|&b| b < 256).map(|b| b as u8).ok_or_else(bad)).collect()
}

/// `attentionCost` as pkg/worker.js checks and runs it: the spec and t through the core's checks; with `check`
/// nothing more; otherwise one CPU row, run by the harness only where it is small (T ≤ 64, B·NH·HS ≤ 512).
fn attention_cost(req: &Value) -> Result<Option<String>> {
    let spec = check_options(req, "spec")?;
    let t = check_int(req, "t", 0, U32_MAX, None)?;
    match req.get("backend").and_then(Value::as_str) {
        Some("cpu") | Some("webgpu") => {}
        _ => return Err(invalid("backend", "'cpu' or 'webgpu'")),
    }
    let spec = facade::attention_cost_spec(&spec)?;
    spec.shape(t)?;
    let check = req.get("check").is_some_and(|c| c.as_bool() == Some(true));
    if check || req.get("backend").and_then(Value::as_str) == Some("webgpu") || t > 64 || spec.batch * spec.heads * spec.head_size > 512 {
        return Ok(None);
    }
    let clock = std::time::Instant::now();
    let now = move || clock.elapsed().as_secs_f64() * 1e3;
    let row = transformer_playground::attention_cost::cpu_row(&spec, t, &now)?;
    Ok(Some(serde_json::to_string(&row).expect("serialises")))
}

struct Session {
    runs: HashMap<String, Run>,
}

impl Session {
    fn run(&self, req: &Value) -> Result<&Run> {
        let id = req.get("runId").map(Value::to_string).unwrap_or_default();
        self.runs.get(&id).ok_or_else(|| Error::Invalid(format!("no run with id {id} (disposed?)")))
    }

    fn run_mut(&mut self, req: &Value) -> Result<&mut Run> {
        let id = req.get("runId").map(Value::to_string).unwrap_or_default();
        self.runs.get_mut(&id).ok_or_else(|| Error::Invalid(format!("no run with id {id} (disposed?)")))
    }

    fn keep(&mut self, req: &Value, run: Run) {
        self.runs.insert(req.get("runId").map(Value::to_string).unwrap_or_default(), run);
    }

    /// One request; the kinds of error it may give. `Ok(None)`: the harness skipped it as too costly.
    fn handle(&mut self, req: &Value) -> (Result<Option<String>>, &'static [&'static str]) {
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        match op {
            "validate" => (check_string(req, "config").and_then(facade::validate_config).map(Some), &["invalid", "config"]),
            "shapeFlow" => {
                let r = check_string(req, "config")
                    .and_then(|c| Ok((c, check_int(req, "vocab", 1, VOCAB_MAX, None)?)))
                    .and_then(|(c, vocab)| facade::shape_flow(c, vocab));
                (r.map(Some), &["invalid", "config"])
            }
            "checkText" => (check_bytes(req, "bytes").and_then(|b| facade::check_text(&b)).map(Some), &["invalid", "data"]),
            "create" => (self.create(req), &["invalid", "config", "data"]),
            "load" => (self.load(req), &["invalid", "checkpoint", "data"]),
            "step" => (self.run_mut(req).and_then(|r| r.step()).map(|r| Some(format!("{}", r.step))), &["invalid", "diverged"]),
            "evaluate" => {
                let r = self.run(req).and_then(|run| {
                    if run.cfg.train.eval_iters > MAX_FUZZ_EVAL_ITERS {
                        return Ok(None);
                    }
                    Ok(Some(format!("{:?}", (run.eval(Split::Train)?, run.eval(Split::Val)?))))
                });
                (r, &["invalid"])
            }
            "evalAt" => {
                let r = self.run(req).and_then(|run| {
                    let t = check_int(req, "t", 0, U32_MAX, None)?;
                    // As costly as evaluate at up to 4× ctx_len; longer ones are skipped (the core's checks still
                    // run on the others, learned positions past ctx_len and tasks included).
                    if run.cfg.train.eval_iters > MAX_FUZZ_EVAL_ITERS || t > 4 * run.cfg.model.ctx_len {
                        return Ok(None);
                    }
                    // As the worker sends it: {mlm: {mask, random}} or no mlm (numbers the worker checked).
                    let mlm = match req.get("mlm") {
                        None => None,
                        Some(m) => match (m.get("mask").and_then(|x| x.as_f64()), m.get("random").and_then(|x| x.as_f64())) {
                            (Some(mask), Some(random)) => Some(transformer_playground::data::Mlm { mask, random }),
                            _ => return Err(Error::Invalid("mlm: {mask, random} numbers".into())),
                        },
                    };
                    facade::eval_at(run, t, mlm).map(Some)
                });
                (r, &["invalid", "config"])
            }
            "generate" => (self.generate(req), &["invalid"]),
            "fillMask" => {
                let r = self.run(req).and_then(|run| {
                    let (text, k) = (check_string(req, "text")?, check_int(req, "k", 1, U32_MAX, Some(5))?);
                    facade::fill_mask(run, text, k).map(Some)
                });
                (r, &["invalid"])
            }
            "decode" => {
                let r = self.run(req).and_then(|run| {
                    let (input, options) = (check_string(req, "input")?, check_options(req, "options")?);
                    facade::decode(run, input, &options).map(Some)
                });
                (r, &["invalid"])
            }
            "attention" => {
                let r = self.run(req).and_then(|run| {
                    let (text, target) = (check_string(req, "text")?, check_optional_string(req, "target")?);
                    facade::attention(run, text, target).map(Some)
                });
                (r, &["invalid"])
            }
            "trace" => (self.run(req).and_then(facade::trace).map(Some), &["invalid"]),
            "positionTerms" => (self.run(req).and_then(facade::position_terms).map(Some), &["invalid", "config"]),
            "attentionFlops" => (check_string(req, "config").and_then(facade::attention_flops).map(Some), &["invalid", "config"]),
            "attentionCost" => (attention_cost(req), &["invalid"]),
            "save" => {
                let r = self.run(req).and_then(|r| {
                    let bytes = checkpoint::save(&r.cfg, r.data.tokenizer(), r.step, &r.model, Some(&r.opt))?;
                    let back = checkpoint::load(&bytes).expect("a run's own checkpoint loads");
                    assert_eq!((back.step, &back.config), (r.step, &r.cfg));
                    Ok(Some(bytes.len().to_string()))
                });
                (r, &["invalid"])
            }
            "dispose" => {
                let id = req.get("runId").map(Value::to_string).unwrap_or_default();
                (self.runs.remove(&id).map(|_| Some("true".into())).ok_or_else(|| invalid("runId", "a run")), &["invalid"])
            }
            "recipeInfo" => (check_string(req, "kind").and_then(facade::recipe_info).map(Some), &["invalid", "config"]),
            // A recipe is made (its options checked, its data built), not stepped: a unit trains a real model.
            "createRecipe" => {
                let r = check_string(req, "kind").and_then(|kind| {
                    let (options, bytes) = (check_string(req, "options")?, check_bytes(req, "bytes")?);
                    facade::new_recipe(kind, options, &bytes).map(|d| Some(facade::recipe_state(&d)))
                });
                (r, &["invalid", "config", "data", "checkpoint"])
            }
            other => (Err(Error::Invalid(format!("unknown request '{other}'"))), &["invalid"]),
        }
    }

    fn create(&mut self, req: &Value) -> Result<Option<String>> {
        let config = check_string(req, "config")?;
        let corpus = check_optional_string(req, "corpus")?;
        // The harness builds only small models (the vocabulary is at most the corpus's distinct characters and a
        // special); the config's own checks run in full either way.
        if let Ok(cfg) = Config::from_json(config) {
            let distinct = corpus.map_or(12, |c| c.chars().collect::<std::collections::BTreeSet<_>>().len() + 1);
            if !small_enough(&cfg, distinct.max(12)) {
                return facade::validate_config(config).map(|_| None);
            }
        }
        let run = facade::new_run(config, corpus)?;
        let shapes = serde_json::to_string(&transformer_playground::probe::shape_flow(
            &run.cfg.model,
            run.data.tokenizer().vocab_size(),
            run.cfg.train.batch_size,
            run.cfg.model.ctx_len,
        ))
        .expect("serialises");
        self.keep(req, run);
        Ok(Some(shapes))
    }

    fn load(&mut self, req: &Value) -> Result<Option<String>> {
        let bytes = check_bytes(req, "bytes")?;
        let corpus = check_optional_string(req, "corpus")?;
        let run = facade::run_from_checkpoint(&bytes, corpus)?;
        if !small_enough(&run.cfg, run.data.tokenizer().vocab_size()) {
            return Ok(None);
        }
        let step = run.step;
        self.keep(req, run);
        Ok(Some(step.to_string()))
    }

    /// `generate`: `kvCache: "contiguous"` runs the single-sequence path; otherwise N continuations over the paged
    /// cache (`n`, `blockSize` checked as u32s by the Worker, their ranges by the core), stepped to the end with the
    /// cache's view read after every step — or dropped halfway (a cancel) when the input's `cancel` is true.
    fn generate(&self, req: &Value) -> Result<Option<String>> {
        let run = self.run(req)?;
        let prompt = check_string(req, "prompt")?;
        let options = check_options(req, "options")?;
        if req.get("kvCache").and_then(Value::as_str) == Some("contiguous") {
            let o = facade::sample_options(&options)?;
            let o = SampleOptions { max_tokens: o.max_tokens.min(MAX_FUZZ_GENERATE), ..o };
            return generate::generate(&run.model, &Cpu, run.data.tokenizer(), prompt, &o, |_| {}).map(Some);
        }
        let (n, block_size) = (check_int(req, "n", 0, U32_MAX, None)?, check_int(req, "blockSize", 0, U32_MAX, None)?);
        let mut o = facade::sample_options(&options)?;
        o.max_tokens = o.max_tokens.min(MAX_FUZZ_GENERATE);
        let options = serde_json::to_string(&o).expect("options serialise");
        let mut c = facade::start_generation(run, prompt, &options, n, block_size)?;
        let heads = (run.cfg.model.n_heads, run.cfg.model.n_kv_heads);
        let cancel = req.get("cancel").and_then(Value::as_bool) == Some(true);
        let mut steps = 0;
        while !c.done() {
            let pieces = c.step(&Cpu)?;
            assert!(!pieces.is_empty() && pieces.len() <= n, "a step samples one token per live continuation");
            let _: Value = serde_json::from_str(&facade::generation_view(heads, &c)).expect("the view is JSON");
            let now = c.stats();
            // Each live continuation holds at most ctx_len positions, in blocks: at most block_size − 1 more.
            assert!(now.bytes_used <= now.bytes_contiguous + now.bytes_per_position * block_size * n, "{now:?}");
            steps += 1;
            if cancel && steps == 2 {
                return Ok(None);
            }
        }
        assert_eq!(c.stats().blocks_used, 0, "finished continuations free every block");
        Ok(Some(c.texts().concat()))
    }
}

fuzz_target!(|data: &[u8]| {
    let requests = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Array(a)) => a,
        Ok(one) => vec![one],
        Err(_) => return,
    };
    let mut session = Session { runs: HashMap::new() };
    for req in requests.iter().take(MAX_REQUESTS) {
        let (result, kinds) = session.handle(req);
        if let Err(e) = result {
            check_error(&e, kinds, req);
        }
    }
});
