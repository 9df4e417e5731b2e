//! The paged KV cache (PagedAttention, Kwon et al. 2023, vLLM) and a decoder that advances several sequences in one
//! batched step over it.
//!
//! Memory is a pool of fixed-size *blocks*: one block holds `block_size` consecutive positions of every layer's keys
//! and values. A sequence owns a *block table*, the list of its blocks in position order, so position `p` lives in
//! block `table[p / block_size]` at row `p % block_size`. Blocks are taken from a free list as a sequence grows and
//! given back when it ends: a sequence holds at most `block_size − 1` positions it does not use, where a contiguous
//! cache would reserve `ctx_len` positions for each sequence up front.
//!
//! Blocks are reference-counted, so sequences can share them: `fork` gives a new sequence the same table (the
//! prompt, prefilled once). Full blocks are never written again and stay shared; the last block, partly filled, is
//! copied when a sequence first writes to it while another still reads it (copy-on-write).
//!
//! A step feeds `t` tokens to each of `B` sequences at once: every matmul (qkv, proj, FFN, head) runs over the B·t
//! rows together; attention keeps each query row to its own sequence's keys and values, gathered block by block
//! through its table into one batch for one attention call (`paged_self_attention`). All sequences of one step hold the same number of positions (they
//! decode in lockstep: the continuations of one prompt), so they share the positions' embedding, RoPE angles and
//! attention biases.
//!
//! The contiguous decoder (`infer::Decoder`, one sequence, its cache grown by copying) is the reference path: the
//! same tokens give the same logits (tested in `tests/paged_kv.rs`).

use super::block::{self, KvCache};
use super::layout::{BlockParams, CrossParams, StackParams};
use super::{recurrent, Ctx, Model, StackCtx};
use crate::backend::{on_host, Host};
use crate::error::{Error, Result};
use serde::Serialize;

/// The most sequences one cache decodes together.
pub const MAX_SEQUENCES: usize = 64;
/// The largest block size accepted (positions per block).
pub const MAX_BLOCK_SIZE: usize = 1024;
/// The default block size (vLLM's).
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Refuses a block size outside 1..=MAX_BLOCK_SIZE, naming the field.
pub fn check_block_size(block_size: usize) -> Result<()> {
    if (1..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("block_size = {block_size}: must be 1..={MAX_BLOCK_SIZE} positions")))
    }
}

/// The physical blocks, their reference counts and the free list.
pub struct KvPool {
    pub block_size: usize,
    layers: usize,
    nkv: usize,
    hs: usize,
    /// Block b, layer l, keys (0) or values (1), head h, row r: `((((b·L + l)·2 + kv)·NKV + h)·BS + r)·HS`.
    data: Vec<f32>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl KvPool {
    fn new(layers: usize, nkv: usize, hs: usize, block_size: usize) -> KvPool {
        KvPool { block_size, layers, nkv, hs, data: vec![], refs: vec![], free: vec![] }
    }

    /// Floats in one block: every layer's K and V for block_size positions.
    pub fn block_floats(&self) -> usize {
        self.layers * 2 * self.nkv * self.block_size * self.hs
    }

    /// Where row 0 of (block, layer, kv, head) starts; its block_size rows of HS floats follow.
    fn at(&self, block: u32, layer: usize, kv: usize, head: usize) -> usize {
        (((block as usize * self.layers + layer) * 2 + kv) * self.nkv + head) * self.block_size * self.hs
    }

    /// A block with reference count 1: the free list's last, else a new one.
    fn alloc(&mut self) -> u32 {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                self.data.resize(self.data.len() + self.block_floats(), 0.0);
                self.refs.push(0);
                (self.refs.len() - 1) as u32
            }
        };
        self.refs[b as usize] = 1;
        b
    }

    fn retain(&mut self, b: u32) {
        self.refs[b as usize] += 1;
    }

    fn release(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        *r -= 1;
        if *r == 0 {
            self.free.push(b);
        }
    }

    /// A private copy of block `b` (its first `rows` rows), for a sequence about to write to a shared block.
    fn copy_on_write(&mut self, b: u32, rows: usize) -> u32 {
        let c = self.alloc();
        for layer in 0..self.layers {
            for kv in 0..2 {
                for h in 0..self.nkv {
                    let (from, to) = (self.at(b, layer, kv, h), self.at(c, layer, kv, h));
                    self.data.copy_within(from..from + rows * self.hs, to);
                }
            }
        }
        self.release(b);
        c
    }

    /// Blocks held by at least one sequence.
    pub fn blocks_used(&self) -> usize {
        self.refs.iter().filter(|&&r| r > 0).count()
    }

    /// Blocks the pool has allocated (used or free).
    pub fn blocks_allocated(&self) -> usize {
        self.refs.len()
    }

    pub fn refs(&self, b: u32) -> u32 {
        self.refs[b as usize]
    }
}

/// One sequence: its block table, its length and (recurrent positions) its GRU state.
#[derive(Clone, Debug, Default)]
pub struct Seq {
    pub table: Vec<u32>,
    pub len: usize,
    rnn_h: Vec<f32>,
}

/// What the cache holds, for the page's view and the command line (`tp sample --n`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvStats {
    pub block_size: usize,
    pub blocks_used: usize,
    /// Bytes of the blocks in use (every layer's K and V, f32).
    pub bytes_used: usize,
    /// Bytes that one contiguous cache of ctx_len positions per live sequence would take.
    pub bytes_contiguous: usize,
    /// Bytes of one position of one sequence (all layers' K and V).
    pub bytes_per_position: usize,
}

/// The block table, for the page's view: each live sequence's blocks and length, and each block's reference count
/// (0: free).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvTable {
    pub block_size: usize,
    /// (sequence slot, its blocks in position order, positions held); finished sequences are absent.
    pub seqs: Vec<(usize, Vec<u32>, usize)>,
    pub refs: Vec<u32>,
}

/// A decoder over the paged cache: sequences are slots (`add`, `fork`, `free`), a step (`feed`) advances several.
pub struct PagedDecoder {
    pub pool: KvPool,
    seqs: Vec<Option<Seq>>,
    /// Encoder-decoder: every decoder layer's cross-attention keys and values of the one source, computed once and
    /// read by every sequence.
    cross: Vec<KvCache>,
    ctx_len: usize,
}

impl PagedDecoder {
    /// For gpt; an encoder-decoder uses `with_source`.
    pub fn new(model: &Model, block_size: usize) -> Result<PagedDecoder> {
        check_block_size(block_size)?;
        let m = &model.cfg;
        let layers = model.layout.decoder.as_ref().map_or(0, |d| d.blocks.len());
        let pool = KvPool::new(layers, m.n_kv_heads, m.head_size(), block_size);
        Ok(PagedDecoder { pool, seqs: vec![], cross: vec![], ctx_len: m.ctx_len })
    }

    /// Encodes the source once and keeps every decoder layer's cross-attention keys and values for all sequences.
    pub fn with_source<H: Host>(model: &Model, be: &H, src: &[u32], block_size: usize) -> Result<PagedDecoder> {
        let mut d = PagedDecoder::new(model, block_size)?;
        let memory = model.encode(be, src);
        let ctx = Ctx { be, cfg: &model.cfg, params: &model.params[..], grads: None, dropout: None };
        let dec = model.layout.decoder.as_ref().expect("encoder-decoder has a decoder");
        for bp in &dec.blocks {
            let cp = bp.cross.as_ref().expect("decoder blocks have cross-attention");
            d.cross.push(on_host(block::memory_kv_cache(&ctx, cp, &memory, src.len())));
        }
        Ok(d)
    }

    /// A new, empty sequence; returns its slot.
    pub fn add(&mut self) -> Result<usize> {
        let live = self.seqs.iter().filter(|s| s.is_some()).count();
        if live >= MAX_SEQUENCES {
            return Err(Error::Invalid(format!("the cache holds at most {MAX_SEQUENCES} sequences")));
        }
        match self.seqs.iter().position(|s| s.is_none()) {
            Some(i) => {
                self.seqs[i] = Some(Seq::default());
                Ok(i)
            }
            None => {
                self.seqs.push(Some(Seq::default()));
                Ok(self.seqs.len() - 1)
            }
        }
    }

    /// A new sequence sharing every block of `seq` (no copy); returns its slot.
    pub fn fork(&mut self, seq: usize) -> Result<usize> {
        let s = self.seq(seq)?.clone();
        let new = self.add()?;
        s.table.iter().for_each(|&b| self.pool.retain(b));
        self.seqs[new] = Some(s);
        Ok(new)
    }

    /// Ends a sequence: its blocks go back to the free list (shared ones when their last reader ends).
    pub fn free(&mut self, seq: usize) {
        if let Some(s) = self.seqs.get_mut(seq).and_then(Option::take) {
            s.table.iter().for_each(|&b| self.pool.release(b));
        }
    }

    /// Empties a sequence (its blocks freed), keeping its slot: it starts again at position 0.
    pub fn reset(&mut self, seq: usize) -> Result<()> {
        let s = self.seqs.get_mut(seq).and_then(Option::as_mut).ok_or_else(|| no_seq(seq))?;
        let table = std::mem::take(&mut s.table);
        s.len = 0;
        s.rnn_h.clear();
        table.iter().for_each(|&b| self.pool.release(b));
        Ok(())
    }

    pub fn seq(&self, seq: usize) -> Result<&Seq> {
        self.seqs.get(seq).and_then(Option::as_ref).ok_or_else(|| no_seq(seq))
    }

    pub fn live(&self) -> usize {
        self.seqs.iter().filter(|s| s.is_some()).count()
    }

    pub fn stats(&self) -> KvStats {
        let per_position = self.pool.layers * 2 * self.pool.nkv * self.pool.hs * 4;
        KvStats {
            block_size: self.pool.block_size,
            blocks_used: self.pool.blocks_used(),
            bytes_used: self.pool.blocks_used() * self.pool.block_floats() * 4,
            bytes_contiguous: self.live() * self.ctx_len * per_position,
            bytes_per_position: per_position,
        }
    }

    pub fn table(&self) -> KvTable {
        KvTable {
            block_size: self.pool.block_size,
            seqs: self.seqs.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s.table.clone(), s.len))).collect(),
            refs: self.pool.refs.clone(),
        }
    }

    /// Makes room for positions len..len+t of `seq`: new blocks from the free list, and a private copy of its last
    /// block when that block is shared and only partly filled (the positions to write would land in it).
    fn reserve(&mut self, seq: usize, t: usize) -> Result<()> {
        let bs = self.pool.block_size;
        let mut s = self.seqs.get_mut(seq).and_then(Option::take).ok_or_else(|| no_seq(seq))?;
        if s.len % bs != 0 {
            let last = s.table.len() - 1;
            if self.pool.refs(s.table[last]) > 1 {
                s.table[last] = self.pool.copy_on_write(s.table[last], s.len % bs);
            }
        }
        while s.table.len() * bs < s.len + t {
            s.table.push(self.pool.alloc());
        }
        self.seqs[seq] = Some(s);
        Ok(())
    }

    /// Feeds `t` tokens to each sequence of `seqs` — `ids` (B,T), row b for seqs[b] — at positions len..len+t (the
    /// same len for all) and returns their logits (B,T,V). One batched pass: every matmul over the B·T rows.
    pub fn feed<H: Host>(&mut self, model: &Model, be: &H, seqs: &[usize], ids: &[u32], t: usize) -> Result<Vec<f32>> {
        let b = seqs.len();
        if b == 0 || t == 0 || ids.len() != b * t {
            return Err(Error::Invalid(format!("a feed needs t ≥ 1 tokens for each of ≥ 1 sequences, got {} ids for {b} × {t}", ids.len())));
        }
        let len = self.seq(seqs[0])?.len;
        for &s in seqs {
            if self.seq(s)?.len != len {
                return Err(Error::Invalid("the sequences of one step must hold the same number of positions".into()));
            }
        }
        if seqs.iter().enumerate().any(|(i, s)| seqs[..i].contains(s)) {
            return Err(Error::Invalid("a sequence appears twice in one step".into()));
        }
        if len + t > self.ctx_len {
            return Err(Error::Invalid(format!("positions {len}..{} are past ctx_len = {}", len + t, self.ctx_len)));
        }
        for &s in seqs {
            self.reserve(s, t)?;
        }
        let m = &model.cfg;
        let sp: &StackParams = model.layout.decoder.as_ref().expect("a decoder stack");
        let mut ctx = Ctx { be, cfg: m, params: &model.params[..], grads: None, dropout: None };
        let st = StackCtx::on(m, sp, b, t, len, None);
        let c = m.d_model;
        let mut x = on_host(model.embed(&ctx, sp, ids, b, t, len));
        if let Some(r) = &sp.rnn {
            // Each sequence's GRU goes on from the state its previous tokens left (none at position 0).
            let h0: Vec<f32> = if len > 0 { seqs.iter().flat_map(|&s| self.seqs[s].as_ref().unwrap().rnn_h.clone()).collect() } else { vec![] };
            let rc = on_host(recurrent::recurrent_forward(&ctx, r, &mut x, (len > 0).then_some(&h0[..]), b, t));
            for (i, &s) in seqs.iter().enumerate() {
                self.seqs[s].as_mut().unwrap().rnn_h = rc.h[((i + 1) * t - 1) * c..(i + 1) * t * c].to_vec();
            }
        }
        let tables: Vec<Vec<u32>> = seqs.iter().map(|&s| self.seqs[s].as_ref().unwrap().table.clone()).collect();
        for (layer, bp) in sp.blocks.iter().enumerate() {
            let cross = self.cross.get(layer);
            let pool = &mut self.pool;
            x = on_host(paged_block_forward(&mut ctx, &st, bp, x, pool, layer, &tables, cross));
        }
        if let Some(nf) = &sp.ln_f {
            x = on_host(block::norm_forward(&ctx, nf, &x)).out;
        }
        for &s in seqs {
            self.seqs[s].as_mut().unwrap().len += t;
        }
        let v = model.vocab();
        let mut logits = vec![0.0; b * t * v];
        on_host(be.matmul_forward(&mut logits, &x, model.layout.head().of(&model.params), None, b * t, c, v));
        Ok(logits)
    }
}

fn no_seq(seq: usize) -> Error {
    Error::Invalid(format!("no sequence {seq} in the cache"))
}

/// One block of the decoder stack over the paged cache (no dropout, no capacity: inference).
#[allow(clippy::too_many_arguments)]
fn paged_block_forward<H: Host>(
    ctx: &mut Ctx<H>,
    st: &StackCtx<H>,
    p: &BlockParams,
    x: Vec<f32>,
    pool: &mut KvPool,
    layer: usize,
    tables: &[Vec<u32>],
    cross: Option<&KvCache>,
) -> Result<Vec<f32>> {
    let (_, x) = block::sublayer_forward(ctx, st, &p.attn_norms, x, |ctx, h| Ok((paged_self_attention(ctx, st, p, h, pool, layer, tables)?, ())))?;
    let x = match (&p.cross, cross) {
        (Some(cp), Some(kv)) => block::sublayer_forward(ctx, st, &cp.norms, x, |ctx, h| Ok((shared_cross_attention(ctx, st, cp, h, kv)?, ())))?.1,
        _ => x,
    };
    let (_, x) = block::sublayer_forward(ctx, st, &p.ffn_norms, x, |ctx, h| block::ffn_forward(ctx, st, p, h, false))?;
    Ok(x)
}

/// Self-attention over the paged cache: this step's keys and values are written into each sequence's blocks at its
/// positions len..len+t; then every sequence's positions 0..len+t are gathered, block by block through its table,
/// into one (B, NKV, S, HS) batch, and one attention call serves all B sequences (they hold the same number of
/// positions): its work is spread over the pool, and each sequence's rows are computed exactly as in a call of its
/// own.
fn paged_self_attention<H: Host>(
    ctx: &mut Ctx<H>,
    st: &StackCtx<H>,
    p: &BlockParams,
    h: &Vec<f32>,
    pool: &mut KvPool,
    layer: usize,
    tables: &[Vec<u32>],
) -> Result<Vec<f32>> {
    let (d, m, t, len) = (ctx.be, ctx.cfg, st.t, st.pos0);
    let (nh, nkv, hs, bs) = (m.n_heads, m.n_kv_heads, m.head_size(), pool.block_size);
    let qkv = block::qkv_projection(ctx, st, p, h)?;
    let [ql, kl, vl] = block::qkv_layouts(m, t);
    let (n, c, s) = (tables.len(), nh * hs, len + t);
    let (mut kb, mut vb) = (vec![0.0; n * nkv * s * hs], vec![0.0; n * nkv * s * hs]); // (B, NKV, S, HS)
    for (b, table) in tables.iter().enumerate() {
        // Write: row j of head kh goes to position len + j.
        for kh in 0..nkv {
            for j in 0..t {
                let pos = len + j;
                let (blk, row) = (table[pos / bs], pos % bs);
                for (kv, lay) in [(0, kl), (1, vl)] {
                    let (at, src) = (pool.at(blk, layer, kv, kh) + row * hs, lay.at(b, kh, j));
                    pool.data[at..at + hs].copy_from_slice(&qkv[src..src + hs]);
                }
            }
        }
        // Gather positions 0..s of each head, a block's rows at a time.
        for kh in 0..nkv {
            for (i, &blk) in table.iter().enumerate().take(s.div_ceil(bs)) {
                let rows = bs.min(s - i * bs);
                let dst = ((b * nkv + kh) * s + i * bs) * hs;
                for (kv, to) in [(0, &mut kb), (1, &mut vb)] {
                    let at = pool.at(blk, layer, kv, kh);
                    to[dst..dst + rows * hs].copy_from_slice(&pool.data[at..at + rows * hs]);
                }
            }
        }
    }
    let mut att = vec![0.0; n * t * c];
    let mut lse = vec![0.0; n * nh * t];
    let sh = crate::backend::AttnShape { q: ql, ..block::attn_shape(ctx, n, t, s, st.causal, len) };
    d.attention_forward(&mut att, &mut lse, &qkv, &kb, &vb, block::bias_of(ctx, st)?, &sh)?;
    block::linear_forward(ctx, &p.proj, &att, n * t)
}

/// Cross-attention of every sequence's queries to the one source's cached keys and values.
fn shared_cross_attention<H: Host>(ctx: &mut Ctx<H>, st: &StackCtx<H>, p: &CrossParams, h: &[f32], kv: &KvCache) -> Result<Vec<f32>> {
    let (d, m, b, t) = (ctx.be, ctx.cfg, st.b, st.t);
    let (nh, hs) = (m.n_heads, m.head_size());
    let c = nh * hs;
    let q = block::linear_forward(ctx, &p.q, h, b * t)?;
    let mut att = vec![0.0; b * t * c];
    let mut lse = vec![0.0; nh * t];
    // Each sequence's queries are its T rows of q (T, NH·HS).
    let sh = crate::backend::AttnShape { q: block::cross_attn_shape(ctx, 1, t, kv.len).q, ..block::attn_shape(ctx, 1, t, kv.len, false, 0) };
    for i in 0..b {
        let qb = &q[i * t * c..(i + 1) * t * c];
        d.attention_forward(&mut att[i * t * c..(i + 1) * t * c], &mut lse, qb, &kv.k, &kv.v, crate::backend::AttnBias::None, &sh)?;
    }
    block::linear_forward(ctx, &p.proj, &att, b * t)
}
