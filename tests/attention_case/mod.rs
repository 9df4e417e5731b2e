//! One attention case — a forward and an accumulating backward — through a backend, with q, k, v (and so dq, dk,
//! dv) at the layouts a `Storage` gives them, shared by the CPU-vs-reference and GPU-vs-reference tests. The
//! buffers are filled with random values everywhere, the columns no layout covers included, and the gradient
//! buffers start random too: comparing whole buffers checks both that the backward adds (`+=`) and that it leaves
//! every other element alone.

#![allow(dead_code)]

use transformer_playground::backend::{AttnBias, AttnGrads, AttnShape, HeadLayout, Host};
use transformer_playground::rng::Rng;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

#[derive(Clone, Copy, Debug)]
pub enum Bias {
    None,
    Alibi,
    Relative,
}

pub const BIASES: [Bias; 3] = [Bias::None, Bias::Alibi, Bias::Relative];

/// Where a case keeps q, k and v.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Storage {
    /// q (B,NH,T,HS) in one buffer; k and v (B,NKV,S,HS), k then v, in another (the "heads" layout).
    Heads,
    /// Self-attention's qkv rows (B,T,W), W = pad + (NH+2·NKV)·HS + pad: q, k, v at columns pad, pad + NH·HS,
    /// pad + (NH+NKV)·HS, all in one buffer, as is dqkv (T = S).
    QkvRows { pad: usize },
    /// Cross-attention's q rows (B,T,pad + NH·HS) and kv rows (B,S,pad + 2·NKV·HS + pad), q, k and v after the
    /// leading pad columns: two buffers, as are dq and dkv.
    CrossRows { pad: usize },
}

impl Storage {
    /// dq, dk, dv all in one buffer (`AttnGrads::Qkv`).
    pub fn one_buffer(self) -> bool {
        matches!(self, Storage::QkvRows { .. })
    }
}

/// A shape with q, k, v at `Storage::Heads` layouts, scale 1/√HS.
#[allow(clippy::too_many_arguments)]
pub fn shape(b: usize, t: usize, s: usize, nh: usize, nkv: usize, hs: usize, causal: bool, q_offset: usize) -> AttnShape {
    let (q, kv) = (HeadLayout::heads(nh, t, hs), HeadLayout::heads(nkv, s, hs));
    let sh = AttnShape { b, t, s, nh, nkv, hs, causal, q_offset, scale: 1.0 / (hs as f32).sqrt(), q, k: kv, v: kv };
    laid_out(sh, Storage::Heads)
}

/// `sh` with the layouts of `st`.
pub fn laid_out(sh: AttnShape, st: Storage) -> AttnShape {
    let (nh, nkv, hs, t, s) = (sh.nh, sh.nkv, sh.hs, sh.t, sh.s);
    match st {
        Storage::Heads => {
            let kv = HeadLayout::heads(nkv, s, hs);
            AttnShape { q: HeadLayout::heads(nh, t, hs), k: kv, v: HeadLayout { offset: sh.b * nkv * s * hs, ..kv }, ..sh }
        }
        Storage::QkvRows { pad } => {
            assert_eq!(t, s, "self-attention reads its keys from its own rows");
            let w = 2 * pad + (nh + 2 * nkv) * hs;
            let at = |off| HeadLayout::rows(t, w, pad + off, hs);
            AttnShape { q: at(0), k: at(nh * hs), v: at((nh + nkv) * hs), ..sh }
        }
        Storage::CrossRows { pad } => {
            let kv = |off| HeadLayout::rows(s, 2 * pad + 2 * nkv * hs, pad + off, hs);
            AttnShape { q: HeadLayout::rows(t, pad + nh * hs, pad, hs), k: kv(0), v: kv(nkv * hs), ..sh }
        }
    }
}

/// Elements of the buffer(s) a case needs: [q's (all three when one buffer), k's and v's (0 when one buffer)].
pub fn buffer_lens(sh: &AttnShape, st: Storage) -> [usize; 2] {
    let kv = sh.k_end().max(sh.v_end());
    // The rows layouts end at a row's last head; the trailing pad columns of the last row are part of the buffer.
    let rows_end = |lay: HeadLayout, n: usize| sh.b * n * lay.row;
    match st {
        Storage::Heads => [sh.q_end(), kv],
        Storage::QkvRows { .. } => [rows_end(sh.q, sh.t).max(sh.q_end()).max(kv), 0],
        Storage::CrossRows { .. } => [rows_end(sh.q, sh.t).max(sh.q_end()), rows_end(sh.k, sh.s).max(kv)],
    }
}

pub const NAMES: [&str; 5] = ["out", "lse", "dq (or dqkv)", "dkv", "dtable"];

/// The seeded data of a case: the buffer(s) of q, k, v (x2 empty when one buffer holds all three), the biases'
/// data, dout, and the starting gradient buffer(s) (random, so `+=` is checked) and table gradient.
pub struct CaseInputs {
    pub x1: Vec<f32>,
    pub x2: Vec<f32>,
    pub slopes: Vec<f32>,
    pub table: Vec<f32>,
    pub bucket: Vec<u32>,
    pub dout: Vec<f32>,
    pub g1: Vec<f32>,
    pub g2: Vec<f32>,
    pub dtable: Vec<f32>,
}

pub fn case_inputs(sh: &AttnShape, st: Storage, seed: u64) -> CaseInputs {
    let mut rng = Rng::new(seed);
    let [n1, n2] = buffer_lens(sh, st);
    let (x1, x2) = (randn(&mut rng, n1), randn(&mut rng, n2));
    let buckets = 11;
    let slopes: Vec<f32> = (0..sh.nh).map(|h| 0.5f32.powi(h as i32 + 1)).collect();
    let table = randn(&mut rng, buckets * sh.nh);
    let bucket: Vec<u32> = (0..sh.t * sh.s).map(|_| rng.below(buckets) as u32).collect();
    let dout = randn(&mut rng, sh.b * sh.t * sh.nh * sh.hs);
    let (g1, g2) = (randn(&mut rng, n1), randn(&mut rng, n2));
    let dtable = randn(&mut rng, table.len());
    CaseInputs { x1, x2, slopes, table, bucket, dout, g1, g2, dtable }
}

/// [out, lse, the gradient buffer(s) (dqkv and an empty one, or dq and dkv), dtable] of one forward and one
/// accumulating backward.
pub fn attention_case(be: &impl Host, sh: &AttnShape, st: Storage, bias: Bias, seed: u64) -> Vec<Vec<f32>> {
    let CaseInputs { x1, x2, slopes, table, bucket, dout, mut g1, mut g2, mut dtable } = case_inputs(sh, st, seed);
    let (q, kv) = if st.one_buffer() { (&x1, &x1) } else { (&x1, &x2) };
    let ab = match bias {
        Bias::None => AttnBias::None,
        Bias::Alibi => AttnBias::Alibi { slopes: &slopes },
        Bias::Relative => AttnBias::Relative { table: &table[..], bucket: &bucket },
    };
    let c = sh.nh * sh.hs;
    let (mut out, mut lse) = (vec![f32::NAN; sh.b * sh.t * c], vec![f32::NAN; sh.b * sh.nh * sh.t]);
    be.attention_forward(&mut out, &mut lse, q, kv, kv, ab, sh).unwrap();
    let dt = matches!(bias, Bias::Relative).then_some(&mut dtable[..]);
    let grads = if st.one_buffer() { AttnGrads::Qkv(&mut g1[..]) } else { AttnGrads::QAndKv { dq: &mut g1[..], dkv: &mut g2[..] } };
    be.attention_backward(grads, dt, &dout, q, kv, kv, &out, &lse, ab, sh).unwrap();
    vec![out, lse, g1, g2, dtable]
}

/// The strided cases: odd head sizes, GQA and MQA, T ≠ S, causal and not, decoding offsets, padded rows.
pub fn strided_cases() -> Vec<(AttnShape, Storage)> {
    let mut v = vec![];
    for (nh, nkv, hs) in [(4, 4, 5), (4, 2, 12), (6, 1, 5), (3, 3, 7)] {
        for causal in [true, false] {
            for pad in [0, 3] {
                v.push((laid_out(shape(2, 7, 7, nh, nkv, hs, causal, 0), Storage::QkvRows { pad }), Storage::QkvRows { pad }));
            }
        }
        for (t, s) in [(7, 5), (5, 9)] {
            v.push((laid_out(shape(2, t, s, nh, nkv, hs, false, 0), Storage::CrossRows { pad: 1 }), Storage::CrossRows { pad: 1 }));
        }
    }
    // Several query tiles and key blocks, read from padded qkv rows; decoding with q_offset from q rows.
    v.push((laid_out(shape(1, 70, 70, 4, 2, 12, true, 0), Storage::QkvRows { pad: 2 }), Storage::QkvRows { pad: 2 }));
    v.push((laid_out(shape(2, 3, 8, 4, 2, 5, true, 5), Storage::CrossRows { pad: 0 }), Storage::CrossRows { pad: 0 }));
    v
}

/// RoPE on the k columns of padded qkv rows, forward or inverse: the whole buffer after it (every other column
/// must be untouched).
#[allow(clippy::too_many_arguments)]
pub fn rope_case(be: &impl Host, b: usize, t: usize, nh: usize, nkv: usize, hs: usize, pos0: usize, inverse: bool) -> Vec<f32> {
    let sh = laid_out(shape(b, t, t, nh, nkv, hs, true, 0), Storage::QkvRows { pad: 1 });
    let mut x = randn(&mut Rng::new(hs as u64 + 7), buffer_lens(&sh, Storage::QkvRows { pad: 1 })[0]);
    be.rope(&mut x, sh.q, b, nh, t, hs, pos0, 10000.0, inverse).unwrap();
    be.rope(&mut x, sh.k, b, nkv, t, hs, pos0, 10000.0, inverse).unwrap();
    x
}
