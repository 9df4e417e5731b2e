//! Corpus text, as `tp train --data`, the page's `checkText` and `create`, and a run resumed from a checkpoint
//! with its corpus read it: the text check, the character vocabulary, the split and the batches.
//!
//! Contract: text the check refuses (empty, not UTF-8, binary, too many characters) is refused the same way when
//! a run is made from it, as a `data` error with its reason; text it accepts either makes a gpt and a bert run
//! whose vocabulary holds every character of the text and whose batches hold only its ids, or is refused as
//! too short; a resumed run refuses a character its checkpoint's vocabulary lacks, naming it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use transformer_playground::data::{self, Split};
use transformer_playground::error::{DataIssue, Error};
use transformer_playground::rng::Rng;
use transformer_playground::checkpoint::{self, Checkpoint};
use transformer_playground::data::Dataset;
use transformer_playground::facade;
use transformer_playground_fuzz::{check_error, tiny_run, BERT, GPT};

/// The tiny gpt's checkpoint, loaded once: a resumed run reads the fuzzed corpus with its tokenizer
/// (`facade::run_from_checkpoint` after `checkpoint::load`).
fn gpt_checkpoint() -> &'static Checkpoint {
    static CK: OnceLock<Checkpoint> = OnceLock::new();
    CK.get_or_init(|| {
        let r = tiny_run(GPT);
        let bytes = checkpoint::save(&r.cfg, r.data.tokenizer(), r.step, &r.model, Some(&r.opt)).expect("saves");
        checkpoint::load(&bytes).expect("loads")
    })
}

fuzz_target!(|bytes: &[u8]| {
    let checked = data::check_text(bytes);
    let stats = facade::check_text(bytes);
    assert_eq!(checked.is_ok(), stats.is_ok(), "check_text and text_stats disagree");
    let text = match (checked, std::str::from_utf8(bytes)) {
        (Ok(text), _) => text,
        (Err(e), utf8) => {
            check_error(&e, &["data"], &bytes);
            if let Ok(text) = utf8 {
                // Making a run checks the text the same way.
                for config in [GPT, BERT] {
                    let refused = facade::new_run(config, Some(text)).err().expect("a refused text makes no run");
                    assert_eq!(refused, e);
                }
            }
            return;
        }
    };
    for config in [GPT, BERT] {
        let run = match facade::new_run(config, Some(text)) {
            Ok(run) => run,
            Err(e) => {
                check_error(&e, &["data"], &text);
                assert!(
                    matches!(e, Error::Data(DataIssue::TooShort { .. } | DataIssue::TooManyCharacters { .. })),
                    "a checked text refused for another reason: {e}"
                );
                continue;
            }
        };
        let tok = run.data.tokenizer().clone();
        assert!(text.chars().all(|c| tok.chars.binary_search(&c).is_ok()), "a character is missing from the vocabulary");
        let v = tok.vocab_size() as u32;
        let mut rng = Rng::new(3);
        for split in [Split::Train, Split::Val] {
            let b = run.data.batch(split, 2, run.cfg.model.ctx_len, &mut rng);
            assert!(b.idx.iter().all(|&i| i < v) && b.targets.iter().all(|&t| t < v as i32));
        }
    }
    let ck = gpt_checkpoint();
    if let Err(e) = Dataset::from_text(text, ck.tokenizer.clone(), &ck.config) {
        check_error(&e, &["data"], &text);
        if let Error::Data(DataIssue::NotInVocabulary { character }) = e {
            assert!(text.contains(character), "the refusal names a character the text lacks");
        }
    }
});
