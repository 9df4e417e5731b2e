//! Naive (materialising) attention on the CPU: the textbook counterpart of the fused FlashAttention-2 kernels in
//! `attention.rs`, as `backend::gpu`'s `attention_naive.rs` is on the GPU. It is no op of the `Backend` trait:
//! training never calls it; the attention-cost sweep (`crate::attention_cost`) and the tests do. It exists to show
//! what FlashAttention (Dao et al. 2022) avoids: two (B,NH,T,S) matrices in memory.
//!
//! Forward, for each batch b and query head h (g = h / (NH/NKV) its kv head, so GQA and MQA share K, V):
//!   S = scale·Q_h·K_gᵀ (T×S), −∞ where the mask hides key j from query i (causal: j > q_offset + i)
//!   P = softmax of each row of S, in place: `probs` (B,NH,T,S) holds P afterwards and keeps it for the backward
//!   O_h = P·V_g, written to out[b, :, h·HS..(h+1)·HS]
//! Backward, the softmax Jacobian written out (Vaswani et al. 2017; the same terms as `ops::attention`):
//!   dV_g += Σ_h Pᵀ·dO_h;  dP = dO_h·V_gᵀ;  dS_ij = P_ij·(dP_ij − Σ_k P_ik·dP_ik);
//!   dQ_h += scale·dS·K_g;  dK_g += scale·Σ_h dSᵀ·Q_h
//! with dP, then dS, in a second (B,NH,T,S) matrix. Same layouts (q, k, v read at `AttnShape`'s `HeadLayout`s, dq,
//! dk, dv added at them), masks (causal with q_offset, bidirectional, cross S ≠ T) and head sharing as the fused
//! op, so the same inputs give the same out, dq, dk, dv. No score bias
//! (ALiBi, T5 relative) and no lse, as on the GPU.
//!
//! Every product is a `tile::gemm` (the fused kernels' own micro-kernel), so a timing of the two paths compares
//! materialising against tiling, not two matmul qualities. The products need Kᵀ (forward) and Vᵀ (backward) as
//! contiguous rows: one transposed copy (B,NKV,HS,S) each, made per call. `attention_naive_scratch_floats` counts all of it.
//!
//! Parallel split (each task owns what it writes; no result depends on the thread count):
//! - forward: one task per (batch, head) fills its P; then one task per (batch, TQ query rows) writes those rows
//!   of out, all heads.
//! - backward: one task per (batch, head) forms its dS and dQ; then one task per (batch, kv head, KB keys) sums
//!   dK and dV of those keys over the query heads that share them. Each task sums into rows of its own; their
//!   rows interleave with other tasks' in dqkv, so they are added at their layouts after the tasks, in task order.

use super::attention::{add_rows, transpose};
use super::math;
use super::simd::multiversion;
use super::tile::{self, Rows};
use crate::backend::{AttnGrads, AttnShape, HeadLayout};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Query rows per output task (forward) and per dK/dV product (backward).
const TQ: usize = 16;
/// Keys per dK/dV task: with TQ, a gemm_tn tile of KB × TQ = 1024 floats (its limit off AVX-512 and simd128).
const KB: usize = 64;

/// Elements of each of the two (B,NH,T,S) matrices: `probs` (the forward's P) and the backward's dS.
pub fn attention_naive_probs_len(sh: &AttnShape) -> usize {
    sh.b * sh.nh * sh.t * sh.s
}

/// Floats the naive path holds beyond q, k, v, out, dout and the gradients, at its peak (the backward):
/// probs (B,NH,T,S), kept from the forward, + dS (B,NH,T,S) + Vᵀ (B,NKV,HS,S). The forward holds probs + Kᵀ, less.
/// Not counted: each running task's own gradient rows before it adds them, (T × HS) or 2·(KB × HS).
pub fn attention_naive_scratch_floats(sh: &AttnShape) -> usize {
    2 * attention_naive_probs_len(sh) + sh.b * sh.nkv * sh.hs * sh.s
}

fn need(what: &str, len: usize, n: usize) -> Result<()> {
    if len < n {
        return Err(Error::Invalid(format!("naive attention {what} has {len} elements, the op needs {n}")));
    }
    Ok(())
}

fn check(sh: &AttnShape) -> Result<()> {
    if sh.nkv == 0 || !sh.nh.is_multiple_of(sh.nkv) {
        return Err(Error::Invalid(format!("naive attention: {} query heads cannot share {} kv heads", sh.nh, sh.nkv)));
    }
    Ok(())
}

/// Runs `f` on every task, on the pool when `parallel`.
fn each<T: Send>(tasks: Vec<T>, parallel: bool, f: impl Fn(T) + Sync + Send) {
    if parallel {
        tasks.into_par_iter().for_each(f)
    } else {
        tasks.into_iter().for_each(f)
    }
}

/// `each`, collecting what each task returns, in task order.
fn each_map<T: Send, R: Send>(tasks: Vec<T>, parallel: bool, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    if parallel {
        tasks.into_par_iter().map(f).collect()
    } else {
        tasks.into_iter().map(f).collect()
    }
}

/// xᵀ of every (batch, kv head) of x (B,NKV,S,HS) at layout `lay`: (B,NKV,HS,S), contiguous.
fn transpose_heads(x: &[f32], lay: HeadLayout, sh: &AttnShape) -> Vec<f32> {
    (0..sh.b * sh.nkv).flat_map(|bg| transpose(&x[lay.at(bg / sh.nkv, bg % sh.nkv, 0)..], lay.row, sh.s, sh.hs)).collect()
}

/// Keys query i (of this call) may see: a prefix of the S keys.
#[inline(always)]
fn visible(sh: &AttnShape, i: usize) -> usize {
    if sh.causal {
        sh.s.min(sh.q_offset + i + 1)
    } else {
        sh.s
    }
}

/// out (B,T,NH·HS) = softmax(scale·q·kᵀ, masked)·v, with the probabilities left in probs (B,NH,T,S) for
/// `attention_naive_backward`. q (B,NH,T,HS), k, v (B,NKV,S,HS) at their layouts in `sh`.
pub fn attention_naive_forward(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], sh: &AttnShape) -> Result<()> {
    check(sh)?;
    let (t, s, c) = (sh.t, sh.s, sh.nh * sh.hs);
    let nq = sh.b * t * c;
    for (what, len, n) in [("out", out.len(), nq), ("probs", probs.len(), attention_naive_probs_len(sh)), ("q", q.len(), sh.q_end())] {
        need(what, len, n)?;
    }
    need("k", k.len(), sh.k_end())?;
    need("v", v.len(), sh.v_end())?;
    if sh.b == 0 || t == 0 {
        return Ok(());
    }
    if s == 0 {
        math::fill(&mut out[..nq], 0.0); // no keys: every output row is 0, as the fused op's
        return Ok(());
    }
    let par = super::attention_work(sh) >= super::PAR_FLOPS;
    let kt = transpose_heads(k, sh.k, sh);
    // P = softmax(S) of each (batch, head), in place in probs.
    let heads: Vec<(usize, &mut [f32])> = probs[..attention_naive_probs_len(sh)].chunks_mut(t * s).enumerate().collect();
    each(heads, par, |(bh, p)| probs_head(p, q, &kt, sh, bh));
    drop(kt);
    // O_h = P·V_g for TQ query rows of one batch row at a time, all heads.
    let probs = &*probs;
    let blocks: Vec<(usize, usize, &mut [f32])> = out[..sh.b * t * c]
        .chunks_mut(t * c)
        .enumerate()
        .flat_map(|(b, ob)| ob.chunks_mut(TQ * c).enumerate().map(move |(ti, o)| (b, ti * TQ, o)))
        .collect();
    each(blocks, par, |(b, i0, o)| output_rows(o, probs, v, sh, b, i0));
    Ok(())
}

/// dq (B,NH,T,HS), dk, dv (B,NKV,S,HS) += the gradients of `attention_naive_forward`, at the layouts of q, k, v,
/// into `grads`, from the probabilities it left in probs (B,NH,T,S) and dout (B,T,NH·HS). Allocates the second
/// (B,NH,T,S) matrix, dS, for the call.
#[allow(clippy::too_many_arguments)]
pub fn attention_naive_backward(
    grads: AttnGrads<&mut [f32]>,
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    sh: &AttnShape,
) -> Result<()> {
    check(sh)?;
    let (t, s, c) = (sh.t, sh.s, sh.nh * sh.hs);
    let (dq, dkv) = match grads {
        AttnGrads::Qkv(all) => (all, None),
        AttnGrads::QAndKv { dq, dkv } => (dq, Some(dkv)),
    };
    let dkv_len = dkv.as_ref().map_or(dq.len(), |x| x.len());
    let ins = [("dout", dout.len(), sh.b * t * c), ("q", q.len(), sh.q_end()), ("probs", probs.len(), attention_naive_probs_len(sh))];
    for (what, len, n) in [("dq", dq.len(), sh.q_end()), ("dk, dv", dkv_len, sh.k_end().max(sh.v_end()))].into_iter().chain(ins) {
        need(what, len, n)?;
    }
    for (what, len, n) in [("k", k.len(), sh.k_end()), ("v", v.len(), sh.v_end())] {
        need(what, len, n)?;
    }
    if sh.b == 0 || t == 0 || s == 0 {
        return Ok(());
    }
    let par = super::attention_work(sh) >= super::PAR_FLOPS;
    let vt = transpose_heads(v, sh.v, sh);
    // dP = dO_h·V_gᵀ, turned into dS row by row; dQ_h += scale·dS·K_g. One task per (batch, head).
    let mut ds = vec![0.0f32; attention_naive_probs_len(sh)];
    let heads: Vec<(usize, &mut [f32])> = ds.chunks_mut(t * s).enumerate().collect();
    let dq_heads = each_map(heads, par, |(bh, ds_h)| grads_of_head(ds_h, probs, dout, k, &vt, sh, bh));
    drop(vt);
    // dV_g += Σ_h Pᵀ·dO_h and dK_g += Σ_h dSᵀ·Q_h over KB keys at a time: one task per (batch, kv head, key block).
    let ds = &ds;
    let blocks: Vec<(usize, usize)> = (0..sh.b * sh.nkv).flat_map(|bg| (0..s).step_by(KB).map(move |j0| (bg, j0))).collect();
    let dkv_blocks = each_map(blocks.clone(), par, |(bg, j0)| grads_of_keys(probs, ds, dout, q, sh, bg, j0));
    // The tasks' sums added at the layouts, in task order (their rows interleave in dqkv: no task owns them).
    for (bh, dq_h) in dq_heads.iter().enumerate() {
        add_rows(dq, sh.q.at(bh / sh.nh, bh % sh.nh, 0), sh.q.row, dq_h, sh.hs);
    }
    let dkv: &mut [f32] = match dkv {
        Some(x) => x,
        None => &mut *dq,
    };
    for ((bg, j0), (dk_blk, dv_blk)) in blocks.into_iter().zip(&dkv_blocks) {
        let (b, g) = (bg / sh.nkv, bg % sh.nkv);
        add_rows(dkv, sh.k.at(b, g, j0), sh.k.row, dk_blk, sh.hs);
        add_rows(dkv, sh.v.at(b, g, j0), sh.v.row, dv_blk, sh.hs);
    }
    Ok(())
}

// The tasks' bodies, compiled for the widest instruction set the CPU has (`simd::multiversion!`), as the fused
// kernels' are: the comparison of the two paths is then not one of instruction sets.

multiversion! {
    /// P of (batch, head) bh, (T × S), in p: S = scale·Q_h·K_gᵀ, masked, then a softmax per row. kt: Kᵀ of every
    /// (batch, kv head).
    fn probs_head(p: &mut [f32], q: &[f32], kt: &[f32], sh: &AttnShape, bh: usize) {
        let (t, s, hs) = (sh.t, sh.s, sh.hs);
        let (b, h) = (bh / sh.nh, bh % sh.nh);
        let g = h / sh.group();
        let kt_g = Rows { data: &kt[(b * sh.nkv + g) * hs * s..], ld: s };
        tile::gemm(p, s, false, Rows { data: &q[sh.q.at(b, h, 0)..], ld: sh.q.row }, kt_g, t, s, hs);
        for (i, row) in p.chunks_exact_mut(s).enumerate() {
            let n = visible(sh, i);
            math::scale(&mut row[..n], sh.scale);
            let m = math::max(&row[..n]);
            math::exp_sub_in_place(&mut row[..n], m);
            let sum = math::sum(&row[..n]);
            math::scale(&mut row[..n], 1.0 / sum);
            row[n..].fill(0.0); // masked: exp(−∞) = 0
        }
    }
}

multiversion! {
    /// Query rows i0.. of batch row b of out, all heads (o: rows × C): O_h = P_h·V_g.
    fn output_rows(o: &mut [f32], probs: &[f32], v: &[f32], sh: &AttnShape, b: usize, i0: usize) {
        let (t, s, hs, c) = (sh.t, sh.s, sh.hs, sh.nh * sh.hs);
        let rows = o.len() / c;
        for h in 0..sh.nh {
            let g = h / sh.group();
            let p = Rows { data: &probs[((b * sh.nh + h) * t + i0) * s..], ld: s };
            let v_g = Rows { data: &v[sh.v.at(b, g, 0)..], ld: sh.v.row };
            tile::gemm(&mut o[h * hs..], c, false, p, v_g, rows, hs, s);
        }
    }
}

multiversion! {
    /// dS (T × S) of (batch, head) bh, and its dQ_h (T × HS), returned: dP = dO_h·V_gᵀ,
    /// dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)), dQ_h = dS·K_g. vt: Vᵀ of every (batch, kv head).
    fn grads_of_head(ds_h: &mut [f32], probs: &[f32], dout: &[f32], k: &[f32], vt: &[f32], sh: &AttnShape, bh: usize) -> Vec<f32> {
        let (t, s, hs, c) = (sh.t, sh.s, sh.hs, sh.nh * sh.hs);
        let (b, h) = (bh / sh.nh, bh % sh.nh);
        let g = h / sh.group();
        let dout_h = Rows { data: &dout[b * t * c + h * hs..], ld: c };
        tile::gemm(ds_h, s, false, dout_h, Rows { data: &vt[(b * sh.nkv + g) * hs * s..], ld: s }, t, s, hs);
        for (dsrow, prow) in ds_h.chunks_exact_mut(s).zip(probs[bh * t * s..][..t * s].chunks_exact(s)) {
            let d = math::dot(prow, dsrow); // Σ_k P_ik·dP_ik
            math::dsoftmax(dsrow, prow, d);
            math::scale(dsrow, sh.scale);
        }
        let mut dq_h = vec![0.0f32; t * hs];
        tile::gemm(&mut dq_h, hs, false, Rows { data: ds_h, ld: s }, Rows { data: &k[sh.k.at(b, g, 0)..], ld: sh.k.row }, t, hs, s);
        dq_h
    }
}

multiversion! {
    /// (dk, dv) of keys j0.. of (batch, kv head) bg (kb × HS each), returned, over the query heads sharing it:
    /// dV = Σ_h Pᵀ·dO_h, dK = Σ_h dSᵀ·Q_h, TQ query rows at a time.
    fn grads_of_keys(probs: &[f32], ds: &[f32], dout: &[f32], q: &[f32], sh: &AttnShape, bg: usize, j0: usize) -> (Vec<f32>, Vec<f32>) {
        let (t, s, hs, c) = (sh.t, sh.s, sh.hs, sh.nh * sh.hs);
        let (b, g) = (bg / sh.nkv, bg % sh.nkv);
        let kb = KB.min(s - j0);
        let (mut dk_blk, mut dv_blk) = (vec![0.0f32; kb * hs], vec![0.0f32; kb * hs]);
        for h in g * sh.group()..(g + 1) * sh.group() {
            let bh = b * sh.nh + h;
            for i0 in (0..t).step_by(TQ) {
                let rows = TQ.min(t - i0);
                // P and dS rows i0.., columns j0..: read as the transposes of (kb × rows).
                let p = Rows { data: &probs[(bh * t + i0) * s + j0..], ld: s };
                let dsb = Rows { data: &ds[(bh * t + i0) * s + j0..], ld: s };
                let dout_rows = Rows { data: &dout[(b * t + i0) * c + h * hs..], ld: c };
                tile::gemm_tn(&mut dv_blk, hs, true, p, dout_rows, kb, hs, rows);
                tile::gemm_tn(&mut dk_blk, hs, true, dsb, Rows { data: &q[sh.q.at(b, h, i0)..], ld: sh.q.row }, kb, hs, rows);
            }
        }
        (dk_blk, dv_blk)
    }
}
