//! Decoding speed of the paged KV cache (docs/BENCHMARKS.md, "Paged KV cache"): tokens per second of
//!   - one continuation on the contiguous cache (`generate`, the reference path),
//!   - one continuation on the paged cache (`Continuations`, n = 1),
//!   - N continuations on the paged cache, decoded together (one batched pass per token),
//! for a model of the given config (random weights: the speed does not depend on them), a short prompt, and
//! `--tokens` tokens per continuation. Median of `--reps` runs, each timed from the prompt's prefill to the last
//! token; the runs of each kind alternate so drifts in the machine's load fall on all of them alike.
//!
//!   cargo run --release --example decode_bench -- [--config configs/gpt-shakespeare.json] [--tokens 200]
//!                                                  [--n 8] [--reps 7] [--block-size 16]

use std::borrow::Cow;
use std::time::Instant;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::data::Tokenizer;
use transformer_playground::generate::{self, Continuations, SampleOptions};
use transformer_playground::model::Model;
use transformer_playground::Config;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = arg(&args, "--config", "configs/gpt-shakespeare.json");
    let tokens: usize = arg(&args, "--tokens", "200").parse().expect("--tokens");
    let n: usize = arg(&args, "--n", "8").parse().expect("--n");
    let reps: usize = arg(&args, "--reps", "7").parse().expect("--reps");
    let bs: usize = arg(&args, "--block-size", "16").parse().expect("--block-size");
    // For a profiler: run only one kind ("contiguous", "paged1", "pagedn").
    let only = arg(&args, "--only", "");
    let runs = |kind: &str| only.is_empty() || only == kind;
    let cfg = Config::from_json(&std::fs::read_to_string(&path).expect("config")).expect("config");
    let tok = Tokenizer::new(" etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ.,;:!?'\n-".chars().collect(), &[]);
    let model = Model::new(&cfg.model, tok.vocab_size(), 1);
    let prompt = "ROMEO:\n";
    let o = SampleOptions { max_tokens: tokens, temperature: 1.0, seed: 1, ..Default::default() };
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    let (mut contiguous, mut paged1, mut paged_n) = (vec![], vec![], vec![]);
    pool.install(|| {
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        };
        for _ in 0..reps {
            if runs("contiguous") {
                contiguous.push(tokens as f64 / time(&mut || drop(generate::generate(&model, &Cpu, &tok, prompt, &o, |_| {}).unwrap())));
            }
            let run = |k| drop(Continuations::start(Cow::Borrowed(&model), Cow::Borrowed(&tok), &Cpu, prompt, &o, k, bs).unwrap().run(&Cpu, |_, _| {}).unwrap());
            if runs("paged1") {
                paged1.push(tokens as f64 / time(&mut || run(1)));
            }
            if runs("pagedn") {
                paged_n.push((n * tokens) as f64 / time(&mut || run(n)));
            }
        }
    });
    let (c, p1, pn) = (median(contiguous), median(paged1), median(paged_n));
    println!("config {path}: d_model {}, {} layers, {} heads ({} KV), ctx_len {}; {tokens} tokens per continuation, block_size {bs}, {} threads, median of {reps}",
        cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads, cfg.model.n_kv_heads, cfg.model.ctx_len, pool.current_num_threads());
    println!("| path | tokens/s | ratio |");
    println!("|---|---:|---:|");
    println!("| contiguous, 1 continuation | {c:.0} | 1.00 |");
    println!("| paged, 1 continuation | {p1:.0} | {:.2} (vs contiguous) |", p1 / c);
    println!("| paged, {n} continuations together | {pn:.0} | {:.2} (vs paged 1) |", pn / p1);
}
