//! Rotary position embedding (RoFormer, Su et al. 2021) in the rotate-half layout (GPT-NeoX, Hugging Face).
//! For each head row x (HS) at position t, with h = HS/2 and a_i = t · theta^(−2i/HS):
//!   out[i] = x[i] cos a_i − x[i+h] sin a_i,   out[i+h] = x[i+h] cos a_i + x[i] sin a_i.
//! It is a rotation, so the backward is the rotation by −a (its transpose), applied in place to the gradient.

use crate::backend::HeadLayout;

/// Rotates the (B, H, T, HS) tensor at `lay` in x, in place; row t has absolute position pos0 + t. `inverse` rotates
/// by −a.
#[allow(clippy::too_many_arguments)]
pub fn rope_apply(x: &mut [f32], lay: HeadLayout, b: usize, nh: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) {
    let h = hs / 2;
    for (bi, hi, r) in (0..b).flat_map(|bi| (0..nh).flat_map(move |hi| (0..t).map(move |r| (bi, hi, r)))) {
        let row = &mut x[lay.at(bi, hi, r)..][..hs];
        let pos = (pos0 + r) as f32;
        for i in 0..h {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / hs as f32);
            let a = pos * inv_freq;
            let (sin, cos) = a.sin_cos();
            let sin = if inverse { -sin } else { sin };
            let (x1, x2) = (row[i], row[i + h]);
            row[i] = x1 * cos - x2 * sin;
            row[i + h] = x2 * cos + x1 * sin;
        }
    }
}
