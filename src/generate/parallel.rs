//! Parallel sampling: N continuations of one prompt, decoded together over the paged KV cache
//! (`model::paged`). The prompt is prefilled once into one sequence and the others fork from it, sharing its blocks;
//! each step samples one token for every continuation and feeds them all in one batched pass. A continuation that
//! has its tokens ends and frees its blocks.
//!
//! Continuation i samples with the seed `seed + i`, so it is the text the single-sequence, contiguous-cache path
//! (`generate`, `decode`) gives with that seed: the paged cache changes where keys and values live, not what is
//! computed (tested in `tests/paged_kv.rs`). `Continuations` advances one token per `step`, so a caller can stop
//! between tokens (the engine's cancel) and interleave other work (training).

use super::{check_prompt, emittable, sample_next, SampleOptions};
use crate::backend::Host;
use crate::config::Arch;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::model::paged::{KvStats, KvTable, PagedDecoder};
use crate::model::Model;
use crate::rng::Rng;
use std::borrow::Cow;

/// The most continuations of one prompt.
pub const MAX_N: usize = crate::model::paged::MAX_SEQUENCES;

/// Refuses a number of continuations outside 1..=MAX_N, naming the field.
pub fn check_n(n: usize) -> Result<()> {
    if (1..=MAX_N).contains(&n) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("n = {n}: must be 1..={MAX_N} continuations")))
    }
}

struct Continuation {
    /// Its sequence in the cache.
    slot: usize,
    rng: Rng,
    /// Every token so far: the prompt's and the generated ones (a restart past ctx_len re-reads the recent ones).
    ids: Vec<u32>,
    /// The generated tokens.
    out: Vec<u32>,
    text: String,
    /// Logits of the last position fed (V).
    logits: Vec<f32>,
    done: bool,
}

/// N continuations being generated; `step` until `done`. Dropping it frees everything (a cancel).
pub struct Continuations<'m> {
    model: Cow<'m, Model>,
    tok: Cow<'m, Tokenizer>,
    o: SampleOptions,
    dec: PagedDecoder,
    conts: Vec<Continuation>,
    /// Tokens each continuation generates.
    max: usize,
    n_chars: usize,
    /// Encoder-decoder (no restart: the decoder writes at most ctx_len tokens).
    encdec: bool,
    /// The cache when it held the most (its figures at the end would be zero: finished sequences free their blocks).
    peak: KvStats,
}

impl<'m> Continuations<'m> {
    /// GPT: `n` continuations of `prompt` (refused as `generate` refuses it; n and block_size checked).
    pub fn start<H: Host>(
        model: Cow<'m, Model>,
        tok: Cow<'m, Tokenizer>,
        be: &H,
        prompt: &str,
        o: &SampleOptions,
        n: usize,
        block_size: usize,
    ) -> Result<Continuations<'m>> {
        check_n(n)?;
        let ids = check_prompt(&model, &tok, prompt, o)?;
        let start = ids.len().saturating_sub(model.cfg.ctx_len);
        let dec = PagedDecoder::new(&model, block_size)?;
        let max = o.max_tokens;
        Continuations::prefill(model, tok, be, dec, ids, start, o, n, max, false)
    }

    /// Encoder-decoder: `n` decodings of `source` from [BOS] (refused as `decode` refuses it), at most
    /// min(max_tokens, ctx_len) tokens each.
    pub fn start_decode<H: Host>(
        model: Cow<'m, Model>,
        tok: Cow<'m, Tokenizer>,
        be: &H,
        source: &str,
        o: &SampleOptions,
        n: usize,
        block_size: usize,
    ) -> Result<Continuations<'m>> {
        check_n(n)?;
        if model.cfg.arch != Arch::EncoderDecoder {
            return Err(Error::Invalid("decode needs an encoder_decoder model".into()));
        }
        o.validate()?;
        crate::model::paged::check_block_size(block_size)?;
        let src = tok.encode(source)?;
        if src.is_empty() || src.len() > model.cfg.ctx_len {
            return Err(Error::Invalid(format!("the input must have 1..={} tokens, got {}", model.cfg.ctx_len, src.len())));
        }
        let bos = tok.special(crate::data::BOS).ok_or_else(|| Error::Invalid("the tokenizer has no [BOS] token".into()))?;
        let dec = PagedDecoder::with_source(&model, be, &src, block_size)?;
        let max = o.max_tokens.min(model.cfg.ctx_len);
        Continuations::prefill(model, tok, be, dec, vec![bos], 0, o, n, max, true)
    }

    /// Prefills ids[start..] once into one sequence and forks the other n − 1 from it.
    #[allow(clippy::too_many_arguments)]
    fn prefill<H: Host>(
        model: Cow<'m, Model>,
        tok: Cow<'m, Tokenizer>,
        be: &H,
        mut dec: PagedDecoder,
        ids: Vec<u32>,
        start: usize,
        o: &SampleOptions,
        n: usize,
        max: usize,
        encdec: bool,
    ) -> Result<Continuations<'m>> {
        let n_chars = emittable(&tok, model.vocab())?;
        let v = model.vocab();
        let first = dec.add()?;
        let t = ids.len() - start;
        let logits = dec.feed(&model, be, &[first], &ids[start..], t)?;
        let last = logits[(t - 1) * v..].to_vec();
        let mut slots = vec![first];
        for _ in 1..n {
            slots.push(dec.fork(first)?);
        }
        let peak = dec.stats();
        let conts = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| Continuation {
                slot,
                rng: Rng::new(o.seed.wrapping_add(i as u64)),
                ids: ids.clone(),
                out: vec![],
                text: String::new(),
                logits: last.clone(),
                done: max == 0,
            })
            .collect();
        let mut c = Continuations { model, tok, o: o.clone(), dec, conts, max, n_chars, encdec, peak };
        if max == 0 {
            c.conts.iter().for_each(|k| c.dec.free(k.slot));
        }
        Ok(c)
    }

    /// Samples one token for every continuation still going and feeds them together; returns (index, piece) for
    /// each token sampled. A continuation that has its tokens frees its blocks.
    pub fn step<H: Host>(&mut self, be: &H) -> Result<Vec<(usize, String)>> {
        let mut pieces = vec![];
        let mut going = vec![];
        for (i, c) in self.conts.iter_mut().enumerate().filter(|(_, c)| !c.done) {
            // Special tokens are never emitted.
            let next = sample_next(&c.logits[..self.n_chars], &self.o, &mut c.rng);
            c.ids.push(next);
            c.out.push(next);
            let piece = self.tok.token(next);
            c.text.push_str(&piece);
            pieces.push((i, piece));
            if c.out.len() >= self.max {
                c.done = true;
                self.dec.free(c.slot);
            } else {
                going.push(i);
            }
        }
        if going.is_empty() {
            return Ok(pieces);
        }
        let (ctx, v) = (self.model.cfg.ctx_len, self.model.vocab());
        let slots: Vec<usize> = going.iter().map(|&i| self.conts[i].slot).collect();
        let len = self.dec.seq(slots[0])?.len;
        let (rows, t) = if !self.encdec && len >= ctx {
            // Past ctx_len every sequence starts again from its last half-context of tokens (as `generate` does).
            let keep = (ctx / 2).max(1);
            for &s in &slots {
                self.dec.reset(s)?;
            }
            (going.iter().flat_map(|&i| self.conts[i].ids[self.conts[i].ids.len() - keep..].to_vec()).collect::<Vec<u32>>(), keep)
        } else {
            (going.iter().map(|&i| *self.conts[i].ids.last().unwrap()).collect(), 1)
        };
        let logits = self.dec.feed(&self.model, be, &slots, &rows, t)?;
        for (b, &i) in going.iter().enumerate() {
            self.conts[i].logits = logits[((b + 1) * t - 1) * v..(b + 1) * t * v].to_vec();
        }
        let now = self.dec.stats();
        if now.bytes_used > self.peak.bytes_used {
            self.peak = now;
        }
        Ok(pieces)
    }

    /// Rows the next step feeds: one per continuation still going, or, when they restart past ctx_len, their last
    /// half-context each. (The browser's threaded build runs a step of more than one row on its thread pool; a
    /// one-row step is serial work and runs where it is called, as `generate_with` does.)
    pub fn next_rows(&self) -> usize {
        let going: Vec<&Continuation> = self.conts.iter().filter(|c| !c.done && c.out.len() + 1 < self.max).collect();
        let Some(first) = going.first() else { return 0 };
        let ctx = self.model.cfg.ctx_len;
        let restart = !self.encdec && self.dec.seq(first.slot).is_ok_and(|s| s.len >= ctx);
        going.len() * if restart { (ctx / 2).max(1) } else { 1 }
    }

    /// Every continuation has its tokens.
    pub fn done(&self) -> bool {
        self.conts.iter().all(|c| c.done)
    }

    pub fn n(&self) -> usize {
        self.conts.len()
    }

    /// The text of each continuation so far.
    pub fn texts(&self) -> Vec<String> {
        self.conts.iter().map(|c| c.text.clone()).collect()
    }

    /// The tokens of each continuation so far.
    pub fn tokens(&self) -> Vec<Vec<u32>> {
        self.conts.iter().map(|c| c.out.clone()).collect()
    }

    /// The cache now.
    pub fn stats(&self) -> KvStats {
        self.dec.stats()
    }

    /// The cache when it held the most.
    pub fn peak(&self) -> &KvStats {
        &self.peak
    }

    /// The block table now, sequences named by continuation index.
    pub fn table(&self) -> KvTable {
        let mut t = self.dec.table();
        for s in &mut t.seqs {
            // A finished continuation's slot has left the table, so each slot in it is one live continuation's.
            s.0 = self.conts.iter().position(|c| c.slot == s.0).expect("a sequence in the cache is a continuation's");
        }
        t
    }

    /// Runs every step; `on_text(index, piece)` for each token.
    pub fn run<H: Host>(mut self, be: &H, mut on_text: impl FnMut(usize, &str)) -> Result<Continuations<'m>> {
        while !self.done() {
            for (i, p) in self.step(be)? {
                on_text(i, &p);
            }
        }
        Ok(self)
    }
}
