//! The CPU backend's naive (materialising) attention (`backend::cpu::attention_naive_*`) against the scalar
//! reference attention (`backend::ops::attention`, through `Reference`), forward and backward, on seeded random data
//! of awkward sizes: MHA, GQA and MQA; causal, bidirectional and cross (S ≠ T); decoding after cached keys
//! (q_offset > 0); more query rows and keys than one task's block. Gradients start nonzero, so accumulation (`+=`)
//! is checked too. Also what the forward keeps (a probability per query and key, 0 where masked, rows summing to 1),
//! the same bits on 1 and 2 threads, and errors (not panics) for buffers too small and heads that cannot share.
//!
//! Also run in headless Chromium on wasm32 by `scripts/test-wasm-kernels.sh` (the simd128 kernels, relaxed-simd and
//! the scalar fallback), where the thread-count test is left out: that build has no pool.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use transformer_playground::backend::cpu::{attention_naive_backward, attention_naive_forward, attention_naive_probs_len};
use transformer_playground::backend::{AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Reference};
use transformer_playground::rng::Rng;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (err, tol) = ((g - w).abs(), 2e-5 + 2e-4 * w.abs());
        assert!(err <= tol, "{what}[{i}]: got {g}, want {w} (|err| {err} > {tol})");
    }
    assert!(got.iter().any(|x| *x != 0.0), "{what}: all zero");
}

#[allow(clippy::too_many_arguments)]
fn shape(b: usize, t: usize, s: usize, nh: usize, nkv: usize, hs: usize, causal: bool, q_offset: usize) -> AttnShape {
    let (q, kv) = (HeadLayout::heads(nh, t, hs), HeadLayout::heads(nkv, s, hs));
    AttnShape { b, t, s, nh, nkv, hs, causal, q_offset, scale: 1.0 / (hs as f32).sqrt(), q, k: kv, v: kv }
}

/// Inputs and starting gradients of one call: [q, k, v, dout, dq, dk, dv].
fn inputs(sh: &AttnShape, seed: u64) -> [Vec<f32>; 7] {
    let mut rng = Rng::new(seed);
    let (nq, nkv) = (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nkv * sh.s * sh.hs);
    [nq, nkv, nkv, nq, nq, nkv, nkv].map(|n| randn(&mut rng, n))
}

/// Runs the naive path (`naive: true`) or the reference attention (no bias) on one call whose dk and dv share a
/// buffer: k, v and their gradients are the two halves of one (v at an offset). [out, dq, dk, dv], and the naive
/// path's probs.
fn run(naive: bool, sh: &AttnShape, seed: u64) -> Vec<Vec<f32>> {
    let [q, k, v, dout, mut dq, dk, dv] = inputs(sh, seed);
    let n = k.len();
    let sh = AttnShape { v: HeadLayout { offset: n, ..sh.v }, ..*sh };
    let (kv, mut dkv) = ([k, v].concat(), [dk, dv].concat());
    let mut out = vec![f32::NAN; q.len()];
    let grads = AttnGrads::QAndKv { dq: &mut dq[..], dkv: &mut dkv[..] };
    let mut probs = vec![f32::NAN; attention_naive_probs_len(&sh)];
    if naive {
        attention_naive_forward(&mut out, &mut probs, &q, &kv, &kv, &sh).unwrap();
        attention_naive_backward(grads, &dout, &q, &kv, &kv, &probs, &sh).unwrap();
    } else {
        let mut lse = vec![f32::NAN; sh.b * sh.nh * sh.t];
        Reference.attention_forward(&mut out, &mut lse, &q, &kv, &kv, AttnBias::None, &sh).unwrap();
        Reference.attention_backward(grads, None, &dout, &q, &kv, &kv, &out, &lse, AttnBias::None, &sh).unwrap();
    }
    vec![out, dq, dkv[..n].to_vec(), dkv[n..].to_vec(), probs]
}

fn naive(sh: &AttnShape, seed: u64) -> Vec<Vec<f32>> {
    run(true, sh, seed)
}

fn reference(sh: &AttnShape, seed: u64) -> Vec<Vec<f32>> {
    run(false, sh, seed)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn naive_attention_equals_the_reference_forward_and_backward() {
    let mut cases = Vec::new();
    for nkv in [6, 3, 1] {
        cases.push(shape(2, 7, 7, 6, nkv, 6, true, 0)); // causal self-attention: MHA, GQA, MQA
        cases.push(shape(2, 7, 7, 6, nkv, 6, false, 0)); // bidirectional
    }
    cases.push(shape(2, 7, 5, 6, 2, 12, false, 0)); // cross-attention, S < T
    cases.push(shape(1, 5, 9, 4, 2, 12, false, 0)); // cross-attention, S > T
    cases.push(shape(2, 3, 8, 4, 1, 12, true, 5)); // decoding 3 new tokens after 5 cached keys, MQA
    cases.push(shape(1, 1, 12, 4, 2, 8, true, 11)); // one-token decode
    cases.push(shape(1, 37, 130, 4, 2, 20, true, 93)); // several query blocks and key blocks, q_offset
    cases.push(shape(1, 70, 70, 2, 2, 16, true, 0)); // causal, partial blocks
    cases.push(shape(2, 20, 150, 3, 1, 33, false, 0)); // odd head size, three key blocks
    let mut unscaled = shape(1, 7, 7, 6, 3, 6, true, 0);
    unscaled.scale = 1.0;
    cases.push(unscaled);
    for (ci, sh) in cases.iter().enumerate() {
        let seed = 500 + ci as u64;
        let (got, want) = (naive(sh, seed), reference(sh, seed));
        for (i, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
            assert_close(&format!("naive {name} {sh:?}"), &got[i], &want[i]);
        }
        // What the forward keeps: a probability per (query, key), 0 where masked, each row summing to 1.
        for (row, p) in got[4].chunks(sh.s).enumerate() {
            let i = row % sh.t;
            for (j, &pj) in p.iter().enumerate() {
                let masked = sh.causal && j > sh.q_offset + i;
                assert!(if masked { pj == 0.0 } else { pj > 0.0 }, "probs row {row} key {j}: {pj} ({sh:?})");
            }
            let sum: f32 = p.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "probs row {row} sums to {sum} ({sh:?})");
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn naive_attention_reads_q_k_v_from_projection_rows_and_adds_their_gradients_there_as_the_reference_does() {
    // Self-attention from one padded qkv buffer (dqkv the same), odd head sizes, GQA and MQA, causal and not.
    for (ci, (nh, nkv, hs, causal)) in [(4, 4, 5, true), (4, 2, 12, false), (6, 1, 5, true), (2, 2, 12, true)].into_iter().enumerate() {
        let (b, t, pad) = (2, 70, 3);
        let w = 2 * pad + (nh + 2 * nkv) * hs;
        let [ql, kl, vl] = [0, nh * hs, (nh + nkv) * hs].map(|off| HeadLayout::rows(t, w, pad + off, hs));
        let sh = AttnShape { q: ql, k: kl, v: vl, ..shape(b, t, t, nh, nkv, hs, causal, 0) };
        let mut rng = Rng::new(700 + ci as u64);
        let (x, dout, start) = (randn(&mut rng, b * t * w), randn(&mut rng, b * t * nh * hs), randn(&mut rng, b * t * w));
        let (mut got, mut want) = (start.clone(), start);
        let (mut out, mut probs) = (vec![f32::NAN; dout.len()], vec![f32::NAN; attention_naive_probs_len(&sh)]);
        attention_naive_forward(&mut out, &mut probs, &x, &x, &x, &sh).unwrap();
        attention_naive_backward(AttnGrads::Qkv(&mut got[..]), &dout, &x, &x, &x, &probs, &sh).unwrap();
        let (mut ref_out, mut lse) = (vec![f32::NAN; dout.len()], vec![f32::NAN; b * nh * t]);
        Reference.attention_forward(&mut ref_out, &mut lse, &x, &x, &x, AttnBias::None, &sh).unwrap();
        Reference.attention_backward(AttnGrads::Qkv(&mut want[..]), None, &dout, &x, &x, &x, &ref_out, &lse, AttnBias::None, &sh).unwrap();
        assert_close(&format!("naive out {sh:?}"), &out, &ref_out);
        assert_close(&format!("naive dqkv {sh:?}"), &got, &want);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn naive_attention_with_no_keys_outputs_zeros_and_leaves_the_gradients() {
    let sh = shape(1, 3, 0, 2, 1, 4, false, 0);
    let [q, k, v, dout, mut dq, mut dk, _] = inputs(&sh, 1);
    let dq0 = dq.clone();
    let mut out = vec![f32::NAN; q.len()];
    attention_naive_forward(&mut out, &mut [], &q, &k, &v, &sh).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
    attention_naive_backward(AttnGrads::QAndKv { dq: &mut dq[..], dkv: &mut dk[..] }, &dout, &q, &k, &v, &[], &sh).unwrap();
    assert_eq!(dq, dq0);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn naive_attention_gives_the_same_bits_on_one_and_two_threads() {
    // Big enough to run on the pool: (batch, head) tasks, query blocks, key blocks.
    let sh = shape(2, 150, 150, 4, 2, 32, true, 0);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| naive(&sh, 9))
    };
    let (one, two) = (run(1), run(2));
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(bits(a) == bits(b), "output {i} differs between 1 and 2 threads");
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
fn naive_attention_refuses_buffers_too_small_and_heads_that_cannot_share() {
    let sh = shape(1, 4, 4, 2, 2, 8, true, 0);
    let [q, k, v, ..] = inputs(&sh, 2);
    let mut out = vec![0.0; q.len()];
    let err = attention_naive_forward(&mut out, &mut [0.0; 31], &q, &k, &v, &sh).unwrap_err().to_string();
    assert!(err.contains("naive attention probs has 31 elements, the op needs 32"), "{err}");
    let err = attention_naive_forward(&mut out, &mut [0.0; 32], &q, &k[..5], &v, &sh).unwrap_err().to_string();
    assert!(err.contains("naive attention k has 5 elements, the op needs 64"), "{err}");
    let bad = shape(1, 4, 4, 3, 2, 8, true, 0);
    let err = attention_naive_forward(&mut out, &mut [0.0; 64], &q, &k, &v, &bad).unwrap_err().to_string();
    assert!(err.contains("3 query heads cannot share 2 kv heads"), "{err}");
    let (mut dq, mut dkv) = (vec![0.0; q.len()], vec![0.0; 3]);
    let grads = AttnGrads::QAndKv { dq: &mut dq[..], dkv: &mut dkv[..] };
    let err = attention_naive_backward(grads, &q, &q, &k, &v, &[0.0; 32], &sh).unwrap_err().to_string();
    assert!(err.contains("naive attention dk, dv has 3 elements, the op needs 64"), "{err}");
    // A layout reaching past its buffer.
    let past = AttnShape { q: HeadLayout { offset: 1, ..sh.q }, ..sh };
    let err = attention_naive_forward(&mut out, &mut [0.0; 32], &q, &k, &v, &past).unwrap_err().to_string();
    assert!(err.contains("naive attention q has 64 elements, the op needs 65"), "{err}");
}
