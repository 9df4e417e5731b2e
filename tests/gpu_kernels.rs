//! The WebGPU backend (`backend::gpu`) against the scalar reference, op by op, on seeded random data of awkward
//! sizes (T = 7, C = 36, S ≠ T, NH = 6 / NKV = 2, not multiples of any tile), with `atol + rtol·|ref|`: the model's
//! ops, its glue, and the optimizer's (Σg² per tensor, clipping, the guarded AdamW).
//!
//! The ops run through `gpu_harness::OnGpu`, a host backend whose every op uploads its slices, records the op
//! through a fresh `GpuStep` (the op trait on the GPU, which a training step records into one submission), submits
//! and reads the results back. Backward ops start from nonzero gradients, so accumulation (`+=`) is checked too.
//! Then the kernels' own API: the naive attention kernels, multi-pass reductions, and the errors a user can cause.
//!
//! Natively the kernels run on whatever adapter wgpu finds; without a GPU that is Mesa's lavapipe (llvmpipe).
//! No adapter is a FAILURE, not a skip: `cargo test --release --features gpu --test gpu_kernels`.
#![cfg(feature = "gpu")]

mod attention_case;
mod gpu_harness;
mod moe_case;

use attention_case::{attention_case, case_inputs, rope_case, shape, strided_cases, Bias, Storage, BIASES, NAMES};
use gpu_harness::{gpu, read, run, up, zeros, OnGpu};
use transformer_playground::backend::gpu::{Gpu, GpuStep};
use transformer_playground::backend::{ops, AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Host, Reference, Segment, View};
use transformer_playground::config::{Activation, NormKind};
use transformer_playground::rng::Rng;

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * scale).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        assert!(err <= tol, "{what}[{i}]: got {g}, want {w} (|err| {err} > {tol})");
    }
    assert!(got.iter().any(|x| *x != 0.0) || want.iter().all(|x| *x == 0.0), "{what}: all zero");
}

#[test]
fn the_tests_run_on_a_real_wgpu_adapter() {
    let g = gpu();
    let name = g.adapter_name();
    assert!(!name.is_empty());
    assert!(!name.contains("Noop"), "the no-op backend computes nothing: {name}");
    // A kernel that ran leaves its result: 2 + 3 through the device.
    let (a, out) = (up(&[2.0f32, 3.0]), zeros(1));
    run(|e| g.sum(e, out.all(), 0, a.all()));
    assert_eq!(read(&out), vec![5.0]);
    assert_eq!(OnGpu.name(), "gpu (GpuStep: upload, record, submit, read back)");
}

// ---------------------------------------------------------------------------------------------------------------
// The model's ops.

/// [h, gates, dgi, dw_hh, db_hh] of the GRU recurrence and its accumulating backward through time.
fn gru_case(be: &impl Host, b: usize, t: usize, c: usize, bias: bool, with_h0: bool) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(51 + c as u64);
    let gi = randn(&mut rng, b * t * 3 * c, 1.0);
    let w = randn(&mut rng, 3 * c * c, 1.0 / (c as f32).sqrt());
    let (bh, h0) = (randn(&mut rng, 3 * c, 0.5), randn(&mut rng, b * c, 0.5));
    let h0 = with_h0.then_some(&h0[..]);
    let (mut h, mut gates) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * t * 4 * c]);
    be.gru_forward(&mut h, &mut gates, &gi, &w, bias.then_some(&bh[..]), h0, b, t, c).unwrap();
    let dh = randn(&mut rng, b * t * c, 1.0);
    let (mut dgi, mut dw, mut db) = (randn(&mut rng, gi.len(), 1.0), randn(&mut rng, w.len(), 1.0), randn(&mut rng, 3 * c, 1.0));
    be.gru_backward(&mut dgi, &mut dw, bias.then_some(&mut db[..]), &dh, &gates, &h, h0, &w, b, t, c).unwrap();
    vec![h, gates, dgi, dw, db]
}

#[test]
fn the_gru_recurrence_and_its_backward_through_time_match_the_reference() {
    // C = 36 and 70: channels not a multiple of the 64 threads of a workgroup, and more channels than threads.
    for (b, t, c, bias, h0) in [(3, 7, 36, true, false), (2, 5, 70, false, true), (1, 1, 3, true, true), (4, 9, 5, true, false)] {
        let (got, want) = (gru_case(&OnGpu, b, t, c, bias, h0), gru_case(&Reference, b, t, c, bias, h0));
        for (i, name) in ["h", "gates", "dgi", "dw_hh", "db_hh"].iter().enumerate() {
            assert_close(&format!("gru {name} B={b} T={t} C={c} bias={bias} h0={h0}"), &got[i], &want[i], 1e-4, 1e-3);
        }
    }
}

/// [out, dinp, dw, db] of one forward and one accumulating backward.
fn matmul_case(be: &impl Host, n: usize, c: usize, oc: usize, bias: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let (inp, w, b) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 0.5), randn(&mut rng, oc, 1.0));
    let mut out = vec![f32::NAN; n * oc];
    be.matmul_forward(&mut out, &inp, &w, bias.then_some(&b[..]), n, c, oc).unwrap();
    let dout = randn(&mut rng, n * oc, 1.0);
    let (mut dinp, mut dw, mut db) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0), randn(&mut rng, oc, 1.0));
    be.matmul_backward(Some(&mut dinp), &mut dw, bias.then_some(&mut db[..]), &dout, &inp, &w, n, c, oc).unwrap();
    vec![out, dinp, dw, db]
}

#[test]
fn matmul_forward_and_backward_match_the_reference_on_sizes_that_are_not_tile_multiples() {
    for (n, c, oc) in [(7, 36, 20), (1, 3, 1), (64, 64, 64), (65, 17, 129), (130, 65, 70), (14, 36, 108), (200, 300, 150)] {
        for bias in [false, true] {
            let seed = (n * 1000 + c) as u64;
            let (got, want) = (matmul_case(&OnGpu, n, c, oc, bias, seed), matmul_case(&Reference, n, c, oc, bias, seed));
            for (i, name) in ["out", "dinp", "dw", "db"].iter().enumerate() {
                assert_close(&format!("{name} n={n} c={c} oc={oc} bias={bias}"), &got[i], &want[i], 1e-4, 1e-4);
            }
        }
    }
}

/// Weight gradients of few tiles over many rows run split along the rows (split-K: each split's product into a
/// slab, then the slabs' column sum added into dw), on awkward sizes; and the column sum of db past 2048 rows.
#[test]
fn matmul_backward_split_along_the_rows_matches_the_reference() {
    use transformer_playground::backend::gpu::k_splits;
    for (n, c, oc) in [(1100, 13, 37), (2500, 70, 9), (4099, 65, 130), (600, 20, 20)] {
        let splits = k_splits(oc, c, n);
        assert_eq!(splits > 1, n >= 1024, "n={n} c={c} oc={oc}: {splits} splits");
        for bias in [false, true] {
            let seed = (n * 1000 + c) as u64;
            let (got, want) = (matmul_case(&OnGpu, n, c, oc, bias, seed), matmul_case(&Reference, n, c, oc, bias, seed));
            for (i, name) in ["out", "dinp", "dw", "db"].iter().enumerate() {
                let atol = 1e-4 * (n as f32).sqrt();
                assert_close(&format!("{name} n={n} c={c} oc={oc} bias={bias} ({splits} splits)"), &got[i], &want[i], atol, 1e-4);
            }
        }
    }
}

#[test]
fn matmul_backward_without_dinp_or_db_leaves_them_alone() {
    let (n, c, oc) = (9, 36, 11);
    let mut rng = Rng::new(5);
    let (inp, w, dout) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0), randn(&mut rng, n * oc, 1.0));
    let mut got = randn(&mut rng, oc * c, 1.0);
    let mut want = got.clone();
    OnGpu.matmul_backward(None, &mut got, None, &dout, &inp, &w, n, c, oc).unwrap();
    Reference.matmul_backward(None, &mut want, None, &dout, &inp, &w, n, c, oc).unwrap();
    assert_close("dw", &got, &want, 1e-4, 1e-4);
}

/// [out, mean, rstd, dinp, dw, db].
fn norm_case(be: &impl Host, kind: NormKind, bias: bool, n: usize, c: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new((n * 31 + c) as u64);
    let inp: Vec<f32> = randn(&mut rng, n * c, 2.0).iter().map(|x| x + 0.5).collect();
    let (w, b) = (randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    be.norm_forward(kind, &mut out, &mut mean, &mut rstd, &inp, &w, bias.then_some(&b[..]), 1e-5, c).unwrap();
    let dout = randn(&mut rng, n * c, 1.0);
    let (mut dinp, mut dw, mut db) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
    be.norm_backward(kind, &mut dinp, &mut dw, bias.then_some(&mut db[..]), &dout, &inp, &w, &mean, &rstd, c).unwrap();
    vec![out, mean, rstd, dinp, dw, db]
}

#[test]
fn layernorm_and_rmsnorm_match_the_reference_with_and_without_bias() {
    for kind in [NormKind::Layernorm, NormKind::Rmsnorm] {
        for bias in [false, true] {
            // 70 000 rows need a two-dimensional grid of workgroups (over 65 535 in one dimension).
            for (n, c) in [(21, 36), (3, 1), (70, 300), (5, 64), (70_000, 2)] {
                let (got, want) = (norm_case(&OnGpu, kind, bias, n, c), norm_case(&Reference, kind, bias, n, c));
                for (i, name) in ["out", "mean", "rstd", "dinp", "dw", "db"].iter().enumerate() {
                    if kind == NormKind::Rmsnorm && *name == "mean" {
                        assert!(got[i].iter().all(|&m| m == 0.0), "rmsnorm saves mean 0");
                        continue;
                    }
                    assert_close(&format!("{name} {kind:?} bias={bias} n={n} c={c}"), &got[i], &want[i], 1e-4, 1e-4);
                }
            }
        }
    }
}

/// [out, dinp] of one forward and one accumulating backward. Wide inputs, so both tails of GELU and the sigmoid's
/// saturation are covered.
fn activation_case(be: &impl Host, act: Activation, n: usize, f: usize) -> Vec<Vec<f32>> {
    let width = if act.is_gated() { 2 * f } else { f };
    let mut rng = Rng::new(n as u64 * 7 + f as u64);
    let mut inp = randn(&mut rng, n * width, 3.0);
    inp[0] = -12.0;
    inp[n * width - 1] = 12.0;
    let mut out = vec![f32::NAN; n * f];
    be.activation_forward(act, &mut out, &inp, f).unwrap();
    let (dout, mut dinp) = (randn(&mut rng, n * f, 1.0), randn(&mut rng, n * width, 1.0));
    be.activation_backward(act, &mut dinp, &dout, &inp, &out, f).unwrap();
    vec![out, dinp]
}

#[test]
fn every_activation_matches_the_reference_forward_and_backward() {
    let acts = [Activation::Relu, Activation::Gelu, Activation::Swish, Activation::Glu, Activation::Geglu, Activation::Swiglu];
    for act in acts {
        for (n, f) in [(7, 36), (3, 1), (40, 130)] {
            let (got, want) = (activation_case(&OnGpu, act, n, f), activation_case(&Reference, act, n, f));
            assert_close(&format!("{act:?} forward n={n} f={f}"), &got[0], &want[0], 1e-5, 1e-4);
            assert_close(&format!("{act:?} backward n={n} f={f}"), &got[1], &want[1], 1e-5, 1e-4);
        }
    }
}

/// [pre, act, dpre, dw, db] of the FFN's fc layer with its activation (`matmul_act_forward`) and its proj layer's
/// backward through the activation (`matmul_act_backward`): x (N,C) → pre (N,F or 2F) → act (N,F) → proj (F → C).
/// dpre starts as random values, which the backward must overwrite; dw and db start nonzero, to be added to.
fn matmul_act_case(be: &impl Host, act: Activation, n: usize, c: usize, f: usize, bias: bool) -> Vec<Vec<f32>> {
    let width = if act.is_gated() { 2 * f } else { f };
    let mut rng = Rng::new((n * 1000 + c * 10 + f) as u64);
    let (x, w1, b1) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, width * c, 1.0 / (c as f32).sqrt()), randn(&mut rng, width, 1.0));
    let (w2, dout) = (randn(&mut rng, c * f, 0.5), randn(&mut rng, n * c, 1.0));
    let (mut pre, mut out) = (vec![f32::NAN; n * width], vec![f32::NAN; n * f]);
    be.matmul_act_forward(act, &mut pre, &mut out, &x, &w1, bias.then_some(&b1[..]), n, c, width).unwrap();
    let mut dpre = randn(&mut rng, n * width, 1.0);
    let (mut dw, mut db) = (randn(&mut rng, c * f, 1.0), randn(&mut rng, c, 1.0));
    be.matmul_act_backward(act, &mut dpre, &mut dw, bias.then_some(&mut db[..]), &dout, &out, &pre, &w2, n, f, c).unwrap();
    vec![pre, out, dpre, dw, db]
}

/// The fused epilogues of matmul.wgsl (plain activations) and the gated activations' product-then-activation, on
/// sizes that leave partial 64×64 tiles in every direction (F = 65: two column tiles; N = 130: three row tiles).
#[test]
fn fused_matmul_activation_matches_the_reference_for_every_activation_with_and_without_bias() {
    let acts = [Activation::Relu, Activation::Gelu, Activation::Swish, Activation::Glu, Activation::Geglu, Activation::Swiglu];
    for act in acts {
        for (n, c, f) in [(7, 13, 37), (1, 5, 3), (33, 129, 65), (130, 36, 9)] {
            for bias in [true, false] {
                let (got, want) = (matmul_act_case(&OnGpu, act, n, c, f, bias), matmul_act_case(&Reference, act, n, c, f, bias));
                for (i, name) in ["pre", "act", "dpre", "dw", "db"].iter().enumerate() {
                    assert_close(&format!("{act:?} {name} N={n} C={c} F={f} bias={bias}"), &got[i], &want[i], 1e-4, 1e-4);
                }
            }
        }
    }
}

/// Both register tiles of matmul.wgsl (4×4 outputs a thread in 64×64 tiles; 8×8 in 128×128, which products run
/// when they have tiles enough for a large GPU: the baby GPT's, not these) and both ways of staging the operands
/// (one f32 at a time; one vec4 where strides and sizes are multiples of 4: here C and OC, with row counts that
/// are not), forced on sizes that leave partial tiles of either edge, for every epilogue: the plain product forward
/// and backward (whose three products stride A and B in all the ways the linear layer does), and the fused
/// activations.
#[test]
fn matmul_with_either_register_tile_and_either_load_matches_the_reference() {
    use transformer_playground::backend::gpu::MatmulTile;
    assert_eq!(MatmulTile::for_product(16384, 384), MatmulTile::Rt8, "the baby GPT's proj layer");
    assert_eq!(MatmulTile::for_product(768, 512), MatmulTile::Rt4, "W1's fc layer");
    /// Puts the device back to each product's own choices, also when an assertion fails.
    struct Forced(gpu_harness::Turn);
    impl Drop for Forced {
        fn drop(&mut self) {
            self.0.set_matmul_tile(None);
            self.0.set_matmul_vec4_loads(true);
        }
    }
    let g = Forced(gpu());
    for tile in [MatmulTile::Rt8, MatmulTile::Rt4] {
        for vec4 in [true, false] {
            g.0.set_matmul_tile(Some(tile));
            g.0.set_matmul_vec4_loads(vec4);
            let sizes = [(7, 36, 20), (1, 3, 1), (128, 128, 128), (130, 68, 132), (257, 300, 200), (65, 17, 129), (3, 4, 8)];
            for (n, c, oc) in sizes {
                let seed = (n * 1000 + c) as u64;
                let (got, want) = (matmul_case(&OnGpu, n, c, oc, true, seed), matmul_case(&Reference, n, c, oc, true, seed));
                for (i, name) in ["out", "dinp", "dw", "db"].iter().enumerate() {
                    assert_close(&format!("{tile:?} vec4 {vec4} {name} n={n} c={c} oc={oc}"), &got[i], &want[i], 1e-4, 1e-4);
                }
            }
            for act in [Activation::Gelu, Activation::Relu, Activation::Swiglu] {
                for (n, c, f) in [(33, 129, 65), (130, 36, 9), (129, 20, 132), (33, 128, 64)] {
                    let (got, want) = (matmul_act_case(&OnGpu, act, n, c, f, true), matmul_act_case(&Reference, act, n, c, f, true));
                    for (i, name) in ["pre", "act", "dpre", "dw", "db"].iter().enumerate() {
                        assert_close(&format!("{tile:?} vec4 {vec4} {act:?} {name} N={n} C={c} F={f}"), &got[i], &want[i], 1e-4, 1e-4);
                    }
                }
            }
        }
    }
}

#[test]
fn rope_matches_the_reference_and_its_inverse_undoes_it() {
    for (rows, t, hs, pos0) in [(4 * 7, 7, 6, 0), (2 * 7, 7, 8, 5), (3 * 5, 5, 64, 1000), (2 * 3, 3, 7, 2)] {
        let x = randn(&mut Rng::new(hs as u64), rows * hs, 1.0);
        // (B·H, T, HS) contiguous: one batch of rows / T heads.
        let (h, lay) = (rows / t, HeadLayout::heads(rows / t, t, hs));
        for inverse in [false, true] {
            let (mut got, mut want) = (x.clone(), x.clone());
            OnGpu.rope(&mut got, lay, 1, h, t, hs, pos0, 10000.0, inverse).unwrap();
            Reference.rope(&mut want, lay, 1, h, t, hs, pos0, 10000.0, inverse).unwrap();
            assert_close(&format!("rope hs={hs} pos0={pos0} inverse={inverse}"), &got, &want, 1e-5, 1e-5);
        }
        let mut back = x.clone();
        OnGpu.rope(&mut back, lay, 1, h, t, hs, pos0, 10000.0, false).unwrap();
        OnGpu.rope(&mut back, lay, 1, h, t, hs, pos0, 10000.0, true).unwrap();
        assert_close("rope then inverse", &back, &x, 1e-5, 1e-5);
    }
}

#[test]
fn rope_on_the_q_and_k_columns_of_qkv_rows_matches_the_reference_and_leaves_v_alone() {
    for (b, t, nh, nkv, hs, pos0) in [(2, 7, 4, 2, 12, 0), (1, 5, 3, 3, 6, 9), (2, 3, 4, 1, 8, 2)] {
        for inverse in [false, true] {
            let (got, want) = (rope_case(&OnGpu, b, t, nh, nkv, hs, pos0, inverse), rope_case(&Reference, b, t, nh, nkv, hs, pos0, inverse));
            assert_close(&format!("rope rows hs={hs} inverse={inverse}"), &got, &want, 1e-5, 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Attention: every mask, head layout and bias (the ALiBi slopes and T5 buckets uploaded by `GpuStep`).

/// The GPU's attention against the reference on every case, each output buffer compared whole.
fn check_attention(cases: &[(AttnShape, Storage)]) {
    for (ci, (sh, st)) in cases.iter().enumerate() {
        for bias in BIASES {
            let seed = 100 + ci as u64;
            let (got, want) = (attention_case(&OnGpu, sh, *st, bias, seed), attention_case(&Reference, sh, *st, bias, seed));
            for (i, name) in NAMES.iter().enumerate() {
                assert_close(&format!("{name} {bias:?} {st:?} {sh:?}"), &got[i], &want[i], 5e-5, 5e-4);
            }
        }
    }
}

fn heads(cases: &[AttnShape]) -> Vec<(AttnShape, Storage)> {
    cases.iter().map(|&sh| (sh, Storage::Heads)).collect()
}

#[test]
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
    cases.push(shape(1, 7, 7, 2, 1, 1, true, 0)); // head size 1
    let mut unscaled = shape(1, 7, 7, 6, 3, 6, true, 0);
    unscaled.scale = 1.0;
    cases.push(unscaled);
    check_attention(&heads(&cases));
}

#[test]
fn attention_reads_q_k_v_from_projection_rows_and_adds_their_gradients_there_as_the_reference_does() {
    check_attention(&strided_cases());
}

#[test]
fn attention_matches_the_reference_across_query_tiles_and_key_tiles() {
    check_attention(&heads(&[
        shape(1, 37, 130, 4, 2, 20, true, 93), // several key tiles, q_offset
        shape(2, 20, 150, 2, 1, 33, false, 0), // several key tiles, odd head size
        shape(1, 70, 70, 2, 2, 16, true, 0),   // two query tiles, causal with partial key tiles
        shape(1, 130, 67, 2, 1, 64, false, 0), // three query tiles, cross, HS 64
        shape(1, 19, 19, 1, 1, 128, true, 0),  // HS 128: the smallest tiles
        shape(1, 9, 9, 1, 1, 256, false, 0),   // the largest head size
    ]));
}

#[test]
fn attention_biases_too_short_for_the_shape_are_errors() {
    let sh = shape(1, 4, 4, 2, 2, 8, true, 0);
    let x = case_inputs(&sh, Storage::Heads, 1);
    let (q, kv) = (&x.x1, &x.x2); // kv: k (64 elements) then v
    let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; 8]);
    let short = AttnBias::Alibi { slopes: &x.slopes[..1] };
    let err = OnGpu.attention_forward(&mut out, &mut lse, q, kv, kv, short, &sh).unwrap_err().to_string();
    assert!(err.contains("ALiBi slopes has 1 elements, the op needs 2"), "{err}");
    let short = AttnBias::Relative { table: &x.table[..], bucket: &x.bucket[..15] };
    let err = OnGpu.attention_forward(&mut out, &mut lse, q, kv, kv, short, &sh).unwrap_err().to_string();
    assert!(err.contains("relative buckets has 15 elements, the op needs 16"), "{err}");
    // A layout reaching past its buffer.
    let past = AttnShape { v: HeadLayout { offset: 65, ..sh.v }, ..sh };
    let err = OnGpu.attention_forward(&mut out, &mut lse, q, kv, kv, AttnBias::None, &past).unwrap_err().to_string();
    assert!(err.contains("attention v has 128 elements, the op needs 129"), "{err}");
}

/// [out, lse (empty), the gradient buffer(s), dtable (empty), probs] of the naive (materialising) kernels on
/// `attention_case`'s inputs (no bias), laid out as it lays them out.
fn naive_attention_case(sh: &AttnShape, st: Storage, seed: u64) -> Vec<Vec<f32>> {
    let x = case_inputs(sh, st, seed);
    let (x1, x2, dout, g1, g2) = (up(&x.x1), up(&x.x2), up(&x.dout), up(&x.g1), up(&x.g2));
    let (out, probs) = (up(&vec![f32::NAN; x.dout.len()]), up(&vec![f32::NAN; Gpu::attention_naive_probs_len(sh)]));
    run(|e| {
        let g = gpu();
        let (q, kv) = if st.one_buffer() { (x1.all(), x1.all()) } else { (x1.all(), x2.all()) };
        g.attention_naive_forward(e, out.all(), probs.all(), q, kv, kv, sh)?;
        let grads = if st.one_buffer() { AttnGrads::Qkv(g1.all()) } else { AttnGrads::QAndKv { dq: g1.all(), dkv: g2.all() } };
        g.attention_naive_backward(e, grads, dout.all(), q, kv, kv, probs.all(), sh)
    });
    let g2 = if x.g2.is_empty() { vec![] } else { read(&g2) };
    vec![read(&out), vec![], read(&g1), g2, vec![], read(&probs)]
}

#[test]
fn naive_attention_equals_the_fused_kernels_and_the_reference() {
    let heads = [
        shape(2, 7, 7, 3, 3, 12, true, 0),   // causal, MHA, awkward sizes
        shape(2, 7, 7, 3, 3, 12, false, 0),  // bidirectional
        shape(1, 70, 70, 2, 2, 16, true, 0), // more rows than a workgroup
        shape(2, 7, 5, 6, 2, 12, false, 0),  // cross-attention (S < T), GQA
        shape(2, 3, 8, 4, 1, 12, true, 5),   // decoding after 5 cached keys, MQA
    ];
    // And straight from projection rows, as the fused kernels read them.
    let cases: Vec<(AttnShape, Storage)> = heads.iter().map(|&sh| (sh, Storage::Heads)).chain(strided_cases().into_iter().step_by(3)).collect();
    for (ci, (sh, st)) in cases.iter().enumerate() {
        let seed = 300 + ci as u64;
        let naive = naive_attention_case(sh, *st, seed);
        let fused = attention_case(&OnGpu, sh, *st, Bias::None, seed);
        let reference = attention_case(&Reference, sh, *st, Bias::None, seed);
        for n in [0, 2, 3] {
            let name = NAMES[n];
            assert_close(&format!("naive vs reference {name} {st:?} {sh:?}"), &naive[n], &reference[n], 5e-5, 5e-4);
            assert_close(&format!("naive vs fused {name} {st:?} {sh:?}"), &naive[n], &fused[n], 5e-5, 5e-4);
        }
        // What the naive forward keeps: a probability per (query, key), 0 where masked, each row summing to 1.
        let probs = &naive[5];
        for (row, p) in probs.chunks(sh.s).enumerate() {
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

#[test]
fn naive_attention_refuses_buffers_too_small_for_its_probabilities() {
    let g = gpu();
    let sh = shape(1, 4, 4, 2, 2, 8, true, 0).with_heads();
    let (x, small) = (zeros(64), zeros(31));
    let mut e = g.encoder();
    let err = g.attention_naive_forward(&mut e, x.all(), small.all(), x.all(), x.all(), x.all(), &sh).unwrap_err();
    assert!(err.to_string().contains("probs has 31 elements, the op needs 32"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// The loss and the optimizer's ops.

/// (mean loss, counted rows, dlogits) of one cross-entropy, every 4th row's target ignored (−1). Row r's logit at
/// column 7r mod V is raised by `spike`: past ~88, exp(x − max) overflows f32 unless max is the row's true max.
fn cross_entropy_case(be: &impl Host, n: usize, v: usize, spike: f32) -> (f32, usize, Vec<f32>) {
    let mut rng = Rng::new(41 + v as u64);
    let mut logits = randn(&mut rng, n * v, 3.0);
    for r in 0..n {
        logits[r * v + 7 * r % v] += spike;
    }
    let targets: Vec<i32> = (0..n).map(|r| if r % 4 == 2 { -1 } else { rng.below(v) as i32 }).collect();
    let count = targets.iter().filter(|&&t| t >= 0).count();
    let mut dlogits = vec![f32::NAN; n * v];
    let loss = be.mean_cross_entropy(&mut dlogits, &logits, &targets, v, count).unwrap();
    (loss, count, dlogits)
}

#[test]
fn cross_entropy_matches_the_reference_and_ignores_minus_one_targets() {
    for (n, v) in [(9, 13), (1, 1), (9, 65), (768, 65), (5, 1000)] {
        let (gl, gc, gd) = cross_entropy_case(&OnGpu, n, v, 0.0);
        let (wl, wc, wd) = cross_entropy_case(&Reference, n, v, 0.0);
        assert_eq!(gc, wc);
        assert!((gl - wl).abs() <= 1e-5 * wl.abs().max(1.0), "n={n} v={v}: loss {gl} vs {wl}");
        assert_close(&format!("dlogits n={n} v={v}"), &gd, &wd, 1e-6, 1e-4);
    }
}

#[test]
fn cross_entropy_with_every_target_ignored_has_a_nan_mean_and_zero_gradient() {
    let (n, v) = (3, 10);
    let logits = randn(&mut Rng::new(3), n * v, 1.0);
    let mut d = vec![f32::NAN; n * v];
    let loss = OnGpu.mean_cross_entropy(&mut d, &logits, &[-1, -1, -1], v, 0).unwrap();
    assert!(loss.is_nan(), "no counted target: the mean loss is NaN, got {loss}");
    assert!(d.iter().all(|&x| x == 0.0), "an ignored row has no gradient");
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

fn sums_case(be: &impl Host, n: usize, segs: &[Segment]) -> Vec<f32> {
    let g = randn(&mut Rng::new(61), n, 1.0);
    let mut out = vec![f32::NAN; 1 + segs.len()];
    be.sums_of_squares(&mut out, &g, segs).unwrap();
    out
}

#[test]
fn sums_of_squares_match_the_reference_per_segment_and_in_total() {
    // 100 003 and 1 000 003 floats: segments of several 8192-float chunks; an empty segment sums to 0.
    for n in [8, 37, 100_003, 1_000_003] {
        let segs = segments(n);
        let (got, want) = (sums_case(&OnGpu, n, &segs), sums_case(&Reference, n, &segs));
        assert_close(&format!("Σg² n={n}"), &got, &want, 1e-6, 1e-5);
    }
    let mut segs = segments(20_000);
    segs.push(Segment { view: View { offset: 5, len: 0 }, decay: true });
    let got = sums_case(&OnGpu, 20_000, &segs);
    assert_eq!(got[segs.len()], 0.0, "an empty segment");
    assert_close("Σg² with an empty segment", &got, &sums_case(&Reference, 20_000, &segs), 1e-6, 1e-5);
}

#[test]
fn clipping_matches_the_reference_only_above_the_clip_norm() {
    let g0 = randn(&mut Rng::new(71), 100_003, 0.01);
    let sq = ops::sum_squares(&g0) as f32;
    for clip in [0.5f32, 0.0, 1e9] {
        let (mut got, mut want) = (g0.clone(), g0.clone());
        OnGpu.clip_grad_norm(&mut got, &[sq], clip).unwrap();
        Reference.clip_grad_norm(&mut want, &[sq], clip).unwrap();
        assert_close(&format!("clipped to {clip}"), &got, &want, 1e-9, 1e-5);
        let norm = (ops::sum_squares(&got) as f32).sqrt();
        let want_norm = if clip > 0.0 { sq.sqrt().min(clip) } else { sq.sqrt() };
        assert!((norm - want_norm).abs() <= 1e-4 * want_norm, "clip {clip}: norm {norm}, want {want_norm}");
    }
}

/// Segments laid out as the model lays out its tensors: each starting on a 64-float boundary (the GPU's AdamW
/// decays by 64-float block), of awkward lengths, decay on every other one. Returns them and the buffer length.
fn layout_segments(lens: &[usize]) -> (Vec<Segment>, usize) {
    let mut offset = 0;
    let segs = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let s = Segment { view: View { offset, len }, decay: i % 2 == 0 };
            offset = (offset + len).next_multiple_of(64);
            s
        })
        .collect();
    (segs, offset)
}

/// [p, m, v] after one AdamW step with the guard's Σg² `sq` and loss; p, g, m, v are 0 outside the segments, as
/// the layout's padding is.
fn adamw_case(be: &impl Host, lens: &[usize], sq: f32, loss: f32) -> Vec<Vec<f32>> {
    let (segs, n) = layout_segments(lens);
    let mut rng = Rng::new(51);
    let (mut p, mut g) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 0.1));
    let (mut m, mut v) = (randn(&mut rng, n, 0.01), randn(&mut rng, n, 0.001).iter().map(|x| x.abs()).collect::<Vec<_>>());
    let inside = |i: usize| segs.iter().any(|s| (s.view.offset..s.view.offset + s.view.len).contains(&i));
    for i in (0..n).filter(|&i| !inside(i)) {
        (p[i], g[i], m[i], v[i]) = (0.0, 0.0, 0.0, 0.0);
    }
    let h = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, t: 3 };
    be.adamw(&mut p, &g, &mut m, &mut v, &segs, &[sq], loss, &h).unwrap();
    vec![p, m, v]
}

#[test]
fn adamw_matches_the_reference_over_segments_with_and_without_decay() {
    for lens in [&[37][..], &[37, 1, 200, 64, 100_003, 5]] {
        let (got, want) = (adamw_case(&OnGpu, lens, 1.0, 2.0), adamw_case(&Reference, lens, 1.0, 2.0));
        for (i, name) in ["p", "m", "v"].iter().enumerate() {
            assert_close(&format!("adamw {name} {lens:?}"), &got[i], &want[i], 1e-7, 1e-5);
        }
        // The padding after each segment stays 0.
        let (segs, _) = layout_segments(lens);
        let pad = segs[0].view.len..segs.get(1).map_or(64, |s| s.view.offset);
        assert!(pad.clone().all(|i| got[0][i] == 0.0 && got[1][i] == 0.0 && got[2][i] == 0.0), "padding {pad:?} moved");
    }
}

#[test]
fn adamw_changes_nothing_when_the_loss_or_the_gradient_norm_is_not_finite() {
    let lens = [37, 100, 3];
    let before = {
        let (segs, n) = layout_segments(&lens);
        let mut rng = Rng::new(51);
        let (mut p, _g) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 0.1));
        let (mut m, mut v) = (randn(&mut rng, n, 0.01), randn(&mut rng, n, 0.001).iter().map(|x| x.abs()).collect::<Vec<_>>());
        let inside = |i: usize| segs.iter().any(|s| (s.view.offset..s.view.offset + s.view.len).contains(&i));
        for i in (0..n).filter(|&i| !inside(i)) {
            (p[i], m[i], v[i]) = (0.0, 0.0, 0.0);
        }
        vec![p, m, v]
    };
    for (sq, loss) in [(f32::NAN, 1.0), (f32::INFINITY, 1.0), (1.0, f32::NAN), (1.0, f32::INFINITY), (1.0, f32::NEG_INFINITY)] {
        assert_eq!(adamw_case(&OnGpu, &lens, sq, loss), before, "gpu, Σg² {sq}, loss {loss}: nothing may move");
        assert_eq!(adamw_case(&Reference, &lens, sq, loss), before, "reference, Σg² {sq}, loss {loss}");
    }
    let moved = adamw_case(&OnGpu, &lens, 1.0, 1.0);
    for i in 0..3 {
        assert_ne!(moved[i], before[i], "a good step moves p, m and v");
    }
}

#[test]
fn the_optimizer_ops_read_the_gradient_norm_from_anywhere_in_one_recorded_step() {
    // As `train::step` records them, with Σg² left at an offset that is not a storage-binding boundary: the sums,
    // clipping by them, and the guarded AdamW, one submission; then the same on the reference.
    let (segs, n) = layout_segments(&[300, 70, 5000]);
    let mut rng = Rng::new(81);
    let (p, g) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 0.1));
    let h = AdamW { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, t: 1 };
    let clip = 0.5;
    let gpu = gpu();
    let (pb, gb, mb, vb) = (up(&p), up(&g), zeros(n), zeros(n));
    let scalars = up(&[f32::NAN, f32::NAN, f32::NAN, f32::NAN, f32::NAN, 7.0]); // loss sum at slot 5
    let step = GpuStep::new(&gpu, &scalars, 5);
    let sums = scalars.slice(1, 1 + segs.len()).unwrap();
    step.sums_of_squares(sums, gb.all(), &segs).unwrap();
    step.clip_grad_norm(gb.all(), sums.sub(0, 1).unwrap(), clip).unwrap();
    let loss = transformer_playground::backend::gpu::PendingLoss { slot: 5, count: 2 };
    step.adamw(pb.all(), gb.all(), mb.all(), vb.all(), &segs, sums.sub(0, 1).unwrap(), loss, &h).unwrap();
    let reads = [&scalars, &pb, &gb].map(|b| step.read(b.all()).unwrap());
    gpu.submit(step.finish()).unwrap();
    let [got_s, got_p, got_g] = reads.map(|r| r.wait_blocking(&gpu).unwrap());

    let mut want_s = vec![0.0; 1 + segs.len()];
    let (mut wp, mut wg, mut wm, mut wv) = (p.clone(), g.clone(), vec![0.0; n], vec![0.0; n]);
    Reference.sums_of_squares(&mut want_s, &wg, &segs).unwrap();
    Reference.clip_grad_norm(&mut wg, &want_s[..1], clip).unwrap();
    Reference.adamw(&mut wp, &wg, &mut wm, &mut wv, &segs, &want_s[..1], 3.5, &h).unwrap();
    assert_close("Σg² in the scalars", &got_s[1..1 + want_s.len()], &want_s, 1e-6, 1e-5);
    assert!(got_s[0].is_nan() && got_s[5] == 7.0, "slots outside the sums untouched: {got_s:?}");
    // Inside the segments (the padding is random here, and only the reference leaves it alone).
    for s in &segs {
        let r = s.view;
        assert_close("clipped g", r.of(&got_g), r.of(&wg), 1e-9, 1e-5);
        assert_close("p after AdamW", r.of(&got_p), r.of(&wp), 1e-6, 1e-5);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The model's glue: embedding, residual adds, masks, head layout, the KV cache's append.

fn glue_case(be: &impl Host, b: usize, t: usize, nh: usize, hs: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(81 + t as u64);
    let (c, vocab, stride) = (nh * hs, 11, 3 * nh * hs + 5);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab) as u32).collect();
    let (wte, wpe, sin) = (randn(&mut rng, vocab * c, 1.0), randn(&mut rng, (t + 3) * c, 1.0), randn(&mut rng, t * c, 1.0));
    let mut emb = vec![f32::NAN; b * t * c];
    be.embedding_forward(&mut emb, &ids, &wte, Some(&wpe), &sin, t, 3, c).unwrap();
    let mut emb_plain = vec![f32::NAN; b * t * c];
    be.embedding_forward(&mut emb_plain, &ids, &wte, None, &[], t, 0, c).unwrap();
    let dx = randn(&mut rng, b * t * c, 1.0);
    let (mut dwte, mut dwpe) = (randn(&mut rng, vocab * c, 1.0), randn(&mut rng, t * c, 1.0));
    be.embedding_backward(&mut dwte, Some(&mut dwpe), &dx, &ids, t, c).unwrap();
    let (x, y, m) = (randn(&mut rng, b * t * c, 1.0), randn(&mut rng, b * t * c, 1.0), randn(&mut rng, b * t * c, 1.0));
    let (mut added, mut scaled, mut acc, mut masked) = (vec![0.0; x.len()], vec![0.0; x.len()], x.clone(), x.clone());
    be.add_scaled(&mut added, &x, &y, 0.7).unwrap();
    be.scale(&mut scaled, &x, -1.3).unwrap();
    be.add_into(&mut acc, &y).unwrap();
    be.mul_into(&mut masked, &m).unwrap();
    // The KV cache's append: new rows from contiguous heads, and from a projection's rows (columns nh·HS + 2 ..);
    // and the first append, onto an empty cache.
    let (old, new, rows) = (randn(&mut rng, nh * 5 * hs, 1.0), randn(&mut rng, nh * t * hs, 1.0), randn(&mut rng, t * stride, 1.0));
    let mut appended = vec![f32::NAN; nh * (5 + t) * hs];
    be.append_heads(&mut appended, &old, &new, HeadLayout::heads(nh, t, hs), nh, 5, t, hs).unwrap();
    let mut from_rows = vec![f32::NAN; nh * (5 + t) * hs];
    be.append_heads(&mut from_rows, &old, &rows, HeadLayout::rows(t, stride, nh * hs + 2, hs), nh, 5, t, hs).unwrap();
    let mut first = vec![f32::NAN; nh * t * hs];
    be.append_heads(&mut first, &[], &rows, HeadLayout::rows(t, stride, 1, hs), nh, 0, t, hs).unwrap();
    let mut copied = be.copy_of(&x).unwrap();
    let mut zeroed = randn(&mut rng, 70_000, 1.0);
    be.zero(&mut zeroed).unwrap();
    be.zero(&mut copied[..0]).unwrap();
    vec![emb, emb_plain, dwte, dwpe, added, scaled, acc, masked, appended, from_rows, first, copied, zeroed]
}

#[test]
fn the_glue_ops_match_the_reference() {
    // The big case needs more than one workgroup per op; (1, 1, 1, 1) is a single element.
    for (b, t, nh, hs) in [(2, 7, 3, 5), (1, 1, 1, 1), (4, 64, 4, 32), (12, 64, 4, 32)] {
        let (got, want) = (glue_case(&OnGpu, b, t, nh, hs), glue_case(&Reference, b, t, nh, hs));
        let names = [
            "embedding", "embedding (wte only)", "dwte", "dwpe", "add_scaled", "scale", "add_into", "mul_into", "append_heads",
            "append_heads (rows)", "append_heads (first)", "copy_of", "zero",
        ];
        for (i, name) in names.iter().enumerate() {
            assert!(got[i].iter().all(|x| x.is_finite()), "{name}: every element written");
            assert_close(&format!("{name} B={b} T={t} NH={nh} HS={hs}"), &got[i], &want[i], 1e-6, 1e-6);
        }
        assert!(got[12].iter().all(|&x| x == 0.0), "zero");
    }
}

#[test]
fn embedding_backward_refuses_a_token_outside_the_vocabulary() {
    let (c, vocab) = (4, 3);
    let mut dwte = vec![0.0; vocab * c];
    let err = OnGpu.embedding_backward(&mut dwte, None, &[1.0; 8], &[0, 3], 2, c).unwrap_err().to_string();
    assert!(err.contains("token id 3 is outside the vocabulary (3)"), "{err}");
}

#[test]
fn a_view_outside_the_flat_buffer_is_an_error_not_a_shorter_or_empty_view() {
    let mut buf = gpu().zeros::<f32>(128).unwrap();
    for v in [View { offset: 100, len: 29 }, View { offset: 200, len: 0 }, View { offset: usize::MAX, len: 2 }] {
        let err = <GpuStep as Backend>::param(&buf, v).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("of a buffer of 128 elements"), "{v:?}: {err}");
        assert!(<GpuStep as Backend>::grad(&mut buf, v).is_err(), "{v:?}");
    }
    assert!(<GpuStep as Backend>::grad_pair(&mut buf, View { offset: 0, len: 64 }, Some(View { offset: 63, len: 2 })).is_err());
    assert!(<GpuStep as Backend>::grad_pair(&mut buf, View { offset: 0, len: 64 }, Some(View { offset: 120, len: 9 })).is_err());
    let edge = <GpuStep as Backend>::param(&buf, View { offset: 100, len: 28 }).unwrap();
    assert_eq!((edge.offset(), edge.len()), (100, 28));
    let (a, b) = <GpuStep as Backend>::grad_pair(&mut buf, View { offset: 64, len: 64 }, Some(View { offset: 0, len: 64 })).unwrap();
    assert_eq!((a.offset(), a.len(), b.map(|b| (b.offset(), b.len()))), (64, 64, Some((0, 64))));
    // The host adapter checks as the host backends do.
    let mut host = vec![0.0f32; 128];
    assert!(<OnGpu as Backend>::param(&host, View { offset: 100, len: 29 }).is_err());
    assert!(<OnGpu as Backend>::grad_pair(&mut host, View { offset: 0, len: 64 }, Some(View { offset: 63, len: 2 })).is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// The reductions of a workgroup on subgroup operations and on the tree in workgroup memory.

/// Whether the adapter wgpu finds offers subgroup operations, asked apart from `Gpu` (an instance of its own).
fn adapter_offers_subgroups() -> bool {
    pollster::block_on(async {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let power_preference = wgpu::PowerPreference::HighPerformance;
        let options = wgpu::RequestAdapterOptions { power_preference, ..Default::default() };
        let adapter = instance.request_adapter(&options).await.expect("an adapter");
        adapter.features().contains(wgpu::Features::SUBGROUP)
    })
}

#[test]
fn subgroup_operations_are_used_wherever_the_adapter_offers_them() {
    let g = gpu();
    let offered = adapter_offers_subgroups();
    let (min, max) = (g.ctx.info.subgroup_min_size, g.ctx.info.subgroup_max_size);
    eprintln!("{}: subgroups offered {offered}, sizes {min}..={max}", g.adapter_name());
    assert_eq!(g.ctx.subgroups, offered, "the device has subgroup operations exactly where the adapter offers them");
    assert_eq!(g.uses_subgroups(), offered, "and the reductions use them there");
    if !offered {
        assert!(g.set_subgroups(true).is_err(), "subgroups cannot be forced on a device without them");
    }
}

/// Every kernel whose workgroups reduce — LayerNorm's and RMSNorm's row sums forward and backward, cross-entropy's
/// row max and Σ exp, Σx and Σx² over chunks and per segment — run on subgroup operations and on the tree in
/// workgroup memory, each forced, on awkward sizes: rows of 1 to 389 columns (fewer than a row's 64 or 256
/// threads, not a multiple of them, several per thread), one row and several. Without subgroups on the adapter the
/// tree alone runs, and the test says so.
#[test]
fn the_reductions_match_the_reference_on_subgroups_and_on_the_workgroup_tree() {
    /// Puts the device back to its own choice, also when an assertion fails.
    struct Restored(gpu_harness::Turn);
    impl Drop for Restored {
        fn drop(&mut self) {
            let has = self.0.ctx.subgroups;
            self.0.set_subgroups(has).unwrap();
        }
    }
    let g = Restored(gpu());
    let paths = if g.0.ctx.subgroups {
        vec![true, false]
    } else {
        assert!(!adapter_offers_subgroups());
        eprintln!("SKIPPED the subgroup path: {} offers no subgroup operations; the tree only", g.0.adapter_name());
        vec![false]
    };
    for subgroups in paths {
        g.0.set_subgroups(subgroups).unwrap();
        assert_eq!(g.0.uses_subgroups(), subgroups);
        for n in [1, 5, 64] {
            for c in [1, 3, 37, 128, 389] {
                for kind in [NormKind::Layernorm, NormKind::Rmsnorm] {
                    for bias in [false, true] {
                        let (got, want) = (norm_case(&OnGpu, kind, bias, n, c), norm_case(&Reference, kind, bias, n, c));
                        for (i, name) in ["out", "mean", "rstd", "dinp", "dw", "db"].iter().enumerate() {
                            if kind == NormKind::Rmsnorm && *name == "mean" {
                                continue;
                            }
                            let what = format!("subgroups {subgroups}: {name} {kind:?} bias={bias} n={n} c={c}");
                            assert_close(&what, &got[i], &want[i], 1e-4, 1e-4);
                        }
                    }
                }
                // A spike of 100 in each row: a row max that missed it would overflow exp.
                let (gl, gc, gd) = cross_entropy_case(&OnGpu, n, c, 100.0);
                let (wl, wc, wd) = cross_entropy_case(&Reference, n, c, 100.0);
                assert_eq!(gc, wc);
                let what = format!("subgroups {subgroups}: n={n} v={c}");
                assert!((gl - wl).abs() <= 1e-5 * wl.abs().max(1.0), "{what}: loss {gl} vs {wl}");
                assert_close(&format!("subgroups {subgroups}: dlogits n={n} v={c}"), &gd, &wd, 1e-6, 1e-4);
            }
        }
        // Σx² in one pass of `sum` and in two; per segment (`segment_sum`) over segments of awkward lengths.
        for n in [1, 5, 37, 4097, 300_001] {
            let x = randn(&mut Rng::new(n as u64), n, 1.0);
            let (xb, out) = (up(&x), zeros(1));
            run(|e| g.0.sum_squares(e, out.all(), 0, xb.all()));
            let (got, want) = (read(&out)[0] as f64, ops::sum_squares(&x));
            assert!((got - want).abs() <= 1e-5 * want, "subgroups {subgroups}: Σx² n={n}: got {got}, want {want}");
        }
        for n in [37, 100_003] {
            let segs = segments(n);
            let (got, want) = (sums_case(&OnGpu, n, &segs), sums_case(&Reference, n, &segs));
            assert_close(&format!("subgroups {subgroups}: Σg² n={n}"), &got, &want, 1e-6, 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The kernels' own API: reductions over several passes, and the errors a user can cause (errors, not panics).

#[test]
fn sum_squares_matches_the_reference_over_one_two_and_three_reduction_passes() {
    for n in [1, 5, 4096, 4097, 300_001, 4096 * 4096 + 5] {
        let x = randn(&mut Rng::new(n as u64), n, 1.0);
        let (xb, out) = (up(&x), zeros(3));
        run(|e| gpu().sum_squares(e, out.all(), 2, xb.all()));
        let (got, want) = (read(&out)[2] as f64, ops::sum_squares(&x));
        assert!((got - want).abs() <= 1e-5 * want, "n={n}: got {got}, want {want}");
    }
}

/// Column sums (bias gradients) over one pass, and split over the rows (split-K: past 2 × 1024 rows the rows are
/// cut into splits of 1024 whose partials a second pass sums), accumulating and not, on awkward sizes.
#[test]
fn col_sum_matches_the_reference_in_one_pass_and_split_over_the_rows() {
    for (rows, cols) in [(1, 1), (7, 37), (2048, 33), (2049, 33), (2500, 37), (5000, 65)] {
        let x = randn(&mut Rng::new((rows * cols) as u64), rows * cols, 1.0);
        let start = randn(&mut Rng::new(cols as u64), cols, 1.0);
        let want: Vec<f32> = (0..cols).map(|j| (0..rows).map(|i| x[i * cols + j] as f64).sum::<f64>() as f32).collect();
        for accumulate in [false, true] {
            let (xb, out) = (up(&x), up(&start));
            run(|e| gpu().col_sum(e, out.all(), xb.all(), rows, cols, accumulate));
            let want: Vec<f32> = want.iter().zip(&start).map(|(w, s)| if accumulate { w + s } else { *w }).collect();
            assert_close(&format!("col_sum {rows}×{cols} accumulate {accumulate}"), &read(&out), &want, 1e-4 * (rows as f32).sqrt(), 1e-5);
        }
    }
}

#[test]
fn a_view_off_the_storage_offset_alignment_is_an_error() {
    let g = gpu();
    let (x, out) = (zeros(1000), zeros(1));
    let align = g.ctx.limits.min_storage_buffer_offset_alignment as usize / 4;
    assert!(align > 1, "this adapter binds at any element: nothing to refuse");
    let view = x.slice(align + 1, 100).unwrap();
    let mut e = g.encoder();
    let err = g.sum(&mut e, out.all(), 0, view).unwrap_err().to_string();
    assert!(err.contains("minStorageBufferOffsetAlignment"), "{err}");
    // An aligned view is fine.
    g.sum(&mut e, out.all(), 0, x.slice(align, 100).unwrap()).unwrap();
    assert!(x.slice(990, 20).is_err());
}

#[test]
fn a_buffer_over_the_adapters_limit_is_an_error() {
    let g = gpu();
    let too_big = (g.ctx.limits.max_buffer_size / 4 + 1) as usize;
    let err = g.zeros::<f32>(too_big).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("maxBufferSize"), "{err}");
}

#[test]
fn shapes_that_do_not_fit_their_buffers_are_errors() {
    let g = gpu();
    let (a, b) = (zeros(10), zeros(10));
    let mut e = g.encoder();
    let err = g.matmul_forward(&mut e, a.all(), b.all(), b.all(), None, 4, 4, 4).unwrap_err().to_string();
    assert!(err.contains("needs 16"), "{err}");
    let sh = shape(1, 2, 2, 1, 1, 300, false, 0);
    let big = zeros(600);
    let err = g.attention_forward(&mut e, big.all(), a.all(), big.all(), big.all(), big.all(), AttnBias::None, &sh).unwrap_err();
    assert!(err.to_string().contains("head size 300"), "{err}");
    // Through the op trait too.
    let err = OnGpu.matmul_forward(&mut [0.0; 10], &[0.0; 10], &[0.0; 10], None, 4, 4, 4).unwrap_err().to_string();
    assert!(err.contains("needs 16"), "{err}");
}

#[test]
fn a_shader_that_does_not_compile_is_an_error_naming_it() {
    let g = gpu();
    let broken = g.ctx.check_wgsl("broken.wgsl", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }");
    let err = pollster::block_on(broken).unwrap_err().to_string();
    assert!(err.contains("broken.wgsl"), "{err}");
    pollster::block_on(g.ctx.check_wgsl("fine.wgsl", "@compute @workgroup_size(1) fn main() {}")).unwrap();
}

#[test]
fn every_kernel_compiles_ahead_of_time_for_the_head_sizes_and_buckets_given() {
    // What the browser must await before its first op: every fixed kernel, and the attention kernels of each
    // (head size, relative-bias buckets) pair, validated inside error scopes.
    let g = gpu();
    pollster::block_on(g.prepare(&[(6, 11), (64, 32), (256, 0)])).unwrap();
    let err = pollster::block_on(g.prepare(&[(257, 0)])).unwrap_err().to_string();
    assert!(err.contains("head size 257"), "{err}");
}

/// The pool's two rules (src/backend/gpu/buffer.rs): a buffer given back is lent again at once, within the same
/// encoder, to be filled by commands (which run after every command recorded before them), and never, before the
/// next submission, to be filled from the host (whose write lands before the submission's first command).
#[test]
fn a_buffer_given_back_is_lent_again_in_the_same_encoder_to_commands_but_not_to_an_upload() {
    // A device of its own: the pool's growth is measured.
    let g = Gpu::new_blocking().unwrap();
    let (a, y, w) = (g.upload(&[1.0f32, 2.0, 3.0, 4.0]).unwrap(), g.zeros::<f32>(4).unwrap(), g.zeros::<f32>(4).unwrap());
    let mut enc = g.encoder();
    // x ← 2a (a kernel fills it), y ← x; then x is given back.
    let x = g.pooled::<f32>(4).unwrap();
    g.scale_into(&mut enc, x.all(), a.all(), 2.0).unwrap();
    g.copy(&mut enc, y.all(), x.all()).unwrap();
    let held = g.pool_bytes();
    drop(x);
    // To be filled by a command: x's buffer again (the pool does not grow); clearing it runs after y's copy.
    let z = g.pooled::<f32>(4).unwrap();
    assert_eq!(g.pool_bytes(), held, "a command-filled buffer reuses the one given back in this encoder");
    g.clear(&mut enc, z.all());
    drop(z);
    // To be filled from the host: a buffer of its own. Had it been x's, the 9s would land before the kernel above,
    // which overwrites them, and w would read x's cleared contents.
    let u = g.pooled_upload(&[9.0f32; 4]).unwrap();
    assert_eq!(g.pool_bytes(), held + 16, "an upload never gets a buffer lent in the encoder being recorded");
    g.copy(&mut enc, w.all(), u.all()).unwrap();
    drop(u);
    g.submit(enc).unwrap();
    assert_eq!(g.read_blocking(y.all()).unwrap(), vec![2.0, 4.0, 6.0, 8.0], "the clear ran after the copy that read x");
    assert_eq!(g.read_blocking(w.all()).unwrap(), vec![9.0; 4]);
    // After a submission both buffers are free for anything: an upload reuses one, the pool does not grow.
    let again = g.pooled_upload(&[5.0f32; 4]).unwrap();
    assert_eq!(g.pool_bytes(), held + 16);
    drop(again);
}

#[test]
fn the_attention_cost_rows_run_both_paths_and_their_byte_formulas_are_what_the_device_allocates() {
    use transformer_playground::attention_cost::{flash_bytes, gpu_row, naive_bytes, CostBackend, CostSpec};
    // A device of its own: the pool's growth is measured, and other tests share `gpu()`'s pool.
    let g = Gpu::new_blocking().unwrap();
    let spec = CostSpec { heads: 4, kv_heads: Some(2), head_size: 16, ..CostSpec::default() };
    let start = std::time::Instant::now();
    let clock = || start.elapsed().as_secs_f64() * 1e3;
    let row = pollster::block_on(gpu_row(&g, &spec, 70, &clock)).unwrap();
    assert!(row.naive_ms.unwrap() > 0.0 && row.flash_ms > 0.0 && row.note.is_none(), "{row:?}");
    let sh = spec.shape(70).unwrap();
    assert_eq!((row.naive_bytes, row.flash_bytes), (naive_bytes(CostBackend::Gpu, &sh), flash_bytes(CostBackend::Gpu, &sh, 1)));
    assert_eq!(g.pool_bytes(), 0, "the row gives its scratch back");

    // The formulas against the device: what each path keeps between forward and backward (lse; probs) plus the
    // pool's growth over its first backward (the (lse, δ) stats; dscores).
    let x = case_inputs(&sh, Storage::Heads, 3);
    let (q, kv, dout) = (g.upload(&x.x1).unwrap(), g.upload(&x.x2).unwrap(), g.upload(&x.dout).unwrap());
    let (out, lse) = (g.zeros::<f32>(x.x1.len()).unwrap(), g.zeros::<f32>(sh.b * sh.nh * sh.t).unwrap());
    let (dq, dkv) = (g.zeros::<f32>(x.x1.len()).unwrap(), g.zeros::<f32>(x.x2.len()).unwrap());
    let probs = g.zeros::<f32>(Gpu::attention_naive_probs_len(&sh)).unwrap();
    let submit = |f: &dyn Fn(&mut transformer_playground::backend::gpu::Encoder) -> transformer_playground::Result<()>| {
        let mut e = g.encoder();
        f(&mut e).unwrap();
        g.submit(e).unwrap();
        g.wait().unwrap();
    };
    submit(&|e| {
        g.attention_forward(e, out.all(), lse.all(), q.all(), kv.all(), kv.all(), AttnBias::None, &sh)?;
        let (none, grads) = (AttnBias::None, AttnGrads::QAndKv { dq: dq.all(), dkv: dkv.all() });
        g.attention_backward(e, grads, None, dout.all(), q.all(), kv.all(), kv.all(), out.all(), lse.all(), none, &sh)
    });
    assert_eq!(row.flash_bytes, (lse.len() * 4) as u64 + g.pool_bytes());
    g.trim_pool();
    submit(&|e| {
        g.attention_naive_forward(e, out.all(), probs.all(), q.all(), kv.all(), kv.all(), &sh)?;
        let grads = AttnGrads::QAndKv { dq: dq.all(), dkv: dkv.all() };
        g.attention_naive_backward(e, grads, dout.all(), q.all(), kv.all(), kv.all(), probs.all(), &sh)
    });
    assert_eq!(row.naive_bytes, (probs.len() * 4) as u64 + g.pool_bytes());

    // Over the budget: no naive time, a note, the fused path still timed.
    let small = CostSpec { budget_mib: 1, ..spec };
    let row = pollster::block_on(gpu_row(&g, &small, 512, &clock)).unwrap();
    assert!(row.naive_ms.is_none() && row.flash_ms > 0.0, "{row:?}");
    assert!(row.note.as_deref().unwrap().contains("over the budget of 1 MiB"), "{row:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Mixture-of-Experts routing

#[test]
fn moe_routing_kernels_match_the_reference() {
    // (tokens, experts, k, capacity): no drops; top-1 with drops; the most experts, top-3, a capacity of 2; more
    // tokens than one workgroup.
    for (n, e, k, cap) in [(37, 4, 2, 37), (37, 8, 1, 5), (20, 64, 3, 2), (300, 8, 2, 90)] {
        let (got, want) = (moe_case::moe_case(&OnGpu, n, e, k, cap, 9, 5), moe_case::moe_case(&Reference, n, e, k, cap, 9, 5));
        let what = format!("N={n} E={e} k={k} cap={cap}");
        // The routing itself is exact: the same experts, rows and counts.
        for (i, name) in [(1, "choice"), (2, "slot")] {
            assert_eq!(got[i], want[i], "{name} {what}");
        }
        assert_eq!(got[4][1..], want[4][1..], "dropped and counts {what}");
        for (i, name) in [(0, "probs"), (3, "weight"), (4, "stats"), (5, "out"), (6, "dx"), (7, "dweight"), (8, "dlogits")] {
            assert_close(&format!("{name} {what}"), &got[i], &want[i], 1e-5, 1e-4);
        }
    }
}
