//! Sampling options (generation options: `max_tokens`, `temperature`, `top_k`, `top_p`, `seed`), as the page's
//! `generate` and `decode` requests pass them (`facade::sample_options`), then sampling with them: picking a
//! token from a row of logits, generating with a gpt and decoding with an encoder-decoder.
//!
//! Input: the options JSON, a 0 byte, then logits as little-endian f32s.
//! Contract: refused options are an `invalid` error whose message names the option at fault (every key of a JSON
//! object that is refused is one the message can name); accepted options pick a token inside the row, among the
//! `top_k` most likely when that is set, and generate and decode without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transformer_playground::backend::cpu::Cpu;
use transformer_playground::generate::{self, SampleOptions};
use transformer_playground::rng::Rng;
use transformer_playground::train::Run;
use transformer_playground::facade;
use transformer_playground_fuzz::{check_error, tiny_run, ENCDEC, GPT, MAX_FUZZ_GENERATE};

thread_local! {
    static RUNS: (Run, Run) = (tiny_run(GPT), tiny_run(ENCDEC));
}

fuzz_target!(|data: &[u8]| {
    let (json, logits) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(json) = std::str::from_utf8(json) else { return };
    let o = match facade::sample_options(json) {
        Ok(o) => o,
        Err(e) => {
            check_error(&e, &["invalid"], &json);
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(json) {
                let msg = e.to_string();
                assert!(fields.keys().any(|k| msg.contains(k.as_str())), "the refusal names no option: {msg}");
            }
            return;
        }
    };
    assert!(o.validate().is_ok());
    let logits: Vec<f32> = logits.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if !logits.is_empty() {
        let i = generate::sample_next(&logits, &o, &mut Rng::new(o.seed)) as usize;
        assert!(i < logits.len(), "picked token {i} of a row of {}", logits.len());
        if o.top_k > 0 && o.temperature > 0.0 && logits.iter().all(|x| x.is_finite()) {
            let p = generate::softmax(&logits, o.temperature);
            let above = p.iter().filter(|&&q| q > p[i]).count();
            assert!(above < o.top_k, "picked a token outside the top {}: {above} are more likely", o.top_k);
        }
    }
    RUNS.with(|(gpt, encdec)| {
        let capped = SampleOptions { max_tokens: o.max_tokens.min(MAX_FUZZ_GENERATE), ..o.clone() };
        let tok = gpt.data.tokenizer();
        let text = generate::generate(&gpt.model, &Cpu, tok, "the", &capped, |_| {}).expect("a valid prompt generates");
        assert!(text.chars().count() <= capped.max_tokens);
        // decode reads at most ctx_len tokens whatever max_tokens says: the options go through as given.
        let out = facade::decode(encdec, "1234", json).expect("a valid input decodes");
        let out: serde_json::Value = serde_json::from_str(&out).expect("decode answers JSON");
        assert!(out["output"].is_string(), "{out}");
    });
});
