//! Evaluation past the training length (`Run::eval_at`; issue 19, lesson `extrapolation`): equal to `eval` at
//! ctx_len, finite at 2× and 4× for every scheme that is defined there, learned positions refused with the reason,
//! and a causal model's logits on a prefix unchanged by the tokens that follow it at any length.

mod positions;

use transformer_playground::backend::{cpu::Cpu, BackendKind};
use transformer_playground::config::Config;
use transformer_playground::data::Split;
use transformer_playground::error::Error;
use transformer_playground::model::Batch;
use transformer_playground::train::Run;

const CTX: usize = 16;

fn config(arch: &str, position: &serde_json::Value) -> Config {
    config_with(arch, position, serde_json::json!({}))
}

fn config_with(arch: &str, position: &serde_json::Value, data: serde_json::Value) -> Config {
    let json = serde_json::json!({
        "model": { "arch": arch, "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": CTX,
                   "ffn": { "activation": "gelu", "mult": 2 }, "norm": { "kind": "layernorm", "placement": "pre" },
                   "position": position, "attention": { "scale": "inv_sqrt_dk" } },
        "train": { "batch_size": 4, "steps": 3, "lr": 0.003, "eval_iters": 2 },
        "data": data,
        "seed": 5
    });
    Config::from_json(&json.to_string()).unwrap()
}

fn text() -> String {
    let p = format!("{}/www/data/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(p).unwrap()[..20_000].to_string()
}

fn trained(arch: &str, position: &serde_json::Value) -> Run {
    let mut run = Run::new(config(arch, position), Some(&text()), BackendKind::Cpu).unwrap();
    for _ in 0..3 {
        run.step().unwrap();
    }
    run
}

#[test]
fn eval_at_ctx_len_is_eval_and_past_it_runs_for_every_scheme_but_learned() {
    for arch in ["gpt", "bert"] {
        for pos in positions::every_position() {
            let run = trained(arch, &pos);
            let at1 = run.eval_at(Split::Val, CTX).unwrap();
            assert_eq!(at1.to_bits(), run.eval(Split::Val).unwrap().to_bits(), "{arch} {pos}");
            for seq in [2 * CTX, 4 * CTX] {
                let r = run.eval_at(Split::Val, seq);
                if pos["kind"] == "learned" {
                    match r {
                        Err(Error::Config { field, value, rule }) => {
                            assert_eq!((field.as_str(), value.as_str()), ("model.position", "learned"));
                            assert!(rule.contains("ctx_len = 16") && rule.contains("no row"), "{rule}");
                        }
                        other => panic!("{arch}: learned positions at {seq} tokens gave {other:?}"),
                    }
                } else {
                    let loss = r.unwrap_or_else(|e| panic!("{arch} {pos} at {seq}: {e}"));
                    assert!(loss.is_finite() && loss > 0.0, "{arch} {pos} at {seq}: {loss}");
                }
            }
            // Shorter than ctx_len is fine for every scheme, learned included.
            assert!(run.eval_at(Split::Val, CTX / 2).unwrap().is_finite());
        }
    }
}

#[test]
fn eval_at_refuses_zero_a_split_too_short_and_a_task() {
    let run = trained("gpt", &serde_json::json!({"kind": "rope"}));
    assert!(matches!(run.eval_at(Split::Val, 0), Err(Error::Invalid(m)) if m.contains("at least 1")));
    assert!(matches!(run.eval_at(Split::Val, 1_000_000), Err(Error::Invalid(m)) if m.contains("too few")));
    let c = config_with("encoder_decoder", &serde_json::json!({"kind": "relative"}), serde_json::json!({"task": "reverse", "digits": 4}));
    let ed = Run::new(c, None, BackendKind::Cpu).unwrap();
    assert!(matches!(ed.eval_at(Split::Val, 2 * CTX), Err(Error::Invalid(m)) if m.contains("plain text")));
}

/// Causal attention: the logits at positions 0..CTX of a 4·CTX sequence are those of the CTX-token prefix alone,
/// for every scheme defined past ctx_len — the sinusoidal table, RoPE's angles, ALiBi's distances, T5's buckets
/// and the recurrent state are computed for the longer sequence the same way on the prefix.
#[test]
fn a_causal_prefix_has_the_same_logits_at_any_length() {
    for pos in positions::every_position().into_iter().filter(|p| p["kind"] != "learned") {
        let run = trained("gpt", &pos);
        let long = run.data.batch(Split::Val, 2, 4 * CTX, &mut transformer_playground::rng::Rng::new(3));
        let mut short = Batch { b: 2, t: CTX, ..Default::default() };
        for r in 0..2 {
            short.idx.extend_from_slice(&long.idx[r * 4 * CTX..r * 4 * CTX + CTX]);
            short.targets.extend_from_slice(&long.targets[r * 4 * CTX..r * 4 * CTX + CTX]);
        }
        let v = run.data.tokenizer().vocab_size();
        let (fl, fs) = (run.model.forward(&Cpu, &long, None), run.model.forward(&Cpu, &short, None));
        for r in 0..2 {
            let a = &fl.logits[r * 4 * CTX * v..(r * 4 * CTX + CTX) * v];
            let b = &fs.logits[r * CTX * v..(r + 1) * CTX * v];
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{pos}: prefix logits differ by {worst}");
        }
    }
}

/// `Run::eval_with` (lesson `bert-mask`): bert's masked-LM loss under another masking rule. BERT's own rule gives
/// `eval` exactly; no [MASK] in the input gives another, finite loss on the same positions; a model that is not
/// bert is refused; the facade refuses shares out of range naming them.
#[test]
fn eval_with_scores_bert_under_another_masking_rule() {
    use transformer_playground::data::Mlm;
    let learned = serde_json::json!({ "kind": "learned" });
    let run = trained("bert", &learned);
    let own = Mlm { mask: run.cfg.data.mlm_mask, random: run.cfg.data.mlm_random };
    assert_eq!(run.eval_with(Split::Val, CTX, Some(own)).unwrap(), run.eval(Split::Val).unwrap());
    let unmasked = run.eval_with(Split::Val, CTX, Some(Mlm::UNMASKED)).unwrap();
    let only_mask = run.eval_with(Split::Val, CTX, Some(Mlm { mask: 1.0, random: 0.0 })).unwrap();
    assert!(unmasked.is_finite() && only_mask.is_finite());
    assert_ne!(unmasked, only_mask, "the input differs, so the loss does");
    let json = transformer_playground::facade::eval_at(&run, CTX, Some(Mlm::UNMASKED)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["val"].as_f64().unwrap() as f32, unmasked);
    for (m, name) in [(Mlm { mask: -0.5, random: 0.0 }, "mlm.mask"), (Mlm { mask: 0.0, random: f64::NAN }, "mlm.random"), (Mlm { mask: 0.7, random: 0.7 }, "mlm.random")] {
        let e = transformer_playground::facade::eval_at(&run, CTX, Some(m)).unwrap_err().to_string();
        assert!(e.contains(name), "{m:?}: {e}");
    }
    let gpt = trained("gpt", &learned);
    let e = gpt.eval_with(Split::Val, CTX, Some(Mlm::UNMASKED)).unwrap_err().to_string();
    assert!(e.contains("bert") && e.contains("model.arch"), "{e}");
    assert!(gpt.eval_with(Split::Val, CTX, None).is_ok());
}
