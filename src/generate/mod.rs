//! Using a trained model: GPT sampling with a KV cache (temperature, top-k, top-p nucleus sampling — Holtzman et
//! al. 2020 — seeded), BERT fill-mask (top-k candidates per [MASK] with probabilities), and encoder-decoder
//! decoding (greedy or sampled) with the encoder output cached.

use crate::backend::Host;
use crate::config::Arch;
use crate::data::{Tokenizer, MASK};
use crate::error::{Error, Result};
use crate::model::infer::Decoder;
use crate::model::{Batch, Model};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

pub mod parallel;
pub use parallel::{check_n, Continuations, MAX_N};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleOptions {
    pub max_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions { max_tokens: 200, temperature: 0.8, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SampleOptions {
    pub fn validate(&self) -> Result<()> {
        match self.problem() {
            Some((field, value, rule)) => Err(Error::Invalid(format!("{field} = {value}: {rule}"))),
            None => Ok(()),
        }
    }

    /// The first option that breaks its rule, as (field, value, rule), for callers that name the field their own
    /// way (the command line's `--temperature`).
    pub fn problem(&self) -> Option<(&'static str, String, String)> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Some(("temperature", self.temperature.to_string(), "must be >= 0".into()));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Some(("top_p", self.top_p.to_string(), "must be in (0, 1]".into()));
        }
        if self.max_tokens > MAX_TOKENS {
            return Some(("max_tokens", self.max_tokens.to_string(), format!("must be at most {MAX_TOKENS}")));
        }
        None
    }
}

/// Most tokens one call may generate.
pub const MAX_TOKENS: usize = 100_000;

/// Softmax of logits / temperature.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = logits.iter().map(|&x| (((x - max) / t) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&x| (x / s) as f32).collect()
}

/// Picks the next token from one row of logits. Callers pass only the ids that may be emitted (the characters);
/// an empty row has nothing to pick and gives 0, so check for one first (`emittable`).
pub fn sample_next(logits: &[f32], o: &SampleOptions, rng: &mut Rng) -> u32 {
    if logits.is_empty() {
        return 0;
    }
    if o.temperature == 0.0 {
        return argmax(logits);
    }
    let p = softmax(logits, o.temperature);
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let mut keep = if o.top_k > 0 { o.top_k.min(order.len()) } else { order.len() };
    if o.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, &ix) in order.iter().enumerate().take(keep) {
            acc += p[ix];
            if acc >= o.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let kept = &order[..keep.max(1)];
    let total: f64 = kept.iter().map(|&i| p[i] as f64).sum();
    let mut r = rng.uniform() * total;
    for &i in kept {
        r -= p[i] as f64;
        if r <= 0.0 {
            return i as u32;
        }
    }
    kept[kept.len() - 1] as u32
}

/// How many leading ids of a vocabulary of `v` may be emitted: the tokenizer's characters (special tokens follow
/// them and are never emitted); an error when there is none.
pub(crate) fn emittable(tok: &Tokenizer, v: usize) -> Result<usize> {
    match tok.chars.len().min(v) {
        0 => Err(Error::Invalid("the model's vocabulary has no character to emit (only special tokens)".into())),
        n => Ok(n),
    }
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// GPT: continues `prompt`, calling `on_text` with each new piece. Past ctx_len the cache restarts from the
/// last half-context of tokens.
pub fn generate<H: Host>(
    model: &Model,
    be: &H,
    tok: &Tokenizer,
    prompt: &str,
    o: &SampleOptions,
    on_text: impl FnMut(&str),
) -> Result<String> {
    generate_with(model, be, tok, prompt, o, on_text, &|feed| feed())
}

/// Runs a piece of work where it should run (`generate_with`): the browser's threaded build passes one that runs it
/// on rayon's pool and waits.
pub type Exec<'e> = &'e (dyn Fn(&mut (dyn FnMut() + Send)) + Sync);

/// `generate`, with the multi-token feeds (the prompt, and the restarts past ctx_len) run by `exec`. Their ops are
/// large enough to split over threads, and an op started outside rayon's pool pays to inject its work and wake the
/// pool, every op; in the browser's threaded build the caller is outside the pool and must stay there to call
/// `on_text` (a JS function), so it hands the feeds to the pool. Single-token steps are serial work: they run here.
pub fn generate_with<H: Host>(
    model: &Model,
    be: &H,
    tok: &Tokenizer,
    prompt: &str,
    o: &SampleOptions,
    mut on_text: impl FnMut(&str),
    exec: Exec,
) -> Result<String> {
    generate_until(model, be, tok, prompt, o, |s| {
        on_text(s);
        ControlFlow::Continue(())
    }, exec)
}

/// Checks everything `generate` would refuse — the model, the options, the prompt, a vocabulary with something to
/// emit — and returns the prompt's ids, without running the model. A caller that shows the prompt before the
/// continuation checks first, so a refused prompt shows nothing.
pub fn check_prompt(model: &Model, tok: &Tokenizer, prompt: &str, o: &SampleOptions) -> Result<Vec<u32>> {
    if model.cfg.arch != Arch::Gpt {
        return Err(Error::Invalid("text generation needs a gpt model; use fill-mask for bert and decode for encoder_decoder".into()));
    }
    o.validate()?;
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        ids = tok.encode("\n").map_err(|_| Error::Invalid("the prompt is empty".into()))?;
    }
    emittable(tok, model.vocab())?;
    Ok(ids)
}

/// `generate_with`, stopping early when `on_text` breaks (the command line's reader has gone away); returns the
/// text generated until then.
pub fn generate_until<H: Host>(
    model: &Model,
    be: &H,
    tok: &Tokenizer,
    prompt: &str,
    o: &SampleOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    exec: Exec,
) -> Result<String> {
    let mut ids = check_prompt(model, tok, prompt, o)?;
    let ctx = model.cfg.ctx_len;
    let start = ids.len().saturating_sub(ctx);
    let mut dec = Decoder::new(model, be);
    let mut logits = vec![];
    exec(&mut || logits = dec.feed(&ids[start..]));
    let v = model.vocab();
    let n_chars = emittable(tok, v)?;
    let mut rng = Rng::new(o.seed);
    let mut out = String::new();
    for _ in 0..o.max_tokens {
        // Special tokens are never emitted.
        let last = &logits[logits.len() - v..][..n_chars];
        let next = sample_next(last, o, &mut rng);
        ids.push(next);
        let piece = tok.token(next);
        out.push_str(&piece);
        if on_text(&piece).is_break() {
            break;
        }
        if dec.len >= ctx {
            dec.reset();
            let keep = (ctx / 2).max(1);
            let recent = &ids[ids.len() - keep..];
            exec(&mut || logits = dec.feed(recent));
        } else {
            logits = dec.feed(&[next]);
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, Serialize)]
pub struct MaskFill {
    /// Token position of the [MASK] in the encoded text.
    pub position: usize,
    /// (token, probability), most likely first.
    pub candidates: Vec<(String, f32)>,
}

/// BERT: the top-k fillers for every [MASK] in `text`.
pub fn fill_mask<H: Host>(model: &Model, be: &H, tok: &Tokenizer, text: &str, k: usize) -> Result<Vec<MaskFill>> {
    if model.cfg.arch != Arch::Bert {
        return Err(Error::Invalid("fill-mask needs a bert model".into()));
    }
    let mask = tok.special(MASK).ok_or_else(|| Error::Invalid("the tokenizer has no [MASK] token".into()))?;
    let ids = tok.encode(text)?;
    if !ids.contains(&mask) {
        return Err(Error::Invalid("the text has no [MASK] to fill".into()));
    }
    if ids.len() > model.cfg.ctx_len {
        return Err(Error::Invalid(format!("the text is {} tokens; the model reads at most {}", ids.len(), model.cfg.ctx_len)));
    }
    let v = model.vocab();
    let batch = Batch { b: 1, t: ids.len(), targets: vec![-1; ids.len()], idx: ids.clone(), ..Default::default() };
    let logits = model.forward(be, &batch, None).logits;
    let n_chars = tok.chars.len();
    Ok(ids
        .iter()
        .enumerate()
        .filter(|(_, &id)| id == mask)
        .map(|(pos, _)| {
            // Special tokens are never offered as fillers.
            let p = softmax(&logits[pos * v..pos * v + n_chars], 1.0);
            let mut order: Vec<usize> = (0..n_chars).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            MaskFill { position: pos, candidates: order.into_iter().take(k).map(|i| (tok.token(i as u32), p[i])).collect() }
        })
        .collect())
}

/// Encoder-decoder: decodes `max_tokens` tokens for the source text (greedy when temperature is 0).
pub fn decode<H: Host>(model: &Model, be: &H, tok: &Tokenizer, src: &str, o: &SampleOptions) -> Result<String> {
    if model.cfg.arch != Arch::EncoderDecoder {
        return Err(Error::Invalid("decode needs an encoder_decoder model".into()));
    }
    o.validate()?;
    let ids = tok.encode(src)?;
    if ids.is_empty() || ids.len() > model.cfg.ctx_len {
        return Err(Error::Invalid(format!("the input must have 1..={} tokens, got {}", model.cfg.ctx_len, ids.len())));
    }
    let bos = tok.special(crate::data::BOS).ok_or_else(|| Error::Invalid("the tokenizer has no [BOS] token".into()))?;
    let n_chars = emittable(tok, model.vocab())?;
    let mut dec = Decoder::with_source(model, be, &ids);
    let mut rng = Rng::new(o.seed);
    let mut logits = dec.feed(&[bos]);
    let mut out = vec![];
    let n = o.max_tokens.min(model.cfg.ctx_len);
    for i in 0..n {
        // Special tokens are never emitted.
        let next = sample_next(&logits[..n_chars], o, &mut rng);
        out.push(next);
        if i + 1 < n {
            logits = dec.feed(&[next]);
        }
    }
    Ok(tok.decode(&out))
}

/// A denoising example and what the model makes of it (see [`reconstruct`]). Token lists are the tokens as text,
/// special tokens (`[S0]`, `[MASK]`) as written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reconstruction {
    /// `"span_corruption"` or `"text_infilling"`.
    pub task: &'static str,
    /// The corrupted input the encoder reads.
    pub source: Vec<String>,
    /// Which source tokens are sentinels or [MASK].
    pub source_special: Vec<bool>,
    /// The uncorrupted text.
    pub truth: String,
    /// What the decoder is trained to produce (span corruption: sentinels and spans; infilling: the text).
    pub target: Vec<String>,
    pub target_special: Vec<bool>,
    /// The model's greedy output.
    pub output: Vec<String>,
    pub output_special: Vec<bool>,
    /// The text the model's output gives back: span corruption's source with the output's spans put in place of
    /// the sentinels; text infilling's output itself.
    pub reconstruction: String,
    /// `reconstruction` token by token, with which tokens the model wrote (span corruption: those of its spans;
    /// infilling: all) and which of those differ from the truth at the same place (span corruption: the same
    /// offset in the same span; infilling: the same position in the text).
    pub recon_tokens: Vec<String>,
    pub recon_filled: Vec<bool>,
    pub recon_miss: Vec<bool>,
    /// (start, length) of each corrupted span in `truth`, in characters.
    pub spans: Vec<(usize, usize)>,
    /// Span corruption: the hidden characters the model wrote at their offset in their span, over the hidden
    /// characters; infilling: the characters of the output equal to the truth at the same position, over the
    /// characters of the truth.
    pub char_accuracy: f32,
}

/// Encoder-decoder: the greedy output for the source ids, at most `max_tokens` tokens, any token but [BOS]
/// (span corruption's output is sentinels and text); stops after `stop` when it is emitted.
pub fn decode_ids<H: Host>(model: &Model, be: &H, tok: &Tokenizer, source: &[u32], max_tokens: usize, stop: Option<u32>) -> Result<Vec<u32>> {
    if model.cfg.arch != Arch::EncoderDecoder {
        return Err(Error::Invalid("decoding needs an encoder_decoder model".into()));
    }
    if source.is_empty() || source.len() > model.cfg.ctx_len {
        return Err(Error::Invalid(format!("the input must have 1..={} tokens, got {}", model.cfg.ctx_len, source.len())));
    }
    let bos = tok.special(crate::data::BOS).ok_or_else(|| Error::Invalid("the tokenizer has no [BOS] token".into()))?;
    let v = model.vocab().min(tok.vocab_size());
    let mut dec = Decoder::with_source(model, be, source);
    let mut logits = dec.feed(&[bos]);
    let mut out = vec![];
    let n = max_tokens.min(model.cfg.ctx_len - 1);
    for i in 0..n {
        let mut l = logits[..v].to_vec();
        l[bos as usize] = f32::NEG_INFINITY;
        let next = argmax(&l);
        out.push(next);
        if Some(next) == stop {
            break;
        }
        if i + 1 < n {
            logits = dec.feed(&[next]);
        }
    }
    Ok(out)
}

/// Draws a denoising example from `split` of `data` with `rng` and decodes the model's reconstruction of it
/// (greedy). None when the run's task is not a denoising one.
pub fn reconstruct<H: Host>(model: &Model, be: &H, data: &crate::data::Dataset, split: crate::data::Split, rng: &mut Rng) -> Result<Option<Reconstruction>> {
    let Some(ex) = data.denoise_example(split, rng) else { return Ok(None) };
    let crate::data::Dataset::Denoise { tok, task, specials, .. } = data else { return Ok(None) };
    let is_special = |t: u32| specials.contains(&t);
    let names = |ids: &[u32]| ids.iter().map(|&i| tok.token(i)).collect::<Vec<String>>();
    // (token, written by the model, differs from the truth) for each token of the reconstruction.
    let mut recon: Vec<(u32, bool, bool)> = vec![];
    let (output, right, hidden) = match task {
        crate::config::Task::SpanCorruption => {
            let stop = specials.last().copied();
            let out = decode_ids(model, be, tok, &ex.source, ex.target.len(), stop)?;
            let fills = crate::denoise::target_spans(&out, is_special);
            let mut k = 0;
            for &t in &ex.source {
                if !is_special(t) {
                    recon.push((t, false, false));
                    continue;
                }
                let (start, len) = ex.spans.get(k).copied().unwrap_or((0, 0));
                let truth = &ex.original[start..start + len];
                for (j, &f) in fills.get(k).map(|f| &f[..]).unwrap_or(&[]).iter().enumerate() {
                    recon.push((f, true, truth.get(j) != Some(&f)));
                }
                k += 1;
            }
            let right: usize = ex
                .spans
                .iter()
                .enumerate()
                .map(|(i, &(s, l))| {
                    let fill = fills.get(i).map(|f| &f[..]).unwrap_or(&[]);
                    ex.original[s..s + l].iter().zip(fill).filter(|(a, b)| a == b).count()
                })
                .sum();
            (out, right, ex.spans.iter().map(|s| s.1).sum::<usize>())
        }
        _ => {
            let out = decode_ids(model, be, tok, &ex.source, ex.original.len(), None)?;
            recon.extend(out.iter().enumerate().map(|(i, &t)| (t, true, ex.original.get(i) != Some(&t))));
            let right = recon.iter().filter(|r| !r.2).count();
            (out, right, ex.original.len())
        }
    };
    let ids: Vec<u32> = recon.iter().map(|r| r.0).collect();
    Ok(Some(Reconstruction {
        task: task.name(),
        source: names(&ex.source),
        source_special: ex.source.iter().map(|&t| is_special(t)).collect(),
        truth: tok.decode(&ex.original),
        target: names(&ex.target),
        target_special: ex.target.iter().map(|&t| is_special(t)).collect(),
        output: names(&output),
        output_special: output.iter().map(|&t| is_special(t)).collect(),
        reconstruction: tok.decode(&ids),
        recon_tokens: names(&ids),
        recon_filled: recon.iter().map(|r| r.1).collect(),
        recon_miss: recon.iter().map(|r| r.2).collect(),
        spans: ex.spans,
        char_accuracy: right as f32 / hidden.max(1) as f32,
    }))
}
