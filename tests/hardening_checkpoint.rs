//! Issue 20's checkpoint and tokenizer findings: a header that names a tensor twice, a tokenizer with specials its
//! architecture does not use, a corpus whose literal "[MASK]" became the special token, and refusals that counted
//! one thing and named another (or named the wrong tensor, or none).

use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::HashMap;
use transformer_playground::checkpoint::{load, save};
use transformer_playground::config::Config;
use transformer_playground::data::{Dataset, Tokenizer};
use transformer_playground::model::Model;

fn config_json(arch: &str) -> String {
    format!(
        r#"{{"model": {{"arch": "{arch}", "d_model": 16, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 8,
            "ffn": {{"activation": "gelu", "mult": 2}}, "norm": {{"kind": "layernorm", "placement": "pre"}},
            "position": {{"kind": "learned"}}, "attention": {{"scale": "inv_sqrt_dk"}}}},
            "train": {{"batch_size": 2, "steps": 5, "lr": 0.01, "min_lr": 0.001, "warmup": 2,
            "betas": [0.9, 0.95], "weight_decay": 0.1, "grad_clip": 1.0}}, "seed": 1}}"#
    )
}

fn config(arch: &str) -> Config {
    Config::from_json(&config_json(arch)).unwrap()
}

/// A checkpoint of a fresh model of `arch` with the vocabulary of `text`.
fn saved(arch: &str, text: &str) -> Vec<u8> {
    let cfg = config(arch);
    let tok = Tokenizer::for_text(text, cfg.model.arch).unwrap();
    let model = Model::new(&cfg.model, tok.vocab_size(), 3);
    save(&cfg, &tok, 42, &model, None).unwrap()
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

/// The header of a safetensors file as text (with its padding), and the data after it.
fn split(bytes: &[u8]) -> (String, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (String::from_utf8(bytes[8..8 + n].to_vec()).unwrap(), &bytes[8 + n..])
}

/// A safetensors file from a header text and data, the header padded to 8 bytes.
fn join(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.trim_end().to_string();
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The file with the metadata rewritten by `edit` (tensors unchanged).
fn with_metadata(bytes: &[u8], edit: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    edit(&mut meta);
    let st = SafeTensors::deserialize(bytes).unwrap();
    let views: Vec<(String, TensorView)> = st.tensors();
    safetensors::serialize(views, Some(meta)).unwrap()
}

// ------------------------------------------------------------------------------------------------------------
// 1. A name listed twice in the header

/// The header's entry for `name`, as text: `"name":{...}`.
fn entry(header: &str, name: &str) -> String {
    let key = format!("\"{name}\":{{");
    let at = header.find(&key).unwrap_or_else(|| panic!("no entry {name}"));
    let end = at + header[at..].find('}').unwrap() + 1;
    header[at..end].to_string()
}

#[test]
fn a_header_that_lists_a_tensor_twice_is_refused_naming_the_tensor() {
    let bytes = saved("gpt", "To be, or not to be: that is the question.");
    let (header, data) = split(&bytes);
    // The same entry again: the offsets still tile the data, so only the repetition is wrong.
    let twice = entry(&header, "ln_f.bias");
    let forged = join(&format!("{},{twice}}}", header.trim_end().strip_suffix('}').unwrap()), data);
    assert_mentions(&refusal(&forged), &["tensor ln_f.bias", "twice"]);
    // Listed first with other offsets (those of a tensor of the same shape), the real entry last.
    let other = entry(&header, "ln_f.weight").replacen("ln_f.weight", "ln_f.bias", 1);
    let forged = join(&header.replacen("{\"__metadata__\"", &format!("{{{other},\"__metadata__\""), 1), data);
    assert_mentions(&refusal(&forged), &["tensor ln_f.bias", "twice"]);
}

#[test]
fn a_header_that_lists_a_metadata_key_twice_is_refused_naming_the_key() {
    let bytes = saved("gpt", "To be, or not to be: that is the question.");
    let (header, data) = split(&bytes);
    let forged = join(&header.replacen("{\"__metadata__\":{", "{\"__metadata__\":{\"step\":\"7\",", 1), data);
    assert_mentions(&refusal(&forged), &["metadata key \"step\"", "twice"]);
}

// ------------------------------------------------------------------------------------------------------------
// 2. Each architecture's tokenizer has exactly its special tokens

#[test]
fn a_tokenizer_with_a_special_its_architecture_does_not_use_is_refused() {
    // Each forged tokenizer keeps the vocabulary size (wte's rows), so only the specials are wrong.
    let cases = [
        ("bert", "abc", r#"{"chars": ["a", "b"], "specials": ["[MASK]", "[BOS]"]}"#, "\"[BOS]\""),
        ("bert", "abc", r#"{"chars": ["a", "b"], "specials": ["[X]", "[MASK]"]}"#, "\"[X]\""),
        ("gpt", "abcd", r#"{"chars": ["a", "b", "c"], "specials": ["[MASK]"]}"#, "\"[MASK]\""),
        ("gpt", "abcd", r#"{"chars": ["a", "b", "c"], "specials": ["[BOS]"]}"#, "\"[BOS]\""),
    ];
    for (arch, text, tok, special) in cases {
        let bytes = with_metadata(&saved(arch, text), |meta| {
            meta.insert("tokenizer".into(), tok.into());
        });
        let msg = refusal(&bytes);
        assert_mentions(&msg, &["tokenizer", special, arch]);
    }
}

#[test]
fn save_refuses_a_tokenizer_with_extra_specials() {
    let cfg = config("gpt");
    let tok = Tokenizer::new("abc".chars().collect(), &["[BOS]"]);
    let model = Model::new(&cfg.model, tok.vocab_size(), 3);
    let e = save(&cfg, &tok, 0, &model, None).err().expect("save refused").to_string();
    assert_mentions(&e, &["cannot save", "\"[BOS]\""]);
}

// ------------------------------------------------------------------------------------------------------------
// 3. A corpus is ordinary text: its literal "[MASK]" is six characters, not the special token

fn text_tokens(d: &Dataset) -> (Vec<u32>, &Tokenizer) {
    match d {
        Dataset::Text { tok, train, val, .. } => (train.iter().chain(val).copied().collect(), tok),
        Dataset::Task { .. } | Dataset::Denoise { .. } => panic!("not a text dataset"),
    }
}

#[test]
fn a_bert_corpus_made_of_mask_markers_trains_on_their_characters() {
    let text = "[MASK]".repeat(17);
    let d = Dataset::new(&config("bert"), Some(&text)).unwrap();
    let (ids, tok) = text_tokens(&d);
    assert_eq!(ids.len(), text.chars().count(), "one token per character");
    assert!(ids.iter().all(|&i| (i as usize) < tok.chars.len()), "a corpus token became a special token");
    // So every character fill-mask can propose occurs in the corpus as a token.
    for (c, ch) in tok.chars.iter().enumerate() {
        assert!(ids.contains(&(c as u32)), "{ch:?} is in the vocabulary but never a token");
    }
    assert_eq!(tok.decode(&ids), text);
}

#[test]
fn a_corpus_with_a_literal_mask_counts_its_characters() {
    let text = "to be [MASK] not to be ".repeat(5);
    let d = Dataset::new(&config("bert"), Some(&text)).unwrap();
    assert_eq!(text_tokens(&d).0.len(), text.chars().count());
    // Too short: the count is of characters, the "[MASK]"s included.
    let short = "[MASK]".repeat(14);
    let e = Dataset::new(&config("bert"), Some(&short)).err().expect("refused").to_string();
    assert_mentions(&e, &["84 characters"]);
}

// ------------------------------------------------------------------------------------------------------------
// 4. Refusals that say what they count and name the right tensor

fn letters(n: usize) -> String {
    ('a'..='z').cycle().take(n).collect()
}

#[test]
fn the_shortest_text_accepted_is_the_length_the_refusal_asks_for() {
    // ctx_len 8: at least 10 × (8 + 2) = 100 characters.
    let e = Dataset::new(&config("gpt"), Some(&letters(99))).err().expect("99 characters refused").to_string();
    assert_mentions(&e, &["99 characters", "at least 100 characters"]);
    for n in [91, 95] {
        assert!(Dataset::new(&config("gpt"), Some(&letters(n))).is_err(), "{n} characters accepted");
    }
    assert!(Dataset::new(&config("gpt"), Some(&letters(100))).is_ok());
    assert!(Dataset::new(&config("bert"), Some(&letters(100))).is_ok());
}

/// The file with the header's JSON edited (a tensor's entry changed, offsets or shape).
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let (header, data) = split(bytes);
    let mut v: serde_json::Value = serde_json::from_str(header.trim_end()).unwrap();
    edit(v.as_object_mut().unwrap());
    join(&v.to_string(), data)
}

/// The tensors in the order of their data, with their offsets.
fn by_offset(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let (header, _) = split(bytes);
    let v: serde_json::Value = serde_json::from_str(header.trim_end()).unwrap();
    let mut ts: Vec<(String, usize, usize)> = v
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, t)| {
            let o = &t["data_offsets"];
            (k.clone(), o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize)
        })
        .collect();
    ts.sort_by_key(|t| t.1);
    ts
}

#[test]
fn a_corrupted_offset_is_reported_against_its_own_tensor() {
    let bytes = saved("gpt", "To be, or not to be: that is the question.");
    let order = by_offset(&bytes);
    for k in [0, 3, order.len() - 2] {
        let (name, _, end) = order[k].clone();
        let next = &order[k + 1].0;
        // The start moved past the end (a flipped high bit): the tensor now sorts after its successors.
        let forged = with_header(&bytes, |h| h[&name]["data_offsets"][0] = (end + 4096).into());
        let msg = refusal(&forged);
        assert_mentions(&msg, &[&format!("tensor {name} ")]);
        assert!(!msg.contains(&format!("tensor {next} ")), "{msg:?} blames {next}, after the corrupted {name}");
        // The end moved: its offsets no longer match its size.
        let forged = with_header(&bytes, |h| h[&name]["data_offsets"][1] = (end + 4).into());
        assert_mentions(&refusal(&forged), &[&format!("tensor {name} ")]);
    }
    // Both moved by the same amount: the size is right, the data overlaps the next tensor's.
    let (name, start, end) = order[2].clone();
    let forged = with_header(&bytes, |h| h[&name]["data_offsets"] = serde_json::json!([start + 4, end + 4]));
    assert_mentions(&refusal(&forged), &[&format!("tensor {name} "), "overlap"]);
}

#[test]
fn a_changed_shape_is_refused_naming_the_tensor_and_its_shape() {
    let bytes = saved("gpt", "To be, or not to be: that is the question.");
    let forged = with_header(&bytes, |h| h["blocks.0.mlp.fc.weight"]["shape"] = serde_json::json!([32, 15]));
    let msg = refusal(&forged);
    assert_mentions(&msg, &["tensor blocks.0.mlp.fc.weight", "[32, 15]", "F32", "2048 bytes"]);
    let forged = with_header(&bytes, |h| h["wpe"]["dtype"] = "F64".into());
    assert_mentions(&refusal(&forged), &["tensor wpe", "F64"]);
}
