//! Recipes: what made GPTs useful after pretraining, each run end to end on a tiny model (issue 18).
//! `icl`: GPT-3's in-context learning (Brown et al. 2020) on a generated meta-learning corpus, and the induction
//! heads that carry it (Olsson et al. 2022).

pub mod icl;
