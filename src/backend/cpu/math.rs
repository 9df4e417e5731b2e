//! Branch-free f32 maths that LLVM vectorises: no libm call sits in a hot loop, so a loop of `exp` or `gelu`
//! becomes SIMD code (SSE/AVX natively, simd128 in the browser).
//!
//! - `exp`: Cephes `expf`. x = n·ln2 + r with |r| ≤ ln2/2 (n rounded with the 1.5·2²³ trick, ln2 split in a
//!   hi/lo pair), e^r by a degree-7 polynomial, 2ⁿ built in the exponent bits. About 1 ulp.
//! - `phi`, the standard normal CDF: Φ(x) = ½·erfc(−x/√2), with erfc from the Chebyshev fit of Numerical Recipes
//!   §6.2 (`erfcc`, fractional error < 1.2e-7 everywhere), so the left tail keeps its relative accuracy.
//! - `gelu`, `gelu_grad`, `sigmoid` built from those, matching the reference definitions in `ops::act`.

/// Width of the fixed-size accumulators in the CPU kernels: one AVX-512 register, four simd128 ones.
pub const LANES: usize = 16;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2²³ rounds to the nearest integer, and leaves that integer in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// e^x; 0 below −87 (so a masked −∞ score gives exactly 0), saturates at e^88.
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        er * scale
    }
}

/// 1 / (1 + e^−x)
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// erfc(z) for z ≥ 0 (Numerical Recipes `erfcc`).
#[allow(clippy::excessive_precision)] // Numerical Recipes' coefficients as published
#[inline(always)]
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_203_98;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_68;
    p = p * t - 1.265_512_23;
    t * exp(p - z * z)
}

/// Φ(x), the standard normal CDF.
#[inline(always)]
pub fn phi(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let half_tail = 0.5 * erfc_pos(z);
    if x < 0.0 {
        half_tail
    } else {
        1.0 - half_tail
    }
}

/// GELU(x) = x·Φ(x) (exact form, as PyTorch's default).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * phi(x)
}

/// d/dx GELU = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π).
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    phi(x) + x * exp(-0.5 * x * x) * 0.398_942_3
}

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

/// max x (−∞ for an empty slice; NaNs are not propagated), LANES partial maxima folded as a tree.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    // `a > b ? a : b` is one vector max instruction; `f32::max` adds NaN fix-ups to every step.
    #[inline(always)]
    fn mx(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
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
