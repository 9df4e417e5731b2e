//! Checkpoint bytes (safetensors with our metadata), as `tp sample/logits/fill-mask/decode --checkpoint`, `tp train
//! --resume` and the page's `load` read them (`checkpoint::load`, `facade::run_from_checkpoint`).
//!
//! Contract: a refused file is a `checkpoint` error; an accepted one saves back to a file that loads to the same
//! config, tokenizer, step and bits, continues as a run (with a corpus of its own characters), and — when small
//! enough for the harness — answers a generation, fill-mask, decoding and attention request with a result or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transformer_playground::checkpoint;
use transformer_playground::config::Arch;
use transformer_playground::facade;
use transformer_playground_fuzz::{check_error, small_enough, MAX_FUZZ_GENERATE};

fuzz_target!(|data: &[u8]| {
    let ck = match checkpoint::load(data) {
        Ok(ck) => ck,
        Err(e) => {
            check_error(&e, &["checkpoint"], &data.len());
            assert!(facade::run_from_checkpoint(data, Some("abc")).is_err());
            return;
        }
    };
    let saved = checkpoint::save(&ck.config, &ck.tokenizer, ck.step, &ck.model, ck.opt.as_ref())
        .expect("a loaded checkpoint saves");
    let back = checkpoint::load(&saved).expect("a saved checkpoint loads");
    assert_eq!((&back.config, &back.tokenizer, back.step), (&ck.config, &ck.tokenizer, ck.step));
    assert!(back.model.params.iter().zip(&ck.model.params).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(back.opt.as_ref().map(|o| o.t), ck.opt.as_ref().map(|o| o.t));

    let vocab = ck.tokenizer.vocab_size();
    if !small_enough(&ck.config, vocab) {
        return;
    }
    // A corpus of the checkpoint's own characters, long enough for its context.
    let chars: String = ck.tokenizer.chars.iter().collect();
    let need = 10 * (ck.config.model.ctx_len + 2);
    let text: String = chars.chars().cycle().take(need.max(chars.chars().count())).collect();
    let run = match facade::run_from_checkpoint(data, (!text.is_empty()).then_some(text.as_str())) {
        Ok(run) => run,
        // A tokenizer of specials only has no corpus to continue on.
        Err(e) => return check_error(&e, &["data", "invalid"], &ck.tokenizer),
    };
    let prompt: String = chars.chars().take(3).collect();
    let results = match ck.config.model.arch {
        Arch::Gpt => {
            let o = format!(r#"{{"max_tokens": {MAX_FUZZ_GENERATE}, "temperature": 0.7, "top_k": 3, "seed": 1}}"#);
            let o = facade::sample_options(&o).expect("valid options");
            let tok = run.data.tokenizer();
            let g = transformer_playground::generate::generate(&run.model, &transformer_playground::backend::cpu::Cpu, tok, &prompt, &o, |_| {});
            [g, facade::attention(&run, &prompt, None)]
        }
        Arch::Bert => [facade::fill_mask(&run, &format!("{prompt}[MASK]"), 3), facade::attention(&run, &prompt, None)],
        Arch::EncoderDecoder => {
            let o = format!(r#"{{"max_tokens": {MAX_FUZZ_GENERATE}, "temperature": 0}}"#);
            [facade::decode(&run, &prompt, &o), facade::attention(&run, &prompt, None)]
        }
    };
    for r in results {
        if let Err(e) = r {
            check_error(&e, &["invalid"], &prompt);
        }
    }
});
