//! Attention's cost, measured: for each sequence length T, the time of one attention forward + backward, naive
//! (the scores and probabilities materialised as (B,NH,T,T) matrices) against fused (FlashAttention, Dao et al.
//! 2022: tiles and an online softmax, so nothing T×T is stored), and the memory each path needs beyond its inputs,
//! outputs and gradients. Used by `tp attention-cost` (natively: the CPU backend, or wgpu) and by the browser's
//! "Attention cost" panel (`wasm::AttentionCost`: WASM threads, or WebGPU), one T at a time.
//!
//! Both paths run self-attention (S = T) on the same seeded random q, k, v and dout, causal unless the spec says
//! otherwise, with no score bias. The fused path is the backend's `attention_forward` + `attention_backward` (the
//! ops training runs); the naive one is `cpu::attention_naive_*` or the GPU's `attention_naive_*` kernels. A time
//! is the median of several repeats after a warm-up run; on the GPU a repeat ends when a value written by the
//! backward has been read back. Where the naive path's memory would pass the spec's budget (or, on a GPU, the
//! device's largest binding), its row has no time, only the bytes it would need and a note.

use crate::backend::cpu::{self, Cpu};
use crate::backend::{AttnBias, AttnGrads, AttnShape, Backend, HeadLayout};
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Longest sequence a row may have.
pub const MAX_T: usize = 16384;
pub const MAX_HEADS: usize = 64;
/// The GPU's fused kernels' largest head size.
pub const MAX_HEAD_SIZE: usize = 256;
pub const MAX_BATCH: usize = 64;
/// Largest memory of one row's inputs, outputs and gradients (q, k, v, dout, out, dq, dk, dv). Smaller in the
/// browser, where a wasm32 instance addresses 4 GiB and the training runs share it: a failed allocation there
/// aborts the instance instead of returning an error.
pub const MAX_TENSOR_BYTES: u64 = if cfg!(target_arch = "wasm32") { 256 << 20 } else { 1 << 30 };
/// Largest naive-path budget a spec may give, in MiB (in the browser, for the reason above, 1 GiB).
pub const MAX_BUDGET_MIB: u64 = if cfg!(target_arch = "wasm32") { 1 << 10 } else { 16 << 10 };
/// The sequence lengths of a sweep when none are given.
pub const DEFAULT_TS: [usize; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

/// Which implementation of the two paths a row runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostBackend {
    /// The CPU backend (rayon + SIMD; in the browser, WASM threads).
    Cpu,
    /// The wgpu backend (a GPU, Mesa's lavapipe, or the browser's WebGPU).
    Gpu,
}

/// The attention a sweep measures. Field names are the CLI's flags (`--head-size` is `head_size`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostSpec {
    /// B
    pub batch: usize,
    /// NH
    pub heads: usize,
    /// NKV; `None`: as many as `heads` (MHA).
    pub kv_heads: Option<usize>,
    /// HS
    pub head_size: usize,
    /// Causal (a GPT's self-attention) or bidirectional (BERT's).
    pub causal: bool,
    /// The naive path runs only where its bytes (`naive_bytes`) stay within this many MiB.
    pub budget_mib: u64,
}

impl Default for CostSpec {
    fn default() -> CostSpec {
        CostSpec { batch: 1, heads: 4, kv_heads: None, head_size: 64, causal: true, budget_mib: 512 }
    }
}

/// One row of a sweep: `naive_ms` is `None` (JSON null) where the naive path was not run, and `note` says why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CostRow {
    pub t: usize,
    pub naive_ms: Option<f64>,
    pub flash_ms: f64,
    pub naive_bytes: u64,
    pub flash_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The error for a bad value of a spec's field, named as the CLI flag.
fn bad(field: &str, value: impl std::fmt::Display, rule: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("--{} {value}: {rule}", field.replace('_', "-")))
}

impl CostSpec {
    pub fn kv(&self) -> usize {
        self.kv_heads.unwrap_or(self.heads)
    }

    /// Refuses a value outside its range, naming the flag, the value and the rule.
    pub fn validate(&self) -> Result<()> {
        let range = |field: &str, v: usize, max: usize| {
            if (1..=max).contains(&v) { Ok(()) } else { Err(bad(field, v, format!("must be 1 ..= {max}"))) }
        };
        range("batch", self.batch, MAX_BATCH)?;
        range("heads", self.heads, MAX_HEADS)?;
        range("head_size", self.head_size, MAX_HEAD_SIZE)?;
        range("kv_heads", self.kv(), self.heads)?;
        if !self.heads.is_multiple_of(self.kv()) {
            return Err(bad("kv_heads", self.kv(), format!("must divide --heads {} (query heads share kv heads)", self.heads)));
        }
        if !(1..=MAX_BUDGET_MIB).contains(&self.budget_mib) {
            return Err(bad("budget_mib", self.budget_mib, format!("must be 1 ..= {MAX_BUDGET_MIB}")));
        }
        Ok(())
    }

    /// The attention call of a row of length `t`, after checking `t`: 1 ..= MAX_T, and its tensors within
    /// MAX_TENSOR_BYTES. q is (B,NH,T,HS) in a buffer of its own; k and v are (B,NKV,T,HS) each in one buffer, v
    /// after k, as the backward writes dk and dv into one buffer.
    pub fn shape(&self, t: usize) -> Result<AttnShape> {
        self.validate()?;
        if !(1..=MAX_T).contains(&t) {
            return Err(bad("t", t, format!("every T must be 1 ..= {MAX_T}")));
        }
        let sh = AttnShape {
            b: self.batch,
            t,
            s: t,
            nh: self.heads,
            nkv: self.kv(),
            hs: self.head_size,
            causal: self.causal,
            q_offset: 0,
            scale: 1.0 / (self.head_size as f32).sqrt(),
            q: HeadLayout::heads(self.heads, t, self.head_size),
            k: HeadLayout::heads(self.kv(), t, self.head_size),
            v: HeadLayout { offset: self.batch * self.kv() * t * self.head_size, ..HeadLayout::heads(self.kv(), t, self.head_size) },
        };
        let bytes = 4 * (4 * sh.b * sh.nh * t * sh.hs + 4 * sh.b * sh.nkv * t * sh.hs) as u64;
        if bytes > MAX_TENSOR_BYTES {
            return Err(bad("t", t, format!("q, k, v, out and their gradients would take {} MiB; the limit is {} MiB", bytes >> 20, MAX_TENSOR_BYTES >> 20)));
        }
        Ok(sh)
    }
}

/// Parses a list of sequence lengths such as "64,128,256", refusing anything but positive integers.
pub fn parse_ts(list: &str) -> Result<Vec<usize>> {
    let ts: Vec<usize> = list
        .split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|_| bad("t", format!("{list:?}"), "expected lengths like 64,128,256")))
        .collect::<Result<_>>()?;
    if ts.is_empty() {
        return Err(bad("t", format!("{list:?}"), "expected at least one length"));
    }
    Ok(ts)
}

/// Bytes the naive path holds beyond its inputs, outputs and gradients, at its peak (the backward).
/// CPU: 4·(2·B·NH·T·S + B·NKV·HS·S): P (kept from the forward), dS, and the transposed V the products read.
/// GPU: 4·2·B·NH·T·S: probs (kept from the forward) and dscores (the backward's, from the pool).
pub fn naive_bytes(backend: CostBackend, sh: &AttnShape) -> u64 {
    let n = 2 * cpu::attention_naive_probs_len(sh);
    4 * match backend {
        CostBackend::Cpu => cpu::attention_naive_scratch_floats(sh),
        CostBackend::Gpu => n,
    } as u64
}

/// Bytes the fused path holds beyond its inputs, outputs and gradients, at its peak; `threads`: the CPU pool's.
/// CPU: 4·max(2·B·NH·T + B·NKV·HS·S, B·NH·T + 2·min(threads, B·NKV)·S·HS) — the forward keeps lse (B,NH,T), gathers
/// each query tile's lse (B·NH·T in all) and reads a transposed K; the backward keeps lse and each of its running
/// tasks (one per batch and kv head) holds Kᵀ and Vᵀ of its head. GPU: 4·3·B·NH·T — lse and the backward's
/// (lse, δ) per query row. Either way O(T): no term in T·S.
pub fn flash_bytes(backend: CostBackend, sh: &AttnShape, threads: usize) -> u64 {
    let rows = sh.b * sh.nh * sh.t;
    4 * match backend {
        CostBackend::Cpu => {
            let forward = 2 * rows + sh.b * sh.nkv * sh.hs * sh.s;
            let backward = rows + 2 * threads.max(1).min(sh.b * sh.nkv) * sh.s * sh.hs;
            forward.max(backward)
        }
        CostBackend::Gpu => 3 * rows,
    } as u64
}

/// Why the naive path is not run for these bytes, if it is not: over the spec's budget, or over `max_binding` (a
/// GPU's largest storage binding, which one (B,NH,T,S) matrix must fit).
fn refusal(spec: &CostSpec, sh: &AttnShape, bytes: u64, max_binding: Option<u64>) -> Option<String> {
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
    if bytes > spec.budget_mib << 20 {
        return Some(format!("naive skipped: it needs {}, over the budget of {} MiB", mib(bytes), spec.budget_mib));
    }
    let matrix = 4 * cpu::attention_naive_probs_len(sh) as u64;
    match max_binding {
        Some(max) if matrix > max => Some(format!("naive skipped: one (B,NH,T,T) matrix is {}, over the device's largest binding ({})", mib(matrix), mib(max))),
        _ => None,
    }
}

/// Repeats after the warm-up: enough to fill about half a second, 3 ..= 15.
fn repeats(first_ms: f64) -> usize {
    ((500.0 / first_ms.max(1e-3)) as usize).clamp(3, 15)
}

/// The median, to 0.1 µs.
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2] * 1e4).round() / 1e4
}

/// Median ms of `f` (`clock`: milliseconds from any fixed origin).
fn median_ms(clock: &dyn Fn() -> f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut once = || -> Result<f64> {
        let t0 = clock();
        f()?;
        Ok(clock() - t0)
    };
    let reps = repeats(once()?);
    Ok(median((0..reps).map(|_| once()).collect::<Result<_>>()?))
}

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Seeded q, kv (k then v, `CostSpec::shape`), dout of a row, in that order.
fn inputs(sh: &AttnShape) -> [Vec<f32>; 3] {
    let mut rng = Rng::new(sh.t as u64);
    let (nq, nkv) = (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nkv * sh.s * sh.hs);
    [nq, 2 * nkv, nq].map(|n| randn(&mut rng, n))
}

/// One row on the CPU backend (run it inside the rayon pool).
pub fn cpu_row(spec: &CostSpec, t: usize, clock: &dyn Fn() -> f64) -> Result<CostRow> {
    let sh = spec.shape(t)?;
    let [q, kv, dout] = inputs(&sh);
    let (mut out, mut lse) = (vec![0.0f32; q.len()], vec![0.0f32; sh.b * sh.nh * sh.t]);
    let (mut dq, mut dkv) = (vec![0.0f32; q.len()], vec![0.0f32; kv.len()]);
    let flash_ms = median_ms(clock, || {
        Cpu.attention_forward(&mut out, &mut lse, &q, &kv, &kv, AttnBias::None, &sh)?;
        let grads = AttnGrads::QAndKv { dq: &mut dq[..], dkv: &mut dkv[..] };
        Cpu.attention_backward(grads, None, &dout, &q, &kv, &kv, &out, &lse, AttnBias::None, &sh)
    })?;
    let naive_bytes = naive_bytes(CostBackend::Cpu, &sh);
    let note = refusal(spec, &sh, naive_bytes, None);
    let naive_ms = match note {
        Some(_) => None,
        None => {
            let mut probs = vec![0.0f32; cpu::attention_naive_probs_len(&sh)];
            Some(median_ms(clock, || {
                cpu::attention_naive_forward(&mut out, &mut probs, &q, &kv, &kv, &sh)?;
                let grads = AttnGrads::QAndKv { dq: &mut dq[..], dkv: &mut dkv[..] };
                cpu::attention_naive_backward(grads, &dout, &q, &kv, &kv, &probs, &sh)
            })?)
        }
    };
    let flash_bytes = flash_bytes(CostBackend::Cpu, &sh, rayon::current_num_threads());
    Ok(CostRow { t, naive_ms, flash_ms, naive_bytes, flash_bytes, note })
}

/// Forward FLOPs per token of a model's attention and of its FFN at context length `t` (all layers), counted as
/// `probe::shape_flow` counts them: 2 per multiply-add. Attention: the Q, K, V and output projections
/// (2·((NH + 2·NKV)·HS·C + C²) per layer, plus a decoder's cross-attention projections) and the scores and mixing
/// against `t` keys (q·k and p·v: 4·t·NH·HS per layer, and again for cross-attention). FFN: its matrices (2·(up + F)·C
/// per layer and active expert, up = 2F when gated) and a Mixture-of-Experts router (2·E·C).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlopsRow {
    pub t: usize,
    pub attention: f64,
    pub ffn: f64,
}

/// Attention's FLOPs per token as `a0 + a1·t` and the FFN's (constant in t), for `m`.
fn flops_terms(m: &ModelConfig) -> (f64, f64, f64) {
    let (c, nh, nkv, hs, f) = (m.d_model as f64, m.n_heads as f64, m.n_kv_heads as f64, m.head_size() as f64, m.ffn_hidden() as f64);
    let up = if m.ffn.activation.is_gated() { 2.0 * f } else { f };
    let (experts, active) = m.ffn.moe.as_ref().map_or((1.0, 1.0), |moe| (moe.experts as f64, moe.top_k as f64));
    let router = if experts > 1.0 { experts * c } else { 0.0 };
    let (enc, dec) = m.stack_layers();
    let stacks: &[(usize, bool)] = match m.arch {
        Arch::Gpt => &[(dec, false)],
        Arch::Bert => &[(enc, false)],
        Arch::EncoderDecoder => &[(enc, false), (dec, true)],
    };
    let (mut a0, mut a1, mut ffn) = (0.0, 0.0, 0.0);
    for &(layers, cross) in stacks {
        let (l, mixings) = (layers as f64, if cross { 2.0 } else { 1.0 });
        let mut proj = (nh + 2.0 * nkv) * hs * c + c * c;
        if cross {
            proj += 2.0 * c * c + 2.0 * nkv * hs * c;
        }
        a0 += 2.0 * l * proj;
        a1 += 4.0 * l * mixings * nh * hs;
        ffn += 2.0 * l * (active * (up + f) * c + router);
    }
    (a0, a1, ffn)
}

/// Attention against FFN FLOPs per token for each `t`, and the shortest context at which attention's pass the
/// FFN's (where the O(T) per-token term — O(T²) per sequence — starts to dominate).
pub fn attention_vs_ffn(m: &ModelConfig, ts: &[usize]) -> (Vec<FlopsRow>, usize) {
    let (a0, a1, ffn) = flops_terms(m);
    let rows = ts.iter().map(|&t| FlopsRow { t, attention: a0 + a1 * t as f64, ffn }).collect();
    let crossover = if a0 >= ffn { 1 } else { ((ffn - a0) / a1).ceil().max(1.0) as usize };
    (rows, crossover)
}

#[cfg(feature = "gpu")]
pub use on_gpu::gpu_row;

#[cfg(feature = "gpu")]
mod on_gpu {
    use super::*;
    use crate::backend::gpu::{Encoder, Gpu, GpuSlice};

    /// ms from recording `f` to reading back a value it wrote (`probe`): the submission has then run.
    async fn once(g: &Gpu, clock: &dyn Fn() -> f64, f: &dyn Fn(&mut Encoder) -> Result<()>, probe: GpuSlice<'_, f32>) -> Result<f64> {
        let t0 = clock();
        let mut e = g.encoder();
        f(&mut e)?;
        let rb = g.read_after(&mut e, probe.sub(0, 1)?);
        g.submit(e)?;
        rb.wait(g).await?;
        Ok(clock() - t0)
    }

    async fn median_ms(g: &Gpu, clock: &dyn Fn() -> f64, f: &dyn Fn(&mut Encoder) -> Result<()>, probe: GpuSlice<'_, f32>) -> Result<f64> {
        let reps = repeats(once(g, clock, f, probe).await?);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            times.push(once(g, clock, f, probe).await?);
        }
        Ok(median(times))
    }

    /// One row on the wgpu backend. In the browser, `Gpu::prepare_attention(head_size)` must have been awaited.
    pub async fn gpu_row(g: &Gpu, spec: &CostSpec, t: usize, clock: &dyn Fn() -> f64) -> Result<CostRow> {
        let sh = spec.shape(t)?;
        let [q, kv, dout] = inputs(&sh);
        let (q, kv, dout) = (g.upload(&q)?, g.upload(&kv)?, g.upload(&dout)?);
        let (out, lse) = (g.zeros::<f32>(q.len())?, g.zeros::<f32>(sh.b * sh.nh * sh.t)?);
        let (dq, dkv) = (g.zeros::<f32>(q.len())?, g.zeros::<f32>(kv.len())?);
        let fused = |e: &mut Encoder| {
            g.attention_forward(e, out.all(), lse.all(), q.all(), kv.all(), kv.all(), AttnBias::None, &sh)?;
            let (none, sh, grads) = (AttnBias::None, &sh, AttnGrads::QAndKv { dq: dq.all(), dkv: dkv.all() });
            g.attention_backward(e, grads, None, dout.all(), q.all(), kv.all(), kv.all(), out.all(), lse.all(), none, sh)
        };
        let flash_ms = median_ms(g, clock, &fused, dkv.all()).await?;
        let naive_bytes = naive_bytes(CostBackend::Gpu, &sh);
        let note = refusal(spec, &sh, naive_bytes, Some(g.ctx.limits.max_storage_buffer_binding_size.min(g.ctx.limits.max_buffer_size)));
        let naive_ms = match note {
            Some(_) => None,
            None => {
                let probs = g.zeros::<f32>(cpu::attention_naive_probs_len(&sh))?;
                let naive = |e: &mut Encoder| {
                    g.attention_naive_forward(e, out.all(), probs.all(), q.all(), kv.all(), kv.all(), &sh)?;
                    let grads = AttnGrads::QAndKv { dq: dq.all(), dkv: dkv.all() };
                    g.attention_naive_backward(e, grads, dout.all(), q.all(), kv.all(), kv.all(), probs.all(), &sh)
                };
                Some(median_ms(g, clock, &naive, dkv.all()).await?)
            }
        };
        // The backward's scratch (dscores, the (lse, δ) stats) stays in the pool: give it back before the next row.
        g.trim_pool();
        Ok(CostRow { t, naive_ms, flash_ms, naive_bytes, flash_bytes: flash_bytes(CostBackend::Gpu, &sh, 1), note })
    }
}
