//! The "human" of mini-RLHF: a transparent, programmatic preference over completions that students can read and
//! change (docs/RECIPES.md §4). A completion's score is a number; more is preferred. The reward model learns it only
//! from rankings of completions, never from the rule itself, and PPO optimises the reward model, so the gap between
//! the reward model and this rule is where reward hacking shows.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which completions the "human" prefers. JSON: `{"kind": "chars", "chars": "e"}` or
/// `{"kind": "word", "word": "love"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preference {
    /// The number of characters of the completion that are in `chars` (each occurrence counts). With "e", a policy
    /// optimised without the KL penalty drifts to "eeee…".
    Chars { chars: String },
    /// The number of times `word` occurs in the completion as a whole word: not preceded or followed by a letter
    /// (case-sensitive; occurrences do not overlap).
    Word { word: String },
}

impl Default for Preference {
    fn default() -> Self {
        Preference::Chars { chars: "e".into() }
    }
}

impl Preference {
    /// Refuses an empty character set or word, or a word with a character that is not a letter, naming the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            Preference::Chars { chars } if chars.is_empty() => {
                Err(Error::Invalid("rlhf.preference.chars = \"\": give at least one character".into()))
            }
            Preference::Word { word } if word.is_empty() || !word.chars().all(char::is_alphabetic) => {
                Err(Error::Invalid(format!("rlhf.preference.word = {word:?}: must be one or more letters")))
            }
            _ => Ok(()),
        }
    }

    /// The preference's score of a completion.
    pub fn score(&self, text: &str) -> f32 {
        match self {
            Preference::Chars { chars } => text.chars().filter(|c| chars.contains(*c)).count() as f32,
            Preference::Word { word } => {
                let (mut n, mut from) = (0, 0);
                while let Some(i) = text[from..].find(word.as_str()) {
                    let (start, end) = (from + i, from + i + word.len());
                    let before = text[..start].chars().next_back().is_some_and(char::is_alphabetic);
                    let after = text[end..].chars().next().is_some_and(char::is_alphabetic);
                    if !before && !after {
                        n += 1;
                        from = end;
                    } else {
                        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
                    }
                }
                n as f32
            }
        }
    }

    /// A short description for reports: `chars "e"`, `word "love"`.
    pub fn describe(&self) -> String {
        match self {
            Preference::Chars { chars } => format!("chars {chars:?}"),
            Preference::Word { word } => format!("word {word:?}"),
        }
    }
}
