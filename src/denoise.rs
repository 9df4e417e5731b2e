//! The encoder-decoder's denoising objectives, drawn from a text corpus: T5's span corruption (Raffel et al.
//! 2020, §3.1.4 and `random_spans_noise_mask` in google-research/text-to-text-transfer-transformer) and BART's
//! text infilling (Lewis et al. 2020, §2.2 and fairseq's `DenoisingDataset`). The exact rules, and where they
//! differ from the reference code, are in docs/MODEL.md, "Denoising objectives"; the lengths in
//! `config::DenoiseLengths`.

use crate::config::{DenoiseLengths, Task};
use crate::rng::Rng;

/// One corrupted example. `spans` are the (start, length) of the removed spans in `original`, in order (a length-0
/// span of text infilling is an inserted [MASK]); they are what the view and the tests put back.
#[derive(Clone, Debug, PartialEq)]
pub struct Corrupted {
    /// The uncorrupted tokens the example was made from.
    pub original: Vec<u32>,
    /// The encoder's input, exactly `DenoiseLengths::source` tokens.
    pub source: Vec<u32>,
    /// What the decoder learns to produce: span corruption's sentinel list, or text infilling's original text.
    pub target: Vec<u32>,
    pub spans: Vec<(usize, usize)>,
}

/// `k` distinct integers from `0..n`, sorted (a partial Fisher–Yates shuffle).
fn choose_sorted(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        all.swap(i, j);
    }
    let mut out = all[..k].to_vec();
    out.sort_unstable();
    out
}

/// `items` split into `segments` non-empty parts, uniformly over all such splits (T5's `_random_segmentation`).
fn random_segmentation(rng: &mut Rng, items: usize, segments: usize) -> Vec<usize> {
    let cuts = choose_sorted(rng, items - 1, segments - 1);
    let mut lens = Vec::with_capacity(segments);
    let mut prev = 0;
    for c in cuts {
        lens.push(c + 1 - prev);
        prev = c + 1;
    }
    lens.push(items - prev);
    lens
}

/// A Poisson(λ) draw (Knuth's product of uniforms; λ is small).
fn poisson(rng: &mut Rng, lambda: f64) -> usize {
    let limit = (-lambda).exp();
    let (mut k, mut p) = (0, rng.uniform());
    while p > limit && k < 1000 {
        k += 1;
        p *= rng.uniform();
    }
    k
}

/// T5 span corruption of `x` (the `window` tokens of `DenoiseLengths`): round(0.15·n) noise tokens in
/// round(noise/3) spans; noise and kept tokens each split uniformly into that many non-empty spans, interleaved
/// kept first (so the source ends with a sentinel). Source: each noise span replaced by the next sentinel;
/// target: each sentinel followed by its span, then one final sentinel. `sentinels[i]` is the id of `[S{i}]`.
pub fn span_corruption(x: &[u32], sentinels: &[u32], rng: &mut Rng) -> Corrupted {
    let n = x.len();
    let noise = DenoiseLengths::span_noise(n);
    let k = DenoiseLengths::span_count(noise);
    let noise_lens = random_segmentation(rng, noise, k);
    let kept_lens = random_segmentation(rng, n - noise, k);
    let (mut source, mut target, mut spans) = (vec![], vec![], vec![]);
    let mut at = 0;
    for i in 0..k {
        source.extend_from_slice(&x[at..at + kept_lens[i]]);
        at += kept_lens[i];
        source.push(sentinels[i]);
        target.push(sentinels[i]);
        target.extend_from_slice(&x[at..at + noise_lens[i]]);
        spans.push((at, noise_lens[i]));
        at += noise_lens[i];
    }
    target.push(sentinels[k]);
    Corrupted { original: x.to_vec(), source, target, spans }
}

/// BART text infilling into a source of exactly `source_len` tokens, from `x` (the `window` tokens of
/// `DenoiseLengths`). Span lengths are drawn from Poisson(3) until they sum to at least ceil(0.3·n), the last
/// trimmed so they sum to exactly that (fairseq); the original length n is the longest prefix of `x` whose
/// corrupted length n − ceil(0.3·n) + spans is `source_len` (a new draw when no n gives it). The spans, in the
/// order drawn, are placed with at least one kept token between two of them (so each [MASK] stands for one span),
/// the kept tokens spread uniformly over the gaps; each span becomes one [MASK] (a length-0 span inserts one).
/// The target is the original n tokens.
pub fn text_infilling(x: &[u32], source_len: usize, mask: u32, rng: &mut Rng) -> Corrupted {
    loop {
        let mut lens: Vec<usize> = vec![];
        let (mut sum, mut best) = (0, None);
        for n in 1..x.len() {
            let m = DenoiseLengths::infill_masked(n);
            while sum < m {
                let l = poisson(rng, 3.0);
                lens.push(l);
                sum += l;
            }
            let k = lens.len();
            let len = n - m + k;
            if len == source_len {
                best = Some((n, m, k));
            } else if len > source_len {
                break;
            }
        }
        let Some((n, m, k)) = best else { continue };
        let mut spans_len = lens[..k].to_vec();
        spans_len[k - 1] -= spans_len[..k].iter().sum::<usize>() - m;
        let kept = n - m;
        if kept + 1 < k {
            continue;
        }
        // Gaps g_0..g_k of kept tokens, g_1..g_{k-1} ≥ 1: the r = kept − (k − 1) free tokens go to k + 1 gaps by
        // stars and bars (k bars among r + k places).
        let r = kept + 1 - k;
        let bars = choose_sorted(rng, r + k, k);
        let mut gaps = Vec::with_capacity(k + 1);
        let mut prev = 0;
        for (i, &b) in bars.iter().enumerate() {
            gaps.push(b - prev + usize::from(i > 0));
            prev = b + 1;
        }
        gaps.push(r + k - prev);
        let (mut source, mut spans, mut at) = (vec![], vec![], 0);
        for i in 0..k {
            source.extend_from_slice(&x[at..at + gaps[i]]);
            at += gaps[i];
            source.push(mask);
            spans.push((at, spans_len[i]));
            at += spans_len[i];
        }
        source.extend_from_slice(&x[at..at + gaps[k]]);
        debug_assert_eq!(at + gaps[k], n);
        return Corrupted { original: x[..n].to_vec(), source, target: x[..n].to_vec(), spans };
    }
}

/// One example of `task` from the corpus window `x` (`DenoiseLengths::window` tokens). `specials`: the ids of the
/// sentinels (span corruption) or of [MASK] (text infilling).
pub fn corrupt(task: Task, lens: &DenoiseLengths, x: &[u32], specials: &[u32], rng: &mut Rng) -> Corrupted {
    match task {
        Task::SpanCorruption => span_corruption(x, specials, rng),
        _ => text_infilling(x, lens.source, specials[0], rng),
    }
}

/// The original text with the spans put back: span corruption's source with each sentinel replaced by the tokens
/// that follow it in `target` (up to the next sentinel), or text infilling's source with the i-th [MASK] replaced
/// by `fills[i]`. `is_special` tells the sentinels and [MASK] from text.
pub fn put_back(source: &[u32], fills: &[Vec<u32>], is_special: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut out = vec![];
    let mut i = 0;
    for &t in source {
        if is_special(t) {
            if let Some(f) = fills.get(i) {
                out.extend_from_slice(f);
            }
            i += 1;
        } else {
            out.push(t);
        }
    }
    out
}

/// Span corruption's target cut at its sentinels: the tokens after each sentinel, in order (the part after the
/// final sentinel, and anything before the first, are dropped).
pub fn target_spans(target: &[u32], is_sentinel: impl Fn(u32) -> bool) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = vec![];
    for &t in target {
        if is_sentinel(t) {
            out.push(vec![]);
        } else if let Some(last) = out.last_mut() {
            last.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_segmentation_splits_into_non_empty_parts_that_sum() {
        let mut rng = Rng::new(1);
        for (items, segs) in [(10, 3), (5, 5), (7, 1), (100, 30)] {
            let l = random_segmentation(&mut rng, items, segs);
            assert_eq!(l.len(), segs);
            assert_eq!(l.iter().sum::<usize>(), items);
            assert!(l.iter().all(|&x| x >= 1));
        }
    }

    #[test]
    fn poisson_three_has_mean_and_variance_three() {
        let mut rng = Rng::new(2);
        let xs: Vec<f64> = (0..50_000).map(|_| poisson(&mut rng, 3.0) as f64).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - 3.0).abs() < 0.05, "{mean}");
        assert!((var - 3.0).abs() < 0.1, "{var}");
    }
}
