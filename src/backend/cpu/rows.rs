//! Few-row matmul, the shape of a decoding step: out (M,OC) = inp (M,C) · w (OC,C)ᵀ + b (OC) for M ≤ MAX_ROWS
//! (one row per live sequence). The `gemm` crate and the portable kernel pack the weight into panels on every call,
//! which at a few rows costs about as much as the product (docs/BENCHMARKS.md, "Paged KV cache natively"). Here W is
//! read in place: a row of W (one output channel) and a row of inp are both contiguous along C, so the register
//! tile holds R rows × J channels of L-lane partial sums along C, and each step of L along C loads R pieces of inp
//! and J pieces of W for R·J multiply-adds (C streamed; the tile never leaves the registers). Channels are cut
//! into chunks of CHUNK: the chunk's rows of W stay in L1 while every row group passes over them, so W is read from
//! memory once per call however many rows there are.
//!
//! Each element depends on its own row and channel only: lane l sums x[i,k]·w[j,k] over k ≡ l (mod L) in k order
//! (the last partial step zero-padded), the L lanes then add pairwise, ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) for
//! L = 8, and the bias last. So a row's output does not depend on how many rows are fed with it, on the tile it
//! falls in, or on the thread count: a continuation decoded among eight gets the bits it gets alone, as the
//! contiguous decoder does (`tests/paged_kv.rs`).
//!
//! Kernels: x86-64 with AVX2 and FMA (runtime check) L = 8 with fused multiply-adds (`avx2`); wasm32 with simd128
//! L = 4 (`wasm128::rows_block`), fused under relaxed-simd; elsewhere `block_lanes` in plain Rust (multiply then
//! add), which is also the reference the kernels are tested against.

use rayon::prelude::*;

/// The most rows this kernel takes (the most sequences a paged cache decodes together); more go to the packing
/// matmul, whose packing then pays for itself.
pub const MAX_ROWS: usize = 64;
/// Output channels per chunk: a multiple of every tile width below (3, 4, 6, 8 natively; 2, 3, 4, 6 in the
/// browser). At C = 512 a chunk of W is 48 KiB.
pub const CHUNK: usize = 24;
/// Multiply-adds per task when the call is split over the pool (by channel chunks): ≈ 10 µs of one core's work,
/// enough to pay for a hand-over to another thread.
const TASK_WORK: usize = 1 << 18;
/// Lanes of the plain-Rust version: the browser kernel's width on wasm32 (so without relaxed-simd it gives the
/// same bits), the AVX2 kernel's elsewhere.
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
const PLAIN_LANES: usize = if cfg!(target_arch = "wasm32") { 4 } else { 8 };

/// out (M,OC) = inp (M,C) · w (OC,C)ᵀ + b (OC), M ≤ MAX_ROWS. `parallel` only chooses the executor: the channels
/// are cut into tasks by the sizes alone, and each element is computed the same way in any task.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, c: usize, oc: usize, parallel: bool) {
    assert!(m <= MAX_ROWS, "few-row matmul: {m} rows > {MAX_ROWS}");
    if m == 0 || oc == 0 {
        return;
    }
    let (out, inp, w, b) = (&mut out[..m * oc], &inp[..m * c], &w[..oc * c], b.map(|b| &b[..oc]));
    let tasks = (m * c * oc / TASK_WORK).clamp(1, oc.div_ceil(CHUNK));
    let cols = oc.div_ceil(tasks).div_ceil(CHUNK) * CHUNK;
    if !parallel || cols >= oc {
        return block(out, oc, inp, w, b, m, c, 0, oc);
    }
    // Each task writes its channels of every row into its own buffer (m × its channels); they are copied into out
    // in order after. The copy is m·OC floats against m·OC·C multiply-adds.
    let parts: Vec<Vec<f32>> = (0..oc.div_ceil(cols))
        .into_par_iter()
        .map(|t| {
            let (j0, j1) = (t * cols, ((t + 1) * cols).min(oc));
            let mut part = vec![0.0f32; m * (j1 - j0)];
            block(&mut part, j1 - j0, inp, w, b, m, c, j0, j1);
            part
        })
        .collect();
    for (t, part) in parts.iter().enumerate() {
        let width = part.len() / m;
        for (i, row) in part.chunks_exact(width).enumerate() {
            out[i * oc + t * cols..][..width].copy_from_slice(row);
        }
    }
}

/// Channels j0..j1 of every row: out[i·ldo + (j − j0)] = Σ_k x[i,k]·w[j,k] + b[j], by the kernel this build and
/// CPU have.
#[allow(clippy::too_many_arguments)]
fn block(out: &mut [f32], ldo: usize, x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, j0: usize, j1: usize) {
    assert!(out.len() >= m.saturating_sub(1) * ldo + (j1 - j0) && x.len() >= m * k && w.len() >= j1 * k, "few-row matmul: sizes");
    #[cfg(target_arch = "x86_64")]
    if super::simd::level() != super::simd::Level::Base {
        // SAFETY: `level()` reports AVX2 and FMA on this CPU.
        return unsafe { avx2::block(out, ldo, x, w, b, m, k, j0, j1) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::rows_block(out, ldo, x, w, b, m, k, j0, j1)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    block_lanes::<PLAIN_LANES>(out, ldo, x, w, b, m, k, j0, j1)
}

/// `block` in plain Rust with L lanes per partial sum, element by element (generic so native tests also run the
/// browser's width). The kernels perform these operations, with their multiply-adds fused where the build allows.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn block_lanes<const L: usize>(out: &mut [f32], ldo: usize, x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, j0: usize, j1: usize) {
    for i in 0..m {
        let xi = &x[i * k..][..k];
        for j in j0..j1 {
            out[i * ldo + j - j0] = dot_lanes::<L>(xi, &w[j * k..][..k]) + b.map_or(0.0, |b| b[j]);
        }
    }
}

/// Σ x·y as the kernels form it: L lane sums over k ≡ l (mod L), the last partial step zero-padded, then `tree`.
#[inline(always)]
fn dot_lanes<const L: usize>(x: &[f32], y: &[f32]) -> f32 {
    let mut s = [0.0f32; L];
    let (xc, xt) = x.as_chunks::<L>();
    let (yc, yt) = y.as_chunks::<L>();
    for (a, b) in xc.iter().zip(yc) {
        for l in 0..L {
            s[l] += a[l] * b[l];
        }
    }
    if !xt.is_empty() {
        let (mut a, mut b) = ([0.0f32; L], [0.0f32; L]);
        a[..xt.len()].copy_from_slice(xt);
        b[..yt.len()].copy_from_slice(yt);
        for l in 0..L {
            s[l] += a[l] * b[l];
        }
    }
    tree(s)
}

/// The lanes added pairwise: (s0+s1), (s2+s3), … then those pairwise, down to one.
#[inline(always)]
fn tree<const L: usize>(mut s: [f32; L]) -> f32 {
    let mut n = L;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            s[i] = s[2 * i] + s[2 * i + 1];
        }
    }
    s[0]
}

/// Writes a tile's sums plus the bias: rows i0.., channels j.. (column j − j0 of out). The bias is added last, as
/// in `block_lanes`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))), allow(dead_code))]
pub(super) fn put<const R: usize, const J: usize>(out: &mut [f32], ldo: usize, b: Option<&[f32]>, i0: usize, j0: usize, j: usize, t: [[f32; J]; R]) {
    for (r, row) in t.iter().enumerate() {
        for (q, &s) in row.iter().enumerate() {
            out[(i0 + r) * ldo + j + q - j0] = s + b.map_or(0.0, |b| b[j + q]);
        }
    }
}

/// The AVX2 kernel: 8 lanes, fused multiply-adds. Tiles 4 rows × 3 channels (then 3×4, 2×6, 1×8 for the last rows):
/// 12 (or 8) accumulators and J weight registers fit the 16 ymm registers, with inp's pieces read as memory
/// operands of the multiply-adds. Twelve independent chains cover the multiply-add's latency on both pipes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{put, CHUNK};
    use core::arch::x86_64::*;

    /// See `super::block`; the caller checked the sizes.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(out: &mut [f32], ldo: usize, x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, j0: usize, j1: usize) {
        let mut c0 = j0;
        while c0 < j1 {
            let c1 = (c0 + CHUNK).min(j1);
            let mut i = 0;
            while i + 4 <= m {
                cols::<4, 3>(out, ldo, x, w, b, i, k, j0, c0, c1);
                i += 4;
            }
            match m - i {
                3 => cols::<3, 4>(out, ldo, x, w, b, i, k, j0, c0, c1),
                2 => cols::<2, 6>(out, ldo, x, w, b, i, k, j0, c0, c1),
                1 => cols::<1, 8>(out, ldo, x, w, b, i, k, j0, c0, c1),
                _ => {}
            }
            c0 = c1;
        }
    }

    /// Rows i0..i0+R, channels c0..c1: tiles of J channels, then single channels.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn cols<const R: usize, const J: usize>(out: &mut [f32], ldo: usize, x: &[f32], w: &[f32], b: Option<&[f32]>, i0: usize, k: usize, j0: usize, c0: usize, c1: usize) {
        let mut j = c0;
        while j + J <= c1 {
            put(out, ldo, b, i0, j0, j, tile::<R, J>(x, w, i0, j, k));
            j += J;
        }
        while j < c1 {
            put(out, ldo, b, i0, j0, j, tile::<R, 1>(x, w, i0, j, k));
            j += 1;
        }
    }

    /// The sums of rows i0..i0+R × channels j..j+J: R·J accumulators of 8 lanes, C in steps of 8 (the last one
    /// masked: lanes past C load zeros), then each accumulator's lanes by `sum4`'s tree.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const J: usize>(x: &[f32], w: &[f32], i0: usize, j: usize, k: usize) -> [[f32; J]; R] {
        // Every load below reads inside rows i0..i0+R of x and rows j..j+J of w, which the caller's sizes hold.
        debug_assert!(x.len() >= (i0 + R) * k && w.len() >= (j + J) * k);
        let (xp, wp) = (x.as_ptr().add(i0 * k), w.as_ptr().add(j * k));
        let mut acc = [[_mm256_setzero_ps(); J]; R];
        let mut kk = 0;
        while kk + 8 <= k {
            let mut wv = [_mm256_setzero_ps(); J];
            for (q, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(wp.add(q * k + kk));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(xp.add(r * k + kk));
                for q in 0..J {
                    acc_r[q] = _mm256_fmadd_ps(xv, wv[q], acc_r[q]);
                }
            }
            kk += 8;
        }
        if kk < k {
            // Lanes 0..k−kk load, the others are zero (and read nothing).
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((k - kk) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            let mut wv = [_mm256_setzero_ps(); J];
            for (q, v) in wv.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(wp.add(q * k + kk), mask);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let xv = _mm256_maskload_ps(xp.add(r * k + kk), mask);
                for q in 0..J {
                    acc_r[q] = _mm256_fmadd_ps(xv, wv[q], acc_r[q]);
                }
            }
        }
        let mut t = [[0.0f32; J]; R];
        for (r, acc_r) in acc.iter().enumerate() {
            for q0 in (0..J).step_by(4) {
                let at = |q: usize| if q0 + q < J { acc_r[q0 + q] } else { _mm256_setzero_ps() };
                let mut s = [0.0f32; 4];
                _mm_storeu_ps(s.as_mut_ptr(), sum4(at(0), at(1), at(2), at(3)));
                let n = (J - q0).min(4);
                t[r][q0..q0 + n].copy_from_slice(&s[..n]);
            }
        }
        t
    }

    /// The sums of four accumulators, each ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) (`super::tree`), in one vector.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn sum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        let ab = _mm256_hadd_ps(a, b); // a0+a1 a2+a3 b0+b1 b2+b3 | a4+a5 a6+a7 b4+b5 b6+b7
        let cd = _mm256_hadd_ps(c, d);
        let q = _mm256_hadd_ps(ab, cd); // (a0+a1)+(a2+a3) b… c… d… | (a4+a5)+(a6+a7) b… c… d…
        _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps::<1>(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Σ x·y in f64, and Σ |x·y|: the exact value and the scale of its rounding error.
    fn exact(x: &[f32], y: &[f32]) -> (f64, f64) {
        x.iter().zip(y).fold((0.0, 0.0), |(s, a), (&p, &q)| (s + p as f64 * q as f64, a + (p as f64 * q as f64).abs()))
    }

    /// Rows 1..=9 and a full tile set, odd C (the masked tail) and OC (partial tiles and chunks), with and without
    /// bias, serial and split over tasks: within a few ulps of the f64 sum of |terms| of the exact product, and for
    /// the plain lanes bit-identical to their definition (`dot_lanes` against a loop written out).
    #[test]
    fn few_row_products_match_the_exact_product_on_awkward_sizes() {
        let mut rng = Rng::new(5);
        for m in (1..=9).chain([13, 64]) {
            for (c, oc) in [(1, 1), (7, 5), (9, 31), (37, 50), (128, 384), (129, 77), (200, 1000)] {
                let (x, w, bias) = (randn(&mut rng, m * c), randn(&mut rng, oc * c), randn(&mut rng, oc));
                for b in [None, Some(&bias[..])] {
                    for parallel in [false, true] {
                        let mut out = vec![f32::NAN; m * oc];
                        matmul_forward(&mut out, &x, &w, b, m, c, oc, parallel);
                        for i in 0..m {
                            for j in 0..oc {
                                let (s, mag) = exact(&x[i * c..][..c], &w[j * c..][..c]);
                                let want = s + b.map_or(0.0, |b| b[j] as f64);
                                let got = out[i * oc + j] as f64;
                                assert!((got - want).abs() <= 1e-6 * (mag + want.abs()) + 1e-30, "m={m} c={c} oc={oc} ({i},{j}): {got} vs {want}");
                            }
                        }
                    }
                }
            }
        }
        // The plain lanes: lane l sums its k ≡ l (mod L) terms in order, then the pairwise tree.
        let (x, y) = (randn(&mut rng, 29), randn(&mut rng, 29));
        let mut s = [0.0f32; 8];
        for k in 0..29 {
            s[k % 8] += x[k] * y[k];
        }
        let want = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        assert_eq!(dot_lanes::<8>(&x, &y).to_bits(), want.to_bits());
        let mut s = [0.0f32; 4];
        for k in 0..29 {
            s[k % 4] += x[k] * y[k];
        }
        assert_eq!(dot_lanes::<4>(&x, &y).to_bits(), ((s[0] + s[1]) + (s[2] + s[3])).to_bits());
    }

    /// Empty products: no rows or no channels write nothing; C = 0 gives the bias.
    #[test]
    fn empty_products_give_nothing_or_the_bias() {
        let mut out = vec![7.0f32; 6];
        matmul_forward(&mut out, &[], &[], None, 0, 3, 2, true);
        matmul_forward(&mut out, &[1.0; 3], &[], None, 1, 3, 0, true);
        assert_eq!(out, [7.0; 6]);
        matmul_forward(&mut out, &[], &[], Some(&[1.0, 2.0, 3.0]), 2, 0, 3, true);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    /// The point of the kernel's element order: a row's outputs are the same bits whether it is fed alone, among
    /// nine rows (in any tile position), serial or split over tasks.
    #[test]
    fn a_rows_output_does_not_depend_on_the_rows_fed_with_it() {
        let mut rng = Rng::new(6);
        let (c, oc) = (133, 203);
        let (x, w, bias) = (randn(&mut rng, 9 * c), randn(&mut rng, oc * c), randn(&mut rng, oc));
        let mut all = vec![0.0f32; 9 * oc];
        matmul_forward(&mut all, &x, &w, Some(&bias), 9, c, oc, true);
        for i in 0..9 {
            let mut one = vec![0.0f32; oc];
            matmul_forward(&mut one, &x[i * c..][..c], &w, Some(&bias), 1, c, oc, false);
            assert!(one.iter().zip(&all[i * oc..][..oc]).all(|(a, b)| a.to_bits() == b.to_bits()), "row {i}");
        }
    }

    /// Where the CPU has AVX2 and FMA: the kernel equals the plain 8 lanes up to the fused roundings (one per term
    /// instead of two), and the plain version is what runs elsewhere.
    #[test]
    fn the_kernel_and_the_plain_lanes_agree() {
        let mut rng = Rng::new(7);
        for m in 1..=9 {
            let (c, oc) = (67, 29);
            let (x, w) = (randn(&mut rng, m * c), randn(&mut rng, oc * c));
            let (mut got, mut plain) = (vec![0.0f32; m * oc], vec![0.0f32; m * oc]);
            block(&mut got, oc, &x, &w, None, m, c, 0, oc);
            block_lanes::<PLAIN_LANES>(&mut plain, oc, &x, &w, None, m, c, 0, oc);
            for (i, (&g, &p)) in got.iter().zip(&plain).enumerate() {
                let mag = exact(&x[i / oc * c..][..c], &w[i % oc * c..][..c]).1 as f32;
                assert!((g - p).abs() <= 1e-6 * mag, "m={m} [{i}]: {g} vs {p}");
            }
        }
    }
}
