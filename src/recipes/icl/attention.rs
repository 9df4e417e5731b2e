//! The trained model's attention on one held-out episode, for a student to read beside the induction scores: every
//! layer × head's map over the episode's characters (`probe::attention_maps`, what the playground's attention view
//! shows for a run), and where an induction head would look (Olsson et al. 2022, "In-context Learning and
//! Induction Heads": from a token to the token right after each earlier occurrence of it — prefix matching — so
//! that it can copy what came next).
//!
//! The episode is one of the evaluation's (`eval::eval_episodes`: `Recipe::stream(3)`, so the same for a seed),
//! read as the look-up score reads it (`rules::probe_text`): a newline (the end of a previous episode), then its
//! pairs without the final newline — `pairs · (2·length + 2)` characters, which the recipe's validation keeps within ctx_len.

use super::eval::eval_episodes;
use super::rules::{self, Family};
use super::Recipe;
use crate::backend::Host;
use crate::config::Task;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::probe::{self, AttentionMap};
use serde::Serialize;

/// One held-out episode's attention maps and the induction pattern to compare them with.
#[derive(Clone, Debug, Serialize)]
pub struct EpisodeAttention {
    /// Which held-out episode: its index among the evaluation's (0..icl.eval_episodes).
    pub episode: usize,
    /// The family its rule was drawn from.
    pub family: Family,
    /// What the model reads: a newline, then the episode's pairs (`x>Y|x>Y|…|x>Y`).
    pub text: String,
    /// The characters of `text`, along both axes of every map (queries down, keys across).
    pub tokens: Vec<String>,
    /// One per layer, self-attention: probs (heads, t, t), each row summing to 1, zero above the diagonal.
    pub maps: Vec<AttentionMap>,
    /// (t): for each query position i, the key positions an induction head attends to — j + 1 for every earlier
    /// j < i holding the same token as i (so at most i itself); empty where the token has not occurred before.
    pub induction_targets: Vec<Vec<usize>>,
}

/// Where an induction head looks from each position of `tokens`: right after each earlier occurrence of the
/// position's own token.
pub fn induction_targets<T: PartialEq>(tokens: &[T]) -> Vec<Vec<usize>> {
    (0..tokens.len()).map(|i| (0..i).filter(|&j| tokens[j] == tokens[i]).map(|j| j + 1).collect()).collect()
}

/// The model's attention on held-out episode `episode` (see the module's doc); an index past the evaluation's
/// episodes is refused naming `episode`.
pub fn episode_attention<H: Host>(model: &Model, be: &H, tok: &Tokenizer, recipe: &Recipe, episode: usize) -> Result<EpisodeAttention> {
    recipe.check_model(model, tok)?;
    let n = recipe.icl.eval_episodes;
    if episode >= n {
        return Err(Error::Config {
            field: "episode".into(),
            value: episode.to_string(),
            rule: format!("must be in 0..{n}: the evaluation's held-out episodes (icl.eval_episodes = {n})"),
        });
    }
    let ep = eval_episodes(recipe)?.swap_remove(episode);
    let text = rules::probe_text(&ep);
    let maps = probe::attention_maps(model, be, tok, Task::Text, &text, None)?;
    let ids = tok.encode(&text)?;
    Ok(EpisodeAttention {
        episode,
        family: ep.rule.family,
        text,
        tokens: maps.tokens,
        maps: maps.maps.into_iter().filter(|m| m.kind == "self").collect(),
        induction_targets: induction_targets(&ids),
    })
}
