//! Linear layer: out = inp · wᵀ + b, with PyTorch's (out, in) weight layout.

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
