//! GPT-3's in-context learning (Brown et al. 2020, "Language Models are Few-Shot Learners") on a tiny GPT: a
//! generated meta-learning corpus (`rules`: each sequence shows k input→output pairs of a freshly drawn rule, then
//! a query), trained with the project's own `Run`; then, with no weight update, the accuracy on held-out rules
//! against the number of in-context examples, and each head's induction score (Olsson et al. 2022, "In-context
//! Learning and Induction Heads"): `eval`; the trained model's attention maps on one held-out episode with the
//! induction pattern marked, for the page to show beside the scores: `attention`.
//!
//! A recipe is a config file: the ordinary `Config` (a gpt; `data` left out) plus an `icl` section (`IclConfig`).
//! Everything is drawn from the seed: the corpus (`Rng::new(seed ^ DATA_STREAM)`, fork 1 train, 2 validation),
//! the evaluation episodes (fork 3) and the induction sequences (fork 4); the model and its batches as `Run` does.

pub mod attention;
pub mod eval;
pub mod rules;

pub use attention::{episode_attention, EpisodeAttention};
pub use eval::{evaluate, Evaluation};
pub use rules::{Episode, Family, Rule, RuleSplit};

use crate::backend::BackendKind;
use crate::config::{Arch, Config, Task};
use crate::data::{Dataset, Tokenizer};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::rng::Rng;
use crate::train::Run;
use serde::{Deserialize, Serialize};

/// Mixed into the seed for the recipe's own streams, so they are not the model's initialisation or its batches.
const DATA_STREAM: u64 = 0x1C1_DA7A;
/// Largest alphabet: the letters `a`..`z`.
pub const MAX_ALPHABET: usize = 26;
pub const MAX_LENGTH: usize = 16;
pub const MAX_PAIRS: usize = 256;
/// Most training episodes (the corpus's characters are bounded too: `crate::data::MAX_TEXT_BYTES`).
pub const MAX_TRAIN_EPISODES: usize = 1_000_000;
/// Fewest training episodes: the validation corpus is a tenth as many.
pub const MIN_TRAIN_EPISODES: usize = 100;
pub const MAX_EVAL_EPISODES: usize = 100_000;
pub const MAX_INDUCTION_SEQUENCES: usize = 10_000;

/// The `icl` section of a recipe: the corpus's shape and how much of it to draw and evaluate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IclConfig {
    /// Letters the inputs are drawn from (`a`, `b`, …), 3..=26.
    pub alphabet: usize,
    /// Letters per input (and output), 1..=16 (reverse_shift needs 2).
    pub length: usize,
    /// Pairs per episode, 2..=256: an evaluation shows k = 0..pairs−1 of them before the last one, the query.
    pub pairs: usize,
    /// The rule families drawn from, each equally often (`rules::Family`).
    pub families: Vec<Family>,
    /// Episodes of training rules in the training corpus; the validation corpus holds a tenth as many episodes
    /// of held-out rules (its loss is the `val_loss` of the pretrain stage).
    pub train_episodes: usize,
    /// Episodes of held-out rules the accuracy is measured on, at each k.
    pub eval_episodes: usize,
    /// Sequences of random letters repeated twice that the induction scores are averaged over.
    pub induction_sequences: usize,
}

impl IclConfig {
    /// What an episode is drawn from.
    pub fn shape(&self) -> rules::Shape<'_> {
        rules::Shape { alphabet: self.alphabet, length: self.length, pairs: self.pairs, families: &self.families }
    }

    /// Refuses a section that cannot work, naming the field (`icl.alphabet`), the value and the rule.
    pub fn validate(&self) -> Result<()> {
        let range = |field: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(bad(field, v, &format!("must be in {lo}..={hi}")))
            }
        };
        range("alphabet", self.alphabet, 3, MAX_ALPHABET)?;
        range("length", self.length, 1, MAX_LENGTH)?;
        range("pairs", self.pairs, 2, MAX_PAIRS)?;
        range("train_episodes", self.train_episodes, MIN_TRAIN_EPISODES, MAX_TRAIN_EPISODES)?;
        range("eval_episodes", self.eval_episodes, 1, MAX_EVAL_EPISODES)?;
        range("induction_sequences", self.induction_sequences, 1, MAX_INDUCTION_SEQUENCES)?;
        let names: Vec<&str> = self.families.iter().map(|f| f.name()).collect();
        if self.families.is_empty() {
            return Err(bad("families", "[]", "must name at least one family"));
        }
        let mut sorted = self.families.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.families.len() {
            return Err(bad("families", format!("{names:?}"), "must not name a family twice"));
        }
        if self.length < 2 && self.families.contains(&Family::ReverseShift) {
            return Err(bad("families", format!("{names:?}"), "reverse_shift needs icl.length >= 2 (one letter reversed is itself: a shift)"));
        }
        // Every family must have rules on both sides of the split at this alphabet size (a deterministic check:
        // the small families are enumerated; a substitution is drawn from a fixed stream, as `rules::draw` does).
        for &f in &self.families {
            for split in [RuleSplit::Train, RuleSplit::HeldOut] {
                rules::draw(f, self.alphabet, split, &mut Rng::new(0)).map_err(|rule| bad("families", format!("{names:?}"), &format!("{rule} (alphabet = {})", self.alphabet)))?;
            }
        }
        Ok(())
    }
}

fn bad(field: &str, value: impl std::fmt::Display, rule: &str) -> Error {
    Error::Config { field: format!("icl.{field}"), value: value.to_string(), rule: rule.to_string() }
}

/// A recipe: the model and training config, and the corpus's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recipe {
    pub config: Config,
    pub icl: IclConfig,
}

impl Recipe {
    /// Parses and validates a recipe file: a `Config` whose extra `icl` section is an `IclConfig`.
    pub fn from_json(text: &str) -> Result<Recipe> {
        let (config, icl) = super::config_with_section::<IclConfig>(text, "icl")?;
        let recipe = Recipe { config, icl };
        recipe.validate()?;
        Ok(recipe)
    }

    /// Characters of one episode's text.
    pub fn episode_chars(&self) -> usize {
        self.icl.shape().episode_chars()
    }

    /// The config's and the section's rules, and what ties them: a gpt trained on text, a corpus within the size
    /// a corpus may have, and a context that holds a whole episode (the longest prompt and its answer).
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.icl.validate()?;
        let m = &self.config.model;
        if m.arch != Arch::Gpt {
            return Err(Error::Config { field: "model.arch".into(), value: format!("{:?}", m.arch).to_lowercase(), rule: "in-context learning trains a gpt".into() });
        }
        if self.config.data.task != Task::Text {
            return Err(Error::Config { field: "data.task".into(), value: self.config.data.task.name().into(), rule: "a recipe draws its own corpus: leave data out".into() });
        }
        let chars = self.icl.train_episodes * self.episode_chars();
        if chars > crate::data::MAX_TEXT_BYTES {
            return Err(bad("train_episodes", self.icl.train_episodes, &format!(
                "{chars} characters of corpus ({} per episode); a corpus holds at most {} MiB",
                self.episode_chars(), crate::data::MAX_TEXT_BYTES >> 20
            )));
        }
        if self.episode_chars() > m.ctx_len {
            return Err(bad("pairs", self.icl.pairs, &format!(
                "an episode of {} pairs is {} characters (pairs × (2·length + 2)), more than model.ctx_len = {}",
                self.icl.pairs, self.episode_chars(), m.ctx_len
            )));
        }
        Ok(())
    }

    /// The input letters, the output letters (capitals), `>`, `|` and the newline; no special tokens.
    pub fn tokenizer(&self) -> Tokenizer {
        let all: Vec<u8> = (0..self.icl.alphabet as u8).collect();
        let mut chars: Vec<char> = rules::letters(&all).chars().chain(rules::capitals(&all).chars()).collect();
        chars.extend([rules::ARROW, rules::SEP, rules::END]);
        Tokenizer::new(chars, &[])
    }

    /// The recipe's own random streams: `stream(1)` the training corpus, 2 validation, 3 evaluation, 4 induction.
    pub fn stream(&self, tag: u64) -> Rng {
        Rng::new(self.config.seed ^ DATA_STREAM).fork(tag)
    }

    /// `episodes` episodes of `split`'s rules, as one text.
    pub fn corpus(&self, split: RuleSplit, episodes: usize, rng: &mut Rng) -> Result<String> {
        let shape = self.icl.shape();
        let mut text = String::with_capacity(episodes * shape.episode_chars());
        for _ in 0..episodes {
            let ep = rules::episode(&shape, split, rng).map_err(Error::Invalid)?;
            text.push_str(&rules::episode_text(&ep));
        }
        Ok(text)
    }

    /// The dataset the run trains on: next-character batches (`Dataset::Text`) over the training corpus (training
    /// rules), validated on a tenth as many episodes of held-out rules — at least enough for one window.
    pub fn dataset(&self) -> Result<Dataset> {
        let tok = self.tokenizer();
        let ctx = self.config.model.ctx_len;
        let val_episodes = (self.icl.train_episodes / 10).max((ctx + 2).div_ceil(self.episode_chars()) + 1);
        let train = tok.encode(&self.corpus(RuleSplit::Train, self.icl.train_episodes, &mut self.stream(1))?)?;
        let val = tok.encode(&self.corpus(RuleSplit::HeldOut, val_episodes, &mut self.stream(2))?)?;
        Ok(Dataset::Text { tok, train, val, mlm: None })
    }

    /// A run of the recipe: its dataset, the model initialised from the seed (`Run::with_data`).
    pub fn run(&self, backend: BackendKind) -> Result<Run> {
        Run::with_data(self.config.clone(), self.dataset()?, backend)
    }

    /// Refuses a model (a checkpoint's) this recipe cannot evaluate: not a gpt, another vocabulary, or a context
    /// shorter than an episode.
    pub fn check_model(&self, model: &Model, tok: &Tokenizer) -> Result<()> {
        let want = self.tokenizer();
        if model.cfg.arch != Arch::Gpt {
            return Err(Error::Invalid("in-context learning evaluates a gpt; this checkpoint is not one".into()));
        }
        if tok.chars != want.chars || !tok.specials.is_empty() {
            return Err(Error::Invalid(format!(
                "the checkpoint's vocabulary {:?} is not this recipe's {:?} (icl.alphabet = {})",
                tok.chars.iter().collect::<String>(), want.chars.iter().collect::<String>(), self.icl.alphabet
            )));
        }
        if model.cfg.ctx_len < self.episode_chars() {
            return Err(Error::Invalid(format!(
                "the checkpoint's ctx_len = {} is shorter than an episode of this recipe ({} characters)",
                model.cfg.ctx_len, self.episode_chars()
            )));
        }
        Ok(())
    }
}
