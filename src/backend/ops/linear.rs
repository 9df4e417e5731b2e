//! Linear layer: out = inp · wᵀ + b, with PyTorch's (out, in) weight layout; and the FFN's linear layers with their
//! activation (`matmul_act_forward`, `matmul_act_backward`), here the plain composition of the two ops.

use super::act::{activation_backward, activation_forward};
use crate::config::Activation;

/// out (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC)
pub fn matmul_forward(out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) {
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        for o in 0..oc {
            let wr = &w[o * c..(o + 1) * c];
            let mut acc = b.map_or(0.0, |b| b[o]);
            for i in 0..c {
                acc += x[i] * wr[i];
            }
            out[r * oc + o] = acc;
        }
    }
}

/// dinp (N,C) += dout (N,OC) · w; dw (OC,C) += doutᵀ · inp; db (OC) += Σ_rows dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    if let Some(dinp) = dinp {
        for r in 0..n {
            for o in 0..oc {
                let d = dout[r * oc + o];
                for i in 0..c {
                    dinp[r * c + i] += d * w[o * c + i];
                }
            }
        }
    }
    for o in 0..oc {
        for r in 0..n {
            let d = dout[r * oc + o];
            for i in 0..c {
                dw[o * c + i] += d * inp[r * c + i];
            }
        }
    }
    if let Some(db) = db {
        for o in 0..oc {
            for r in 0..n {
                db[o] += dout[r * oc + o];
            }
        }
    }
}

/// pre (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC); out (N,F) = act(pre), OC = F, or 2F for gated activations.
#[allow(clippy::too_many_arguments)]
pub fn matmul_act_forward(act: Activation, pre: &mut [f32], out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) {
    matmul_forward(pre, inp, w, b, n, c, oc);
    let f = if act.is_gated() { oc / 2 } else { oc };
    activation_forward(act, &mut out[..n * f], &pre[..n * oc], f);
}

/// dpre (N,C or 2C) = (dout (N,OC) · w (OC,C)) ⊙ act'(pre), written; dw (OC,C) += doutᵀ · inp; db (OC) += Σ_rows dout.
/// inp (N,C) = act(pre).
#[allow(clippy::too_many_arguments)]
pub fn matmul_act_backward(
    act: Activation,
    dpre: &mut [f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    pre: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    let mut dact = vec![0.0f32; n * c]; // ∂L/∂act (N,C)
    matmul_backward(Some(&mut dact), dw, db, dout, inp, w, n, c, oc);
    let width = if act.is_gated() { 2 * c } else { c };
    let dpre = &mut dpre[..n * width];
    dpre.fill(0.0);
    activation_backward(act, dpre, &dact, &pre[..n * width], c);
}
