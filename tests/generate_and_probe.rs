//! Sampling rules (temperature, top-k, top-p, seeds), fill-mask and seq2seq decoding on trained tiny models, and
//! the probes the UI draws: attention maps and the shape flow.

use transformer_playground::backend::{cpu::Cpu, BackendKind};
use transformer_playground::config::{Config, Task};
use transformer_playground::generate::{self, sample_next, SampleOptions};
use transformer_playground::probe;
use transformer_playground::rng::Rng;
use transformer_playground::train::Run;

fn opts(temperature: f32, top_k: usize, top_p: f32) -> SampleOptions {
    SampleOptions { max_tokens: 10, temperature, top_k, top_p, seed: 1 }
}

#[test]
fn temperature_zero_and_top_k_one_and_tiny_top_p_are_all_greedy() {
    let logits = [0.1, 2.0, -1.0, 1.9, 0.0];
    let mut rng = Rng::new(1);
    for o in [opts(0.0, 0, 1.0), opts(1.0, 1, 1.0), opts(1.0, 0, 0.01)] {
        for _ in 0..50 {
            assert_eq!(sample_next(&logits, &o, &mut rng), 1, "{o:?}");
        }
    }
}

#[test]
fn sampling_follows_the_softmax_and_top_k_top_p_cut_the_tail() {
    let logits = [0.0f32, 1.0, 2.0, 3.0];
    let p = generate::softmax(&logits, 1.0);
    let mut rng = Rng::new(2);
    let n = 40_000;
    let mut count = [0usize; 4];
    for _ in 0..n {
        count[sample_next(&logits, &opts(1.0, 0, 1.0), &mut rng) as usize] += 1;
    }
    for i in 0..4 {
        let f = count[i] as f32 / n as f32;
        assert!((f - p[i]).abs() < 0.01, "token {i}: {f} vs {}", p[i]);
    }
    // p = [0.032, 0.087, 0.237, 0.644]. top-k 2 keeps tokens 3 and 2; top-p keeps the smallest most-likely set whose
    // mass reaches p: 0.85 → {3, 2} (0.881), 0.9 → {3, 2, 1} (0.968).
    for (o, allowed) in [(opts(1.0, 2, 1.0), vec![2, 3]), (opts(1.0, 0, 0.85), vec![2, 3]), (opts(1.0, 0, 0.9), vec![1, 2, 3])] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            seen.insert(sample_next(&logits, &o, &mut rng));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), allowed, "{o:?}");
    }
    // A higher temperature flattens the distribution.
    assert!(generate::softmax(&logits, 2.0)[3] < p[3]);
}

fn tiny_run(arch: &str, extra: &str, steps: usize) -> Run {
    tiny_run_with(arch, "rope", extra, steps)
}

fn tiny_run_with(arch: &str, position: &str, extra: &str, steps: usize) -> Run {
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 32,
        "ffn": {{ "activation": "gelu", "mult": 4 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
        "position": {{ "kind": "{position}" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
        "train": {{ "batch_size": 16, "steps": {steps}, "lr": 0.005, "warmup": 10, "min_lr": 0.0005 }} {extra}, "seed": 5 }}"#
    );
    let cfg = Config::from_json(&json).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt")).unwrap();
    let mut run = Run::new(cfg, Some(&text[..100_000]), BackendKind::Cpu).unwrap();
    for _ in 0..steps {
        run.step().unwrap();
    }
    run
}

#[test]
fn generation_is_seeded_streams_every_piece_and_runs_past_the_context() {
    let run = tiny_run("gpt", "", 30);
    let tok = run.data.tokenizer();
    let o = SampleOptions { max_tokens: 80, temperature: 0.9, top_k: 10, top_p: 0.95, seed: 7 };
    let mut pieces = vec![];
    let a = generate::generate(&run.model, &Cpu, tok, "ROMEO:", &o, |p| pieces.push(p.to_string())).unwrap();
    let b = generate::generate(&run.model, &Cpu, tok, "ROMEO:", &o, |_| {}).unwrap();
    let c = generate::generate(&run.model, &Cpu, tok, "ROMEO:", &SampleOptions { seed: 8, ..o.clone() }, |_| {}).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.chars().count(), 80, "80 tokens although ctx_len is 32");
    assert_eq!(pieces.concat(), a);
    let err = generate::generate(&run.model, &Cpu, tok, "ROMEO:", &SampleOptions { temperature: -1.0, ..o }, |_| {}).unwrap_err();
    assert!(err.to_string().contains("temperature = -1"));
}

#[test]
fn fill_mask_returns_top_k_probabilities_for_every_mask() {
    let run = tiny_run("bert", "", 40);
    let tok = run.data.tokenizer();
    let fills = generate::fill_mask(&run.model, &Cpu, tok, "the k[MASK]ng is d[MASK]ad", 5).unwrap();
    assert_eq!(fills.iter().map(|f| f.position).collect::<Vec<_>>(), vec![5, 13]);
    for f in &fills {
        assert_eq!(f.candidates.len(), 5);
        assert!(f.candidates.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(f.candidates.iter().all(|(t, p)| *p > 0.0 && *p < 1.0 && t != "[MASK]"));
    }
    assert!(generate::fill_mask(&run.model, &Cpu, tok, "no mask here", 5).unwrap_err().to_string().contains("no [MASK]"));
}

#[test]
fn an_encoder_decoder_learns_to_reverse_and_decodes_greedily() {
    let run = tiny_run_with("encoder_decoder", "learned", r#", "data": {"task": "reverse", "digits": 4}"#, 400);
    eprintln!("val loss {}", run.eval(transformer_playground::data::Split::Val).unwrap());
    let tok = run.data.tokenizer();
    let o = SampleOptions { max_tokens: 4, temperature: 0.0, ..Default::default() };
    let mut rng = Rng::new(99);
    let mut correct = 0;
    for _ in 0..20 {
        let (src, want) = transformer_playground::data::task_example(transformer_playground::config::Task::Reverse, 4, &mut rng);
        correct += (generate::decode(&run.model, &Cpu, tok, &src, &o).unwrap() == want) as usize;
    }
    assert!(correct >= 16, "only {correct}/20 reversed correctly after 400 steps");
    let sampled = generate::decode(&run.model, &Cpu, tok, "1234", &SampleOptions { temperature: 1.0, ..o }).unwrap();
    assert_eq!(sampled.chars().count(), 4);
}

#[test]
fn attention_maps_are_distributions_causal_where_they_should_be_and_include_cross_attention() {
    let gpt = tiny_run("gpt", "", 1);
    let maps = probe::attention_maps(&gpt.model, &Cpu, gpt.data.tokenizer(), Task::Text, "To be or not", None).unwrap();
    assert_eq!(maps.tokens.len(), 12);
    assert_eq!(maps.maps.len(), 2);
    for m in &maps.maps {
        assert_eq!((m.kind.as_str(), m.heads, m.t, m.s), ("self", 4, 12, 12));
        for (r, row) in m.probs.chunks(m.s).enumerate() {
            let i = r % m.t;
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            assert!(row[i + 1..].iter().all(|&p| p == 0.0), "causal: no weight on later tokens");
        }
    }
    let t5 = tiny_run("encoder_decoder", r#", "data": {"task": "reverse", "digits": 4}"#, 1);
    let maps = probe::attention_maps(&t5.model, &Cpu, t5.data.tokenizer(), Task::Reverse, "1234", Some("4321")).unwrap();
    let kinds: Vec<(String, String)> = maps.maps.iter().map(|m| (m.stack.clone(), m.kind.clone())).collect();
    assert_eq!(kinds.iter().filter(|k| k.0 == "encoder" && k.1 == "self").count(), 2);
    assert_eq!(kinds.iter().filter(|k| k.0 == "decoder" && k.1 == "cross").count(), 2);
    let cross = maps.maps.iter().find(|m| m.kind == "cross").unwrap();
    assert_eq!((cross.t, cross.s), (5, 4), "[BOS]4321 attends over 1234");
    assert_eq!(maps.source_tokens, vec!["1", "2", "3", "4"]);
    let enc = maps.maps.iter().find(|m| m.stack == "encoder").unwrap();
    assert!(enc.probs[..4].iter().all(|&p| p > 0.0), "the encoder is bidirectional");
}

#[test]
fn attention_maps_of_an_add_model_decode_the_add_tasks_target_length() {
    // 4 digits per operand: the source "0042+0917" has 9 tokens, the sum "00959" 5 (not 9, as a reversal would).
    let run = tiny_run("encoder_decoder", r#", "data": {"task": "add", "digits": 4}"#, 1);
    let maps = probe::attention_maps(&run.model, &Cpu, run.data.tokenizer(), Task::Add, "0042+0917", None).unwrap();
    assert_eq!(maps.source_tokens.len(), 9);
    assert_eq!(maps.tokens.len(), 1 + 5, "[BOS] and the 5 decoded digits of the sum: {:?}", maps.tokens);
    let cross = maps.maps.iter().find(|m| m.kind == "cross").unwrap();
    assert_eq!((cross.t, cross.s), (6, 9));
}

#[test]
fn shape_flow_of_w1_has_the_documented_stages_and_about_4_gflop_per_step() {
    let cfg = Config::from_json(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/gpt-shakespeare.json")).unwrap()).unwrap();
    let sf = probe::shape_flow(&cfg.model, 65, 12, 64);
    let find = |name: &str| sf.stages.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(find("Q").shape, ["B", "NH", "T", "HS"]);
    assert_eq!(find("Q").dims, [12, 4, 64, 32]);
    assert_eq!(find("scores").dims, [12, 4, 64, 64]);
    assert_eq!(find("FFN up").dims, [12, 64, 512]);
    assert_eq!(find("logits").dims, [12, 64, 65]);
    assert!((sf.n_params as f64 - 0.81e6).abs() < 0.02e6, "{}", sf.n_params);
    let step_gflop = sf.train_flops_per_token * 768.0 / 1e9;
    assert!((3.5..4.5).contains(&step_gflop), "{step_gflop} GFLOP per W1 step");
}
