//! GPT-2's zero-shot task transfer (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") on
//! a tiny GPT: a model pretrained on text in which a task's pattern occurs naturally answers that task from a prompt
//! alone, with no weight update; a baseline trained the same way on text without the pattern says what the pattern
//! taught.
//!
//! **The pretraining text** (`Recipe::corpus`). The corpus (Tiny Shakespeare) is split into lines; after every
//! `every`-th line (lines 0-based, after line i when (i + 1) % every == 0) one templated line is inserted:
//! `Q: <question> A: <answer>`, the question about a word drawn uniformly (`Recipe::stream(1)`) from the training
//! words. The words are the distinct all-lowercase ASCII words of the corpus (maximal runs of letters) of
//! `min_len..=max_len` letters; a word is **held out** when the FNV-1a hash of its bytes is 0 mod `held_out_mod`,
//! and a held-out word is never asked about in the pretraining text (it still occurs in Shakespeare's own lines).
//! The text with the pattern is cut to its last whole line within the plain corpus's length, L characters; the
//! baseline text is the plain corpus's first L characters: the two are the same size. Both are read with one
//! tokenizer (their characters, which are the corpus's: the template adds none) and split as every text is
//! (first 90% train, last 10% validation).
//!
//! **The task** (`Task`): `capitalise word` → `WORD`, `first letter of word` → `w`, or `reverse word` → `drow`.
//!
//! **Zero-shot evaluation** (`evaluate`): `eval_questions` held-out words, evenly spaced in their sorted list. The
//! prompt for the j-th is a fixed context — the `context` characters of the plain corpus's validation part (its
//! last 10%) that end at one of its line ends, the j-th in order among those with `context` characters before them
//! (cycling) — then `Q: <question> A:`. The model writes `len(answer) + 2` characters greedily through the KV
//! cache (`generate::generate`, temperature 0); its answer is what it wrote up to the first newline, less one
//! leading space. Exact match against the rule's answer. `chance` is the majority baseline: the share of the
//! commonest answer among the questions (always answering it scores that).

use crate::backend::{BackendKind, Host};
use crate::config::{Arch, Config, Task as DataTask};
use crate::data::{Dataset, Tokenizer};
use crate::error::{Error, Result};
use crate::generate::{self, SampleOptions};
use crate::model::Model;
use crate::rng::Rng;
use crate::train::Run;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Mixed into the seed for the recipe's own stream, so it is not the model's initialisation or its batches.
const DATA_STREAM: u64 = 0x2E50_5107;
/// Longest word a question asks about.
pub const MAX_WORD_LEN: usize = 16;
pub const MAX_EVAL_QUESTIONS: usize = 10_000;
/// Questions an evaluation shows as examples.
pub const EXAMPLES: usize = 6;

/// The task the templated lines ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// `capitalise word` → `WORD`.
    Capitalise,
    /// `first letter of word` → `w`.
    FirstLetter,
    /// `reverse word` → `drow`.
    Reverse,
}

impl Task {
    /// The question about a word, as written after `Q: `.
    pub fn question(self, word: &str) -> String {
        match self {
            Task::Capitalise => format!("capitalise {word}"),
            Task::FirstLetter => format!("first letter of {word}"),
            Task::Reverse => format!("reverse {word}"),
        }
    }

    /// The rule's answer about a word.
    pub fn answer(self, word: &str) -> String {
        match self {
            Task::Capitalise => word.to_ascii_uppercase(),
            Task::FirstLetter => word.chars().take(1).collect(),
            Task::Reverse => word.chars().rev().collect(),
        }
    }
}

/// The templated line for a word (without its newline): `Q: <question> A: <answer>`.
pub fn template(task: Task, word: &str) -> String {
    format!("{} {}", prompt_tail(task, word), task.answer(word))
}

/// The end of an evaluation prompt: `Q: <question> A:`.
pub fn prompt_tail(task: Task, word: &str) -> String {
    format!("Q: {} A:", task.question(word))
}

/// FNV-1a, 64 bits: the hash the held-out split is decided by.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The `zeroshot` section of a recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroshotConfig {
    pub task: Task,
    /// A templated line after every `every`-th line of the corpus, 1..=1000.
    pub every: usize,
    /// Letters of the words asked about: `min_len..=max_len`, 1..=16.
    pub min_len: usize,
    pub max_len: usize,
    /// A word is held out when fnv1a(word) % held_out_mod == 0; 2..=100.
    pub held_out_mod: u64,
    /// Characters of corpus before each evaluation question, 0..=ctx_len.
    pub context: usize,
    /// Held-out questions evaluated, 1..=10000 (at most the held-out words).
    pub eval_questions: usize,
}

impl ZeroshotConfig {
    /// Refuses a section that cannot work, naming the field (`zeroshot.every`), the value and the rule.
    pub fn validate(&self) -> Result<()> {
        let range = |field: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(bad(field, v, &format!("must be in {lo}..={hi}")))
            }
        };
        range("every", self.every, 1, 1000)?;
        range("min_len", self.min_len, 1, MAX_WORD_LEN)?;
        range("max_len", self.max_len, self.min_len, MAX_WORD_LEN)?;
        range("held_out_mod", self.held_out_mod as usize, 2, 100)?;
        range("eval_questions", self.eval_questions, 1, MAX_EVAL_QUESTIONS)?;
        Ok(())
    }

    /// Characters of the longest evaluation prompt and its answer: context, `Q: <question> A:`, the answer's
    /// space, answer and newline.
    pub fn prompt_chars(&self) -> usize {
        let w = "x".repeat(self.max_len);
        self.context + prompt_tail(self.task, &w).len() + self.task.answer(&w).len() + 2
    }
}

fn ascii(text: &str) -> Result<()> {
    match text.chars().find(|c| !c.is_ascii()) {
        None => Ok(()),
        Some(c) => Err(Error::Invalid(format!("the zero-shot recipe's corpus must be ASCII; it holds {c:?}"))),
    }
}

fn bad(field: &str, value: impl std::fmt::Display, rule: &str) -> Error {
    Error::Config { field: format!("zeroshot.{field}"), value: value.to_string(), rule: rule.to_string() }
}

/// The two pretraining texts and the words they were built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    /// The corpus with the templated lines, cut to its last whole line within the plain corpus's length.
    pub with_pattern: String,
    /// The plain corpus's first `with_pattern.len()` characters.
    pub baseline: String,
    /// Templated lines in `with_pattern`.
    pub inserted: usize,
    /// The words questions may ask about in pretraining, sorted.
    pub train_words: Vec<String>,
    /// The held-out words, sorted: asked only at evaluation.
    pub held_out_words: Vec<String>,
}

/// A recipe: the model and training config (the same for both models), and the `zeroshot` section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recipe {
    pub config: Config,
    pub zeroshot: ZeroshotConfig,
}

impl Recipe {
    /// Parses and validates a recipe file: a `Config` whose extra `zeroshot` section is a `ZeroshotConfig`.
    pub fn from_json(text: &str) -> Result<Recipe> {
        let (config, zeroshot) = super::config_with_section::<ZeroshotConfig>(text, "zeroshot")?;
        let recipe = Recipe { config, zeroshot };
        recipe.validate()?;
        Ok(recipe)
    }

    /// The config's and the section's rules, and what ties them: a gpt trained on text, and a context that holds
    /// the longest prompt and its answer.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.zeroshot.validate()?;
        let m = &self.config.model;
        if m.arch != Arch::Gpt {
            return Err(Error::Config { field: "model.arch".into(), value: format!("{:?}", m.arch).to_lowercase(), rule: "zero-shot transfer trains a gpt".into() });
        }
        if self.config.data.task != DataTask::Text {
            return Err(Error::Config { field: "data.task".into(), value: self.config.data.task.name().into(), rule: "the recipe builds its own texts: leave data out".into() });
        }
        if self.zeroshot.prompt_chars() > m.ctx_len {
            return Err(bad("context", self.zeroshot.context, &format!(
                "the longest prompt and answer are {} characters (context + question + answer), more than model.ctx_len = {}",
                self.zeroshot.prompt_chars(), m.ctx_len
            )));
        }
        Ok(())
    }

    /// The recipe's own random stream: `stream(1)` picks the words of the templated lines.
    pub fn stream(&self, tag: u64) -> Rng {
        Rng::new(self.config.seed ^ DATA_STREAM).fork(tag)
    }

    /// The distinct all-lowercase ASCII words of `text` of min_len..=max_len letters, sorted, split into
    /// (training, held out) by the hash rule.
    pub fn words(&self, text: &str) -> (Vec<String>, Vec<String>) {
        let z = &self.zeroshot;
        let all: BTreeSet<&str> = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| (z.min_len..=z.max_len).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()))
            .collect();
        let (held, train): (Vec<&str>, Vec<&str>) = all.into_iter().partition(|w| fnv1a(w.as_bytes()).is_multiple_of(z.held_out_mod));
        (train.into_iter().map(String::from).collect(), held.into_iter().map(String::from).collect())
    }

    /// The two pretraining texts (see the module's doc). The corpus must be ASCII (Tiny Shakespeare is), so a
    /// character count is a byte count and every cut falls between characters.
    pub fn corpus(&self, text: &str) -> Result<Corpus> {
        ascii(text)?;
        let (train_words, held_out_words) = self.words(text);
        if train_words.is_empty() || held_out_words.is_empty() {
            return Err(bad("min_len", self.zeroshot.min_len, &format!(
                "the corpus has {} training and {} held-out words of {}..={} letters; both must be some",
                train_words.len(), held_out_words.len(), self.zeroshot.min_len, self.zeroshot.max_len
            )));
        }
        let mut rng = self.stream(1);
        let mut full = String::with_capacity(text.len() * 2);
        for (i, line) in text.split_inclusive('\n').enumerate() {
            full.push_str(line);
            if (i + 1) % self.zeroshot.every == 0 {
                if !line.ends_with('\n') {
                    full.push('\n');
                }
                let word = &train_words[rng.below(train_words.len())];
                full.push_str(&template(self.zeroshot.task, word));
                full.push('\n');
            }
        }
        // The last whole line within the plain corpus's length (the template adds characters, never removes).
        let cut = full[..text.len().min(full.len())].rfind('\n').map_or(0, |i| i + 1);
        let with_pattern = full[..cut].to_string();
        let inserted = with_pattern.lines().filter(|l| l.starts_with("Q: ")).count();
        Ok(Corpus { baseline: text[..cut].to_string(), with_pattern, inserted, train_words, held_out_words })
    }

    /// The tokenizer both models read with: the characters of both texts.
    pub fn tokenizer(corpus: &Corpus) -> Result<Tokenizer> {
        let both = format!("{}{}", corpus.with_pattern, corpus.baseline);
        Tokenizer::for_text(&both, Arch::Gpt)
    }

    /// The two runs, (with the pattern, baseline): the same config, seed and tokenizer (`Run::with_data`).
    pub fn runs(&self, corpus: &Corpus, backend: BackendKind) -> Result<(Run, Run)> {
        Ok((self.run(corpus, true, backend)?, self.run(corpus, false, backend)?))
    }

    /// One of the two runs: on the text with the pattern (`pattern`), or on the baseline text.
    pub fn run(&self, corpus: &Corpus, pattern: bool, backend: BackendKind) -> Result<Run> {
        let text = if pattern { &corpus.with_pattern } else { &corpus.baseline };
        let data = Dataset::from_text(text, Recipe::tokenizer(corpus)?, &self.config)?;
        Run::with_data(self.config.clone(), data, backend)
    }

    /// The held-out questions evaluated: `eval_questions` held-out words evenly spaced in their sorted list (all
    /// of them when there are fewer).
    pub fn eval_words(&self, corpus: &Corpus) -> Vec<String> {
        let h = &corpus.held_out_words;
        let n = self.zeroshot.eval_questions.min(h.len());
        (0..n).map(|j| h[j * h.len() / n].clone()).collect()
    }

    /// The evaluation prompts' contexts: for each line end in the plain corpus's last 10% with `context`
    /// characters of that part before it, those characters (ending with the newline); in corpus order. An ASCII
    /// corpus (`corpus` refuses others); none for another.
    pub fn contexts(&self, text: &str) -> Vec<String> {
        if !text.is_ascii() {
            return Vec::new();
        }
        let start = text.len() * 9 / 10;
        let val = &text[start..];
        let c = self.zeroshot.context;
        val.match_indices('\n').map(|(i, _)| i + 1).filter(|&end| end >= c).map(|end| val[end - c..end].to_string()).collect()
    }

    /// The prompts and the rule's answers of the held-out questions.
    pub fn questions(&self, text: &str, corpus: &Corpus) -> Result<Vec<(String, String)>> {
        ascii(text)?;
        let ctx = self.contexts(text);
        if ctx.is_empty() {
            return Err(bad("context", self.zeroshot.context, "no line of the corpus's validation part has this many characters before it"));
        }
        let task = self.zeroshot.task;
        Ok(self.eval_words(corpus).iter().enumerate().map(|(j, w)| (format!("{}{}", ctx[j % ctx.len()], prompt_tail(task, w)), task.answer(w))).collect())
    }
}

/// The share of answers equal to their truth, pairwise; 0 for none.
pub fn accuracy(answers: &[String], truths: &[String]) -> f32 {
    let right = answers.iter().zip(truths).filter(|(a, t)| a == t).count();
    right as f32 / truths.len().max(1) as f32
}

/// The majority baseline: the share of the commonest truth.
pub fn majority(truths: &[String]) -> f32 {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in truths {
        *counts.entry(t).or_default() += 1;
    }
    counts.values().max().copied().unwrap_or(0) as f32 / truths.len().max(1) as f32
}

/// The `n` commonest answers with their shares, commonest first (ties in the answers' order).
pub fn top_answers(answers: &[String], n: usize) -> Vec<(String, f32)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        *counts.entry(a).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.into_iter().take(n).map(|(a, c)| (a.to_string(), c as f32 / answers.len().max(1) as f32)).collect()
}

/// The model's greedy answer to a prompt: `n` characters written through the KV cache, then what comes before
/// the first newline, less one leading space.
pub fn answer<H: Host>(model: &Model, be: &H, tok: &Tokenizer, prompt: &str, n: usize) -> Result<String> {
    let o = SampleOptions { max_tokens: n, temperature: 0.0, ..Default::default() };
    let out = generate::generate(model, be, tok, prompt, &o, |_| {})?;
    let line = out.split('\n').next().unwrap_or("");
    Ok(line.strip_prefix(' ').unwrap_or(line).to_string())
}

/// One held-out question as both models answered it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub prompt: String,
    pub truth: String,
    pub answer: String,
    pub baseline_answer: String,
}

/// Zero-shot accuracy of the model that saw the pattern and of the baseline, on the same held-out questions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub task: Task,
    pub questions: usize,
    pub accuracy: f32,
    pub baseline_accuracy: f32,
    /// The majority baseline (`majority`).
    pub chance: f32,
    /// Each model's three commonest answers and their shares: a model that learned only the format answers one
    /// letter, often the same.
    pub top_answers: Vec<(String, f32)>,
    pub baseline_top_answers: Vec<(String, f32)>,
    /// Templated lines in the pretraining text.
    pub inserted: usize,
    pub train_words: usize,
    pub held_out_words: usize,
    /// `EXAMPLES` questions evenly spaced among them (so across the alphabet).
    pub examples: Vec<Example>,
}

/// Evaluates both models on the held-out questions with no weight update (see the module's doc).
pub fn evaluate<H: Host>(model: &Model, baseline: &Model, be: &H, tok: &Tokenizer, recipe: &Recipe, text: &str, corpus: &Corpus) -> Result<Evaluation> {
    let qs = recipe.questions(text, corpus)?;
    let truths: Vec<String> = qs.iter().map(|(_, t)| t.clone()).collect();
    let answers = |m: &Model| qs.iter().map(|(p, t)| answer(m, be, tok, p, t.len() + 2)).collect::<Result<Vec<String>>>();
    let (a, b) = (answers(model)?, answers(baseline)?);
    let shown = qs.len().min(EXAMPLES);
    let examples = (0..shown)
        .map(|j| j * qs.len() / shown)
        .map(|i| Example { prompt: qs[i].0.clone(), truth: truths[i].clone(), answer: a[i].clone(), baseline_answer: b[i].clone() })
        .collect();
    Ok(Evaluation {
        task: recipe.zeroshot.task,
        questions: qs.len(),
        accuracy: accuracy(&a, &truths),
        baseline_accuracy: accuracy(&b, &truths),
        chance: majority(&truths),
        top_answers: top_answers(&a, 3),
        baseline_top_answers: top_answers(&b, 3),
        inserted: corpus.inserted,
        train_words: corpus.train_words.len(),
        held_out_words: corpus.held_out_words.len(),
        examples,
    })
}
