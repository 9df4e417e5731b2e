//! Portable matmul: plain Rust, cache-blocked, written so LLVM autovectorises it. The browser build uses it, with
//! the micro-kernel in explicit simd128 (`wasm128::micro`) when built with simd128; natively the backend calls the
//! `gemm` crate instead, but this kernel is compiled and tested there too.
//!
//! C (m×n, contiguous) += A (m×k) · B (k×n), where A and B are strided views, so one kernel serves
//! out = x·wᵀ, dx = dy·w and dw = dyᵀ·x without copies. Blocking after Goto & van de Geijn (2008):
//! B is packed once into NR-wide column panels (k × NR each, zero-padded); for every KC-deep slab, an MR-row strip
//! of A (read in place when its rows are contiguous, else packed kc × MR) is multiplied into every panel by a
//! micro-kernel that keeps an MR×NR tile of C in registers (MR·NR/4 = 8 simd128 registers). Rows of C are split
//! into fixed ROW_BLOCK blocks, one rayon task each: each task owns its rows, and every element of C sums its k
//! terms in the same order whatever the thread count.

use super::pointwise::Epilogue;
use crate::config::Activation;
use rayon::prelude::*;

/// Rows of the register tile.
pub const MR: usize = 4;
/// Columns of the register tile: contiguous lanes of the inner loop.
pub const NR: usize = 8;
/// Depth of one packed slab (an MR×KC strip of A is 4 KiB, a KC×NR panel of B 8 KiB: both stay in L1).
const KC: usize = 256;
/// Rows of C per task (a multiple of MR). 16 rather than 32: in the browser's threaded build the last task of each
/// matmul leaves the other thread waiting, and halving the task halves that wait; 8 rows gain nothing more, and the
/// single build is the same either way (the A/B runs: docs/BENCHMARKS.md, `ROW_BLOCK`).
pub const ROW_BLOCK: usize = 16;

/// A read-only strided matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// C (m×n) += A (m×k) · B (k×n). `parallel` only chooses the executor: the split, and so the result, is fixed.
#[allow(clippy::too_many_arguments)]
pub fn gemm_acc(c: &mut [f32], a: Strided, b: Strided, m: usize, n: usize, k: usize, parallel: bool) {
    gemm_init(c, None, a, b, m, n, k, parallel)
}

/// `gemm_acc`, where `init` (n values), when given, first replaces every row of C (set by the task that owns the
/// row, so out = bias + x·wᵀ needs no separate pass over out).
#[allow(clippy::too_many_arguments)]
pub fn gemm_init(c: &mut [f32], init: Option<&[f32]>, a: Strided, b: Strided, m: usize, n: usize, k: usize, parallel: bool) {
    gemm_epilogue(c, init, a, b, m, n, k, Epilogue::None, parallel)
}

/// `gemm_init`, then `epi` run by each task on its ROW_BLOCK rows of C as soon as they are final (the FFN's
/// activation, `pointwise::Epilogue`): ROW_BLOCK × n floats, still in L1 or L2, instead of a second pass over C.
#[allow(clippy::too_many_arguments)]
pub fn gemm_epilogue(c: &mut [f32], init: Option<&[f32]>, a: Strided, b: Strided, m: usize, n: usize, k: usize, epi: Epilogue, parallel: bool) {
    if m == 0 || n == 0 {
        return;
    }
    let c = &mut c[..m * n];
    let epis = epi.split(ROW_BLOCK, m, n);
    let fill = |rows: &mut [f32]| {
        if let Some(init) = init {
            rows.chunks_exact_mut(n).for_each(|row| super::math::copy(row, &init[..n]));
        }
    };
    if k == 0 {
        for (rows, epi) in c.chunks_mut(ROW_BLOCK * n).zip(epis) {
            fill(rows);
            epi.apply(rows, n);
        }
        return;
    }
    if m < MR && a.cs == 1 && b.rs == 1 {
        // A row or two against B = Wᵀ (token-by-token generation): dot products along contiguous rows of W.
        // Packing B would cost as much as the product itself. m < MR ≤ ROW_BLOCK: one block, one epilogue.
        fill(c);
        gemv_rows(c, a, b, m, n, k, parallel);
        for epi in epis {
            epi.apply(c, n);
        }
        return;
    }
    let bp = pack_b(b, k, n, parallel);
    let task = |(blk, (rows, epi)): (usize, (&mut [f32], Epilogue))| {
        fill(rows);
        gemm_rows(rows, a, blk * ROW_BLOCK, &bp, n, k);
        epi.apply(rows, n);
    };
    if parallel {
        c.par_chunks_mut(ROW_BLOCK * n).zip(epis).enumerate().for_each(task);
    } else {
        c.chunks_mut(ROW_BLOCK * n).zip(epis).enumerate().for_each(task);
    }
}

/// C (m×n) += A (m×k) · B (k×n) for m < MR, with A's rows and B's columns contiguous: every element one `dot`.
/// Columns are split into fixed blocks of GEMV_COLS (one task each) when parallel.
#[allow(clippy::too_many_arguments)]
fn gemv_rows(c: &mut [f32], a: Strided, b: Strided, m: usize, n: usize, k: usize, parallel: bool) {
    const GEMV_COLS: usize = 64;
    for i in 0..m {
        let x = &a.data[i * a.rs..][..k];
        let row = &mut c[i * n..(i + 1) * n];
        let task = |(blk, out): (usize, &mut [f32])| {
            for (jj, y) in out.iter_mut().enumerate() {
                *y += super::math::dot(x, &b.data[(blk * GEMV_COLS + jj) * b.cs..][..k]);
            }
        };
        if parallel {
            row.par_chunks_mut(GEMV_COLS).enumerate().for_each(task);
        } else {
            row.chunks_mut(GEMV_COLS).enumerate().for_each(task);
        }
    }
}

/// B (k×n) as ceil(n/NR) panels, each k rows of NR contiguous columns, zero beyond n. Panels are packed in
/// parallel (each task owns one), reading B along its contiguous direction.
fn pack_b(b: Strided, k: usize, n: usize, parallel: bool) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut bp = vec![0.0f32; panels * k * NR];
    let pack = |(p, panel): (usize, &mut [f32])| {
        let j0 = p * NR;
        let w = NR.min(n - j0);
        if b.cs == 1 {
            // Rows of B are contiguous: copy w floats per k (NR of them a fixed-size copy: two vector moves, where
            // a variable-length one is a `memory.copy`, a call into V8's runtime, see `math::copy`).
            for (kk, row) in panel.as_chunks_mut::<NR>().0.iter_mut().enumerate() {
                let src = &b.data[kk * b.rs + j0..];
                if w == NR {
                    *row = *src.first_chunk::<NR>().unwrap();
                } else {
                    super::math::copy(&mut row[..w], &src[..w]);
                }
            }
        } else {
            // Columns of B are contiguous (B = Wᵀ): walk each column, scattering into the panel.
            for jj in 0..w {
                let col = &b.data[(j0 + jj) * b.cs..];
                for (kk, x) in panel.chunks_exact_mut(NR).enumerate() {
                    x[jj] = col[kk * b.rs];
                }
            }
        }
    };
    if parallel {
        bp.par_chunks_exact_mut(k * NR).enumerate().for_each(pack);
    } else {
        bp.chunks_exact_mut(k * NR).enumerate().for_each(pack);
    }
    bp
}

/// The rows r0.. of C held in `c` (len rows·n) += A[r0.., :] · B. Full MR-row strips of row-major A read it in
/// place; a last partial strip (zero-padded) and strips of a column-read A are packed first.
fn gemm_rows(c: &mut [f32], a: Strided, r0: usize, bp: &[f32], n: usize, k: usize) {
    let rows = c.len() / n;
    let mut ap = [0.0f32; KC * MR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for i0 in (0..rows).step_by(MR) {
            let h = MR.min(rows - i0);
            let a_tile = &a.data[(r0 + i0) * a.rs + k0 * a.cs..];
            // A strip is packed when it is partial, and when A is read down its columns (dw = dyᵀ·x, a new
            // cache line per k): packed, it is gathered once per slab rather than once per panel, which makes dw
            // faster in Chromium at W1's shapes (docs/BENCHMARKS.md).
            let pack_a = h < MR || a.cs != 1;
            if pack_a && h == MR && a.rs == 1 {
                // The strip's MR values at each k are contiguous: one copy per k.
                for (kk, ak) in ap[..kc * MR].chunks_exact_mut(MR).enumerate() {
                    ak.copy_from_slice(&a_tile[kk * a.cs..][..MR]);
                }
            } else if pack_a {
                for kk in 0..kc {
                    for r in 0..MR {
                        ap[kk * MR + r] = if r < h { a_tile[r * a.rs + kk * a.cs] } else { 0.0 };
                    }
                }
            }
            for (p, panel) in bp.chunks_exact(k * NR).enumerate() {
                let b_slab = &panel[k0 * NR..(k0 + kc) * NR];
                let tile = if !pack_a {
                    micro_strided(a_tile, a.rs, a.cs, kc, b_slab)
                } else {
                    micro(&ap[..kc * MR], b_slab)
                };
                let j0 = p * NR;
                let w = NR.min(n - j0);
                for (r, trow) in tile.iter().enumerate().take(h) {
                    let crow = &mut c[(i0 + r) * n + j0..][..w];
                    for (x, t) in crow.iter_mut().zip(trow) {
                        *x += t;
                    }
                }
            }
        }
    }
}

/// `micro` with A read in place: row r, depth kk at a[r·rs + kk·cs]. `wasm128::micro_strided` on wasm32 with
/// simd128, plain Rust elsewhere; the same sums in the same order as `micro` on a packed strip.
#[inline(always)]
fn micro_strided(a: &[f32], rs: usize, cs: usize, kc: usize, b: &[f32]) -> [[f32; NR]; MR] {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::micro_strided(a, rs, cs, kc, b)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let mut acc = [[0.0f32; NR]; MR];
        for (kk, bv) in b.chunks_exact(NR).take(kc).enumerate() {
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = a[r * rs + kk * cs];
                for l in 0..NR {
                    acc_r[l] += x * bv[l];
                }
            }
        }
        acc
    }
}

/// The MR×NR register tile Σ_kk a[kk]ᵀ·b[kk] over one packed slab: `wasm128::micro` on wasm32 with simd128,
/// `micro_scalar` elsewhere.
#[inline(always)]
fn micro(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        super::wasm128::micro(a, b)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        micro_scalar(a, b)
    }
}

/// `micro` in plain Rust: a is kc × MR (the MR rows of A for each k), b is kc × NR; every element of the tile sums
/// its kc products in k order.
#[inline(always)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn micro_scalar(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (av, bv) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            for l in 0..NR {
                acc[r][l] += av[r] * bv[l];
            }
        }
    }
    acc
}

/// out (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC)
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    let out = &mut out[..n * oc];
    let zero = vec![0.0f32; oc];
    let a = Strided { data: inp, rs: c, cs: 1 };
    let wt = Strided { data: w, rs: 1, cs: c };
    gemm_init(out, Some(b.map_or(&zero[..], |b| &b[..oc])), a, wt, n, oc, c, parallel);
}

/// pre (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC) and out (N,F) = act(pre), the activation applied by each task to
/// its rows of pre as they are finished (OC = F, or 2F gated).
#[allow(clippy::too_many_arguments)]
pub fn matmul_act_forward(
    act: Activation,
    pre: &mut [f32],
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    let zero = vec![0.0f32; oc];
    let a = Strided { data: inp, rs: c, cs: 1 };
    let wt = Strided { data: w, rs: 1, cs: c };
    let init = Some(b.map_or(&zero[..], |b| &b[..oc]));
    gemm_epilogue(pre, init, a, wt, n, oc, c, Epilogue::Act { act, out }, parallel);
}

/// dpre (N,C) = (dout (N,OC) · w (OC,C)) ⊙ act'(pre), written (not added), a plain activation's; post = act(pre).
#[allow(clippy::too_many_arguments)]
pub fn matmul_act_backward_input(
    act: Activation,
    dpre: &mut [f32],
    dout: &[f32],
    w: &[f32],
    pre: &[f32],
    post: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    let zero = vec![0.0f32; c];
    let a = Strided { data: dout, rs: oc, cs: 1 };
    let b = Strided { data: w, rs: c, cs: 1 };
    gemm_epilogue(dpre, Some(&zero), a, b, n, c, oc, Epilogue::ActGrad { act, pre, post }, parallel);
}

/// dinp (N,C) += dout (N,OC) · w (OC,C)
pub fn matmul_backward_input(dinp: &mut [f32], dout: &[f32], w: &[f32], n: usize, c: usize, oc: usize, parallel: bool) {
    let a = Strided { data: dout, rs: oc, cs: 1 };
    let b = Strided { data: w, rs: c, cs: 1 };
    gemm_acc(dinp, a, b, n, c, oc, parallel);
}

/// dw (OC,C) += dout (N,OC)ᵀ · inp (N,C)
pub fn matmul_backward_weight(
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    let a = Strided { data: dout, rs: 1, cs: oc };
    let b = Strided { data: inp, rs: c, cs: 1 };
    gemm_acc(dw, a, b, oc, c, n, parallel);
}
