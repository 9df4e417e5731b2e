//! Mixture-of-Experts routing, the reference: the router's softmax and top-k, the capacity, the balancing loss
//! (Switch Transformer, Fedus et al. 2021), and moving rows between the tokens and their experts. The experts
//! themselves are FFNs made of the usual ops (matmul, activation). docs/MODEL.md "Mixture-of-Experts".
//!
//! Assignment a = token·k + j is the token's j-th choice; `choice[a]` its expert, `slot[a]` its row among the
//! expert's rows (−1: dropped), `weight[a]` its weight. Integers are held as f32 (exact below 2²⁴).

use crate::backend::Routing;

/// The assignments to expert `ex` that have a row below `rows`: (assignment, token, row).
fn assigned<'a>(r: &'a Routing<&'a [f32]>, ex: usize, rows: usize) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
    (0..r.n * r.k).filter_map(move |a| {
        let s = r.slot[a];
        (r.choice[a] as usize == ex && s >= 0.0 && (s as usize) < rows).then(|| (a, a / r.k, s as usize))
    })
}

/// See `Backend::moe_route`.
#[allow(clippy::too_many_arguments)]
pub fn moe_route(
    probs: &mut [f32],
    choice: &mut [f32],
    slot: &mut [f32],
    weight: &mut [f32],
    stats: &mut [f32],
    logits: &[f32],
    n: usize,
    e: usize,
    k: usize,
    cap: usize,
) {
    let mut counts = vec![0usize; e];
    let mut mean_p = vec![0.0f64; e];
    let mut dropped = 0usize;
    for i in 0..n {
        let (row, p) = (&logits[i * e..(i + 1) * e], &mut probs[i * e..(i + 1) * e]);
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0.0f32;
        for (p, &x) in p.iter_mut().zip(row) {
            *p = (x - max).exp();
            sum += *p;
        }
        p.iter_mut().for_each(|p| *p /= sum);
        p.iter().zip(&mut mean_p).for_each(|(&p, m)| *m += p as f64);
        // The k most probable experts, best first; a tie goes to the lower index.
        let mut top: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..k {
            let best = (0..e).filter(|x| !top.contains(x)).fold(None, |b: Option<usize>, x| match b {
                Some(b) if p[b] >= p[x] => Some(b),
                _ => Some(x),
            });
            top.push(best.expect("k ≤ e"));
        }
        let total: f32 = top.iter().map(|&x| p[x]).sum();
        for (j, &x) in top.iter().enumerate() {
            let a = i * k + j;
            choice[a] = x as f32;
            weight[a] = p[x] / total;
            slot[a] = if counts[x] < cap { counts[x] as f32 } else { -1.0 };
            dropped += (counts[x] >= cap) as usize;
            counts[x] += 1;
        }
    }
    let balance: f64 = (0..e).map(|x| counts[x] as f64 / (n * k) as f64 * mean_p[x] / n as f64).sum();
    stats[0] = (e as f64 * balance) as f32;
    stats[1] = dropped as f32;
    for x in 0..e {
        stats[2 + x] = counts[x] as f32;
    }
}

/// See `Backend::moe_route_backward`.
pub fn moe_route_backward(dlogits: &mut [f32], dweight: &[f32], probs: &[f32], r: Routing<&[f32]>, stats: &[f32], e: usize, aux: f32) {
    let (n, k) = (r.n, r.k);
    let mut dp = vec![0.0f32; e];
    for i in 0..n {
        let p = &probs[i * e..(i + 1) * e];
        dp.fill(0.0);
        // w_j = p_j / Σ p: ∂w/∂p_m = (dw_m − Σ_j dw_j·w_j) / Σ p.
        let assignments = i * k..(i + 1) * k;
        let total: f32 = assignments.clone().map(|a| p[r.choice[a] as usize]).sum();
        let dot: f32 = assignments.clone().map(|a| dweight[a] * r.weight[a]).sum();
        for a in assignments {
            dp[r.choice[a] as usize] += (dweight[a] - dot) / total;
        }
        if aux != 0.0 {
            // aux · E · Σ_e f_e · (1/N) Σ_i p_ie, with f_e held constant.
            for (x, dp) in dp.iter_mut().enumerate() {
                *dp += aux * e as f32 * (stats[2 + x] / (n * k) as f32) / n as f32;
            }
        }
        let s: f32 = p.iter().zip(&dp).map(|(p, d)| p * d).sum();
        for x in 0..e {
            dlogits[i * e + x] += p[x] * (dp[x] - s);
        }
    }
}

/// See `Backend::moe_gather`.
pub fn moe_gather(xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) {
    xe[..rows * c].fill(0.0);
    for (_, t, s) in assigned(&r, ex, rows) {
        xe[s * c..(s + 1) * c].copy_from_slice(&x[t * c..(t + 1) * c]);
    }
}

/// See `Backend::moe_scatter`.
pub fn moe_scatter(dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) {
    for (_, t, s) in assigned(&r, ex, rows) {
        dx[t * c..(t + 1) * c].iter_mut().zip(&dxe[s * c..(s + 1) * c]).for_each(|(d, g)| *d += g);
    }
}

/// See `Backend::moe_combine`.
pub fn moe_combine(out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) {
    for (a, t, s) in assigned(&r, ex, rows) {
        let w = r.weight[a];
        out[t * c..(t + 1) * c].iter_mut().zip(&ye[s * c..(s + 1) * c]).for_each(|(o, y)| *o += w * y);
    }
}

/// See `Backend::moe_combine_backward`.
#[allow(clippy::too_many_arguments)]
pub fn moe_combine_backward(dye: &mut [f32], dweight: &mut [f32], dout: &[f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) {
    for (a, t, s) in assigned(&r, ex, rows) {
        let (w, d, y) = (r.weight[a], &dout[t * c..(t + 1) * c], &ye[s * c..(s + 1) * c]);
        dye[s * c..(s + 1) * c].iter_mut().zip(d).for_each(|(g, d)| *g += w * d);
        dweight[a] += d.iter().zip(y).map(|(d, y)| d * y).sum::<f32>();
    }
}

// -- Grouped: every expert's rows in one buffer, expert-major (see `Backend::groups_experts`) -------------------

/// Each expert with rows: (expert, its first row in the grouped buffer, its rows).
pub fn expert_groups(rows: &[usize]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let starts = rows.iter().scan(0, |at, &n| {
        *at += n;
        Some(*at - n)
    });
    rows.iter().zip(starts).enumerate().filter(|(_, (&n, _))| n > 0).map(|(ex, (&n, start))| (ex, start, n))
}

/// See `Backend::moe_gather_grouped`.
pub fn moe_gather_grouped(xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    for (ex, start, n) in expert_groups(rows) {
        moe_gather(&mut xe[start * c..], x, r, ex, n, c);
    }
}

/// See `Backend::moe_scatter_grouped`.
pub fn moe_scatter_grouped(dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    for (ex, start, n) in expert_groups(rows) {
        moe_scatter(dx, &dxe[start * c..], r, ex, n, c);
    }
}

/// See `Backend::moe_combine_grouped`.
pub fn moe_combine_grouped(out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    for (ex, start, n) in expert_groups(rows) {
        moe_combine(out, &ye[start * c..], r, ex, n, c);
    }
}

/// See `Backend::moe_combine_backward_grouped`.
#[allow(clippy::too_many_arguments)]
pub fn moe_combine_backward_grouped(dye: &mut [f32], dweight: &mut [f32], dout: &[f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    for (ex, start, n) in expert_groups(rows) {
        moe_combine_backward(&mut dye[start * c..], dweight, dout, &ye[start * c..], r, ex, n, c);
    }
}

/// See `Backend::matmul_grouped_forward`: `matmul_forward` over each expert's rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul_grouped_forward(out: &mut [f32], inp: &[f32], w: &[&[f32]], b: &[Option<&[f32]>], rows: &[usize], c: usize, oc: usize) {
    for (ex, start, n) in expert_groups(rows) {
        super::matmul_forward(&mut out[start * oc..], &inp[start * c..], w[ex], b[ex], n, c, oc);
    }
}

/// See `Backend::matmul_grouped_backward`: `matmul_backward` over each expert's rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul_grouped_backward(
    dinp: &mut [f32],
    mut dw: Vec<&mut [f32]>,
    mut db: Vec<Option<&mut [f32]>>,
    dout: &[f32],
    inp: &[f32],
    w: &[&[f32]],
    rows: &[usize],
    c: usize,
    oc: usize,
) {
    for (ex, start, n) in expert_groups(rows) {
        let (dinp, dout, inp) = (&mut dinp[start * c..], &dout[start * oc..], &inp[start * c..]);
        super::matmul_backward(Some(dinp), &mut *dw[ex], db[ex].as_deref_mut(), dout, inp, w[ex], n, c, oc);
    }
}
