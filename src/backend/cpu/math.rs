//! Branch-free f32 maths that LLVM vectorises: no libm call sits in a hot loop, so a loop of `exp` or `gelu`
//! becomes SIMD code (SSE/AVX natively, simd128 in the browser).
//!
//! - `exp`: Cephes `expf`. x = n·ln2 + r with |r| ≤ ln2/2 (n rounded with the 1.5·2²³ trick, ln2 split in a
//!   hi/lo pair), e^r by a degree-7 polynomial, 2ⁿ built in the exponent bits. About 1 ulp.
//! - `phi`, the standard normal CDF: Φ(x) = ½·erfc(−x/√2), with erfc from the Chebyshev fit of Numerical Recipes
//!   §6.2 (`erfcc`, fractional error < 1.2e-7 everywhere), so the left tail keeps its relative accuracy.
//! - `gelu`, `gelu_grad`, `sigmoid` built from those, matching the reference definitions in `ops::act`.
//!
//! And the slice kernels of the hot loops (reductions with LANES partial sums, e^(x − m) over a row, scaling,
//! the softmax backward): `math::dot` etc. name the explicit simd128 versions in `wasm128` on wasm32 with simd128,
//! and the plain-Rust versions in `math::scalar` everywhere else (natively, where LLVM vectorises them, and on
//! wasm32 without simd128). `scalar` is compiled on every target: the simd128 tests compare against it.

/// Width of the fixed-size accumulators in the CPU kernels: one AVX-512 register, four simd128 ones.
pub const LANES: usize = 16;

pub(super) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(super) const LN2_HI: f32 = 0.693_359_4;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2²³ rounds to the nearest integer, and leaves that integer in the low mantissa bits.
pub(super) const ROUND: f32 = 12_582_912.0;
/// `exp`'s inputs are clamped to [EXP_LO, EXP_HI]; below EXP_LO the result is 0.
pub(super) const EXP_LO: f32 = -87.0;
pub(super) const EXP_HI: f32 = 88.0;
/// Cephes' polynomial for e^r on |r| ≤ ln2/2, highest degree first (Horner from EXP_P[0]).
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
pub(super) const EXP_P: [f32; 6] =
    [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1];

/// Independent values evaluated together by the `*_k` functions: the kernels run K streams through each step
/// (stage by stage, so the K dependency chains interleave and the out-of-order core overlaps them) instead of one
/// long latency-bound chain per vector. Every element still sees exactly the scalar function's operations.
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))] // wasm128 has its own
pub const K: usize = 4;

/// e^x of K values; 0 below −87 (so a masked −∞ score gives exactly 0), saturates at e^88.
#[inline(always)]
pub fn exp_k<const N: usize>(x: [f32; N]) -> [f32; N] {
    let mut r = [0.0f32; N];
    let mut ni = [0i32; N];
    for k in 0..N {
        let xc = x[k].clamp(EXP_LO, EXP_HI);
        let t = xc * LOG2E + ROUND;
        let n = t - ROUND;
        ni[k] = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
        r[k] = xc - n * LN2_HI - n * LN2_LO;
    }
    let mut p = [EXP_P[0]; N];
    for c in &EXP_P[1..] {
        for k in 0..N {
            p[k] = p[k] * r[k] + c;
        }
    }
    let mut out = [0.0f32; N];
    for k in 0..N {
        let er = p[k] * r[k] * r[k] + r[k] + 1.0;
        let scale = f32::from_bits((ni[k].wrapping_add(127) as u32) << 23);
        out[k] = if x[k] < EXP_LO { 0.0 } else { er * scale };
    }
    out
}

/// e^x; 0 below −87 (so a masked −∞ score gives exactly 0), saturates at e^88.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_k([x])[0]
}

/// 1 / (1 + e^−x)
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Numerical Recipes' `erfcc` polynomial in t = 1/(1 + z/2), highest degree first: erfc(z) = t·e^(P(t) − z²).
#[allow(clippy::excessive_precision)] // Numerical Recipes' coefficients as published
pub(super) const ERFC_P: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_203_98,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_68,
    -1.265_512_23,
];

/// φ(0) = 1/√(2π).
pub(super) const PHI0: f32 = 0.398_942_3;

/// ½·erfc(|x|/√2) = Φ(−|x|) of K values (Numerical Recipes `erfcc`), and z² = x²/2.
#[inline(always)]
fn half_tail_k<const N: usize>(x: [f32; N]) -> ([f32; N], [f32; N]) {
    let mut z = [0.0f32; N];
    let mut t = [0.0f32; N];
    for k in 0..N {
        z[k] = x[k].abs() * std::f32::consts::FRAC_1_SQRT_2;
        t[k] = 1.0 / (1.0 + 0.5 * z[k]);
    }
    let mut p = [ERFC_P[0]; N];
    for &c in &ERFC_P[1..] {
        for k in 0..N {
            p[k] = p[k] * t[k] + c;
        }
    }
    let mut a = [0.0f32; N];
    let mut z2 = [0.0f32; N];
    for k in 0..N {
        z2[k] = z[k] * z[k];
        a[k] = p[k] - z2[k];
    }
    let e = exp_k(a);
    let mut h = [0.0f32; N];
    for k in 0..N {
        h[k] = 0.5 * (t[k] * e[k]);
    }
    (h, z2)
}

/// Φ(x), the standard normal CDF, of K values.
#[inline(always)]
fn phi_k<const N: usize>(x: [f32; N]) -> ([f32; N], [f32; N]) {
    let (h, z2) = half_tail_k(x);
    let mut out = [0.0f32; N];
    for k in 0..N {
        out[k] = if x[k] < 0.0 { h[k] } else { 1.0 - h[k] };
    }
    (out, z2)
}

/// GELU(x) = x·Φ(x) (exact form, as PyTorch's default), of K values.
#[inline(always)]
pub fn gelu_k<const N: usize>(x: [f32; N]) -> [f32; N] {
    let (p, _) = phi_k(x);
    let mut out = [0.0f32; N];
    for k in 0..N {
        out[k] = x[k] * p[k];
    }
    out
}

/// GELU(x) = x·Φ(x) (exact form, as PyTorch's default).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    gelu_k([x])[0]
}

/// d/dx GELU = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π), of K values.
#[inline(always)]
pub fn gelu_grad_k<const N: usize>(x: [f32; N]) -> [f32; N] {
    let (p, _) = phi_k(x);
    let xd = x_density_k(x);
    let mut out = [0.0f32; N];
    for k in 0..N {
        out[k] = p[k] + xd[k];
    }
    out
}

/// x·φ(x) = x·e^(−x²/2)·φ(0) of K values: the second term of GELU's derivative.
#[inline(always)]
fn x_density_k<const N: usize>(x: [f32; N]) -> [f32; N] {
    let mut a = [0.0f32; N];
    for k in 0..N {
        a[k] = -0.5 * x[k] * x[k];
    }
    let e = exp_k(a);
    let mut out = [0.0f32; N];
    for k in 0..N {
        out[k] = x[k] * e[k] * PHI0;
    }
    out
}

/// d/dx GELU = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π).
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    gelu_grad_k([x])[0]
}

/// d/dx GELU of K values from x and the forward's y = GELU(x) = x·Φ(x): Φ(x) = y/x, which saves evaluating the
/// erfc fit again (half the backward's work). Near 0, where y/x loses its digits, Φ(x) = ½ + x·φ(0)·(1 − x²/6)
/// (the next term, x⁵/40·φ(0), is below 1e-11 for |x| < 1e-2).
#[inline(always)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))] // wasm128 has its own
pub fn gelu_grad_from_out_k<const N: usize>(x: [f32; N], y: [f32; N]) -> [f32; N] {
    let xd = x_density_k(x);
    let mut out = [0.0f32; N];
    for k in 0..N {
        let near0 = 0.5 + PHI0 * x[k] * (1.0 - x[k] * x[k] * (1.0 / 6.0));
        let cdf = if x[k].abs() < 1e-2 { near0 } else { y[k] / x[k] };
        out[k] = cdf + xd[k];
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Slice kernels

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use super::wasm128::{copy, dot, dsoftmax, exp_sub, exp_sub_in_place, fill, max, scale, sum, sum_sq_dev};
pub use scalar::hsum;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub use scalar::{copy, dot, dsoftmax, exp_sub, exp_sub_in_place, fill, max, scale, sum, sum_sq_dev};

/// The plain-Rust slice kernels: fixed-width lane loops that LLVM vectorises. The scalar fallback of `wasm128`
/// (natively and on wasm32 without simd128), and its reference in the simd128 tests.
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub mod scalar {
    use super::{exp, LANES};

    /// Σ a·b with LANES partial sums (fixed order, so the same inputs always give the same bits).
    #[inline(always)]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
        for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
            acc[l] += x * y;
        }
        hsum(&acc)
    }

    /// Sum of a lane array as a balanced tree (fixed order).
    #[inline(always)]
    pub fn hsum(acc: &[f32; LANES]) -> f32 {
        let mut h = [0.0f32; LANES / 2];
        for l in 0..LANES / 2 {
            h[l] = acc[l] + acc[l + LANES / 2];
        }
        let mut q = [0.0f32; LANES / 4];
        for l in 0..LANES / 4 {
            q[l] = h[l] + h[l + LANES / 4];
        }
        (q[0] + q[2]) + (q[1] + q[3])
    }

    /// Σ x with LANES partial sums.
    #[inline(always)]
    pub fn sum(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let mut c = x.chunks_exact(LANES);
        for v in &mut c {
            for l in 0..LANES {
                acc[l] += v[l];
            }
        }
        for (l, v) in c.remainder().iter().enumerate() {
            acc[l] += v;
        }
        hsum(&acc)
    }

    /// Σ (x − m)² with LANES partial sums.
    #[inline(always)]
    pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
        let mut acc = [0.0f32; LANES];
        let mut c = x.chunks_exact(LANES);
        for v in &mut c {
            for l in 0..LANES {
                acc[l] += (v[l] - m) * (v[l] - m);
            }
        }
        for (l, v) in c.remainder().iter().enumerate() {
            acc[l] += (v - m) * (v - m);
        }
        hsum(&acc)
    }

    /// `a > b ? a : b`: one vector max instruction (simd128's `f32x4.pmax` with the operands swapped);
    /// `f32::max` adds NaN fix-ups to every step.
    #[inline(always)]
    pub fn mx(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }

    /// max x (−∞ for an empty slice; NaNs are not propagated), LANES partial maxima folded as a tree.
    #[inline(always)]
    pub fn max(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut c = x.chunks_exact(LANES);
        for v in &mut c {
            for l in 0..LANES {
                acc[l] = mx(acc[l], v[l]);
            }
        }
        for (l, v) in c.remainder().iter().enumerate() {
            acc[l] = mx(acc[l], *v);
        }
        hmax(&acc)
    }

    /// Max of a lane array as a balanced tree (the same shape as `hsum`).
    #[inline(always)]
    pub fn hmax(acc: &[f32; LANES]) -> f32 {
        let mut h = [0.0f32; LANES / 2];
        for l in 0..LANES / 2 {
            h[l] = mx(acc[l], acc[l + LANES / 2]);
        }
        let mut q = [0.0f32; LANES / 4];
        for l in 0..LANES / 4 {
            q[l] = mx(h[l], h[l + LANES / 4]);
        }
        mx(mx(q[0], q[2]), mx(q[1], q[3]))
    }

    /// x[i] = e^(x[i] − m)
    #[inline(always)]
    pub fn exp_sub_in_place(x: &mut [f32], m: f32) {
        for v in x.iter_mut() {
            *v = exp(*v - m);
        }
    }

    /// out[i] = e^(x[i] − m)
    #[inline(always)]
    pub fn exp_sub(out: &mut [f32], x: &[f32], m: f32) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp(v - m);
        }
    }

    /// dst = src (equal lengths).
    #[inline(always)]
    pub fn copy(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }

    /// x[i] = v
    #[inline(always)]
    pub fn fill(x: &mut [f32], v: f32) {
        x.fill(v);
    }

    /// x[i] *= s
    #[inline(always)]
    pub fn scale(x: &mut [f32], s: f32) {
        for v in x.iter_mut() {
            *v *= s;
        }
    }

    /// The softmax backward of one row: ds[j] = p[j]·(ds[j] − d), with dP in ds on entry and d = Σ_j p_j·dP_j.
    #[inline(always)]
    pub fn dsoftmax(ds: &mut [f32], p: &[f32], d: f32) {
        for (x, &pj) in ds.iter_mut().zip(p) {
            *x = pj * (*x - d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        (a as f64 - b).abs() / b.abs().max(1e-30)
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_exp_and_zero_below_the_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            assert!(rel(exp(x), (x as f64).exp()) < 2.5e-7, "exp({x})");
            x += 0.0137;
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    /// Against f64 truth (libm's erfc): the f32 reference `1 + erf` form rounds the left tail to 0, this one keeps it.
    #[test]
    fn gelu_and_its_grad_match_f64_erfc_with_relative_accuracy_in_both_tails() {
        let mut x = -12.0f32;
        while x < 12.0 {
            let xd = x as f64;
            let cdf = 0.5 * libm::erfc(-xd * std::f64::consts::FRAC_1_SQRT_2);
            let pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            // f32 rounding of the exponent −x²/2 costs ~|x|²·6e-8 relative in the far tail.
            let tol = 2e-6f64.max(xd * xd * 1.2e-7);
            assert!(rel(gelu(x), xd * cdf) < tol, "gelu({x}) {} vs {}", gelu(x), xd * cdf);
            let d = cdf + xd * pdf;
            assert!((gelu_grad(x) as f64 - d).abs() < 2e-8 + tol * d.abs(), "gelu'({x}) {} vs {d}", gelu_grad(x));
            x += 0.0173;
        }
    }
}
