//! The WebGPU backend's kernels (`backend::gpu`) against the scalar reference, op by op, on seeded random data of
//! awkward sizes (T = 7, C = 36, S ≠ T, NH = 6 / NKV = 2, not multiples of any tile), with `atol + rtol·|ref|`;
//! then whole training steps of every architecture through those kernels against the CPU backend.
//!
//! The ops run through `gpu_harness::OnGpu`, an adapter of the `Backend` trait that uploads its slices, runs the
//! kernel and reads the results back (the kernels' own API keeps everything on the device; this is only the test
//! harness).
//! Backward ops start from nonzero gradients, so accumulation (`+=`) is checked too.
//!
//! Natively the kernels run on whatever adapter wgpu finds; without a GPU that is Mesa's lavapipe (llvmpipe).
//! No adapter is a FAILURE, not a skip: `cargo test --release --features gpu --test gpu_kernels`.
#![cfg(feature = "gpu")]

mod gpu_harness;

use gpu_harness::{gpu, run, up, zeros, OnGpu};
use transformer_playground::backend::gpu::{Gpu, GpuAttnBias};
use transformer_playground::backend::{cpu::Cpu, AdamW, AttnBias, AttnShape, Backend, Reference};
use transformer_playground::config::{Activation, Config, NormKind};
use transformer_playground::model::{Batch, Model};
use transformer_playground::rng::Rng;
use transformer_playground::train::{adamw_update, clip_grads, OptState};

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

// ---------------------------------------------------------------------------------------------------------------
// Op by op.

#[test]
fn the_tests_run_on_a_real_wgpu_adapter() {
    let g = gpu();
    let name = g.adapter_name();
    assert!(!name.is_empty());
    assert!(!name.contains("Noop"), "the no-op backend computes nothing: {name}");
    // A kernel that ran leaves its result: 2 + 3 through the device.
    let (a, out) = (up(&[2.0f32, 3.0]), zeros(1));
    run(|e| g.sum(e, out.all(), 0, a.all()));
    assert_eq!(g.read_blocking(out.all()).unwrap(), vec![5.0]);
}

/// [out, dinp, dw, db] of one forward and one accumulating backward.
fn matmul_case(be: &dyn Backend, n: usize, c: usize, oc: usize, bias: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let (inp, w, b) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 0.5), randn(&mut rng, oc, 1.0));
    let mut out = vec![0.0; n * oc];
    be.matmul_forward(&mut out, &inp, &w, bias.then_some(&b[..]), n, c, oc);
    let dout = randn(&mut rng, n * oc, 1.0);
    let (mut dinp, mut dw, mut db) =
        (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0), randn(&mut rng, oc, 1.0));
    be.matmul_backward(Some(&mut dinp), &mut dw, bias.then_some(&mut db[..]), &dout, &inp, &w, n, c, oc);
    vec![out, dinp, dw, db]
}

#[test]
fn matmul_forward_and_backward_match_the_reference_on_sizes_that_are_not_tile_multiples() {
    for (n, c, oc) in
        [(7, 36, 20), (1, 3, 1), (64, 64, 64), (65, 17, 129), (130, 65, 70), (14, 36, 108), (200, 300, 150)]
    {
        for bias in [false, true] {
            let seed = (n * 1000 + c) as u64;
            let (got, want) =
                (matmul_case(&OnGpu, n, c, oc, bias, seed), matmul_case(&Reference, n, c, oc, bias, seed));
            for (i, name) in ["out", "dinp", "dw", "db"].iter().enumerate() {
                assert_close(&format!("{name} n={n} c={c} oc={oc} bias={bias}"), &got[i], &want[i], 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn matmul_backward_without_dinp_or_db_leaves_them_alone() {
    let (n, c, oc) = (9, 36, 11);
    let mut rng = Rng::new(5);
    let (inp, w, dout) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0), randn(&mut rng, n * oc, 1.0));
    let (mut got, mut want) = (randn(&mut rng, oc * c, 1.0), vec![]);
    want.clone_from(&got);
    OnGpu.matmul_backward(None, &mut got, None, &dout, &inp, &w, n, c, oc);
    Reference.matmul_backward(None, &mut want, None, &dout, &inp, &w, n, c, oc);
    assert_close("dw", &got, &want, 1e-4, 1e-4);
}

/// [out, mean, rstd, dinp, dw, db].
fn norm_case(be: &dyn Backend, kind: NormKind, bias: bool, n: usize, c: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new((n * 31 + c) as u64);
    let inp: Vec<f32> = randn(&mut rng, n * c, 2.0).iter().map(|x| x + 0.5).collect();
    let (w, b) = (randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    be.norm_forward(kind, &mut out, &mut mean, &mut rstd, &inp, &w, bias.then_some(&b[..]), 1e-5, c);
    let dout = randn(&mut rng, n * c, 1.0);
    let (mut dinp, mut dw, mut db) = (randn(&mut rng, n * c, 1.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
    be.norm_backward(kind, &mut dinp, &mut dw, bias.then_some(&mut db[..]), &dout, &inp, &w, &mean, &rstd, c);
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

#[test]
fn every_activation_matches_the_reference_forward_and_backward() {
    let acts =
        [Activation::Relu, Activation::Gelu, Activation::Swish, Activation::Glu, Activation::Geglu, Activation::Swiglu];
    for act in acts {
        for (n, f) in [(7, 36), (3, 1), (40, 130)] {
            let width = if act.is_gated() { 2 * f } else { f };
            let mut rng = Rng::new(n as u64 * 7 + f as u64);
            // Wide inputs, so both tails of GELU and the sigmoid's saturation are covered.
            let mut inp = randn(&mut rng, n * width, 3.0);
            inp[0] = -12.0;
            inp[n * width - 1] = 12.0;
            let case = |be: &dyn Backend| {
                let mut out = vec![0.0; n * f];
                be.activation_forward(act, &mut out, &inp, f);
                let dout = randn(&mut Rng::new(9), n * f, 1.0);
                let mut dinp = randn(&mut Rng::new(10), n * width, 1.0);
                be.activation_backward(act, &mut dinp, &dout, &inp, &out, f);
                [out, dinp]
            };
            let (got, want) = (case(&OnGpu), case(&Reference));
            assert_close(&format!("{act:?} forward n={n} f={f}"), &got[0], &want[0], 1e-5, 1e-4);
            assert_close(&format!("{act:?} backward n={n} f={f}"), &got[1], &want[1], 1e-5, 1e-4);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Bias {
    None,
    Alibi,
    Relative,
}

/// The seeded inputs of one attention case: q, k, v, the two biases' data, dout, and the gradients the backward
/// accumulates into (nonzero, so `+=` is checked).
struct AttnInputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    slopes: Vec<f32>,
    table: Vec<f32>,
    bucket: Vec<u32>,
    dout: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dtable: Vec<f32>,
}

fn attention_inputs(sh: &AttnShape, seed: u64) -> AttnInputs {
    let mut rng = Rng::new(seed);
    let (nq, nkv) = (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nkv * sh.s * sh.hs);
    let (q, k, v) = (randn(&mut rng, nq, 1.0), randn(&mut rng, nkv, 1.0), randn(&mut rng, nkv, 1.0));
    let buckets = 11;
    let slopes: Vec<f32> = (0..sh.nh).map(|h| 0.5f32.powi(h as i32 + 1)).collect();
    let table = randn(&mut rng, buckets * sh.nh, 1.0);
    let bucket: Vec<u32> = (0..sh.t * sh.s).map(|_| rng.below(buckets) as u32).collect();
    let dout = randn(&mut rng, nq, 1.0);
    let (dq, dk, dv) = (randn(&mut rng, nq, 1.0), randn(&mut rng, nkv, 1.0), randn(&mut rng, nkv, 1.0));
    let dtable = randn(&mut rng, table.len(), 1.0);
    AttnInputs { q, k, v, slopes, table, bucket, dout, dq, dk, dv, dtable }
}

/// [out, lse, dq, dk, dv, dtable] of one forward and one accumulating backward.
fn attention_case(be: &dyn Backend, sh: &AttnShape, bias: Bias, seed: u64) -> Vec<Vec<f32>> {
    let x = attention_inputs(sh, seed);
    let ab = match bias {
        Bias::None => AttnBias::None,
        Bias::Alibi => AttnBias::Alibi { slopes: &x.slopes },
        Bias::Relative => AttnBias::Relative { table: &x.table, bucket: &x.bucket },
    };
    let (mut out, mut lse) = (vec![f32::NAN; x.q.len()], vec![f32::NAN; sh.b * sh.nh * sh.t]);
    be.attention_forward(&mut out, &mut lse, &x.q, &x.k, &x.v, ab, sh);
    let (mut dq, mut dk, mut dv, mut dtable) = (x.dq.clone(), x.dk.clone(), x.dv.clone(), x.dtable.clone());
    let with_table = matches!(bias, Bias::Relative);
    be.attention_backward(
        &mut dq,
        &mut dk,
        &mut dv,
        with_table.then_some(&mut dtable[..]),
        &x.dout,
        &x.q,
        &x.k,
        &x.v,
        &out,
        &lse,
        ab,
        sh,
    );
    vec![out, lse, dq, dk, dv, dtable]
}

#[allow(clippy::too_many_arguments)]
fn shape(b: usize, t: usize, s: usize, nh: usize, nkv: usize, hs: usize, causal: bool, q_offset: usize) -> AttnShape {
    AttnShape { b, t, s, nh, nkv, hs, causal, q_offset, scale: 1.0 / (hs as f32).sqrt() }
}

fn check_attention(cases: &[AttnShape]) {
    for (ci, sh) in cases.iter().enumerate() {
        for bias in [Bias::None, Bias::Alibi, Bias::Relative] {
            let seed = 100 + ci as u64;
            let (got, want) = (attention_case(&OnGpu, sh, bias, seed), attention_case(&Reference, sh, bias, seed));
            for (i, name) in ["out", "lse", "dq", "dk", "dv", "dtable"].iter().enumerate() {
                assert_close(&format!("{name} {bias:?} {sh:?}"), &got[i], &want[i], 5e-5, 5e-4);
            }
        }
    }
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
    check_attention(&cases);
}

#[test]
fn attention_matches_the_reference_across_query_tiles_and_key_tiles() {
    check_attention(&[
        shape(1, 37, 130, 4, 2, 20, true, 93), // several key tiles, q_offset
        shape(2, 20, 150, 2, 1, 33, false, 0), // several key tiles, odd head size
        shape(1, 70, 70, 2, 2, 16, true, 0),   // two query tiles, causal with partial key tiles
        shape(1, 130, 67, 2, 1, 64, false, 0), // three query tiles, cross, HS 64
        shape(1, 19, 19, 1, 1, 128, true, 0),  // HS 128: the smallest tiles
        shape(1, 9, 9, 1, 1, 256, false, 0),   // the largest head size
    ]);
}

/// [out, dq, dk, dv, probs] of the naive (materialising) kernels on `attention_case`'s inputs (no bias).
fn naive_attention_case(sh: &AttnShape, seed: u64) -> Vec<Vec<f32>> {
    let (g, x) = (gpu(), attention_inputs(sh, seed));
    let (q, k, v, dout) = (up(&x.q), up(&x.k), up(&x.v), up(&x.dout));
    let (dq, dk, dv) = (up(&x.dq), up(&x.dk), up(&x.dv));
    let (out, probs) = (up(&vec![f32::NAN; x.q.len()]), up(&vec![f32::NAN; Gpu::attention_naive_probs_len(sh)]));
    run(|e| {
        g.attention_naive_forward(e, out.all(), probs.all(), q.all(), k.all(), v.all(), sh)?;
        g.attention_naive_backward(
            e,
            dq.all(),
            dk.all(),
            dv.all(),
            dout.all(),
            q.all(),
            k.all(),
            v.all(),
            probs.all(),
            sh,
        )
    });
    [&out, &dq, &dk, &dv, &probs].iter().map(|b| g.read_blocking(b.all()).unwrap()).collect()
}

#[test]
fn naive_attention_equals_the_fused_kernels_and_the_reference() {
    let cases = [
        shape(2, 7, 7, 3, 3, 12, true, 0),   // causal, MHA, awkward sizes
        shape(2, 7, 7, 3, 3, 12, false, 0),  // bidirectional
        shape(1, 70, 70, 2, 2, 16, true, 0), // more rows than a workgroup
        shape(2, 7, 5, 6, 2, 12, false, 0),  // cross-attention (S < T), GQA
        shape(2, 3, 8, 4, 1, 12, true, 5),   // decoding after 5 cached keys, MQA
    ];
    for (ci, sh) in cases.iter().enumerate() {
        let seed = 300 + ci as u64;
        let naive = naive_attention_case(sh, seed);
        let fused = attention_case(&OnGpu, sh, Bias::None, seed);
        let reference = attention_case(&Reference, sh, Bias::None, seed);
        // naive [out, dq, dk, dv] against [out, lse, dq, dk, dv, dtable]
        for (n, (name, r)) in [("out", 0), ("dq", 2), ("dk", 3), ("dv", 4)].into_iter().enumerate() {
            assert_close(&format!("naive vs reference {name} {sh:?}"), &naive[n], &reference[r], 5e-5, 5e-4);
            assert_close(&format!("naive vs fused {name} {sh:?}"), &naive[n], &fused[r], 5e-5, 5e-4);
        }
        // What the naive forward keeps: a probability per (query, key), 0 where masked, each row summing to 1.
        let probs = &naive[4];
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
    let sh = shape(1, 4, 4, 2, 2, 8, true, 0);
    let (x, small) = (zeros(64), zeros(31));
    let mut e = g.encoder();
    let err = g.attention_naive_forward(&mut e, x.all(), small.all(), x.all(), x.all(), x.all(), &sh).unwrap_err();
    assert!(err.to_string().contains("probs has 31 elements, the op needs 32"), "{err}");
}

#[test]
fn cross_entropy_matches_the_reference_and_ignores_minus_one_targets() {
    for (n, v) in [(9, 65), (4, 1), (3, 1000)] {
        let mut rng = Rng::new(n as u64 + v as u64);
        let logits = randn(&mut rng, n * v, 3.0);
        let targets: Vec<i32> = (0..n).map(|r| if r % 3 == 1 { -1 } else { rng.below(v) as i32 }).collect();
        let case = |be: &dyn Backend| {
            let mut d = vec![f32::NAN; n * v];
            let (total, count) = be.cross_entropy(&mut d, &logits, &targets, v, 0.25);
            (total, count, d)
        };
        let ((gt, gc, gd), (wt, wc, wd)) = (case(&OnGpu), case(&Reference));
        assert_eq!(gc, wc);
        assert!((gt - wt).abs() <= 1e-4 + 1e-5 * wt.abs(), "total loss: got {gt}, want {wt}");
        assert_close(&format!("dlogits n={n} v={v}"), &gd, &wd, 1e-6, 1e-4);
    }
}

#[test]
fn cross_entropy_with_every_target_ignored_gives_zero_loss_and_zero_gradient() {
    let (n, v) = (3, 10);
    let logits = randn(&mut Rng::new(3), n * v, 1.0);
    let mut d = vec![f32::NAN; n * v];
    let (total, count) = OnGpu.cross_entropy(&mut d, &logits, &[-1, -1, -1], v, 1.0);
    assert_eq!((total, count), (0.0, 0));
    assert!(d.iter().all(|&x| x == 0.0));
}

#[test]
fn adamw_matches_the_reference_with_and_without_decay() {
    for decay in [false, true] {
        for t in [1, 10] {
            let n = 1000;
            let mut rng = Rng::new(t as u64);
            let (p, g) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 0.1));
            let (m, v) = (randn(&mut rng, n, 0.01), randn(&mut rng, n, 0.01).iter().map(|x| x * x).collect::<Vec<_>>());
            let h = AdamW { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, t };
            let case = |be: &dyn Backend| {
                let (mut p, mut m, mut v) = (p.clone(), m.clone(), v.clone());
                be.adamw(&mut p, &g, &mut m, &mut v, &h, decay);
                [p, m, v]
            };
            let (got, want) = (case(&OnGpu), case(&Reference));
            for (i, name) in ["p", "m", "v"].iter().enumerate() {
                assert_close(&format!("{name} decay={decay} t={t}"), &got[i], &want[i], 1e-6, 1e-5);
            }
        }
    }
}

#[test]
fn rope_matches_the_reference_and_its_inverse_undoes_it() {
    for (rows, t, hs, pos0) in [(4 * 7, 7, 6, 0), (2 * 7, 7, 8, 5), (3 * 5, 5, 64, 1000), (2 * 3, 3, 7, 2)] {
        let x = randn(&mut Rng::new(hs as u64), rows * hs, 1.0);
        for inverse in [false, true] {
            let (mut got, mut want) = (x.clone(), x.clone());
            OnGpu.rope(&mut got, t, hs, pos0, 10000.0, inverse);
            Reference.rope(&mut want, t, hs, pos0, 10000.0, inverse);
            assert_close(&format!("rope hs={hs} pos0={pos0} inverse={inverse}"), &got, &want, 1e-5, 1e-5);
        }
        let mut back = x.clone();
        OnGpu.rope(&mut back, t, hs, pos0, 10000.0, false);
        OnGpu.rope(&mut back, t, hs, pos0, 10000.0, true);
        assert_close("rope then inverse", &back, &x, 1e-5, 1e-5);
    }
}

#[test]
fn sum_squares_matches_the_reference_over_one_two_and_three_reduction_passes() {
    for n in [1, 5, 4096, 4097, 300_001, 4096 * 4096 + 5] {
        let g = randn(&mut Rng::new(n as u64), n, 1.0);
        let (got, want) = (OnGpu.sum_squares(&g), Reference.sum_squares(&g));
        assert!((got - want).abs() <= 1e-5 * want, "n={n}: got {got}, want {want}");
    }
}

#[test]
fn clipping_on_the_device_matches_the_reference_clip() {
    let g = gpu();
    for clip in [0.5f32, 100.0] {
        let grads = randn(&mut Rng::new(4), 5000, 0.1);
        let mut want = grads.clone();
        let norm = clip_grads(&Reference, &mut want, clip);
        let (gb, ss) = (up(&grads), zeros(1));
        run(|e| {
            g.sum_squares(e, ss.all(), 0, gb.all())?;
            g.clip_grads(e, gb.all(), ss.all(), clip)
        });
        let got = g.read_blocking(gb.all()).unwrap();
        let got_norm = g.read_blocking(ss.all()).unwrap()[0].sqrt();
        assert!((got_norm - norm).abs() <= 1e-5 * norm, "norm: got {got_norm}, want {norm}");
        assert_close(&format!("clipped to {clip}"), &got, &want, 1e-7, 1e-5);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Errors a user can cause are errors, not panics.

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
    let err = g
        .attention_forward(&mut e, big.all(), a.all(), big.all(), big.all(), big.all(), GpuAttnBias::None, &sh)
        .unwrap_err();
    assert!(err.to_string().contains("head size 300"), "{err}");
}

#[test]
fn a_shader_that_does_not_compile_is_an_error_naming_it() {
    let g = gpu();
    let err = pollster_like_block_on(
        g.ctx.check_wgsl("broken.wgsl", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("broken.wgsl"), "{err}");
    pollster_like_block_on(g.ctx.check_wgsl("fine.wgsl", "@compute @workgroup_size(1) fn main() {}")).unwrap();
}

#[test]
fn every_kernel_compiles_ahead_of_time_for_the_head_sizes_and_buckets_given() {
    // What the browser must await before its first op: every fixed kernel, and the attention kernels of each
    // (head size, relative-bias buckets) pair, validated inside error scopes.
    pollster_like_block_on(gpu().prepare(&[(6, 11), (64, 32), (256, 0)])).unwrap();
    let err = pollster_like_block_on(gpu().prepare(&[(257, 0)])).unwrap_err().to_string();
    assert!(err.contains("head size 257"), "{err}");
}

/// Natively every future of the gpu module completes without a reactor; poll it to completion.
fn pollster_like_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = Waker::from(std::sync::Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Whole training steps through the kernels.

fn config(arch: &str, patch: serde_json::Value) -> Config {
    let layers = if arch == "encoder_decoder" { r#""n_encoder_layers": 2, "n_decoder_layers": 2,"# } else { "" };
    let data = if arch == "encoder_decoder" { r#""data": {"task": "reverse", "digits": 4},"# } else { "" };
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 36, "n_layers": 2, {layers} "n_heads": 6, "n_kv_heads": 2, "ctx_len": 16,
             "ffn": {{ "activation": "gelu", "mult": 2 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
             "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
             "train": {{ "batch_size": 2, "steps": 100, "lr": 0.01, "warmup": 0, "schedule": "constant", "weight_decay": 0.1, "grad_clip": 1.0 }},
             {data} "seed": 1 }}"#
    );
    let c = Config::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    let mut v = serde_json::to_value(&c).unwrap();
    for (k, x) in patch.as_object().unwrap() {
        v["model"][k] = x.clone();
    }
    let c: Config = serde_json::from_value(v).unwrap();
    c.validate().unwrap();
    c
}

fn batch(arch: &str, b: usize, t: usize, s: usize, vocab: usize, seed: u64) -> Batch {
    let mut r = Rng::new(seed);
    let mut ids = |n: usize| (0..n).map(|_| r.below(vocab - 1) as u32).collect::<Vec<u32>>();
    let (mut idx, src) = (ids(b * t), ids(b * s));
    let mut targets: Vec<i32> = idx.iter().map(|&x| ((x as usize + 1) % vocab) as i32).collect();
    if arch == "bert" {
        // Masked LM: every third position is masked (the last id) and predicts its original; the rest are ignored.
        for i in 0..idx.len() {
            targets[i] = if i % 3 == 0 { idx[i] as i32 } else { -1 };
            if i % 3 == 0 {
                idx[i] = (vocab - 1) as u32;
            }
        }
    }
    Batch { b, t, idx, targets, s, src }
}

/// Loss, gradients, and parameters after clipping and one AdamW step, on `be`.
fn step(be: &dyn Backend, c: &Config, arch: &str) -> (f32, Vec<f32>, Vec<f32>) {
    // (Adam's first step moves every parameter by ±lr·sign(g), so the comparison below skips parameters whose
    // gradient is within rounding of 0, where the sign is noise.)
    let vocab = 13;
    let mut model = Model::new(&c.model, vocab, 7);
    let batch = batch(arch, 2, 7, 5, vocab, 3);
    let fwd = model.forward(be, &batch, None);
    let mut grads = vec![0.0; model.params.len()];
    model.backward(be, &fwd, &batch, &mut grads);
    let raw = grads.clone();
    let mut opt = OptState::new(model.params.len());
    clip_grads(be, &mut grads, c.train.grad_clip);
    adamw_update(be, &mut model, &grads, &mut opt, &c.train, c.train.lr);
    (fwd.loss, raw, model.params)
}

#[test]
fn a_training_step_of_every_architecture_matches_the_cpu_backend() {
    use serde_json::json;
    let cases = [
        ("gpt", json!({"position": {"kind": "rope"}})),
        (
            "gpt",
            json!({"position": {"kind": "alibi"}, "norm": {"kind": "rmsnorm", "placement": "sandwich"}, "ffn": {"activation": "swiglu", "mult": 2}}),
        ),
        (
            "gpt",
            json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "ffn": {"activation": "relu", "mult": 2}, "n_kv_heads": 1}),
        ),
        (
            "bert",
            json!({"norm": {"kind": "layernorm", "placement": "post"}, "ffn": {"activation": "geglu", "mult": 2}}),
        ),
        (
            "bert",
            json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "rmsnorm", "placement": "deepnorm"}, "ffn": {"activation": "glu", "mult": 2}, "attention": {"scale": "none"}}),
        ),
        (
            "encoder_decoder",
            json!({"position": {"kind": "sinusoidal"}, "ffn": {"activation": "swish", "mult": 2}, "n_kv_heads": 6}),
        ),
        (
            "encoder_decoder",
            json!({"position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "norm": {"kind": "layernorm", "placement": "sandwich"}, "bias": false}),
        ),
    ];
    for (arch, patch) in cases {
        let c = config(arch, patch.clone());
        let ((gl, gg, gp), (cl, cg, cp)) = (step(&OnGpu, &c, arch), step(&Cpu, &c, arch));
        let what = format!("{arch} {patch}");
        assert!((gl - cl).abs() <= 1e-4 * cl.abs(), "{what}: loss {gl} vs {cl}");
        let scale = cg.iter().fold(0.0f32, |a, &g| a.max(g.abs()));
        assert_close(&format!("{what}: gradients"), &gg, &cg, 1e-4 * scale, 1e-3);
        let (sure_p, sure_c): (Vec<f32>, Vec<f32>) =
            gp.iter().zip(&cp).zip(&cg).filter(|(_, g)| g.abs() > 2e-4 * scale).map(|((a, b), _)| (*a, *b)).unzip();
        eprintln!("{what}: {} of {} parameters compared after AdamW", sure_p.len(), gp.len());
        assert!(sure_p.len() > 1000, "{what}: only {} of {} gradients are clear of 0", sure_p.len(), gp.len());
        assert_close(&format!("{what}: parameters after AdamW"), &sure_p, &sure_c, 1e-5, 1e-4);
    }
}
