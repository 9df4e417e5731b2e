//! The model's glue between the layers — embedding, residual adds, dropout masks, the KV cache's append — and the
//! optimizer's flat passes (Σ g² per tensor, clipping, AdamW over every tensor): plain loops.

use crate::backend::{AdamW, HeadLayout, Segment, View};
use crate::error::Result;

/// out (B·T, C) = wte[ids] + wpe[pos0 + t] + sin[t] (each row r at t = r mod T).
pub fn embedding_forward(out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) {
    for (r, row) in out.chunks_exact_mut(c).enumerate() {
        let tp = r % t;
        for i in 0..c {
            let mut x = wte[ids[r] as usize * c + i];
            if let Some(wpe) = wpe {
                x += wpe[(pos0 + tp) * c + i];
            }
            if !sin.is_empty() {
                x += sin[tp * c + i];
            }
            row[i] = x;
        }
    }
}

/// dwte[ids[r]] += dx[r]; dwpe[r mod T] += dx[r], row by row in order.
pub fn embedding_backward(dwte: &mut [f32], mut dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) {
    for (r, d) in dx.chunks_exact(c).enumerate() {
        for i in 0..c {
            dwte[ids[r] as usize * c + i] += d[i];
            if let Some(wpe) = dwpe.as_deref_mut() {
                wpe[(r % t) * c + i] += d[i];
            }
        }
    }
}

/// out = α·a + b.
pub fn add_scaled(out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) {
    for i in 0..out.len().min(a.len()).min(b.len()) {
        out[i] = alpha * a[i] + b[i];
    }
}

/// out = α·a.
pub fn scale(out: &mut [f32], a: &[f32], alpha: f32) {
    for i in 0..out.len().min(a.len()) {
        out[i] = alpha * a[i];
    }
}

/// a += b.
pub fn add_into(a: &mut [f32], b: &[f32]) {
    for i in 0..a.len().min(b.len()) {
        a[i] += b[i];
    }
}

/// a ⊙= m.
pub fn mul_into(a: &mut [f32], m: &[f32]) {
    for i in 0..a.len().min(m.len()) {
        a[i] *= m[i];
    }
}

/// out (H, len+n, HS) ← old (H, len, HS) then new (H, n, HS) read at `new_lay` (batch 0), head by head.
#[allow(clippy::too_many_arguments)]
pub fn append_heads(out: &mut [f32], old: &[f32], new: &[f32], new_lay: HeadLayout, h: usize, len: usize, n: usize, hs: usize) {
    for g in 0..h {
        let o = &mut out[g * (len + n) * hs..(g + 1) * (len + n) * hs];
        o[..len * hs].copy_from_slice(&old[g * len * hs..(g + 1) * len * hs]);
        for (j, row) in o[len * hs..].chunks_exact_mut(hs).enumerate() {
            row.copy_from_slice(&new[new_lay.at(0, g, j)..][..hs]);
        }
    }
}

/// Σ g² in f64.
pub fn sum_squares(g: &[f32]) -> f64 {
    g.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// out[0] = Σ g² over every segment, out[1 + i] = Σ g² of segment i (each summed in f64, the total from those).
pub fn sums_of_squares(out: &mut [f32], g: &[f32], segments: &[Segment]) {
    let sums: Vec<f64> = segments.iter().map(|s| sum_squares(s.view.of(g))).collect();
    out[0] = sums.iter().sum::<f64>() as f32;
    for (o, s) in out[1..].iter_mut().zip(&sums) {
        *o = *s as f32;
    }
}

/// The factor clipping multiplies the gradients by: clip/(√sq + 1e-6) when that is below 1, else 1 (PyTorch's
/// clip_grad_norm_).
pub fn clip_coef(sq: f32, clip: f32) -> f32 {
    let coef = clip / (sq.sqrt() + 1e-6);
    if clip > 0.0 && coef < 1.0 {
        coef
    } else {
        1.0
    }
}

/// g ← g · clip_coef(sq, clip).
pub fn clip_grad_norm(g: &mut [f32], sq: f32, clip: f32) {
    let coef = clip_coef(sq, clip);
    if coef != 1.0 {
        g.iter_mut().for_each(|x| *x *= coef);
    }
}

/// AdamW over one tensor, as PyTorch: decoupled decay p ← p(1 − lr·wd) (only when `decay`), then the
/// bias-corrected Adam update.
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, decay: bool) {
    let bc1 = 1.0 - h.beta1.powi(h.t as i32);
    let bc2 = 1.0 - h.beta2.powi(h.t as i32);
    let wd = if decay { h.weight_decay } else { 0.0 };
    for i in 0..p.len() {
        p[i] *= 1.0 - h.lr * wd;
        m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
        v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
        let mhat = m[i] / bc1;
        let vhat = v[i] / bc2;
        p[i] -= h.lr * mhat / (vhat.sqrt() + h.eps);
    }
}

/// Whether an optimizer step may be taken: the loss and Σ g² are finite.
pub fn step_is_good(sq: f32, loss: f32) -> bool {
    sq.is_finite() && loss.is_finite()
}

/// Disjoint tensors of a flat buffer, in the order asked (the gradients of every expert of a Mixture-of-Experts
/// layer at once); views outside the buffer or overlapping are an error.
pub fn many_mut<'a>(g: &'a mut [f32], views: &[View]) -> Result<Vec<&'a mut [f32]>> {
    let mut order: Vec<usize> = (0..views.len()).collect();
    order.sort_by_key(|&i| views[i].offset);
    let mut out: Vec<Option<&'a mut [f32]>> = (0..views.len()).map(|_| None).collect();
    // Cut the buffer from the lowest view up: each cut leaves what lies past the view for the next ones.
    let (mut rest, mut at) = (g, 0);
    for i in order {
        let v = views[i];
        v.check(at + rest.len())?;
        if v.offset < at {
            return Err(crate::Error::Invalid(format!("overlapping tensor views: {v:?} starts before {at}")));
        }
        let (piece, tail) = std::mem::take(&mut rest)[v.offset - at..].split_at_mut(v.len);
        out[i] = Some(piece);
        (rest, at) = (tail, v.offset + v.len);
    }
    Ok(out.into_iter().map(|x| x.expect("every view was cut")).collect())
}

/// Two disjoint tensors of a flat buffer, in the order asked (the second absent when `b` is); views outside the
/// buffer or overlapping are an error.
pub fn two_mut(g: &mut [f32], a: View, b: Option<View>) -> Result<(&mut [f32], Option<&mut [f32]>)> {
    a.check(g.len())?;
    let Some(b) = b else { return Ok((a.of_mut(g), None)) };
    b.check(g.len())?;
    if a.offset < b.offset + b.len && b.offset < a.offset + a.len {
        return Err(crate::Error::Invalid(format!("overlapping tensor views {a:?} and {b:?}")));
    }
    Ok(if a.offset < b.offset {
        let (lo, hi) = g.split_at_mut(b.offset);
        (a.of_mut(lo), Some(&mut hi[..b.len]))
    } else {
        let (lo, hi) = g.split_at_mut(a.offset);
        (&mut hi[..a.len], Some(b.of_mut(lo)))
    })
}
