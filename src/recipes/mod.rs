//! Recipes: what made GPTs useful after pretraining, each a small end-to-end run on the project's own data
//! (issue 18, docs/RECIPES.md). Each is written over the model and the op trait like training is.
//!
//! - `finetune`: GPT-1's supervised fine-tuning with a classifier head and an auxiliary LM loss (Radford et al.
//!   2018), on labelled tasks derived from Tiny Shakespeare by documented rules (`finetune::tasks`).
//! - `zeroshot`: GPT-2's zero-shot task transfer (Radford et al. 2019): a model pretrained on the corpus with a
//!   templated task inserted by a documented rule answers held-out questions from a prompt alone, against a
//!   baseline trained on the plain corpus.
//! - `icl`: GPT-3's in-context learning (Brown et al. 2020) on a generated meta-learning corpus, and the induction
//!   heads that carry it (Olsson et al. 2022).
//! - `rlhf`: InstructGPT's SFT → reward model → PPO (Ouyang et al. 2022) in miniature, the "human" a programmatic
//!   preference (`rlhf::Preference`).

pub mod finetune;
pub mod icl;
pub mod engine;
pub mod rlhf;
pub mod zeroshot;

use crate::config::Config;
use crate::error::{Error, Result};

/// A recipe file: an ordinary `Config` with one extra section `name` of the recipe's own (`icl`, `zeroshot`),
/// parsed apart: the config through `Config::from_json` (its checks), the section into `T`.
pub(crate) fn config_with_section<T: serde::de::DeserializeOwned>(text: &str, name: &str) -> Result<(Config, T)> {
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::ConfigParse(e.to_string()))?;
    let obj = v.as_object_mut().ok_or_else(|| Error::ConfigParse("a recipe is a JSON object".into()))?;
    let section = obj.remove(name).ok_or_else(|| Error::ConfigParse(format!("a recipe needs a \"{name}\" section")))?;
    let section: T = serde_json::from_value(section).map_err(|e| Error::ConfigParse(format!("{name}: {e}")))?;
    Ok((Config::from_json(&v.to_string())?, section))
}
