//! The meta-learning corpus's rules and episodes: each episode draws one rule and shows it on `pairs` random
//! inputs, so predicting an output means inferring the rule from the pairs before it (in context).
//!
//! Inputs are strings of `length` letters drawn uniformly from the first `alphabet` letters (`a`, `b`, …). Every
//! rule applies a per-letter table `m` to each letter and then reverses the string or not:
//! `f(x) = rev?(m(x₀) m(x₁) … m(x_{L−1}))`. The families (n = alphabet size):
//! - `substitution`: `m` a uniformly random permutation of the n letters, other than the identity (n! − 1 rules);
//! - `shift` (copy with an offset): `m(c) = c + r mod n`, r ∈ 1..n−1 (n − 1 rules);
//! - `affine` (a small modular map): `m(c) = a·c + b mod n`, a a unit mod n other than 1 (a = 1 is a shift),
//!   b ∈ 0..n−1 (φ(n) − 1 times n rules);
//! - `reverse_shift`: reverse the string, then shift each letter by r ∈ 0..n−1 (r = 0: plain reversal; n rules).
//!
//! Families overlap (a substitution can draw a shift's table), so a rule's identity is its canonical form
//! `(reverse, m)`: for L ≥ 2, two forms that differ are two different functions. **Held-out rules** are those whose
//! canonical form hashes to 0 mod `HELD_OUT_EVERY` (`Rule::is_held_out`): about a quarter of every family, decided
//! by the function itself, so a held-out rule is never drawn for training whichever family would draw it.
//!
//! Text format: a pair is `input>OUTPUT`, the output in capitals (`A` is the letter `a` on the output side); an
//! episode is its pairs joined by `|` and ended by a newline, e.g. `abc>BCD|hha>AAB|…|cfe>DGF\n` (a shift by 1).
//! Every pair after the first is a query for the pairs before it.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Between a pair's input and its output.
pub const ARROW: char = '>';
/// Between two pairs of an episode.
pub const SEP: char = '|';
/// Ends an episode (and so starts the next one).
pub const END: char = '\n';
/// One rule in this many (by the hash of its canonical form) is held out for evaluation.
pub const HELD_OUT_EVERY: u64 = 4;
/// Draws a random substitution may take to land in the wanted split before the family is declared empty there.
const SUBSTITUTION_TRIES: usize = 1000;

/// A family of rules (see the module's doc for each one's definition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Substitution,
    Shift,
    Affine,
    ReverseShift,
}

impl Family {
    /// Every family, in the order of the config's default.
    pub const ALL: [Family; 4] = [Family::Substitution, Family::Shift, Family::Affine, Family::ReverseShift];

    /// The family's name in the config (`"reverse_shift"`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Substitution => "substitution",
            Family::Shift => "shift",
            Family::Affine => "affine",
            Family::ReverseShift => "reverse_shift",
        }
    }
}

/// Which rules a draw may return: the training rules or the held-out ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSplit {
    Train,
    HeldOut,
}

/// A rule in canonical form: `apply(x) = rev?(table[x₀] … table[x_{L−1}])`, letters as 0..n.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The family it was drawn from (several families can draw the same function).
    pub family: Family,
    pub reverse: bool,
    /// (n): the letter each letter becomes.
    pub table: Vec<u8>,
}

impl Rule {
    /// The rule's output for an input (letters as 0..n).
    pub fn apply(&self, x: &[u8]) -> Vec<u8> {
        let mut y: Vec<u8> = x.iter().map(|&c| self.table[c as usize]).collect();
        if self.reverse {
            y.reverse();
        }
        y
    }

    /// Whether the rule is held out for evaluation: FNV-1a of its canonical form (`reverse`, then the table),
    /// mixed by splitmix64's finaliser, is 0 mod `HELD_OUT_EVERY`.
    pub fn is_held_out(&self) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in std::iter::once(&(self.reverse as u8)).chain(&self.table) {
            h = (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (h ^ (h >> 31)).is_multiple_of(HELD_OUT_EVERY)
    }

    pub fn split(&self) -> RuleSplit {
        if self.is_held_out() {
            RuleSplit::HeldOut
        } else {
            RuleSplit::Train
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Every rule of a family over n letters, in the order of its parameters; None for `substitution` (n! − 1 rules,
/// drawn instead).
pub fn enumerate(family: Family, n: usize) -> Option<Vec<Rule>> {
    let table = |f: &dyn Fn(usize) -> usize| (0..n).map(|c| f(c) as u8).collect::<Vec<u8>>();
    let rule = |reverse, table| Rule { family, reverse, table };
    match family {
        Family::Substitution => None,
        Family::Shift => Some((1..n).map(|r| rule(false, table(&|c| (c + r) % n))).collect()),
        Family::Affine => {
            let units = (2..n).filter(|&a| gcd(a, n) == 1);
            Some(units.flat_map(|a| (0..n).map(move |b| (a, b))).map(|(a, b)| rule(false, table(&|c| (a * c + b) % n))).collect())
        }
        Family::ReverseShift => Some((0..n).map(|r| rule(true, table(&|c| (c + r) % n))).collect()),
    }
}

/// A uniformly random rule of `family` over n letters among those of `split`. Err: the family has no rule there
/// (a small alphabet can leave a family with none on one side), as a sentence for the caller to attach to a field.
pub fn draw(family: Family, n: usize, split: RuleSplit, rng: &mut Rng) -> Result<Rule, String> {
    let none = || format!("the family {} has no {} rule over {n} letters", family.name(), if split == RuleSplit::Train { "training" } else { "held-out" });
    if let Some(all) = enumerate(family, n) {
        let rules: Vec<Rule> = all.into_iter().filter(|r| r.split() == split).collect();
        return if rules.is_empty() { Err(none()) } else { Ok(rules[rng.below(rules.len())].clone()) };
    }
    // Substitution: Fisher–Yates, redrawn until the permutation is no identity and in the split.
    for _ in 0..SUBSTITUTION_TRIES {
        let mut table: Vec<u8> = (0..n as u8).collect();
        for i in (1..n).rev() {
            table.swap(i, rng.below(i + 1));
        }
        let rule = Rule { family, reverse: false, table };
        let identity = rule.table.iter().enumerate().all(|(i, &c)| c as usize == i);
        if !identity && rule.split() == split {
            return Ok(rule);
        }
    }
    Err(none())
}

/// One episode: a rule and `pairs` (input, output) pairs of it, inputs drawn uniformly. The last pair is the
/// query of an evaluation; the ones before it are the in-context examples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Episode {
    pub rule: Rule,
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What an episode is drawn from: the letters, the input length, the pairs, the families.
#[derive(Clone, Copy, Debug)]
pub struct Shape<'a> {
    pub alphabet: usize,
    pub length: usize,
    pub pairs: usize,
    pub families: &'a [Family],
}

impl Shape<'_> {
    /// Characters of an episode's text: `pairs` pairs of `2·length + 1` characters, a separator after each.
    pub fn episode_chars(&self) -> usize {
        self.pairs * (2 * self.length + 2)
    }
}

/// An episode: a family drawn uniformly from `shape.families`, a rule of it in `split` (`draw`), then the pairs.
pub fn episode(shape: &Shape, split: RuleSplit, rng: &mut Rng) -> Result<Episode, String> {
    let family = shape.families[rng.below(shape.families.len())];
    let rule = draw(family, shape.alphabet, split, rng)?;
    let pairs = (0..shape.pairs)
        .map(|_| {
            let x: Vec<u8> = (0..shape.length).map(|_| rng.below(shape.alphabet) as u8).collect();
            let y = rule.apply(&x);
            (x, y)
        })
        .collect();
    Ok(Episode { rule, pairs })
}

/// Input letters 0..n as `a`, `b`, ….
pub fn letters(x: &[u8]) -> String {
    x.iter().map(|&c| char::from(b'a' + c)).collect()
}

/// Output letters 0..n as `A`, `B`, …: outputs are written in capitals, so a letter's token says which side of
/// a pair it stands on.
pub fn capitals(y: &[u8]) -> String {
    y.iter().map(|&c| char::from(b'A' + c)).collect()
}

/// The episode as training text: `x>y|x>y|…|x>y\n`.
pub fn episode_text(ep: &Episode) -> String {
    let pairs: Vec<String> = ep.pairs.iter().map(|(x, y)| format!("{}{ARROW}{}", letters(x), capitals(y))).collect();
    format!("{}{END}", pairs.join(&SEP.to_string()))
}

/// The episode as the probes read it (the look-up score, the attention view of `attention`): a newline (the end of
/// a previous episode), then its pairs without the final newline.
pub fn probe_text(ep: &Episode) -> String {
    format!("{END}{}", episode_text(ep).trim_end_matches(END))
}

/// What the model reads to answer the query from `k` in-context examples: the end of a previous episode, the
/// episode's first k pairs (each followed by `|`), the query's input and `>`. The query is the episode's last pair,
/// the same for every k, so the accuracies over k compare the same questions. Needs k < pairs.
pub fn prompt(ep: &Episode, k: usize) -> String {
    let mut s = String::from(END);
    for (x, y) in &ep.pairs[..k.min(ep.pairs.len() - 1)] {
        s.push_str(&format!("{}{ARROW}{}{SEP}", letters(x), capitals(y)));
    }
    let (q, _) = &ep.pairs[ep.pairs.len() - 1];
    format!("{s}{}{ARROW}", letters(q))
}

/// The query's answer: the last pair's output.
pub fn answer(ep: &Episode) -> String {
    capitals(&ep.pairs[ep.pairs.len() - 1].1)
}
