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
pub mod rlhf;
pub mod zeroshot;
