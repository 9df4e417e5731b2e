//! The encoder-decoder's denoising objectives (docs/MODEL.md, "Denoising objectives"): T5 span corruption and
//! BART text infilling, measured over many drawn examples — the corrupted fraction, the span lengths, the sentinel
//! order, putting the spans back gives the original, same seed same batches, train and val from disjoint text —,
//! the refusals naming the field, a checkpoint of such a run, and `tp train` on the two shipped configs.

use transformer_playground::backend::BackendKind;
use transformer_playground::checkpoint::{load, save};
use transformer_playground::config::{Config, DenoiseLengths, Task};
use transformer_playground::data::{sentinel, Dataset, Split, Tokenizer, BOS, MASK};
use transformer_playground::denoise::{put_back, target_spans, Corrupted};
use transformer_playground::rng::Rng;
use transformer_playground::train::Run;

const SHAKESPEARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt");

fn shakespeare() -> String {
    std::fs::read_to_string(SHAKESPEARE).unwrap()
}

fn config(task: &str, ctx_len: usize) -> Config {
    Config::from_json(&format!(
        r#"{{"model": {{"arch": "encoder_decoder", "d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
            "ctx_len": {ctx_len}, "ffn": {{"activation": "gelu", "mult": 2}},
            "norm": {{"kind": "layernorm", "placement": "pre"}}, "position": {{"kind": "learned"}},
            "attention": {{"scale": "inv_sqrt_dk"}}}},
            "train": {{"batch_size": 4, "steps": 20, "lr": 0.003, "eval_interval": 10, "eval_iters": 2}},
            "data": {{"task": "{task}"}}, "seed": 11}}"#
    ))
    .unwrap()
}

fn dataset(task: &str, ctx_len: usize) -> Dataset {
    Dataset::new(&config(task, ctx_len), Some(&shakespeare())).unwrap()
}

fn specials(d: &Dataset) -> Vec<u32> {
    match d {
        Dataset::Denoise { specials, .. } => specials.clone(),
        _ => panic!("not a denoising dataset"),
    }
}

fn examples(d: &Dataset, n: usize, seed: u64) -> Vec<Corrupted> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| d.denoise_example(Split::Train, &mut rng).unwrap()).collect()
}

/// Span corruption, measured from the source and the target alone: the corrupted tokens are the target's
/// non-sentinel tokens; the spans, the sentinels of the source.
fn span_stats(d: &Dataset, ctx_len: usize, n: usize) -> (f64, f64, Vec<usize>) {
    let sp = specials(d);
    let lens = DenoiseLengths::new(Task::SpanCorruption, ctx_len);
    let (mut noise, mut total, mut spans, mut span_lens) = (0, 0, 0, vec![]);
    for ex in examples(d, n, 5) {
        assert_eq!(ex.source.len(), lens.source);
        assert_eq!(ex.target.len(), lens.target);
        noise += ex.target.iter().filter(|t| !sp.contains(t)).count();
        total += lens.window;
        spans += ex.source.iter().filter(|t| sp.contains(t)).count();
        span_lens.extend(target_spans(&ex.target, |t| sp.contains(&t)).iter().map(|s| s.len()));
    }
    span_lens.pop(); // after the final sentinel: nothing
    (noise as f64 / total as f64, noise as f64 / spans as f64, span_lens)
}

#[test]
fn span_corruption_corrupts_fifteen_percent_in_spans_of_mean_length_three() {
    // T5's rounding (round(0.15·n), round(noise/3)) is exact only in the limit: at ctx_len 512 an example is 569
    // tokens, 85 of them in 28 spans (14.9%, mean 3.04); at ctx_len 64, 71 tokens, 11 in 4 spans (15.5%, 2.75).
    let d = dataset("span_corruption", 512);
    let (frac, mean, lens) = span_stats(&d, 512, 300);
    eprintln!("span corruption, ctx_len 512: corrupted {frac:.4}, mean span {mean:.3}");
    assert!((frac - 0.15).abs() < 0.005, "corrupted fraction {frac}");
    assert!((mean - 3.0).abs() < 0.1, "mean span length {mean}");
    // The spans are random lengths around 3, not all 3 (T5's uniform random segmentation).
    assert!(lens.iter().any(|&l| l == 1) && lens.iter().any(|&l| l >= 6), "span lengths {lens:?}");
    let d = dataset("span_corruption", 64);
    let (frac, mean, _) = span_stats(&d, 64, 300);
    eprintln!("span corruption, ctx_len 64: corrupted {frac:.4}, mean span {mean:.3}");
    assert!((frac - 0.15).abs() < 0.01, "corrupted fraction at ctx_len 64: {frac}");
    assert!((mean - 3.0).abs() < 0.3, "mean span length at ctx_len 64: {mean}");
}

#[test]
fn span_corruption_sentinels_run_in_order_and_putting_the_spans_back_gives_the_original() {
    let text = shakespeare();
    let mut pick = Rng::new(99);
    for _ in 0..40 {
        let ctx_len = 8 + pick.below(200);
        let d = Dataset::new(&config("span_corruption", ctx_len), Some(&text)).unwrap();
        let tok = d.tokenizer();
        let sp = specials(&d);
        let lens = DenoiseLengths::new(Task::SpanCorruption, ctx_len);
        assert_eq!(sp.len(), lens.sentinels);
        assert_eq!(sp, (0..lens.sentinels).map(|i| tok.special(&sentinel(i)).unwrap()).collect::<Vec<_>>());
        for ex in examples(&d, 20, ctx_len as u64) {
            assert_eq!(ex.source.len(), ctx_len, "the source fills the encoder exactly");
            let in_source: Vec<u32> = ex.source.iter().copied().filter(|t| sp.contains(t)).collect();
            let in_target: Vec<u32> = ex.target.iter().copied().filter(|t| sp.contains(t)).collect();
            let k = in_source.len();
            assert_eq!(in_source, sp[..k], "source sentinels [S0], [S1], … in order");
            assert_eq!(in_target, sp[..k + 1], "target: each sentinel, then one final sentinel");
            assert_eq!(ex.target[0], sp[0], "the target opens with [S0]");
            assert_eq!(*ex.target.last().unwrap(), sp[k]);
            assert!(target_spans(&ex.target, |t| sp.contains(&t))[..k].iter().all(|s| !s.is_empty()), "no empty span");
            let fills = target_spans(&ex.target, |t| sp.contains(&t));
            assert_eq!(put_back(&ex.source, &fills, |t| sp.contains(&t)), ex.original);
            assert_eq!(ex.original.len(), lens.window);
        }
    }
}

#[test]
fn text_infilling_masks_thirty_percent_in_poisson_three_spans_each_one_mask() {
    let d = dataset("text_infilling", 512);
    let mask = d.tokenizer().special(MASK).unwrap();
    let lens = DenoiseLengths::new(Task::TextInfilling, 512);
    let (mut masked, mut total, mut masks, mut zero, mut inner) = (0, 0, 0, 0, 0);
    for ex in examples(&d, 300, 8) {
        assert_eq!(ex.source.len(), lens.source, "every source is exactly as long");
        assert!(ex.target.len() < lens.target, "the original fits the target");
        let kept = ex.source.iter().filter(|&&t| t != mask).count();
        masked += ex.original.len() - kept;
        total += ex.original.len();
        masks += ex.source.iter().filter(|&&t| t == mask).count();
        assert!(!ex.source.windows(2).any(|w| w[0] == mask && w[1] == mask), "two [MASK]s side by side");
        // Span lengths as drawn, the last one trimmed: count the zero-length ones among the others.
        let (_, rest) = ex.spans.split_last().unwrap();
        zero += rest.iter().filter(|s| s.1 == 0).count();
        inner += rest.len();
    }
    let frac = masked as f64 / total as f64;
    let mean = masked as f64 / masks as f64;
    let p0 = zero as f64 / inner as f64;
    eprintln!("text infilling, ctx_len 512: masked {frac:.4}, mean span {mean:.3}, length-0 spans {p0:.4}");
    // ceil(0.3·n) over n ≈ 500: 30.0–30.2%.
    assert!((frac - 0.30).abs() < 0.005, "masked fraction {frac}");
    // Poisson(3) has mean 3; trimming the last span to the budget brings it a little under.
    assert!((mean - 3.0).abs() < 0.25, "mean span length {mean}");
    // P(0) = e^-3 ≈ 5%: length-0 spans insert a [MASK].
    assert!((p0 - (-3f64).exp()).abs() < 0.02, "share of length-0 spans {p0}");
}

#[test]
fn text_infilling_puts_back_to_the_original_and_the_target_is_the_original() {
    let text = shakespeare();
    let mut pick = Rng::new(7);
    for _ in 0..40 {
        let ctx_len = 8 + pick.below(200);
        let d = Dataset::new(&config("text_infilling", ctx_len), Some(&text)).unwrap();
        let mask = d.tokenizer().special(MASK).unwrap();
        for ex in examples(&d, 20, ctx_len as u64) {
            assert_eq!(ex.target, ex.original);
            assert_eq!(ex.source.iter().filter(|&&t| t == mask).count(), ex.spans.len(), "one [MASK] a span");
            let fills: Vec<Vec<u32>> = ex.spans.iter().map(|&(s, l)| ex.original[s..s + l].to_vec()).collect();
            assert_eq!(put_back(&ex.source, &fills, |t| t == mask), ex.original);
            let m = ex.spans.iter().map(|s| s.1).sum::<usize>();
            assert_eq!(m, DenoiseLengths::infill_masked(ex.original.len()), "exactly ceil(0.3·n) masked");
        }
    }
}

#[test]
fn denoising_batches_are_the_same_for_the_same_seed_and_shaped_for_the_model() {
    for task in ["span_corruption", "text_infilling"] {
        let d = dataset(task, 64);
        let (s, t) = d.lengths(64);
        let a = d.batch(Split::Train, 5, 64, &mut Rng::new(3));
        let b = d.batch(Split::Train, 5, 64, &mut Rng::new(3));
        let c = d.batch(Split::Train, 5, 64, &mut Rng::new(4));
        assert_eq!((a.src.clone(), a.idx.clone(), a.targets.clone()), (b.src, b.idx, b.targets), "{task}");
        assert_ne!(a.src, c.src, "{task}");
        assert_eq!((a.s, a.t, a.src.len(), a.idx.len(), a.targets.len()), (s, t, 5 * s, 5 * t, 5 * t));
        assert!(s <= 64 && t < 64, "{task}: ({s}, {t}) in ctx_len 64");
        let bos = d.tokenizer().special(BOS).unwrap();
        for r in 0..5 {
            assert_eq!(a.idx[r * t], bos);
            // Teacher forcing: the decoder input is the target shifted right.
            for j in 1..t {
                let y = a.targets[r * t + j - 1];
                if y >= 0 {
                    assert_eq!(a.idx[r * t + j] as i32, y);
                }
            }
        }
    }
}

#[test]
fn denoising_train_and_val_examples_come_from_their_own_part_of_the_text() {
    let text = shakespeare();
    for task in ["span_corruption", "text_infilling"] {
        let d = dataset(task, 32);
        let Dataset::Denoise { train, val, .. } = &d else { panic!() };
        let n = train.len() + val.len();
        assert_eq!(n, text.chars().count());
        assert_eq!(train.len(), n * 9 / 10, "90/10 as for text");
        let within = |hay: &[u32], x: &[u32]| hay.windows(x.len()).any(|w| w == x);
        let mut rng = Rng::new(1);
        for _ in 0..20 {
            let v = d.denoise_example(Split::Val, &mut rng).unwrap();
            assert!(within(val, &v.original), "{task}: a val example from the val text");
            let t = d.denoise_example(Split::Train, &mut rng).unwrap();
            assert!(within(train, &t.original), "{task}: a train example from the train text");
        }
    }
}

#[test]
fn the_tokenizer_holds_the_sentinels_a_source_needs_or_mask() {
    let d = dataset("span_corruption", 64);
    let lens = DenoiseLengths::new(Task::SpanCorruption, 64);
    assert_eq!((lens.source, lens.window, lens.sentinels, lens.target), (64, 71, 5, 16));
    let want: Vec<String> = std::iter::once(BOS.to_string()).chain((0..5).map(sentinel)).collect();
    assert_eq!(d.tokenizer().specials, want);
    assert_eq!(Tokenizer::specials_for_config(&config("span_corruption", 64)), want);
    let d = dataset("text_infilling", 64);
    assert_eq!(d.tokenizer().specials, vec![BOS.to_string(), MASK.to_string()]);
    // A literal "[S0]" in a prompt is the sentinel; in the corpus it would be four characters.
    let tok = dataset("span_corruption", 64).tokenizer().clone();
    assert_eq!(tok.encode("a[S1]b").unwrap().len(), 3);
}

fn refused(json_model: &str, data: &str) -> String {
    let json = format!(
        r#"{{"model": {{{json_model}, "d_model": 16, "n_heads": 2, "n_kv_heads": 2,
            "ffn": {{"activation": "gelu", "mult": 2}}, "norm": {{"kind": "layernorm", "placement": "pre"}},
            "position": {{"kind": "learned"}}, "attention": {{"scale": "inv_sqrt_dk"}}}},
            "train": {{"batch_size": 4, "steps": 5, "lr": 0.003}}, "data": {data}, "seed": 1}}"#
    );
    Config::from_json(&json).expect_err("refused").to_string()
}

#[test]
fn denoising_on_gpt_or_bert_or_too_short_a_context_is_refused_naming_the_field() {
    for arch in ["gpt", "bert"] {
        for task in ["span_corruption", "text_infilling"] {
            let e = refused(&format!(r#""arch": "{arch}", "n_layers": 1, "ctx_len": 32"#), &format!(r#"{{"task": "{task}"}}"#));
            assert!(e.contains("data.task") && e.contains(task) && e.contains("encoder_decoder"), "{e}");
        }
    }
    for task in ["span_corruption", "text_infilling"] {
        let e = refused(r#""arch": "encoder_decoder", "n_layers": 1, "ctx_len": 7"#, &format!(r#"{{"task": "{task}"}}"#));
        assert!(e.contains("model.ctx_len") && e.contains(">= 8") && e.contains(task), "{e}");
    }
    let e = refused(r#""arch": "encoder_decoder", "n_layers": 1, "ctx_len": 32"#, r#"{"task": "span_corruptions"}"#);
    assert!(e.contains("span_corruption") && e.contains("unknown variant"), "{e}");
    let e = refused(r#""arch": "encoder_decoder", "n_layers": 1, "ctx_len": 32"#, r#"{"task": "text"}"#);
    assert!(e.contains("data.task") && e.contains("text_infilling"), "{e}");
    // A corpus too short for the val split to hold one example.
    let e = Dataset::new(&config("span_corruption", 64), Some(&"abc ".repeat(150))).err().unwrap().to_string();
    assert!(e.contains("720"), "{e}");
}

#[test]
fn a_denoising_run_saves_and_loads_and_the_loaded_tokenizer_must_hold_its_specials() {
    for task in ["span_corruption", "text_infilling"] {
        let text = shakespeare();
        let mut run = Run::new(config(task, 24), Some(&text), BackendKind::Cpu).unwrap();
        for _ in 0..3 {
            run.step().unwrap();
        }
        let bytes = save(&run.cfg, run.data.tokenizer(), run.step, &run.model, Some(&run.opt)).unwrap();
        let ck = load(&bytes).unwrap();
        assert_eq!(&ck.tokenizer, run.data.tokenizer(), "{task}");
        assert_eq!(ck.model.params, run.model.params);
        let data = Dataset::from_text(&text, ck.tokenizer.clone(), &ck.config).unwrap();
        let mut resumed = Run::resume(ck.config, ck.model, ck.opt, data, ck.step, BackendKind::Cpu);
        assert_eq!(resumed.step().unwrap().loss, run.step().unwrap().loss, "{task}: the resumed run continues alike");

        // A tokenizer without the task's specials (the plain encoder-decoder's), or with an extra one.
        let mut tok = run.data.tokenizer().clone();
        tok.specials.truncate(1);
        let e = save(&run.cfg, &tok, 0, &run.model, None).err().unwrap().to_string();
        assert!(e.contains("lacks") || e.contains("tokens but"), "{e}");
        let mut tok = run.data.tokenizer().clone();
        tok.specials.push("[S99]".into());
        let e = save(&run.cfg, &tok, 0, &run.model, None).err().unwrap().to_string();
        assert!(e.contains("[S99]") || e.contains("tokens but"), "{e}");
    }
}

#[test]
fn a_denoising_checkpoint_with_a_foreign_special_is_refused_on_load() {
    let text = shakespeare();
    let run = Run::new(config("text_infilling", 24), Some(&text), BackendKind::Cpu).unwrap();
    let bytes = save(&run.cfg, run.data.tokenizer(), 0, &run.model, None).unwrap();
    // Same length, another name: "[MASK]" → "[S0]" in the metadata (a span-corruption special).
    let s = String::from_utf8_lossy(&bytes).into_owned();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = &s[8..8 + header_len];
    let patched = header.replacen(r#"\"[MASK]\""#, r#"\"[S0]\"  "#, 1);
    assert_ne!(patched, header);
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(patched.as_bytes());
    out.extend_from_slice(&bytes[8 + header_len..]);
    let e = load(&out).err().expect("refused").to_string();
    assert!(e.contains("[MASK]") && e.contains("text_infilling"), "{e}");
}

fn tp(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tp")).args(args).output().expect("run tp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn tp_trains_the_t5_and_bart_configs_and_the_loss_falls() {
    let dir = std::env::temp_dir().join(format!("tp-denoise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["t5-span-corruption", "bart-infilling"] {
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/").to_string() + name + ".json";
        let ck = dir.join(format!("{name}.safetensors")).to_string_lossy().into_owned();
        let (ok, out, err) = tp(&["train", "--config", &cfg, "--data", SHAKESPEARE, "--steps", "60", "--log-every", "1", "--out", &ck]);
        assert!(ok, "{name}: {err}");
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        let losses: Vec<f64> = lines.iter().filter_map(|l| l.get("loss").and_then(|x| x.as_f64())).collect();
        assert_eq!(losses.len(), 60);
        let first = losses[..5].iter().sum::<f64>() / 5.0;
        let last = losses[55..].iter().sum::<f64>() / 5.0;
        eprintln!("{name}: loss {first:.3} → {last:.3} over 60 steps");
        assert!(last < first - 0.5, "{name}: loss {first:.3} → {last:.3}");
        let demo = lines.last().unwrap();
        let ex = &demo["examples"][0];
        assert!(ex["truth"].as_str().unwrap().chars().count() > 10 && ex["reconstruction"].is_string(), "{demo}");
        // `tp decode` on the checkpoint: a corrupted input gives the model's answer (span corruption: in sentinels).
        let input = if name.starts_with("t5") { "To be, or[S0] to be: that[S1]" } else { "To be, or [MASK] to be" };
        let (ok, out, err) = tp(&["decode", "--checkpoint", &ck, "--input", input, "--tokens", "12"]);
        assert!(ok, "{name}: {err}");
        assert!(!out.trim_end_matches('\n').is_empty(), "{name}: {out:?}");
        let ck = load(&std::fs::read(&ck).unwrap()).unwrap();
        assert_eq!(ck.step, 60);
    }
}

#[test]
fn reconstruct_draws_a_val_example_and_marks_what_the_model_wrote() {
    use transformer_playground::backend::cpu::Cpu;
    use transformer_playground::generate::reconstruct;
    let text = shakespeare();
    for task in ["span_corruption", "text_infilling"] {
        let run = Run::new(config(task, 32), Some(&text), BackendKind::Cpu).unwrap();
        let r = reconstruct(&run.model, &Cpu, &run.data, Split::Val, &mut Rng::new(4)).unwrap().unwrap();
        let again = reconstruct(&run.model, &Cpu, &run.data, Split::Val, &mut Rng::new(4)).unwrap().unwrap();
        assert_eq!(r, again, "{task}: same seed, same example and output");
        let Dataset::Denoise { val, lens, .. } = &run.data else { panic!() };
        assert_eq!(r.source.len(), lens.source);
        let truth: Vec<u32> = run.data.tokenizer().encode(&r.truth).unwrap();
        assert!(val.windows(truth.len()).any(|w| w == truth), "{task}: from the val text");
        assert_eq!((r.recon_tokens.len(), r.recon_filled.len()), (r.recon_miss.len(), r.recon_miss.len()));
        assert_eq!(r.recon_tokens.concat(), r.reconstruction);
        assert!((0.0..=1.0).contains(&r.char_accuracy));
        if task == "span_corruption" {
            // The input's own characters come back unmarked and in order: the truth without its hidden spans.
            let kept: String = r.recon_tokens.iter().zip(&r.recon_filled).filter(|(_, &f)| !f).map(|(t, _)| t.as_str()).collect();
            let hidden: std::collections::HashSet<usize> = r.spans.iter().flat_map(|&(s, l)| s..s + l).collect();
            let want: String = r.truth.chars().enumerate().filter(|(i, _)| !hidden.contains(i)).map(|(_, c)| c).collect();
            assert_eq!(kept, want);
            assert!(r.output.len() <= lens.target);
        } else {
            assert!(r.recon_filled.iter().all(|&f| f) && r.output.len() == r.truth.chars().count());
        }
    }
}
