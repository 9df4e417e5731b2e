//! Tokenizer JSON (`{"chars": [...], "specials": [...]}`, a checkpoint's `tokenizer` metadata), as loading a
//! checkpoint reads it (`checkpoint::read_tokenizer`), then the tokenizer at work: encoding a prompt, decoding ids,
//! reading a corpus, and a model of its vocabulary generating, filling a mask and decoding.
//!
//! Input: one byte choosing the architecture, the tokenizer JSON, a 0 byte, then the text to encode.
//! Contract: a refused tokenizer is a `checkpoint` error; an accepted one has at least one token and the
//! architecture's specials; encoding gives ids in the vocabulary that decode back to the text, or an `invalid`
//! error naming a character the text has; a model of that vocabulary answers with a result or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::config::{Arch, Config};
use transformer_playground::data::{Dataset, Tokenizer};
use transformer_playground::generate::{self, SampleOptions};
use transformer_playground::model::Model;
use transformer_playground::{checkpoint, probe};
use transformer_playground_fuzz::{check_error, small_enough, BERT, ENCDEC, GPT, MAX_FUZZ_GENERATE};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let (json, text) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (Ok(json), Ok(text)) = (std::str::from_utf8(json), std::str::from_utf8(text)) else { return };
    let (arch, config) = match which % 3 {
        0 => (Arch::Gpt, GPT),
        1 => (Arch::Bert, BERT),
        _ => (Arch::EncoderDecoder, ENCDEC),
    };
    let cfg = Config::from_json(config).expect("valid");
    let tok = match checkpoint::read_tokenizer(json, &cfg) {
        Ok(tok) => tok,
        Err(e) => return check_error(&e, &["checkpoint"], &json),
    };
    assert!(tok.vocab_size() > 0);
    for s in Tokenizer::specials_for(arch) {
        assert!(tok.special(s).is_some(), "an accepted tokenizer lacks {s}");
    }
    let v = tok.vocab_size() as u32;
    match tok.encode(text) {
        Ok(ids) => {
            assert!(ids.iter().all(|&i| i < v), "an id outside the vocabulary");
            assert_eq!(tok.decode(&ids), text, "encode and decode do not round-trip");
        }
        Err(e) => {
            check_error(&e, &["invalid"], &text);
            let msg = e.to_string();
            assert!(text.chars().any(|c| msg.contains(&format!("{c:?}"))), "the refusal names no character of the text: {msg}");
        }
    }
    if let Err(e) = Dataset::from_text(text, tok.clone(), &cfg) {
        check_error(&e, &["data"], &text);
    }
    if !small_enough(&cfg, tok.vocab_size()) {
        return;
    }
    let model = Model::new(&cfg.model, tok.vocab_size(), 1);
    let o = SampleOptions { max_tokens: MAX_FUZZ_GENERATE, temperature: 0.5, top_k: 2, ..Default::default() };
    let results = match arch {
        Arch::Gpt => [generate::generate(&model, &Cpu, &tok, text, &o, |_| {}).map(drop), Ok(())],
        Arch::Bert => [generate::fill_mask(&model, &Cpu, &tok, text, 3).map(drop), Ok(())],
        Arch::EncoderDecoder => [
            generate::decode(&model, &Cpu, &tok, text, &o).map(drop),
            generate::decode(&model, &Cpu, &tok, text, &SampleOptions { temperature: 0.0, ..o.clone() }).map(drop),
        ],
    };
    let maps = probe::attention_maps(&model, &Cpu, &tok, cfg.data.task, text, None).map(drop);
    for r in results.into_iter().chain([maps]) {
        if let Err(e) = r {
            check_error(&e, &["invalid"], &(&tok, text));
        }
    }
});
