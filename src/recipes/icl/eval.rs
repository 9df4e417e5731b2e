//! In-context learning measured with no weight update: the accuracy on held-out rules against the number of
//! in-context examples k, and each head's induction score.
//!
//! **Accuracy by k.** `eval_episodes` episodes of held-out rules (`Recipe::stream(3)`); for each k = 0..pairs−1 the
//! model reads `rules::prompt(episode, k)` — k example pairs, then the query's input and `>` — and writes
//! `length` characters greedily (`generate::generate`, temperature 0, over the KV cache). Exact match: the answer
//! equals the query's output; character accuracy: the share of its positions that do. The same queries at every
//! k, so the curve compares like with like. Chance is (1/alphabet)^length exact and 1/alphabet per character.
//!
//! **Induction score** (Olsson et al. 2022; TransformerLens's `induction_score`): on a sequence of R random letters
//! (inputs' and outputs' alike) followed by the same R letters again (R = ⌊ctx_len/2⌋), a head's mean attention from each position i of the
//! second copy to position i − R + 1 — the token right after the same token's occurrence in the first copy, which
//! an induction head attends to so it can copy what came next. Averaged over `induction_sequences` sequences
//! (`Recipe::stream(4)`). With a small alphabet a letter recurs within a copy too; the score counts only the
//! aligned position, as the cited definition does. A head attending uniformly over its causal prefix scores
//! `uniform` = mean over i of 1/(i+1): the score to beat.
//!
//! **Look-up score** (the same idea on the corpus's own format): on the held-out episodes whose rule does not
//! reverse, the attention from each position that predicts an output letter (the `>`, or the output letter
//! before) to the output letters at the same place in earlier pairs whose input letter there is the same — the
//! earlier answer a model that looks the letter up would copy (`lookup_targets`). Random repeated letters have no
//! `>`, so a head keyed to the format can score low on the induction score and high here.

use super::rules::{self, Episode, Family, RuleSplit};
use super::Recipe;
use crate::backend::Host;
use crate::config::Task;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{self, SampleOptions};
use crate::model::Model;
use serde::Serialize;
use std::collections::BTreeMap;

/// Exact-match and per-character accuracy of a set of answers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Score {
    /// Share of answers equal to their truth.
    pub exact: f32,
    /// Share of the truths' characters matched at their position (a short answer misses the rest).
    pub chars: f32,
}

/// Scores answers against truths, pairwise; (0, 0) for none.
pub fn score(answers: &[String], truths: &[String]) -> Score {
    let (mut exact, mut right, mut total) = (0usize, 0usize, 0usize);
    for (a, t) in answers.iter().zip(truths) {
        exact += (a == t) as usize;
        right += a.chars().zip(t.chars()).filter(|(x, y)| x == y).count();
        total += t.chars().count();
    }
    Score { exact: exact as f32 / answers.len().max(1) as f32, chars: right as f32 / total.max(1) as f32 }
}

/// The accuracies of one group of episodes at k = 0..pairs−1.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Curve {
    pub episodes: usize,
    pub accuracy_by_k: Vec<f32>,
    pub char_accuracy_by_k: Vec<f32>,
}

/// What a model that learned nothing in context would score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Baseline {
    /// A uniformly random answer: (1/alphabet)^length.
    pub chance: f32,
    /// A uniformly random character: 1/alphabet.
    pub chance_chars: f32,
    /// The model itself with no example (k = 0): what it gets from the query alone.
    pub k0_accuracy: f32,
    pub k0_char_accuracy: f32,
}

/// One query, as the model answered it with the most examples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub family: Family,
    pub prompt: String,
    pub answer: String,
    pub truth: String,
}

/// Accuracy on held-out rules by k: over all episodes, and per family.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IclAccuracy {
    /// The numbers of in-context examples: 0..pairs−1.
    pub k: Vec<usize>,
    #[serde(flatten)]
    pub all: Curve,
    pub by_family: BTreeMap<Family, Curve>,
    pub baseline: Baseline,
    /// The first few episodes' queries at the largest k.
    pub examples: Vec<Example>,
}

/// The model's greedy answer to a prompt: `n` characters.
pub fn answer<H: Host>(model: &Model, be: &H, tok: &Tokenizer, prompt: &str, n: usize) -> Result<String> {
    let o = SampleOptions { max_tokens: n, temperature: 0.0, ..Default::default() };
    generate::generate(model, be, tok, prompt, &o, |_| {})
}

/// The held-out episodes an evaluation asks about (`Recipe::stream(3)`).
pub fn eval_episodes(recipe: &Recipe) -> Result<Vec<Episode>> {
    let (shape, mut rng) = (recipe.icl.shape(), recipe.stream(3));
    (0..recipe.icl.eval_episodes)
        .map(|_| rules::episode(&shape, RuleSplit::HeldOut, &mut rng).map_err(Error::Invalid))
        .collect()
}

/// Accuracy on held-out rules against k, with no weight update (see the module's doc).
pub fn accuracy_by_k<H: Host>(model: &Model, be: &H, tok: &Tokenizer, recipe: &Recipe) -> Result<IclAccuracy> {
    let eps = eval_episodes(recipe)?;
    let ks: Vec<usize> = (0..recipe.icl.pairs).collect();
    let truths: Vec<String> = eps.iter().map(rules::answer).collect();
    // answers[k][e]: episode e's answer from k examples.
    let answers: Vec<Vec<String>> =
        ks.iter().map(|&k| eps.iter().map(|ep| answer(model, be, tok, &rules::prompt(ep, k), recipe.icl.length)).collect()).collect::<Result<_>>()?;
    let curve = |which: &dyn Fn(&Episode) -> bool| {
        let keep: Vec<usize> = (0..eps.len()).filter(|&e| which(&eps[e])).collect();
        let pick = |xs: &[String]| keep.iter().map(|&e| xs[e].clone()).collect::<Vec<String>>();
        let scores: Vec<Score> = answers.iter().map(|a| score(&pick(a), &pick(&truths))).collect();
        Curve { episodes: keep.len(), accuracy_by_k: scores.iter().map(|s| s.exact).collect(), char_accuracy_by_k: scores.iter().map(|s| s.chars).collect() }
    };
    let all = curve(&|_| true);
    let by_family = recipe.icl.families.iter().map(|&f| (f, curve(&|ep: &Episode| ep.rule.family == f))).collect();
    let n = recipe.icl.alphabet as f32;
    let baseline = Baseline {
        chance: n.powi(-(recipe.icl.length as i32)),
        chance_chars: 1.0 / n,
        k0_accuracy: all.accuracy_by_k[0],
        k0_char_accuracy: all.char_accuracy_by_k[0],
    };
    let last = ks.len() - 1;
    let examples = eps
        .iter()
        .zip(&answers[last])
        .take(3)
        .map(|(ep, a)| Example { family: ep.rule.family, prompt: rules::prompt(ep, last), answer: a.clone(), truth: rules::answer(ep) })
        .collect();
    Ok(IclAccuracy { k: ks, all, by_family, baseline, examples })
}

/// Each head's induction score on one layer's attention map: `probs` (heads, t, t) over a sequence whose second
/// half repeats its first r tokens (t ≥ 2r); the mean over i = r..2r−1 of probs[h, i, i − r + 1].
pub fn induction_score(probs: &[f32], heads: usize, t: usize, r: usize) -> Vec<f32> {
    (0..heads)
        .map(|h| {
            let row = |i: usize| &probs[(h * t + i) * t..(h * t + i + 1) * t];
            (r..2 * r).map(|i| row(i)[i - r + 1]).sum::<f32>() / r as f32
        })
        .collect()
}

/// The head with the highest induction score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BestHead {
    pub layer: usize,
    pub head: usize,
    pub score: f32,
}

/// Induction scores of every layer and head (see the module's doc).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Induction {
    /// R: the length of each copy.
    pub length: usize,
    pub sequences: usize,
    /// (layers, heads): each head's mean score.
    pub scores: Vec<Vec<f32>>,
    pub best: BestHead,
    /// What a head attending uniformly over its prefix would score.
    pub uniform: f32,
}

/// Induction scores of the model's heads over random letters repeated twice.
pub fn induction<H: Host>(model: &Model, be: &H, tok: &Tokenizer, recipe: &Recipe) -> Result<Induction> {
    let r = model.cfg.ctx_len / 2;
    if r < 2 {
        return Err(Error::Invalid(format!("induction scores need ctx_len >= 4, got {}", model.cfg.ctx_len)));
    }
    let (n, seqs) = (recipe.icl.alphabet, recipe.icl.induction_sequences);
    let mut rng = recipe.stream(4);
    let mut sums: Vec<Vec<f32>> = vec![];
    for _ in 0..seqs {
        // Random letters of either side (`a`.., `A`..).
        let half: String = (0..r).map(|_| rng.below(2 * n) as u8).map(|c| if (c as usize) < n { rules::letters(&[c]) } else { rules::capitals(&[c - n as u8]) }).collect();
        let text = half.repeat(2);
        let maps = crate::probe::attention_maps(model, be, tok, Task::Text, &text, None)?;
        let layers: Vec<Vec<f32>> = maps.maps.iter().filter(|m| m.kind == "self").map(|m| induction_score(&m.probs, m.heads, m.t, r)).collect();
        if sums.is_empty() {
            sums = layers;
        } else {
            sums.iter_mut().zip(&layers).for_each(|(s, l)| s.iter_mut().zip(l).for_each(|(a, b)| *a += b));
        }
    }
    let scores: Vec<Vec<f32>> = sums.iter().map(|l| l.iter().map(|s| s / seqs as f32).collect()).collect();
    let uniform = (r..2 * r).map(|i| 1.0 / (i + 1) as f32).sum::<f32>() / r as f32;
    Ok(Induction { length: r, sequences: seqs, best: best_head(&scores), scores, uniform })
}

/// The highest score of a (layers, heads) table (the first, on a tie).
fn best_head(scores: &[Vec<f32>]) -> BestHead {
    let mut best = BestHead { layer: 0, head: 0, score: f32::NEG_INFINITY };
    for (layer, hs) in scores.iter().enumerate() {
        for (head, &score) in hs.iter().enumerate() {
            if score > best.score {
                best = BestHead { layer, head, score };
            }
        }
    }
    best
}

/// Where the look-up of an episode's text (`\n` and its pairs, without the final newline) should attend: for each
/// position that predicts an output letter j of a pair (its `>` for j = 0, its output letter j − 1 after), the
/// positions of output letter j of the earlier pairs whose input letter j is the same. Positions without such an
/// earlier pair are left out.
pub fn lookup_targets(ep: &Episode, length: usize) -> Vec<(usize, Vec<usize>)> {
    let start = |i: usize| 1 + i * (2 * length + 2);
    let mut out = vec![];
    for (q, (xq, _)) in ep.pairs.iter().enumerate() {
        for (j, x) in xq.iter().enumerate().take(length) {
            let targets: Vec<usize> = (0..q).filter(|&i| ep.pairs[i].0[j] == *x).map(|i| start(i) + length + 1 + j).collect();
            if !targets.is_empty() {
                out.push((start(q) + length + j, targets));
            }
        }
    }
    out
}

/// Each head's look-up score on one layer's attention map (`probs` (heads, t, t)): the mean over `targets`'
/// positions of the attention they give to their targets, summed. `uniform`: what an even spread would give.
pub fn lookup_score(probs: &[f32], heads: usize, t: usize, targets: &[(usize, Vec<usize>)]) -> Vec<f32> {
    (0..heads)
        .map(|h| {
            let sum: f32 = targets.iter().map(|(p, ts)| ts.iter().map(|&s| probs[(h * t + p) * t + s]).sum::<f32>()).sum();
            sum / targets.len().max(1) as f32
        })
        .collect()
}

/// Look-up scores of every layer and head, on the corpus's own format (see `lookup_targets`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lookup {
    /// Held-out episodes of rules that do not reverse (whose letters line up position by position).
    pub episodes: usize,
    /// (layers, heads): each head's mean score.
    pub scores: Vec<Vec<f32>>,
    pub best: BestHead,
    /// What a head attending evenly over its prefix would score.
    pub uniform: f32,
    /// What a head attending evenly over the earlier output letters (any answer, not the right one) would score:
    /// the score to beat for a head that looks up rather than just reads the answers so far.
    pub outputs_uniform: f32,
}

/// The look-up score (a format-aware induction score): on the evaluation's held-out episodes whose rule does not
/// reverse, the attention from each position that predicts an output letter to the same-position output letters
/// of earlier pairs with the same input letter — the earlier answer a look-up copies.
pub fn lookup<H: Host>(model: &Model, be: &H, tok: &Tokenizer, recipe: &Recipe) -> Result<Lookup> {
    let eps: Vec<Episode> = eval_episodes(recipe)?.into_iter().filter(|e| !e.rule.reverse).collect();
    let (mut sums, mut uniform, mut outputs_uniform, mut count): (Vec<Vec<f32>>, f32, f32, usize) = (vec![], 0.0, 0.0, 0);
    let len = recipe.icl.length;
    // Output letters before position p (which predicts output letter j of pair q): L per earlier pair, and j of
    // its own pair.
    let outputs_before = |p: usize| {
        let (q, j) = ((p - 1) / (2 * len + 2), (p - 1) % (2 * len + 2) - len);
        q * len + j
    };
    for ep in &eps {
        let targets = lookup_targets(ep, recipe.icl.length);
        if targets.is_empty() {
            continue;
        }
        let text = rules::probe_text(ep);
        let maps = crate::probe::attention_maps(model, be, tok, Task::Text, &text, None)?;
        let layers: Vec<Vec<f32>> = maps.maps.iter().filter(|m| m.kind == "self").map(|m| lookup_score(&m.probs, m.heads, m.t, &targets)).collect();
        if sums.is_empty() {
            sums = vec![vec![0.0; layers.first().map_or(0, |l| l.len())]; layers.len()];
        }
        sums.iter_mut().zip(&layers).for_each(|(s, l)| s.iter_mut().zip(l).for_each(|(a, b)| *a += b));
        uniform += targets.iter().map(|(p, ts)| ts.len() as f32 / (p + 1) as f32).sum::<f32>() / targets.len() as f32;
        outputs_uniform += targets.iter().map(|(p, ts)| ts.len() as f32 / outputs_before(*p) as f32).sum::<f32>() / targets.len() as f32;
        count += 1;
    }
    let n = count.max(1) as f32;
    let scores: Vec<Vec<f32>> = sums.iter().map(|l| l.iter().map(|s| s / n).collect()).collect();
    Ok(Lookup { episodes: count, best: best_head(&scores), scores, uniform: uniform / n, outputs_uniform: outputs_uniform / n })
}

/// The whole evaluation of a trained model: accuracy by k on held-out rules, the induction scores and the
/// look-up scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    #[serde(flatten)]
    pub accuracy: IclAccuracy,
    pub induction: Induction,
    pub lookup: Lookup,
}

/// `accuracy_by_k`, `induction` and `lookup` of a model with the recipe's vocabulary (`Recipe::check_model`).
pub fn evaluate<H: Host>(model: &Model, be: &H, tok: &Tokenizer, recipe: &Recipe) -> Result<Evaluation> {
    recipe.check_model(model, tok)?;
    Ok(Evaluation {
        accuracy: accuracy_by_k(model, be, tok, recipe)?,
        induction: induction(model, be, tok, recipe)?,
        lookup: lookup(model, be, tok, recipe)?,
    })
}
