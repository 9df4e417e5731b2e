//! The CPU backend against the scalar reference, op by op, on seeded random data of awkward sizes (not multiples
//! of the SIMD width or of any tile), with `atol + rtol·|ref|` tolerances; and the CPU backend against itself
//! inside 1- and 2-thread rayon pools, where its results must be bit-identical.
//!
//! The same tests run in headless Chromium on wasm32 (`scripts/test-wasm-kernels.sh`: with simd128, with
//! simd128 + relaxed-simd, and without either, i.e. the scalar fallback), through wasm-bindgen-test. There the
//! build has no thread pool: the 1- and 2-thread runs are two runs on the calling thread (still checking that a
//! result does not change from one run to the next), and the test of the native `gemm` crate is left out.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use transformer_playground::backend::cpu::{portable, Cpu};
use transformer_playground::backend::{moe_stats_len, AdamW, AttnShape, Backend, HeadLayout, Host, Reference, Routing, Segment, View};
use transformer_playground::config::{Activation, NormKind};
use transformer_playground::rng::Rng;

mod attention_case;
mod moe_case;
use attention_case::{attention_case, laid_out, rope_case, shape, strided_cases, Bias, Storage, BIASES, NAMES};
use moe_case::moe_case;

const ACTIVATIONS: [Activation; 6] =
    [Activation::Relu, Activation::Gelu, Activation::Swish, Activation::Glu, Activation::Geglu, Activation::Swiglu];

fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        assert!(err <= tol || (g.is_infinite() && g == w), "{what}[{i}]: got {g}, want {w} (|err| {err} > {tol})");
    }
    assert!(got.iter().any(|x| *x != 0.0) || want.iter().all(|x| *x == 0.0), "{what}: all zero");
}

/// Runs `f` in a rayon pool of `threads` threads; on wasm32 (no thread pool in this build), on the calling thread.
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = threads;
        f()
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Runs `f` in a 1-thread and a 2-thread pool and asserts the returned buffers are bit-identical.
#[track_caller]
fn assert_same_bits_on_1_and_2_threads(what: &str, f: impl Fn() -> Vec<Vec<f32>> + Send + Sync) {
    let one = in_pool(1, &f);
    let two = in_pool(2, &f);
    assert_eq!(one.len(), two.len());
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        assert!(!a.is_empty());
        assert!(bits(a) == bits(b), "{what}: output {i} differs between 1 and 2 threads");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Matmul

fn matmul_case(
    be: &impl Host,
    seed: u64,
    n: usize,
    c: usize,
    oc: usize,
    bias: bool,
    need_dinp: bool,
) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let (inp, w, b) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 0.3), randn(&mut rng, oc, 1.0));
    let dout = randn(&mut rng, n * oc, 1.0);
    let (mut dinp, mut dw, mut db) =
        (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0), randn(&mut rng, oc, 1.0));
    let mut out = vec![f32::NAN; n * oc];
    be.matmul_forward(&mut out, &inp, &w, bias.then_some(&b[..]), n, c, oc).unwrap();
    be.matmul_backward(
        need_dinp.then_some(&mut dinp[..]),
        &mut dw,
        bias.then_some(&mut db[..]),
        &dout,
        &inp,
        &w,
        n,
        c,
        oc,
    )
    .unwrap();
    vec![out, dinp, dw, db]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn matmul_forward_and_backward_match_the_reference_on_awkward_sizes() {
    for (n, c, oc) in [(7, 36, 13), (1, 5, 3), (33, 17, 70), (100, 67, 70), (130, 36, 9)] {
        for (bias, need_dinp) in [(true, true), (false, true), (true, false)] {
            let seed = (n * 1000 + c * 10 + oc) as u64;
            let got = matmul_case(&Cpu, seed, n, c, oc, bias, need_dinp);
            let want = matmul_case(&Reference, seed, n, c, oc, bias, need_dinp);
            for (i, name) in ["out", "dinp", "dw", "db"].iter().enumerate() {
                assert_close(&format!("{name} N={n} C={c} OC={oc} bias={bias}"), &got[i], &want[i], 2e-5, 1e-4);
            }
        }
    }
}

/// A decoding step's matmul (at most 64 rows: the few-row kernel, W read in place): rows 1..=9 and 64, odd C (the
/// kernel's last, partial step along C) and OC (partial tiles and chunks), small enough to run serially and large
/// enough to be split over tasks; and the same bits on one and two threads.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn few_row_matmuls_match_the_reference_and_do_not_depend_on_the_thread_count() {
    for n in (1..=9).chain([64]) {
        for (c, oc) in [(5, 3), (37, 71), (129, 1031)] {
            let rng_seed = (n * 7919 + c * 31 + oc) as u64;
            let mut rng = Rng::new(rng_seed);
            let (inp, w, b) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 0.3), randn(&mut rng, oc, 1.0));
            let run = |be: &dyn Fn(&mut [f32])| {
                let mut out = vec![f32::NAN; n * oc];
                be(&mut out);
                out
            };
            let want = run(&|out| Reference.matmul_forward(out, &inp, &w, Some(&b), n, c, oc).unwrap());
            let got = run(&|out| Cpu.matmul_forward(out, &inp, &w, Some(&b), n, c, oc).unwrap());
            assert_close(&format!("few-row out N={n} C={c} OC={oc}"), &got, &want, 2e-5, 1e-4);
            assert_same_bits_on_1_and_2_threads("few-row matmul", || vec![run(&|out| Cpu.matmul_forward(out, &inp, &w, Some(&b), n, c, oc).unwrap())]);
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn portable_matmul_kernels_match_the_reference_serial_and_parallel() {
    // n < 4 with w read along its rows is the GEMV path (generation); 130 output channels make 3 column blocks;
    // n > 256 gives dw (k = n) more than one KC slab, in tasks of whole strips (36 = 16 + 16 + 4 channels) and
    // with a partial strip (22 = 16 + 6).
    for (n, c, oc) in [(7, 36, 13), (1, 3, 1), (2, 37, 130), (3, 200, 65), (45, 300, 19), (66, 9, 33), (300, 20, 36), (517, 12, 22)] {
        let mut rng = Rng::new(7 + n as u64);
        let (inp, w, b) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 0.3), randn(&mut rng, oc, 1.0));
        let dout = randn(&mut rng, n * oc, 1.0);
        let (dinp0, dw0) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0));
        let mut want = vec![0.0; n * oc];
        let (mut dinp_ref, mut dw_ref) = (dinp0.clone(), dw0.clone());
        Reference.matmul_forward(&mut want, &inp, &w, Some(&b), n, c, oc).unwrap();
        Reference.matmul_backward(Some(&mut dinp_ref), &mut dw_ref, None, &dout, &inp, &w, n, c, oc).unwrap();
        let mut serial = Vec::new();
        for parallel in [false, true] {
            let mut out = vec![f32::NAN; n * oc];
            portable::matmul_forward(&mut out, &inp, &w, Some(&b), n, c, oc, parallel);
            let (mut dinp, mut dw) = (dinp0.clone(), dw0.clone());
            portable::matmul_backward_input(&mut dinp, &dout, &w, n, c, oc, parallel);
            portable::matmul_backward_weight(&mut dw, &dout, &inp, n, c, oc, parallel);
            assert_close("portable out", &out, &want, 2e-5, 1e-4);
            assert_close("portable dinp", &dinp, &dinp_ref, 2e-5, 1e-4);
            assert_close("portable dw", &dw, &dw_ref, 2e-5, 1e-4);
            let all = [bits(&out), bits(&dinp), bits(&dw)];
            if parallel {
                assert!(serial == all, "portable kernel: parallel and serial runs differ");
            } else {
                serial = all.to_vec();
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn matmuls_give_the_same_bits_on_one_and_two_threads_at_w1_sizes() {
    for (n, c, oc) in [(768, 128, 512), (768, 512, 128), (768, 128, 65), (7, 36, 13)] {
        assert_same_bits_on_1_and_2_threads("cpu matmul", || matmul_case(&Cpu, 11, n, c, oc, true, true));
        assert_same_bits_on_1_and_2_threads("portable matmul", || {
            let mut rng = Rng::new(3);
            let (inp, w) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0));
            let mut out = vec![0.0; n * oc];
            portable::matmul_forward(&mut out, &inp, &w, None, n, c, oc, true);
            let mut dw = vec![0.0; oc * c];
            portable::matmul_backward_weight(&mut dw, &out, &inp, n, c, oc, true);
            vec![out, dw]
        });
    }
}

/// C (m×n) = [C +] A (m×k) · B with the `gemm` crate's own rayon split (`Parallelism::Rayon(0)`: one share per
/// pool thread). A is row-major; B is (k×n) row-major, or (n×k) row-major read as its transpose when `b_t`.
#[cfg(not(target_arch = "wasm32"))]
fn gemm_crate_rayon(c: &mut [f32], accumulate: bool, a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize), b_t: bool) {
    assert!(c.len() == m * n && a.len() == m * k && b.len() == k * n, "gemm_crate_rayon: sizes");
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    // SAFETY: the assert above makes every index gemm reads or writes lie inside its slice; `c` is borrowed
    // mutably, `a` and `b` shared, so nothing aliases the destination.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

/// Evidence for the choice in the CPU backend's native matmul: gemm's own rayon split also gives the same bits at
/// these sizes, because it splits only the output tiles, never the k sum. The backend still uses a fixed split of
/// its own (gemm single-threaded on fixed row blocks), which is deterministic by construction.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn gemm_crates_own_rayon_split_gives_the_same_bits_on_one_and_two_threads() {
    for (m, n, k) in [(768, 512, 128), (768, 128, 512), (512, 128, 768), (65, 128, 768)] {
        assert_same_bits_on_1_and_2_threads("gemm Rayon(0)", || {
            let mut rng = Rng::new(5);
            let (a, b) = (randn(&mut rng, m * k, 1.0), randn(&mut rng, k * n, 1.0));
            // C += A·B with B row-major (k×n), and C = A·Bᵀ with B read as (n×k), as in x·wᵀ.
            let mut c = randn(&mut rng, m * n, 1.0);
            gemm_crate_rayon(&mut c, true, &a, &b, (m, n, k), false);
            let mut ct = vec![0.0; m * n];
            gemm_crate_rayon(&mut ct, false, &a, &b, (m, n, k), true);
            vec![c, ct]
        });
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Norms

fn norm_case(be: &impl Host, kind: NormKind, bias: bool, n: usize, c: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(21 + c as u64);
    let inp: Vec<f32> = randn(&mut rng, n * c, 2.0).iter().map(|x| x + 0.7).collect();
    let (w, b) = (randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    be.norm_forward(kind, &mut out, &mut mean, &mut rstd, &inp, &w, bias.then_some(&b[..]), 1e-5, c).unwrap();
    let dout = randn(&mut rng, n * c, 1.0);
    let (mut dinp, mut dw, mut db) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
    be.norm_backward(kind, &mut dinp, &mut dw, bias.then_some(&mut db[..]), &dout, &inp, &w, &mean, &rstd, c).unwrap();
    vec![out, mean, rstd, dinp, dw, db]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn layernorm_and_rmsnorm_match_the_reference_with_and_without_bias() {
    for kind in [NormKind::Layernorm, NormKind::Rmsnorm] {
        for bias in [true, false] {
            for (n, c) in [(7, 36), (3, 5), (150, 129)] {
                let (got, want) = (norm_case(&Cpu, kind, bias, n, c), norm_case(&Reference, kind, bias, n, c));
                for (i, name) in ["out", "mean", "rstd", "dinp", "dw", "db"].iter().enumerate() {
                    if kind == NormKind::Rmsnorm && *name == "mean" {
                        assert!(got[i].iter().all(|&m| m == 0.0));
                        continue;
                    }
                    assert_close(&format!("{kind:?} bias={bias} {name} N={n} C={c}"), &got[i], &want[i], 1e-5, 1e-4);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GRU recurrence (recurrent positions)

fn gru_case(be: &impl Host, b: usize, t: usize, c: usize, bias: bool, with_h0: bool) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(41 + c as u64);
    let gi = randn(&mut rng, b * t * 3 * c, 1.0);
    let w = randn(&mut rng, 3 * c * c, 1.0 / (c as f32).sqrt());
    let bh = randn(&mut rng, 3 * c, 0.5);
    let h0 = randn(&mut rng, b * c, 0.5);
    let h0 = with_h0.then_some(&h0[..]);
    let (mut h, mut gates) = (vec![0.0; b * t * c], vec![0.0; b * t * 4 * c]);
    be.gru_forward(&mut h, &mut gates, &gi, &w, bias.then_some(&bh[..]), h0, b, t, c).unwrap();
    let dh = randn(&mut rng, b * t * c, 1.0);
    let (mut dgi, mut dw, mut db) = (randn(&mut rng, gi.len(), 1.0), randn(&mut rng, w.len(), 1.0), randn(&mut rng, 3 * c, 1.0));
    be.gru_backward(&mut dgi, &mut dw, bias.then_some(&mut db[..]), &dh, &gates, &h, h0, &w, b, t, c).unwrap();
    vec![h, gates, dgi, dw, db]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn gru_forward_and_backward_through_time_match_the_reference_on_awkward_sizes() {
    for (b, t, c, bias, h0) in [(3, 7, 36, true, false), (1, 5, 5, false, true), (5, 13, 129, true, true)] {
        let (got, want) = (gru_case(&Cpu, b, t, c, bias, h0), gru_case(&Reference, b, t, c, bias, h0));
        for (i, name) in ["h", "gates", "dgi", "dw_hh", "db_hh"].iter().enumerate() {
            assert_close(&format!("gru {name} B={b} T={t} C={c} bias={bias} h0={h0}"), &got[i], &want[i], 1e-4, 1e-3);
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn gru_gives_the_same_bits_on_one_and_two_threads() {
    // Large enough that the per-step and the final matmuls split over the pool.
    assert_same_bits_on_1_and_2_threads("gru", || gru_case(&Cpu, 16, 9, 72, true, true));
}

// ---------------------------------------------------------------------------------------------------------------
// Activations

fn activation_case(be: &impl Host, act: Activation, n: usize, f: usize) -> Vec<Vec<f32>> {
    let width = if act.is_gated() { 2 * f } else { f };
    let mut rng = Rng::new(31 + f as u64);
    let mut inp = randn(&mut rng, n * width, 3.0);
    inp[0] = 0.0; // relu's kink
    inp[1] = -12.0; // far tails
    inp[2] = 11.0;
    let mut out = vec![0.0; n * f];
    be.activation_forward(act, &mut out, &inp, f).unwrap();
    let dout = randn(&mut rng, n * f, 1.0);
    let mut dinp = randn(&mut rng, n * width, 1.0);
    be.activation_backward(act, &mut dinp, &dout, &inp, &out, f).unwrap();
    vec![out, dinp]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn every_activation_matches_the_reference_forward_and_backward() {
    for act in ACTIVATIONS {
        for (n, f) in [(7, 10), (3, 1), (50, 333)] {
            let (got, want) = (activation_case(&Cpu, act, n, f), activation_case(&Reference, act, n, f));
            assert_close(&format!("{act:?} out F={f}"), &got[0], &want[0], 1e-6, 1e-5);
            assert_close(&format!("{act:?} dinp F={f}"), &got[1], &want[1], 1e-6, 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The FFN's matmuls with the activation fused into their epilogue

/// Sizes (N, C, F) of an FFN: x (N,C) → pre (N,F or 2F) → act (N,F) → the proj layer (F → C). None a multiple of
/// a tile or of the SIMD width; up to 64 rows the CPU backend runs the two ops (a decoding step's few rows), from
/// 65 rows on it fuses them.
const FFN_SIZES: [(usize, usize, usize); 6] = [(7, 13, 37), (1, 5, 3), (33, 129, 65), (70, 13, 37), (130, 36, 9), (97, 33, 65)];

/// `matmul_act_forward` of the fc layer (weights scaled by 1/√C, so pre is of order 1: the activation's
/// interesting range), then `matmul_act_backward` of a proj layer over its output:
/// [pre, act, dpre, dw, db]. dpre starts as random values, which the backward must overwrite; dw and db start as
/// random values it must add to.
fn matmul_act_case(be: &impl Host, act: Activation, n: usize, c: usize, f: usize, bias: bool) -> Vec<Vec<f32>> {
    let width = if act.is_gated() { 2 * f } else { f };
    let mut rng = Rng::new((n * 1000 + c * 10 + f) as u64);
    let (x, w1, b1) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, width * c, 1.0 / (c as f32).sqrt()), randn(&mut rng, width, 1.0));
    let (w2, b2, dout) = (randn(&mut rng, c * f, 0.5), randn(&mut rng, c, 1.0), randn(&mut rng, n * c, 1.0));
    let _ = b2; // the proj's bias takes no part in its backward
    let (mut pre, mut out) = (vec![f32::NAN; n * width], vec![f32::NAN; n * f]);
    be.matmul_act_forward(act, &mut pre, &mut out, &x, &w1, bias.then_some(&b1[..]), n, c, width).unwrap();
    let mut dpre = randn(&mut rng, n * width, 1.0);
    let (mut dw, mut db) = (randn(&mut rng, c * f, 1.0), randn(&mut rng, c, 1.0));
    be.matmul_act_backward(act, &mut dpre, &mut dw, bias.then_some(&mut db[..]), &dout, &out, &pre, &w2, n, f, c).unwrap();
    vec![pre, out, dpre, dw, db]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn fused_matmul_activation_matches_the_reference_for_every_activation_with_and_without_bias() {
    for act in ACTIVATIONS {
        for (n, c, f) in FFN_SIZES {
            for bias in [true, false] {
                let (got, want) = (matmul_act_case(&Cpu, act, n, c, f, bias), matmul_act_case(&Reference, act, n, c, f, bias));
                for (i, name) in ["pre", "act", "dpre", "dw", "db"].iter().enumerate() {
                    if *name == "db" && !bias {
                        assert_eq!(got[i], want[i], "db is untouched without a bias");
                        continue;
                    }
                    assert_close(&format!("{act:?} {name} N={n} C={c} F={f} bias={bias}"), &got[i], &want[i], 3e-5, 2e-4);
                }
            }
        }
    }
}

/// The fused kernels of the browser's matmul (`portable`, whatever the row count), serial and parallel, against
/// the reference: the forward for every activation (gated ones fuse too: a task holds whole rows), the backward's
/// dpre for the plain ones; and the same bits serial and parallel.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn portable_fused_matmul_activation_kernels_match_the_reference_serial_and_parallel() {
    for act in ACTIVATIONS {
        for (n, c, f) in FFN_SIZES {
            let want = matmul_act_case(&Reference, act, n, c, f, true);
            let width = if act.is_gated() { 2 * f } else { f };
            let mut rng = Rng::new((n * 1000 + c * 10 + f) as u64);
            let (x, w1, b1) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, width * c, 1.0 / (c as f32).sqrt()), randn(&mut rng, width, 1.0));
            let (w2, _b2, dout) = (randn(&mut rng, c * f, 0.5), randn(&mut rng, c, 1.0), randn(&mut rng, n * c, 1.0));
            let mut serial = Vec::new();
            for parallel in [false, true] {
                let (mut pre, mut out) = (vec![f32::NAN; n * width], vec![f32::NAN; n * f]);
                portable::matmul_act_forward(act, &mut pre, &mut out, &x, &w1, Some(&b1), n, c, width, parallel);
                assert_close(&format!("portable {act:?} pre N={n}"), &pre, &want[0], 3e-5, 2e-4);
                assert_close(&format!("portable {act:?} act N={n}"), &out, &want[1], 3e-5, 2e-4);
                let mut all = vec![bits(&pre), bits(&out)];
                if !act.is_gated() {
                    let mut dpre = vec![f32::NAN; n * f];
                    portable::matmul_act_backward_input(act, &mut dpre, &dout, &w2, &pre, &out, n, f, c, parallel);
                    assert_close(&format!("portable {act:?} dpre N={n}"), &dpre, &want[2], 3e-5, 2e-4);
                    all.push(bits(&dpre));
                }
                if parallel {
                    assert!(serial == all, "portable fused kernel {act:?}: parallel and serial runs differ");
                } else {
                    serial = all;
                }
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn fused_matmul_activation_gives_the_same_bits_on_one_and_two_threads_at_w1_size() {
    for act in ACTIVATIONS {
        assert_same_bits_on_1_and_2_threads(&format!("matmul_act {act:?}"), || matmul_act_case(&Cpu, act, 768, 128, 512, true));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Attention

/// The CPU's attention against the reference on every case, each output buffer compared whole.
fn check_attention(cases: &[(AttnShape, Storage)]) {
    for (ci, (sh, st)) in cases.iter().enumerate() {
        for bias in BIASES {
            let seed = 100 + ci as u64;
            let (got, want) = (attention_case(&Cpu, sh, *st, bias, seed), attention_case(&Reference, sh, *st, bias, seed));
            for (i, name) in NAMES.iter().enumerate() {
                assert_close(&format!("{name} {bias:?} {st:?} {sh:?}"), &got[i], &want[i], 2e-5, 2e-4);
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn attention_matches_the_reference_for_every_mask_head_layout_and_bias() {
    let mut cases = Vec::new();
    for nkv in [6, 3, 2, 1] {
        cases.push(shape(2, 7, 7, 6, nkv, 6, true, 0)); // causal self-attention, MHA / GQA / MQA
        cases.push(shape(2, 7, 7, 6, nkv, 6, false, 0)); // bidirectional
    }
    cases.push(shape(2, 7, 5, 6, 2, 6, false, 0)); // cross-attention, S < T
    cases.push(shape(1, 5, 9, 6, 3, 6, false, 0)); // cross-attention, S > T
    cases.push(shape(2, 3, 8, 6, 2, 6, true, 5)); // decoding 3 new tokens after 5 cached
    cases.push(shape(1, 1, 12, 4, 1, 8, true, 11)); // one-token decode
    cases.push(shape(1, 37, 130, 4, 2, 20, true, 93)); // several query tiles and key blocks, q_offset
    cases.push(shape(2, 20, 150, 2, 1, 33, false, 0)); // several key blocks, odd head size
    cases.push(shape(1, 70, 70, 2, 2, 16, true, 0)); // causal with partial key blocks
    let mut unscaled = shape(1, 7, 7, 6, 3, 6, true, 0);
    unscaled.scale = 1.0;
    cases.push(unscaled);
    check_attention(&cases.into_iter().map(|sh| (sh, Storage::Heads)).collect::<Vec<_>>());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn attention_reads_q_k_v_from_projection_rows_and_adds_their_gradients_there_as_the_reference_does() {
    check_attention(&strided_cases());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn rope_on_the_q_and_k_columns_of_qkv_rows_matches_the_reference_and_leaves_v_alone() {
    for (b, t, nh, nkv, hs, pos0) in [(2, 7, 4, 2, 12, 0), (1, 5, 3, 3, 6, 9), (2, 3, 4, 1, 8, 2)] {
        for inverse in [false, true] {
            let (got, want) = (rope_case(&Cpu, b, t, nh, nkv, hs, pos0, inverse), rope_case(&Reference, b, t, nh, nkv, hs, pos0, inverse));
            assert_close(&format!("rope hs={hs} inverse={inverse}"), &got, &want, 0.0, 0.0);
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn attention_gives_the_same_bits_on_one_and_two_threads_at_w1_size() {
    for (sh, bias) in [
        (shape(12, 64, 64, 4, 4, 32, true, 0), Bias::None),
        (shape(12, 64, 64, 4, 2, 32, true, 0), Bias::Relative),
        (shape(12, 64, 64, 4, 1, 32, false, 0), Bias::Alibi),
        (shape(2, 7, 5, 6, 3, 6, false, 0), Bias::Relative),
    ] {
        assert_same_bits_on_1_and_2_threads(&format!("attention {sh:?}"), || attention_case(&Cpu, &sh, Storage::Heads, bias, 9));
    }
    // Gradients added straight into dqkv's columns by tasks whose rows interleave.
    for (st, bias) in [(Storage::QkvRows { pad: 1 }, Bias::Relative), (Storage::CrossRows { pad: 2 }, Bias::Alibi)] {
        let (t, s) = if st.one_buffer() { (64, 64) } else { (64, 40) };
        let sh = laid_out(shape(12, t, s, 4, 2, 12, st.one_buffer(), 0), st);
        let case = || attention_case(&Cpu, &sh, st, bias, 9).into_iter().filter(|x| !x.is_empty()).collect();
        assert_same_bits_on_1_and_2_threads(&format!("attention {st:?} {sh:?}"), case);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Loss, optimizer, grad norm

fn cross_entropy_case(be: &impl Host, n: usize, v: usize) -> (f32, usize, Vec<f32>) {
    let mut rng = Rng::new(41 + v as u64);
    let logits = randn(&mut rng, n * v, 3.0);
    let targets: Vec<i32> = (0..n).map(|r| if r % 4 == 2 { -1 } else { rng.below(v) as i32 }).collect();
    let count = targets.iter().filter(|&&t| t >= 0).count();
    let mut dlogits = vec![f32::NAN; n * v];
    let loss = be.mean_cross_entropy(&mut dlogits, &logits, &targets, v, count).unwrap();
    (loss, count, dlogits)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn cross_entropy_matches_the_reference_and_ignores_minus_one_targets() {
    for (n, v) in [(9, 13), (1, 1), (768, 65), (5, 1000)] {
        let (gl, gc, gd) = cross_entropy_case(&Cpu, n, v);
        let (wl, wc, wd) = cross_entropy_case(&Reference, n, v);
        assert_eq!(gc, wc);
        assert!((gl - wl).abs() <= 1e-5 * wl.abs().max(1.0), "loss {gl} vs {wl}");
        assert_close(&format!("dlogits N={n} V={v}"), &gd, &wd, 1e-6, 1e-4);
    }
    for nothing_counted in [Cpu.mean_cross_entropy(&mut [f32::NAN; 7], &[0.5; 7], &[-1], 7, 0), Reference.mean_cross_entropy(&mut [f32::NAN; 7], &[0.5; 7], &[-1], 7, 0)] {
        assert!(nothing_counted.unwrap().is_nan(), "no counted target: the mean loss is NaN");
    }
    let mut d = [f32::NAN; 7];
    Cpu.mean_cross_entropy(&mut d, &[0.5; 7], &[-1], 7, 0).unwrap();
    assert!(d.iter().all(|&x| x == 0.0), "an ignored row has no gradient");
    assert_same_bits_on_1_and_2_threads("cross entropy", || {
        let (l, c, d) = cross_entropy_case(&Cpu, 768, 65);
        vec![d, vec![l, c as f32]]
    });
}

/// Segments of awkward sizes covering most of a buffer of n (a gap left between two), decay on every other one.
fn segments(n: usize) -> Vec<Segment> {
    let cuts = [0, n / 7, n / 7 + 3, n / 2, n - 1];
    cuts.windows(2)
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(i, w)| Segment { view: View { offset: w[0], len: w[1] - w[0] }, decay: i % 2 == 0 })
        .collect()
}

fn adamw_case(be: &impl Host, n: usize, sq: f32, loss: f32) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(51);
    let (mut p, g) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 0.1));
    let (mut m, mut v) =
        (randn(&mut rng, n, 0.01), randn(&mut rng, n, 0.001).iter().map(|x| x.abs()).collect::<Vec<_>>());
    let h = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, t: 3 };
    be.adamw(&mut p, &g, &mut m, &mut v, &segments(n), &[sq], loss, &h).unwrap();
    vec![p, m, v]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn adamw_matches_the_reference_over_segments_with_and_without_decay() {
    for n in [37, 100_003] {
        let (got, want) = (adamw_case(&Cpu, n, 1.0, 2.0), adamw_case(&Reference, n, 1.0, 2.0));
        for (i, name) in ["p", "m", "v"].iter().enumerate() {
            assert_close(&format!("adamw {name} n={n}"), &got[i], &want[i], 1e-7, 1e-6);
        }
        // Outside every segment (the gap, the last element) nothing moves.
        let untouched = adamw_case(&Reference, n, f32::NAN, 2.0);
        assert_eq!(want[0][n - 1], untouched[0][n - 1]);
    }
    assert_same_bits_on_1_and_2_threads("adamw", || adamw_case(&Cpu, 100_003, 1.0, 2.0));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn adamw_changes_nothing_when_the_loss_or_the_gradient_norm_is_not_finite() {
    let before = {
        let mut rng = Rng::new(51);
        let p = randn(&mut rng, 37, 1.0);
        let _g = randn(&mut rng, 37, 0.1);
        let m = randn(&mut rng, 37, 0.01);
        let v: Vec<f32> = randn(&mut rng, 37, 0.001).iter().map(|x| x.abs()).collect();
        vec![p, m, v]
    };
    for (sq, loss) in [(f32::NAN, 1.0), (f32::INFINITY, 1.0), (1.0, f32::NAN), (1.0, f32::INFINITY)] {
        assert_eq!(adamw_case(&Cpu, 37, sq, loss), before, "cpu, Σg² {sq}, loss {loss}");
        assert_eq!(adamw_case(&Reference, 37, sq, loss), before, "reference, Σg² {sq}, loss {loss}");
    }
    assert_ne!(adamw_case(&Cpu, 37, 1.0, 1.0), before, "a good step moves the parameters");
}

fn sums_case(be: &impl Host, n: usize) -> Vec<f32> {
    let g = randn(&mut Rng::new(61), n, 1.0);
    let segs = segments(n);
    let mut out = vec![f32::NAN; 1 + segs.len()];
    be.sums_of_squares(&mut out, &g, &segs).unwrap();
    out
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn sums_of_squares_match_the_reference_and_are_the_same_on_one_and_two_threads() {
    for n in [8, 37, 100_003] {
        let (got, want) = (sums_case(&Cpu, n), sums_case(&Reference, n));
        assert_close(&format!("Σg² n={n}"), &got, &want, 1e-6, 1e-6);
        let by_hand: f64 = segments(n).iter().map(|s| s.view.of(&randn(&mut Rng::new(61), n, 1.0)).iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sum();
        assert!((want[0] as f64 - by_hand).abs() <= 1e-6 * by_hand.max(1.0), "total {} vs {by_hand}", want[0]);
    }
    assert_same_bits_on_1_and_2_threads("Σg²", || vec![sums_case(&Cpu, 100_003)]);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn clipping_scales_to_the_clip_norm_only_above_it() {
    for be_is_cpu in [true, false] {
        let g0 = randn(&mut Rng::new(71), 100_003, 1.0);
        let sq: f32 = g0.iter().map(|x| x * x).sum();
        for (clip, want_norm) in [(1.0, 1.0), (0.0, sq.sqrt()), (1e9, sq.sqrt())] {
            let mut g = g0.clone();
            if be_is_cpu {
                Cpu.clip_grad_norm(&mut g, &[sq], clip).unwrap();
            } else {
                Reference.clip_grad_norm(&mut g, &[sq], clip).unwrap();
            }
            let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - want_norm).abs() <= 1e-3 * want_norm, "clip {clip}: norm {norm}, want {want_norm}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The model's glue: embedding, residual adds, masks, head layout, the KV cache's append

fn glue_case(be: &impl Host, b: usize, t: usize, nh: usize, hs: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(81 + t as u64);
    let (c, vocab, stride) = (nh * hs, 11, 3 * nh * hs + 5);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let (wte, wpe, sin) = (randn(&mut rng, vocab * c, 1.0), randn(&mut rng, (t + 3) * c, 1.0), randn(&mut rng, t * c, 1.0));
    let mut emb = vec![f32::NAN; b * t * c];
    be.embedding_forward(&mut emb, &ids, &wte, Some(&wpe), &sin, t, 3, c).unwrap();
    let dx = randn(&mut rng, b * t * c, 1.0);
    let (mut dwte, mut dwpe) = (randn(&mut rng, vocab * c, 1.0), randn(&mut rng, t * c, 1.0));
    be.embedding_backward(&mut dwte, Some(&mut dwpe), &dx, &ids, t, c).unwrap();
    let (x, y, m) = (randn(&mut rng, b * t * c, 1.0), randn(&mut rng, b * t * c, 1.0), randn(&mut rng, b * t * c, 1.0));
    let (mut added, mut scaled, mut acc, mut masked) = (vec![0.0; x.len()], vec![0.0; x.len()], x.clone(), x.clone());
    be.add_scaled(&mut added, &x, &y, 0.7).unwrap();
    be.scale(&mut scaled, &x, -1.3).unwrap();
    be.add_into(&mut acc, &y).unwrap();
    be.mul_into(&mut masked, &m).unwrap();
    // The KV cache's append: new rows from contiguous heads, and from a projection's rows (columns nh·HS + 2 ..).
    let (old, new, rows) = (randn(&mut rng, nh * 5 * hs, 1.0), randn(&mut rng, nh * t * hs, 1.0), randn(&mut rng, t * stride, 1.0));
    let mut appended = vec![f32::NAN; nh * (5 + t) * hs];
    be.append_heads(&mut appended, &old, &new, HeadLayout::heads(nh, t, hs), nh, 5, t, hs).unwrap();
    let mut from_rows = vec![f32::NAN; nh * (5 + t) * hs];
    be.append_heads(&mut from_rows, &old, &rows, HeadLayout::rows(t, stride, nh * hs + 2, hs), nh, 5, t, hs).unwrap();
    let mut zeroed = randn(&mut rng, 70_000, 1.0);
    be.zero(&mut zeroed).unwrap();
    vec![emb, dwte, dwpe, added, scaled, acc, masked, appended, from_rows, zeroed]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn the_glue_ops_match_the_reference_exactly() {
    // Element-wise and copies: no rounding differs, so the bits agree. The big case runs in parallel pieces.
    for (b, t, nh, hs) in [(2, 7, 3, 5), (1, 1, 1, 1), (4, 64, 4, 32), (12, 64, 4, 32)] {
        let (got, want) = (glue_case(&Cpu, b, t, nh, hs), glue_case(&Reference, b, t, nh, hs));
        let names = ["embedding", "dwte", "dwpe", "add_scaled", "scale", "add_into", "mul_into", "append_heads", "append_heads (rows)", "zero"];
        for (i, name) in names.iter().enumerate() {
            assert!(got[i].iter().all(|x| x.is_finite()), "{name}: every element written");
            assert_eq!(bits(&got[i]), bits(&want[i]), "{name} B={b} T={t} NH={nh} HS={hs}");
        }
    }
    assert_same_bits_on_1_and_2_threads("glue", || glue_case(&Cpu, 12, 64, 4, 32));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn append_heads_takes_the_new_rows_from_their_columns_of_a_projection() {
    let (t, nh, hs, stride, off, len) = (5, 3, 4, 40, 7, 2);
    let rows = randn(&mut Rng::new(5), t * stride, 1.0);
    let old = randn(&mut Rng::new(6), nh * len * hs, 1.0);
    let mut out = vec![0.0; nh * (len + t) * hs];
    Reference.append_heads(&mut out, &old, &rows, HeadLayout::rows(t, stride, off, hs), nh, len, t, hs).unwrap();
    for h in 0..nh {
        for j in 0..len + t {
            for d in 0..hs {
                let want = if j < len { old[(h * len + j) * hs + d] } else { rows[(j - len) * stride + off + h * hs + d] };
                assert_eq!(out[(h * (len + t) + j) * hs + d], want, "head {h} position {j}");
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn a_view_outside_the_flat_buffer_is_an_error_not_a_panic() {
    let mut g = vec![0.0f32; 128];
    assert!(<Cpu as Backend>::param(&g, View { offset: 100, len: 29 }).is_err());
    assert!(<Reference as Backend>::grad(&mut g, View { offset: usize::MAX, len: 2 }).is_err());
    assert!(<Cpu as Backend>::grad_pair(&mut g, View { offset: 0, len: 64 }, Some(View { offset: 63, len: 2 })).is_err());
    let (a, b) = <Cpu as Backend>::grad_pair(&mut g, View { offset: 64, len: 64 }, Some(View { offset: 0, len: 64 })).unwrap();
    assert_eq!((a.len(), b.map(|b| b.len())), (64, Some(64)));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn norms_and_activations_give_the_same_bits_on_one_and_two_threads() {
    assert_same_bits_on_1_and_2_threads("layernorm", || norm_case(&Cpu, NormKind::Layernorm, true, 768, 128));
    assert_same_bits_on_1_and_2_threads("rmsnorm", || norm_case(&Cpu, NormKind::Rmsnorm, false, 768, 128));
    for act in ACTIVATIONS {
        assert_same_bits_on_1_and_2_threads("activation", || activation_case(&Cpu, act, 768, 512));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Mixture-of-Experts routing

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn moe_routing_ops_match_the_reference_exactly_and_keep_their_rules() {
    // (tokens, experts, k, capacity): no drops; top-1 with drops; the most experts, top-3, a capacity of 2.
    for (n, e, k, cap) in [(37, 4, 2, 37), (37, 8, 1, 5), (20, 64, 3, 2)] {
        let (got, want) = (moe_case(&Cpu, n, e, k, cap, 9, 5), moe_case(&Reference, n, e, k, cap, 9, 5));
        let names = ["probs", "choice", "slot", "weight", "stats", "out", "dx", "dweight", "dlogits"];
        for (i, name) in names.iter().enumerate() {
            assert_eq!(bits(&got[i]), bits(&want[i]), "{name} N={n} E={e} k={k} cap={cap}");
        }
        let [probs, choice, slot, weight, stats] = [&want[0], &want[1], &want[2], &want[3], &want[4]];
        // Row 0's tie goes to the lower index.
        assert_eq!((choice[0], choice.get(1).copied().filter(|_| k > 1)), (1.0, (k > 1).then_some((e - 1) as f32)));
        for i in 0..n {
            let w: f32 = weight[i * k..(i + 1) * k].iter().sum();
            assert!((w - 1.0).abs() < 1e-5, "token {i}: weights sum to {w}");
            let p: Vec<f32> = choice[i * k..(i + 1) * k].iter().map(|&x| probs[i * e + x as usize]).collect();
            assert!(p.windows(2).all(|w| w[0] >= w[1]), "token {i}: choices best first");
            let best_left_out = (0..e).filter(|x| !choice[i * k..(i + 1) * k].contains(&(*x as f32))).map(|x| probs[i * e + x]).fold(0.0, f32::max);
            assert!(p[k - 1] >= best_left_out, "token {i}: a better expert was left out");
        }
        let counts = &stats[2..];
        assert_eq!(counts.iter().sum::<f32>(), (n * k) as f32, "every assignment counted");
        let dropped: f32 = counts.iter().map(|&c| (c - cap as f32).max(0.0)).sum();
        assert_eq!((stats[1], slot.iter().filter(|&&s| s < 0.0).count() as f32), (dropped, dropped), "drops: the overflow of each expert");
        assert!(slot.iter().all(|&s| s < cap as f32), "slots below the capacity");
        // E·Σ f_e·P_e from its definition.
        let balance: f64 = (0..e)
            .map(|x| counts[x] as f64 / (n * k) as f64 * (0..n).map(|i| probs[i * e + x] as f64).sum::<f64>() / n as f64)
            .sum::<f64>()
            * e as f64;
        assert!((stats[0] as f64 - balance).abs() < 1e-5, "balance {} vs {balance}", stats[0]);
    }
    assert_same_bits_on_1_and_2_threads("moe routing", || moe_case(&Cpu, 300, 8, 2, 90, 33, 6));
}

/// One expert FFN stand-in (fc: C → OC, proj: OC → C, each with a bias when asked; no activation) over routed
/// rows, forward and backward, in the grouped layout: [xe, a, ye, out, dye, da, dxe, dx, dweight, grads]. With
/// `grouped`, through the grouped ops (one call for all the experts); else expert by expert through the per-expert
/// ops, each expert's rows then placed where the grouped layout has them.
#[allow(clippy::too_many_arguments)]
fn expert_case(be: &impl Host, grouped: bool, n: usize, e: usize, k: usize, cap: usize, c: usize, oc: usize, bias: bool) -> Vec<Vec<f32>> {
    let mut rng = Rng::new((n * 31 + e * 7 + oc) as u64);
    let logits = randn(&mut rng, n * e, 1.0);
    let (mut probs, mut choice, mut slot, mut weight) = (vec![0.0; n * e], vec![0.0; n * k], vec![0.0; n * k], vec![0.0; n * k]);
    let mut stats = vec![0.0; moe_stats_len(e)];
    be.moe_route(&mut probs, &mut choice, &mut slot, &mut weight, &mut stats, &logits, n, e, k, cap).unwrap();
    let r = Routing { choice: &choice[..], slot: &slot[..], weight: &weight[..], n, k };
    let rows: Vec<usize> = (0..e).map(|ex| (stats[2 + ex] as usize).min(cap)).collect();
    let total: usize = rows.iter().sum();
    // The experts' parameters in one flat buffer: fc.w (OC,C), fc.b (OC), proj.w (C,OC), proj.b (C) per expert.
    let each = 2 * oc * c + oc + c;
    let params = randn(&mut rng, e * each, 0.3);
    let view = |ex: usize, at: usize, len: usize| View { offset: ex * each + at, len };
    let fc: Vec<(View, View)> = (0..e).map(|ex| (view(ex, 0, oc * c), view(ex, oc * c, oc))).collect();
    let proj: Vec<(View, View)> = (0..e).map(|ex| (view(ex, oc * c + oc, c * oc), view(ex, 2 * oc * c + oc, c))).collect();
    let x = randn(&mut rng, n * c, 1.0);
    let dout = randn(&mut rng, n * c, 1.0);
    let mut grads = randn(&mut rng, e * each, 1.0);
    let (mut xe, mut a, mut ye, mut out) = (vec![0.0; total * c], vec![0.0; total * oc], vec![0.0; total * c], vec![0.0; n * c]);
    let (mut dye, mut da, mut dxe, mut dx, mut dweight) = (vec![0.0; total * c], vec![0.0; total * oc], vec![0.0; total * c], vec![0.0; n * c], vec![0.0; n * k]);
    let ws = |ls: &[(View, View)]| ls.iter().map(|l| l.0.of(&params)).collect::<Vec<_>>();
    let bs = |ls: &[(View, View)]| ls.iter().map(|l| bias.then(|| l.1.of(&params))).collect::<Vec<_>>();
    if grouped {
        be.moe_gather_grouped(&mut xe, &x, r, &rows, c).unwrap();
        be.matmul_grouped_forward(&mut a, &xe, &ws(&fc), &bs(&fc), &rows, c, oc).unwrap();
        be.matmul_grouped_forward(&mut ye, &a, &ws(&proj), &bs(&proj), &rows, oc, c).unwrap();
        be.moe_combine_grouped(&mut out, &ye, r, &rows, c).unwrap();
        be.moe_combine_backward_grouped(&mut dye, &mut dweight, &dout, &ye, r, &rows, c).unwrap();
        // The gradient views asked in reverse order: grad_many gives them back in the order asked.
        let mut backward = |ls: &[(View, View)], dinp: &mut [f32], dy: &[f32], inp: &[f32], ci: usize, co: usize| {
            let views: Vec<View> = ls.iter().rev().flat_map(|l| [l.0, l.1]).collect();
            let mut g = Cpu::grad_many(&mut grads, &views).unwrap();
            g.reverse();
            let (mut dw, mut db) = (vec![], vec![]);
            for pair in g.chunks_exact_mut(2) {
                let [b, w] = pair else { unreachable!() };
                dw.push(std::mem::take(w));
                db.push(bias.then(|| std::mem::take(b)));
            }
            be.matmul_grouped_backward(dinp, dw, db, dy, inp, &ws(ls), &rows, ci, co).unwrap();
        };
        backward(&proj, &mut da, &dye, &a, oc, c);
        backward(&fc, &mut dxe, &da, &xe, c, oc);
        be.moe_scatter_grouped(&mut dx, &dxe, r, &rows, c).unwrap();
    } else {
        let mut at = 0;
        for (ex, &m) in rows.iter().enumerate() {
            let (rc, ro) = (at * c..(at + m) * c, at * oc..(at + m) * oc);
            at += m;
            if m == 0 {
                continue;
            }
            let (w1, b1, w2, b2) = (fc[ex].0.of(&params), bias.then(|| fc[ex].1.of(&params)), proj[ex].0.of(&params), bias.then(|| proj[ex].1.of(&params)));
            be.moe_gather(&mut xe[rc.clone()], &x, r, ex, m, c).unwrap();
            be.matmul_forward(&mut a[ro.clone()], &xe[rc.clone()], w1, b1, m, c, oc).unwrap();
            be.matmul_forward(&mut ye[rc.clone()], &a[ro.clone()], w2, b2, m, oc, c).unwrap();
            be.moe_combine(&mut out, &ye[rc.clone()], r, ex, m, c).unwrap();
            be.moe_combine_backward(&mut dye[rc.clone()], &mut dweight, &dout, &ye[rc.clone()], r, ex, m, c).unwrap();
            let (dw, db) = Cpu::grad_pair(&mut grads, proj[ex].0, bias.then_some(proj[ex].1)).unwrap();
            be.matmul_backward(Some(&mut da[ro.clone()]), dw, db, &dye[rc.clone()], &a[ro.clone()], w2, m, oc, c).unwrap();
            let (dw, db) = Cpu::grad_pair(&mut grads, fc[ex].0, bias.then_some(fc[ex].1)).unwrap();
            be.matmul_backward(Some(&mut dxe[rc.clone()]), dw, db, &da[ro.clone()], &xe[rc.clone()], w1, m, c, oc).unwrap();
            be.moe_scatter(&mut dx, &dxe[rc], r, ex, m, c).unwrap();
        }
    }
    vec![xe, a, ye, out, dye, da, dxe, dx, dweight, grads]
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn grouped_expert_ops_match_the_per_expert_ops_of_the_reference() {
    // (tokens, experts, k, capacity, C, OC, bias): awkward sizes with drops and biases; more experts than tokens
    // choose (some get no rows); W1's MoE FFN shape (8 experts, top 2, ≈ 48 rows each here).
    let cases = [(37, 5, 2, 12, 9, 13, true), (6, 8, 1, 6, 17, 5, true), (192, 8, 2, 192, 128, 176, false)];
    let names = ["xe", "a", "ye", "out", "dye", "da", "dxe", "dx", "dweight", "grads"];
    for (n, e, k, cap, c, oc, bias) in cases {
        let got = expert_case(&Cpu, true, n, e, k, cap, c, oc, bias);
        let want = expert_case(&Reference, false, n, e, k, cap, c, oc, bias);
        for (i, name) in names.iter().enumerate() {
            assert_close(&format!("{name} N={n} E={e} k={k} C={c} OC={oc}"), &got[i], &want[i], 1e-4, 1e-3);
        }
        // The reference's grouped ops are its per-expert ops expert by expert: the same bits.
        let ref_grouped = expert_case(&Reference, true, n, e, k, cap, c, oc, bias);
        assert!(ref_grouped.iter().zip(&want).all(|(a, b)| bits(a) == bits(b)), "reference grouped vs per expert");
    }
    assert_same_bits_on_1_and_2_threads("grouped experts", || expert_case(&Cpu, true, 192, 8, 2, 192, 128, 176, false));
    // The grouped row moves alone, on the same inputs: the CPU's pieces add in the reference's order, bit for bit.
    let moves = |be: &dyn Fn(&mut [Vec<f32>], Routing<&[f32]>, &[usize])| {
        let (n, e, k, cap, c) = (300, 6, 3, 140, 128); // large enough for the pieces to run on the pool
        let mut rng = Rng::new(5);
        let logits = randn(&mut rng, n * e, 1.0);
        let (mut probs, mut choice, mut slot, mut weight) = (vec![0.0; n * e], vec![0.0; n * k], vec![0.0; n * k], vec![0.0; n * k]);
        let mut stats = vec![0.0; moe_stats_len(e)];
        Reference.moe_route(&mut probs, &mut choice, &mut slot, &mut weight, &mut stats, &logits, n, e, k, cap).unwrap();
        let rows: Vec<usize> = (0..e).map(|ex| (stats[2 + ex] as usize).min(cap)).collect();
        let total = rows.iter().sum::<usize>();
        assert!(stats[1] > 0.0, "the case drops assignments");
        let r = Routing { choice: &choice[..], slot: &slot[..], weight: &weight[..], n, k };
        // [x, ye, dout, dxe | xe, out, dye, dx, dweight]
        let mut bufs = vec![randn(&mut rng, n * c, 1.0), randn(&mut rng, total * c, 1.0), randn(&mut rng, n * c, 1.0), randn(&mut rng, total * c, 1.0)];
        bufs.extend([vec![f32::NAN; total * c], randn(&mut rng, n * c, 1.0), randn(&mut rng, total * c, 1.0), randn(&mut rng, n * c, 1.0), randn(&mut rng, n * k, 1.0)]);
        be(&mut bufs, r, &rows);
        bufs
    };
    fn run_moves(be: &impl Host, b: &mut [Vec<f32>], r: Routing<&[f32]>, rows: &[usize]) {
        let ([x, ye, dout, dxe], [xe, out, dye, dx, dweight]) = b.split_at_mut(4) else { unreachable!() };
        let c = x.len() / r.n;
        be.moe_gather_grouped(xe, x, r, rows, c).unwrap();
        be.moe_combine_grouped(out, ye, r, rows, c).unwrap();
        be.moe_combine_backward_grouped(dye, dweight, dout, ye, r, rows, c).unwrap();
        be.moe_scatter_grouped(dx, dxe, r, rows, c).unwrap();
    }
    let got = in_pool(2, || moves(&|b, r, rows| run_moves(&Cpu, b, r, rows)));
    let want = moves(&|b, r, rows| run_moves(&Reference, b, r, rows));
    for (i, name) in ["xe", "out", "dye", "dx", "dweight"].iter().enumerate() {
        assert!(bits(&got[4 + i]) == bits(&want[4 + i]), "grouped row moves: {name} differs from the reference");
    }
    // Overlapping gradient views are an error, not two writers of one tensor.
    let mut g = vec![0.0; 10];
    assert!(Cpu::grad_many(&mut g, &[View { offset: 0, len: 4 }, View { offset: 3, len: 2 }]).is_err());
    assert!(Cpu::grad_many(&mut g, &[View { offset: 8, len: 4 }]).is_err());
}

/// A whole Mixture-of-Experts model, forward and backward, on the CPU backend (natively its grouped expert ops,
/// `Backend::groups_experts`) against the reference (which runs the experts one by one), and the same bits on 1
/// and 2 threads.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn a_moe_model_matches_the_reference_forward_and_backward() {
    use transformer_playground::config::ModelConfig;
    use transformer_playground::model::{Batch, Model};
    let cfg: ModelConfig = serde_json::from_str(
        r#"{"arch": "gpt", "d_model": 40, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 24,
            "ffn": {"activation": "swiglu", "mult": 2, "moe": {"experts": 6, "top_k": 2, "aux_loss": 0.05, "capacity_factor": 1.25}},
            "norm": {"kind": "rmsnorm", "placement": "pre"}, "position": {"kind": "rope"}, "attention": {"scale": "inv_sqrt_dk"}}"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    let (vocab, b, t) = (17, 3, 24);
    let model = Model::new(&cfg, vocab, 3);
    let mut rng = Rng::new(4);
    let idx: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let targets: Vec<i32> = (0..b * t).map(|_| rng.below(vocab) as i32).collect();
    let batch = Batch { b, t, idx, targets, s: 0, src: vec![] };
    let run = |be: &dyn Fn(&Model, &Batch) -> (Vec<f32>, Vec<f32>, Vec<f32>)| be(&model, &batch);
    let cpu = |m: &Model, b: &Batch| {
        let f = m.forward(&Cpu, b, None);
        let mut g = vec![0.0; m.params.len()];
        m.backward(&Cpu, &f, b, &mut g);
        let stats = f.moe_stats().into_iter().flatten().copied().collect();
        (f.logits, g, stats)
    };
    let reference = |m: &Model, b: &Batch| {
        let f = m.forward(&Reference, b, None);
        let mut g = vec![0.0; m.params.len()];
        m.backward(&Reference, &f, b, &mut g);
        let stats = f.moe_stats().into_iter().flatten().copied().collect();
        (f.logits, g, stats)
    };
    let ((lc, gc, sc), (lr, gr, sr)) = (run(&cpu), run(&reference));
    assert_eq!(sc[1..], sr[1..], "the same routing (drops, loads)");
    assert!(sc[1] > 0.0 || sc[sc.len() / 2 + 1] > 0.0, "the capacity drops something in this batch");
    assert_close("moe logits", &lc, &lr, 1e-5, 1e-4);
    let scale = gr.iter().fold(0.0f32, |a, g| a.max(g.abs()));
    assert_close("moe gradients", &gc, &gr, 1e-4 * scale, 1e-3);
    assert_same_bits_on_1_and_2_threads("moe model", || {
        let (l, g, _) = cpu(&model, &batch);
        vec![l, g]
    });
}
