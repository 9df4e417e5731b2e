//! The cpu lends the buffers of a finished step's forward pass to the next step's ops as outputs
//! (`Backend::output`, `cpu::glue::output`), holding whatever values they had, without zero-filling them. That is
//! right only if every op given such a buffer writes all of it. Here every output starts as NaN (fresh or lent) and
//! training must give the same bits as a run whose outputs are all fresh zeros: an accumulator handed out as an
//! output, or an op that skips elements, leaves NaN or a stale value behind and changes the loss.
//!
//! Its own test binary: the poison and the spare buffers are process-wide, so no other test shares the process.
//! It also runs in Chromium (scripts/test-wasm-kernels.sh), where the ops are the browser's kernels.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod lab_config;

use lab_config::{config, output_cases};
use transformer_playground::backend::cpu;
use transformer_playground::backend::BackendKind;
use transformer_playground::config::{Arch, Config};
use transformer_playground::train::{Run, StepReport};

fn run(c: &Config) -> Run {
    // The corpus is a file the browser cannot read: a text of its own, the same on both.
    let text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n".repeat(200);
    let t = (c.model.arch != Arch::EncoderDecoder).then_some(&text[..]);
    Run::new(c.clone(), t, BackendKind::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

fn bits(r: &StepReport) -> (u32, u32, Vec<u32>) {
    (r.loss.to_bits(), r.grad_norm.to_bits(), r.layer_grad_norms.iter().map(|(_, g)| g.to_bits()).collect())
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn every_op_given_a_lent_or_poisoned_output_writes_all_of_it() {
    for (arch, patch) in output_cases() {
        let c = config(arch, patch.clone());
        // Fresh zeros for every output: the spares let go before each step.
        let mut fresh = run(&c);
        let want: Vec<_> = (0..4)
            .map(|_| {
                cpu::release_spare();
                bits(&fresh.step().unwrap_or_else(|e| panic!("{e}")))
            })
            .collect();
        // Every output NaN first; from the second step on, most are the first step's buffers lent again.
        let mut lent = run(&c);
        cpu::set_poison_outputs(true);
        let got: Vec<_> = (0..4)
            .map(|i| {
                let r = lent.step().unwrap_or_else(|e| panic!("{arch} {patch} step {i}: {e}"));
                assert!(cpu::spare_buffers() > 0, "{arch} {patch} step {i}: the step gave no buffers back");
                bits(&r)
            })
            .collect();
        cpu::set_poison_outputs(false);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{arch} {patch} step {i}: (loss, grad norm, layer norms) bits with poisoned, lent outputs vs fresh zeros");
        }
        let differ = lent.model.params.iter().zip(&fresh.model.params).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{arch} {patch}: {differ} parameters differ after 4 steps");
    }
    cpu::release_spare();
    assert_eq!(cpu::spare_buffers(), 0, "release_spare lets every buffer go");
}
