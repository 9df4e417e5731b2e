//! One Mixture-of-Experts routing case through every routing op of a backend, shared by the CPU-vs-reference and
//! GPU-vs-reference tests: route n tokens among e experts (top k, capacity cap), gather each expert's rows, stand in
//! for its FFN (ye = 1.5·xe + ex, so the experts differ), combine; then the backward of all of it.

use transformer_playground::backend::{moe_stats_len, on_host, Host, Routing};
use transformer_playground::rng::Rng;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// [probs, choice, slot, weight, stats, out, dx, dweight, dlogits]. Row 0's two largest logits are equal, so the
/// tie rule (the lower index first) is exercised.
pub fn moe_case(be: &impl Host, n: usize, e: usize, k: usize, cap: usize, c: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let mut logits = randn(&mut rng, n * e);
    logits[e - 1] = 5.0;
    logits[1] = 5.0;
    let (mut probs, mut choice, mut slot, mut weight) = (vec![0.0; n * e], vec![0.0; n * k], vec![0.0; n * k], vec![0.0; n * k]);
    let mut stats = vec![0.0; moe_stats_len(e)];
    on_host(be.moe_route(&mut probs, &mut choice, &mut slot, &mut weight, &mut stats, &logits, n, e, k, cap));
    let r = Routing { choice: &choice[..], slot: &slot[..], weight: &weight[..], n, k };
    let x = randn(&mut rng, n * c);
    let mut out = vec![0.0; n * c];
    let mut ye_all = vec![];
    for ex in 0..e {
        let mut xe = vec![f32::NAN; cap * c];
        on_host(be.moe_gather(&mut xe, &x, r, ex, cap, c));
        let ye: Vec<f32> = xe.iter().map(|v| 1.5 * v + ex as f32).collect();
        on_host(be.moe_combine(&mut out, &ye, r, ex, cap, c));
        ye_all.push(ye);
    }
    let dout = randn(&mut rng, n * c);
    let (mut dx, mut dweight) = (vec![0.0; n * c], vec![0.0; n * k]);
    for (ex, ye) in ye_all.iter().enumerate() {
        let mut dye = vec![0.0; cap * c];
        on_host(be.moe_combine_backward(&mut dye, &mut dweight, &dout, ye, r, ex, cap, c));
        on_host(be.moe_scatter(&mut dx, &dye, r, ex, cap, c));
    }
    let mut dlogits = vec![0.0; n * e];
    on_host(be.moe_route_backward(&mut dlogits, &dweight, &probs, r, &stats, e, 0.3));
    vec![probs, choice, slot, weight, stats, out, dx, dweight, dlogits]
}
