//! Explicit simd128 kernels for the browser build (wasm32 built with `-C target-feature=+simd128`): the building
//! blocks of the hot ops written with `core::arch::wasm32` intrinsics instead of being left to LLVM's
//! autovectoriser. The callers pick them by `cfg` (see `math`, `tile::gemm`, `portable::micro`, `norm`,
//! `pointwise`); everywhere else the plain-Rust versions run, and those are the scalar fallback.
//!
//! - Same operations, same order. Every kernel performs, lane for lane, the IEEE operations of the plain-Rust code
//!   it replaces, in the same order, so without relaxed-simd its results are bit-identical to that code (tested
//!   below, in the browser). Work splitting stays with the callers, unchanged: results do not depend on the
//!   thread count (see `cpu/mod.rs`).
//! - Multiply-add. `madd(a, b, c)` = a·b + c. Built with `+relaxed-simd` it is `f32x4.relaxed_madd`, which the
//!   engine may compute with one rounding (a fused multiply-add where the CPU has one); without it, a multiply then
//!   an add, the scalar code's two roundings. A `.wasm` that uses relaxed-simd does not validate in an engine
//!   without it, so the page needs the plain simd128 build as its fallback (relaxed-simd cannot be detected from
//!   inside one module).
//! - Layout. A `v128` holds four consecutive f32 of a row: lane l is element j0 + l. Reductions keep the 16
//!   partial sums of `math::LANES` in four vectors: element i of the input goes to vector (i mod 16) / 4, lane
//!   i mod 4, exactly the scalar lane array; the tail is added into the stored lanes by scalar code and the
//!   scalar tree (`hsum`) finishes. Element-wise kernels run their last 1–3 elements through a zero-padded
//!   4-float buffer, so every element sees the same vector code.

use super::math::{self, scalar, LANES};
use super::portable::{MR, NR};
use super::rows;
use super::tile::{self, Rows};
use crate::backend::AdamW;
use core::arch::wasm32::*;

const _: () = assert!(LANES == 16 && MR == 4 && NR == 8, "the kernels below are written for these widths");

// ---------------------------------------------------------------------------------------------------------------
// Vector helpers

/// Four lanes of x.
#[inline(always)]
fn splat(x: f32) -> v128 {
    f32x4_splat(x)
}

/// a·b + c, four lanes: fused where relaxed-simd and the CPU allow (one rounding), else multiply then add.
#[inline(always)]
fn madd(a: v128, b: v128, c: v128) -> v128 {
    #[cfg(target_feature = "relaxed-simd")]
    {
        f32x4_relaxed_madd(a, b, c)
    }
    #[cfg(not(target_feature = "relaxed-simd"))]
    {
        f32x4_add(f32x4_mul(a, b), c)
    }
}

/// Loads x[0..4].
#[inline(always)]
fn ld(x: &[f32; 4]) -> v128 {
    // SAFETY: `x` is 16 readable bytes, and `v128_load` reads unaligned.
    unsafe { v128_load(x.as_ptr().cast()) }
}

/// Stores v to x[0..4].
#[inline(always)]
fn st(x: &mut [f32; 4], v: v128) {
    // SAFETY: `x` is 16 writable bytes, and `v128_store` writes unaligned.
    unsafe { v128_store(x.as_mut_ptr().cast(), v) }
}

/// The 1–3 floats of a tail in lanes 0.., zero in the others.
#[inline(always)]
fn ld_tail(x: &[f32]) -> v128 {
    let mut t = [0.0f32; 4];
    t[..x.len()].copy_from_slice(x);
    ld(&t)
}

/// Stores the first x.len() (< 4) lanes of v to x.
#[inline(always)]
fn st_tail(x: &mut [f32], v: v128) {
    let mut t = [0.0f32; 4];
    st(&mut t, v);
    let w = x.len();
    x.copy_from_slice(&t[..w]);
}

/// A block of 16 floats as four vectors: vector q holds elements 4q..4q+4.
#[inline(always)]
fn ld16(x: &[f32; 16]) -> [v128; 4] {
    let (q, _) = x.as_chunks::<4>();
    [ld(&q[0]), ld(&q[1]), ld(&q[2]), ld(&q[3])]
}

/// Four accumulators as the scalar lane array: lane 4q + l is lane l of vector q.
#[inline(always)]
fn lanes16(acc: [v128; 4]) -> [f32; LANES] {
    let mut out = [0.0f32; LANES];
    for (o, v) in out.as_chunks_mut::<4>().0.iter_mut().zip(acc) {
        st(o, v);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Reductions (`math::scalar::{dot, sum, sum_sq_dev, max}`): 16 partial results in four vectors.

/// Σ a·b over the common length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let ((a16, at), (b16, bt)) = (a[..n].as_chunks::<16>(), b[..n].as_chunks::<16>());
    let mut acc = [splat(0.0); 4];
    for (x, y) in a16.iter().zip(b16) {
        let (x, y) = (ld16(x), ld16(y));
        for q in 0..4 {
            acc[q] = madd(x[q], y[q], acc[q]);
        }
    }
    let mut lanes = lanes16(acc);
    for (l, (x, y)) in at.iter().zip(bt).enumerate() {
        lanes[l] += x * y;
    }
    scalar::hsum(&lanes)
}

/// Σ x
pub fn sum(x: &[f32]) -> f32 {
    let (x16, xt) = x.as_chunks::<16>();
    let mut acc = [splat(0.0); 4];
    for v in x16 {
        let v = ld16(v);
        for q in 0..4 {
            acc[q] = f32x4_add(acc[q], v[q]);
        }
    }
    let mut lanes = lanes16(acc);
    for (l, v) in xt.iter().enumerate() {
        lanes[l] += v;
    }
    scalar::hsum(&lanes)
}

/// Σ (x − m)²
pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let (x16, xt) = x.as_chunks::<16>();
    let mv = splat(m);
    let mut acc = [splat(0.0); 4];
    for v in x16 {
        let v = ld16(v);
        for q in 0..4 {
            let d = f32x4_sub(v[q], mv);
            acc[q] = madd(d, d, acc[q]);
        }
    }
    let mut lanes = lanes16(acc);
    for (l, v) in xt.iter().enumerate() {
        lanes[l] += (v - m) * (v - m);
    }
    scalar::hsum(&lanes)
}

/// max x (−∞ for an empty slice). `f32x4_pmax(v, acc)` is `v < acc ? acc : v`, i.e. the scalar
/// `mx(acc, v) = acc > v ? acc : v` lane by lane, NaN and ±0 cases included. (Built with relaxed-simd, LLVM
/// lowers this select, and the scalar one, to `f32x4.relaxed_max`: then which of ±0, or of a NaN and a number,
/// comes out is the engine's choice. The same holds for the clamp in `exp4`.)
pub fn max(x: &[f32]) -> f32 {
    let (x16, xt) = x.as_chunks::<16>();
    let mut acc = [splat(f32::NEG_INFINITY); 4];
    for v in x16 {
        let v = ld16(v);
        for q in 0..4 {
            acc[q] = f32x4_pmax(v[q], acc[q]);
        }
    }
    let mut lanes = lanes16(acc);
    for (l, &v) in xt.iter().enumerate() {
        lanes[l] = scalar::mx(lanes[l], v);
    }
    scalar::hmax(&lanes)
}

// ---------------------------------------------------------------------------------------------------------------
// exp and the row kernels of softmax (`math::scalar::{exp_sub, exp_sub_in_place, scale, dsoftmax}`)

/// A lane-splat of x that LLVM cannot see as a constant (read through `read_volatile`), so it stays a value made once
/// per call rather than a `v128.const` at every use: V8 builds each non-zero `v128.const` with several instructions
/// where it is used and does not hoist it out of loops, and the ~30 constants of GELU's inner loop cost more than its
/// arithmetic (the per-call times with and without, in Chromium at W1's shapes: docs/BENCHMARKS.md, `ExpK`/`GeluK`).
/// A value made once lives in a register or a spill slot (one load).
#[inline(always)]
fn opaque(x: f32) -> v128 {
    // SAFETY: reads a local f32 through a valid reference.
    splat(unsafe { core::ptr::read_volatile(&x) })
}

/// The constants of `exp4`, made once per kernel call (see `opaque`).
#[derive(Clone, Copy)]
pub struct ExpK {
    lo: v128,
    hi: v128,
    log2e: v128,
    /// 1.5·2²³ as a float; its bits, as four i32, are also the integer subtracted from t.
    round: v128,
    ln2_hi: v128,
    ln2_lo: v128,
    p: [v128; 6],
    one: v128,
    bias: v128,
}

impl ExpK {
    #[inline(always)]
    pub fn new() -> ExpK {
        ExpK {
            lo: opaque(math::EXP_LO),
            hi: opaque(math::EXP_HI),
            log2e: opaque(math::LOG2E),
            round: opaque(math::ROUND),
            ln2_hi: opaque(math::LN2_HI),
            ln2_lo: opaque(math::LN2_LO),
            p: math::EXP_P.map(opaque),
            one: opaque(1.0),
            bias: i32x4_splat(127),
        }
    }
}

/// e^x of four lanes: `math::exp_k` step for step (Cephes `expf`). Lanes: x clamped to [−87, 88]; n = round(x·log2e)
/// by the 1.5·2²³ trick (n as a float, and as the integer in t's low mantissa bits); r = x − n·ln2 (ln2 in a hi/lo
/// pair); e^r by the degree-7 polynomial; 2ⁿ built in the exponent bits; 0 where x < −87 (a masked −∞ score).
#[inline(always)]
pub fn exp4(x: v128, k: &ExpK) -> v128 {
    // pmax(x, lo) = x < lo ? lo : x and pmin(y, hi) = hi < y ? hi : y: `f32::clamp` with NaN passed through.
    let xc = f32x4_pmin(f32x4_pmax(x, k.lo), k.hi);
    // Multiply then add, never fused: the add must round t to an integer (+ 1.5·2²³).
    let t = f32x4_add(f32x4_mul(xc, k.log2e), k.round);
    let n = f32x4_sub(t, k.round);
    let ni = i32x4_sub(t, k.round);
    let r = f32x4_sub(f32x4_sub(xc, f32x4_mul(n, k.ln2_hi)), f32x4_mul(n, k.ln2_lo));
    let mut p = k.p[0];
    for &c in &k.p[1..] {
        p = madd(p, r, c);
    }
    // e^r = p·r² + r + 1
    let er = f32x4_add(madd(f32x4_mul(p, r), r, r), k.one);
    let scale = i32x4_shl(i32x4_add(ni, k.bias), 23);
    v128_andnot(f32x4_mul(er, scale), f32x4_lt(x, k.lo))
}

/// The constants of `gelu4` and `gelu_grad_from_out4`, made once per kernel call (see `opaque`).
#[derive(Clone, Copy)]
struct GeluK {
    exp: ExpK,
    rsqrt2: v128,
    half: v128,
    neg_half: v128,
    erfc: [v128; 10],
    sixth: v128,
    phi0: v128,
    near0: v128,
}

impl GeluK {
    #[inline(always)]
    fn new() -> GeluK {
        GeluK {
            exp: ExpK::new(),
            rsqrt2: opaque(std::f32::consts::FRAC_1_SQRT_2),
            half: opaque(0.5),
            neg_half: opaque(-0.5),
            erfc: math::ERFC_P.map(opaque),
            sixth: opaque(1.0 / 6.0),
            phi0: opaque(math::PHI0),
            near0: opaque(1e-2),
        }
    }
}

/// GELU(x) = x·Φ(x) of four lanes: `math::gelu_k` step for step (Φ from Numerical Recipes' erfcc, see `math`).
#[inline(always)]
fn gelu4(x: v128, k: &GeluK) -> v128 {
    let (t, a) = gelu4_fit(x, k);
    gelu4_finish(x, t, a, k)
}

/// `gelu4`'s first half: t = 1/(1 + z/2) with z = |x|/√2, and the exponent of erfcc, P(t) − z².
#[inline(always)]
fn gelu4_fit(x: v128, k: &GeluK) -> (v128, v128) {
    let one = k.exp.one;
    let z = f32x4_mul(f32x4_abs(x), k.rsqrt2);
    let t = f32x4_div(one, madd(k.half, z, one));
    let mut p = k.erfc[0];
    for &c in &k.erfc[1..] {
        p = madd(p, t, c);
    }
    (t, f32x4_sub(p, f32x4_mul(z, z)))
}

/// `gelu4`'s second half: h = ½·t·e^a = Φ(−|x|), then x·Φ(x).
#[inline(always)]
fn gelu4_finish(x: v128, t: v128, a: v128, k: &GeluK) -> v128 {
    let h = f32x4_mul(k.half, f32x4_mul(t, exp4(a, &k.exp)));
    // Φ(x) = h for x < 0, 1 − h otherwise.
    let phi = v128_bitselect(h, f32x4_sub(k.exp.one, h), f32x4_lt(x, f32x4_splat(0.0)));
    f32x4_mul(x, phi)
}

/// d/dx GELU of four lanes from x and y = GELU(x): `math::gelu_grad_from_out_k` step for step.
#[inline(always)]
fn gelu_grad_from_out4(x: v128, y: v128, k: &GeluK) -> v128 {
    gelu_grad_finish(x, y, gelu_grad_exp(x, k), k)
}

/// `gelu_grad_from_out4`'s first half: e^(−x²/2).
#[inline(always)]
fn gelu_grad_exp(x: v128, k: &GeluK) -> v128 {
    exp4(f32x4_mul(f32x4_mul(k.neg_half, x), x), &k.exp)
}

/// `gelu_grad_from_out4`'s second half, given e = e^(−x²/2): Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_grad_finish(x: v128, y: v128, e: v128, k: &GeluK) -> v128 {
    let x2_6 = f32x4_mul(f32x4_mul(x, x), k.sixth);
    let near0 = f32x4_add(k.half, f32x4_mul(f32x4_mul(k.phi0, x), f32x4_sub(k.exp.one, x2_6)));
    let cdf = v128_bitselect(near0, f32x4_div(y, x), f32x4_lt(f32x4_abs(x), k.near0));
    f32x4_add(cdf, f32x4_mul(f32x4_mul(x, e), k.phi0))
}

/// o[i] = GELU(x[i]) over the common length (`pointwise` on wasm32 with simd128).
pub fn gelu_forward(o: &mut [f32], x: &[f32]) {
    let n = o.len().min(x.len());
    let k = GeluK::new();
    let ((o4, ot), (x4, xt)) = (o[..n].as_chunks_mut::<4>(), x[..n].as_chunks::<4>());
    // Two loops over L1-sized pieces instead of one: each needs about half of the 30 constants, so V8 keeps them in
    // registers instead of reloading spilled ones every iteration. The same operations, so the same bits.
    const PIECE: usize = 64;
    let (mut tv, mut av) = ([splat(0.0); PIECE], [splat(0.0); PIECE]);
    for (op, xp) in o4.chunks_mut(PIECE).zip(x4.chunks(PIECE)) {
        for ((x, t), a) in xp.iter().zip(&mut tv).zip(&mut av) {
            (*t, *a) = gelu4_fit(ld(x), &k);
        }
        for ((o, x), (t, a)) in op.iter_mut().zip(xp).zip(tv.iter().zip(&av)) {
            st(o, gelu4_finish(ld(x), *t, *a, &k));
        }
    }
    if !ot.is_empty() {
        st_tail(ot, gelu4(ld_tail(xt), &k));
    }
}

/// di[i] += d[i]·GELU'(x[i]), the derivative formed from y = GELU(x) (`pointwise` on wasm32 with simd128).
pub fn gelu_backward(di: &mut [f32], d: &[f32], x: &[f32], y: &[f32]) {
    let n = di.len().min(d.len()).min(x.len()).min(y.len());
    let k = GeluK::new();
    let (di4, dit) = di[..n].as_chunks_mut::<4>();
    let ((d4, dt), (x4, xt), (y4, yt)) = (d[..n].as_chunks::<4>(), x[..n].as_chunks::<4>(), y[..n].as_chunks::<4>());
    // Two loops over L1-sized pieces, as in `gelu_forward`.
    const PIECE: usize = 64;
    let mut ev = [splat(0.0); PIECE];
    for (((dip, dp), xp), yp) in di4.chunks_mut(PIECE).zip(d4.chunks(PIECE)).zip(x4.chunks(PIECE)).zip(y4.chunks(PIECE)) {
        for (x, e) in xp.iter().zip(&mut ev) {
            *e = gelu_grad_exp(ld(x), &k);
        }
        for ((((di, d), x), y), e) in dip.iter_mut().zip(dp).zip(xp).zip(yp).zip(&ev) {
            st(di, f32x4_add(ld(di), f32x4_mul(ld(d), gelu_grad_finish(ld(x), ld(y), *e, &k))));
        }
    }
    if !dit.is_empty() {
        // Tail lanes past n hold x = y = 0 (the near-0 branch, no 0/0 in a lane that is kept) and are not stored.
        let g = gelu_grad_from_out4(ld_tail(xt), ld_tail(yt), &k);
        st_tail(dit, f32x4_add(ld_tail(dit), f32x4_mul(ld_tail(dt), g)));
    }
}

/// d[i] ← d[i]·GELU'(x[i]), in place: `gelu_backward` into a fresh gradient (the matmul epilogue of
/// `pointwise::Epilogue::ActGrad`); the same operations, so the same bits as adding into zeros.
pub fn gelu_grad_in_place(d: &mut [f32], x: &[f32], y: &[f32]) {
    let n = d.len().min(x.len()).min(y.len());
    let k = GeluK::new();
    let (d4, dt) = d[..n].as_chunks_mut::<4>();
    let ((x4, xt), (y4, yt)) = (x[..n].as_chunks::<4>(), y[..n].as_chunks::<4>());
    const PIECE: usize = 64;
    let mut ev = [splat(0.0); PIECE];
    for ((dp, xp), yp) in d4.chunks_mut(PIECE).zip(x4.chunks(PIECE)).zip(y4.chunks(PIECE)) {
        for (x, e) in xp.iter().zip(&mut ev) {
            *e = gelu_grad_exp(ld(x), &k);
        }
        for (((d, x), y), e) in dp.iter_mut().zip(xp).zip(yp).zip(&ev) {
            st(d, f32x4_mul(ld(d), gelu_grad_finish(ld(x), ld(y), *e, &k)));
        }
    }
    if !dt.is_empty() {
        let g = gelu_grad_from_out4(ld_tail(xt), ld_tail(yt), &k);
        st_tail(dt, f32x4_mul(ld_tail(dt), g));
    }
}

/// x[i] = e^(x[i] − m)
pub fn exp_sub_in_place(x: &mut [f32], m: f32) {
    let (mv, k) = (splat(m), ExpK::new());
    let (x4, xt) = x.as_chunks_mut::<4>();
    for v in x4 {
        st(v, exp4(f32x4_sub(ld(v), mv), &k));
    }
    if !xt.is_empty() {
        let v = exp4(f32x4_sub(ld_tail(xt), mv), &k);
        st_tail(xt, v);
    }
}

/// out[i] = e^(x[i] − m) over the common length.
pub fn exp_sub(out: &mut [f32], x: &[f32], m: f32) {
    let n = out.len().min(x.len());
    let ((o4, ot), (x4, xt)) = (out[..n].as_chunks_mut::<4>(), x[..n].as_chunks::<4>());
    let (mv, k) = (splat(m), ExpK::new());
    for (o, x) in o4.iter_mut().zip(x4) {
        st(o, exp4(f32x4_sub(ld(x), mv), &k));
    }
    if !ot.is_empty() {
        st_tail(ot, exp4(f32x4_sub(ld_tail(xt), mv), &k));
    }
}

/// x[i] *= s
pub fn scale(x: &mut [f32], s: f32) {
    let sv = splat(s);
    let (x4, xt) = x.as_chunks_mut::<4>();
    for v in x4 {
        st(v, f32x4_mul(ld(v), sv));
    }
    if !xt.is_empty() {
        let v = f32x4_mul(ld_tail(xt), sv);
        st_tail(xt, v);
    }
}

/// dst = src (equal lengths), four lanes at a time. A variable-length `copy_from_slice` becomes `memory.copy`,
/// which V8 runs as a call into the runtime, several times slower for a short row than two v128 loads and stores
/// (docs/BENCHMARKS.md, `math::copy`), and the hot loops copy rows of 8–128 floats (packing B, attention's rows,
/// embeddings). LLVM would turn this loop back into `memory.copy` too; the wasm builds tell it not to
/// (`TP_WASM_RUSTFLAGS` in scripts/env.sh).
pub fn copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy: lengths differ");
    let ((d4, dt), (s4, st_)) = (dst.as_chunks_mut::<4>(), src.as_chunks::<4>());
    for (d, s) in d4.iter_mut().zip(s4) {
        st(d, ld(s));
    }
    for (d, s) in dt.iter_mut().zip(st_) {
        *d = *s;
    }
}

/// x[i] = v, four lanes at a time (a variable-length `fill(0.0)` is `memory.fill`, a runtime call, see `copy`).
pub fn fill(x: &mut [f32], v: f32) {
    let vv = splat(v);
    let (x4, xt) = x.as_chunks_mut::<4>();
    for q in x4 {
        st(q, vv);
    }
    for e in xt {
        *e = v;
    }
}

/// The softmax backward of one row: ds[j] = p[j]·(ds[j] − d).
pub fn dsoftmax(ds: &mut [f32], p: &[f32], d: f32) {
    let n = ds.len().min(p.len());
    let ((s4, st_), (p4, pt)) = (ds[..n].as_chunks_mut::<4>(), p[..n].as_chunks::<4>());
    let dv = splat(d);
    for (s, p) in s4.iter_mut().zip(p4) {
        st(s, f32x4_mul(ld(p), f32x4_sub(ld(s), dv)));
    }
    if !st_.is_empty() {
        let v = f32x4_mul(ld_tail(pt), f32x4_sub(ld_tail(st_), dv));
        st_tail(st_, v);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Matrix products

/// The MR×NR = 4×8 register tile of `portable::micro`: Σ_kk a[kk]ᵀ·b[kk] over one packed slab, where a is kc × 4
/// (the four rows of A at each k) and b is kc × 8 (eight columns of B at each k). acc[r][h] holds row r, columns
/// 4h..4h+4: eight accumulators, plus two vectors of B and a broadcast of A per step (11 vector registers; x86-64
/// has 16). Each element sums its kc products in k order, as `micro_scalar`.
#[inline(always)]
pub fn micro(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[splat(0.0); 2]; MR];
    let (a4, _) = a.as_chunks::<MR>();
    let (b8, _) = b.as_chunks::<NR>();
    for (av, bv) in a4.iter().zip(b8) {
        let (bh, _) = bv.as_chunks::<4>();
        let (b0, b1) = (ld(&bh[0]), ld(&bh[1]));
        for r in 0..MR {
            let ar = splat(av[r]);
            acc[r][0] = madd(ar, b0, acc[r][0]);
            acc[r][1] = madd(ar, b1, acc[r][1]);
        }
    }
    let mut out = [[0.0f32; NR]; MR];
    for (o, t) in out.iter_mut().zip(acc) {
        let (oh, _) = o.as_chunks_mut::<4>();
        st(&mut oh[0], t[0]);
        st(&mut oh[1], t[1]);
    }
    out
}

/// `micro` reading A in place instead of from a packed strip: row r, depth kk of the tile is a[r·rs + kk·cs].
/// The same operations in the same order as `micro`, so the same bits; it saves packing A.
#[inline(always)]
pub fn micro_strided(a: &[f32], rs: usize, cs: usize, kc: usize, b: &[f32]) -> [[f32; NR]; MR] {
    assert!(kc == 0 || (MR - 1) * rs + (kc - 1) * cs < a.len(), "A tile out of bounds");
    let (b8, _) = b.as_chunks::<NR>();
    let mut acc = [[splat(0.0); 2]; MR];
    let ap = a.as_ptr();
    for (kk, bv) in b8[..kc].iter().enumerate() {
        let (bh, _) = bv.as_chunks::<4>();
        let (b0, b1) = (ld(&bh[0]), ld(&bh[1]));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r·rs + kk·cs ≤ (MR−1)·rs + (kc−1)·cs < a.len(), asserted above.
            let ar = splat(unsafe { *ap.add(r * rs + kk * cs) });
            acc_r[0] = madd(ar, b0, acc_r[0]);
            acc_r[1] = madd(ar, b1, acc_r[1]);
        }
    }
    let mut out = [[0.0f32; NR]; MR];
    for (o, t) in out.iter_mut().zip(acc) {
        let (oh, _) = o.as_chunks_mut::<4>();
        st(&mut oh[0], t[0]);
        st(&mut oh[1], t[1]);
    }
    out
}

/// `tile::gemm`: C (m×n, rows at c[i·ldc]) = C·[accumulate] + A (m×k) · B (k×n). Strips of 4 rows (then single
/// rows), each cut into register tiles of 8 columns, then 4, then the last 1–3 columns in plain Rust
/// (`tile::narrow_piece`). Every element of C sums its k terms in k order, as `tile::gemm_lanes`.
#[allow(clippy::too_many_arguments)]
pub fn tile_gemm(c: &mut [f32], ldc: usize, accumulate: bool, a: Rows, b: Rows, m: usize, n: usize, k: usize) {
    strips::<false>(c, ldc, accumulate, a, b, m, n, k)
}

/// `tile::gemm_tn` for n a multiple of 4: `tile_gemm` with A given as Aᵀ (`at`, k×m: A(i, kk) = at[kk·ld + i]) and
/// read in place, so the attention backward's dV += Pᵀ·dO and dK += dSᵀ·Q need no transposed copy. The same
/// operations in the same order as `tile_gemm` on the transposed A, so the same bits.
pub fn tile_gemm_tn(c: &mut [f32], ldc: usize, accumulate: bool, at: Rows, b: Rows, m: usize, n: usize, k: usize) {
    assert!(n.is_multiple_of(4), "tile_gemm_tn: n must be a multiple of 4");
    strips::<true>(c, ldc, accumulate, at, b, m, n, k)
}

/// Strips of 4 rows, then single rows, of `tile_gemm` (AT: `tile_gemm_tn`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn strips<const AT: bool>(c: &mut [f32], ldc: usize, accumulate: bool, a: Rows, b: Rows, m: usize, n: usize, k: usize) {
    let mut i0 = 0;
    while i0 + 4 <= m {
        row_strip::<4, AT>(c, ldc, accumulate, a, b, i0, n, k);
        i0 += 4;
    }
    for i in i0..m {
        row_strip::<1, AT>(c, ldc, accumulate, a, b, i, n, k);
    }
}

/// Rows i0..i0+R of `tile_gemm` (AT: of `tile_gemm_tn`, whose n has no tail), all n columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_strip<const R: usize, const AT: bool>(
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: Rows,
    b: Rows,
    i0: usize,
    n: usize,
    k: usize,
) {
    let mut j0 = 0;
    while j0 + 8 <= n {
        tile_rv::<R, 2, AT>(c, ldc, accumulate, a, b, i0, j0, k);
        j0 += 8;
    }
    if j0 + 4 <= n {
        tile_rv::<R, 1, AT>(c, ldc, accumulate, a, b, i0, j0, k);
        j0 += 4;
    }
    if j0 < n {
        for r in 0..R {
            let arow = &a.data[(i0 + r) * a.ld..][..k];
            tile::narrow_piece(&mut c[(i0 + r) * ldc + j0..][..n - j0], accumulate, arow, b, j0);
        }
    }
}

/// One register tile: rows i0..i0+R, columns j0..j0+4V of C in R·V accumulators (acc[r][v] holds row i0 + r,
/// columns j0+4v..j0+4v+4). Per k step: V vectors of B's row k, R broadcasts of A[i, k] (AT: read from Aᵀ's row
/// k, where the R values are contiguous), R·V multiply-adds.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // kk indexes R rows of A at once
fn tile_rv<const R: usize, const V: usize, const AT: bool>(
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: Rows,
    b: Rows,
    i0: usize,
    j0: usize,
    k: usize,
) {
    let arow: [&[f32]; R] = std::array::from_fn(|r| if AT { &[][..] } else { &a.data[(i0 + r) * a.ld..][..k] });
    if AT && k > 0 {
        assert!(a.data.len() >= (k - 1) * a.ld + i0 + R, "tile gemm: Aᵀ too short");
    }
    let mut acc = [[splat(0.0); V]; R];
    if accumulate {
        for (r, acc) in acc.iter_mut().enumerate() {
            let (cv, _) = c[(i0 + r) * ldc + j0..][..4 * V].as_chunks::<4>();
            for v in 0..V {
                acc[v] = ld(&cv[v]);
            }
        }
    }
    for kk in 0..k {
        let (bq, _) = b.data[kk * b.ld + j0..][..4 * V].as_chunks::<4>();
        let bv: [v128; V] = std::array::from_fn(|v| ld(&bq[v]));
        for r in 0..R {
            let ar = splat(if AT { a.data[kk * a.ld + i0 + r] } else { arow[r][kk] });
            for v in 0..V {
                acc[r][v] = madd(ar, bv[v], acc[r][v]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let (cv, _) = c[(i0 + r) * ldc + j0..][..4 * V].as_chunks_mut::<4>();
        for v in 0..V {
            st(&mut cv[v], acc[v]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Few-row matmul (`rows::block_lanes::<4>`): a decoding step's out = x·wᵀ + b with W read in place.

/// `rows::block`: channels j0..j1 of every row, out[i·ldo + (j − j0)] = Σ_k x[i,k]·w[j,k] + b[j]. Chunks of
/// `rows::CHUNK` channels outer; in each, register tiles of R rows × J channels of 4-lane partial sums along C:
/// 4×2 (then 3×3, 2×4, 1×6 for the last rows), at most 9 accumulators, so with the J pieces of W and one of x
/// they stay within the 16 registers V8 has on x86-64. The operations of `rows::block_lanes::<4>` in its order,
/// so without relaxed-simd the same bits.
#[allow(clippy::too_many_arguments)]
pub fn rows_block(out: &mut [f32], ldo: usize, x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, j0: usize, j1: usize) {
    let mut c0 = j0;
    while c0 < j1 {
        let c1 = (c0 + rows::CHUNK).min(j1);
        let mut i = 0;
        while i + 4 <= m {
            rows_cols::<4, 2>(out, ldo, x, w, b, i, k, j0, c0, c1);
            i += 4;
        }
        match m - i {
            3 => rows_cols::<3, 3>(out, ldo, x, w, b, i, k, j0, c0, c1),
            2 => rows_cols::<2, 4>(out, ldo, x, w, b, i, k, j0, c0, c1),
            1 => rows_cols::<1, 6>(out, ldo, x, w, b, i, k, j0, c0, c1),
            _ => {}
        }
        c0 = c1;
    }
}

/// Rows i0..i0+R, channels c0..c1 of `rows_block`: tiles of J channels, then single channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_cols<const R: usize, const J: usize>(out: &mut [f32], ldo: usize, x: &[f32], w: &[f32], b: Option<&[f32]>, i0: usize, k: usize, j0: usize, c0: usize, c1: usize) {
    let mut j = c0;
    while j + J <= c1 {
        rows::put(out, ldo, b, i0, j0, j, rows_tile::<R, J>(x, w, i0, j, k));
        j += J;
    }
    while j < c1 {
        rows::put(out, ldo, b, i0, j0, j, rows_tile::<R, 1>(x, w, i0, j, k));
        j += 1;
    }
}

/// The sums of rows i0..i0+R × channels j..j+J: R·J accumulators of 4 lanes, C in steps of 4 (the last one
/// zero-padded), then each accumulator's lanes as (s0+s1)+(s2+s3) (`rows_sum4`).
#[inline(always)]
fn rows_tile<const R: usize, const J: usize>(x: &[f32], w: &[f32], i0: usize, j: usize, k: usize) -> [[f32; J]; R] {
    assert!(x.len() >= (i0 + R) * k && w.len() >= (j + J) * k, "few-row tile out of bounds");
    let (xp, wp) = (x[i0 * k..].as_ptr(), w[j * k..].as_ptr());
    // SAFETY: kk + 4 ≤ k, so every 4-float load below lies in rows i0..i0+R of x or j..j+J of w (asserted above).
    let at = |p: *const f32, row: usize, kk: usize| unsafe { v128_load(p.add(row * k + kk).cast()) };
    let mut acc = [[splat(0.0); J]; R];
    let k4 = k / 4 * 4;
    for kk in (0..k4).step_by(4) {
        let wv: [v128; J] = std::array::from_fn(|q| at(wp, q, kk));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = at(xp, r, kk);
            for q in 0..J {
                acc_r[q] = madd(xv, wv[q], acc_r[q]);
            }
        }
    }
    if k4 < k {
        let wv: [v128; J] = std::array::from_fn(|q| ld_tail(&w[(j + q) * k + k4..][..k - k4]));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xv = ld_tail(&x[(i0 + r) * k + k4..][..k - k4]);
            for q in 0..J {
                acc_r[q] = madd(xv, wv[q], acc_r[q]);
            }
        }
    }
    let mut t = [[0.0f32; J]; R];
    for (r, acc_r) in acc.iter().enumerate() {
        for q0 in (0..J).step_by(4) {
            let a = |q: usize| if q0 + q < J { acc_r[q0 + q] } else { splat(0.0) };
            let mut s = [0.0f32; 4];
            st(&mut s, rows_sum4(a(0), a(1), a(2), a(3)));
            let n = (J - q0).min(4);
            t[r][q0..q0 + n].copy_from_slice(&s[..n]);
        }
    }
    t
}

/// The sums of four accumulators in one vector, each (s0+s1)+(s2+s3) (`rows::tree`): a 4×4 transpose makes
/// column l hold lane l of a, b, c, d, then the columns add in that tree.
#[inline(always)]
fn rows_sum4(a: v128, b: v128, c: v128, d: v128) -> v128 {
    let (ab01, ab23) = (i32x4_shuffle::<0, 4, 1, 5>(a, b), i32x4_shuffle::<2, 6, 3, 7>(a, b)); // a0 b0 a1 b1 | a2 b2 a3 b3
    let (cd01, cd23) = (i32x4_shuffle::<0, 4, 1, 5>(c, d), i32x4_shuffle::<2, 6, 3, 7>(c, d));
    let l0 = i32x4_shuffle::<0, 1, 4, 5>(ab01, cd01); // a0 b0 c0 d0
    let l1 = i32x4_shuffle::<2, 3, 6, 7>(ab01, cd01);
    let l2 = i32x4_shuffle::<0, 1, 4, 5>(ab23, cd23);
    let l3 = i32x4_shuffle::<2, 3, 6, 7>(ab23, cd23);
    f32x4_add(f32x4_add(l0, l1), f32x4_add(l2, l3))
}

// ---------------------------------------------------------------------------------------------------------------
// Norms (`norm::{normalize_row, row_sums, backward_row}_scalar`)

/// One row of the norm forward: o = (x − μ)·r·w [+ b], four columns per vector.
pub fn normalize_row(o: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, mu: f32, rs: f32) {
    let n = o.len().min(x.len()).min(w.len()).min(b.map_or(usize::MAX, |b| b.len()));
    let (muv, rsv) = (splat(mu), splat(rs));
    let xhat = |x: v128| f32x4_mul(f32x4_sub(x, muv), rsv);
    let ((o4, ot), (x4, xt), (w4, wt)) =
        (o[..n].as_chunks_mut::<4>(), x[..n].as_chunks::<4>(), w[..n].as_chunks::<4>());
    match b {
        Some(b) => {
            let (b4, bt) = b[..n].as_chunks::<4>();
            for (((o, x), w), b) in o4.iter_mut().zip(x4).zip(w4).zip(b4) {
                st(o, madd(xhat(ld(x)), ld(w), ld(b)));
            }
            if !ot.is_empty() {
                st_tail(ot, madd(xhat(ld_tail(xt)), ld_tail(wt), ld_tail(bt)));
            }
        }
        None => {
            for ((o, x), w) in o4.iter_mut().zip(x4).zip(w4) {
                st(o, f32x4_mul(xhat(ld(x)), ld(w)));
            }
            if !ot.is_empty() {
                st_tail(ot, f32x4_mul(xhat(ld_tail(xt)), ld_tail(wt)));
            }
        }
    }
}

/// (Σ g, Σ g·x̂) over a row, g = d·w, x̂ = (x − μ)·r: two sets of 16 partial sums in four vectors each (the
/// reduction layout above), tails and trees in scalar code.
pub fn norm_row_sums(d: &[f32], w: &[f32], x: &[f32], mu: f32, rs: f32) -> (f32, f32) {
    let n = d.len().min(w.len()).min(x.len());
    let ((d16, dt), (w16, wt), (x16, xt)) =
        (d[..n].as_chunks::<16>(), w[..n].as_chunks::<16>(), x[..n].as_chunks::<16>());
    let (muv, rsv) = (splat(mu), splat(rs));
    let (mut ag, mut agx) = ([splat(0.0); 4], [splat(0.0); 4]);
    for ((d, w), x) in d16.iter().zip(w16).zip(x16) {
        let (d, w, x) = (ld16(d), ld16(w), ld16(x));
        for q in 0..4 {
            let g = f32x4_mul(d[q], w[q]);
            ag[q] = f32x4_add(ag[q], g);
            agx[q] = madd(g, f32x4_mul(f32x4_sub(x[q], muv), rsv), agx[q]);
        }
    }
    let (mut ag, mut agx) = (lanes16(ag), lanes16(agx));
    for (l, ((d, w), x)) in dt.iter().zip(wt).zip(xt).enumerate() {
        let g = d * w;
        ag[l] += g;
        agx[l] += g * ((x - mu) * rs);
    }
    (scalar::hsum(&ag), scalar::hsum(&agx))
}

/// One row of the norm backward: di += r·((d·w − g_mean) − x̂·gx_mean), pw += d·x̂, pb += d, four columns per vector.
#[allow(clippy::too_many_arguments)]
pub fn norm_backward_row(
    di: &mut [f32],
    pw: &mut [f32],
    pb: &mut [f32],
    d: &[f32],
    w: &[f32],
    x: &[f32],
    mu: f32,
    rs: f32,
    g_mean: f32,
    gx_mean: f32,
) {
    let n = di.len().min(pw.len()).min(pb.len()).min(d.len()).min(w.len()).min(x.len());
    let (muv, rsv, gm, gxm) = (splat(mu), splat(rs), splat(g_mean), splat(gx_mean));
    // The vector step on (di, pw, pb) given (d, w, x).
    let step = |di: v128, pw: v128, pb: v128, d: v128, w: v128, x: v128| {
        let xhat = f32x4_mul(f32x4_sub(x, muv), rsv);
        let inner = f32x4_sub(f32x4_sub(f32x4_mul(d, w), gm), f32x4_mul(xhat, gxm));
        (madd(rsv, inner, di), madd(d, xhat, pw), f32x4_add(pb, d))
    };
    let (di4, dit) = di[..n].as_chunks_mut::<4>();
    let (pw4, pwt) = pw[..n].as_chunks_mut::<4>();
    let (pb4, pbt) = pb[..n].as_chunks_mut::<4>();
    let ((d4, dt), (w4, wt), (x4, xt)) = (d[..n].as_chunks::<4>(), w[..n].as_chunks::<4>(), x[..n].as_chunks::<4>());
    for (((di, pw), pb), ((d, w), x)) in di4.iter_mut().zip(pw4).zip(pb4).zip(d4.iter().zip(w4).zip(x4)) {
        let (a, b, c) = step(ld(di), ld(pw), ld(pb), ld(d), ld(w), ld(x));
        st(di, a);
        st(pw, b);
        st(pb, c);
    }
    if !dit.is_empty() {
        let (a, b, c) = step(ld_tail(dit), ld_tail(pwt), ld_tail(pbt), ld_tail(dt), ld_tail(wt), ld_tail(xt));
        st_tail(dit, a);
        st_tail(pwt, b);
        st_tail(pbt, c);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Optimizer (`pointwise::{adamw_scalar, sum_squares_scalar}`)

/// AdamW over slices, four parameters per vector, operation for operation as `adamw_scalar`:
/// p = p·shrink; m = β1·m + (1−β1)·g; v = β2·v + ((1−β2)·g)·g; p −= (lr·m/bc1) / (√(v/bc2) + ε).
#[allow(clippy::too_many_arguments)]
pub fn adamw(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], h: &AdamW, shrink: f32, bc1: f32, bc2: f32) {
    let n = p.len().min(m.len()).min(v.len()).min(g.len());
    let (shrink, b1, b2, c1, c2) =
        (splat(shrink), splat(h.beta1), splat(h.beta2), splat(1.0 - h.beta1), splat(1.0 - h.beta2));
    let (bc1, bc2, lr, eps) = (splat(bc1), splat(bc2), splat(h.lr), splat(h.eps));
    let step = |p: v128, m: v128, v: v128, g: v128| {
        let p = f32x4_mul(p, shrink);
        let m = madd(b1, m, f32x4_mul(c1, g));
        let v = madd(b2, v, f32x4_mul(f32x4_mul(c2, g), g));
        let (mhat, vhat) = (f32x4_div(m, bc1), f32x4_div(v, bc2));
        let p = f32x4_sub(p, f32x4_div(f32x4_mul(lr, mhat), f32x4_add(f32x4_sqrt(vhat), eps)));
        (p, m, v)
    };
    let (p4, pt) = p[..n].as_chunks_mut::<4>();
    let (m4, mt) = m[..n].as_chunks_mut::<4>();
    let (v4, vt) = v[..n].as_chunks_mut::<4>();
    let (g4, gt) = g[..n].as_chunks::<4>();
    for (((p, m), v), g) in p4.iter_mut().zip(m4).zip(v4).zip(g4) {
        let (np, nm, nv) = step(ld(p), ld(m), ld(v), ld(g));
        st(p, np);
        st(m, nm);
        st(v, nv);
    }
    if !pt.is_empty() {
        let (np, nm, nv) = step(ld_tail(pt), ld_tail(mt), ld_tail(vt), ld_tail(gt));
        st_tail(pt, np);
        st_tail(mt, nm);
        st_tail(vt, nv);
    }
}

/// Σ x² in f64, as `sum_squares_scalar`: 8 f64 partial sums in four f64x2 (acc[h] holds partials 2h and 2h + 1,
/// i.e. element i goes to lane i mod 8), each pair of floats widened with `f64x2.promote_low_f32x4`; tail and
/// tree in scalar code. f64 products and sums are not fused (they are exact enough, and so match bit for bit).
pub fn sum_squares(x: &[f32]) -> f64 {
    let (x8, xt) = x.as_chunks::<8>();
    let mut acc = [f64x2_splat(0.0); 4];
    for v in x8 {
        let (q, _) = v.as_chunks::<4>();
        let (lo, hi) = (ld(&q[0]), ld(&q[1]));
        // Elements (0,1), (2,3), (4,5), (6,7) of the block in the low half of a vector each.
        let pairs = [lo, i32x4_shuffle::<2, 3, 2, 3>(lo, lo), hi, i32x4_shuffle::<2, 3, 2, 3>(hi, hi)];
        for h in 0..4 {
            let d = f64x2_promote_low_f32x4(pairs[h]);
            acc[h] = f64x2_add(acc[h], f64x2_mul(d, d));
        }
    }
    let mut lanes = [0.0f64; 8];
    for (h, a) in acc.iter().enumerate() {
        lanes[2 * h] = f64x2_extract_lane::<0>(*a);
        lanes[2 * h + 1] = f64x2_extract_lane::<1>(*a);
    }
    for (l, &v) in xt.iter().enumerate() {
        lanes[l] += v as f64 * v as f64;
    }
    super::pointwise::tree8(&lanes)
}

// ---------------------------------------------------------------------------------------------------------------
// Tests: every kernel against the plain-Rust code it replaces, on awkward sizes. Without relaxed-simd the results
// must be bit-identical; with it (fused multiply-adds) within a few ulp. Run in headless Chromium by
// `scripts/test-wasm-kernels.sh` (`cargo test --lib` on wasm32).

#[cfg(test)]
mod tests {
    use super::super::{norm, pointwise, portable, rows, tile};
    use super::*;
    use crate::rng::Rng;
    use wasm_bindgen_test::wasm_bindgen_test;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32 * scale).collect()
    }

    /// Lengths around every multiple of 4 and 16 up to 70, and a long one.
    fn lengths() -> impl Iterator<Item = usize> {
        (0..70).chain([255, 256, 257, 1001])
    }

    /// Bit-identical without relaxed-simd; within `rtol`·(|want| + scale) with it, where `scale` is the size of
    /// the terms that were summed (fused products change roundings, not the maths).
    #[track_caller]
    fn check(what: &str, got: &[f32], want: &[f32], scale: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if cfg!(target_feature = "relaxed-simd") {
                let tol = 1e-5 * (w.abs() + scale);
                assert!((g - w).abs() <= tol || g.to_bits() == w.to_bits(), "{what}[{i}]: {g} vs {w}");
            } else {
                assert!(g.to_bits() == w.to_bits(), "{what}[{i}]: {g} vs {w} (bits differ)");
            }
        }
    }

    #[wasm_bindgen_test]
    fn few_row_matmul_matches_the_plain_four_lanes() {
        let mut rng = Rng::new(9);
        for m in 1..=9 {
            for (k, n) in [(1, 1), (7, 5), (33, 50), (128, 97)] {
                let (x, w, b) = (randn(&mut rng, m * k, 1.0), randn(&mut rng, n * k, 1.0), randn(&mut rng, n, 1.0));
                for bias in [None, Some(&b[..])] {
                    // Channels 1..n of every row, into a wider out (ldo = n + 2).
                    let (mut got, mut want) = (vec![0.5f32; m * (n + 2)], vec![0.5f32; m * (n + 2)]);
                    rows_block(&mut got, n + 2, &x, &w, bias, m, k, 1, n);
                    rows::block_lanes::<4>(&mut want, n + 2, &x, &w, bias, m, k, 1, n);
                    check(&format!("rows m={m} k={k} n={n}"), &got, &want, k as f32);
                }
            }
        }
    }

    #[wasm_bindgen_test]
    fn reductions_match_the_scalar_lanes_and_tree() {
        let mut rng = Rng::new(1);
        for n in lengths() {
            let (a, b) = (randn(&mut rng, n, 1.0), randn(&mut rng, n + 3, 1.0));
            let s = n as f32;
            check(&format!("dot n={n}"), &[dot(&a, &b)], &[scalar::dot(&a, &b)], s);
            check(&format!("sum n={n}"), &[sum(&a)], &[scalar::sum(&a)], s);
            check(&format!("sum_sq_dev n={n}"), &[sum_sq_dev(&a, 0.3)], &[scalar::sum_sq_dev(&a, 0.3)], s);
            // max has no multiply-add: bit-identical in every build.
            assert_eq!(max(&a).to_bits(), scalar::max(&a).to_bits(), "max n={n}");
        }
        // max with −∞ (masked scores), ±0 and NaNs in various lanes. With relaxed-simd LLVM compiles both versions'
        // selects to `f32x4.relaxed_max`, whose choice between +0 and −0, or a NaN and a number, is the engine's:
        // only the value is checked there (±0 shift a softmax row alike).
        let mut x = vec![f32::NEG_INFINITY; 37];
        assert_eq!(max(&x), f32::NEG_INFINITY);
        x[5] = -0.0;
        x[21] = 0.0;
        assert_eq!(max(&x), 0.0);
        if !cfg!(target_feature = "relaxed-simd") {
            assert_eq!(max(&x).to_bits(), scalar::max(&x).to_bits());
            x[3] = f32::NAN;
            x[35] = f32::NAN;
            assert_eq!(max(&x).to_bits(), scalar::max(&x).to_bits());
        }
    }

    #[wasm_bindgen_test]
    fn exp_matches_the_scalar_cephes_exp() {
        let mut xs: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.0097).collect();
        xs.extend([f32::NEG_INFINITY, f32::INFINITY, -87.0, -87.000_01, 88.0, 88.5, 0.0, -0.0, 1e-30, -1e-30]);
        let mut got = vec![0.0f32; xs.len()];
        exp_sub(&mut got, &xs, 0.0);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = math::exp(x);
            if cfg!(target_feature = "relaxed-simd") {
                // A fused polynomial step moves the result by at most an ulp or two.
                assert!((g - want).abs() <= 2.5e-7 * want, "exp({x}): {g} vs {want}");
            } else {
                assert_eq!(g.to_bits(), want.to_bits(), "exp({x}): {g} vs {want}");
            }
        }
        assert_eq!(got[20_000], 0.0); // e^−∞ is exactly 0
    }

    #[wasm_bindgen_test]
    fn gelu_forward_and_backward_and_the_in_place_gradient_match_the_scalar_maths() {
        let mut rng = Rng::new(4);
        for n in lengths() {
            let mut x = randn(&mut rng, n, 3.0);
            // Both sides of the near-0 switch, 0 itself and the far tails.
            for (i, v) in [0.0, 0.009, -0.011, 1e-30, -14.0, 12.0].into_iter().enumerate() {
                if i < n {
                    x[i] = v;
                }
            }
            let d = randn(&mut rng, n, 1.0);
            let mut y = vec![0.0; n];
            gelu_forward(&mut y, &x);
            let want_y: Vec<f32> = x.iter().map(|&v| math::gelu(v)).collect();
            check(&format!("gelu n={n}"), &y, &want_y, 0.0);
            let mut di = randn(&mut rng, n, 1.0);
            let mut want_di = di.clone();
            gelu_backward(&mut di, &d, &x, &y);
            for i in 0..n {
                want_di[i] += d[i] * math::gelu_grad_from_out_k([x[i]], [y[i]])[0];
            }
            check(&format!("gelu backward n={n}"), &di, &want_di, 1.0);
            // In place (the matmul epilogue's): d ← d·GELU'(x).
            let mut dd = d.clone();
            gelu_grad_in_place(&mut dd, &x, &y);
            let want_dd: Vec<f32> = (0..n).map(|i| d[i] * math::gelu_grad_from_out_k([x[i]], [y[i]])[0]).collect();
            check(&format!("gelu grad in place n={n}"), &dd, &want_dd, 1.0);
        }
    }

    #[wasm_bindgen_test]
    fn row_kernels_match_the_scalar_loops() {
        let mut rng = Rng::new(2);
        for n in lengths() {
            let x = randn(&mut rng, n, 3.0);
            let p = randn(&mut rng, n, 1.0);
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            exp_sub(&mut a, &x, 0.7);
            scalar::exp_sub(&mut b, &x, 0.7);
            check(&format!("exp_sub n={n}"), &a, &b, 0.0);
            let (mut a, mut b) = (x.clone(), x.clone());
            exp_sub_in_place(&mut a, -0.2);
            scalar::exp_sub_in_place(&mut b, -0.2);
            check(&format!("exp_sub_in_place n={n}"), &a, &b, 0.0);
            let (mut a, mut b) = (x.clone(), x.clone());
            scale(&mut a, 0.37);
            scalar::scale(&mut b, 0.37);
            assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "scale n={n}");
            let (mut a, mut b) = (x.clone(), x.clone());
            dsoftmax(&mut a, &p, 0.11);
            scalar::dsoftmax(&mut b, &p, 0.11);
            assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()), "dsoftmax n={n}");
            // copy and fill, into the middle of a longer buffer: nothing outside the range changes.
            let mut a = vec![-1.5f32; n + 9];
            copy(&mut a[5..5 + n], &x);
            assert!(a[5..5 + n].iter().zip(&x).all(|(a, b)| a.to_bits() == b.to_bits()), "copy n={n}");
            assert!(a[..5].iter().chain(&a[5 + n..]).all(|&v| v == -1.5), "copy n={n} wrote outside");
            fill(&mut a[3..3 + n], 0.25);
            assert!(a[3..3 + n].iter().all(|&v| v == 0.25) && a[..3].iter().all(|&v| v == -1.5), "fill n={n}");
            assert!(a[5 + n..].iter().all(|&v| v == -1.5), "fill n={n} wrote past the end");
        }
    }

    #[wasm_bindgen_test]
    fn tile_products_match_the_plain_rust_tiles() {
        let mut rng = Rng::new(3);
        for (m, n, k) in
            [(7, 37, 5), (4, 16, 1), (1, 9, 33), (13, 64, 32), (5, 3, 0), (16, 64, 20), (9, 13, 64), (3, 6, 7)]
        {
            let (lda, ldb, ldc) = (k + 3, n + 2, n + 5);
            let a = randn(&mut rng, m * lda, 1.0);
            let b = randn(&mut rng, k.max(1) * ldb, 1.0);
            let c0 = randn(&mut rng, m * ldc, 1.0);
            for accumulate in [false, true] {
                let (ar, br) = (Rows { data: &a, ld: lda }, Rows { data: &b, ld: ldb });
                let (mut got, mut want) = (c0.clone(), c0.clone());
                tile_gemm(&mut got, ldc, accumulate, ar, br, m, n, k);
                tile::gemm_lanes::<8>(&mut want, ldc, accumulate, ar, br, m, n, k);
                check(&format!("tile m={m} n={n} k={k} acc={accumulate}"), &got, &want, k as f32);
            }
        }
    }

    #[wasm_bindgen_test]
    fn the_transposed_tile_product_matches_the_tile_product_bit_for_bit() {
        // A given as Aᵀ (k×m, rows ld apart) and read in place gives exactly tile_gemm on the transposed copy, and
        // tile::gemm_tn takes this path for n a multiple of 4 (and its transposing fallback otherwise).
        let mut rng = Rng::new(6);
        for (m, n, k) in [(64, 32, 16), (7, 8, 5), (4, 4, 1), (13, 12, 9), (5, 16, 0), (3, 6, 7), (64, 9, 16)] {
            let (ldat, ldb, ldc) = (m + 3, n + 2, n + 5);
            let at = randn(&mut rng, k.max(1) * ldat, 1.0);
            let b = randn(&mut rng, k.max(1) * ldb, 1.0);
            let c0 = randn(&mut rng, m * ldc, 1.0);
            let a: Vec<f32> = (0..m * k.max(1)).map(|x| if k == 0 { 0.0 } else { at[(x % k) * ldat + x / k] }).collect();
            for accumulate in [false, true] {
                let (atr, ar, br) = (Rows { data: &at, ld: ldat }, Rows { data: &a, ld: k.max(1) }, Rows { data: &b, ld: ldb });
                let (mut got, mut want) = (c0.clone(), c0.clone());
                tile::gemm_tn(&mut got, ldc, accumulate, atr, br, m, n, k);
                tile_gemm(&mut want, ldc, accumulate, ar, br, m, n, k);
                let same = got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "gemm_tn m={m} n={n} k={k} acc={accumulate}");
            }
        }
    }

    #[wasm_bindgen_test]
    fn the_matmul_micro_kernel_matches_the_plain_rust_one() {
        let mut rng = Rng::new(4);
        for kc in [0, 1, 3, 17, 256] {
            let (a, b) = (randn(&mut rng, kc * MR, 1.0), randn(&mut rng, kc * NR, 1.0));
            let (got, want) = (micro(&a, &b), portable::micro_scalar(&a, &b));
            check(&format!("micro kc={kc}"), got.as_flattened(), want.as_flattened(), kc as f32);
        }
    }

    #[wasm_bindgen_test]
    fn norm_rows_match_the_scalar_loops() {
        let mut rng = Rng::new(5);
        for c in lengths().filter(|&c| c > 0) {
            let (x, w, b, d) =
                (randn(&mut rng, c, 2.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
            let (mu, rs) = (0.3, 1.7);
            for bias in [Some(&b[..]), None] {
                let (mut got, mut want) = (vec![0.0; c], vec![0.0; c]);
                normalize_row(&mut got, &x, &w, bias, mu, rs);
                norm::normalize_row_scalar(&mut want, &x, &w, bias, mu, rs);
                check(&format!("normalize_row C={c}"), &got, &want, 1.0);
            }
            let (g, gx) = norm_row_sums(&d, &w, &x, mu, rs);
            let (wg, wgx) = norm::row_sums_scalar(&d, &w, &x, mu, rs);
            check(&format!("row_sums C={c}"), &[g, gx], &[wg, wgx], c as f32);
            let init = (randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
            let (mut di, mut pw, mut pb) = init.clone();
            let (mut wdi, mut wpw, mut wpb) = init;
            norm_backward_row(&mut di, &mut pw, &mut pb, &d, &w, &x, mu, rs, 0.2, -0.4);
            norm::backward_row_scalar(&mut wdi, &mut wpw, &mut wpb, &d, &w, &x, mu, rs, 0.2, -0.4);
            check(&format!("norm dinp C={c}"), &di, &wdi, 1.0);
            check(&format!("norm dw C={c}"), &pw, &wpw, 1.0);
            check(&format!("norm db C={c}"), &pb, &wpb, 1.0);
        }
    }

    #[wasm_bindgen_test]
    fn adamw_and_sum_squares_match_the_scalar_loops() {
        let mut rng = Rng::new(6);
        let h = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, t: 3 };
        let (bc1, bc2) = (1.0 - h.beta1.powi(3), 1.0 - h.beta2.powi(3));
        for n in lengths() {
            let g = randn(&mut rng, n, 0.1);
            let init = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 0.01), randn(&mut rng, n, 0.001));
            let v0: Vec<f32> = init.2.iter().map(|x| x.abs()).collect();
            let (mut p, mut m, mut v) = (init.0.clone(), init.1.clone(), v0.clone());
            let (mut wp, mut wm, mut wv) = (init.0, init.1, v0);
            adamw(&mut p, &mut m, &mut v, &g, &h, 0.9999, bc1, bc2);
            pointwise::adamw_scalar(&mut wp, &mut wm, &mut wv, &g, &h, 0.9999, bc1, bc2);
            check(&format!("adamw p n={n}"), &p, &wp, 1.0);
            check(&format!("adamw m n={n}"), &m, &wm, 0.1);
            check(&format!("adamw v n={n}"), &v, &wv, 0.01);
            // f64 and unfused: bit-identical in every build.
            assert_eq!(sum_squares(&g).to_bits(), pointwise::sum_squares_scalar(&g).to_bits(), "sum_squares n={n}");
        }
    }
}
