//! The GRU recurrence (`ops::gru` has the maths) on the CPU: per time step one batched mat-vec, the B states
//! h_{t−1} (B,C) times W_hhᵀ, as a matmul (rayon over its fixed pieces, so the bits do not depend on the thread
//! count), then the gates element-wise. The backward runs the same way from the last step to the first, sending
//! dh_{t−1} = dh ⊙ z + dgh·W_hh back as a matmul with W_hhᵀ, and leaves dW_hh and db_hh to one matmul backward over
//! every position at the end (dghᵀ·h_{t−1}), so no gradient is summed in an order that depends on the threads.

use super::math::sigmoid;
use super::matmul;

/// dst (B,C) ← the state before position t of every batch row: h[b, t − 1], or h0 (zeros without one) at t = 0.
fn gather_prev(dst: &mut [f32], h: &[f32], h0: Option<&[f32]>, b: usize, t: usize, tt: usize, c: usize) {
    for bi in 0..b {
        let d = &mut dst[bi * c..(bi + 1) * c];
        if t == 0 {
            match h0 {
                Some(h0) => d.copy_from_slice(&h0[bi * c..(bi + 1) * c]),
                None => d.fill(0.0),
            }
        } else {
            d.copy_from_slice(&h[(bi * tt + t - 1) * c..(bi * tt + t) * c]);
        }
    }
}

/// h (B,T,C), gates (B,T,4C) ← the recurrence over gi (B,T,3C); see `Backend::gru_forward`.
#[allow(clippy::too_many_arguments)]
pub fn gru_forward(
    h: &mut [f32],
    gates: &mut [f32],
    gi: &[f32],
    w_hh: &[f32],
    b_hh: Option<&[f32]>,
    h0: Option<&[f32]>,
    b: usize,
    t: usize,
    c: usize,
    parallel: bool,
) {
    let mut hp = vec![0.0f32; b * c];
    let mut gh = vec![0.0f32; b * 3 * c];
    for ti in 0..t {
        gather_prev(&mut hp, h, h0, b, ti, t, c);
        matmul::matmul_forward(&mut gh, &hp, w_hh, b_hh, b, c, 3 * c, parallel);
        for bi in 0..b {
            let row = bi * t + ti;
            let (gi, gh, hp) = (&gi[row * 3 * c..(row + 1) * 3 * c], &gh[bi * 3 * c..(bi + 1) * 3 * c], &hp[bi * c..(bi + 1) * c]);
            let (sv, hr) = (&mut gates[row * 4 * c..(row + 1) * 4 * c], &mut h[row * c..(row + 1) * c]);
            for j in 0..c {
                let r = sigmoid(gi[j] + gh[j]);
                let z = sigmoid(gi[c + j] + gh[c + j]);
                let n = (gi[2 * c + j] + r * gh[2 * c + j]).tanh();
                hr[j] = (1.0 - z) * n + z * hp[j];
                sv[j] = r;
                sv[c + j] = z;
                sv[2 * c + j] = n;
                sv[3 * c + j] = gh[2 * c + j];
            }
        }
    }
}

/// dgi (B,T,3C) +=, dw_hh (3C,C) +=, db_hh (3C) += through time; see `Backend::gru_backward`.
#[allow(clippy::too_many_arguments)]
pub fn gru_backward(
    dgi: &mut [f32],
    dw_hh: &mut [f32],
    db_hh: Option<&mut [f32]>,
    dh: &[f32],
    gates: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    w_hh: &[f32],
    b: usize,
    t: usize,
    c: usize,
    parallel: bool,
) {
    // W_hhᵀ (C,3C), so that dh_{t−1} (B,C) = dgh (B,3C) · W_hh is a matmul forward.
    let mut w_t = vec![0.0f32; 3 * c * c];
    for o in 0..3 * c {
        for i in 0..c {
            w_t[i * 3 * c + o] = w_hh[o * c + i];
        }
    }
    let mut dgh = vec![0.0f32; b * t * 3 * c]; // (B,T,3C), every position's, for dW_hh at the end
    let mut hps = vec![0.0f32; b * t * c]; // (B,T,C): h_{t−1} of every position
    let mut carry = vec![0.0f32; b * c]; // ∂L/∂h_t sent back from t + 1
    let mut back = vec![0.0f32; b * c];
    let mut hp = vec![0.0f32; b * c];
    let mut step = vec![0.0f32; b * 3 * c];
    for ti in (0..t).rev() {
        gather_prev(&mut hp, h, h0, b, ti, t, c);
        for bi in 0..b {
            let row = bi * t + ti;
            let sv = &gates[row * 4 * c..(row + 1) * 4 * c];
            let hp = &hp[bi * c..(bi + 1) * c];
            hps[row * c..(row + 1) * c].copy_from_slice(hp);
            let (dgi, st) = (&mut dgi[row * 3 * c..(row + 1) * 3 * c], &mut step[bi * 3 * c..(bi + 1) * 3 * c]);
            let (dh, carry) = (&dh[row * c..(row + 1) * c], &mut carry[bi * c..(bi + 1) * c]);
            for j in 0..c {
                let (r, z, n, ghn) = (sv[j], sv[c + j], sv[2 * c + j], sv[3 * c + j]);
                let d = dh[j] + carry[j];
                let dn_hat = d * (1.0 - z) * (1.0 - n * n);
                let dz_hat = d * (hp[j] - n) * z * (1.0 - z);
                let dr_hat = dn_hat * ghn * r * (1.0 - r);
                dgi[j] += dr_hat;
                dgi[c + j] += dz_hat;
                dgi[2 * c + j] += dn_hat;
                st[j] = dr_hat;
                st[c + j] = dz_hat;
                st[2 * c + j] = dn_hat * r;
                carry[j] = d * z;
            }
            dgh[row * 3 * c..(row + 1) * 3 * c].copy_from_slice(st);
        }
        matmul::matmul_forward(&mut back, &step, &w_t, None, b, 3 * c, c, parallel);
        for (x, y) in carry.iter_mut().zip(&back) {
            *x += y;
        }
    }
    let whole = b * t * c * 3 * c >= super::PAR_FLOPS;
    matmul::matmul_backward(None, dw_hh, db_hh, &dgh, &hps, w_hh, b * t, c, 3 * c, whole);
}
