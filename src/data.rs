//! Data: a character-level tokenizer built from the corpus (plus the special tokens each architecture needs),
//! the 90/10 train/val split, seeded batches, BERT's masking (Devlin et al. 2019: 15% of positions, of which 80%
//! become [MASK], 10% a random token, 10% stay), synthetic sequence-to-sequence tasks (reverse, sort, add), and
//! the encoder-decoder's denoising batches (T5 span corruption, BART text infilling: `crate::denoise`).

use crate::config::{Arch, Config, DenoiseLengths, Task};
use crate::error::{DataIssue, Error, Result};
use crate::model::Batch;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

pub const MASK: &str = "[MASK]";
pub const BOS: &str = "[BOS]";

/// Span corruption's i-th sentinel, `[S{i}]` (T5's `<extra_id_{i}>`).
pub fn sentinel(i: usize) -> String {
    format!("[S{i}]")
}
/// Largest corpus accepted (bytes).
pub const MAX_TEXT_BYTES: usize = 32 << 20;
/// Most distinct characters a char-level vocabulary may have.
pub const MAX_CHARS: usize = 4096;

/// Characters sorted by code point get ids 0..n; special tokens follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tokenizer {
    pub chars: Vec<char>,
    pub specials: Vec<String>,
}

impl Tokenizer {
    pub fn new(mut chars: Vec<char>, specials: &[&str]) -> Tokenizer {
        chars.sort_unstable();
        chars.dedup();
        Tokenizer { chars, specials: specials.iter().map(|s| s.to_string()).collect() }
    }

    /// The vocabulary of a text corpus, with the specials the architecture needs.
    pub fn for_text(text: &str, arch: Arch) -> Result<Tokenizer> {
        let chars = distinct_chars(text)?;
        Ok(Tokenizer::new(chars.into_iter().collect(), Tokenizer::specials_for(arch)))
    }

    /// The special tokens every tokenizer of an architecture has: bert's masked-LM objective needs [MASK], the
    /// encoder-decoder's decoder starts from [BOS], and gpt needs none. A run's exact set adds its denoising
    /// task's (`specials_for_config`).
    pub fn specials_for(arch: Arch) -> &'static [&'static str] {
        match arch {
            Arch::Bert => &[MASK],
            Arch::EncoderDecoder => &[BOS],
            Arch::Gpt => &[],
        }
    }

    /// The special tokens of a config's tokenizer, no more and no fewer: the architecture's (`specials_for`), then
    /// the denoising task's: `[MASK]` for text infilling, the sentinels `[S0]`..`[S{k}]` for span corruption (as
    /// many as a source of `ctx_len` tokens has spans, and the final one: `DenoiseLengths::sentinels`).
    pub fn specials_for_config(cfg: &Config) -> Vec<String> {
        let mut out: Vec<String> = Tokenizer::specials_for(cfg.model.arch).iter().map(|s| s.to_string()).collect();
        if cfg.model.arch == Arch::EncoderDecoder {
            match cfg.data.task {
                Task::TextInfilling => out.push(MASK.to_string()),
                Task::SpanCorruption => {
                    let n = DenoiseLengths::new(Task::SpanCorruption, cfg.model.ctx_len).sentinels;
                    out.extend((0..n).map(sentinel));
                }
                _ => {}
            }
        }
        out
    }

    /// Digits, '+', and [BOS] for the synthetic tasks.
    pub fn for_task() -> Tokenizer {
        Tokenizer::new("0123456789+".chars().collect(), &[BOS])
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len() + self.specials.len()
    }

    pub fn special(&self, name: &str) -> Option<u32> {
        self.specials.iter().position(|s| s == name).map(|i| (self.chars.len() + i) as u32)
    }

    fn char_id(&self, c: char) -> Option<u32> {
        self.chars.binary_search(&c).ok().map(|i| i as u32)
    }

    /// Encodes text; special tokens written literally (e.g. "[MASK]") become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_known(text).map_err(|c| Error::Invalid(format!("character {c:?} is not in the model's vocabulary")))
    }

    /// A corpus: ordinary text, one token per character, specials never matched. A corpus's literal "[MASK]" is the
    /// six characters it is written with: the specials are the objective's own tokens (masking puts [MASK] in,
    /// decoding starts from [BOS]), and one read out of the corpus would be a masked-LM target, while the characters
    /// it swallowed stayed in the vocabulary without ever being a token (as tiktoken's `encode_ordinary` reads
    /// training text). Prompts and fill-mask inputs go through `encode`, where "[MASK]" is the token.
    /// Err: the first character the vocabulary lacks.
    fn encode_ordinary(&self, text: &str) -> std::result::Result<Vec<u32>, char> {
        text.chars().map(|c| self.char_id(c).ok_or(c)).collect()
    }

    /// `encode`, or the first character the vocabulary lacks.
    fn encode_known(&self, text: &str) -> std::result::Result<Vec<u32>, char> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        'outer: while let Some(c) = rest.chars().next() {
            for (i, s) in self.specials.iter().enumerate() {
                if rest.starts_with(s.as_str()) {
                    out.push((self.chars.len() + i) as u32);
                    rest = &rest[s.len()..];
                    continue 'outer;
                }
            }
            out.push(self.char_id(c).ok_or(c)?);
            rest = &rest[c.len_utf8()..];
        }
        Ok(out)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.token(i)).collect()
    }

    pub fn token(&self, id: u32) -> String {
        let i = id as usize;
        if i < self.chars.len() {
            self.chars[i].to_string()
        } else {
            self.specials.get(i - self.chars.len()).cloned().unwrap_or_else(|| "\u{FFFD}".into())
        }
    }
}

/// The distinct characters of a text (its character-level vocabulary), refused past MAX_CHARS.
fn distinct_chars(text: &str) -> Result<std::collections::BTreeSet<char>> {
    let chars: std::collections::BTreeSet<char> = text.chars().collect();
    if chars.len() > MAX_CHARS {
        return Err(DataIssue::TooManyCharacters { distinct: chars.len(), limit: MAX_CHARS }.into());
    }
    Ok(chars)
}

/// Checks a corpus given as bytes: refuses empty (or only whitespace), non-UTF-8, binary-looking and oversized
/// input.
pub fn check_text(bytes: &[u8]) -> Result<&str> {
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(DataIssue::TooLarge { bytes: bytes.len(), limit: MAX_TEXT_BYTES }.into());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DataIssue::NotUtf8 { at: e.valid_up_to() })?;
    if text.trim().is_empty() {
        return Err(DataIssue::Empty.into());
    }
    let control = text.chars().filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')).count();
    if text.contains('\0') || control * 100 > text.chars().count() {
        return Err(DataIssue::ControlCharacters.into());
    }
    Ok(text)
}

/// What a checked text holds (what the page shows of the user's own text).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextStats {
    pub bytes: usize,
    pub chars: usize,
    /// Distinct characters: the vocabulary before the special tokens.
    pub distinct: usize,
}

/// Everything the core refuses in a text whatever the config: `check_text`, and more distinct characters than a
/// vocabulary holds. (Too short for the context length is refused when a run is made.)
pub fn text_stats(bytes: &[u8]) -> Result<TextStats> {
    let text = check_text(bytes)?;
    let distinct = distinct_chars(text)?.len();
    Ok(TextStats { bytes: bytes.len(), chars: text.chars().count(), distinct })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// Where a run's batches come from.
#[derive(Clone, Debug)]
pub enum Dataset {
    /// Char-level text: next-token batches (gpt) or masked-LM batches (bert: `mlm`, how chosen positions show).
    Text { tok: Tokenizer, train: Vec<u32>, val: Vec<u32>, mlm: Option<Mlm> },
    /// A synthetic seq2seq task for the encoder-decoder.
    Task { tok: Tokenizer, task: Task, digits: usize },
    /// A denoising objective over char-level text for the encoder-decoder (`crate::denoise`); `specials` are the
    /// ids the corruption writes (the sentinels, or [MASK]).
    Denoise { tok: Tokenizer, task: Task, train: Vec<u32>, val: Vec<u32>, lens: DenoiseLengths, specials: Vec<u32> },
}

impl Dataset {
    /// Builds the dataset a config asks for. `text` is needed for the text task.
    pub fn new(cfg: &Config, text: Option<&str>) -> Result<Dataset> {
        match cfg.data.task {
            Task::Text => {
                let text = text.ok_or(DataIssue::NoText)?;
                let text = check_text(text.as_bytes())?;
                let tok = Tokenizer::for_text(text, cfg.model.arch)?;
                Dataset::from_text(text, tok, cfg)
            }
            t if t.is_denoising() => {
                let text = text.ok_or(DataIssue::NoText)?;
                let text = check_text(text.as_bytes())?;
                let chars = distinct_chars(text)?;
                let specials = Tokenizer::specials_for_config(cfg);
                let tok = Tokenizer { chars: chars.into_iter().collect(), specials };
                Dataset::from_text(text, tok, cfg)
            }
            task => Ok(Dataset::Task { tok: Tokenizer::for_task(), task, digits: cfg.data.digits }),
        }
    }

    /// Text with a given tokenizer (e.g. a checkpoint's), one token per character (see `encode_ordinary`); first
    /// 90% train, last 10% val (as nanoGPT).
    pub fn from_text(text: &str, tok: Tokenizer, cfg: &Config) -> Result<Dataset> {
        let ids = tok.encode_ordinary(text).map_err(|character| DataIssue::NotInVocabulary { character })?;
        // The last 10% must hold a sequence and its target (ctx_len + 2 tokens). The rule is on the whole text,
        // 10 × that, so the length a refusal asks for is exactly the shortest accepted (the split rounds the
        // validation part up, so it then holds at least ctx_len + 2).
        // A denoising example reads `window` tokens, so the same rule holds with window − 1 for ctx_len.
        let denoise = cfg.data.task.is_denoising().then(|| DenoiseLengths::new(cfg.data.task, cfg.model.ctx_len));
        let need = 10 * (denoise.map_or(cfg.model.ctx_len, |l| l.window.saturating_sub(1)) + 2);
        if ids.len() < need {
            return Err(DataIssue::TooShort { chars: ids.len(), need }.into());
        }
        let n = ids.len() * 9 / 10;
        let (train, val) = (ids[..n].to_vec(), ids[n..].to_vec());
        if let Some(lens) = denoise {
            let task = cfg.data.task;
            let names = match task {
                Task::SpanCorruption => (0..lens.sentinels).map(sentinel).collect(),
                _ => vec![MASK.to_string()],
            };
            let specials = names
                .iter()
                .map(|s| tok.special(s).ok_or_else(|| Error::Invalid(format!("the tokenizer has no {s} token, which {} needs", task.name()))))
                .collect::<Result<Vec<u32>>>()?;
            return Ok(Dataset::Denoise { tok, task, train, val, lens, specials });
        }
        let mlm = (cfg.model.arch == Arch::Bert).then_some(Mlm { mask: cfg.data.mlm_mask, random: cfg.data.mlm_random });
        Ok(Dataset::Text { tok, train, val, mlm })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        match self {
            Dataset::Text { tok, .. } | Dataset::Task { tok, .. } | Dataset::Denoise { tok, .. } => tok,
        }
    }

    /// (source, target) tokens of every example: (0, `t`) for text.
    pub fn lengths(&self, t: usize) -> (usize, usize) {
        match self {
            Dataset::Text { .. } => (0, t),
            Dataset::Task { task, digits, .. } => task.lengths(*digits),
            Dataset::Denoise { lens, .. } => (lens.source, lens.target),
        }
    }

    /// A denoising example drawn from `split` (None for other datasets): what the batches hold, one row of it.
    pub fn denoise_example(&self, split: Split, rng: &mut Rng) -> Option<crate::denoise::Corrupted> {
        let Dataset::Denoise { task, train, val, lens, specials, .. } = self else { return None };
        let d = if split == Split::Train { train } else { val };
        let i = rng.below(d.len() - lens.window + 1);
        Some(crate::denoise::corrupt(*task, lens, &d[i..i + lens.window], specials, rng))
    }

    /// A seeded batch of `b` rows of length `t` (text) or of the task's lengths.
    pub fn batch(&self, split: Split, b: usize, t: usize, rng: &mut Rng) -> Batch {
        self.batch_with(split, b, t, None, rng)
    }

    /// `batch`, with bert's chosen positions shown by `mlm_override` instead of the config's rule (`Run::eval_at`
    /// with no [MASK]: lesson `bert-mask`). Ignored by the other datasets.
    pub fn batch_with(&self, split: Split, b: usize, t: usize, mlm_override: Option<Mlm>, rng: &mut Rng) -> Batch {
        match self {
            Dataset::Text { tok, train, val, mlm } => {
                let mlm = mlm.map(|m| mlm_override.unwrap_or(m));
                let d = if split == Split::Train { train } else { val };
                let t = t.min(d.len() - 1);
                let mut batch = Batch { b, t, ..Default::default() };
                for _ in 0..b {
                    let i = rng.below(d.len() - t);
                    if let Some(m) = mlm {
                        let (x, y) = mask_tokens(&d[i..i + t], tok, m, rng);
                        batch.idx.extend(x);
                        batch.targets.extend(y);
                    } else {
                        batch.idx.extend_from_slice(&d[i..i + t]);
                        batch.targets.extend(d[i + 1..i + t + 1].iter().map(|&x| x as i32));
                    }
                }
                batch
            }
            Dataset::Task { tok, task, digits } => {
                let (s, t) = task.lengths(*digits);
                let mut batch = Batch { b, t, s, ..Default::default() };
                // Validation examples come from their own stream, so they are not the training examples.
                let mut vrng;
                let rng = if split == Split::Val {
                    vrng = rng.fork(0x76_616c);
                    &mut vrng
                } else {
                    rng
                };
                for _ in 0..b {
                    let (src, tgt) = task_example(*task, *digits, rng);
                    batch.src.extend(tok.encode(&src).expect("task text uses the task vocabulary"));
                    let y = tok.encode(&tgt).expect("task text uses the task vocabulary");
                    batch.idx.push(tok.special(BOS).expect("task tokenizer has [BOS]"));
                    batch.idx.extend_from_slice(&y[..t - 1]);
                    batch.targets.extend(y.iter().map(|&x| x as i32));
                }
                batch
            }
            Dataset::Denoise { tok, lens, .. } => {
                let bos = tok.special(BOS).expect("an encoder_decoder tokenizer has [BOS]");
                let (s, t) = (lens.source, lens.target);
                let mut batch = Batch { b, t, s, ..Default::default() };
                for _ in 0..b {
                    let ex = self.denoise_example(split, rng).expect("a denoising dataset");
                    batch.src.extend_from_slice(&ex.source);
                    // Decoder input [BOS] y[..t-1]. An infilling original shorter than t is followed by ignored
                    // targets (−1), and the decoder input there by token 0 (causal attention: what stands there
                    // never reaches a scored position).
                    let mut y = ex.target.clone();
                    y.resize(t, 0);
                    batch.idx.push(bos);
                    batch.idx.extend_from_slice(&y[..t - 1]);
                    batch.targets.extend((0..t).map(|j| ex.target.get(j).map_or(-1, |&x| x as i32)));
                }
                batch
            }
        }
    }
}

/// How bert's input shows the positions chosen for prediction (Devlin et al. 2019, §3.1; Appendix C.2's MASK /
/// RND / SAME): a share `mask` as [MASK], a share `random` as a random character, the rest as their own
/// character. The config's `data.mlm_mask` / `data.mlm_random` (BERT's 0.8 / 0.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mlm {
    pub mask: f64,
    pub random: f64,
}

impl Mlm {
    /// Every chosen position keeps its character: the input has no [MASK], as a fine-tuning input has none.
    pub const UNMASKED: Mlm = Mlm { mask: 0.0, random: 0.0 };

    /// The rule's one check, for the config (`names` = data.mlm_mask, data.mlm_random) and for evalAt's option
    /// (mlm.mask, mlm.random): each share in [0, 1] and their sum at most 1. On a breach: which name (0 or 1), its
    /// value, and the rule.
    pub fn check(&self, names: [&str; 2]) -> std::result::Result<(), (usize, f64, String)> {
        let what = ["shown as [MASK]", "shown as a random character"];
        for (i, x) in [self.mask, self.random].into_iter().enumerate() {
            if !(x.is_finite() && (0.0..=1.0).contains(&x)) {
                return Err((i, x, format!("must be in [0, 1] (the share of bert's chosen positions {})", what[i])));
            }
        }
        if self.mask + self.random > 1.0 + 1e-9 {
            let rule = format!("{} + {} must be at most 1 (the rest keep their character), here {} + {}", names[0], names[1], self.mask, self.random);
            return Err((1, self.random, rule));
        }
        Ok(())
    }
}

/// BERT masking of one row: returns (input ids, targets with −1 on the positions not chosen). 15% of the
/// positions are chosen, at least one, so every row counts; each is shown as `rule` says. The positions are drawn
/// before the rule is applied, so two rules choose the same positions of a row for the same generator state.
pub fn mask_tokens(x: &[u32], tok: &Tokenizer, rule: Mlm, rng: &mut Rng) -> (Vec<u32>, Vec<i32>) {
    let mask_id = tok.special(MASK).expect("a bert tokenizer has [MASK]");
    let n_chars = tok.chars.len();
    let mut chosen: Vec<bool> = x.iter().map(|_| rng.uniform() < 0.15).collect();
    if !chosen.iter().any(|&c| c) {
        let j = rng.below(x.len());
        chosen[j] = true;
    }
    let mut inp = x.to_vec();
    let mut tgt = vec![-1i32; x.len()];
    for j in 0..x.len() {
        if !chosen[j] {
            continue;
        }
        tgt[j] = x[j] as i32;
        let r = rng.uniform();
        if r < rule.mask {
            inp[j] = mask_id;
        } else if r < rule.mask + rule.random {
            inp[j] = rng.below(n_chars) as u32;
        }
    }
    (inp, tgt)
}

fn digits(rng: &mut Rng, d: usize) -> String {
    (0..d).map(|_| char::from(b'0' + rng.below(10) as u8)).collect()
}

/// One (source, target) pair: "31415" → "51413" (reverse), "11345" (sort); "0042+0917" → "00959" (add).
pub fn task_example(task: Task, d: usize, rng: &mut Rng) -> (String, String) {
    match task {
        Task::Reverse => {
            let s = digits(rng, d);
            let r = s.chars().rev().collect();
            (s, r)
        }
        Task::Sort => {
            let s = digits(rng, d);
            let mut c: Vec<char> = s.chars().collect();
            c.sort_unstable();
            (s, c.into_iter().collect())
        }
        Task::Add => {
            let (a, b) = (digits(rng, d), digits(rng, d));
            (format!("{a}+{b}"), add_decimal(&a, &b))
        }
        Task::Text | Task::SpanCorruption | Task::TextInfilling => unreachable!("not a synthetic task"),
    }
}

/// Sum of two equal-length decimal strings, zero-padded to one more digit.
fn add_decimal(a: &str, b: &str) -> String {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut out = vec![b'0'; a.len() + 1];
    let mut carry = 0;
    for i in (0..a.len()).rev() {
        let s = (a[i] - b'0') + (b[i] - b'0') + carry;
        out[i + 1] = b'0' + s % 10;
        carry = s / 10;
    }
    out[0] = b'0' + carry;
    String::from_utf8(out).expect("ascii digits")
}

/// The correct answer for a task input (used by the UI and tests to score decoded outputs).
pub fn task_answer(task: Task, src: &str) -> Option<String> {
    match task {
        Task::Reverse => Some(src.chars().rev().collect()),
        Task::Sort => {
            let mut c: Vec<char> = src.chars().collect();
            c.sort_unstable();
            Some(c.into_iter().collect())
        }
        Task::Add => {
            let (a, b) = src.split_once('+')?;
            (a.len() == b.len() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())).then(|| add_decimal(a, b))
        }
        Task::Text | Task::SpanCorruption | Task::TextInfilling => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_round_trips_and_knows_its_specials() {
        let t = Tokenizer::for_text("hello world", Arch::Bert).unwrap();
        assert_eq!(t.vocab_size(), 8 + 1);
        let ids = t.encode("he[MASK]lo").unwrap();
        assert_eq!(ids[2], t.special(MASK).unwrap());
        assert_eq!(t.decode(&ids), "he[MASK]lo");
        assert!(t.encode("hez").unwrap_err().to_string().contains("'z'"));
    }

    #[test]
    fn addition_carries() {
        assert_eq!(add_decimal("999", "001"), "1000");
        assert_eq!(add_decimal("042", "917"), "0959");
        assert_eq!(task_answer(Task::Add, "042+917").as_deref(), Some("0959"));
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        assert!(check_text(b"").unwrap_err().to_string().contains("empty"));
        assert!(check_text(&[0xff, 0xfe, 0x00]).unwrap_err().to_string().contains("UTF-8"));
        assert!(check_text(b"abc\0def").unwrap_err().to_string().contains("binary"));
        assert!(check_text(b"fine text\n").is_ok());
    }

    #[test]
    fn mlm_masks_about_fifteen_percent_and_always_one() {
        let tok = Tokenizer::for_text("abcdefghij", Arch::Bert).unwrap();
        let x: Vec<u32> = (0..10).cycle().take(10_000).collect();
        let mut rng = Rng::new(3);
        let (inp, tgt) = mask_tokens(&x, &tok, Mlm { mask: 0.8, random: 0.1 }, &mut rng);
        let masked = tgt.iter().filter(|&&t| t >= 0).count() as f64 / x.len() as f64;
        assert!((masked - 0.15).abs() < 0.02, "{masked}");
        let as_mask = inp.iter().zip(&tgt).filter(|(&i, &t)| t >= 0 && i == tok.special(MASK).unwrap()).count() as f64;
        let frac = as_mask / tgt.iter().filter(|&&t| t >= 0).count() as f64;
        assert!((frac - 0.8).abs() < 0.04, "{frac}");
        let (_, t1) = mask_tokens(&x[..2], &tok, Mlm { mask: 0.8, random: 0.1 }, &mut Rng::new(5));
        assert!(t1.iter().any(|&t| t >= 0));
    }

    #[test]
    fn mlm_rules_choose_the_same_positions_and_show_them_as_asked() {
        let tok = Tokenizer::for_text("abcdefghij", Arch::Bert).unwrap();
        let mask = tok.special(MASK).unwrap();
        let x: Vec<u32> = (0..10).cycle().take(10_000).collect();
        let rule = |mask, random| Mlm { mask, random };
        let (bert, t_bert) = mask_tokens(&x, &tok, rule(0.8, 0.1), &mut Rng::new(9));
        let (only, t_only) = mask_tokens(&x, &tok, rule(1.0, 0.0), &mut Rng::new(9));
        let (clean, t_clean) = mask_tokens(&x, &tok, Mlm::UNMASKED, &mut Rng::new(9));
        let (rnd, t_rnd) = mask_tokens(&x, &tok, rule(0.0, 1.0), &mut Rng::new(9));
        // The same positions of the row are chosen (the targets), whatever the rule.
        assert_eq!(t_bert, t_only);
        assert_eq!(t_bert, t_clean);
        assert_eq!(t_bert, t_rnd);
        let chosen: Vec<usize> = (0..x.len()).filter(|&j| t_bert[j] >= 0).collect();
        // 100% [MASK]: every chosen position is [MASK]; unmasked: the input is the text; the rest never changes.
        assert!(chosen.iter().all(|&j| only[j] == mask));
        assert_eq!(clean, x);
        for v in [&bert, &only, &rnd] {
            assert!((0..x.len()).filter(|j| t_bert[*j] < 0).all(|j| v[j] == x[j]));
        }
        // All random: no [MASK], and most chosen positions show another character (1 in 10 draws its own).
        assert!(chosen.iter().all(|&j| rnd[j] != mask));
        let changed = chosen.iter().filter(|&&j| rnd[j] != x[j]).count() as f64 / chosen.len() as f64;
        assert!((changed - 0.9).abs() < 0.05, "{changed}");
        // BERT's rule: 80% [MASK], 10% random, 10% kept.
        let kept = chosen.iter().filter(|&&j| bert[j] == x[j]).count() as f64 / chosen.len() as f64;
        assert!((kept - 0.1 - 0.01).abs() < 0.03, "{kept}");
    }
}
