//! The GRU recurrence (Cho et al. 2014) in PyTorch's form and gate order (r, z, n), for the recurrent position
//! encoding. The input projection `gi = x·W_ihᵀ + b_ih` of every position is a matmul done by the caller; this is
//! the sequential part. With `gh = W_hh·h_{t−1} + b_hh` split as (gh_r, gh_z, gh_n) and gi likewise:
//!   r = σ(gi_r + gh_r),  z = σ(gi_z + gh_z),  n = tanh(gi_n + r ⊙ gh_n),  h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}.
//! The forward saves `gates` (B,T,4C) = [r | z | n | gh_n] per position, all the backward needs besides h.
//!
//! Backward through time, from the last position to the first, with dh the total gradient at h_t (the caller's
//! ∂L/∂h_t plus what h_{t+1} sends back):
//!   dn = dh ⊙ (1 − z),  dz = dh ⊙ (h_{t−1} − n),  dn̂ = dn ⊙ (1 − n²)          (n̂ = gi_n + r ⊙ gh_n)
//!   dr = dn̂ ⊙ gh_n,  dr̂ = dr ⊙ r(1 − r),  dẑ = dz ⊙ z(1 − z)
//!   dgi = [dr̂ | dẑ | dn̂],  dgh = [dr̂ | dẑ | dn̂ ⊙ r]
//!   dW_hh += dghᵀ·h_{t−1},  db_hh += dgh,  dh_{t−1} ← dh ⊙ z + W_hhᵀ·dgh.

use super::sigmoid;

/// The state before position t of row b: h0's row, zeros when there is no h0, else h[b, t−1].
pub fn gru_prev<'a>(h: &'a [f32], h0: Option<&'a [f32]>, zeros: &'a [f32], b: usize, t: usize, tt: usize, c: usize) -> &'a [f32] {
    if t == 0 {
        h0.map_or(zeros, |h0| &h0[b * c..(b + 1) * c])
    } else {
        &h[(b * tt + t - 1) * c..(b * tt + t) * c]
    }
}

/// h (B,T,C), gates (B,T,4C) ← the recurrence over gi (B,T,3C) with w_hh (3C,C), b_hh (3C), h0 (B,C) (zeros
/// when None).
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
) {
    let zeros = vec![0.0f32; c];
    let mut gh = vec![0.0f32; 3 * c];
    for bi in 0..b {
        for ti in 0..t {
            let hp = gru_prev(h, h0, &zeros, bi, ti, t, c).to_vec();
            for (o, g) in gh.iter_mut().enumerate() {
                let mut acc = b_hh.map_or(0.0, |bh| bh[o]);
                for i in 0..c {
                    acc += w_hh[o * c + i] * hp[i];
                }
                *g = acc;
            }
            let row = bi * t + ti;
            let gi = &gi[row * 3 * c..(row + 1) * 3 * c];
            let sv = &mut gates[row * 4 * c..(row + 1) * 4 * c];
            for j in 0..c {
                let r = sigmoid(gi[j] + gh[j]);
                let z = sigmoid(gi[c + j] + gh[c + j]);
                let n = (gi[2 * c + j] + r * gh[2 * c + j]).tanh();
                h[row * c + j] = (1.0 - z) * n + z * hp[j];
                sv[j] = r;
                sv[c + j] = z;
                sv[2 * c + j] = n;
                sv[3 * c + j] = gh[2 * c + j];
            }
        }
    }
}

/// dgi (B,T,3C) +=, dw_hh (3C,C) +=, db_hh (3C) += from dh (B,T,C) = ∂L/∂h, through time.
#[allow(clippy::too_many_arguments)]
pub fn gru_backward(
    dgi: &mut [f32],
    dw_hh: &mut [f32],
    mut db_hh: Option<&mut [f32]>,
    dh: &[f32],
    gates: &[f32],
    h: &[f32],
    h0: Option<&[f32]>,
    w_hh: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    let zeros = vec![0.0f32; c];
    let mut dgh = vec![0.0f32; 3 * c];
    for bi in 0..b {
        let mut carry = vec![0.0f32; c]; // ∂L/∂h_t sent back from position t + 1
        for ti in (0..t).rev() {
            let row = bi * t + ti;
            let hp = gru_prev(h, h0, &zeros, bi, ti, t, c);
            let sv = &gates[row * 4 * c..(row + 1) * 4 * c];
            let mut next = vec![0.0f32; c];
            for j in 0..c {
                let (r, z, n, ghn) = (sv[j], sv[c + j], sv[2 * c + j], sv[3 * c + j]);
                let d = dh[row * c + j] + carry[j];
                let dn_hat = d * (1.0 - z) * (1.0 - n * n);
                let dz_hat = d * (hp[j] - n) * z * (1.0 - z);
                let dr_hat = dn_hat * ghn * r * (1.0 - r);
                dgi[row * 3 * c + j] += dr_hat;
                dgi[row * 3 * c + c + j] += dz_hat;
                dgi[row * 3 * c + 2 * c + j] += dn_hat;
                dgh[j] = dr_hat;
                dgh[c + j] = dz_hat;
                dgh[2 * c + j] = dn_hat * r;
                next[j] = d * z;
            }
            for o in 0..3 * c {
                let g = dgh[o];
                for i in 0..c {
                    dw_hh[o * c + i] += g * hp[i];
                    next[i] += g * w_hh[o * c + i];
                }
                if let Some(db) = db_hh.as_deref_mut() {
                    db[o] += g;
                }
            }
            carry = next;
        }
    }
}
