//! Attention as FlashAttention-2 (Dao 2023) on the CPU: queries in tiles of TQ rows, keys in blocks of KB, an
//! online softmax per row (running max m and sum l; a new block rescales the partial output by e^(m_old − m_new)),
//! so no (T,S) score matrix is ever stored. Masks (causal with q_offset, bidirectional, cross S ≠ T), GQA/MQA,
//! ALiBi and T5 relative biases as in the reference `ops::attention`, whose derivation the backward follows:
//!   p = exp(s − lse);  dv_j += p_j·dout_i;  ds_j = p_j·(dout_i·v_j − dout_i·out_i);
//!   dq_i += scale·Σ_j ds_j k_j;  dk_j += scale·ds_j q_i;  dtable[bucket(i,j), h] += ds_j.
//! Within a (tile, block) pair every product is a small matrix product (`tile::gemm`): S = Q·Kᵀ, O += P·V,
//! dP = dO·Vᵀ, dQ += dS·K, dV += Pᵀ·dO, dK += dSᵀ·Q, with Kᵀ and Vᵀ transposed once per kv head.
//!
//! q, k and v are read at their `HeadLayout`s (rows of HS floats at a row stride: straight from the qkv
//! projection, or contiguous heads of a KV cache), and dq, dk, dv are added at the same layouts.
//!
//! Parallel split (every task owns what it writes, so no result depends on the thread count):
//! - forward: one task per (batch, query tile), all heads: it owns out[b, tile, :]; its lse values come back
//!   with it and are scattered in task order.
//! - backward: one task per (batch, kv head): it sums dk, dv of that kv head and dq of the query heads that share
//!   it in buffers of its own (`GroupGrads`). Those rows are interleaved with other tasks' rows in the gradient
//!   buffer (dqkv's columns), so no task can hold them as a `&mut` slice: when every task is done, their sums are
//!   added at the layouts one task after another, as is each task's share of the relative-bias table gradient.
//!   (Adding them from the tasks through atomics cost ≈ 10 ms of W1's step in the browser, where every wasm
//!   atomic store is sequentially consistent.)

use super::math;
use super::simd::multiversion;
use super::tile::{self, Rows};
use crate::backend::{AttnBias, AttnGrads, AttnShape, HeadLayout};
use rayon::prelude::*;

/// Query rows per tile.
const TQ: usize = 16;
/// Keys per block.
const KB: usize = 64;

/// Everything a tile needs, shared read-only by all tasks.
struct Inputs<'a> {
    sh: &'a AttnShape,
    bias: AttnBias<'a>,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl Inputs<'_> {
    /// Query rows i0.. of head h of batch b.
    #[inline(always)]
    fn q_rows(&self, b: usize, h: usize, i0: usize) -> Rows<'_> {
        Rows { data: &self.q[self.sh.q.at(b, h, i0)..], ld: self.sh.q.row }
    }

    /// Key (or value) rows j0.. of kv head g of batch b, from x at layout `lay`.
    #[inline(always)]
    fn kv_rows<'s>(&self, x: &'s [f32], lay: HeadLayout, b: usize, g: usize, j0: usize) -> Rows<'s> {
        Rows { data: &x[lay.at(b, g, j0)..], ld: lay.row }
    }

    /// Keys a query tile at rows i0..i0+rows may see: all S, or up to its last query's position when causal.
    #[inline(always)]
    fn key_end(&self, i0: usize, rows: usize) -> usize {
        let sh = self.sh;
        if sh.causal {
            sh.s.min(sh.q_offset + i0 + rows)
        } else {
            sh.s
        }
    }

    /// Turns q_i·k_j (keys j0..j0+srow.len()) of query i (relative to this call), head h, into the score:
    /// scale·q_i·k_j + bias, −∞ where masked.
    #[inline(always)]
    fn finish_scores(&self, srow: &mut [f32], h: usize, i: usize, j0: usize) {
        let sh = self.sh;
        match self.bias {
            AttnBias::None => math::scale(srow, sh.scale),
            AttnBias::Alibi { slopes } => {
                let (slope, pos) = (slopes[h], (sh.q_offset + i) as f32);
                for (jj, x) in srow.iter_mut().enumerate() {
                    let d = pos - (j0 + jj) as f32;
                    *x = sh.scale * *x + -slope * if sh.causal { d } else { d.abs() };
                }
            }
            AttnBias::Relative { table, bucket } => {
                let brow = &bucket[i * sh.s + j0..][..srow.len()];
                for (x, &bk) in srow.iter_mut().zip(brow) {
                    *x = sh.scale * *x + table[bk as usize * sh.nh + h];
                }
            }
        }
        let valid = self.unmasked(i, j0, srow.len());
        srow[valid..].fill(f32::NEG_INFINITY);
    }

    /// How many of the keys j0..j0+kb query i may see (they are a prefix).
    #[inline(always)]
    fn unmasked(&self, i: usize, j0: usize, kb: usize) -> usize {
        if self.sh.causal {
            (self.sh.q_offset + i + 1).saturating_sub(j0).min(kb)
        } else {
            kb
        }
    }
}

/// t (cols × rows) = x (rows × cols, row r at x[r·ld])ᵀ, by 16×16 blocks held in a local array (whole-row copies
/// in and out, no per-element bounds checks); partial blocks at the edges element by element.
fn transpose_into(t: &mut [f32], x: &[f32], ld: usize, rows: usize, cols: usize) {
    const BLK: usize = 16;
    for r0 in (0..rows).step_by(BLK) {
        let rb = BLK.min(rows - r0);
        for c0 in (0..cols).step_by(BLK) {
            let cb = BLK.min(cols - c0);
            if rb == BLK && cb == BLK {
                let mut blk = [[0.0f32; BLK]; BLK];
                for (r, row) in blk.iter_mut().enumerate() {
                    *row = x[(r0 + r) * ld + c0..][..BLK].try_into().unwrap();
                }
                for c in 0..BLK {
                    let col: [f32; BLK] = std::array::from_fn(|r| blk[r][c]);
                    t[(c0 + c) * rows + r0..][..BLK].copy_from_slice(&col);
                }
            } else {
                for c in c0..c0 + cb {
                    for (r, v) in t[c * rows + r0..][..rb].iter_mut().enumerate() {
                        *v = x[(r0 + r) * ld + c];
                    }
                }
            }
        }
    }
}

/// (rows × cols, row r at x[r·ld]) → (cols × rows)
pub(super) fn transpose(x: &[f32], ld: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    transpose_into(&mut t, x, ld, rows, cols);
    t
}

#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: AttnBias,
    sh: &AttnShape,
    parallel: bool,
) {
    let (t, c) = (sh.t, sh.nh * sh.hs);
    if t == 0 || sh.b == 0 {
        return;
    }
    let inp = Inputs { sh, bias, q, k, v };
    // Kᵀ of every (batch, kv head), (HS × S) each, made once and shared by all query tiles.
    let (s, hs) = (sh.s, sh.hs);
    let mut kt = vec![0.0f32; sh.b * sh.nkv * hs * s];
    let tr = |(bg, kt): (usize, &mut [f32])| transpose_into(kt, &k[sh.k.at(bg / sh.nkv, bg % sh.nkv, 0)..], sh.k.row, s, hs);
    if parallel {
        kt.par_chunks_mut((hs * s).max(1)).enumerate().for_each(tr);
    } else {
        kt.chunks_mut((hs * s).max(1)).enumerate().for_each(tr);
    }
    let tiles: Vec<(usize, usize, &mut [f32])> = out[..sh.b * t * c]
        .chunks_mut(t * c)
        .enumerate()
        .flat_map(|(b, ob)| ob.chunks_mut(TQ * c).enumerate().map(move |(ti, o)| (b, ti * TQ, o)))
        .collect();
    let run = |(b, i0, o): (usize, usize, &mut [f32])| forward_tile(o, &inp, &kt, b, i0);
    let tile_lse: Vec<Vec<f32>> =
        if parallel { tiles.into_par_iter().map(run).collect() } else { tiles.into_iter().map(run).collect() };
    // Scatter each tile's (NH × rows) log-sum-exps to lse (B,NH,T).
    let tiles_per_b = t.div_ceil(TQ);
    for (task, tl) in tile_lse.iter().enumerate() {
        let (b, i0) = (task / tiles_per_b, task % tiles_per_b * TQ);
        let rows = tl.len() / sh.nh;
        for (h, l) in tl.chunks_exact(rows).enumerate() {
            math::copy(&mut lse[(b * sh.nh + h) * t + i0..][..rows], l);
        }
    }
}

multiversion! {
    /// Output rows i0.. of batch b, all heads, into o (rows × C); returns their lse (NH × rows). kt_all holds Kᵀ
    /// of every (batch, kv head).
    fn forward_tile(o: &mut [f32], inp: &Inputs, kt_all: &[f32], b: usize, i0: usize) -> Vec<f32> {
        let sh = inp.sh;
        let (s, hs, c) = (sh.s, sh.hs, sh.nh * sh.hs);
        let rows = o.len() / c;
        let kend = inp.key_end(i0, rows);
        let mut lse = vec![f32::NEG_INFINITY; sh.nh * rows];
        let mut p = [0.0f32; TQ * KB];
        let (mut m, mut l) = ([f32::NEG_INFINITY; TQ], [0.0f32; TQ]);
        for h in 0..sh.nh {
            let g = h / sh.group();
            let kt = &kt_all[(b * sh.nkv + g) * hs * s..][..hs * s];
            let q = inp.q_rows(b, h, i0);
            let oh = &mut o[h * hs..];
            m.fill(f32::NEG_INFINITY);
            l.fill(0.0);
            for r in 0..rows {
                math::fill(&mut oh[r * c..][..hs], 0.0);
            }
            for j0 in (0..kend).step_by(KB) {
                let kb = KB.min(kend - j0);
                // p = Q·Kᵀ for the block, then per row: scores, the online softmax step, the rescaled output.
                tile::gemm(&mut p, KB, false, q, Rows { data: &kt[j0..], ld: s }, rows, kb, hs);
                for r in 0..rows {
                    let prow = &mut p[r * KB..][..kb];
                    inp.finish_scores(prow, h, i0 + r, j0);
                    let m_new = m[r].max(math::max(prow));
                    // A row with every key so far masked keeps m = −∞; exponentiate against 0 so p = 0, not NaN.
                    let m_use = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
                    let corr = math::exp(m[r] - m_use);
                    math::exp_sub_in_place(prow, m_use);
                    l[r] = l[r] * corr + math::sum(prow);
                    m[r] = m_new;
                    if corr != 1.0 {
                        math::scale(&mut oh[r * c..][..hs], corr);
                    }
                }
                tile::gemm(oh, c, true, Rows { data: &p, ld: KB }, inp.kv_rows(inp.v, sh.v, b, g, j0), rows, hs, kb);
            }
            for r in 0..rows {
                if l[r] > 0.0 {
                    math::scale(&mut oh[r * c..][..hs], 1.0 / l[r]);
                    lse[h * rows + r] = m[r] + l[r].ln();
                }
            }
        }
        lse
    }
}

/// x[at + r·ld + d] += src[r·HS + d] for each row r of src (rows × HS).
pub(super) fn add_rows(x: &mut [f32], at: usize, ld: usize, src: &[f32], hs: usize) {
    for (r, row) in src.chunks_exact(hs).enumerate() {
        for (a, &v) in x[at + r * ld..][..hs].iter_mut().zip(row) {
            *a += v;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    grads: AttnGrads<&mut [f32]>,
    dtable: Option<&mut [f32]>,
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    bias: AttnBias,
    sh: &AttnShape,
    parallel: bool,
) -> Result<(), String> {
    let (t, s) = (sh.t, sh.s);
    if t == 0 || s == 0 || sh.b == 0 {
        return Ok(());
    }
    let (dq, mut dkv) = match grads {
        AttnGrads::Qkv(all) => (all, None),
        AttnGrads::QAndKv { dq, dkv } => (dq, Some(dkv)),
    };
    let kv_len = dkv.as_ref().map_or(dq.len(), |x| x.len());
    if sh.q_end() > dq.len() || sh.k_end().max(sh.v_end()) > kv_len {
        return Err(format!(
            "attention gradients: the layouts need {} (dq) and {} (dk, dv) elements, the buffers hold {} and {kv_len}",
            sh.q_end(),
            sh.k_end().max(sh.v_end()),
            dq.len()
        ));
    }
    let inp = Inputs { sh, bias, q, k, v };
    let saved = Saved { dout, out, lse, want_dtable: dtable.is_some() };
    let run = |bg: usize| backward_group(&inp, &saved, bg / sh.nkv, bg % sh.nkv);
    let groups = sh.b * sh.nkv;
    let sums: Vec<GroupGrads> = if parallel { (0..groups).into_par_iter().map(run).collect() } else { (0..groups).map(run).collect() };
    // Each task's sums, added at the layouts in task order.
    for (bg, gs) in sums.iter().enumerate() {
        let (b, g) = (bg / sh.nkv, bg % sh.nkv);
        for (hl, dq_h) in gs.dq.chunks_exact(t * sh.hs).enumerate() {
            add_rows(dq, sh.q.at(b, g * sh.group() + hl, 0), sh.q.row, dq_h, sh.hs);
        }
        let dkv: &mut [f32] = match dkv.as_deref_mut() {
            Some(x) => x,
            None => &mut *dq,
        };
        add_rows(dkv, sh.k.at(b, g, 0), sh.k.row, &gs.dk, sh.hs);
        add_rows(dkv, sh.v.at(b, g, 0), sh.v.row, &gs.dv, sh.hs);
    }
    if let Some(dt) = dtable {
        for part in sums.iter().filter_map(|gs| gs.dtab.as_ref()) {
            for (d, p) in dt.iter_mut().zip(part) {
                *d += p;
            }
        }
    }
    Ok(())
}

/// One backward task's sums: dq of the kv head's query heads (group × T × HS), its dk and dv (S × HS each), and
/// its share of the relative-bias table gradient (buckets × NH) when there is one.
struct GroupGrads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dtab: Option<Vec<f32>>,
}

/// The forward's saved results and the incoming gradient.
struct Saved<'a> {
    dout: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
    want_dtable: bool,
}

multiversion! {
    /// Gradients of kv head g of batch b: dq of its query heads (T × HS each), dk, dv (S × HS), and this task's
    /// share of dtable (buckets × NH) when there is a relative bias, summed in buffers of its own.
    fn backward_group(inp: &Inputs, sv: &Saved, b: usize, g: usize) -> GroupGrads {
        let sh = inp.sh;
        let (t, s, hs, c) = (sh.t, sh.s, sh.hs, sh.nh * sh.hs);
        let (kt, vt) = (transpose(&inp.k[sh.k.at(b, g, 0)..], sh.k.row, s, hs), transpose(&inp.v[sh.v.at(b, g, 0)..], sh.v.row, s, hs));
        let mut dtab = match inp.bias {
            AttnBias::Relative { table, .. } if sv.want_dtable => Some(vec![0.0f32; table.len()]),
            _ => None,
        };
        // Per tile and block: p (rows × KB), ds (rows × KB); this tile's dq (rows × HS); the kv head's dk, dv.
        let (mut p, mut ds) = ([0.0f32; TQ * KB], [0.0f32; TQ * KB]);
        let (mut dd, mut lr) = ([0.0f32; TQ], [0.0f32; TQ]);
        let mut dq_g = vec![0.0f32; sh.group() * t * hs];
        let (mut dk_g, mut dv_g) = (vec![0.0f32; s * hs], vec![0.0f32; s * hs]);
        for hl in 0..sh.group() {
            let h = g * sh.group() + hl;
            for i0 in (0..t).step_by(TQ) {
                let rows = TQ.min(t - i0);
                let q = inp.q_rows(b, h, i0);
                // dout rows of this tile and head: row r at dout_t[r·C ..][..HS].
                let dout_t = Rows { data: &sv.dout[(b * t + i0) * c + h * hs..], ld: c };
                for r in 0..rows {
                    let o_row = &sv.out[(b * t + i0 + r) * c + h * hs..][..hs];
                    dd[r] = math::dot(&dout_t.data[r * c..][..hs], o_row);
                    lr[r] = sv.lse[(b * sh.nh + h) * t + i0 + r];
                }
                let dq_t = &mut dq_g[(hl * t + i0) * hs..][..rows * hs];
                for j0 in (0..inp.key_end(i0, rows)).step_by(KB) {
                    let kb = KB.min(inp.key_end(i0, rows) - j0);
                    tile::gemm(&mut p, KB, false, q, Rows { data: &kt[j0..], ld: s }, rows, kb, hs);
                    tile::gemm(&mut ds, KB, false, dout_t, Rows { data: &vt[j0..], ld: s }, rows, kb, hs);
                    for r in 0..rows {
                        let i = i0 + r;
                        let (prow, dsrow) = (&mut p[r * KB..][..kb], &mut ds[r * KB..][..kb]);
                        inp.finish_scores(prow, h, i, j0);
                        math::exp_sub_in_place(prow, lr[r]);
                        math::dsoftmax(dsrow, prow, dd[r]);
                        if let (Some(dt), AttnBias::Relative { bucket, .. }) = (dtab.as_mut(), inp.bias) {
                            for (jj, &x) in dsrow[..inp.unmasked(i, j0, kb)].iter().enumerate() {
                                dt[bucket[i * s + j0 + jj] as usize * sh.nh + h] += x;
                            }
                        }
                        math::scale(dsrow, sh.scale);
                    }
                    let (p_, ds_) = (Rows { data: &p, ld: KB }, Rows { data: &ds, ld: KB });
                    tile::gemm(dq_t, hs, true, ds_, inp.kv_rows(inp.k, sh.k, b, g, j0), rows, hs, kb);
                    // dV += Pᵀ·dO, dK += dSᵀ·Q: P and dS are (rows × kb), read as the transposes of (kb × rows).
                    tile::gemm_tn(&mut dv_g[j0 * hs..], hs, true, p_, dout_t, kb, hs, rows);
                    tile::gemm_tn(&mut dk_g[j0 * hs..], hs, true, ds_, q, kb, hs, rows);
                }
            }
        }
        GroupGrads { dq: dq_g, dk: dk_g, dv: dv_g, dtab }
    }
}
