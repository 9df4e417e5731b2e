//! LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019), forward and backward, per row of C.
//!
//! Backward, with x̂ = (x − μ)·r (r = rstd) and g = dout ⊙ w:
//!   LayerNorm: dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))
//!   RMSNorm:   dx = r · (g − x̂ · mean(g ⊙ x̂)),  x̂ = x·r
//! and dw += dout ⊙ x̂, db += dout.

use crate::config::NormKind;

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
) {
    for (r, x) in inp.chunks_exact(c).enumerate() {
        let mu = match kind {
            NormKind::Layernorm => x.iter().map(|&v| v as f64).sum::<f64>() / c as f64,
            NormKind::Rmsnorm => 0.0,
        };
        let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        mean[r] = mu as f32;
        rstd[r] = rs as f32;
        for i in 0..c {
            let xhat = (x[i] as f64 - mu) * rs;
            out[r * c + i] = xhat as f32 * w[i] + b.map_or(0.0, |b| b[i]);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn norm_backward(
    kind: NormKind,
    dinp: &mut [f32],
    dw: &mut [f32],
    mut db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) {
    for (r, x) in inp.chunks_exact(c).enumerate() {
        let d = &dout[r * c..(r + 1) * c];
        let (mu, rs) = (mean[r], rstd[r]);
        let xhat = |i: usize| (x[i] - mu) * rs;
        let (mut g_mean, mut gx_mean) = (0.0f32, 0.0f32);
        for i in 0..c {
            let g = d[i] * w[i];
            g_mean += g;
            gx_mean += g * xhat(i);
        }
        g_mean /= c as f32;
        gx_mean /= c as f32;
        if kind == NormKind::Rmsnorm {
            g_mean = 0.0;
        }
        for i in 0..c {
            let g = d[i] * w[i];
            dinp[r * c + i] += rs * (g - g_mean - xhat(i) * gx_mean);
            dw[i] += d[i] * xhat(i);
            if let Some(db) = db.as_deref_mut() {
                db[i] += d[i];
            }
        }
    }
}
