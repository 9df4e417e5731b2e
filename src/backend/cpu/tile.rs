//! Small row-major products for the attention kernels: C (m×n) (+)= A (m×k) · B (k×n), every matrix a strided
//! view with contiguous rows. Register tiles of MR rows × NL columns: each k step loads one NL-wide row piece of B
//! and multiplies it into MR independent accumulators (MR chains keep the FP pipes busy; one accumulator alone
//! would wait on its own additions). Every element of C sums its k terms in order, so results are reproducible.

/// Rows of a register tile.
const MR: usize = 4;
/// Columns of a register tile: one AVX-512 register natively; two simd128 registers in the browser, where
/// MR × NL must fit in 16 registers.
#[cfg(not(target_arch = "wasm32"))]
const NL: usize = 16;
#[cfg(target_arch = "wasm32")]
#[cfg_attr(target_feature = "simd128", allow(dead_code))] // `wasm128::tile_gemm` has its own tiles
const NL: usize = 8;

/// A strided row-major matrix view: row i starts at `data[i·ld]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub ld: usize,
}

/// C (m×n, rows at c[i·ldc]) = C·[accumulate] + A (m×k) · B (k×n). On wasm32 with simd128 this is
/// `wasm128::tile_gemm` (the same tiles in explicit v128 registers), elsewhere `gemm_lanes`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn gemm(c: &mut [f32], ldc: usize, accumulate: bool, a: Rows, b: Rows, m: usize, n: usize, k: usize) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::tile_gemm(c, ldc, accumulate, a, b, m, n, k)
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::level() == super::simd::Level::Avx512 {
        return avx512::gemm(c, ldc, accumulate, a, b, m, n, k);
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        gemm_lanes::<NL>(c, ldc, accumulate, a, b, m, n, k)
    }
}

/// C (m×n) = C·[accumulate] + A (m×k) · B (k×n) with A given transposed: `at` holds Aᵀ (k×m, row kk is A's
/// column kk), as the attention backward has P and dS (dV += Pᵀ·dO, dK += dSᵀ·Q). The AVX-512 kernel and the simd128
/// one (n a multiple of 4, as every head size is) read A's columns in place; elsewhere Aᵀ is transposed into a local
/// tile first (m·k ≤ 1024, the attention's KB × TQ) and `gemm` runs on it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn gemm_tn(c: &mut [f32], ldc: usize, accumulate: bool, at: Rows, b: Rows, m: usize, n: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::level() == super::simd::Level::Avx512 {
        return avx512::gemm_tn(c, ldc, accumulate, at, b, m, n, k);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if n.is_multiple_of(4) {
        return super::wasm128::tile_gemm_tn(c, ldc, accumulate, at, b, m, n, k);
    }
    assert!(m * k <= 1024, "gemm_tn: A larger than its local tile");
    let mut a = [0.0f32; 1024];
    for kk in 0..k {
        for (i, &x) in at.data[kk * at.ld..][..m].iter().enumerate() {
            a[i * k + kk] = x;
        }
    }
    gemm(c, ldc, accumulate, Rows { data: &a, ld: k }, b, m, n, k)
}

/// `gemm` with AVX-512 registers and fused multiply-adds: tiles of up to 4 rows × 32 columns (8 accumulators,
/// enough independent chains to keep both FMA pipes busy), column tails by masked loads and stores. Fused
/// multiply-adds round once where `gemm_lanes` rounds twice, so its bits differ from the plain code's (as the
/// `gemm` crate's do); every element still sums its k terms in k order, whatever the thread count.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Rows;
    use core::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    pub fn gemm(c: &mut [f32], ldc: usize, accumulate: bool, a: Rows, b: Rows, m: usize, n: usize, k: usize) {
        if m == 0 || n == 0 {
            return;
        }
        // The bounds that make every access below (the masked ones included) fall inside the slices.
        assert!(c.len() >= (m - 1) * ldc + n, "tile gemm: C too short");
        assert!(k == 0 || a.data.len() >= (m - 1) * a.ld + k, "tile gemm: A too short");
        assert!(k == 0 || b.data.len() >= (k - 1) * b.ld + n, "tile gemm: B too short");
        // SAFETY: the caller (`tile::gemm`) checked that the CPU has AVX-512F; the asserts bound the accesses.
        unsafe { gemm_512::<false>(c, ldc, accumulate, a, b, m, n, k) }
    }

    /// `gemm` with A given as Aᵀ (k×m).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_tn(c: &mut [f32], ldc: usize, accumulate: bool, at: Rows, b: Rows, m: usize, n: usize, k: usize) {
        if m == 0 || n == 0 {
            return;
        }
        assert!(c.len() >= (m - 1) * ldc + n, "tile gemm: C too short");
        assert!(k == 0 || at.data.len() >= (k - 1) * at.ld + m, "tile gemm: Aᵀ too short");
        assert!(k == 0 || b.data.len() >= (k - 1) * b.ld + n, "tile gemm: B too short");
        // SAFETY: as `gemm`.
        unsafe { gemm_512::<true>(c, ldc, accumulate, at, b, m, n, k) }
    }

    /// AT: `a` holds Aᵀ, so A (i, kk) is a[kk·ld + i]; otherwise a[i·ld + kk].
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_512<const AT: bool>(c: &mut [f32], ldc: usize, accumulate: bool, a: Rows, b: Rows, m: usize, n: usize, k: usize) {
        let mut i = 0;
        while i + 4 <= m {
            rows::<4, AT>(c, ldc, accumulate, a, b, i, n, k);
            i += 4;
        }
        match m - i {
            3 => rows::<3, AT>(c, ldc, accumulate, a, b, i, n, k),
            2 => rows::<2, AT>(c, ldc, accumulate, a, b, i, n, k),
            1 => rows::<1, AT>(c, ldc, accumulate, a, b, i, n, k),
            _ => {}
        }
    }

    /// Mask of the lanes of a 16-wide piece starting at column j that lie before column n.
    #[inline(always)]
    fn lanes(j: usize, n: usize) -> __mmask16 {
        let w = n.saturating_sub(j).min(16);
        ((1u32 << w) - 1) as __mmask16
    }

    /// Rows i0..i0+R of C, 32 columns at a time.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows<const R: usize, const AT: bool>(c: &mut [f32], ldc: usize, accumulate: bool, a: Rows, b: Rows, i0: usize, n: usize, k: usize) {
        let (cp, ap, bp) = (c.as_mut_ptr(), a.data.as_ptr(), b.data.as_ptr());
        let mut j0 = 0;
        while j0 < n {
            let (m0, m1) = (lanes(j0, n), lanes(j0 + 16, n));
            let mut t0 = [_mm512_setzero_ps(); R];
            let mut t1 = [_mm512_setzero_ps(); R];
            if accumulate {
                for r in 0..R {
                    let row = cp.add((i0 + r) * ldc + j0);
                    t0[r] = _mm512_maskz_loadu_ps(m0, row);
                    t1[r] = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
                }
            }
            for kk in 0..k {
                let brow = bp.add(kk * b.ld + j0);
                let (b0, b1) = (_mm512_maskz_loadu_ps(m0, brow), _mm512_maskz_loadu_ps(m1, brow.wrapping_add(16)));
                for r in 0..R {
                    let x = _mm512_set1_ps(*ap.add(if AT { kk * a.ld + i0 + r } else { (i0 + r) * a.ld + kk }));
                    t0[r] = _mm512_fmadd_ps(x, b0, t0[r]);
                    t1[r] = _mm512_fmadd_ps(x, b1, t1[r]);
                }
            }
            for r in 0..R {
                let row = cp.add((i0 + r) * ldc + j0);
                _mm512_mask_storeu_ps(row, m0, t0[r]);
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, t1[r]);
            }
            j0 += 32;
        }
    }
}

/// `gemm` in plain Rust with NL columns per register tile (generic so native tests also run the browser's width).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn gemm_lanes<const NL: usize>(
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: Rows,
    b: Rows,
    m: usize,
    n: usize,
    k: usize,
) {
    let mut i = 0;
    while i + MR <= m {
        rows4::<NL>(c, ldc, accumulate, a, b, i, n, k);
        i += MR;
    }
    for i in i..m {
        let ai = &a.data[i * a.ld..][..k];
        let ci = &mut c[i * ldc..][..n];
        let mut j0 = 0;
        while j0 + NL <= n {
            let mut t: [f32; NL] = if accumulate { ci[j0..j0 + NL].try_into().unwrap() } else { [0.0; NL] };
            for (kk, &x) in ai.iter().enumerate() {
                madd(&mut t, x, b.data[kk * b.ld + j0..][..NL].try_into().unwrap());
            }
            ci[j0..j0 + NL].copy_from_slice(&t);
            j0 += NL;
        }
        narrow_piece(&mut ci[j0..], accumulate, ai, b, j0);
    }
}

/// acc += a·b, NL lanes.
#[inline(always)]
fn madd<const NL: usize>(acc: &mut [f32; NL], a: f32, b: &[f32; NL]) {
    for l in 0..NL {
        acc[l] += a * b[l];
    }
}

/// Rows i0..i0+4 of C. The tile is four named arrays (not one array indexed by row), and A's rows are named
/// slices of exactly k elements, so LLVM keeps the tile in registers and each update is one NL-wide multiply and
/// add; a row index or a bounds check in the loop would send the tile to memory.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows4<const NL: usize>(
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: Rows,
    b: Rows,
    i0: usize,
    n: usize,
    k: usize,
) {
    let arow = |r: usize| &a.data[(i0 + r) * a.ld..][..k];
    let (a0, a1, a2, a3) = (arow(0), arow(1), arow(2), arow(3));
    let mut j0 = 0;
    while j0 + NL <= n {
        let load = |r: usize| -> [f32; NL] {
            if accumulate {
                c[(i0 + r) * ldc + j0..][..NL].try_into().unwrap()
            } else {
                [0.0; NL]
            }
        };
        let (mut t0, mut t1, mut t2, mut t3) = (load(0), load(1), load(2), load(3));
        for kk in 0..k {
            let bv: &[f32; NL] = b.data[kk * b.ld + j0..][..NL].try_into().unwrap();
            madd(&mut t0, a0[kk], bv);
            madd(&mut t1, a1[kk], bv);
            madd(&mut t2, a2[kk], bv);
            madd(&mut t3, a3[kk], bv);
        }
        for (r, t) in [t0, t1, t2, t3].iter().enumerate() {
            c[(i0 + r) * ldc + j0..][..NL].copy_from_slice(t);
        }
        j0 += NL;
    }
    if j0 < n {
        for (r, ar) in [a0, a1, a2, a3].into_iter().enumerate() {
            narrow_piece(&mut c[(i0 + r) * ldc + j0..][..n - j0], accumulate, ar, b, j0);
        }
    }
}

/// The last columns j0..j0+w (w < NL ≤ 64) of one row of C: cw = cw·[accumulate] + Σ_k arow[k]·B[k, j0..j0+w].
#[inline(always)]
pub(super) fn narrow_piece(cw: &mut [f32], accumulate: bool, arow: &[f32], b: Rows, j0: usize) {
    let w = cw.len();
    if w == 0 {
        return;
    }
    let mut t = [0.0f32; 64];
    if accumulate {
        t[..w].copy_from_slice(cw);
    }
    for (kk, &x) in arow.iter().enumerate() {
        for (t, &y) in t[..w].iter_mut().zip(&b.data[kk * b.ld + j0..][..w]) {
            *t += x * y;
        }
    }
    cw.copy_from_slice(&t[..w]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Both tile widths (16 native, 8 in the browser) against a plain triple loop, on sizes that leave partial
    /// row and column tiles, with strided views and with and without accumulation.
    #[test]
    fn tile_products_of_both_widths_match_a_plain_triple_loop() {
        let mut rng = Rng::new(17);
        for (m, n, k) in [(7, 37, 5), (4, 16, 1), (1, 9, 33), (13, 64, 32), (5, 3, 0), (16, 32, 64), (3, 33, 2), (6, 70, 9)] {
            let (lda, ldb, ldc) = (k + 3, n + 2, n + 5);
            let a: Vec<f32> = (0..m * lda).map(|_| rng.normal() as f32).collect();
            let b: Vec<f32> = (0..k.max(1) * ldb).map(|_| rng.normal() as f32).collect();
            let c0: Vec<f32> = (0..m * ldc).map(|_| rng.normal() as f32).collect();
            for accumulate in [false, true] {
                let mut want = c0.clone();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = if accumulate { c0[i * ldc + j] } else { 0.0 };
                        for kk in 0..k {
                            s += a[i * lda + kk] * b[kk * ldb + j];
                        }
                        want[i * ldc + j] = s;
                    }
                }
                let (ar, br) = (Rows { data: &a, ld: lda }, Rows { data: &b, ld: ldb });
                let (mut c16, mut c8) = (c0.clone(), c0.clone());
                gemm_lanes::<16>(&mut c16, ldc, accumulate, ar, br, m, n, k);
                gemm_lanes::<8>(&mut c8, ldc, accumulate, ar, br, m, n, k);
                // The same k order as the loop above, so the same bits.
                assert_eq!(c16, want, "NL=16 m={m} n={n} k={k} accumulate={accumulate}");
                assert_eq!(c8, want, "NL=8 m={m} n={n} k={k} accumulate={accumulate}");
                // The dispatching product (AVX-512 with fused multiply-adds where the CPU has it): one rounding
                // per term instead of two, so equal within a few ulps of the sum of |terms|.
                let mut got = c0.clone();
                gemm(&mut got, ldc, accumulate, ar, br, m, n, k);
                for i in 0..m {
                    for j in 0..n {
                        let mag: f32 = (0..k).map(|kk| (a[i * lda + kk] * b[kk * ldb + j]).abs()).sum::<f32>() + c0[i * ldc + j].abs();
                        let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                        assert!((g - w).abs() <= 1e-6 * mag + 1e-30, "dispatch m={m} n={n} k={k} ({i},{j}): {g} vs {w}");
                    }
                }
                // gemm_tn with Aᵀ laid out (k × m, leading dimension m + 2).
                let ldt = m + 2;
                let mut at = vec![0.0f32; k.max(1) * ldt];
                for i in 0..m {
                    for kk in 0..k {
                        at[kk * ldt + i] = a[i * lda + kk];
                    }
                }
                let mut got_tn = c0.clone();
                gemm_tn(&mut got_tn, ldc, accumulate, Rows { data: &at, ld: ldt }, br, m, n, k);
                assert_eq!(got_tn, got, "gemm_tn vs gemm m={m} n={n} k={k}");
                // Outside the m×n window C is untouched.
                for (idx, (&g, &o)) in got.iter().zip(&c0).enumerate() {
                    if idx / ldc >= m || idx % ldc >= n {
                        assert_eq!(g, o, "dispatch wrote outside C at {idx}");
                    }
                }
            }
        }
    }
}
