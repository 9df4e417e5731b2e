//! The op set the model is written against: ONE trait, `Backend`, implemented directly by three backends.
//!
//! - `Reference` (`ops/`): the scalar reference ("version 1": obviously correct, slow), over host `Vec<f32>`s.
//! - `cpu::Cpu` (`cpu/`): the fast versions, rayon + SIMD, over the same host buffers.
//! - `gpu::GpuStep` (`gpu/`, feature `gpu`): WGSL kernels; buffers live on the device and every op is recorded
//!   into one command encoder, so a whole training step is one submission.
//!
//! A backend owns its tensors (`Buf`) and runs each op over views of them (`In`, `Out`); parameters and gradients
//! are one flat buffer each (`Params`), cut into tensors by `View`s. Host data fixed by the batch or the shapes
//! (token ids, targets, dropout masks, ALiBi slopes, T5 buckets, the sinusoidal table) is passed as host slices;
//! a device uploads it. Adding an op means: a method here, `ops::` (reference), `cpu::` (fast), a GPU kernel
//! (`gpu::GpuStep`), and tests holding the fast versions to the reference.
//!
//! Argument order follows llm.c: outputs first, then saved caches, then inputs, then parameters, then sizes.
//! Backward methods ACCUMULATE (`+=`) into parameter gradients and into input gradients; callers zero them. The one
//! exception is `matmul_act_backward`'s dpre, the gradient of a pre-activation that nothing else adds to: it is written.
//! Every op returns a `Result`: a GPU can refuse (limits, a lost device); the host backends never do.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod ops;

use crate::config::{Activation, NormKind};
use crate::error::Result;

/// A tensor's place in a flat buffer (the parameters, the gradients, AdamW's moments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub offset: usize,
    pub len: usize,
}

impl View {
    /// An error unless the view lies inside a buffer of `len` elements.
    pub fn check(self, len: usize) -> Result<()> {
        match self.offset.checked_add(self.len) {
            Some(end) if end <= len => Ok(()),
            _ => Err(crate::Error::Invalid(format!("tensor view {}..{} outside a buffer of {len} elements", self.offset, self.offset.saturating_add(self.len)))),
        }
    }

    pub fn of<'a>(&self, buf: &'a [f32]) -> &'a [f32] {
        &buf[self.offset..self.offset + self.len]
    }
    pub fn of_mut<'a>(&self, buf: &'a mut [f32]) -> &'a mut [f32] {
        &mut buf[self.offset..self.offset + self.len]
    }
}

/// One tensor of the flat parameter buffer, as the optimizer sees it: where it is and whether weight decay applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub view: View,
    pub decay: bool,
}

/// Where a q, k or v tensor of attention lies in its buffer: element (b, h, t, d) — batch b, head h, position t,
/// component d < HS — is at `offset + b·batch + h·head + t·row + d`. A head's row of HS floats is always contiguous;
/// the rest is strided, so attention reads its operands straight from the projections' outputs (and writes their
/// gradients straight into the projections' output gradients) without copying them into a layout of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    pub offset: usize,
    pub batch: usize,
    pub head: usize,
    pub row: usize,
}

impl HeadLayout {
    /// "Heads": (B, H, N, HS) contiguous — a KV cache, or a tensor of its own.
    pub fn heads(h: usize, n: usize, hs: usize) -> HeadLayout {
        HeadLayout { offset: 0, batch: h * n * hs, head: n * hs, row: hs }
    }

    /// "Rows": head h is columns `off + h·HS ..` of rows (B, N, width) — a projection's output, such as
    /// self-attention's qkv (q at column 0, k at NH·HS, v at (NH+NKV)·HS) or cross-attention's kv.
    pub fn rows(n: usize, width: usize, off: usize, hs: usize) -> HeadLayout {
        HeadLayout { offset: off, batch: n * width, head: hs, row: width }
    }

    /// Index of element (b, h, t, 0).
    #[inline(always)]
    pub fn at(&self, b: usize, h: usize, t: usize) -> usize {
        self.offset + b * self.batch + h * self.head + t * self.row
    }

    /// Elements a buffer needs to hold a (B, H, N, HS) tensor at this layout (0 when it is empty).
    pub fn end(&self, b: usize, h: usize, n: usize, hs: usize) -> usize {
        if b == 0 || h == 0 || n == 0 || hs == 0 {
            0
        } else {
            self.at(b - 1, h - 1, n - 1) + hs
        }
    }
}

/// Shape of one attention call. Queries are (B, NH, T, HS), keys and values (B, NKV, S, HS), each at its own
/// `HeadLayout` (self-attention reads all three from the qkv projection's rows; a KV cache holds contiguous heads);
/// the gradients dq, dk, dv are written at the same layouts as q, k, v. The output is (B, T, NH·HS), heads
/// concatenated head-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub b: usize,
    /// Query positions in this call.
    pub t: usize,
    /// Key/value positions.
    pub s: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    /// Mask keys after the query's position.
    pub causal: bool,
    /// Absolute position of query 0 (nonzero when decoding with a KV cache: queries come after the cached keys).
    pub q_offset: usize,
    /// Multiplies q·k (1/sqrt(HS) or 1).
    pub scale: f32,
    /// Where q (and dq), k (and dk), v (and dv) lie in their buffers.
    pub q: HeadLayout,
    pub k: HeadLayout,
    pub v: HeadLayout,
}

impl AttnShape {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.nh / self.nkv
    }

    /// The same call with q, k and v each in a contiguous buffer of its own (the "heads" layout).
    pub fn with_heads(self) -> AttnShape {
        let (q, kv) = (HeadLayout::heads(self.nh, self.t, self.hs), HeadLayout::heads(self.nkv, self.s, self.hs));
        AttnShape { q, k: kv, v: kv, ..self }
    }

    /// Elements the buffers of q, k and v must hold.
    pub fn q_end(&self) -> usize {
        self.q.end(self.b, self.nh, self.t, self.hs)
    }
    pub fn k_end(&self) -> usize {
        self.k.end(self.b, self.nkv, self.s, self.hs)
    }
    pub fn v_end(&self) -> usize {
        self.v.end(self.b, self.nkv, self.s, self.hs)
    }
}

/// Where `attention_backward` adds dq, dk and dv, each at the layout of q, k and v in `AttnShape`. Keys' and values'
/// gradients always share a buffer (a GPU kernel writes both through one binding); the query gradient is in that
/// buffer too (self-attention: dqkv) or in its own (cross-attention: dq rows and the memory's dkv rows).
pub enum AttnGrads<O> {
    /// dq, dk and dv in one buffer.
    Qkv(O),
    /// dq in one buffer, dk and dv in another.
    QAndKv { dq: O, dkv: O },
}

/// An additive bias on the attention scores, a function of (head, query position, key position). The ALiBi
/// slopes and T5 buckets are host data fixed by the shapes; the relative-bias table is a parameter, so it is a
/// view of the backend's own (`T`: a host slice, or a device view).
#[derive(Clone, Copy, Debug)]
pub enum AttnBias<'a, T = &'a [f32]> {
    None,
    /// ALiBi: `-slope[h] · (i - j)` (causal) or `-slope[h] · |i - j|` (bidirectional). slopes (NH)
    Alibi { slopes: &'a [f32] },
    /// T5 relative bias: `table[bucket[i·S + j] · NH + h]`. table (buckets, NH); bucket (T, S) holds the bucket
    /// of key j for query i (absolute query position q_offset + i).
    Relative { table: T, bucket: &'a [u32] },
}

impl AttnBias<'_> {
    /// The bias for head `h`, query row `i` (relative to this call), key `j`.
    #[inline]
    pub fn at(&self, sh: &AttnShape, h: usize, i: usize, j: usize) -> f32 {
        match *self {
            AttnBias::None => 0.0,
            AttnBias::Alibi { slopes } => {
                let d = (sh.q_offset + i) as f32 - j as f32;
                -slopes[h] * if sh.causal { d } else { d.abs() }
            }
            AttnBias::Relative { table, bucket } => table[bucket[i * sh.s + j] as usize * sh.nh + h],
        }
    }
}

/// Where the tokens of a Mixture-of-Experts layer go, as `moe_route` decided: for assignment a = token·k + j (the
/// token's j-th choice), the expert `choice[a]`, the assignment's row among that expert's rows `slot[a]` (−1: over
/// the capacity, dropped) and its weight `weight[a]`. Experts and rows are integers held exactly as f32.
#[derive(Clone, Copy, Debug)]
pub struct Routing<T> {
    pub choice: T,
    pub slot: T,
    pub weight: T,
    /// Tokens.
    pub n: usize,
    /// Experts per token.
    pub k: usize,
}

/// Floats of a Mixture-of-Experts layer's statistics (`moe_route`): the balancing loss, the dropped assignments,
/// then each expert's assignments.
pub fn moe_stats_len(experts: usize) -> usize {
    2 + experts
}

/// The error of a grouped Mixture-of-Experts op on a backend that runs the experts one by one.
fn not_grouped(backend: &str) -> crate::Error {
    crate::Error::Invalid(format!("the {backend} backend runs Mixture-of-Experts experts one by one, not grouped"))
}

/// AdamW hyper-parameters for one step (t counts from 1).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub t: u32,
}

/// The op set. See the module docs for the conventions.
pub trait Backend {
    /// An owned f32 tensor.
    type Buf;
    /// A read-only view of a tensor or of a parameter.
    type In<'a>: Copy;
    /// A writable view.
    type Out<'a>;
    /// The flat parameter (and gradient, and optimizer-moment) buffer.
    type Params: ?Sized;
    /// The mean cross-entropy of a forward pass: a number on the host; on the GPU a device scalar read back later.
    type Loss: Copy;
    /// What `read` gives: the values on the host; on the GPU a readback to await once the work is submitted.
    type Read;

    fn name(&self) -> &'static str;

    // -- Buffers ------------------------------------------------------------------------------------------------

    /// A tensor of n zeros.
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// A tensor of n elements for an op that writes every one of them (its `out`, never an accumulator `+=`): a
    /// backend may hand it out without zero-filling it. The gpu does (a clear is a command of its own on the
    /// device); the cpu lends a buffer of the last step's forward pass (`recycle`) when one has this length; the
    /// reference zeroes it as `zeros` does.
    fn output(&self, n: usize) -> Result<Self::Buf> {
        self.zeros(n)
    }
    /// Takes back a finished step's buffers (its forward pass's caches, `model::Buffers`) for later `output`s. The
    /// cpu keeps them until the next `recycle` (`cpu::glue::recycle`); the others drop them (the gpu's pool
    /// already takes a buffer back when its handle is dropped).
    fn recycle(&self, bufs: Vec<Self::Buf>) {
        drop(bufs)
    }
    /// A tensor holding host data (dropout masks).
    fn upload(&self, data: Vec<f32>) -> Result<Self::Buf>;
    /// A copy of x.
    fn copy_of(&self, x: Self::In<'_>) -> Result<Self::Buf>;
    /// x ← 0.
    fn zero(&self, x: Self::Out<'_>) -> Result<()>;
    /// The values of x once the work recorded so far has run.
    fn read(&self, x: Self::In<'_>) -> Result<Self::Read>;
    fn view(x: &Self::Buf) -> Self::In<'_>;
    fn view_mut(x: &mut Self::Buf) -> Self::Out<'_>;
    /// Elements of a view.
    fn len(x: Self::In<'_>) -> usize;
    /// The tensor `v` of a flat buffer (parameters); a view outside the buffer is an error.
    fn param(p: &Self::Params, v: View) -> Result<Self::In<'_>>;
    /// The tensor `v` of a flat buffer, writable (gradients).
    fn grad(g: &mut Self::Params, v: View) -> Result<Self::Out<'_>>;
    /// Two disjoint tensors of a flat buffer at once (a weight and its bias); overlapping views are an error.
    fn grad_pair(g: &mut Self::Params, a: View, b: Option<View>) -> Result<(Self::Out<'_>, Option<Self::Out<'_>>)>;
    /// Disjoint tensors of a flat buffer at once, in the order asked (every expert's gradients); overlapping views
    /// are an error.
    fn grad_many<'a>(g: &'a mut Self::Params, views: &[View]) -> Result<Vec<Self::Out<'a>>>;
    /// The values of x now, where the backend holds them on the host (the host backends); None on a device, where
    /// they exist only once the recorded work has run. Code that sizes work by data (the rows each expert of a
    /// Mixture-of-Experts layer gets) uses the values where it can and a bound where it cannot.
    fn known(&self, x: Self::In<'_>) -> Option<Vec<f32>>;
    /// The mean loss, given the values `read` gave for the scalars buffer the loss was summed into (see
    /// `train::step`); the host's loss is the number itself.
    fn loss_value(loss: Self::Loss, scalars: &[f32]) -> f32;

    // -- The model's ops ---------------------------------------------------------------------------------------

    /// out (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC)
    fn matmul_forward(
        &self,
        out: Self::Out<'_>,
        inp: Self::In<'_>,
        w: Self::In<'_>,
        b: Option<Self::In<'_>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;

    /// dinp (N,C) += dout·w; dw (OC,C) += doutᵀ·inp; db (OC) += Σ_n dout.
    fn matmul_backward(
        &self,
        dinp: Option<Self::Out<'_>>,
        dw: Self::Out<'_>,
        db: Option<Self::Out<'_>>,
        dout: Self::In<'_>,
        inp: Self::In<'_>,
        w: Self::In<'_>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;

    /// out (N,C) = norm(inp) · w + b; saves mean (N) (layernorm only) and rstd (N).
    fn norm_forward(
        &self,
        kind: NormKind,
        out: Self::Out<'_>,
        mean: Self::Out<'_>,
        rstd: Self::Out<'_>,
        inp: Self::In<'_>,
        w: Self::In<'_>,
        b: Option<Self::In<'_>>,
        eps: f32,
        c: usize,
    ) -> Result<()>;

    /// dinp (N,C) += ∂L/∂inp; dw, db (C) +=.
    fn norm_backward(
        &self,
        kind: NormKind,
        dinp: Self::Out<'_>,
        dw: Self::Out<'_>,
        db: Option<Self::Out<'_>>,
        dout: Self::In<'_>,
        inp: Self::In<'_>,
        w: Self::In<'_>,
        mean: Self::In<'_>,
        rstd: Self::In<'_>,
        c: usize,
    ) -> Result<()>;

    /// out (B,T,NH·HS) = softmax(scale·q·kᵀ + bias, masked) · v; lse (B,NH,T) = log-sum-exp of each score row.
    /// q (B,NH,T,HS), k, v (B,NKV,S,HS), each read at its layout in `sh` (q, k and v may be views of one buffer).
    fn attention_forward(
        &self,
        out: Self::Out<'_>,
        lse: Self::Out<'_>,
        q: Self::In<'_>,
        k: Self::In<'_>,
        v: Self::In<'_>,
        bias: AttnBias<'_, Self::In<'_>>,
        sh: &AttnShape,
    ) -> Result<()>;

    /// dq (B,NH,T,HS), dk, dv (B,NKV,S,HS) += at the layouts of q, k, v in `sh`, into `grads`; dtable
    /// (buckets,NH) += for a relative bias. Probabilities are recomputed from lse, so no (T,S) matrix is kept
    /// between forward and backward.
    fn attention_backward(
        &self,
        grads: AttnGrads<Self::Out<'_>>,
        dtable: Option<Self::Out<'_>>,
        dout: Self::In<'_>,
        q: Self::In<'_>,
        k: Self::In<'_>,
        v: Self::In<'_>,
        out: Self::In<'_>,
        lse: Self::In<'_>,
        bias: AttnBias<'_, Self::In<'_>>,
        sh: &AttnShape,
    ) -> Result<()>;

    /// out (N,F) = act(inp): inp is (N,F), or (N,2F) [gate | up] for gated activations.
    fn activation_forward(&self, act: Activation, out: Self::Out<'_>, inp: Self::In<'_>, f: usize) -> Result<()>;

    /// dinp (N,F or 2F) += ∂L/∂inp. out (N,F) is the forward's output, which a backend may use (the cpu backend
    /// forms GELU's derivative from it); the reference works from inp alone.
    fn activation_backward(
        &self,
        act: Activation,
        dinp: Self::Out<'_>,
        dout: Self::In<'_>,
        inp: Self::In<'_>,
        out: Self::In<'_>,
        f: usize,
    ) -> Result<()>;

    /// The FFN's first linear layer with its activation (llm.c's `matmul_forward` then `gelu_forward`, one op):
    /// pre (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC), the pre-activation the backward needs, and out (N,F) = act(pre),
    /// with OC = F, or OC = 2F ([gate | up]) for gated activations. A backend may fuse the activation into the
    /// product's epilogue (applied to each block of pre as it is finished, while it is still in cache or registers)
    /// or run the two ops; either way the result is `matmul_forward` then `activation_forward`.
    #[allow(clippy::too_many_arguments)]
    fn matmul_act_forward(
        &self,
        act: Activation,
        pre: Self::Out<'_>,
        out: Self::Out<'_>,
        inp: Self::In<'_>,
        w: Self::In<'_>,
        b: Option<Self::In<'_>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;

    /// The FFN's second linear layer's backward with the activation's: dpre (N,C), or (N,2C) gated, = ∂L/∂pre =
    /// (dout·w) ⊙ act'(pre), WRITTEN (`=`, not `+=`: dpre is a fresh buffer, and dout·w is never kept); dw (OC,C) +=
    /// doutᵀ·inp; db (OC) += Σ_n dout. inp (N,C) = act(pre) is the layer's input (the forward's out), pre the
    /// forward's pre-activation. Equals `matmul_backward` into a zeroed dact, then `activation_backward` into a
    /// zeroed dpre; a backend may fuse act' into the epilogue of the dout·w product.
    #[allow(clippy::too_many_arguments)]
    fn matmul_act_backward(
        &self,
        act: Activation,
        dpre: Self::Out<'_>,
        dw: Self::Out<'_>,
        db: Option<Self::Out<'_>>,
        dout: Self::In<'_>,
        inp: Self::In<'_>,
        pre: Self::In<'_>,
        w: Self::In<'_>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;

    /// RoPE in place on the (B, H, T, HS) tensor at `lay` in x (the q or k columns of qkv, or of its gradient),
    /// row t at position pos0 + t; `inverse` applies the transpose (for the backward).
    #[allow(clippy::too_many_arguments)]
    fn rope(&self, x: Self::Out<'_>, lay: HeadLayout, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()>;

    /// Fused softmax + cross-entropy over rows whose target is not −1 (`count` of them, counted by the caller):
    /// dlogits (N,V) = (softmax − onehot)/count on those rows, 0 elsewhere; the mean loss (NaN when count = 0).
    fn mean_cross_entropy(
        &self,
        dlogits: Self::Out<'_>,
        logits: Self::In<'_>,
        targets: &[i32],
        v: usize,
        count: usize,
    ) -> Result<Self::Loss>;

    /// out (B·T, C) = wte[ids] + wpe[pos0 + t] (learned) + sin[t] (sinusoidal table (T, C), empty when unused).
    fn embedding_forward(
        &self,
        out: Self::Out<'_>,
        ids: &[u32],
        wte: Self::In<'_>,
        wpe: Option<Self::In<'_>>,
        sin: &[f32],
        t: usize,
        pos0: usize,
        c: usize,
    ) -> Result<()>;

    /// dwte[ids[r]] += dx[r]; dwpe[r mod T] += dx[r], row by row in order.
    fn embedding_backward(
        &self,
        dwte: Self::Out<'_>,
        dwpe: Option<Self::Out<'_>>,
        dx: Self::In<'_>,
        ids: &[u32],
        t: usize,
        c: usize,
    ) -> Result<()>;

    /// out = α·a + b (residual connections; α is DeepNorm's, 1 otherwise).
    fn add_scaled(&self, out: Self::Out<'_>, a: Self::In<'_>, b: Self::In<'_>, alpha: f32) -> Result<()>;
    /// out = α·a.
    fn scale(&self, out: Self::Out<'_>, a: Self::In<'_>, alpha: f32) -> Result<()>;
    /// a += b.
    fn add_into(&self, a: Self::Out<'_>, b: Self::In<'_>) -> Result<()>;
    /// a ⊙= m (a dropout mask).
    fn mul_into(&self, a: Self::Out<'_>, m: Self::In<'_>) -> Result<()>;

    /// out (H, len+n, HS) ← old (H, len, HS) then new (H, n, HS), head by head (a KV cache growing by n rows);
    /// `new` is read at its layout `new_lay` (batch 0: the rows of this call's qkv projection).
    #[allow(clippy::too_many_arguments)]
    fn append_heads(
        &self,
        out: Self::Out<'_>,
        old: Self::In<'_>,
        new: Self::In<'_>,
        new_lay: HeadLayout,
        h: usize,
        len: usize,
        n: usize,
        hs: usize,
    ) -> Result<()>;

    // -- Mixture-of-Experts routing (docs/MODEL.md "Mixture-of-Experts") ---------------------------------------

    /// Routes n tokens among e experts from the router's logits (N,E): probs (N,E) = softmax(logits); each token's
    /// k most probable experts (ties: the lower index), in descending order, weighted by their probabilities
    /// renormalised over the k; assignments numbered per expert in token order, those from `cap` on dropped
    /// (slot −1). Writes the routing (`choice`, `slot`, `weight`: N·k each) and `stats` (`moe_stats_len(e)`):
    /// [E·Σ_e f_e·P_e, dropped, count_0 … count_{E−1}] with count_e the assignments to e before the capacity,
    /// f_e = count_e/(N·k) and P_e the mean of probs[·, e].
    fn moe_route(
        &self,
        probs: Self::Out<'_>,
        choice: Self::Out<'_>,
        slot: Self::Out<'_>,
        weight: Self::Out<'_>,
        stats: Self::Out<'_>,
        logits: Self::In<'_>,
        n: usize,
        e: usize,
        k: usize,
        cap: usize,
    ) -> Result<()>;

    /// dlogits (N,E) += ∂/∂logits of the weights' gradient `dweight` (N·k) through the renormalised top-k and the
    /// softmax, plus `aux` × the balancing loss's (E·f_e/N on probs[·, e], f_e held constant).
    fn moe_route_backward(
        &self,
        dlogits: Self::Out<'_>,
        dweight: Self::In<'_>,
        probs: Self::In<'_>,
        r: Routing<Self::In<'_>>,
        stats: Self::In<'_>,
        e: usize,
        aux: f32,
    ) -> Result<()>;

    /// xe (rows,C) ← the rows of x (N,C) assigned to expert `ex`: xe[slot] = x[token]; rows no assignment fills
    /// are 0.
    fn moe_gather(&self, xe: Self::Out<'_>, x: Self::In<'_>, r: Routing<Self::In<'_>>, ex: usize, rows: usize, c: usize) -> Result<()>;

    /// The gather's backward: dx[token] += dxe[slot] for each assignment to `ex`.
    fn moe_scatter(&self, dx: Self::Out<'_>, dxe: Self::In<'_>, r: Routing<Self::In<'_>>, ex: usize, rows: usize, c: usize) -> Result<()>;

    /// out[token] += weight · ye[slot] for each assignment to `ex` (ye: the expert's output, (rows,C)).
    fn moe_combine(&self, out: Self::Out<'_>, ye: Self::In<'_>, r: Routing<Self::In<'_>>, ex: usize, rows: usize, c: usize) -> Result<()>;

    /// The combine's backward: dye[slot] += weight · dout[token]; dweight[a] += dout[token] · ye[slot].
    fn moe_combine_backward(
        &self,
        dye: Self::Out<'_>,
        dweight: Self::Out<'_>,
        dout: Self::In<'_>,
        ye: Self::In<'_>,
        r: Routing<Self::In<'_>>,
        ex: usize,
        rows: usize,
        c: usize,
    ) -> Result<()>;

    // -- Mixture-of-Experts, grouped: every expert's rows in one buffer, expert-major (expert ex's rows[ex] rows
    // from row rows[0] + … + rows[ex−1]), and each op one call over all the experts (as MegaBlocks does), instead
    // of a call per expert. The host's fast backend runs the experts so (`groups_experts`); the others run the
    // per-expert ops above, and these default to an error.

    /// Whether the model runs a Mixture-of-Experts layer's experts through the grouped ops below.
    fn groups_experts(&self) -> bool {
        false
    }

    /// xe (Σrows,C) ← `moe_gather` of each expert into its rows.
    fn moe_gather_grouped(&self, _xe: Self::Out<'_>, _x: Self::In<'_>, _r: Routing<Self::In<'_>>, _rows: &[usize], _c: usize) -> Result<()> {
        Err(not_grouped(self.name()))
    }

    /// `moe_scatter` of each expert's rows of dxe (Σrows,C) into dx (N,C).
    fn moe_scatter_grouped(&self, _dx: Self::Out<'_>, _dxe: Self::In<'_>, _r: Routing<Self::In<'_>>, _rows: &[usize], _c: usize) -> Result<()> {
        Err(not_grouped(self.name()))
    }

    /// `moe_combine` of each expert's rows of ye (Σrows,C) into out (N,C).
    fn moe_combine_grouped(&self, _out: Self::Out<'_>, _ye: Self::In<'_>, _r: Routing<Self::In<'_>>, _rows: &[usize], _c: usize) -> Result<()> {
        Err(not_grouped(self.name()))
    }

    /// `moe_combine_backward` of each expert's rows: dye (Σrows,C) +=, dweight (N·k) +=.
    #[allow(clippy::too_many_arguments)]
    fn moe_combine_backward_grouped(
        &self,
        _dye: Self::Out<'_>,
        _dweight: Self::Out<'_>,
        _dout: Self::In<'_>,
        _ye: Self::In<'_>,
        _r: Routing<Self::In<'_>>,
        _rows: &[usize],
        _c: usize,
    ) -> Result<()> {
        Err(not_grouped(self.name()))
    }

    /// Expert ex's rows of out (Σrows,OC) = its rows of inp (Σrows,C) · w[ex] (OC,C)ᵀ + b[ex] (OC).
    #[allow(clippy::too_many_arguments)]
    fn matmul_grouped_forward(
        &self,
        _out: Self::Out<'_>,
        _inp: Self::In<'_>,
        _w: &[Self::In<'_>],
        _b: &[Option<Self::In<'_>>],
        _rows: &[usize],
        _c: usize,
        _oc: usize,
    ) -> Result<()> {
        Err(not_grouped(self.name()))
    }

    /// Per expert ex, over its rows: dinp (Σrows,C) += dout·w[ex]; dw[ex] (OC,C) += doutᵀ·inp; db[ex] (OC) +=
    /// Σ_rows dout.
    #[allow(clippy::too_many_arguments)]
    fn matmul_grouped_backward(
        &self,
        _dinp: Self::Out<'_>,
        _dw: Vec<Self::Out<'_>>,
        _db: Vec<Option<Self::Out<'_>>>,
        _dout: Self::In<'_>,
        _inp: Self::In<'_>,
        _w: &[Self::In<'_>],
        _rows: &[usize],
        _c: usize,
        _oc: usize,
    ) -> Result<()> {
        Err(not_grouped(self.name()))
    }

    /// The GRU recurrence (PyTorch's gate order r, z, n; `ops::gru`): h (B,T,C) the hidden states; gates (B,T,4C)
    /// saved [r | z | n | W_hn·h_{t−1} + b_hn]; gi (B,T,3C) = x·W_ihᵀ + b_ih; w_hh (3C,C); b_hh (3C); h0 (B,C) the
    /// state before position 0 (zeros when None).
    fn gru_forward(
        &self,
        h: Self::Out<'_>,
        gates: Self::Out<'_>,
        gi: Self::In<'_>,
        w_hh: Self::In<'_>,
        b_hh: Option<Self::In<'_>>,
        h0: Option<Self::In<'_>>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;

    /// Backpropagation through time: dgi (B,T,3C) +=, dw_hh (3C,C) +=, db_hh (3C) += from dh (B,T,C) = ∂L/∂h;
    /// gates, h, h0 as the forward saved and took them.
    fn gru_backward(
        &self,
        dgi: Self::Out<'_>,
        dw_hh: Self::Out<'_>,
        db_hh: Option<Self::Out<'_>>,
        dh: Self::In<'_>,
        gates: Self::In<'_>,
        h: Self::In<'_>,
        h0: Option<Self::In<'_>>,
        w_hh: Self::In<'_>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;

    // -- The optimizer's ops -----------------------------------------------------------------------------------

    /// out[0] = Σ g² over every segment; out[1 + i] = Σ g² of segment i (each tensor's, for the per-layer norms).
    fn sums_of_squares(&self, out: Self::Out<'_>, g: Self::In<'_>, segments: &[Segment]) -> Result<()>;

    /// PyTorch's clip_grad_norm_: g ← g · clip/(√sq + 1e-6) when that is below 1 (sq: one value, Σ g²; clip 0:
    /// nothing).
    fn clip_grad_norm(&self, g: Self::Out<'_>, sq: Self::In<'_>, clip: f32) -> Result<()>;

    /// AdamW as PyTorch over every segment of the flat buffers (decoupled decay p ← p(1 − lr·wd) where the
    /// segment decays, then the bias-corrected Adam update) — and nothing at all unless the step is good: `sq`
    /// (Σ g², one value) and `loss` are finite. Segments start on 64-float blocks and what lies between them is
    /// zero padding with zero gradients (the layout's), so a backend may run the update over the whole buffer.
    fn adamw(
        &self,
        p: Self::Out<'_>,
        g: Self::In<'_>,
        m: Self::Out<'_>,
        v: Self::Out<'_>,
        segments: &[Segment],
        sq: Self::In<'_>,
        loss: Self::Loss,
        h: &AdamW,
    ) -> Result<()>;
}

/// A backend over host memory (`Reference`, `cpu::Cpu`): buffers are `Vec<f32>`, views are slices, the loss a
/// number. What the host does besides training (generation, probes, decoding) is written over this.
pub trait Host: Sync + for<'a> Backend<Buf = Vec<f32>, Params = [f32], Loss = f32, Read = Vec<f32>, In<'a> = &'a [f32], Out<'a> = &'a mut [f32]> {}
impl<T> Host for T where T: Sync + for<'a> Backend<Buf = Vec<f32>, Params = [f32], Loss = f32, Read = Vec<f32>, In<'a> = &'a [f32], Out<'a> = &'a mut [f32]> {}

/// Unwraps a host backend's result: the host backends never fail.
pub fn on_host<T>(r: Result<T>) -> T {
    match r {
        Ok(x) => x,
        Err(e) => unreachable!("a host backend does not fail: {e}"),
    }
}

/// The scalar reference backend (`ops/`).
pub struct Reference;

/// Which backend a run uses (CLI `--backend`, JS `backend:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Reference,
    Cpu,
    /// Training on the GPU (feature `gpu`): `train::Run` keeps the parameters, gradients, optimizer state and
    /// activations on the device (`train::gpu::GpuTrainer`). Asking for it in a build without the feature, or
    /// where there is no adapter, is an error when the run is made.
    Gpu,
}

impl BackendKind {
    pub fn parse(s: &str) -> crate::Result<BackendKind> {
        match s {
            "reference" => Ok(BackendKind::Reference),
            "cpu" => Ok(BackendKind::Cpu),
            "gpu" => Ok(BackendKind::Gpu),
            _ => Err(crate::Error::Invalid(format!("unknown backend {s:?}: expected reference, cpu or gpu"))),
        }
    }
}

/// Runs `$body` with `$be` bound to the host backend of a `BackendKind`: the reference for `Reference`, the CPU
/// backend otherwise (a gpu run's host work — generation, probes — runs on the CPU from its synced copy). The
/// browser builds make no run on the reference, so there every kind is the CPU backend: the model's code is not
/// compiled a second time for a backend that cannot be reached.
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! with_host {
    ($kind:expr, |$be:ident| $body:expr) => {
        match $kind {
            $crate::backend::BackendKind::Reference => {
                let $be = &$crate::backend::Reference;
                $body
            }
            _ => {
                let $be = &$crate::backend::cpu::Cpu;
                $body
            }
        }
    };
}

#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! with_host {
    ($kind:expr, |$be:ident| $body:expr) => {{
        let _ = $kind;
        let $be = &$crate::backend::cpu::Cpu;
        $body
    }};
}

/// The buffer methods of a host backend (`Host`): identical for the reference and the CPU backend, so written once.
macro_rules! host_buffers {
    () => {
        type Buf = Vec<f32>;
        type In<'a> = &'a [f32];
        type Out<'a> = &'a mut [f32];
        type Params = [f32];
        type Loss = f32;
        type Read = Vec<f32>;

        fn upload(&self, data: Vec<f32>) -> $crate::error::Result<Vec<f32>> {
            Ok(data)
        }
        fn copy_of(&self, x: &[f32]) -> $crate::error::Result<Vec<f32>> {
            Ok(x.to_vec())
        }
        fn read(&self, x: &[f32]) -> $crate::error::Result<Vec<f32>> {
            Ok(x.to_vec())
        }
        fn view(x: &Vec<f32>) -> &[f32] {
            x
        }
        fn view_mut(x: &mut Vec<f32>) -> &mut [f32] {
            x
        }
        fn len(x: &[f32]) -> usize {
            x.len()
        }
        fn param(p: &[f32], v: $crate::backend::View) -> $crate::error::Result<&[f32]> {
            $crate::backend::View::check(v, p.len())?;
            Ok(v.of(p))
        }
        fn grad(g: &mut [f32], v: $crate::backend::View) -> $crate::error::Result<&mut [f32]> {
            $crate::backend::View::check(v, g.len())?;
            Ok(v.of_mut(g))
        }
        fn grad_pair(
            g: &mut [f32],
            a: $crate::backend::View,
            b: Option<$crate::backend::View>,
        ) -> $crate::error::Result<(&mut [f32], Option<&mut [f32]>)> {
            $crate::backend::ops::two_mut(g, a, b)
        }
        fn grad_many<'a>(g: &'a mut [f32], views: &[$crate::backend::View]) -> $crate::error::Result<Vec<&'a mut [f32]>> {
            $crate::backend::ops::many_mut(g, views)
        }
        fn known(&self, x: &[f32]) -> Option<Vec<f32>> {
            Some(x.to_vec())
        }
        fn loss_value(loss: f32, _scalars: &[f32]) -> f32 {
            loss
        }
    };
}
pub(crate) use host_buffers;
