//! Scaled dot-product attention (Vaswani et al. 2017) with grouped KV heads (GQA, Ainslie et al. 2023), causal or
//! bidirectional masks, and additive position biases (ALiBi, T5 relative). q (B,NH,T,HS), k/v (B,NKV,S,HS), each
//! at its `HeadLayout` in `AttnShape` (dq, dk, dv at the same ones), out (B,T,NH·HS), lse (B,NH,T).
//!
//! Backward, per query row i with p = softmax(s), recomputed as exp(s − lse):
//!   dv_j += p_j · dout_i;  dp_j = dout_i · v_j;  ds_j = p_j (dp_j − Σ_k p_k dp_k) where Σ_k p_k dp_k = dout_i · out_i;
//!   dq_i += scale Σ_j ds_j k_j;  dk_j += scale · ds_j q_i;  dbias(h,i,j) += ds_j.

use crate::backend::{AttnBias, AttnGrads, AttnShape};

/// Scores of query row i of head h against every key: masked entries are −∞.
fn scores(row: &mut [f32], q: &[f32], k: &[f32], bias: &AttnBias, sh: &AttnShape, b: usize, h: usize, i: usize) {
    let g = h / sh.group();
    let qi = &q[sh.q.at(b, h, i)..][..sh.hs];
    for (j, s) in row.iter_mut().enumerate() {
        if sh.causal && j > sh.q_offset + i {
            *s = f32::NEG_INFINITY;
            continue;
        }
        let kj = &k[sh.k.at(b, g, j)..][..sh.hs];
        let dot: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
        *s = sh.scale * dot + bias.at(sh, h, i, j);
    }
}

pub fn attention_forward(out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: AttnBias, sh: &AttnShape) {
    let c = sh.nh * sh.hs;
    let mut row = vec![0.0f32; sh.s];
    for b in 0..sh.b {
        for h in 0..sh.nh {
            let g = h / sh.group();
            for i in 0..sh.t {
                scores(&mut row, q, k, &bias, sh, b, h, i);
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
                let l = max + sum.ln();
                lse[(b * sh.nh + h) * sh.t + i] = l;
                let o = &mut out[(b * sh.t + i) * c + h * sh.hs..][..sh.hs];
                o.fill(0.0);
                for (j, &s) in row.iter().enumerate() {
                    let p = (s - l).exp();
                    let vj = &v[sh.v.at(b, g, j)..][..sh.hs];
                    for d in 0..sh.hs {
                        o[d] += p * vj[d];
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    grads: AttnGrads<&mut [f32]>,
    mut dtable: Option<&mut [f32]>,
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    bias: AttnBias,
    sh: &AttnShape,
) {
    // dq, dk, dv may all be in one buffer: `dq` and `dkv` name the buffers, the layouts place the tensors.
    let (dq, mut dkv): (&mut [f32], Option<&mut [f32]>) = match grads {
        AttnGrads::Qkv(all) => (all, None),
        AttnGrads::QAndKv { dq, dkv } => (dq, Some(dkv)),
    };
    let (c, hs) = (sh.nh * sh.hs, sh.hs);
    let mut row = vec![0.0f32; sh.s];
    for b in 0..sh.b {
        for h in 0..sh.nh {
            let g = h / sh.group();
            for i in 0..sh.t {
                scores(&mut row, q, k, &bias, sh, b, h, i);
                let l = lse[(b * sh.nh + h) * sh.t + i];
                let dout_i = &dout[(b * sh.t + i) * c + h * hs..][..hs];
                let out_i = &out[(b * sh.t + i) * c + h * hs..][..hs];
                let di: f32 = dout_i.iter().zip(out_i).map(|(a, b)| a * b).sum();
                let qoff = sh.q.at(b, h, i);
                for j in 0..sh.s {
                    if row[j] == f32::NEG_INFINITY {
                        continue;
                    }
                    let p = (row[j] - l).exp();
                    let (koff, voff) = (sh.k.at(b, g, j), sh.v.at(b, g, j));
                    let dp: f32 = dout_i.iter().zip(&v[voff..voff + hs]).map(|(a, b)| a * b).sum();
                    let ds = p * (dp - di);
                    for d in 0..hs {
                        dq[qoff + d] += sh.scale * ds * k[koff + d];
                    }
                    let dkv = match dkv.as_deref_mut() {
                        Some(x) => x,
                        None => &mut *dq,
                    };
                    for d in 0..hs {
                        dkv[voff + d] += p * dout_i[d];
                        dkv[koff + d] += sh.scale * ds * q[qoff + d];
                    }
                    if let (Some(dt), AttnBias::Relative { bucket, .. }) = (dtable.as_deref_mut(), &bias) {
                        dt[bucket[i * sh.s + j] as usize * sh.nh + h] += ds;
                    }
                }
            }
        }
    }
}

/// The probe path: materialises the attention probabilities (B,NH,T,S) from q, k and the saved lse. Only the UI's
/// attention view calls this; training never holds a (T,S) matrix.
pub fn attention_probs(q: &[f32], k: &[f32], lse: &[f32], bias: AttnBias, sh: &AttnShape) -> Vec<f32> {
    let mut probs = vec![0.0f32; sh.b * sh.nh * sh.t * sh.s];
    let mut row = vec![0.0f32; sh.s];
    for b in 0..sh.b {
        for h in 0..sh.nh {
            for i in 0..sh.t {
                scores(&mut row, q, k, &bias, sh, b, h, i);
                let l = lse[(b * sh.nh + h) * sh.t + i];
                let out = &mut probs[((b * sh.nh + h) * sh.t + i) * sh.s..][..sh.s];
                for (o, &s) in out.iter_mut().zip(&row) {
                    *o = (s - l).exp();
                }
            }
        }
    }
    probs
}
