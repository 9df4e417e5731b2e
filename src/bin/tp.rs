//! The native command line: train, finetune, zeroshot, icl, rlhf, sample, fill-mask, decode, logits, trace, bench, attention-cost.
//! Results go to stdout as JSON lines; errors go to stderr with a non-zero exit.
//!
//! Native only. Cargo also builds every binary for a crate's integration tests, so on wasm32 (the browser tests,
//! `scripts/test-wasm-kernels.sh`) this crate compiles to nothing.
#![cfg_attr(target_arch = "wasm32", no_main)]
#![cfg(not(target_arch = "wasm32"))]

use clap::{Parser, Subcommand};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Instant;
use transformer_playground::attention_cost::{self, CostSpec};
use transformer_playground::backend::{cpu::Cpu, BackendKind, Host};
use transformer_playground::checkpoint::{self, Checkpoint};
use transformer_playground::data::{Dataset, Split};
use transformer_playground::generate::{self, Continuations, SampleOptions};
use transformer_playground::model::Batch;
use transformer_playground::recipes::engine::{self, Driver, Event, Kind, Options};
use transformer_playground::train::Run;
use transformer_playground::{Config, Error, Result};

/// A line on stderr, like `eprintln!` but never a panic: with stderr closed (`2>&-`) the message is lost, not the
/// run (a training run still writes its `--out`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(name = "tp", about = "transformer-playground: train and use small Transformers natively")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// The memory a training step may plan to hold, in GiB (default: TP_MEMORY_BUDGET_GIB, else half of the
    /// machine's memory); a config over it is refused before anything is allocated.
    #[arg(long, global = true, value_name = "GIB", allow_negative_numbers = true)]
    memory_budget: Option<f64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model; one JSON object per logged step on stdout.
    Train {
        #[arg(long)]
        config: String,
        /// Training text (gpt, bert). Not needed for the encoder-decoder's synthetic tasks.
        #[arg(long)]
        data: Option<String>,
        /// Override train.steps.
        #[arg(long)]
        steps: Option<usize>,
        /// cpu, reference, or gpu (build with --features gpu; natively wgpu over Vulkan, Mesa's lavapipe without a GPU).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Write a checkpoint here at the end (and at divergence: the last good state).
        #[arg(long)]
        out: Option<String>,
        /// Log every N steps (evaluation steps are always logged).
        #[arg(long, default_value_t = 10)]
        log_every: usize,
        /// Print a generated sample (gpt), fill-mask (bert) or decoding (encoder-decoder) at the end.
        #[arg(long, default_value_t = 200)]
        sample_tokens: usize,
    },
    /// Fine-tune a gpt with a classifier head on a Tiny Shakespeare task, L = L_task + λ·L_LM (GPT-1; docs/RECIPES.md);
    /// one JSON object per logged step on stdout, with "stage": "finetune".
    Finetune {
        /// A gpt checkpoint to start from (pretrained, or fine-tuned: then it continues). Or --config.
        #[arg(long, conflicts_with = "config")]
        checkpoint: Option<String>,
        /// Train from scratch: a gpt config (e.g. configs/recipes/finetune-speaker.json).
        #[arg(long)]
        config: Option<String>,
        /// speaker or verse_prose (default: the config's or checkpoint's finetune.task).
        #[arg(long)]
        task: Option<String>,
        /// λ, the weight of the auxiliary LM loss (0 disables it).
        #[arg(long, allow_negative_numbers = true)]
        aux_lm: Option<f32>,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long, allow_negative_numbers = true)]
        lr: Option<f32>,
        #[arg(long)]
        batch: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// Evaluate (accuracy, val_accuracy, baseline) every K steps and at the end.
        #[arg(long, default_value_t = 50)]
        eval_every: usize,
        /// The corpus the task's examples come from (default: the Tiny Shakespeare built into tp).
        #[arg(long)]
        data: Option<String>,
        /// cpu or reference.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Write the fine-tuned checkpoint (with the head and AdamW's state) here at the end.
        #[arg(long)]
        out: Option<String>,
    },
    /// Mini-RLHF (InstructGPT): SFT on demonstrations, a reward model from ranked pairs, PPO with a KL penalty and
    /// a pretraining mix (docs/RECIPES.md §4); one JSON object a step and an evaluation on stdout, with "stage".
    Rlhf {
        /// The recipe (e.g. configs/recipes/rlhf.json).
        #[arg(long)]
        config: String,
        /// sft, rm, ppo or all. rm starts from DIR/sft.safetensors (or --checkpoint), ppo from DIR/sft.safetensors
        /// (or --checkpoint) and DIR/rm.safetensors.
        #[arg(long, default_value = "all")]
        stage: String,
        /// The gpt checkpoint the first stage run starts from (sft, all: the pretrained model, default the config's
        /// "checkpoint"; rm, ppo: the SFT model).
        #[arg(long)]
        checkpoint: Option<String>,
        /// The folder each stage saves its checkpoint in (sft.safetensors, rm.safetensors, ppo.safetensors).
        #[arg(long, default_value = "target/recipes/rlhf")]
        out: String,
        /// Overrides the config's ppo.beta (the KL penalty's weight).
        #[arg(long, allow_negative_numbers = true)]
        beta: Option<f32>,
        /// Overrides the config's ppo.gamma_ptx (the pretraining mix's weight).
        #[arg(long, allow_negative_numbers = true)]
        gamma_ptx: Option<f32>,
        /// Overrides the config's ppo.steps.
        #[arg(long)]
        ppo_steps: Option<usize>,
        /// Overrides the config's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Evaluate on the held-out prompts every K steps of a stage, and at its start and end.
        #[arg(long, default_value_t = 10)]
        eval_every: usize,
        /// The corpus (default: the Tiny Shakespeare built into tp).
        #[arg(long)]
        data: Option<String>,
        /// cpu or reference.
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Continue a prompt with a trained gpt.
    Sample {
        #[arg(long)]
        checkpoint: String,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Continuations of the prompt, decoded together (1..=64); over 1, one JSON object with every sample and
        /// the cache's figures. Continuation i samples with seed + i.
        #[arg(long, default_value_t = 1)]
        n: usize,
        /// Positions per block of the paged KV cache.
        #[arg(long, default_value_t = transformer_playground::model::paged::DEFAULT_BLOCK_SIZE)]
        block_size: usize,
        /// `paged` (blocks shared between continuations, one batched step for all) or `contiguous` (one cache per
        /// continuation, decoded one after the other: the reference path).
        #[arg(long, default_value = "paged")]
        kv_cache: String,
    },
    /// Top-k fillers for every [MASK] in the text (bert).
    FillMask {
        #[arg(long)]
        checkpoint: String,
        #[arg(long)]
        text: String,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Decode an input with an encoder-decoder (greedy unless --temperature > 0; span corruption: greedy, writing
    /// sentinels).
    Decode {
        #[arg(long)]
        checkpoint: String,
        #[arg(long)]
        input: String,
        #[arg(long)]
        tokens: Option<usize>,
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Decodings of the input, decoded together over the paged KV cache (1..=64; decoding i samples with seed
        /// + i); over 1, one JSON object `{"samples", "kv"}` as `sample --n` prints.
        #[arg(long, default_value_t = 1)]
        n: usize,
        #[arg(long, default_value_t = transformer_playground::model::paged::DEFAULT_BLOCK_SIZE)]
        block_size: usize,
    },
    /// The logits at every position of a text, as JSON (for outside cross-checks).
    Logits {
        #[arg(long)]
        checkpoint: String,
        #[arg(long)]
        text: String,
        /// Encoder input for an encoder-decoder (then --text is the decoder input).
        #[arg(long)]
        source: Option<String>,
    },
    /// In-context learning (GPT-3): train a gpt on a generated meta-learning corpus, then measure its accuracy on
    /// held-out rules against the number of in-context examples and its heads' induction scores; JSON lines with
    /// `"stage": "pretrain"`, then `"stage": "eval"`.
    Icl {
        /// A recipe: a gpt config with an `icl` section (configs/recipes/icl.json).
        #[arg(long)]
        config: String,
        /// Override train.steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Override the seed (the corpus, the model, the batches and the evaluation's episodes).
        #[arg(long)]
        seed: Option<u64>,
        /// cpu, reference, or gpu for the training (the evaluation runs on the cpu).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Write the trained model here.
        #[arg(long)]
        out: Option<String>,
        /// Evaluate this trained model instead of training one.
        #[arg(long)]
        checkpoint: Option<String>,
        /// Log every N steps (evaluation steps are always logged).
        #[arg(long, default_value_t = 50)]
        log_every: usize,
    },
    /// Zero-shot task transfer (GPT-2): train two gpts the same way, one on Tiny Shakespeare with templated
    /// `Q: … A: …` lines inserted by a documented rule and one baseline on the plain corpus, then ask both
    /// held-out questions from a prompt alone; JSON lines with `"stage": "pretrain"` (each with `"model"`), then
    /// `"stage": "eval"`.
    Zeroshot {
        /// A recipe: a gpt config with a `zeroshot` section (configs/recipes/zeroshot.json).
        #[arg(long)]
        config: String,
        /// Override train.steps (both models).
        #[arg(long)]
        steps: Option<usize>,
        /// Override the seed (the templated lines' words, both models' initialisation and batches).
        #[arg(long)]
        seed: Option<u64>,
        /// cpu, reference, or gpu for the training (the evaluation runs on the cpu).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Write the two trained models into this folder (created if missing): pattern.ckpt and baseline.ckpt.
        #[arg(long)]
        out: Option<String>,
        /// Evaluate the two models in this folder (as --out writes them) instead of training.
        #[arg(long)]
        checkpoints: Option<String>,
        /// Log every N steps (evaluation steps are always logged).
        #[arg(long, default_value_t = 50)]
        log_every: usize,
    },
    /// Time the training step of a config: median ms/iter and tokens/s.
    Bench {
        #[arg(long)]
        config: String,
        #[arg(long)]
        data: Option<String>,
        #[arg(long, default_value = "cpu")]
        backend: String,
        #[arg(long, default_value_t = 50)]
        steps: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
    },
    /// One training step in slow motion: every tensor the run's next step makes — the forward pass stage by stage,
    /// the loss, each parameter's gradient, AdamW's update — summarised (first values, mean, spread, norm, a small
    /// heatmap), as one JSON object. The run is not advanced by it.
    Trace {
        #[arg(long)]
        config: String,
        /// Training text (gpt, bert).
        #[arg(long)]
        data: Option<String>,
        /// Train this many steps first (on the cpu).
        #[arg(long, default_value_t = 0)]
        steps: usize,
    },
    /// Attention's cost: naive (T×T matrices materialised) against fused (FlashAttention) forward + backward for
    /// each T — median ms and the bytes each holds beyond its inputs; one JSON row per T.
    AttentionCost {
        /// cpu, or gpu (build with --features gpu; natively wgpu over Vulkan, Mesa's lavapipe without a GPU).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Sequence lengths, comma-separated (default 64,128,256,512,1024,2048,4096).
        #[arg(long, value_name = "T,...")]
        t: Option<String>,
        /// Query heads NH.
        #[arg(long, default_value_t = 4)]
        heads: usize,
        /// Key/value heads NKV (default: NH, i.e. MHA); must divide NH.
        #[arg(long)]
        kv_heads: Option<usize>,
        /// Head size HS.
        #[arg(long, default_value_t = 64)]
        head_size: usize,
        /// Batch B.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Bidirectional attention (default: causal).
        #[arg(long)]
        bidirectional: bool,
        /// The naive path runs only where its extra memory stays within this many MiB.
        #[arg(long, default_value_t = 512)]
        budget_mib: u64,
    },
}

fn read_text(path: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    Ok(transformer_playground::data::check_text(&bytes)?.to_string())
}

/// A file's text (a config or recipe file); an error names the path.
fn read_file(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{path}: {e}")))
}

fn read_config(path: &str) -> Result<Config> {
    let text = read_file(path)?;
    Config::from_json(&text)
}

fn read_checkpoint(path: &str) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    checkpoint::load(&bytes)
}

/// Results on stdout. A reader that goes away (`tp … | head -c 1`) is no error: printing stops quietly and the
/// command goes on with what it must still do (train still writes --out). Any other write error stops printing too
/// and is reported at the end (`finish`), after that work.
struct Out {
    /// No more printing: the reader is gone, or writing failed.
    closed: bool,
    /// The first write error that was not a closed pipe.
    error: Option<std::io::Error>,
}

impl Out {
    fn new() -> Out {
        Out { closed: false, error: None }
    }

    /// Writes and flushes `s`; false once stdout takes no more.
    fn print(&mut self, s: &str) -> bool {
        use std::io::Write;
        if self.closed {
            return false;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
            self.closed = true;
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                self.error = Some(e);
            }
        }
        !self.closed
    }

    fn line(&mut self, s: impl std::fmt::Display) -> bool {
        self.print(&format!("{s}\n"))
    }

    fn finish(self) -> Result<()> {
        self.error.map_or(Ok(()), |e| Err(Error::Io(format!("stdout: {e}"))))
    }
}

/// An error of the core naming a field (`n = …`) named as the command line's flag (`--n = …`).
fn flag(e: Error, field: &str, option: &str) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(m.replacen(field, option, 1)),
        e => e,
    }
}

/// Tokens of the prompt the model reads (the last ctx_len).
fn check_prompt_len(ck: &Checkpoint, prompt: &str, o: &SampleOptions) -> Result<usize> {
    Ok(generate::check_prompt(&ck.model, &ck.tokenizer, prompt, o)?.len().min(ck.model.cfg.ctx_len))
}

/// `sample --n` / `decode --n`: the texts and the paged cache at its fullest.
fn paged_json(c: &Continuations) -> serde_json::Value {
    let p = c.peak();
    serde_json::json!({ "samples": c.texts(), "kv": { "kind": "paged", "block_size": p.block_size,
        "blocks_used": p.blocks_used, "bytes_used": p.bytes_used, "bytes_contiguous": p.bytes_contiguous } })
}

/// `o.validate()`, naming the command line's options; `tokens` is the option that sets max_tokens.
fn check_options(o: &SampleOptions, tokens: &str) -> Result<()> {
    match o.problem() {
        Some((field, value, rule)) => {
            let option = match field {
                "max_tokens" => tokens,
                "top_p" => "--top-p",
                "top_k" => "--top-k",
                "seed" => "--seed",
                _ => "--temperature",
            };
            Err(Error::Invalid(format!("{option} = {value}: {rule}")))
        }
        None => Ok(()),
    }
}

/// Refuses an --out whose folder does not exist, before any work is done that would be lost.
fn check_out(out: Option<&str>) -> Result<()> {
    let Some(path) = out else { return Ok(()) };
    let parent = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if !dir.is_dir() => Err(Error::Invalid(format!("--out = {path}: the folder {} does not exist", dir.display()))),
        _ => Ok(()),
    }
}

fn json_f32(x: f32) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

/// Writes a checkpoint of the run (a gpu run's state is read back first).
fn save(run: &mut Run, path: &str) -> Result<()> {
    sync(run);
    let bytes = checkpoint::save(&run.cfg, run.data.tokenizer(), run.step, &run.model, Some(&run.opt))?;
    std::fs::write(path, bytes).map_err(|e| Error::Io(format!("{path}: {e}")))
}

/// Reads a gpu run's state back to the host (generation and checkpoints use the host copy). If the device has
/// failed, the run is back on the cpu at its last read-back state; say so.
fn sync(run: &mut Run) {
    if let Err(e) = run.sync() {
        say!("notice: reading the model back from the gpu failed ({e}); using the last state read back");
    }
}

/// A short demonstration of what the trained model does, as JSON.
fn demo(run: &Run, tokens: usize) -> Result<serde_json::Value> {
    transformer_playground::with_host!(run.backend, |be| demo_on(be, run, tokens))
}

fn demo_on<H: Host>(be: &H, run: &Run, tokens: usize) -> Result<serde_json::Value> {
    let tok = run.data.tokenizer();
    Ok(match &run.data {
        Dataset::Text { mlm: None, val, .. } => {
            let prompt = tok.decode(&val[..val.len().min(32)]);
            let o = SampleOptions { max_tokens: tokens, temperature: 0.8, seed: run.cfg.seed, ..Default::default() };
            let text = generate::generate(&run.model, be, tok, &prompt, &o, |_| {})?;
            serde_json::json!({ "prompt": prompt, "sample": text })
        }
        Dataset::Text { mlm: Some(_), val, .. } => {
            let n = val.len().min(run.cfg.model.ctx_len).min(40);
            let mut ids = val[..n].to_vec();
            let truth: Vec<String> = [n / 3, 2 * n / 3].iter().map(|&i| tok.token(ids[i])).collect();
            for i in [n / 3, 2 * n / 3] {
                ids[i] = tok.special(transformer_playground::data::MASK).expect("bert has [MASK]");
            }
            let text = tok.decode(&ids);
            let fills = generate::fill_mask(&run.model, be, tok, &text, 5)?;
            serde_json::json!({ "text": text, "truth": truth, "fills": fills })
        }
        Dataset::Task { task, digits, .. } => {
            let mut rng = transformer_playground::rng::Rng::new(run.cfg.seed ^ 77);
            let (mut correct, n) = (0, 20);
            let mut examples = vec![];
            for _ in 0..n {
                let (src, want) = transformer_playground::data::task_example(*task, *digits, &mut rng);
                let o = SampleOptions { max_tokens: want.chars().count(), temperature: 0.0, ..Default::default() };
                let got = generate::decode(&run.model, be, tok, &src, &o)?;
                correct += (got == want) as usize;
                if examples.len() < 3 {
                    examples.push(serde_json::json!({ "input": src, "output": got, "answer": want }));
                }
            }
            serde_json::json!({ "exact_match": correct as f32 / n as f32, "examples": examples })
        }
        Dataset::Denoise { .. } => {
            // Val examples, the model's reconstruction beside the truth (characters right, in place).
            let mut rng = transformer_playground::rng::Rng::new(run.cfg.seed ^ 77);
            let mut examples = vec![];
            for _ in 0..3 {
                if let Some(r) = generate::reconstruct(&run.model, be, &run.data, Split::Val, &mut rng)? {
                    examples.push(serde_json::json!({
                        "input": r.source.concat(), "output": r.output.concat(), "reconstruction": r.reconstruction,
                        "truth": r.truth, "char_accuracy": r.char_accuracy,
                    }));
                }
            }
            serde_json::json!({ "examples": examples })
        }
    })
}

fn train(config: &str, data: Option<&str>, steps: Option<usize>, backend: &str, out: Option<&str>, log_every: usize, sample_tokens: usize) -> Result<()> {
    // Every option is checked before training, so no run ends in a refusal that loses its work.
    check_options(&SampleOptions { max_tokens: sample_tokens, ..Default::default() }, "--sample-tokens")?;
    check_out(out)?;
    let mut cfg = read_config(config)?;
    if let Some(s) = steps {
        cfg.train.steps = s;
        cfg.validate()?;
    }
    let text = data.map(read_text).transpose()?;
    let mut run = Run::new(cfg, text.as_deref(), BackendKind::parse(backend)?)?;
    let mut stdout = Out::new();
    train_loop(&mut run, out, log_every, &mut stdout)?;
    // The checkpoint first: nothing after training may lose it.
    if let Some(path) = out {
        save(&mut run, path)?;
        say!("saved {path}");
    }
    if sample_tokens > 0 && !stdout.closed {
        sync(&mut run);
        stdout.line(demo(&run, sample_tokens)?);
    }
    stdout.finish()
}

/// Trains `run` to `train.steps`: a JSON line every `log_every` steps and at each evaluation, then one with the
/// final validation loss. On divergence, saves the last good state to `out` (if given) and returns the error.
fn train_loop(run: &mut Run, out: Option<&str>, log_every: usize, stdout: &mut Out) -> Result<()> {
    say!("training on {}", run.backend_name());
    let total = run.cfg.train.steps;
    let t0 = Instant::now();
    let label = |mut line: serde_json::Value, timing: (&str, serde_json::Value)| {
        line[timing.0] = timing.1;
        line
    };
    // From one evaluation to the next, the steps go in one `Run::steps` call: on the gpu they are pipelined (the
    // next step is submitted before this one is read back), and every step's report still comes, in order.
    let ei = run.cfg.train.eval_interval.max(1);
    loop {
        let step = run.step;
        let eval = step.is_multiple_of(ei) || step >= total;
        let val_loss = eval.then(|| run.eval(Split::Val)).transpose()?;
        if step >= total {
            let line = serde_json::json!({ "step": step, "val_loss": val_loss.map(json_f32), "backend": run.backend_name() });
            stdout.line(label(line, ("elapsed_s", serde_json::json!(t0.elapsed().as_secs_f32()))));
            break;
        }
        let end = ((step / ei + 1) * ei).min(total);
        let mut t = Instant::now();
        let result = run.steps(end - step, |r| {
            if let Some(n) = &r.notice {
                say!("notice: {n}");
            }
            let ms = t.elapsed().as_secs_f64() * 1e3;
            t = Instant::now();
            if r.step % log_every == 0 || r.step % ei == 0 {
                let mut line = serde_json::json!({
                    "step": r.step, "loss": json_f32(r.loss), "val_loss": val_loss.filter(|_| r.step == step).map(json_f32), "lr": r.lr,
                    "grad_norm": json_f32(r.grad_norm),
                });
                if let Some(aux) = r.aux_loss {
                    line["aux_loss"] = json_f32(aux);
                    line["expert_load"] = serde_json::to_value(&r.expert_load).unwrap_or_default();
                }
                stdout.line(label(line, ("ms", serde_json::json!((ms * 100.0).round() / 100.0))));
            }
        });
        if let Err(e) = result {
            if let Some(path) = out {
                save(run, path)?;
                say!("saved the last good state (step {}) to {path}", run.step);
            }
            return Err(e);
        }
    }
    Ok(())
}

// The recipes (docs/RECIPES.md): each command builds a `recipes::engine::Driver` — the one copy of each recipe's
// order of work, the one the browser engine steps — from its flags and files, and prints the driver's events as
// JSON lines. What is the command line's own: reading and writing files, the flags' names in errors, and how lines
// read (`RecipeLines`).

/// How a recipe's events read as JSON lines. finetune's and a pretraining stage's evaluation go into the next
/// step's line (a pretraining line's `val_loss` is null between evaluations); rlhf's is a line of its own
/// (`"eval": true`). zeroshot's and icl's pretraining stages print `"stage": "pretrain"` (zeroshot's with
/// `"model"`), every `log_every`-th step and each evaluated one; finetune's and rlhf's stage results carry
/// `elapsed_s`, so a seeded pretraining prints the same lines every time.
struct RecipeLines {
    kind: Kind,
    log_every: usize,
    /// The evaluation made before the next step.
    pending: Option<serde_json::Value>,
    t0: Instant,
}

/// `line` with the fields of the object `report` added.
fn with_fields(mut line: serde_json::Value, report: &serde_json::Value) -> serde_json::Value {
    if let (Some(l), Some(r)) = (line.as_object_mut(), report.as_object()) {
        l.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    line
}

impl RecipeLines {
    fn new(kind: Kind, log_every: usize) -> RecipeLines {
        RecipeLines { kind, log_every: log_every.max(1), pending: None, t0: Instant::now() }
    }

    /// The line a driver's stage prints under: zeroshot's two models and icl's are `pretrain`.
    fn label(&self, stage: &str) -> serde_json::Value {
        match (self.kind, stage) {
            (Kind::Zeroshot | Kind::Icl, "eval") => serde_json::json!({ "stage": "eval" }),
            (Kind::Zeroshot, model) => serde_json::json!({ "stage": "pretrain", "model": model }),
            (Kind::Icl, _) => serde_json::json!({ "stage": "pretrain" }),
            _ => serde_json::json!({ "stage": stage }),
        }
    }

    /// The line of event `e`, if it prints one now.
    fn line(&mut self, e: &Event) -> Option<serde_json::Value> {
        let pretraining = matches!(self.kind, Kind::Zeroshot | Kind::Icl);
        match e {
            Event::Progress { stage, step, eval: true, report, .. } if self.kind == Kind::Rlhf => {
                let mut l = with_fields(self.label(stage), report);
                (l["step"], l["eval"]) = (serde_json::json!(step), serde_json::json!(true));
                Some(l)
            }
            Event::Progress { eval: true, report, .. } => {
                self.pending = Some(report.clone());
                None
            }
            Event::Progress { stage, report, .. } => {
                let eval = self.pending.take();
                let mut l = self.label(stage);
                if pretraining {
                    if eval.is_none() && report["step"].as_u64().unwrap_or(0) % self.log_every as u64 != 0 {
                        return None;
                    }
                    l["val_loss"] = eval.map_or(serde_json::Value::Null, |e| e["val_loss"].clone());
                } else if let Some(e) = &eval {
                    l = with_fields(l, e);
                }
                Some(with_fields(l, report))
            }
            Event::Stage { stage, step, report, .. } => {
                let mut l = with_fields(self.label(stage), report);
                if self.kind == Kind::Rlhf {
                    (l["step"], l["eval"]) = (serde_json::json!(step), serde_json::json!(true));
                }
                if !pretraining {
                    l["elapsed_s"] = serde_json::json!(self.t0.elapsed().as_secs_f32());
                }
                Some(l)
            }
        }
    }
}

/// Steps `d` to the end of stage `until` (None: of every stage), printing its events' lines; `on_stage` runs
/// when a stage ends (writing its checkpoint). Each stage's time goes to stderr.
fn drive(d: &mut Driver, lines: &mut RecipeLines, until: Option<&str>, stdout: &mut Out, mut on_stage: impl FnMut(&Driver, &str) -> Result<()>) -> Result<()> {
    let mut t = Instant::now();
    while !d.done() {
        for e in d.unit()? {
            if let Event::Progress { notice: Some(n), .. } = &e {
                say!("notice: {n}");
            }
            if let Some(l) = lines.line(&e) {
                stdout.line(l);
            }
            if let Event::Stage { stage, step, report, .. } = &e {
                let on = report["backend"].as_str().map(|b| format!(" on {b}")).unwrap_or_default();
                say!("{stage}: {step} steps in {:.1} s{on}", t.elapsed().as_secs_f32());
                t = Instant::now();
                on_stage(d, stage)?;
                if until == Some(*stage) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// A file's bytes; an error names the path.
fn read_bytes(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io(format!("{path}: {e}")))
}

fn write_bytes(path: &str, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::Io(format!("{path}: {e}")))
}

/// The driver's names for what it was given, in an error, as the command line's: a knob (`knobs.aux_lm`) as its
/// flag (`--aux-lm`), and each of `names` (`from.checkpoints.sft`, `recipe`) as the file or flag it came from.
fn recipe_flags(e: Error, names: &[(&str, String)]) -> Error {
    match e {
        Error::Config { field, value, rule } => match field.strip_prefix("knobs.") {
            Some(knob) => Error::Config { field: format!("--{}", knob.replace('_', "-")), value, rule },
            None => Error::Config { field, value, rule },
        },
        Error::Invalid(m) => {
            let named = names.iter().find(|(from, _)| m.starts_with(&format!("{from}:")));
            Error::Invalid(named.map_or(m.clone(), |(from, to)| m.replacen(from, to, 1)))
        }
        e => e,
    }
}

/// The knobs given on the command line (None: the recipe file's value).
fn knobs(given: &[(&str, Option<f64>)]) -> BTreeMap<String, f64> {
    given.iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect()
}

/// After an error in a pretraining stage, its last good state into `path` (a divergence keeps it), as `tp train`.
fn save_last_good(d: &mut Driver, path: Option<String>) {
    let Some(path) = path else { return };
    if let Err(e) = d.sync() {
        say!("notice: reading the model back from the gpu failed ({e}); using the last state read back");
    }
    match d.save(None).and_then(|b| write_bytes(&path, &b)) {
        Ok(()) => say!("saved the last good state (step {}) to {path}", d.step),
        Err(e) => say!("could not save the last good state: {e}"),
    }
}

/// `tp icl`: trains the recipe's model on its generated corpus (or reads `--checkpoint`), then evaluates it with
/// no weight update: one `"stage": "pretrain"` line per logged step, then one `"stage": "eval"` line.
fn icl(config: &str, steps: Option<usize>, seed: Option<u64>, backend: &str, out: Option<&str>, checkpoint: Option<&str>, log_every: usize) -> Result<()> {
    check_out(out)?;
    let recipe = read_file(config)?;
    let from = match checkpoint {
        Some(_) if steps.is_some() || out.is_some() => {
            return Err(Error::Invalid("--checkpoint evaluates a trained model: --steps and --out train one, leave them out".into()));
        }
        Some(path) => Some(("eval".to_string(), [("pretrain".to_string(), read_bytes(path)?)].into())),
        None => None,
    };
    let o = Options {
        recipe: Some(recipe), knobs: knobs(&[("steps", steps.map(|s| s as f64))]), seed, from,
        backend: Some(BackendKind::parse(backend)?), ..Options::default()
    };
    let names = [("from.checkpoints.pretrain", format!("--checkpoint {}", checkpoint.unwrap_or(""))), ("recipe", config.to_string())];
    let mut d = Driver::new(Kind::Icl, &o).map_err(|e| recipe_flags(e, &names))?;
    d.steps_per_unit = usize::MAX;
    let mut stdout = Out::new();
    let mut lines = RecipeLines::new(Kind::Icl, log_every);
    let saved = drive(&mut d, &mut lines, None, &mut stdout, |d, stage| match out {
        Some(path) if stage == "pretrain" => {
            write_bytes(path, &d.save(Some(stage))?)?;
            say!("saved {path}");
            Ok(())
        }
        _ => Ok(()),
    });
    if let Err(e) = saved {
        if d.stage() == "pretrain" {
            save_last_good(&mut d, out.map(String::from));
        }
        return Err(e);
    }
    stdout.finish()
}

/// `tp zeroshot`: builds the two texts from Tiny Shakespeare, trains the model with the pattern and the baseline
/// (or reads them from `--checkpoints`), then asks both the held-out questions with no weight update: one
/// `"stage": "pretrain"` line per logged step of each model, then one `"stage": "eval"` line.
fn zeroshot_cmd(config: &str, steps: Option<usize>, seed: Option<u64>, backend: &str, out: Option<&str>, checkpoints: Option<&str>, log_every: usize) -> Result<()> {
    let recipe = read_file(config)?;
    let path = |dir: &str, name: &str| std::path::Path::new(dir).join(format!("{name}.ckpt")).to_string_lossy().into_owned();
    let from = match checkpoints {
        Some(_) if steps.is_some() || out.is_some() => {
            return Err(Error::Invalid("--checkpoints evaluates trained models: --steps and --out train them, leave them out".into()));
        }
        Some(dir) => {
            let cks = ["pattern", "baseline"].iter().map(|m| Ok((m.to_string(), read_bytes(&path(dir, m))?))).collect::<Result<_>>()?;
            Some(("eval".to_string(), cks))
        }
        None => None,
    };
    let o = Options {
        recipe: Some(recipe), corpus: Some(SHAKESPEARE.to_string()), knobs: knobs(&[("steps", steps.map(|s| s as f64))]), seed, from,
        backend: Some(BackendKind::parse(backend)?), ..Options::default()
    };
    let dir = checkpoints.unwrap_or("");
    let names = [("from.checkpoints.pattern", path(dir, "pattern")), ("from.checkpoints.baseline", path(dir, "baseline")), ("recipe", config.to_string())];
    let mut d = Driver::new(Kind::Zeroshot, &o).map_err(|e| recipe_flags(e, &names))?;
    d.steps_per_unit = usize::MAX;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("--out = {dir}: {e}")))?;
    }
    let mut stdout = Out::new();
    let mut lines = RecipeLines::new(Kind::Zeroshot, log_every);
    let saved = drive(&mut d, &mut lines, None, &mut stdout, |d, stage| match out {
        Some(dir) if stage != "eval" => {
            let f = path(dir, stage);
            write_bytes(&f, &d.save(Some(stage))?)?;
            say!("saved {f}");
            Ok(())
        }
        _ => Ok(()),
    });
    if let Err(e) = saved {
        if d.stage() != "eval" {
            let stage = d.stage();
            save_last_good(&mut d, out.map(|dir| path(dir, stage)));
        }
        return Err(e);
    }
    stdout.finish()
}

/// Tiny Shakespeare, the corpus the fine-tuning tasks are defined on (`tp finetune` without --data).
const SHAKESPEARE: &str = include_str!("../../www/data/tinyshakespeare.txt");

/// `tp finetune`'s arguments.
struct FinetuneArgs {
    checkpoint: Option<String>,
    config: Option<String>,
    task: Option<String>,
    aux_lm: Option<f32>,
    steps: Option<usize>,
    lr: Option<f32>,
    batch: Option<usize>,
    seed: Option<u64>,
    eval_every: usize,
    data: Option<String>,
    backend: String,
    out: Option<String>,
}

fn finetune(a: FinetuneArgs) -> Result<()> {
    check_out(a.out.as_deref())?;
    let text = match &a.data {
        Some(p) => read_text(p)?,
        None => SHAKESPEARE.to_string(),
    };
    // A checkpoint, pretrained or fine-tuned, is where the fine-tune starts (`from`: a fine-tuned one continues
    // with its task, head and AdamW state); a config trains from scratch.
    let (recipe, from, names) = match (&a.checkpoint, &a.config) {
        (Some(ck), None) => {
            let from = ("finetune".to_string(), [("finetune".to_string(), read_bytes(ck)?)].into());
            (None, Some(from), [("from.checkpoints.finetune", format!("--checkpoint {ck}")), ("task", "--task".into())])
        }
        (None, Some(cfg)) => {
            let text = read_file(cfg)?;
            (Some(text), None, [("recipe", cfg.clone()), ("task", "--task".into())])
        }
        _ => return Err(Error::Invalid("give --checkpoint CK (fine-tune a trained gpt) or --config FILE (from scratch)".into())),
    };
    let knobs = knobs(&[
        ("aux_lm", a.aux_lm.map(f64::from)), ("steps", a.steps.map(|s| s as f64)), ("lr", a.lr.map(f64::from)),
        ("batch", a.batch.map(|b| b as f64)), ("eval_every", Some(a.eval_every as f64)),
    ]);
    let o = Options { recipe, corpus: Some(text), task: a.task, knobs, seed: a.seed, from, backend: Some(BackendKind::parse(&a.backend)?), ..Options::default() };
    let mut d = Driver::new(Kind::Finetune, &o).map_err(|e| recipe_flags(e, &names))?;
    if let Some(s) = d.summary() {
        say!("{s}");
    }
    let mut stdout = Out::new();
    drive(&mut d, &mut RecipeLines::new(Kind::Finetune, 1), None, &mut stdout, |_, _| Ok(()))?;
    if let Some(path) = &a.out {
        write_bytes(path, &d.save(None)?)?;
        say!("saved {path}");
    }
    stdout.finish()
}

/// `tp rlhf`'s arguments.
struct RlhfArgs {
    config: String,
    stage: String,
    checkpoint: Option<String>,
    out: String,
    beta: Option<f32>,
    gamma_ptx: Option<f32>,
    ppo_steps: Option<usize>,
    seed: Option<u64>,
    eval_every: usize,
    data: Option<String>,
    backend: String,
}

/// Runs the stages asked for, printing a line a step and an evaluation line (`"eval": true`) every `eval_every`
/// steps and at each stage's start and end; each stage writes its checkpoint into the `--out` folder. A stage
/// after the first starts from the files the stages before it wrote there.
fn rlhf_cmd(a: RlhfArgs) -> Result<()> {
    let recipe = read_file(&a.config)?;
    let knobs = knobs(&[
        ("beta", a.beta.map(f64::from)), ("gamma_ptx", a.gamma_ptx.map(f64::from)), ("ppo_steps", a.ppo_steps.map(|s| s as f64)),
        ("eval_every", Some(a.eval_every as f64)),
    ]);
    let mut o = Options { recipe: Some(recipe), knobs, seed: a.seed, backend: Some(BackendKind::parse(&a.backend)?), ..Options::default() };
    // The recipe and the flags are checked before any file is read; its "checkpoint" is a path, ours to read.
    let names = [("recipe", a.config.clone())];
    let cfg = engine::rlhf_config(&o).map_err(|e| recipe_flags(e, &names))?;
    let (first, until) = match a.stage.as_str() {
        "all" => ("sft", None),
        s @ ("sft" | "rm" | "ppo") => (s, Some(s)),
        s => return Err(Error::Invalid(format!("--stage = {s}: must be sft, rm, ppo or all"))),
    };
    let text = match &a.data {
        Some(p) => read_text(p)?,
        None => SHAKESPEARE.to_string(),
    };
    let dir = std::path::Path::new(&a.out);
    let path = |name: &str| dir.join(format!("{name}.safetensors")).to_string_lossy().into_owned();
    let start = match (&a.checkpoint, first, &cfg.checkpoint) {
        (Some(ck), _, _) => ck.clone(),
        (None, "sft", Some(ck)) => ck.clone(),
        (None, "sft", None) => return Err(Error::Invalid("no pretrained model: give --checkpoint CK or \"checkpoint\" in the config".into())),
        (None, _, _) => path("sft"),
    };
    let (checkpoint, from) = match first {
        "sft" => (Some(read_bytes(&start)?), None),
        _ => {
            let mut cks: BTreeMap<String, Vec<u8>> = [("sft".to_string(), read_bytes(&start)?)].into();
            if first == "ppo" {
                cks.insert("rm".into(), read_bytes(&path("rm"))?);
            }
            (None, Some((first.to_string(), cks)))
        }
    };
    (o.checkpoint, o.from, o.corpus) = (checkpoint, from, Some(text));
    let names = [
        ("checkpoint", format!("--checkpoint {start}")), ("from.checkpoints.sft", start.clone()),
        ("from.checkpoints.rm", format!("the reward model ({})", path("rm"))), ("recipe", a.config.clone()),
    ];
    let mut d = Driver::new(Kind::Rlhf, &o).map_err(|e| recipe_flags(e, &names))?;
    if let Some(s) = d.summary() {
        say!("{s}");
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("--out = {}: {e}", a.out)))?;
    let mut stdout = Out::new();
    drive(&mut d, &mut RecipeLines::new(Kind::Rlhf, 1), until, &mut stdout, |d, stage| write_bytes(&path(stage), &d.save(Some(stage))?))?;
    stdout.finish()
}

fn bench(config: &str, data: Option<&str>, backend: &str, steps: usize, warmup: usize) -> Result<()> {
    let cfg = read_config(config)?;
    let text = data.map(read_text).transpose()?;
    let mut run = Run::new(cfg, text.as_deref(), BackendKind::parse(backend)?)?;
    run.sync_every = 0; // time the steps, not the read-backs
    say!("benchmarking on {}", run.backend_name());
    let (mut times, mut issue) = (vec![], vec![]);
    for i in 0..warmup + steps {
        let t = Instant::now();
        run.step()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
            issue.extend(gpu_issue(&run));
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let med = times[times.len() / 2];
    let tok = run.tokens_per_step() as f64;
    let threads = rayon::current_num_threads();
    debug_assert!(rayon::current_thread_index().is_some(), "bench runs inside the pool");
    let ran_on = run.backend_name();
    let mut stdout = Out::new();
    let mut line = serde_json::json!({ "backend": backend, "ran_on": ran_on, "threads": threads, "median_ms": med, "min_ms": times[0], "tokens_per_s": tok / med * 1e3, "steps": steps });
    // A gpu run: the host time to issue a step (median over the timed steps), and the last step's dispatches and
    // bind groups created (after the warm-up).
    if let Some(&(_, dispatches, bind_groups)) = issue.last() {
        let mut ms: Vec<f64> = issue.iter().map(|s| s.0).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        line["issue_ms"] = ms[ms.len() / 2].into();
        line["dispatches_per_step"] = dispatches.into();
        line["bind_groups_per_step"] = bind_groups.into();
    }
    stdout.line(line);
    stdout.line(format!("RESULT ours-{backend} threads={threads}: {med:.2} ms/iter, {:.0} tok/s", tok / med * 1e3));
    stdout.finish()
}

/// `tp attention-cost`: every value is checked before the first row runs; then one JSON line per T.
fn attention_cost(backend: &str, spec: &CostSpec, ts: Option<&str>) -> Result<()> {
    let ts = match ts {
        Some(list) => attention_cost::parse_ts(list)?,
        None => attention_cost::DEFAULT_TS.to_vec(),
    };
    for &t in &ts {
        spec.shape(t)?;
    }
    let started = Instant::now();
    let clock = || started.elapsed().as_secs_f64() * 1e3;
    let mut stdout = Out::new();
    match BackendKind::parse(backend)? {
        BackendKind::Gpu => attention_cost_gpu(spec, &ts, &clock, &mut stdout)?,
        BackendKind::Cpu => {
            say!("attention cost on the cpu backend, {} threads", rayon::current_num_threads());
            for &t in &ts {
                if !stdout.line(json_line(&attention_cost::cpu_row(spec, t, &clock)?)) {
                    break;
                }
            }
        }
        BackendKind::Reference => return Err(Error::Invalid("--backend reference: attention-cost runs on cpu or gpu".into())),
    }
    stdout.finish()
}

/// A row as JSON with its fields in declaration order (`t` first).
fn json_line(row: &attention_cost::CostRow) -> String {
    serde_json::to_string(row).expect("plain data serialises")
}

/// What issuing the last step cost (a gpu run; None on the cpu or in a build without the gpu feature).
/// (issue ms, dispatches, bind groups created).
#[cfg(feature = "gpu")]
fn gpu_issue(run: &Run) -> Option<(f64, u64, u64)> {
    run.gpu_issue().map(|s| (s.issue_ms, s.dispatches_per_step, s.bind_groups_per_step))
}

#[cfg(not(feature = "gpu"))]
fn gpu_issue(_: &Run) -> Option<(f64, u64, u64)> {
    None
}

#[cfg(feature = "gpu")]
fn attention_cost_gpu(spec: &CostSpec, ts: &[usize], clock: &dyn Fn() -> f64, stdout: &mut Out) -> Result<()> {
    let g = transformer_playground::backend::gpu::Gpu::new_blocking()?;
    say!("attention cost on {}", g.adapter_name());
    for &t in ts {
        if !stdout.line(json_line(&pollster::block_on(attention_cost::gpu_row(&g, spec, t, clock))?)) {
            break;
        }
    }
    Ok(())
}

#[cfg(not(feature = "gpu"))]
fn attention_cost_gpu(_: &CostSpec, _: &[usize], _: &dyn Fn() -> f64, _: &mut Out) -> Result<()> {
    Err(Error::Invalid("--backend gpu: this tp was built without the gpu feature (cargo build --release --features gpu)".into()))
}

fn run(cli: Cli) -> Result<()> {
    if let Some(gib) = cli.memory_budget {
        transformer_playground::train::set_memory_budget_gib(Some(gib)).map_err(|rule| Error::Invalid(format!("--memory-budget {gib}: {rule}")))?;
    }
    match cli.cmd {
        Cmd::Train { config, data, steps, backend, out, log_every, sample_tokens } => {
            train(&config, data.as_deref(), steps, &backend, out.as_deref(), log_every.max(1), sample_tokens)
        }
        Cmd::Sample { checkpoint, prompt, tokens, temperature, top_k, top_p, seed, backend, n, block_size, kv_cache } => {
            let ck = read_checkpoint(&checkpoint)?;
            let o = SampleOptions { max_tokens: tokens, temperature, top_k, top_p, seed };
            let kind = BackendKind::parse(&backend)?;
            check_options(&o, "--tokens")?;
            let paged = match kv_cache.as_str() {
                "paged" => true,
                "contiguous" => false,
                other => return Err(Error::Invalid(format!("--kv-cache = {other}: paged or contiguous"))),
            };
            generate::check_n(n).map_err(|e| flag(e, "n = ", "--n = "))?;
            transformer_playground::model::paged::check_block_size(block_size).map_err(|e| flag(e, "block_size = ", "--block-size = "))?;
            // Everything generation would refuse is refused before the prompt is shown.
            generate::check_prompt(&ck.model, &ck.tokenizer, &prompt, &o)?;
            if kind == BackendKind::Gpu {
                say!("notice: generation runs on the cpu backend (the gpu backend trains)");
            }
            let (model, tok) = (Cow::Borrowed(&ck.model), Cow::Borrowed(&ck.tokenizer));
            let mut stdout = Out::new();
            if n == 1 {
                if stdout.print(&prompt) {
                    let mut on_text = |s: &str| if stdout.print(s) { ControlFlow::Continue(()) } else { ControlFlow::Break(()) };
                    transformer_playground::with_host!(kind, |be| if paged {
                        let mut c = Continuations::start(model, tok, be, &prompt, &o, 1, block_size)?;
                        while !c.done() && c.step(be)?.iter().all(|(_, p)| on_text(p).is_continue()) {}
                    } else {
                        generate::generate_until(&ck.model, be, &ck.tokenizer, &prompt, &o, on_text, &|feed| feed())?;
                    });
                    stdout.line("");
                }
                return stdout.finish();
            }
            let json = transformer_playground::with_host!(kind, |be| if paged {
                paged_json(&Continuations::start(model, tok, be, &prompt, &o, n, block_size)?.run(be, |_, _| {})?)
            } else {
                let per_position = transformer_playground::model::paged::PagedDecoder::new(&ck.model, 1)?.stats().bytes_per_position;
                let bytes_contiguous = n * ck.model.cfg.ctx_len * per_position;
                let samples = (0..n)
                    .map(|i| {
                        let oi = SampleOptions { seed: o.seed.wrapping_add(i as u64), ..o.clone() };
                        generate::generate(&ck.model, be, &ck.tokenizer, &prompt, &oi, |_| {})
                    })
                    .collect::<Result<Vec<String>>>()?;
                // Each continuation's cache grows to at most ctx_len positions, one after the other.
                let held = (check_prompt_len(&ck, &prompt, &o)? + o.max_tokens).min(ck.model.cfg.ctx_len);
                serde_json::json!({ "samples": samples, "kv": { "kind": "contiguous", "block_size": null, "blocks_used": null,
                    "bytes_used": n * held * per_position, "bytes_contiguous": bytes_contiguous } })
            });
            stdout.line(json);
            stdout.finish()
        }
        Cmd::FillMask { checkpoint, text, top_k } => {
            let ck = read_checkpoint(&checkpoint)?;
            let fills = generate::fill_mask(&ck.model, &Cpu, &ck.tokenizer, &text, top_k)?;
            let json = serde_json::to_string(&fills).map_err(|e| Error::Invalid(format!("fills as JSON: {e}")))?;
            let mut stdout = Out::new();
            stdout.line(json);
            stdout.finish()
        }
        Cmd::Decode { checkpoint, input, tokens, temperature, seed, n: copies, block_size } => {
            let ck = read_checkpoint(&checkpoint)?;
            let n = tokens.unwrap_or_else(|| ck.config.data.lengths(ck.config.model.ctx_len).1);
            let o = SampleOptions { max_tokens: n, temperature, seed, ..Default::default() };
            check_options(&o, "--tokens")?;
            generate::check_n(copies).map_err(|e| flag(e, "n = ", "--n = "))?;
            transformer_playground::model::paged::check_block_size(block_size).map_err(|e| flag(e, "block_size = ", "--block-size = "))?;
            if copies > 1 {
                if ck.config.data.task == transformer_playground::config::Task::SpanCorruption {
                    return Err(Error::Invalid("--n: span corruption decodes greedily (one output); use --n 1".into()));
                }
                let (model, tok) = (Cow::Borrowed(&ck.model), Cow::Borrowed(&ck.tokenizer));
                let c = Continuations::start_decode(model, tok, &Cpu, &input, &o, copies, block_size)?.run(&Cpu, |_, _| {})?;
                let mut stdout = Out::new();
                stdout.line(paged_json(&c));
                return stdout.finish();
            }
            // Span corruption answers in sentinels and spans: its decoding may write the sentinels (greedy), and stops
            // after the last one.
            let text = if ck.config.data.task == transformer_playground::config::Task::SpanCorruption {
                let ids = ck.tokenizer.encode(&input)?;
                let last = ck.tokenizer.specials.last().and_then(|s| ck.tokenizer.special(s));
                ck.tokenizer.decode(&generate::decode_ids(&ck.model, &Cpu, &ck.tokenizer, &ids, n, last)?)
            } else {
                generate::decode(&ck.model, &Cpu, &ck.tokenizer, &input, &o)?
            };
            let mut stdout = Out::new();
            stdout.line(text);
            stdout.finish()
        }
        Cmd::Logits { checkpoint, text, source } => {
            let ck = read_checkpoint(&checkpoint)?;
            let idx = ck.tokenizer.encode(&text)?;
            let src = source.as_deref().map(|s| ck.tokenizer.encode(s)).transpose()?.unwrap_or_default();
            let (t, ctx) = (idx.len(), ck.config.model.ctx_len);
            if t == 0 || t > ctx {
                return Err(Error::Invalid(format!("--text must have 1..={ctx} tokens, got {t}")));
            }
            if src.len() > ctx {
                return Err(Error::Invalid(format!("--source must have 1..={ctx} tokens, got {}", src.len())));
            }
            if (ck.config.model.arch == transformer_playground::config::Arch::EncoderDecoder) == src.is_empty() {
                return Err(Error::Invalid("--source is required for an encoder_decoder and only for it".into()));
            }
            let batch = Batch { b: 1, t, targets: vec![-1; t], idx, s: src.len(), src };
            let logits = ck.model.forward(&Cpu, &batch, None).logits;
            let v = ck.model.vocab();
            let rows: Vec<&[f32]> = logits.chunks(v).collect();
            let mut stdout = Out::new();
            stdout.line(serde_json::json!({ "vocab": (0..v as u32).map(|i| ck.tokenizer.token(i)).collect::<Vec<_>>(), "logits": rows }));
            stdout.finish()
        }
        Cmd::Trace { config, data, steps } => {
            let text = data.as_deref().map(read_text).transpose()?;
            let mut run = Run::new(read_config(&config)?, text.as_deref(), BackendKind::Cpu)?;
            for _ in 0..steps {
                run.step()?;
            }
            let mut stdout = Out::new();
            stdout.line(serde_json::to_string(&run.trace()?).map_err(|e| Error::Invalid(e.to_string()))?);
            stdout.finish()
        }
        Cmd::Finetune { checkpoint, config, task, aux_lm, steps, lr, batch, seed, eval_every, data, backend, out } => {
            finetune(FinetuneArgs { checkpoint, config, task, aux_lm, steps, lr, batch, seed, eval_every, data, backend, out })
        }
        Cmd::Icl { config, steps, seed, backend, out, checkpoint, log_every } => {
            icl(&config, steps, seed, &backend, out.as_deref(), checkpoint.as_deref(), log_every.max(1))
        }
        Cmd::Zeroshot { config, steps, seed, backend, out, checkpoints, log_every } => {
            zeroshot_cmd(&config, steps, seed, &backend, out.as_deref(), checkpoints.as_deref(), log_every.max(1))
        }
        Cmd::Rlhf { config, stage, checkpoint, out, beta, gamma_ptx, ppo_steps, seed, eval_every, data, backend } => {
            rlhf_cmd(RlhfArgs { config, stage, checkpoint, out, beta, gamma_ptx, ppo_steps, seed, eval_every, data, backend })
        }
        Cmd::Bench { config, data, backend, steps, warmup } => bench(&config, data.as_deref(), &backend, steps.max(1), warmup),
        Cmd::AttentionCost { backend, t, heads, kv_heads, head_size, batch, bidirectional, budget_mib } => {
            let spec = CostSpec { batch, heads, kv_heads, head_size, causal: !bidirectional, budget_mib };
            attention_cost(&backend, &spec, t.as_deref())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    // Run everything on a rayon worker: the model's parallel ops then start from inside the pool instead of
    // waking it from outside at every op. RAYON_NUM_THREADS still sets the size.
    let pool = match rayon::ThreadPoolBuilder::new().build() {
        Ok(p) => p,
        Err(e) => {
            say!("error: cannot start the thread pool: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = pool.install(|| run(cli)) {
        say!("error: {e}");
        std::process::exit(1);
    }
}
