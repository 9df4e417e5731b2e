//! The labelled tasks of the fine-tuning recipe, derived from Tiny Shakespeare by rules read off the text's
//! structure (docs/RECIPES.md, section 1). Nothing is hand-labelled.
//!
//! The corpus is a sequence of **speeches** separated by blank lines; each speech's first line is its speaker's
//! name followed by a colon (`ROMEO:`), and the lines after it are what is said (the **body**).
//!
//! - Every speech is numbered in corpus order (0, 1, …). A speech is **held out** (the validation split) when its
//!   number is a multiple of `VAL_EVERY` (5): 20 % of the speeches, spread over every play, and no line of a
//!   held-out speech is in the training split (the unit of the split is the speech, never a line).
//! - The **input** of an example is its speech's body, lines joined by `\n`, cut to its first `ctx_len`
//!   characters (the model's context); the speaker's name is not in it.
//! - `speaker`: the label is the speaker's name, for speeches by the `SPEAKERS` (4) most frequent speakers of the
//!   whole corpus (ties: the name first in code-point order); other speeches are not examples.
//! - `verse_prose`: for speeches with at least 2 body lines. A line's **opening letter** is its first alphabetic
//!   character (so `'Tis` opens with `T`). The speech is **prose** when some body line after the first opens with a
//!   lowercase letter, and **verse** otherwise. Why: in the First Folio text the corpus comes from, every verse
//!   line begins with a capital, while prose runs on and is broken wherever the printed line ends, so its
//!   continuation lines mostly begin mid-sentence in lowercase. The rule is noisy one way: a prose speech whose
//!   every break falls before a capital ("I", a name, a new sentence) is labelled verse.

use crate::config::{FinetuneTask, SPEAKERS};
use crate::error::{Error, Result};

/// One speech in every `VAL_EVERY` (those numbered 0, 5, 10, …) is held out.
pub const VAL_EVERY: usize = 5;

/// A speech of the corpus: its number in corpus order, its speaker and its body lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Speech<'a> {
    pub index: usize,
    pub speaker: &'a str,
    pub lines: Vec<&'a str>,
}

impl Speech<'_> {
    /// In the held-out split.
    pub fn is_val(&self) -> bool {
        self.index.is_multiple_of(VAL_EVERY)
    }

    /// The example's input: the body, lines joined by `\n`, cut to its first `max_chars` characters.
    pub fn input(&self, max_chars: usize) -> String {
        self.lines.join("\n").chars().take(max_chars).collect()
    }
}

/// The speeches of a text in the corpus's format: blocks separated by blank lines whose first line is `NAME:` and
/// that have a body; other blocks (none in Tiny Shakespeare) are skipped and do not take a number.
pub fn speeches(text: &str) -> Vec<Speech<'_>> {
    let mut out = vec![];
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(first) = lines.next() else { continue };
        let Some(speaker) = first.strip_suffix(':').filter(|s| !s.is_empty() && !s.contains(':')) else { continue };
        let lines: Vec<&str> = lines.collect();
        if lines.is_empty() {
            continue;
        }
        out.push(Speech { index: out.len(), speaker, lines });
    }
    out
}

/// The `n` most frequent speakers, most speeches first (ties: code-point order of the name).
pub fn top_speakers<'a>(speeches: &[Speech<'a>], n: usize) -> Vec<&'a str> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in speeches {
        *counts.entry(s.speaker).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.into_iter().take(n).map(|(s, _)| s).collect()
}

/// A line's opening letter: its first alphabetic character.
fn opening_letter(line: &str) -> Option<char> {
    line.chars().find(|c| c.is_alphabetic())
}

/// Verse (0) or prose (1) by the rule in the module docs; None for a speech of one line.
pub fn verse_or_prose(s: &Speech) -> Option<usize> {
    if s.lines.len() < 2 {
        return None;
    }
    let prose = s.lines[1..].iter().any(|l| opening_letter(l).is_some_and(|c| c.is_lowercase()));
    Some(prose as usize)
}

/// One labelled example: the input text, its class, and the number of the speech it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub label: usize,
    pub speech: usize,
}

/// A task's examples, split by speech.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub task: FinetuneTask,
    /// The classes' names, by label.
    pub classes: Vec<String>,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
}

impl TaskData {
    /// Builds the task's examples from a corpus, inputs cut to `max_chars` characters. An error when the text holds
    /// no speech, or too few to give each split an example of every class.
    pub fn new(task: FinetuneTask, text: &str, max_chars: usize) -> Result<TaskData> {
        let all = speeches(text);
        let (classes, labels): (Vec<String>, Vec<Option<usize>>) = match task {
            FinetuneTask::Speaker => {
                let top = top_speakers(&all, SPEAKERS);
                let labels = all.iter().map(|s| top.iter().position(|t| *t == s.speaker)).collect();
                (top.iter().map(|s| s.to_string()).collect(), labels)
            }
            FinetuneTask::VerseProse => (vec!["verse".into(), "prose".into()], all.iter().map(verse_or_prose).collect()),
        };
        let (mut train, mut val) = (vec![], vec![]);
        for (s, label) in all.iter().zip(labels) {
            let Some(label) = label else { continue };
            let ex = Example { text: s.input(max_chars), label, speech: s.index };
            if s.is_val() { val.push(ex) } else { train.push(ex) }
        }
        let data = TaskData { task, classes, train, val };
        for (split, ex) in [("training", &data.train), ("held-out", &data.val)] {
            let counts = data.counts(ex);
            if counts.len() < task.classes() || counts.contains(&0) {
                return Err(Error::Invalid(format!(
                    "the text gives the {} task's {split} split {counts:?} examples of its {} classes: it needs speeches \
                     in Tiny Shakespeare's format (NAME: on a line, then the speech, blank lines between speeches) with \
                     every class in each split",
                    task.name(),
                    task.classes()
                )));
            }
        }
        Ok(data)
    }

    /// Examples of each class in a split.
    pub fn counts(&self, examples: &[Example]) -> Vec<usize> {
        let mut c = vec![0; self.task.classes()];
        for e in examples {
            c[e.label] += 1;
        }
        c
    }

    /// The majority class of the training split (ties: the lower label).
    pub fn majority(&self) -> usize {
        let c = self.counts(&self.train);
        (0..c.len()).max_by(|&a, &b| c[a].cmp(&c[b]).then(b.cmp(&a))).unwrap_or(0)
    }

    /// The majority-class baseline: the accuracy on `examples` of always answering the training majority.
    pub fn baseline(&self, examples: &[Example]) -> f32 {
        let m = self.majority();
        examples.iter().filter(|e| e.label == m).count() as f32 / examples.len().max(1) as f32
    }
}
