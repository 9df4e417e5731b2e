//! The paged KV cache (`model::paged`) and parallel sampling (`generate::parallel`): each of N continuations decoded
//! together over shared, copy-on-write blocks equals the single-sequence contiguous decoder with its seed — for gpt
//! and the encoder-decoder, MHA/GQA/MQA, every position scheme, MoE, and sequences restarting past ctx_len; the
//! block accounting (sharing, copy-on-write, freeing); bad inputs refused naming the field.

use std::borrow::Cow;
use transformer_playground::backend::{cpu::Cpu, Host, Reference};
use transformer_playground::config::Config;
use transformer_playground::data::{Tokenizer, BOS};
use transformer_playground::generate::{self, Continuations, SampleOptions};
use transformer_playground::model::infer::Decoder;
use transformer_playground::model::paged::PagedDecoder;
use transformer_playground::model::Model;

mod positions;
use positions::every_position;

fn cfg(arch: &str, patch: serde_json::Value) -> Config {
    let layers = if arch == "encoder_decoder" { r#""n_encoder_layers": 2, "n_decoder_layers": 2,"# } else { "" };
    let data = if arch == "encoder_decoder" { r#""data": {"task": "reverse", "digits": 4},"# } else { "" };
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 24, "n_layers": 2, {layers} "n_heads": 4, "n_kv_heads": 4, "ctx_len": 16,
             "ffn": {{ "activation": "gelu", "mult": 2 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
             "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
             "train": {{ "batch_size": 2, "steps": 10, "lr": 0.01, "warmup": 0, "schedule": "constant", "weight_decay": 0.0 }}, {data} "seed": 1 }}"#
    );
    let mut v = serde_json::to_value(Config::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"))).unwrap();
    for (k, x) in patch.as_object().unwrap() {
        v["model"][k] = x.clone();
    }
    let c: Config = serde_json::from_value(v).unwrap();
    c.validate().unwrap_or_else(|e| panic!("{e}"));
    c
}

fn tok() -> Tokenizer {
    Tokenizer::new("abcdefghijkl".chars().collect(), &[BOS])
}

fn sampled(seed: u64, max_tokens: usize) -> SampleOptions {
    SampleOptions { max_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, seed }
}

/// Generates `n` continuations over the paged cache and checks each against `generate` (gpt) or `decode`
/// (encoder-decoder) with seed + i. Returns the peak cache figures' (blocks_used, bytes_used, bytes_contiguous).
fn check_against_contiguous<H: Host>(be: &H, m: &Model, arch: &str, n: usize, block_size: usize, max_tokens: usize, what: &str) -> (usize, usize, usize) {
    let t = tok();
    let input = "abcadef";
    let o = sampled(11, max_tokens);
    let start = if arch == "gpt" { Continuations::start } else { Continuations::start_decode };
    let c = start(Cow::Borrowed(m), Cow::Borrowed(&t), be, input, &o, n, block_size).unwrap();
    let mut streamed = vec![String::new(); n];
    let c = c.run(be, |i, p| streamed[i].push_str(p)).unwrap();
    assert_eq!(c.texts(), streamed, "{what}: the streamed pieces make the texts");
    for (i, text) in c.texts().iter().enumerate() {
        let oi = SampleOptions { seed: o.seed + i as u64, ..o.clone() };
        let want = if arch == "gpt" { generate::generate(m, be, &t, input, &oi, |_| {}).unwrap() } else { generate::decode(m, be, &t, input, &oi).unwrap() };
        assert_eq!(text, &want, "{what}: continuation {i} on {}", be.name());
        assert_eq!(text.chars().count(), if arch == "gpt" { max_tokens } else { max_tokens.min(16) });
    }
    assert_eq!(c.stats().blocks_used, 0, "{what}: finished continuations free every block");
    let p = c.peak();
    (p.blocks_used, p.bytes_used, p.bytes_contiguous)
}

#[test]
fn each_paged_continuation_equals_the_contiguous_decoder_with_its_seed() {
    for pos in every_position() {
        for (arch, nkv) in [("gpt", 4), ("gpt", 2), ("gpt", 1), ("encoder_decoder", 2), ("encoder_decoder", 1)] {
            let c = cfg(arch, serde_json::json!({"position": pos, "n_kv_heads": nkv}));
            let m = Model::new(&c.model, tok().vocab_size(), 7);
            let what = format!("{arch} nkv={nkv} {pos}");
            // 40 tokens at ctx_len 16: gpt restarts past ctx_len (from its last 8 tokens) three times.
            for bs in [4, 16] {
                check_against_contiguous(&Reference, &m, arch, 4, bs, 40, &what);
            }
            check_against_contiguous(&Cpu, &m, arch, 4, 3, 40, &what);
        }
    }
}

#[test]
fn moe_sandwich_and_post_norm_continuations_equal_the_contiguous_decoder() {
    let patches = [
        serde_json::json!({"ffn": {"activation": "swiglu", "mult": 2, "moe": {"experts": 4, "top_k": 2, "capacity_factor": 1.0}},
            "position": {"kind": "rope", "theta": 10000.0}}),
        serde_json::json!({"norm": {"kind": "rmsnorm", "placement": "sandwich"}, "n_kv_heads": 2}),
        serde_json::json!({"norm": {"kind": "layernorm", "placement": "post"}}),
    ];
    for arch in ["gpt", "encoder_decoder"] {
        for p in &patches {
            let m = Model::new(&cfg(arch, p.clone()).model, tok().vocab_size(), 3);
            check_against_contiguous(&Cpu, &m, arch, 3, 4, 30, &format!("{arch} {p}"));
        }
    }
}

#[test]
fn logits_of_forked_sequences_equal_single_sequence_decoders() {
    let m = Model::new(&cfg("gpt", serde_json::json!({"position": {"kind": "alibi"}, "n_kv_heads": 2})).model, 12, 5);
    let be = &Cpu;
    let prompt = [1u32, 4, 2, 7, 0];
    let mut paged = PagedDecoder::new(&m, 4).unwrap();
    let s0 = paged.add().unwrap();
    let pre = paged.feed(&m, be, &[s0], &prompt, prompt.len()).unwrap();
    let (s1, s2) = (paged.fork(s0).unwrap(), paged.fork(s0).unwrap());
    let mut refs: Vec<Decoder<Cpu>> = (0..3).map(|_| Decoder::new(&m, be)).collect();
    for r in &mut refs {
        let full = r.feed(&prompt);
        assert!(max_diff(&full, &pre) < 2e-5);
    }
    for step in 0..9u32 {
        let ids = [step % 12, (step * 5 + 1) % 12, (step * 7 + 3) % 12];
        let got = paged.feed(&m, be, &[s0, s1, s2], &ids, 1).unwrap();
        for (b, r) in refs.iter_mut().enumerate() {
            let want = r.feed(&ids[b..b + 1]);
            let d = max_diff(&got[b * 12..(b + 1) * 12], &want);
            assert!(d < 2e-5, "step {step}, sequence {b}: differ by {d}");
        }
    }
}

#[test]
fn forks_share_full_blocks_and_copy_only_the_partly_filled_one() {
    let m = Model::new(&cfg("gpt", serde_json::json!({})).model, 12, 5);
    let mut d = PagedDecoder::new(&m, 4).unwrap();
    let s0 = d.add().unwrap();
    d.feed(&m, &Cpu, &[s0], &[1, 2, 3, 4, 5], 5).unwrap();
    // 5 positions in blocks of 4: two blocks, the second holding one position.
    assert_eq!(d.seq(s0).unwrap().table.len(), 2);
    let forks: Vec<usize> = (0..3).map(|_| d.fork(s0).unwrap()).collect();
    let shared = d.seq(s0).unwrap().table.clone();
    assert_eq!(d.stats().blocks_used, 2, "forks copy nothing");
    assert!(shared.iter().all(|&b| d.pool.refs(b) == 4));
    let all: Vec<usize> = std::iter::once(s0).chain(forks.iter().copied()).collect();
    d.feed(&m, &Cpu, &all, &[6, 7, 8, 9], 1).unwrap();
    // Position 5 lands in the shared second block: the first three writers copy it, the last writes in place.
    let tables: Vec<Vec<u32>> = all.iter().map(|&s| d.seq(s).unwrap().table.clone()).collect();
    assert!(tables.iter().all(|t| t[0] == shared[0]), "the full block stays shared");
    assert_eq!(d.pool.refs(shared[0]), 4);
    let mut lasts: Vec<u32> = tables.iter().map(|t| t[1]).collect();
    lasts.sort();
    lasts.dedup();
    assert_eq!(lasts.len(), 4, "each sequence has its own last block");
    assert_eq!(d.stats().blocks_used, 5);
    let s = d.stats();
    assert_eq!(s.bytes_used, 5 * 4 * s.bytes_per_position);
    assert_eq!(s.bytes_contiguous, 4 * 16 * s.bytes_per_position);
    // 2 layers × K and V × 4 heads × 6 floats × 4 bytes.
    assert_eq!(s.bytes_per_position, 2 * 2 * 4 * 6 * 4);
    // Two more steps fill the second blocks (positions 6, 7) with no copy; position 8 takes a third block each.
    for _ in 0..3 {
        d.feed(&m, &Cpu, &all, &[1, 1, 1, 1], 1).unwrap();
    }
    assert_eq!(d.stats().blocks_used, 9);
    // Ending sequences frees their own blocks; the shared one when its last reader ends.
    for &s in &all[..3] {
        d.free(s);
    }
    assert_eq!(d.stats().blocks_used, 3);
    assert_eq!(d.pool.refs(shared[0]), 1);
    d.free(all[3]);
    assert_eq!(d.stats().blocks_used, 0);
    // Freed blocks are reused before the pool grows.
    let allocated = d.pool.blocks_allocated();
    let s = d.add().unwrap();
    d.feed(&m, &Cpu, &[s], &[1; 12], 12).unwrap();
    assert_eq!(d.pool.blocks_allocated(), allocated);
}

#[test]
fn sharing_the_prompt_uses_less_than_contiguous_caches() {
    let c = cfg("gpt", serde_json::json!({"ctx_len": 64}));
    let m = Model::new(&c.model, tok().vocab_size(), 7);
    let t = tok();
    let prompt = "abcdefghijklabcdefghijklabcdefghijkl"; // 36 tokens, shared by 8 continuations
    let o = sampled(1, 10);
    let run = |n| Continuations::start(Cow::Borrowed(&m), Cow::Borrowed(&t), &Cpu, prompt, &o, n, 16).unwrap().run(&Cpu, |_, _| {}).unwrap();
    let (one, eight) = (run(1), run(8));
    // One continuation: 46 positions in 3 blocks of 16 (the third block taken at position 32, before generation).
    assert_eq!(one.peak().blocks_used, 3);
    // Eight: the two full prompt blocks shared, each continuation its own copy of the third.
    assert_eq!(eight.peak().blocks_used, 2 + 8);
    // 10 blocks of 16 positions against 8 × 64 positions.
    assert!(eight.peak().bytes_used * 3 < eight.peak().bytes_contiguous, "{:?}", eight.peak());
}

#[test]
fn bad_inputs_are_refused_naming_the_field() {
    let m = Model::new(&cfg("gpt", serde_json::json!({})).model, 12, 5);
    let t = tok();
    let o = sampled(1, 5);
    let start = |n, bs| Continuations::start(Cow::Borrowed(&m), Cow::Borrowed(&t), &Cpu, "abc", &o, n, bs).err().map(|e| e.to_string());
    assert!(start(0, 16).unwrap().contains("n = 0"));
    assert!(start(65, 16).unwrap().contains("n = 65"));
    assert!(start(2, 0).unwrap().contains("block_size = 0"));
    assert!(start(2, 100_000).unwrap().contains("block_size = 100000"));
    let bad = SampleOptions { temperature: -1.0, ..o.clone() };
    assert!(Continuations::start(Cow::Borrowed(&m), Cow::Borrowed(&t), &Cpu, "abc", &bad, 2, 16).is_err());
    assert!(Continuations::start(Cow::Borrowed(&m), Cow::Borrowed(&t), &Cpu, "xyz", &o, 2, 16).is_err(), "characters not in the vocabulary");
    assert!(Continuations::start_decode(Cow::Borrowed(&m), Cow::Borrowed(&t), &Cpu, "abc", &o, 2, 16).is_err(), "decode needs an encoder-decoder");
    let mut d = PagedDecoder::new(&m, 4).unwrap();
    let (a, b) = (d.add().unwrap(), d.add().unwrap());
    d.feed(&m, &Cpu, &[a], &[1, 2], 2).unwrap();
    assert!(d.feed(&m, &Cpu, &[a, b], &[1, 2], 1).unwrap_err().to_string().contains("same number of positions"));
    assert!(d.feed(&m, &Cpu, &[a, a], &[1, 2], 1).is_err());
    assert!(d.feed(&m, &Cpu, &[a], &[1; 15], 15).unwrap_err().to_string().contains("ctx_len"));
    assert!(d.feed(&m, &Cpu, &[7], &[1], 1).is_err());
    for _ in 0..62 {
        d.add().unwrap();
    }
    assert!(d.add().unwrap_err().to_string().contains("at most 64"));
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// What the engine calls (`facade::start_generation`, `generation_view`): a copy of the run's weights, the cache's
/// figures and block table as the page draws them, and refusals naming the field.
#[test]
fn the_engine_facade_steps_continuations_and_shows_the_block_table() {
    use transformer_playground::facade;
    let corpus = "the quick brown fox jumps over the lazy dog. ".repeat(40);
    let json = r#"{ "model": { "arch": "gpt", "d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 32,
        "ffn": { "activation": "gelu", "mult": 2 }, "norm": { "kind": "layernorm", "placement": "pre" },
        "position": { "kind": "learned" }, "attention": { "scale": "inv_sqrt_dk" } },
        "train": { "batch_size": 2, "steps": 10, "lr": 0.01, "warmup": 0, "schedule": "constant", "weight_decay": 0.0 }, "seed": 1 }"#;
    let run = facade::new_run(json, Some(&corpus)).unwrap();
    let mut c = facade::start_generation(&run, "the ", r#"{"max_tokens": 12, "seed": 5}"#, 3, 4).unwrap();
    let view: serde_json::Value = serde_json::from_str(&facade::generation_view((4, 2), &c)).unwrap();
    // "the " (4 tokens) prefilled once: one full block, shared by the three continuations.
    assert_eq!(view["table"]["seqs"].as_array().unwrap().len(), 3);
    assert_eq!(view["now"]["blocks_used"], 1);
    assert_eq!(view["table"]["refs"][0], 3);
    assert_eq!(view["bytes_per_position_mha"].as_u64().unwrap(), 2 * view["now"]["bytes_per_position"].as_u64().unwrap());
    let mut steps = 0;
    while !c.done() {
        // Three rows a step; the last step samples only (nothing is fed after the last token).
        assert_eq!(c.next_rows(), if steps < 11 { 3 } else { 0 });
        let pieces = c.step(&Cpu).unwrap();
        assert_eq!(pieces.len(), 3);
        steps += 1;
    }
    assert_eq!(steps, 12);
    let view: serde_json::Value = serde_json::from_str(&facade::generation_view((4, 2), &c)).unwrap();
    assert_eq!(view["done"], true);
    assert_eq!(view["now"]["blocks_used"], 0);
    // Peak: 4 + 11 positions fed, in blocks of 4: the shared first block and three of each continuation's own.
    assert_eq!(view["peak"]["blocks_used"], 1 + 3 * 3);
    for (n, bs, field) in [(0, 4, "n = 0"), (65, 4, "n = 65"), (2, 0, "block_size = 0")] {
        let e = facade::start_generation(&run, "the ", "{}", n, bs).err().unwrap().to_string();
        assert!(e.contains(field), "{e}");
    }
    assert!(facade::start_generation(&run, "the ", r#"{"temperature": "hot"}"#, 2, 4).is_err());
}
