//! Every backward op of the reference backend against central finite differences of its forward, and the whole
//! model's backward against finite differences of its loss.
//!
//! Method (ops): for y = f(x) pick a random upstream gradient G and the scalar L(x) = Σ G ⊙ f(x), accumulated in
//! f64 from the f32 outputs. For each element of each input, the finite-difference derivative is
//! (L(x⁺) − L(x⁻)) / (x⁺_i − x⁻_i) with x±_i = x_i ± EPS rounded to f32 (the step actually taken, so rounding of
//! the perturbation does not count as error). The analytic gradient g must satisfy |g − fd| ≤ ATOL + RTOL·|fd|.
//!
//! Backward ops ACCUMULATE (`+=`) into their gradient buffers: every buffer is pre-filled with random values that are
//! subtracted afterwards, so an op that overwrites instead of accumulating fails as well.
//!
//! Inputs are small (N = 3, C = 5, T = 4, HS = 4 …) and seeded with `transformer_playground::rng::Rng`, so every run
//! checks the same numbers.

use transformer_playground::backend::{ops, AttnBias, AttnGrads, AttnShape, HeadLayout, Reference};
use transformer_playground::config::{Activation, ModelConfig, NormKind};
use transformer_playground::model::position::{alibi_slopes, t5_bucket_table};
use transformer_playground::model::{Batch, Model};
use transformer_playground::model::block::FfnCache;
use transformer_playground::rng::Rng;

mod attention_case;
use attention_case::{buffer_lens, laid_out, Storage};

/// Perturbation of each f32 input element for the op checks.
const EPS: f32 = 1e-2;
/// |analytic − fd| ≤ ATOL + RTOL·|fd| for the op checks.
const ATOL: f64 = 1e-3;
const RTOL: f64 = 1e-2;

// ---------------------------------------------------------------------------------------------------------------
// Helpers.

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * std).collect()
}

/// Σ g ⊙ y in f64.
fn dot(g: &[f32], y: &[f32]) -> f64 {
    assert_eq!(g.len(), y.len());
    g.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central finite differences of `loss` at x, one element at a time.
fn fd_grad(x: &[f32], eps: f32, mut loss: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let (plus, minus) = (x[i] + eps, x[i] - eps);
            xp[i] = plus;
            let lp = loss(&xp);
            xp[i] = minus;
            let lm = loss(&xp);
            xp[i] = x[i];
            (lp - lm) / (plus as f64 - minus as f64)
        })
        .collect()
}

/// Indices where the analytic gradient disagrees with the finite differences: (index, analytic, fd).
fn mismatches(analytic: &[f32], fd: &[f64], atol: f64, rtol: f64) -> Vec<(usize, f32, f64)> {
    assert_eq!(analytic.len(), fd.len(), "analytic and finite-difference gradients differ in length");
    analytic
        .iter()
        .zip(fd)
        .enumerate()
        .filter(|(_, (&a, &f))| !(a.is_finite() && (a as f64 - f).abs() <= atol + rtol * f.abs()))
        .map(|(i, (&a, &f))| (i, a, f))
        .collect()
}

/// Asserts the analytic gradient of `input` matches finite differences, naming the op, the input and the index.
fn assert_grad(op: &str, input: &str, analytic: &[f32], fd: &[f64]) {
    assert_grad_tol(op, input, analytic, fd, ATOL, RTOL)
}

fn assert_grad_tol(op: &str, input: &str, analytic: &[f32], fd: &[f64], atol: f64, rtol: f64) {
    assert!(fd.iter().all(|f| f.is_finite()), "{op}: d{input}: finite differences are not finite: {fd:?}");
    let bad = mismatches(analytic, fd, atol, rtol);
    if let Some(&(i, a, f)) = bad.first() {
        panic!(
            "{op}: d{input}[{i}]: backward gives {a}, finite differences give {f} (|diff| {:.3e} > {atol} + {rtol}·|fd|); \
             {} of {} elements disagree: {:?}",
            (a as f64 - f).abs(),
            bad.len(),
            analytic.len(),
            bad.iter().take(8).collect::<Vec<_>>()
        );
    }
    let worst = analytic.iter().zip(fd).map(|(&a, &f)| (a as f64 - f).abs() / (atol + rtol * f.abs())).fold(0.0, f64::max);
    eprintln!("{op}: d{input}: worst |diff|/tolerance {worst:.3}");
    // A check where every gradient is ~0 would pass vacuously: every input checked here has a real gradient.
    assert!(
        fd.iter().any(|f| f.abs() > 10.0 * atol),
        "{op}: d{input}: finite-difference gradient is ~0 everywhere ({fd:?}); the check would be vacuous"
    );
}

/// A gradient buffer pre-filled with random values (to check that backward accumulates), and the fill.
fn prefilled(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let fill = randn(rng, n, 1.0);
    (fill.clone(), fill)
}

/// What backward added to a pre-filled buffer.
fn added(buf: &[f32], fill: &[f32]) -> Vec<f32> {
    buf.iter().zip(fill).map(|(a, b)| a - b).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The checker itself must be able to fail.

#[test]
fn the_finite_difference_check_rejects_a_wrong_gradient() {
    // L(x) = Σ g ⊙ x² has gradient 2 g ⊙ x.
    let mut rng = Rng::new(1);
    let (x, g) = (randn(&mut rng, 6, 1.0), randn(&mut rng, 6, 1.0));
    let loss = |x: &[f32]| x.iter().zip(&g).map(|(&a, &b)| b as f64 * a as f64 * a as f64).sum::<f64>();
    let fd = fd_grad(&x, EPS, loss);
    let right: Vec<f32> = x.iter().zip(&g).map(|(a, b)| 2.0 * a * b).collect();
    assert!(mismatches(&right, &fd, ATOL, RTOL).is_empty(), "the right gradient must pass");
    let mut wrong = right.clone();
    wrong[3] = -wrong[3];
    assert_eq!(mismatches(&wrong, &fd, ATOL, RTOL).len(), 1, "a flipped sign must fail");
    let mut wrong = right.clone();
    wrong[1] *= 1.1;
    assert_eq!(mismatches(&wrong, &fd, ATOL, RTOL).len(), 1, "a 10% error must fail");
    let mut wrong = right;
    wrong[0] = f32::NAN;
    assert_eq!(mismatches(&wrong, &fd, ATOL, RTOL).len(), 1, "NaN must fail");
    let r = std::panic::catch_unwind(|| assert_grad("x²", "x", &wrong, &fd));
    let msg = *r.expect_err("assert_grad must panic").downcast::<String>().unwrap();
    assert!(msg.contains("x²: dx[0]"), "the message names op, input and index: {msg}");
}

// ---------------------------------------------------------------------------------------------------------------
// matmul

fn check_matmul(with_bias: bool, seed: u64) {
    let (n, c, oc) = (3, 5, 4);
    let op = format!("matmul (bias: {with_bias})");
    let mut rng = Rng::new(seed);
    let inp = randn(&mut rng, n * c, 1.0);
    let w = randn(&mut rng, oc * c, 0.5);
    let b = randn(&mut rng, oc, 0.5);
    let g = randn(&mut rng, n * oc, 1.0);
    let bias = |b: &[f32]| -> Option<Vec<f32>> { with_bias.then(|| b.to_vec()) };
    let loss = |inp: &[f32], w: &[f32], b: &[f32]| {
        let mut out = vec![0.0; n * oc];
        ops::matmul_forward(&mut out, inp, w, bias(b).as_deref(), n, c, oc);
        dot(&g, &out)
    };
    let (mut dinp, f_inp) = prefilled(&mut rng, n * c);
    let (mut dw, f_w) = prefilled(&mut rng, oc * c);
    let (mut db, f_b) = prefilled(&mut rng, oc);
    ops::matmul_backward(Some(&mut dinp), &mut dw, with_bias.then_some(&mut db[..]), &g, &inp, &w, n, c, oc);
    assert_grad(&op, "inp", &added(&dinp, &f_inp), &fd_grad(&inp, EPS, |x| loss(x, &w, &b)));
    assert_grad(&op, "w", &added(&dw, &f_w), &fd_grad(&w, EPS, |x| loss(&inp, x, &b)));
    if with_bias {
        assert_grad(&op, "b", &added(&db, &f_b), &fd_grad(&b, EPS, |x| loss(&inp, &w, x)));
    } else {
        assert_eq!(db, f_b, "{op}: db must be left alone when there is no bias");
    }

    // dinp = None leaves dw and db as with Some.
    let (mut dw2, mut db2) = (f_w.clone(), f_b.clone());
    ops::matmul_backward(None, &mut dw2, with_bias.then_some(&mut db2[..]), &g, &inp, &w, n, c, oc);
    assert_eq!((dw2, db2), (dw, db), "{op}: dw, db without dinp");
}

#[test]
fn matmul_backward_matches_finite_differences() {
    check_matmul(true, 10);
    check_matmul(false, 11);
}

// ---------------------------------------------------------------------------------------------------------------
// GRU recurrence (recurrent positions)

fn check_gru(with_bias: bool, with_h0: bool, seed: u64) {
    let (b, t, c) = (2, 4, 3);
    let op = format!("gru (bias: {with_bias}, h0: {with_h0})");
    let mut rng = Rng::new(seed);
    let gi = randn(&mut rng, b * t * 3 * c, 1.0);
    let w = randn(&mut rng, 3 * c * c, 0.6);
    let bh = randn(&mut rng, 3 * c, 0.5);
    let h0 = randn(&mut rng, b * c, 0.8);
    let g = randn(&mut rng, b * t * c, 1.0);
    let h0 = with_h0.then_some(&h0[..]);
    let run = |gi: &[f32], w: &[f32], bh: &[f32]| {
        let (mut h, mut gates) = (vec![0.0; b * t * c], vec![0.0; b * t * 4 * c]);
        ops::gru_forward(&mut h, &mut gates, gi, w, with_bias.then_some(bh), h0, b, t, c);
        (h, gates)
    };
    let loss = |gi: &[f32], w: &[f32], bh: &[f32]| dot(&g, &run(gi, w, bh).0);
    let (h, gates) = run(&gi, &w, &bh);
    let (mut dgi, f_gi) = prefilled(&mut rng, gi.len());
    let (mut dw, f_w) = prefilled(&mut rng, w.len());
    let (mut db, f_b) = prefilled(&mut rng, bh.len());
    ops::gru_backward(&mut dgi, &mut dw, with_bias.then_some(&mut db[..]), &g, &gates, &h, h0, &w, b, t, c);
    assert_grad(&op, "gi", &added(&dgi, &f_gi), &fd_grad(&gi, EPS, |x| loss(x, &w, &bh)));
    assert_grad(&op, "w_hh", &added(&dw, &f_w), &fd_grad(&w, EPS, |x| loss(&gi, x, &bh)));
    if with_bias {
        assert_grad(&op, "b_hh", &added(&db, &f_b), &fd_grad(&bh, EPS, |x| loss(&gi, &w, x)));
    } else {
        assert_eq!(db, f_b, "{op}: db_hh must be left alone when there is no bias");
    }
}

#[test]
fn gru_backward_through_time_matches_finite_differences() {
    check_gru(true, false, 12);
    check_gru(false, false, 13);
    check_gru(true, true, 14);
}

// ---------------------------------------------------------------------------------------------------------------
// norm

fn check_norm(kind: NormKind, with_bias: bool, seed: u64) {
    let (n, c, eps) = (3, 5, 1e-5f32);
    let op = format!("norm ({kind:?}, bias: {with_bias})");
    let mut rng = Rng::new(seed);
    // Rows with a nonzero mean and different spreads, so centring and scaling both matter.
    let inp: Vec<f32> = (0..n * c).map(|i| 0.5 + (1.0 + (i / c) as f32 * 0.5) * rng.normal() as f32).collect();
    let w: Vec<f32> = (0..c).map(|_| 1.0 + 0.3 * rng.normal() as f32).collect();
    let b = randn(&mut rng, c, 0.5);
    let g = randn(&mut rng, n * c, 1.0);
    let loss = |inp: &[f32], w: &[f32], b: &[f32]| {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        ops::norm_forward(kind, &mut out, &mut mean, &mut rstd, inp, w, with_bias.then_some(b), eps, c);
        dot(&g, &out)
    };
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    ops::norm_forward(kind, &mut out, &mut mean, &mut rstd, &inp, &w, with_bias.then_some(&b[..]), eps, c);
    let (mut dinp, f_inp) = prefilled(&mut rng, n * c);
    let (mut dw, f_w) = prefilled(&mut rng, c);
    let (mut db, f_b) = prefilled(&mut rng, c);
    ops::norm_backward(kind, &mut dinp, &mut dw, with_bias.then_some(&mut db[..]), &g, &inp, &w, &mean, &rstd, c);
    assert_grad(&op, "inp", &added(&dinp, &f_inp), &fd_grad(&inp, EPS, |x| loss(x, &w, &b)));
    assert_grad(&op, "w", &added(&dw, &f_w), &fd_grad(&w, EPS, |x| loss(&inp, x, &b)));
    if with_bias {
        assert_grad(&op, "b", &added(&db, &f_b), &fd_grad(&b, EPS, |x| loss(&inp, &w, x)));
    } else {
        assert_eq!(db, f_b, "{op}: db must be left alone when there is no bias");
    }
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    check_norm(NormKind::Layernorm, true, 20);
    check_norm(NormKind::Layernorm, false, 21);
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    check_norm(NormKind::Rmsnorm, false, 22);
    check_norm(NormKind::Rmsnorm, true, 23);
}

// ---------------------------------------------------------------------------------------------------------------
// attention

#[derive(Clone, Copy, Debug)]
enum BiasKind {
    None,
    Alibi,
    /// T5 buckets (buckets, max_distance, bidirectional).
    Relative(usize, usize, bool),
}

fn make_bias<'a>(kind: BiasKind, slopes: &'a [f32], table: &'a [f32], bucket: &'a [u32]) -> AttnBias<'a> {
    match kind {
        BiasKind::None => AttnBias::None,
        BiasKind::Alibi => AttnBias::Alibi { slopes },
        BiasKind::Relative(..) => AttnBias::Relative { table, bucket },
    }
}

#[allow(clippy::too_many_arguments)]
fn shape(b: usize, t: usize, s: usize, nh: usize, nkv: usize, causal: bool, q_offset: usize, unit_scale: bool) -> AttnShape {
    let mut sh = attention_case::shape(b, t, s, nh, nkv, 4, causal, q_offset);
    if unit_scale {
        sh.scale = 1.0;
    }
    sh
}

fn check_attention(name: &str, sh: AttnShape, kind: BiasKind, seed: u64) {
    check_attention_in(name, sh, Storage::Heads, kind, seed)
}

/// Finite differences of the attention loss over its input buffer(s) — q, k, v laid out as `st` says (q in one
/// buffer and k, v in another, or all three in one) — against the gradients the backward adds at those layouts.
fn check_attention_in(name: &str, sh: AttnShape, st: Storage, kind: BiasKind, seed: u64) {
    let sh = laid_out(sh, st);
    let op = format!("attention [{name}] {sh:?} {st:?} {kind:?}");
    let mut rng = Rng::new(seed);
    let ([n1, n2], c) = (buffer_lens(&sh, st), sh.nh * sh.hs);
    let x1 = randn(&mut rng, n1, 0.8);
    let x2 = randn(&mut rng, n2, 0.8);
    let g = randn(&mut rng, sh.b * sh.t * c, 1.0);
    let slopes = alibi_slopes(sh.nh);
    let (nbuckets, bucket) = match kind {
        BiasKind::Relative(buckets, max_distance, bidi) => {
            (buckets, t5_bucket_table(sh.t, sh.s, sh.q_offset, bidi, buckets, max_distance))
        }
        _ => (0, vec![]),
    };
    let table = randn(&mut rng, nbuckets * sh.nh, 0.5);
    let one = st.one_buffer();
    let forward = |x1: &[f32], x2: &[f32], table: &[f32]| {
        let (mut out, mut lse) = (vec![0.0; sh.b * sh.t * c], vec![0.0; sh.b * sh.nh * sh.t]);
        let kv = if one { x1 } else { x2 };
        ops::attention_forward(&mut out, &mut lse, x1, kv, kv, make_bias(kind, &slopes, table, &bucket), &sh);
        (out, lse)
    };
    let loss = |x1: &[f32], x2: &[f32], table: &[f32]| dot(&g, &forward(x1, x2, table).0);

    let (out, lse) = forward(&x1, &x2, &table);
    assert!(out.iter().chain(&lse).all(|x| x.is_finite()), "{op}: forward is not finite");
    let (mut d1, f_1) = prefilled(&mut rng, n1);
    let (mut d2, f_2) = prefilled(&mut rng, n2);
    let (mut dtable, f_t) = prefilled(&mut rng, table.len());
    let relative = matches!(kind, BiasKind::Relative(..));
    let grads = if one { AttnGrads::Qkv(&mut d1[..]) } else { AttnGrads::QAndKv { dq: &mut d1[..], dkv: &mut d2[..] } };
    let kv = if one { &x1 } else { &x2 };
    let bias = make_bias(kind, &slopes, &table, &bucket);
    ops::attention_backward(grads, relative.then_some(&mut dtable[..]), &g, &x1, kv, kv, &out, &lse, bias, &sh);
    let first = if one { "qkv" } else { "q" };
    assert_grad(&op, first, &added(&d1, &f_1), &fd_grad(&x1, EPS, |x| loss(x, &x2, &table)));
    if !one {
        assert_grad(&op, "k, v", &added(&d2, &f_2), &fd_grad(&x2, EPS, |x| loss(&x1, x, &table)));
    }
    if relative {
        assert_grad(&op, "table", &added(&dtable, &f_t), &fd_grad(&table, EPS, |x| loss(&x1, &x2, x)));
    }
}

#[test]
fn attention_reading_q_k_v_from_qkv_rows_and_cross_rows_matches_finite_differences() {
    // Padded rows, odd head sizes are the fast-vs-reference tests' business; here the maths of the strided
    // gradients: GQA from one qkv buffer, causal and bidirectional, ALiBi and relative; cross-attention with S ≠ T.
    let qkv = Storage::QkvRows { pad: 1 };
    check_attention_in("qkv rows, causal GQA", shape(2, 4, 4, 4, 2, true, 0, false), qkv, BiasKind::None, 60);
    check_attention_in("qkv rows, bidirectional MQA, alibi", shape(1, 4, 4, 2, 1, false, 0, true), qkv, BiasKind::Alibi, 61);
    check_attention_in("qkv rows, relative", shape(1, 5, 5, 2, 2, true, 0, true), qkv, BiasKind::Relative(8, 16, false), 62);
    let cross = Storage::CrossRows { pad: 2 };
    check_attention_in("cross rows S=6 > T=4, GQA", shape(2, 4, 6, 4, 2, false, 0, false), cross, BiasKind::None, 63);
    check_attention_in("cross rows, q_offset 3", shape(1, 4, 7, 2, 1, true, 3, true), cross, BiasKind::Alibi, 64);
}

#[test]
fn causal_self_attention_backward_matches_finite_differences() {
    check_attention("causal, 1/sqrt(HS)", shape(2, 4, 4, 2, 2, true, 0, false), BiasKind::None, 30);
    check_attention("causal, scale 1", shape(2, 4, 4, 2, 2, true, 0, true), BiasKind::None, 31);
}

#[test]
fn bidirectional_self_attention_backward_matches_finite_differences() {
    check_attention("bidirectional, 1/sqrt(HS)", shape(2, 4, 4, 2, 2, false, 0, false), BiasKind::None, 32);
    check_attention("bidirectional, scale 1", shape(1, 4, 4, 2, 2, false, 0, true), BiasKind::None, 33);
}

#[test]
fn cross_attention_backward_with_more_keys_than_queries_matches_finite_differences() {
    check_attention("cross S=6 > T=4", shape(2, 4, 6, 2, 2, false, 0, false), BiasKind::None, 34);
    check_attention("cross S=3 < T=5, GQA", shape(1, 5, 3, 4, 2, false, 0, true), BiasKind::None, 35);
}

#[test]
fn grouped_query_attention_backward_matches_finite_differences() {
    check_attention("GQA NH=4 NKV=2, causal", shape(2, 4, 4, 4, 2, true, 0, false), BiasKind::None, 36);
    check_attention("GQA NH=4 NKV=2, bidirectional", shape(1, 4, 4, 4, 2, false, 0, true), BiasKind::None, 37);
}

#[test]
fn multi_query_attention_backward_matches_finite_differences() {
    check_attention("MQA NH=4 NKV=1, causal", shape(2, 4, 4, 4, 1, true, 0, false), BiasKind::None, 38);
    check_attention("MQA NH=4 NKV=1, bidirectional", shape(1, 4, 4, 4, 1, false, 0, true), BiasKind::None, 39);
}

#[test]
fn causal_attention_with_a_query_offset_backward_matches_finite_differences() {
    // Decoding after 3 cached positions: queries at 3..7 see keys 0..=3+i of S = 3 + 4.
    check_attention("causal, q_offset 3", shape(2, 4, 7, 2, 2, true, 3, false), BiasKind::None, 40);
    check_attention("causal, q_offset 2, GQA, scale 1", shape(1, 3, 5, 4, 2, true, 2, true), BiasKind::None, 41);
}

#[test]
fn alibi_attention_backward_matches_finite_differences() {
    check_attention("alibi causal", shape(2, 4, 4, 4, 2, true, 0, false), BiasKind::Alibi, 42);
    check_attention("alibi bidirectional", shape(1, 4, 4, 4, 4, false, 0, true), BiasKind::Alibi, 43);
    check_attention("alibi causal, q_offset 2", shape(1, 3, 5, 2, 1, true, 2, false), BiasKind::Alibi, 44);
}

#[test]
fn relative_bias_attention_backward_matches_finite_differences_including_the_bias_table() {
    // buckets 8, max_distance 16: with |i − j| up to 6 both the exact and the log-spaced buckets are used.
    check_attention("relative bidirectional", shape(2, 5, 5, 2, 2, false, 0, true), BiasKind::Relative(8, 16, true), 45);
    check_attention("relative causal, GQA", shape(1, 5, 5, 4, 2, true, 0, false), BiasKind::Relative(8, 16, false), 46);
    check_attention(
        "relative causal, q_offset 3",
        shape(1, 4, 7, 2, 2, true, 3, true),
        BiasKind::Relative(8, 16, false),
        47,
    );
    check_attention("relative cross S=6", shape(1, 4, 6, 2, 1, false, 0, true), BiasKind::Relative(8, 16, true), 48);
}

// ---------------------------------------------------------------------------------------------------------------
// rope

fn check_rope(bh: usize, t: usize, hs: usize, pos0: usize, theta: f32, seed: u64) {
    // (B·H, T, HS) contiguous: one batch of bh heads.
    check_rope_at(HeadLayout::heads(bh, t, hs), bh * t * hs, 1, bh, t, hs, pos0, theta, seed);
}

/// RoPE on the (B, H, T, HS) tensor at `lay` in a buffer of n floats (the elements outside it must not move).
#[allow(clippy::too_many_arguments)]
fn check_rope_at(lay: HeadLayout, n: usize, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, seed: u64) {
    let op = format!("rope ({lay:?}, B {b}, H {h}, T {t}, HS {hs}, pos0 {pos0}, theta {theta})");
    let mut rng = Rng::new(seed);
    let x = randn(&mut rng, n, 1.0);
    let g = randn(&mut rng, n, 1.0);
    let loss = |x: &[f32]| {
        let mut y = x.to_vec();
        ops::rope_apply(&mut y, lay, b, h, t, hs, pos0, theta, false);
        dot(&g, &y)
    };
    // The backward: the inverse rotation applied to the upstream gradient is Jᵀ·G.
    let mut dx = g.clone();
    ops::rope_apply(&mut dx, lay, b, h, t, hs, pos0, theta, true);
    assert_grad(&op, "x", &dx, &fd_grad(&x, EPS, loss));
    // And it is an inverse: rope(rope(x), inverse) = x.
    let mut y = x.clone();
    ops::rope_apply(&mut y, lay, b, h, t, hs, pos0, theta, false);
    assert_ne!(y, x, "{op}: the rotation must move something");
    ops::rope_apply(&mut y, lay, b, h, t, hs, pos0, theta, true);
    for (i, (a, b)) in y.iter().zip(&x).enumerate() {
        assert!((a - b).abs() < 1e-5, "{op}: inverse(forward(x))[{i}] = {a}, x = {b}");
    }
}

#[test]
fn rope_inverse_is_the_backward_of_rope_by_finite_differences() {
    check_rope(3, 4, 4, 0, 10000.0, 50);
    check_rope(2, 4, 8, 5, 10000.0, 51);
    check_rope(2, 3, 8, 2, 100.0, 52);
    // Qkv rows of width 1 + (NH + 2·NKV)·HS = 17 (NH 2, NKV 1, HS 4, one pad column): the k columns, then the q ones.
    let (b, t, hs, w) = (2, 3, 4, 1 + (2 + 2) * 4);
    check_rope_at(HeadLayout::rows(t, w, 1 + 2 * hs, hs), b * t * w, b, 1, t, hs, 3, 10000.0, 53);
    check_rope_at(HeadLayout::rows(t, w, 1, hs), b * t * w, b, 2, t, hs, 3, 10000.0, 54);
}

// ---------------------------------------------------------------------------------------------------------------
// activations

fn check_activation(act: Activation, seed: u64) {
    let (n, f) = (3, 5);
    let op = format!("activation {act:?}");
    let width = if act.is_gated() { 2 * f } else { f };
    let mut rng = Rng::new(seed);
    // Inputs away from 0 (|x| ≥ 0.1 > EPS), so relu's kink is never inside a finite-difference step.
    let inp: Vec<f32> = (0..n * width)
        .map(|_| loop {
            let x = 1.5 * rng.normal() as f32;
            if x.abs() >= 0.1 {
                break x;
            }
        })
        .collect();
    let g = randn(&mut rng, n * f, 1.0);
    let loss = |inp: &[f32]| {
        let mut out = vec![0.0; n * f];
        ops::activation_forward(act, &mut out, inp, f);
        dot(&g, &out)
    };
    let (mut dinp, fill) = prefilled(&mut rng, n * width);
    let mut out = vec![0.0; n * f];
    ops::activation_forward(act, &mut out, &inp, f);
    ops::activation_backward(act, &mut dinp, &g, &inp, f);
    assert_grad(&op, "inp", &added(&dinp, &fill), &fd_grad(&inp, EPS, loss));
}

#[test]
fn every_activation_backward_matches_finite_differences() {
    use Activation::*;
    for (i, act) in [Relu, Gelu, Swish, Glu, Geglu, Swiglu].into_iter().enumerate() {
        check_activation(act, 60 + i as u64);
    }
}

/// The FFN's proj layer through the activation, y = act(pre) · wᵀ + b, as `matmul_act_backward` differentiates it:
/// dpre is WRITTEN (pre-filled with random values that must be gone), dw and db accumulate.
fn check_matmul_act(act: Activation, with_bias: bool, seed: u64) {
    let (n, f, c) = (3, 4, 5); // proj: F → C
    let op = format!("matmul_act_backward {act:?} (bias: {with_bias})");
    let width = if act.is_gated() { 2 * f } else { f };
    let mut rng = Rng::new(seed);
    // Away from 0, so relu's kink is never inside a finite-difference step.
    let pre: Vec<f32> = (0..n * width).map(|_| rng.normal() as f32 * 1.5).map(|x| if x.abs() < 0.1 { x + 0.3 } else { x }).collect();
    let (w, b, g) = (randn(&mut rng, c * f, 0.5), randn(&mut rng, c, 0.5), randn(&mut rng, n * c, 1.0));
    let bias = |b: &[f32]| -> Option<Vec<f32>> { with_bias.then(|| b.to_vec()) };
    let loss = |pre: &[f32], w: &[f32], b: &[f32]| {
        let mut a = vec![0.0; n * f];
        ops::activation_forward(act, &mut a, pre, f);
        let mut y = vec![0.0; n * c];
        ops::matmul_forward(&mut y, &a, w, bias(b).as_deref(), n, f, c);
        dot(&g, &y)
    };
    let mut a = vec![0.0; n * f];
    ops::activation_forward(act, &mut a, &pre, f);
    let mut dpre = randn(&mut rng, n * width, 1.0);
    let (mut dw, f_w) = prefilled(&mut rng, c * f);
    let (mut db, f_b) = prefilled(&mut rng, c);
    ops::matmul_act_backward(act, &mut dpre, &mut dw, with_bias.then_some(&mut db[..]), &g, &a, &pre, &w, n, f, c);
    assert_grad(&op, "pre", &dpre, &fd_grad(&pre, EPS, |x| loss(x, &w, &b)));
    assert_grad(&op, "w", &added(&dw, &f_w), &fd_grad(&w, EPS, |x| loss(&pre, x, &b)));
    if with_bias {
        assert_grad(&op, "b", &added(&db, &f_b), &fd_grad(&b, EPS, |x| loss(&pre, &w, x)));
    } else {
        assert_eq!(db, f_b, "{op}: db must be left alone when there is no bias");
    }
}

#[test]
fn the_proj_layers_backward_through_every_activation_matches_finite_differences() {
    use Activation::*;
    for (i, act) in [Relu, Gelu, Swish, Glu, Geglu, Swiglu].into_iter().enumerate() {
        check_matmul_act(act, true, 70 + i as u64);
        check_matmul_act(act, false, 80 + i as u64);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// cross-entropy

#[test]
fn cross_entropy_gradient_matches_finite_differences_of_its_loss() {
    let (v, dscale) = (6, 0.37f32);
    let targets = [2, -1, 0, 5];
    let n = targets.len();
    let mut rng = Rng::new(70);
    let logits = randn(&mut rng, n * v, 2.0);
    let loss = |logits: &[f32]| {
        let mut d = vec![0.0; n * v];
        let (total, _) = ops::cross_entropy(&mut d, logits, &targets, v, dscale);
        total * dscale as f64
    };
    // dlogits is written (not accumulated): garbage in the buffer must not survive.
    let mut dlogits = vec![7.0f32; n * v];
    let (total, count) = ops::cross_entropy(&mut dlogits, &logits, &targets, v, dscale);
    assert_eq!(count, 3, "rows with target -1 are not counted");
    assert!(total.is_finite() && total > 0.0);
    assert!(dlogits[v..2 * v].iter().all(|&d| d == 0.0), "ignored row must have zero gradient: {:?}", &dlogits[v..2 * v]);
    let op = format!("cross_entropy (targets {targets:?}, dscale {dscale})");
    assert_grad(&op, "logits", &dlogits, &fd_grad(&logits, EPS, loss));
}

// ---------------------------------------------------------------------------------------------------------------
// The whole model: backward against finite differences of the forward loss, on sampled parameter elements.

/// Perturbation of each parameter, and the tolerance, for the model checks (the loss is an f32 mean).
const MODEL_EPS: f32 = 1e-2;
const MODEL_ATOL: f64 = 1e-4;
const MODEL_RTOL: f64 = 2e-2;

fn model_config(json: &str) -> ModelConfig {
    let cfg: ModelConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}: {json}"));
    cfg
}

/// A model with O(1) activations: larger init than default, and norm weights / biases moved off 1 / 0.
fn random_model(cfg: &ModelConfig, vocab: usize, seed: u64) -> Model {
    let mut m = Model::new(cfg, vocab, seed);
    let mut rng = Rng::new(seed ^ 0xF00D);
    for t in m.layout.tensors.clone() {
        let p = t.view.of_mut(&mut m.params);
        if t.shape.len() == 1 {
            p.iter_mut().for_each(|x| *x += 0.2 * rng.normal() as f32);
        } else if t.name.contains("rel_bias") {
            p.iter_mut().for_each(|x| *x += 0.5 * rng.normal() as f32);
        }
    }
    m
}

fn tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// The forward loss (`Model::forward(..).loss`, the mean cross-entropy) before its rounding to f32: the mean of
/// the cross-entropy totals of the f32 logits, in f64. Rounding the loss to f32 would add up to ~1e-7/(2·eps) of
/// noise to every finite difference.
fn loss64(model: &Model, batch: &Batch) -> f64 {
    let fwd = model.forward(&Reference, batch, None);
    let v = model.vocab();
    let mut d = vec![0.0; fwd.logits.len()];
    let (total, count) = ops::cross_entropy(&mut d, &fwd.logits, &batch.targets, v, 1.0);
    let l = total / count as f64;
    assert_eq!(l as f32, fwd.loss, "the f64 loss rounds to the model's loss");
    // A Mixture-of-Experts model's objective adds each layer's weighted balancing loss (its statistics' first value).
    let aux = model.cfg.ffn.moe.as_ref().map_or(0.0, |m| m.aux_loss as f64);
    l + fwd.moe_stats().iter().map(|s| aux * s[0] as f64).sum::<f64>()
}

/// Every Mixture-of-Experts layer's routing (each assignment's expert and row) in a forward pass; empty for a dense
/// model.
fn routing(model: &Model, batch: &Batch) -> Vec<f32> {
    let fwd = model.forward(&Reference, batch, None);
    let stacks = [&fwd.enc, &fwd.dec].into_iter().flatten();
    let caches = stacks.flat_map(|s| &s.blocks).filter_map(|b| match &b.ffn.f {
        FfnCache::Moe(m) => Some(m),
        FfnCache::Dense(_) => None,
    });
    caches.flat_map(|m| m.choice.iter().chain(&m.slot).copied()).collect()
}

fn check_model(name: &str, cfg: &ModelConfig, batch: &Batch, vocab: usize, seed: u64) {
    let model = random_model(cfg, vocab, seed);
    let fwd = model.forward(&Reference, batch, None);
    assert!(fwd.loss.is_finite(), "{name}: loss {}", fwd.loss);
    let mut grads = vec![0.0; model.params.len()];
    model.backward(&Reference, &fwd, batch, &mut grads);

    // Elements to check: for every tensor its largest-gradient element and one random element, then 20 more
    // random elements anywhere (weighted by tensor size).
    let mut rng = Rng::new(seed ^ 0xBEEF);
    let tensors = &model.layout.tensors;
    let mut picks: Vec<(usize, usize)> = vec![]; // (tensor, index within it)
    for (ti, t) in tensors.iter().enumerate() {
        let g = t.view.of(&grads);
        let argmax = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        picks.push((ti, argmax));
        picks.push((ti, rng.below(t.view.len)));
    }
    let total: usize = tensors.iter().map(|t| t.view.len).sum();
    for _ in 0..20 {
        let mut r = rng.below(total);
        for (ti, t) in tensors.iter().enumerate() {
            if r < t.view.len {
                picks.push((ti, r));
                break;
            }
            r -= t.view.len;
        }
    }

    let mut params = model.clone();
    let mut loss_at = |flat: usize, x: f32| {
        let old = params.params[flat];
        params.params[flat] = x;
        let l = loss64(&params, batch);
        let r = routing(&params, batch);
        params.params[flat] = old;
        (l, r)
    };
    let center = routing(&model, batch);
    let (mut worst, mut nonzero, mut rerouted) = (0.0f64, 0, 0);
    let picked = picks.len();
    for (ti, i) in picks {
        let t = &tensors[ti];
        let flat = t.view.offset + i;
        let x = model.params[flat];
        let (plus, minus) = (x + MODEL_EPS, x - MODEL_EPS);
        let ((lp, rp), (lm, rm)) = (loss_at(flat, plus), loss_at(flat, minus));
        if rp != center || rm != center {
            // A Mixture-of-Experts router chose differently within ±eps: the objective jumps there (routing is
            // piecewise constant), so a finite difference across it says nothing about the gradient.
            rerouted += 1;
            continue;
        }
        let fd = (lp - lm) / (plus as f64 - minus as f64);
        let g = grads[flat];
        let tol = MODEL_ATOL + MODEL_RTOL * fd.abs();
        let err = (g as f64 - fd).abs();
        assert!(
            g.is_finite() && err <= tol,
            "model {name}: d{}[{i}] (param {flat}): backward gives {g}, finite differences of the loss give {fd} \
             (|diff| {err:.3e} > {MODEL_ATOL} + {MODEL_RTOL}·|fd|)",
            t.name
        );
        worst = worst.max(err / tol);
        nonzero += (fd.abs() > 10.0 * MODEL_ATOL) as usize;
    }
    eprintln!(
        "model {name}: loss {:.4}, {} tensors, worst error/tolerance {worst:.3}, {nonzero} checks with |grad| > {}, {rerouted} of {picked} skipped (rerouted)",
        fwd.loss,
        tensors.len(),
        10.0 * MODEL_ATOL
    );
    assert!(rerouted * 5 <= picked, "model {name}: {rerouted} of {picked} checks changed the routing; the check is too weak");
    assert!(nonzero >= tensors.len() / 2, "model {name}: only {nonzero} checked gradients are clearly nonzero; the check is too weak");
}

#[test]
fn gpt_with_rope_rmsnorm_swiglu_and_gqa_backward_matches_finite_differences_of_the_loss() {
    let cfg = model_config(
        r#"{"arch": "gpt", "d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 8,
            "ffn": {"activation": "swiglu", "mult": 2}, "norm": {"kind": "rmsnorm", "placement": "pre"},
            "position": {"kind": "rope", "theta": 10000.0}, "attention": {"scale": "inv_sqrt_dk"},
            "bias": false, "tie_embeddings": false, "init_std": 0.3}"#,
    );
    let (vocab, b, t) = (11, 2, 6);
    let mut rng = Rng::new(80);
    let idx = tokens(&mut rng, b * t, vocab);
    let mut targets: Vec<i32> = tokens(&mut rng, b * t, vocab).into_iter().map(|x| x as i32).collect();
    targets[5] = -1;
    check_model("gpt/rope/rmsnorm/swiglu/gqa", &cfg, &Batch { b, t, idx, targets, s: 0, src: vec![] }, vocab, 81);
}

#[test]
fn bert_with_deepnorm_and_relative_bias_backward_matches_finite_differences_of_the_loss() {
    let cfg = model_config(
        r#"{"arch": "bert", "d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 8,
            "ffn": {"activation": "gelu", "mult": 2}, "norm": {"kind": "layernorm", "placement": "deepnorm"},
            "position": {"kind": "relative", "buckets": 8, "max_distance": 16}, "attention": {"scale": "none"},
            "bias": true, "tie_embeddings": true, "init_std": 0.3}"#,
    );
    let (vocab, b, t) = (11, 2, 6);
    let mut rng = Rng::new(82);
    let idx = tokens(&mut rng, b * t, vocab);
    // Masked LM: only some positions are counted.
    let targets: Vec<i32> = (0..b * t).map(|i| if i % 3 == 1 { -1 } else { rng.below(vocab) as i32 }).collect();
    check_model("bert/deepnorm/relative", &cfg, &Batch { b, t, idx, targets, s: 0, src: vec![] }, vocab, 83);
}

#[test]
fn encoder_decoder_with_sandwich_norm_and_alibi_backward_matches_finite_differences_of_the_loss() {
    let cfg = model_config(
        r#"{"arch": "encoder_decoder", "d_model": 16, "n_layers": 2, "n_encoder_layers": 2, "n_decoder_layers": 1,
            "n_heads": 4, "n_kv_heads": 1, "ctx_len": 8,
            "ffn": {"activation": "geglu", "mult": 2}, "norm": {"kind": "layernorm", "placement": "sandwich"},
            "position": {"kind": "alibi"}, "attention": {"scale": "inv_sqrt_dk"},
            "bias": true, "tie_embeddings": true, "init_std": 0.3}"#,
    );
    let (vocab, b, s, t) = (11, 2, 5, 4);
    let mut rng = Rng::new(84);
    let src = tokens(&mut rng, b * s, vocab);
    let idx = tokens(&mut rng, b * t, vocab);
    let mut targets: Vec<i32> = tokens(&mut rng, b * t, vocab).into_iter().map(|x| x as i32).collect();
    targets[7] = -1;
    check_model("encoder_decoder/sandwich/alibi", &cfg, &Batch { b, t, idx, targets, s, src }, vocab, 85);
}

fn moe_gpt(moe: &str, activation: &str) -> ModelConfig {
    model_config(&format!(
        r#"{{"arch": "gpt", "d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 8,
            "ffn": {{"activation": "{activation}", "mult": 2, "moe": {moe}}}, "norm": {{"kind": "rmsnorm", "placement": "pre"}},
            "position": {{"kind": "rope", "theta": 10000.0}}, "attention": {{"scale": "inv_sqrt_dk"}},
            "bias": true, "tie_embeddings": false, "init_std": 0.3}}"#
    ))
}

fn gpt_batch(seed: u64, vocab: usize, b: usize, t: usize) -> Batch {
    let mut rng = Rng::new(seed);
    let idx = tokens(&mut rng, b * t, vocab);
    let targets: Vec<i32> = tokens(&mut rng, b * t, vocab).into_iter().map(|x| x as i32).collect();
    Batch { b, t, idx, targets, s: 0, src: vec![] }
}

/// The router learns through the renormalised top-2 weights and the balancing loss (weighted 0.1 here, so its
/// gradient is not lost in the tolerance); every expert's FFN through the rows routed to it.
#[test]
fn moe_top2_swiglu_backward_matches_finite_differences_of_the_objective() {
    let cfg = moe_gpt(r#"{"experts": 4, "top_k": 2, "aux_loss": 0.1}"#, "swiglu");
    check_model("gpt/moe top-2 swiglu", &cfg, &gpt_batch(90, 11, 2, 6), 11, 91);
}

/// Top-1 with a capacity factor of 1: some assignments are dropped (their tokens pass through the residual), and
/// the router learns only through the balancing loss (a lone choice's renormalised weight is 1).
#[test]
fn moe_top1_with_capacity_backward_matches_finite_differences_of_the_objective() {
    let cfg = moe_gpt(r#"{"experts": 3, "top_k": 1, "aux_loss": 0.2, "capacity_factor": 1.0}"#, "gelu");
    let (vocab, batch) = (11, gpt_batch(92, 11, 2, 7));
    let model = random_model(&cfg, vocab, 93);
    let fwd = model.forward(&Reference, &batch, None);
    let dropped: f32 = fwd.moe_stats().iter().map(|s| s[1]).sum();
    assert!(dropped > 0.0, "the capacity drops something in this batch");
    check_model("gpt/moe top-1 capacity 1", &cfg, &batch, vocab, 93);
}

#[test]
fn moe_encoder_decoder_backward_matches_finite_differences_of_the_objective() {
    let cfg = model_config(
        r#"{"arch": "encoder_decoder", "d_model": 16, "n_layers": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
            "n_heads": 4, "n_kv_heads": 4, "ctx_len": 8,
            "ffn": {"activation": "gelu", "mult": 2, "moe": {"experts": 4, "top_k": 2, "aux_loss": 0.05, "capacity_factor": 1.25}},
            "norm": {"kind": "layernorm", "placement": "post"}, "position": {"kind": "learned"}, "attention": {"scale": "inv_sqrt_dk"},
            "bias": true, "tie_embeddings": true, "init_std": 0.3}"#,
    );
    let (vocab, b, s, t) = (11, 2, 5, 4);
    let mut rng = Rng::new(94);
    let src = tokens(&mut rng, b * s, vocab);
    let idx = tokens(&mut rng, b * t, vocab);
    let targets: Vec<i32> = tokens(&mut rng, b * t, vocab).into_iter().map(|x| x as i32).collect();
    check_model("encoder_decoder/moe", &cfg, &Batch { b, t, idx, targets, s, src }, vocab, 95);
}

#[test]
fn gpt_with_recurrent_positions_backward_matches_finite_differences_of_the_loss() {
    let cfg = model_config(
        r#"{"arch": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 4, "n_kv_heads": 4, "ctx_len": 8,
            "ffn": {"activation": "gelu", "mult": 2}, "norm": {"kind": "layernorm", "placement": "pre"},
            "position": {"kind": "recurrent"}, "attention": {"scale": "inv_sqrt_dk"},
            "bias": true, "tie_embeddings": true, "init_std": 0.3, "dropout": 0.0}"#,
    );
    let (vocab, b, t) = (11, 2, 6);
    let mut rng = Rng::new(86);
    let idx = tokens(&mut rng, b * t, vocab);
    let targets: Vec<i32> = tokens(&mut rng, b * t, vocab).into_iter().map(|x| x as i32).collect();
    check_model("gpt/recurrent", &cfg, &Batch { b, t, idx, targets, s: 0, src: vec![] }, vocab, 87);
}

#[test]
fn encoder_decoder_with_recurrent_positions_backward_matches_finite_differences_of_the_loss() {
    let cfg = model_config(
        r#"{"arch": "encoder_decoder", "d_model": 16, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ctx_len": 8,
            "ffn": {"activation": "swiglu", "mult": 2}, "norm": {"kind": "rmsnorm", "placement": "post"},
            "position": {"kind": "recurrent"}, "attention": {"scale": "inv_sqrt_dk"},
            "bias": false, "tie_embeddings": false, "init_std": 0.3}"#,
    );
    let (vocab, b, s, t) = (11, 2, 5, 4);
    let mut rng = Rng::new(88);
    let src = tokens(&mut rng, b * s, vocab);
    let idx = tokens(&mut rng, b * t, vocab);
    let targets: Vec<i32> = tokens(&mut rng, b * t, vocab).into_iter().map(|x| x as i32).collect();
    check_model("encoder_decoder/recurrent", &cfg, &Batch { b, t, idx, targets, s, src }, vocab, 89);
}
