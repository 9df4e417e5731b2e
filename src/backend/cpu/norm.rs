//! LayerNorm and RMSNorm, forward and backward, per row of C (maths in `ops::norm`). Rows are independent, so
//! tasks own fixed blocks of ROWS rows. The parameter gradients dw, db sum over rows: each block accumulates its
//! own partial sums (rows in order), and the partials are added into dw, db block by block, in block order.

use super::math;
use super::simd::multiversion;
use crate::config::NormKind;
use rayon::prelude::*;

/// A task's index and its chunks of three outputs, as `zip` nests them.
type Chunk3<'a> = (usize, (&'a mut [f32], (&'a mut [f32], &'a mut [f32])));

/// Rows per task.
const ROWS: usize = 32;

#[allow(clippy::too_many_arguments)]
pub fn norm_forward(
    kind: NormKind,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    c: usize,
    parallel: bool,
) {
    let n = inp.len() / c;
    let w = &w[..c];
    let task = |(blk, (o, (mu, rs))): Chunk3| forward_rows(kind, o, mu, rs, &inp[blk * ROWS * c..], w, b, eps, c);
    let (out, mean, rstd) = (&mut out[..n * c], &mut mean[..n], &mut rstd[..n]);
    if parallel {
        out.par_chunks_mut(ROWS * c)
            .zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))
            .enumerate()
            .for_each(task);
    } else {
        out.chunks_mut(ROWS * c).zip(mean.chunks_mut(ROWS).zip(rstd.chunks_mut(ROWS))).enumerate().for_each(task);
    }
}

/// dinp += ∂L/∂inp; dw, db += per-block partials in block order.
#[allow(clippy::too_many_arguments)]
pub fn norm_backward(
    kind: NormKind,
    dinp: &mut [f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
    parallel: bool,
) {
    let n = inp.len() / c;
    let w = &w[..c];
    // Each block returns its partial [dw (C) | db (C)].
    let task = |(blk, di): (usize, &mut [f32])| {
        let r0 = blk * ROWS;
        let mut part = vec![0.0f32; 2 * c];
        backward_rows(kind, di, &mut part, &dout[r0 * c..], &inp[r0 * c..], w, &mean[r0..], &rstd[r0..], c);
        part
    };
    let dinp = &mut dinp[..n * c];
    let parts: Vec<Vec<f32>> = if parallel {
        dinp.par_chunks_mut(ROWS * c).enumerate().map(task).collect()
    } else {
        dinp.chunks_mut(ROWS * c).enumerate().map(task).collect()
    };
    let dw = &mut dw[..c];
    let mut db = db.map(|db| &mut db[..c]);
    for part in &parts {
        let (pw, pb) = part.split_at(c);
        dw.iter_mut().zip(pw).for_each(|(d, p)| *d += p);
        if let Some(db) = db.as_deref_mut() {
            db.iter_mut().zip(pb).for_each(|(d, p)| *d += p);
        }
    }
}

// Per-row kernels: explicit simd128 (`wasm128`) on wasm32 with simd128, the `_scalar` plain-Rust loops elsewhere.

/// o = (x − μ)·r·w [+ b] over one row.
#[inline(always)]
fn normalize_row(o: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, mu: f32, rs: f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::normalize_row(o, x, w, b, mu, rs)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        normalize_row_scalar(o, x, w, b, mu, rs)
    }
}

#[inline(always)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn normalize_row_scalar(o: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, mu: f32, rs: f32) {
    match b {
        Some(b) => {
            for (((o, &v), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                *o = (v - mu) * rs * w + b;
            }
        }
        None => {
            for ((o, &v), &w) in o.iter_mut().zip(x).zip(w) {
                *o = (v - mu) * rs * w;
            }
        }
    }
}

/// (Σ g, Σ g·x̂) over a row, g = dout·w, x̂ = (x − μ)·r, with LANES partial sums.
#[inline(always)]
fn row_sums(d: &[f32], w: &[f32], x: &[f32], mu: f32, rs: f32) -> (f32, f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::norm_row_sums(d, w, x, mu, rs)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        row_sums_scalar(d, w, x, mu, rs)
    }
}

#[inline(always)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn row_sums_scalar(d: &[f32], w: &[f32], x: &[f32], mu: f32, rs: f32) -> (f32, f32) {
    const L: usize = math::LANES;
    let (mut ag, mut agx) = ([0.0f32; L], [0.0f32; L]);
    let (mut cd, mut cw, mut cx) = (d.chunks_exact(L), w.chunks_exact(L), x.chunks_exact(L));
    for ((d, w), x) in (&mut cd).zip(&mut cw).zip(&mut cx) {
        for l in 0..L {
            let g = d[l] * w[l];
            ag[l] += g;
            agx[l] += g * ((x[l] - mu) * rs);
        }
    }
    for (l, ((d, w), x)) in cd.remainder().iter().zip(cw.remainder()).zip(cx.remainder()).enumerate() {
        let g = d * w;
        ag[l] += g;
        agx[l] += g * ((x - mu) * rs);
    }
    (math::hsum(&ag), math::hsum(&agx))
}

/// One row of the backward, given its (Σg/C, Σg·x̂/C) as g_mean, gx_mean: di += r·(d·w − g_mean − x̂·gx_mean),
/// pw += d·x̂, pb += d.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_row(
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
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::norm_backward_row(di, pw, pb, d, w, x, mu, rs, g_mean, gx_mean)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        backward_row_scalar(di, pw, pb, d, w, x, mu, rs, g_mean, gx_mean)
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn backward_row_scalar(
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
    for ((((di, &d), &w), &x), (pw, pb)) in di.iter_mut().zip(d).zip(w).zip(x).zip(pw.iter_mut().zip(pb.iter_mut())) {
        let xhat = (x - mu) * rs;
        *di += rs * (d * w - g_mean - xhat * gx_mean);
        *pw += d * xhat;
        *pb += d;
    }
}

multiversion! {
    /// Rows of the forward: o (rows, C), mu, rs (rows) from x (rows, C).
    fn forward_rows(kind: NormKind, o: &mut [f32], mu: &mut [f32], rs: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, c: usize) {
        let inv_c = 1.0 / c as f32;
        for ((o, x), (mu, rs)) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(mu.iter_mut().zip(rs.iter_mut())) {
            let m = match kind {
                NormKind::Layernorm => math::sum(x) * inv_c,
                NormKind::Rmsnorm => 0.0,
            };
            let var = math::sum_sq_dev(x, m) * inv_c;
            let r = 1.0 / (var + eps).sqrt();
            (*mu, *rs) = (m, r);
            normalize_row(o, x, w, b.map(|b| &b[..c]), m, r);
        }
    }
}

multiversion! {
    /// Rows of the backward: di (rows, C) +=; part = [dw | db] partial sums over these rows.
    fn backward_rows(kind: NormKind, di: &mut [f32], part: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], mean: &[f32], rstd: &[f32], c: usize) {
        let inv_c = 1.0 / c as f32;
        let (pw, pb) = part.split_at_mut(c);
        for (r, ((di, d), x)) in di.chunks_exact_mut(c).zip(dout.chunks_exact(c)).zip(x.chunks_exact(c)).enumerate() {
            let (mu, rs) = (mean[r], rstd[r]);
            let (sg, sgx) = row_sums(d, w, x, mu, rs);
            let g_mean = match kind {
                NormKind::Layernorm => sg * inv_c,
                NormKind::Rmsnorm => 0.0,
            };
            let gx_mean = sgx * inv_c;
            backward_row(di, pw, pb, d, w, x, mu, rs, g_mean, gx_mean);
        }
    }
}
