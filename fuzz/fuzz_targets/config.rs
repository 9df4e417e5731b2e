//! Config JSON, as `tp train --config`, the page's `validate` and `shapeFlow`, and a new run read it.
//!
//! Contract: a refused config is a `config` error (one that breaks a rule names its field, value and rule); an
//! accepted one validates again, survives its own JSON unchanged, has a shape flow or a `config`/`invalid` size
//! refusal, and — when small enough for the harness — builds a run that takes a training step without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transformer_playground::config::{Config, Task};
use transformer_playground::{facade, Error};
use transformer_playground_fuzz::{check_error, corpus, small_enough};

/// A small vocabulary, as a character-level corpus has.
const VOCAB: usize = 30;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cfg = match Config::from_json(text) {
        Ok(cfg) => cfg,
        Err(e) => {
            check_error(&e, &["config"], &text);
            // The page's `validate` refuses it the same way.
            assert_eq!(facade::validate_config(text).unwrap_err(), e);
            return;
        }
    };
    cfg.validate().expect("an accepted config validates again");
    let full = facade::validate_config(text).expect("validate accepts what from_json accepts");
    let again = Config::from_json(&full).expect("a config's own JSON is accepted");
    assert_eq!(again, cfg, "a config changes through its JSON");

    if let Err(e) = facade::shape_flow(text, VOCAB) {
        // Too many parameters (config) or over the memory budget.
        check_error(&e, &["config", "invalid"], &text);
        return;
    }
    if !small_enough(&cfg, VOCAB) {
        return;
    }
    let corpus = (cfg.data.task == Task::Text).then(|| corpus().repeat(1 + cfg.model.ctx_len / 16));
    let mut run = match facade::new_run(text, corpus.as_deref()) {
        Ok(run) => run,
        Err(e) => return check_error(&e, &["config", "data", "invalid"], &text),
    };
    match run.step() {
        Ok(r) => assert!(r.step <= 1 && run.step == 1, "one step reports step {} and counts {}", r.step, run.step),
        Err(e @ Error::Diverged { .. }) => check_error(&e, &["diverged"], &text),
        Err(e) => panic!("a training step failed on the cpu: {e}"),
    }
});
