//! RLHF's losses as plain functions of their inputs, with their gradients computed here on the host (each checked
//! against PyTorch in tests/rlhf.rs, fixture `rlhf_losses`, and by finite differences). The recipe pushes the
//! gradients wrt the logits and the values through the model with `Model::backward_with`.
//!
//! Shapes: a batch of B sequences each with L completion tokens; per-token arrays are (B, L) row-major.

/// log softmax of one row of logits (f64 inside).
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// The reward model's pairs for groups of `k` completions of one prompt (`scores` (G·k), group after group): every
/// pair of a group whose preference scores differ, as (winner, loser) indices into `scores`; ties are skipped.
/// At most C(k,2) a group, in order (i < j).
pub fn rm_pairs(scores: &[f32], k: usize) -> Vec<(usize, usize)> {
    let mut pairs = vec![];
    for g in 0..scores.len() / k.max(1) {
        for i in g * k..(g + 1) * k {
            for j in i + 1..(g + 1) * k {
                if scores[i] > scores[j] {
                    pairs.push((i, j));
                } else if scores[j] > scores[i] {
                    pairs.push((j, i));
                }
            }
        }
    }
    pairs
}

/// The reward model's loss (Ouyang et al. 2022, eq. 1): mean over the pairs of −log σ(r_w − r_l), and its gradient
/// wrt every reward. With no pair the loss is 0 and the gradient zeros.
pub fn pairwise_loss(rewards: &[f32], pairs: &[(usize, usize)]) -> (f32, Vec<f32>) {
    let mut d = vec![0.0f32; rewards.len()];
    if pairs.is_empty() {
        return (0.0, d);
    }
    let n = pairs.len() as f64;
    let mut loss = 0.0f64;
    for &(w, l) in pairs {
        let x = (rewards[w] - rewards[l]) as f64;
        // −log σ(x) = softplus(−x), computed stably; d/dx = −σ(−x).
        loss += if x > 0.0 { (-x).exp().ln_1p() } else { -x + x.exp().ln_1p() };
        let g = -1.0 / (1.0 + x.exp());
        d[w] += (g / n) as f32;
        d[l] -= (g / n) as f32;
    }
    ((loss / n) as f32, d)
}

/// The fraction of pairs the rewards order as the preference does (r_w > r_l); NaN when there is no pair.
pub fn pairwise_accuracy(rewards: &[f32], pairs: &[(usize, usize)]) -> f32 {
    if pairs.is_empty() {
        return f32::NAN;
    }
    pairs.iter().filter(|&&(w, l)| rewards[w] > rewards[l]).count() as f32 / pairs.len() as f32
}

/// Per-token rewards (B, L): −β·(log π_old − log π_SFT) at every completion token (the KL penalty, Ouyang et al.
/// 2022 eq. 2, estimated on the sampled tokens), plus the reward model's score of each sequence at its last token.
pub fn kl_rewards(logp: &[f32], logp_ref: &[f32], score: &[f32], l: usize, beta: f32) -> Vec<f32> {
    let mut r: Vec<f32> = logp.iter().zip(logp_ref).map(|(&p, &q)| -beta * (p - q)).collect();
    for (b, &s) in score.iter().enumerate() {
        r[b * l + l - 1] += s;
    }
    r
}

/// Generalised advantage estimation (Schulman et al. 2016) per sequence of L steps, with V after the last token 0
/// (the episode ends there): δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}; returns A + V.
pub fn gae(rewards: &[f32], values: &[f32], l: usize, gamma: f32, lam: f32) -> (Vec<f32>, Vec<f32>) {
    let mut adv = vec![0.0f32; rewards.len()];
    for b in 0..rewards.len() / l.max(1) {
        let mut next = 0.0f32;
        for t in (0..l).rev() {
            let i = b * l + t;
            let v_next = if t + 1 < l { values[i + 1] } else { 0.0 };
            let delta = rewards[i] + gamma * v_next - values[i];
            next = delta + gamma * lam * next;
            adv[i] = next;
        }
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitens in place over the whole batch: (x − mean) / (std + 1e-8), std the population standard deviation.
pub fn whiten(x: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let s = var.sqrt() + 1e-8;
    x.iter_mut().for_each(|v| *v = ((*v as f64 - mean) / s) as f32);
}

/// The clipped policy objective's value and gradient.
pub struct PolicyLoss {
    /// mean over tokens of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = exp(log π − log π_old).
    pub loss: f32,
    /// (N, V) ∂loss/∂logits.
    pub dlogits: Vec<f32>,
    /// (N) log π of each action under these logits.
    pub logp: Vec<f32>,
    /// The fraction of tokens where the clipped term is the larger (no gradient).
    pub clipfrac: f32,
}

/// PPO's clipped surrogate (Schulman et al. 2017, eq. 7, as a loss to minimise) over N tokens: `logits` (N, V), the
/// actions taken, their log-probabilities when sampled and their advantages. Where the clipped term is the larger
/// the gradient is 0; elsewhere ∂/∂log π = −A·ρ/N, and ∂log π/∂logits = onehot(action) − softmax.
pub fn policy_loss(logits: &[f32], v: usize, actions: &[u32], logp_old: &[f32], adv: &[f32], eps: f32) -> PolicyLoss {
    let n = actions.len();
    let mut dlogits = vec![0.0f32; n * v];
    let (mut loss, mut clipped, mut logp) = (0.0f64, 0usize, vec![0.0f32; n]);
    for i in 0..n {
        let ls = log_softmax(&logits[i * v..(i + 1) * v]);
        let a = actions[i] as usize;
        logp[i] = ls[a];
        let ratio = ((ls[a] - logp_old[i]) as f64).exp();
        let adv = adv[i] as f64;
        let unclipped = -adv * ratio;
        let clip = -adv * ratio.clamp(1.0 - eps as f64, 1.0 + eps as f64);
        loss += unclipped.max(clip);
        if clip > unclipped {
            clipped += 1;
            continue;
        }
        let g = -adv * ratio / n as f64;
        let row = &mut dlogits[i * v..(i + 1) * v];
        for (j, d) in row.iter_mut().enumerate() {
            *d = (g * ((j == a) as u8 as f64 - (ls[j] as f64).exp())) as f32;
        }
    }
    let nf = n.max(1) as f64;
    PolicyLoss { loss: (loss / nf) as f32, dlogits, logp, clipfrac: clipped as f32 / nf as f32 }
}

/// The value loss and its gradient wrt the values: ½·mean (V − R)², or with `clip` = Some(c) (Huang et al. 2022,
/// detail 9) ½·mean max((V − R)², (V_clip − R)²), V_clip = V_old + clamp(V − V_old, −c, c).
pub fn value_loss(values: &[f32], old: &[f32], returns: &[f32], clip: Option<f32>) -> (f32, Vec<f32>) {
    let n = values.len().max(1) as f64;
    let (mut loss, mut d) = (0.0f64, vec![0.0f32; values.len()]);
    for i in 0..values.len() {
        let (v, r) = (values[i] as f64, returns[i] as f64);
        let plain = (v - r).powi(2);
        let (sq, g) = match clip {
            Some(c) => {
                let delta = v - old[i] as f64;
                let vc = old[i] as f64 + delta.clamp(-c as f64, c as f64);
                let sq_c = (vc - r).powi(2);
                // Past the clip range V_clip does not move with V.
                let inside = delta.abs() < c as f64;
                if sq_c > plain { (sq_c, if inside { vc - r } else { 0.0 }) } else { (plain, v - r) }
            }
            None => (plain, v - r),
        };
        loss += 0.5 * sq;
        d[i] = (g / n) as f32;
    }
    ((loss / n) as f32, d)
}
