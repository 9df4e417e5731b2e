//! Cross-entropy, fused with softmax and its gradient.

/// Rows with target −1 are ignored. Returns (Σ loss, count of counted rows); dlogits = (softmax − onehot)·dscale.
pub fn cross_entropy(dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, dscale: f32) -> (f64, usize) {
    let (mut total, mut count) = (0.0f64, 0usize);
    for (r, &t) in targets.iter().enumerate() {
        let (l, d) = (&logits[r * v..(r + 1) * v], &mut dlogits[r * v..(r + 1) * v]);
        if t < 0 {
            d.fill(0.0);
            continue;
        }
        let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = l.iter().map(|&x| ((x - max) as f64).exp()).sum();
        let lse = max as f64 + sum.ln();
        total += lse - l[t as usize] as f64;
        count += 1;
        for i in 0..v {
            let p = ((l[i] as f64) - lse).exp() as f32;
            d[i] = (p - if i == t as usize { 1.0 } else { 0.0 }) * dscale;
        }
    }
    (total, count)
}
