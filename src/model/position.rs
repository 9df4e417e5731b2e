//! Positional schemes that are not parameters: the sinusoidal table (Vaswani et al. 2017), ALiBi slopes
//! (Press et al. 2022) and T5's relative-position buckets (Raffel et al. 2020). Learned tables are parameters
//! (`wpe`, `rel_bias`) and RoPE is an op (`Backend::rope`).

/// PE (T, C): PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C)).
pub fn sinusoidal_table(t: usize, c: usize, pos0: usize) -> Vec<f32> {
    let mut pe = vec![0.0f32; t * c];
    for p in 0..t {
        for i in 0..c / 2 {
            let div = (10000f32).powf((2 * i) as f32 / c as f32);
            let a = (pos0 + p) as f32 / div;
            pe[p * c + 2 * i] = a.sin();
            pe[p * c + 2 * i + 1] = a.cos();
        }
    }
    pe
}

/// Head slopes from the ALiBi reference code: geometric 2^(−8/n)^(h+1) for n a power of two; otherwise the
/// slopes of the closest lower power of two followed by every other slope of the next power of two.
pub fn alibi_slopes(n: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (0..n).map(|i| start.powi(i as i32 + 1)).collect()
    }
    fn slopes(n: usize) -> Vec<f64> {
        if n.is_power_of_two() {
            return pow2(n);
        }
        let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
        let mut s = pow2(p);
        s.extend(slopes(2 * p).into_iter().step_by(2).take(n - p));
        s
    }
    slopes(n).into_iter().map(|x| x as f32).collect()
}

/// T5's `_relative_position_bucket` for relative position `rel = key − query`.
pub fn t5_bucket(rel: i64, bidirectional: bool, buckets: usize, max_distance: usize) -> u32 {
    let mut nb = buckets as i64;
    let mut bucket = 0i64;
    let r = if bidirectional {
        nb /= 2;
        if rel > 0 {
            bucket += nb;
        }
        rel.abs()
    } else {
        (-rel).max(0)
    };
    let max_exact = nb / 2;
    if r < max_exact {
        bucket += r;
    } else {
        // Computed in f32 like the reference (torch float32 ops), then truncated.
        let large = max_exact
            + ((r as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln() * (nb - max_exact) as f32) as i64;
        bucket += large.min(nb - 1);
    }
    bucket as u32
}

/// Bucket of every (query i, key j) pair, (T, S); query i sits at absolute position q_offset + i.
pub fn t5_bucket_table(t: usize, s: usize, q_offset: usize, bidirectional: bool, buckets: usize, max_distance: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(t * s);
    for i in 0..t {
        for j in 0..s {
            out.push(t5_bucket(j as i64 - (q_offset + i) as i64, bidirectional, buckets, max_distance));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_match_the_paper_for_eight_heads_and_interleave_for_six() {
        let s8 = alibi_slopes(8);
        let want: Vec<f32> = (1..=8).map(|i| 0.5f32.powi(i)).collect();
        for (a, b) in s8.iter().zip(&want) {
            assert!((a - b).abs() < 1e-7);
        }
        // n = 6: slopes of 4 heads (2^-2, 2^-4, 2^-6, 2^-8), then 8-head slopes 1 and 3 (2^-1.0, 2^-3).
        let s6 = alibi_slopes(6);
        let want6 = [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125];
        for (a, b) in s6.iter().zip(&want6) {
            assert!((a - b).abs() < 1e-7, "{s6:?}");
        }
    }

    #[test]
    fn t5_buckets_are_exact_near_and_logarithmic_far() {
        // bidirectional, 32 buckets, max_distance 128: values from the reference implementation.
        assert_eq!(t5_bucket(0, true, 32, 128), 0);
        assert_eq!(t5_bucket(-3, true, 32, 128), 3);
        assert_eq!(t5_bucket(3, true, 32, 128), 19);
        assert_eq!(t5_bucket(-200, true, 32, 128), 15);
        assert_eq!(t5_bucket(200, true, 32, 128), 31);
        // unidirectional: future keys all land in bucket 0.
        assert_eq!(t5_bucket(5, false, 32, 128), 0);
        assert_eq!(t5_bucket(-5, false, 32, 128), 5);
        assert_eq!(t5_bucket(-1000, false, 32, 128), 31);
    }

    #[test]
    fn sinusoidal_position_zero_is_sin0_cos0() {
        let pe = sinusoidal_table(3, 4, 0);
        assert_eq!(&pe[0..4], &[0.0, 1.0, 0.0, 1.0]);
        assert!((pe[4] - 1f32.sin()).abs() < 1e-7);
    }
}
