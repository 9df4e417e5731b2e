//! Checkpoints (docs/CHECKPOINT.md): save → load round trips bit for bit for every architecture, with and without
//! optimizer state; every malformed, truncated, foreign or mismatched file is refused with a message that says
//! what is wrong; no byte pattern makes `load` panic.

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use transformer_playground::checkpoint::{load, save};
use transformer_playground::config::{Arch, Config};
use transformer_playground::data::Tokenizer;
use transformer_playground::model::Model;
use transformer_playground::rng::Rng;
use transformer_playground::train::OptState;

const TRAIN: &str = r#""train": {"batch_size": 2, "steps": 5, "lr": 0.01, "min_lr": 0.001, "warmup": 2,
    "betas": [0.9, 0.95], "weight_decay": 0.1, "grad_clip": 1.0}"#;

/// A small pre-LN GPT: layernorm with biases, learned positions, tied embeddings.
fn gpt_json() -> String {
    format!(
        r#"{{"model": {{"arch": "gpt", "d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 8,
            "ffn": {{"activation": "gelu", "mult": 2}}, "norm": {{"kind": "layernorm", "placement": "pre"}},
            "position": {{"kind": "learned"}}, "attention": {{"scale": "inv_sqrt_dk"}}}},
            {TRAIN}, "seed": 1}}"#
    )
}

/// A DeepNorm BERT with a gated FFN and T5 relative positions.
fn bert_json() -> String {
    format!(
        r#"{{"model": {{"arch": "bert", "d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 8,
            "ffn": {{"activation": "glu", "mult": 2}}, "norm": {{"kind": "layernorm", "placement": "deepnorm"}},
            "position": {{"kind": "relative", "buckets": 8, "max_distance": 16}},
            "attention": {{"scale": "inv_sqrt_dk"}}}},
            {TRAIN}, "seed": 6}}"#
    )
}

/// A T5-like encoder-decoder: RMSNorm, no biases, GQA, untied head, 2 encoder and 1 decoder layers.
fn encdec_json() -> String {
    format!(
        r#"{{"model": {{"arch": "encoder_decoder", "d_model": 16, "n_layers": 2, "n_decoder_layers": 1, "n_heads": 4,
            "n_kv_heads": 2, "ctx_len": 8, "ffn": {{"activation": "swish", "mult": 2}},
            "norm": {{"kind": "rmsnorm", "placement": "pre"}},
            "position": {{"kind": "relative", "buckets": 8, "max_distance": 16}},
            "attention": {{"scale": "none"}}, "bias": false, "tie_embeddings": false}},
            {TRAIN}, "data": {{"task": "reverse", "digits": 3}}, "seed": 7}}"#
    )
}

struct Made {
    cfg: Config,
    tok: Tokenizer,
    model: Model,
}

fn make(json: &str, text: &str, seed: u64) -> Made {
    let cfg = Config::from_json(json).unwrap();
    let tok = Tokenizer::for_text(text, cfg.model.arch).unwrap();
    let model = Model::new(&cfg.model, tok.vocab_size(), seed);
    Made { cfg, tok, model }
}

fn gpt() -> Made {
    make(&gpt_json(), "To be, or not to be: that is the question.", 3)
}

/// Adam moments with distinct values in every tensor (v non-negative, as Adam's always is), zero padding.
fn opt_for(model: &Model, t: u32) -> OptState {
    let mut opt = OptState::new(model.params.len());
    opt.t = t;
    let mut rng = Rng::new(99);
    for ti in &model.layout.tensors {
        ti.view.of_mut(&mut opt.m).iter_mut().for_each(|x| *x = rng.normal() as f32 * 1e-3);
        ti.view.of_mut(&mut opt.v).iter_mut().for_each(|x| *x = (rng.normal() as f32 * 1e-3).powi(2));
    }
    opt
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn saved(m: &Made, opt: Option<&OptState>) -> Vec<u8> {
    save(&m.cfg, &m.tok, 42, &m.model, opt).unwrap()
}

/// The message `load` refuses these bytes with.
fn refusal(bytes: &[u8]) -> String {
    match load(bytes) {
        Ok(_) => panic!("load accepted bytes it should refuse"),
        Err(e) => {
            let msg = e.to_string();
            eprintln!("{msg}");
            assert!(msg.starts_with("bad checkpoint: "), "not a checkpoint error: {msg}");
            msg
        }
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not mention {p:?}");
    }
}

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// Decodes a safetensors file, lets `edit` change its metadata and tensors, and encodes it again.
fn retouch(bytes: &[u8], edit: impl FnOnce(&mut HashMap<String, String>, &mut Tensors)) -> Vec<u8> {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Tensors =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    edit(&mut meta, &mut tensors);
    encode(&tensors, Some(meta))
}

fn encode(tensors: &Tensors, meta: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, meta).unwrap()
}

fn tensor<'a>(ts: &'a mut Tensors, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    ts.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no tensor {name}"))
}

// ------------------------------------------------------------------------------------------------------------
// Round trips

fn round_trip(m: &Made) {
    for with_opt in [false, true] {
        let opt = with_opt.then(|| opt_for(&m.model, 77));
        let bytes = save(&m.cfg, &m.tok, 1234, &m.model, opt.as_ref()).unwrap();
        let ck = load(&bytes).unwrap();
        assert_eq!(ck.config, m.cfg);
        assert_eq!(ck.tokenizer, m.tok);
        assert_eq!(ck.step, 1234);
        assert_eq!(ck.model.cfg, m.model.cfg);
        assert_eq!(ck.model.vocab(), m.model.vocab());
        assert_eq!(bits(&ck.model.params), bits(&m.model.params), "parameters differ after a round trip");
        match (&ck.opt, &opt) {
            (None, None) => {}
            (Some(got), Some(want)) => {
                assert_eq!(got.t, want.t);
                assert_eq!(bits(&got.m), bits(&want.m), "first moments differ after a round trip");
                assert_eq!(bits(&got.v), bits(&want.v), "second moments differ after a round trip");
            }
            (got, _) => panic!("optimizer state: saved {}, loaded {}", with_opt, got.is_some()),
        }
        // Saving what was loaded gives the same bytes.
        assert_eq!(save(&ck.config, &ck.tokenizer, ck.step, &ck.model, ck.opt.as_ref()).unwrap(), bytes);
    }
}

#[test]
fn a_gpt_round_trips_bit_for_bit_with_and_without_optimizer_state() {
    round_trip(&gpt());
}

#[test]
fn a_mixture_of_experts_gpt_round_trips_bit_for_bit_with_its_router_and_experts() {
    let json = gpt_json().replace(r#""mult": 2}"#, r#""mult": 2, "moe": {"experts": 3, "top_k": 2, "aux_loss": 0.02, "capacity_factor": 1.5}}"#);
    let m = make(&json, "To be, or not to be: that is the question.", 4);
    assert!(m.model.layout.tensor("blocks.1.mlp.router.weight").is_some() && m.model.layout.tensor("blocks.0.mlp.experts.2.proj.bias").is_some());
    assert!(m.model.layout.tensor("blocks.0.mlp.fc.weight").is_none(), "no dense FFN beside the experts");
    round_trip(&m);
}

#[test]
fn a_bert_round_trips_bit_for_bit_with_and_without_optimizer_state() {
    round_trip(&make(&bert_json(), "the cat sat on the mat", 5));
}

#[test]
fn an_encoder_decoder_round_trips_bit_for_bit_with_and_without_optimizer_state() {
    round_trip(&make(&encdec_json(), "0123456789+", 9));
}

#[test]
fn the_file_holds_exactly_the_documented_names_dtypes_shapes_and_metadata() {
    let m = gpt();
    let opt = opt_for(&m.model, 5);
    let bytes = saved(&m, Some(&opt));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut want: Vec<(String, Vec<usize>)> = vec![];
    for p in ["", "optim.m.", "optim.v."] {
        want.extend(m.model.layout.tensors.iter().map(|t| (format!("{p}{}", t.name), t.shape.clone())));
    }
    want.sort();
    let mut got: Vec<(String, Vec<usize>)> = st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec())).collect();
    got.sort();
    assert_eq!(got, want);
    assert!(st.tensors().iter().all(|(_, t)| t.dtype() == Dtype::F32));
    assert!(got.iter().any(|(n, s)| n == "wte" && s == &vec![m.tok.vocab_size(), 16]));
    assert!(got.iter().any(|(n, _)| n == "blocks.1.attn.qkv.weight"));

    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let mut keys: Vec<&str> = meta.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["config", "format", "format_version", "optim_t", "step", "tokenizer"]);
    assert_eq!(meta["format"], "transformer-playground");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["step"], "42");
    assert_eq!(meta["optim_t"], "5");
    assert_eq!(Config::from_json(&meta["config"]).unwrap(), m.cfg);
    assert_eq!(serde_json::from_str::<Tokenizer>(&meta["tokenizer"]).unwrap(), m.tok);

    let plain = saved(&m, None);
    let (_, header) = SafeTensors::read_metadata(&plain).unwrap();
    assert!(!header.metadata().as_ref().unwrap().contains_key("optim_t"));
    assert_eq!(SafeTensors::deserialize(&plain).unwrap().len(), m.model.layout.tensors.len());
}

// ------------------------------------------------------------------------------------------------------------
// Not a checkpoint at all

#[test]
fn empty_bytes_are_refused_as_an_empty_file() {
    assert_mentions(&refusal(&[]), &["empty", "safetensors"]);
}

#[test]
fn random_bytes_are_refused_as_not_safetensors() {
    let mut rng = Rng::new(1);
    for len in [1usize, 7, 8, 9, 100, 4096] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert_mentions(&refusal(&bytes), &["safetensors"]);
    }
    // A plausible header length followed by garbage: the header is not JSON.
    let mut bytes = 64u64.to_le_bytes().to_vec();
    bytes.extend((0..200).map(|_| b'a' + (rng.next_u64() % 26) as u8));
    assert_mentions(&refusal(&bytes), &["not a safetensors file", "header", "JSON"]);
    // Invalid UTF-8 in the header.
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend([0xff, 0xfe, 0xfd, 0xfc]);
    assert_mentions(&refusal(&bytes), &["not a safetensors file", "UTF-8"]);
}

#[test]
fn a_truncated_file_is_refused_as_truncated_wherever_it_is_cut() {
    let bytes = saved(&gpt(), Some(&opt_for(&gpt().model, 1)));
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let (h, n) = (header_end, bytes.len());
    for cut in [1, 4, 7, 8, 9, h / 2, h - 1, h, h + 1, h + 4, n / 2, n - 1] {
        let msg = refusal(&bytes[..cut]);
        assert_mentions(&msg, &["truncated"]);
        if cut >= header_end {
            assert_mentions(&msg, &["beyond the end of the file"]);
        } else if cut > 8 {
            assert_mentions(&msg, &["header length"]);
        }
    }
}

#[test]
fn trailing_bytes_after_the_data_are_refused() {
    let mut bytes = saved(&gpt(), None);
    bytes.extend([0u8; 12]);
    assert_mentions(&refusal(&bytes), &["12 trailing bytes"]);
}

#[test]
fn a_safetensors_file_without_our_metadata_is_refused_as_foreign() {
    // A plain state dict, as torch's save_file writes one without metadata.
    let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors: Tensors = vec![
        ("linear.weight".into(), Dtype::F32, vec![2, 2], w.clone()),
        ("linear.bias".into(), Dtype::F32, vec![2], w[..8].to_vec()),
    ];
    let msg = refusal(&encode(&tensors, None));
    assert_mentions(&msg, &["lacks transformer-playground metadata", "no metadata", "linear.bias"]);
    // safetensors.torch.save_file(..., metadata={"format": "pt"}), as Hugging Face writes it.
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    assert_mentions(&refusal(&encode(&tensors, Some(meta))), &["lacks transformer-playground metadata", "\"pt\""]);
    // An empty file of tensors.
    assert_mentions(&refusal(&encode(&vec![], None)), &["lacks transformer-playground metadata", "0 tensors"]);
    // Metadata of some other kind.
    let meta = HashMap::from([("author".to_string(), "someone".to_string())]);
    assert_mentions(&refusal(&encode(&tensors, Some(meta))), &["lacks transformer-playground metadata", "author"]);
}

#[test]
fn a_pytorch_fixture_is_refused_as_foreign_despite_carrying_a_config() {
    let path = format!("{}/tests/fixtures/gpt_nano.safetensors", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(path).unwrap();
    assert_mentions(&refusal(&bytes), &["lacks transformer-playground metadata"]);
}

// ------------------------------------------------------------------------------------------------------------
// Our format, but wrong metadata

#[test]
fn an_unknown_format_version_is_refused() {
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.insert("format_version".into(), "2".into());
    });
    assert_mentions(&refusal(&bytes), &["unsupported format_version", "\"2\"", "\"1\""]);
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.remove("format_version");
    });
    assert_mentions(&refusal(&bytes), &["lacks \"format_version\""]);
}

#[test]
fn a_config_that_fails_validation_is_refused_with_the_config_error() {
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        let cfg = meta["config"].replace("\"n_heads\":4", "\"n_heads\":3");
        assert_ne!(cfg, meta["config"]);
        meta.insert("config".into(), cfg);
    });
    let msg = refusal(&bytes);
    assert_mentions(&msg, &["config in the metadata is invalid", "model.n_heads = 3", "must divide model.d_model"]);
}

#[test]
fn a_config_too_large_for_the_limit_with_the_checkpoints_vocabulary_is_refused_naming_the_field() {
    let m = gpt();
    let v = m.tok.vocab_size();
    let bytes = retouch(&saved(&m, None), |meta, _| {
        let cfg = meta["config"].replace("\"d_model\":16", "\"d_model\":8192");
        assert_ne!(cfg, meta["config"]);
        meta.insert("config".into(), cfg);
    });
    let msg = refusal(&bytes);
    let vocab = format!("with a vocabulary of {v} tokens");
    assert_mentions(&msg, &["config in the metadata is invalid", "model = ", "must have at most 100000000 parameters", &vocab]);
}

#[test]
fn a_config_that_is_not_json_or_is_missing_is_refused() {
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.insert("config".into(), "{\"model\": ".into());
    });
    assert_mentions(&refusal(&bytes), &["config in the metadata is invalid", "not valid JSON"]);
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.remove("config");
    });
    assert_mentions(&refusal(&bytes), &["lacks \"config\""]);
}

#[test]
fn an_invalid_tokenizer_is_refused() {
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.insert("tokenizer".into(), "[1, 2]".into());
    });
    assert_mentions(&refusal(&bytes), &["tokenizer", "not valid tokenizer JSON"]);
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.insert("tokenizer".into(), r#"{"chars": ["b", "a"], "specials": []}"#.into());
    });
    assert_mentions(&refusal(&bytes), &["characters are not sorted and distinct"]);
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.insert("tokenizer".into(), r#"{"chars": ["a"], "specials": [""]}"#.into());
    });
    assert_mentions(&refusal(&bytes), &["empty special token"]);
}

#[test]
fn a_bert_tokenizer_without_its_mask_token_is_refused() {
    let m = make(&bert_json(), "abc", 1);
    let bytes = retouch(&saved(&m, None), |meta, _| {
        meta.insert("tokenizer".into(), r#"{"chars": ["a", "b", "c", "d"], "specials": []}"#.into());
    });
    assert_mentions(&refusal(&bytes), &["lacks the [MASK] token"]);
}

#[test]
fn a_tokenizer_whose_vocabulary_does_not_match_the_embedding_is_refused() {
    let m = gpt();
    let v = m.tok.vocab_size();
    let bytes = retouch(&saved(&m, None), |meta, _| {
        let mut tok = m.tok.clone();
        tok.chars.push('~');
        meta.insert("tokenizer".into(), serde_json::to_string(&tok).unwrap());
    });
    let msg = refusal(&bytes);
    assert_mentions(&msg, &["vocabulary mismatch", &format!("{} tokens", v + 1), &format!("wte has {v} rows")]);
}

#[test]
fn a_bad_step_is_refused() {
    let bytes = retouch(&saved(&gpt(), None), |meta, _| {
        meta.insert("step".into(), "-3".into());
    });
    assert_mentions(&refusal(&bytes), &["\"step\"", "-3"]);
}

// ------------------------------------------------------------------------------------------------------------
// Our format, but wrong tensors

#[test]
fn a_missing_tensor_is_refused_by_name() {
    let bytes = retouch(&saved(&gpt(), None), |_, ts| ts.retain(|t| t.0 != "blocks.1.mlp.proj.bias"));
    assert_mentions(&refusal(&bytes), &["missing tensor blocks.1.mlp.proj.bias"]);
    let bytes = retouch(&saved(&gpt(), None), |_, ts| ts.retain(|t| t.0 != "wte"));
    assert_mentions(&refusal(&bytes), &["missing tensor wte"]);
}

#[test]
fn an_extra_tensor_is_refused_by_name() {
    let bytes = retouch(&saved(&gpt(), None), |_, ts| {
        ts.push(("lm_head.weight".into(), Dtype::F32, vec![1, 2], vec![0; 8]));
    });
    assert_mentions(&refusal(&bytes), &["unexpected tensor lm_head.weight"]);
    let bytes = retouch(&saved(&gpt(), None), |_, ts| {
        ts.push(("blocks.2.ln1.weight".into(), Dtype::F32, vec![16], vec![0; 64]));
    });
    assert_mentions(&refusal(&bytes), &["unexpected tensor blocks.2.ln1.weight"]);
}

#[test]
fn a_wrong_shape_is_refused_with_expected_and_got() {
    // Transposed (same number of elements, so only the shape is wrong).
    let bytes = retouch(&saved(&gpt(), None), |_, ts| {
        tensor(ts, "blocks.0.mlp.fc.weight").2 = vec![16, 32];
    });
    assert_mentions(&refusal(&bytes), &["tensor blocks.0.mlp.fc.weight", "shape [16, 32]", "expected [32, 16]"]);
    // Flattened.
    let bytes = retouch(&saved(&gpt(), None), |_, ts| {
        tensor(ts, "wpe").2 = vec![128];
    });
    assert_mentions(&refusal(&bytes), &["tensor wpe", "shape [128]", "expected [8, 16]"]);
}

#[test]
fn a_wrong_dtype_is_refused_with_tensor_and_dtype() {
    let bytes = retouch(&saved(&gpt(), None), |_, ts| {
        let t = tensor(ts, "blocks.0.attn.proj.weight");
        let wide: Vec<u8> =
            t.3.chunks_exact(4).flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) as f64).to_le_bytes()).collect();
        t.1 = Dtype::F64;
        t.3 = wide;
    });
    assert_mentions(&refusal(&bytes), &["tensor blocks.0.attn.proj.weight", "dtype F64", "expected F32"]);
    let bytes = retouch(&saved(&gpt(), None), |_, ts| {
        tensor(ts, "ln_f.weight").1 = Dtype::I32;
    });
    assert_mentions(&refusal(&bytes), &["tensor ln_f.weight", "dtype I32", "expected F32"]);
}

#[test]
fn a_non_finite_value_is_refused_by_tensor_name() {
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let bytes = retouch(&saved(&gpt(), None), |_, ts| {
            tensor(ts, "blocks.1.attn.qkv.bias").3[20..24].copy_from_slice(&bad.to_le_bytes());
        });
        assert_mentions(&refusal(&bytes), &["tensor blocks.1.attn.qkv.bias", "non-finite", shown, "element 5"]);
    }
    let m = gpt();
    let bytes = retouch(&saved(&m, Some(&opt_for(&m.model, 3))), |_, ts| {
        tensor(ts, "optim.m.wte").3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert_mentions(&refusal(&bytes), &["tensor optim.m.wte", "non-finite"]);
}

#[test]
fn partial_or_inconsistent_optimizer_state_is_refused() {
    let m = gpt();
    let full = saved(&m, Some(&opt_for(&m.model, 3)));
    let n = m.model.layout.tensors.len();
    let bytes = retouch(&full, |_, ts| ts.retain(|t| t.0 != "optim.v.ln_f.bias"));
    let msg = refusal(&bytes);
    assert_mentions(&msg, &["optimizer state is partial", &format!("{} of {}", 2 * n - 1, 2 * n), "optim.v.ln_f.bias"]);
    let bytes = retouch(&full, |_, ts| ts.retain(|t| !t.0.starts_with("optim.v.")));
    assert_mentions(&refusal(&bytes), &["optimizer state is partial", "optim.v.wte"]);
    let bytes = retouch(&full, |meta, _| {
        meta.remove("optim_t");
    });
    assert_mentions(&refusal(&bytes), &["lacks \"optim_t\""]);
    let bytes = retouch(&saved(&m, None), |meta, _| {
        meta.insert("optim_t".into(), "3".into());
    });
    assert_mentions(&refusal(&bytes), &["\"optim_t\"", "no optimizer tensors"]);
    let bytes = retouch(&full, |_, ts| {
        tensor(ts, "optim.v.wte").3[..4].copy_from_slice(&(-1.0f32).to_le_bytes());
    });
    assert_mentions(&refusal(&bytes), &["tensor optim.v.wte", "negative"]);
}

#[test]
fn corrupted_bytes_never_make_load_panic() {
    let m = make(&encdec_json(), "0123456789+", 2);
    let bytes = saved(&m, Some(&opt_for(&m.model, 1)));
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut rng = Rng::new(5);
    for i in 0..400 {
        let mut b = bytes.clone();
        // Mostly the header (where structure lives), sometimes the data.
        let pos = if i % 4 == 0 { rng.below(b.len()) } else { rng.below(header_end) };
        b[pos] ^= 1 << rng.below(8);
        if let Err(e) = load(&b) {
            assert!(e.to_string().starts_with("bad checkpoint: "), "{e}");
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Saving refuses what loading would refuse

#[test]
fn save_refuses_what_load_would_refuse() {
    let m = gpt();
    let other = Tokenizer::for_text("xyz", Arch::Gpt).unwrap();
    let e = save(&m.cfg, &other, 0, &m.model, None).unwrap_err().to_string();
    assert_mentions(&e, &["cannot save", "3 tokens", &format!("vocabulary is {}", m.model.vocab())]);

    let mut nan = m.model.clone();
    let v = nan.layout.tensor("blocks.0.ln2.weight").unwrap().view;
    v.of_mut(&mut nan.params)[2] = f32::NAN;
    let e = save(&m.cfg, &m.tok, 0, &nan, None).unwrap_err().to_string();
    assert_mentions(&e, &["cannot save", "tensor blocks.0.ln2.weight", "non-finite"]);

    let bert = make(&bert_json(), "abc", 1);
    let e = save(&bert.cfg, &m.tok, 0, &m.model, None).unwrap_err().to_string();
    assert_mentions(&e, &["cannot save", "does not describe this model"]);

    let short = OptState::new(3);
    let e = save(&m.cfg, &m.tok, 0, &m.model, Some(&short)).unwrap_err().to_string();
    assert_mentions(&e, &["cannot save", "optimizer", "3 floats"]);
}

/// Recurrent positions: each stack's GRU is saved under `{P}rnn.weight_ih`, `weight_hh` (3C, C) and, with biases,
/// `bias_ih`, `bias_hh` (3C) (docs/CHECKPOINT.md), and the file round-trips bit for bit.
#[test]
fn recurrent_positions_round_trip_with_their_gru_tensors_under_the_documented_names() {
    let recurrent = |json: String| json.replace(r#""position": {"kind": "learned"}"#, r#""position": {"kind": "recurrent"}"#);
    let gpt_r = make(&recurrent(gpt_json()), "To be, or not to be: that is the question.", 3);
    let enc_json = encdec_json().replace(r#""position": {"kind": "relative", "buckets": 8, "max_distance": 16}"#, r#""position": {"kind": "recurrent"}"#);
    let enc_r = make(&enc_json, "0123456789+", 9);
    for (m, prefixes, bias) in [(&gpt_r, vec![""], true), (&enc_r, vec!["encoder.", "decoder."], false)] {
        assert_eq!(m.cfg.model.position, transformer_playground::config::Position::Recurrent);
        round_trip(m);
        let bytes = saved(m, None);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let shape = |n: &str| st.tensor(n).map(|t| t.shape().to_vec()).ok();
        let c = m.cfg.model.d_model;
        for p in prefixes {
            assert_eq!(shape(&format!("{p}rnn.weight_ih")), Some(vec![3 * c, c]));
            assert_eq!(shape(&format!("{p}rnn.weight_hh")), Some(vec![3 * c, c]));
            let b = if bias { Some(vec![3 * c]) } else { None };
            assert_eq!(shape(&format!("{p}rnn.bias_ih")), b);
            assert_eq!(shape(&format!("{p}rnn.bias_hh")), b);
            assert_eq!(shape(&format!("{p}wpe")), None, "no other positional tensor");
        }
    }
}
