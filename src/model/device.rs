//! The buffer-level op set the model is written against, so that ONE description of the model's maths drives
//! every backend. A `Device` owns its tensors (`Buf`) and runs the `Backend` ops over views of them (`In`, `Out`),
//! plus the few element-wise ops the model used to write as host loops (embedding, residual adds, dropout masks,
//! head split/merge).
//!
//! - On the host the device is the `Backend` itself (`dyn Backend`: the reference or the CPU backend): buffers are
//!   `Vec<f32>`, views are slices, and every op below is the exact host loop the model always ran, so the CPU path
//!   keeps its numbers bit for bit.
//! - On the GPU it is `backend::gpu::GpuStep`: buffers live on the device and every op is recorded into one command
//!   encoder, so a whole training step is one submission (see `backend::gpu::trainer`).
//!
//! Host data that is fixed by the batch or the shapes (token ids, targets, dropout masks, ALiBi slopes, T5
//! buckets, the sinusoidal table) is passed as host slices; a device uploads it. Parameters and gradients are one
//! flat buffer each (`Params`), cut into tensors by `layout::View`s.

use super::layout::View;
use crate::backend::cpu::math::copy;
use crate::backend::{AttnBias, AttnShape, Backend};
use crate::config::{Activation, NormKind};
use crate::error::Result;
use rayon::prelude::*;

/// The additive attention bias as the model describes it: ALiBi slopes and T5 buckets are host data fixed by the
/// shapes; the relative-bias table (buckets, NH) is a parameter, a view on the device.
#[derive(Clone, Copy)]
pub enum Bias<'a, T> {
    None,
    Alibi { slopes: &'a [f32] },
    Relative { table: T, bucket: &'a [u32] },
}

/// The ops of `Backend` over device buffers, plus the model's element-wise glue. Same names and argument order as
/// `Backend` (llm.c order: outputs, caches, inputs, parameters, sizes); backward ops accumulate (`+=`).
/// Every op returns a `Result`: a GPU can refuse (limits, a lost device); the host never does.
pub trait Device {
    /// An owned f32 tensor.
    type Buf;
    /// A read-only view of a tensor or of a parameter.
    type In<'a>: Copy
    where
        Self: 'a;
    /// A writable view.
    type Out<'a>
    where
        Self: 'a;
    /// The flat parameter (and gradient) buffer.
    type Params: ?Sized;
    /// The mean cross-entropy of a forward pass: a number on the host; on the GPU a device scalar read back later.
    type Loss;

    /// A tensor of n zeros.
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// A tensor holding host data (dropout masks).
    fn upload(&self, data: Vec<f32>) -> Result<Self::Buf>;
    /// A copy of x.
    fn copy_of(&self, x: Self::In<'_>) -> Result<Self::Buf>;
    fn view(x: &Self::Buf) -> Self::In<'_>;
    /// Elements of a view.
    fn len(x: Self::In<'_>) -> usize;
    fn view_mut(x: &mut Self::Buf) -> Self::Out<'_>;
    /// The tensor `v` of the parameter buffer.
    fn param(p: &Self::Params, v: View) -> Self::In<'_>;
    /// The tensor `v` of the gradient buffer.
    fn grad(g: &mut Self::Params, v: View) -> Self::Out<'_>;
    /// Two disjoint tensors of the gradient buffer at once (a weight and its bias).
    fn grad_pair(g: &mut Self::Params, a: View, b: Option<View>) -> (Self::Out<'_>, Option<Self::Out<'_>>);

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

    /// out (N,C) = norm(inp) · w + b; saves mean (N) and rstd (N).
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

    /// out (B,T,NH·HS), lse (B,NH,T) from q (B,NH,T,HS), k, v (B,NKV,S,HS).
    fn attention_forward(
        &self,
        out: Self::Out<'_>,
        lse: Self::Out<'_>,
        q: Self::In<'_>,
        k: Self::In<'_>,
        v: Self::In<'_>,
        bias: Bias<'_, Self::In<'_>>,
        sh: &AttnShape,
    ) -> Result<()>;

    /// dq, dk, dv +=; dtable (buckets,NH) += for a relative bias.
    fn attention_backward(
        &self,
        dq: Self::Out<'_>,
        dk: Self::Out<'_>,
        dv: Self::Out<'_>,
        dtable: Option<Self::Out<'_>>,
        dout: Self::In<'_>,
        q: Self::In<'_>,
        k: Self::In<'_>,
        v: Self::In<'_>,
        out: Self::In<'_>,
        lse: Self::In<'_>,
        bias: Bias<'_, Self::In<'_>>,
        sh: &AttnShape,
    ) -> Result<()>;

    /// out (N,F) = act(inp (N,F or 2F)).
    fn activation_forward(&self, act: Activation, out: Self::Out<'_>, inp: Self::In<'_>, f: usize) -> Result<()>;

    /// dinp (N,F or 2F) += ∂L/∂inp; out (N,F) is the forward's output (see `Backend::activation_backward`).
    #[allow(clippy::too_many_arguments)]
    fn activation_backward(
        &self,
        act: Activation,
        dinp: Self::Out<'_>,
        dout: Self::In<'_>,
        inp: Self::In<'_>,
        out: Self::In<'_>,
        f: usize,
    ) -> Result<()>;

    /// RoPE in place on x (B·H, T, HS) at positions pos0..; `inverse` for the backward.
    fn rope(&self, x: Self::Out<'_>, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()>;

    /// Fused softmax + cross-entropy over rows whose target is not −1 (`count` of them, counted by the caller):
    /// dlogits (N,V) = (softmax − onehot)/count on those rows, 0 elsewhere; returns the mean loss (NaN when
    /// count = 0).
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

    /// out (B,H,T,HS) ← src (B,T,stride) columns off + h·HS + d.
    fn split_heads(
        &self,
        out: Self::Out<'_>,
        src: Self::In<'_>,
        b: usize,
        t: usize,
        stride: usize,
        off: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()>;

    /// Inverse of `split_heads`: dst (B,T,stride) columns [off, off + H·HS) ← src (B,H,T,HS).
    fn merge_heads(
        &self,
        dst: Self::Out<'_>,
        src: Self::In<'_>,
        b: usize,
        t: usize,
        stride: usize,
        off: usize,
        nh: usize,
        hs: usize,
    ) -> Result<()>;
}

/// Two disjoint mutable ranges of one slice, in the order asked.
fn two_mut(g: &mut [f32], a: View, b: View) -> (&mut [f32], &mut [f32]) {
    if a.offset < b.offset {
        debug_assert!(a.offset + a.len <= b.offset);
        let (lo, hi) = g.split_at_mut(b.offset);
        (a.of_mut(lo), &mut hi[..b.len])
    } else {
        debug_assert!(b.offset + b.len <= a.offset);
        let (lo, hi) = g.split_at_mut(a.offset);
        (&mut hi[..a.len], b.of_mut(lo))
    }
}

/// n zeros. Large buffers (activations, the gradients) are zeroed by the pool in fixed pieces rather than by one
/// `memset` on the calling thread, which at 2 threads was the longest stretch of the step with one core idle
/// natively (not in the browser: see `cpu::PAR_MEMORY_BOUND`).
pub fn host_zeros(n: usize) -> Vec<f32> {
    const PIECE: usize = 1 << 15;
    if n < 2 * PIECE || !crate::backend::cpu::PAR_MEMORY_BOUND {
        return vec![0.0; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut().par_chunks_mut(PIECE).for_each(|c| c.iter_mut().for_each(|x| _ = x.write(0.0)));
    // SAFETY: the loop above initialised all n elements of the capacity.
    unsafe { v.set_len(n) };
    v
}

/// The host: a `Backend` over `Vec<f32>` buffers. Each element-wise op is the loop the model always ran.
impl<'x> Device for dyn Backend + 'x {
    type Buf = Vec<f32>;
    type In<'a>
        = &'a [f32]
    where
        Self: 'a;
    type Out<'a>
        = &'a mut [f32]
    where
        Self: 'a;
    type Params = [f32];
    type Loss = f32;

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(host_zeros(n))
    }
    fn upload(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }
    fn copy_of(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn view(x: &Vec<f32>) -> &[f32] {
        x
    }
    fn len(x: &[f32]) -> usize {
        x.len()
    }
    fn view_mut(x: &mut Vec<f32>) -> &mut [f32] {
        x
    }
    fn param(p: &[f32], v: View) -> &[f32] {
        v.of(p)
    }
    fn grad(g: &mut [f32], v: View) -> &mut [f32] {
        v.of_mut(g)
    }
    fn grad_pair(g: &mut [f32], a: View, b: Option<View>) -> (&mut [f32], Option<&mut [f32]>) {
        match b {
            None => (a.of_mut(g), None),
            Some(b) => {
                let (x, y) = two_mut(g, a, b);
                (x, Some(y))
            }
        }
    }

    fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Result<()> {
        Backend::matmul_forward(self, out, inp, w, b, n, c, oc);
        Ok(())
    }

    fn matmul_backward(
        &self,
        dinp: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        Backend::matmul_backward(self, dinp, dw, db, dout, inp, w, n, c, oc);
        Ok(())
    }

    fn norm_forward(
        &self,
        kind: NormKind,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        eps: f32,
        c: usize,
    ) -> Result<()> {
        Backend::norm_forward(self, kind, out, mean, rstd, inp, w, b, eps, c);
        Ok(())
    }

    fn norm_backward(
        &self,
        kind: NormKind,
        dinp: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) -> Result<()> {
        Backend::norm_backward(self, kind, dinp, dw, db, dout, inp, w, mean, rstd, c);
        Ok(())
    }

    fn attention_forward(&self, out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: Bias<&[f32]>, sh: &AttnShape) -> Result<()> {
        Backend::attention_forward(self, out, lse, q, k, v, host_bias(bias), sh);
        Ok(())
    }

    fn attention_backward(
        &self,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        dtable: Option<&mut [f32]>,
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        bias: Bias<&[f32]>,
        sh: &AttnShape,
    ) -> Result<()> {
        Backend::attention_backward(self, dq, dk, dv, dtable, dout, q, k, v, out, lse, host_bias(bias), sh);
        Ok(())
    }

    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) -> Result<()> {
        Backend::activation_forward(self, act, out, inp, f);
        Ok(())
    }

    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize) -> Result<()> {
        Backend::activation_backward(self, act, dinp, dout, inp, out, f);
        Ok(())
    }

    fn rope(&self, x: &mut [f32], t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
        Backend::rope(self, x, t, hs, pos0, theta, inverse);
        Ok(())
    }

    fn mean_cross_entropy(&self, dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, count: usize) -> Result<f32> {
        let (total, count2) = Backend::cross_entropy(self, dlogits, logits, targets, v, 1.0 / count.max(1) as f32);
        debug_assert_eq!(count, count2);
        Ok(if count == 0 { f32::NAN } else { (total / count as f64) as f32 })
    }

    fn embedding_forward(&self, out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) -> Result<()> {
        for (r, row) in out.chunks_exact_mut(c).enumerate() {
            copy(row, &wte[ids[r] as usize * c..][..c]);
            let tp = r % t;
            if let Some(wpe) = wpe {
                row.iter_mut().zip(&wpe[(pos0 + tp) * c..][..c]).for_each(|(a, b)| *a += b);
            }
            if !sin.is_empty() {
                row.iter_mut().zip(&sin[tp * c..][..c]).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    fn embedding_backward(&self, dwte: &mut [f32], mut dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) -> Result<()> {
        for (r, d) in dx.chunks_exact(c).enumerate() {
            let g = &mut dwte[ids[r] as usize * c..][..c];
            g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            if let Some(wpe) = dwpe.as_deref_mut() {
                let g = &mut wpe[(r % t) * c..][..c];
                g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    fn add_scaled(&self, out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) -> Result<()> {
        // α = 1 gives a + b exactly (1·a = a in IEEE arithmetic).
        zip_pieces(out, a, Some(b), |o, a, b| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = alpha * a + b));
        Ok(())
    }

    fn scale(&self, out: &mut [f32], a: &[f32], alpha: f32) -> Result<()> {
        zip_pieces(out, a, None, |o, a, _| o.iter_mut().zip(a).for_each(|(o, a)| *o = alpha * a));
        Ok(())
    }

    fn add_into(&self, a: &mut [f32], b: &[f32]) -> Result<()> {
        zip_pieces(a, b, None, |a, b, _| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
        Ok(())
    }

    fn mul_into(&self, a: &mut [f32], m: &[f32]) -> Result<()> {
        zip_pieces(a, m, None, |a, m, _| a.iter_mut().zip(m).for_each(|(a, m)| *a *= m));
        Ok(())
    }

    fn split_heads(&self, out: &mut [f32], src: &[f32], b: usize, t: usize, stride: usize, off: usize, nh: usize, hs: usize) -> Result<()> {
        // One piece per batch row: it owns out[bi] (NH·T·HS).
        let one = |(bi, out): (usize, &mut [f32])| {
            for ti in 0..t {
                let row = &src[(bi * t + ti) * stride + off..];
                for h in 0..nh {
                    copy(&mut out[(h * t + ti) * hs..][..hs], &row[h * hs..(h + 1) * hs]);
                }
            }
        };
        let out = &mut out[..b * nh * t * hs];
        if host_parallel(out.len()) {
            out.par_chunks_mut((nh * t * hs).max(1)).enumerate().for_each(one);
        } else {
            out.chunks_mut((nh * t * hs).max(1)).enumerate().for_each(one);
        }
        Ok(())
    }

    fn merge_heads(&self, dst: &mut [f32], src: &[f32], b: usize, t: usize, stride: usize, off: usize, nh: usize, hs: usize) -> Result<()> {
        // One piece per batch row: it owns dst's rows bi·T .. (bi+1)·T.
        let one = |(bi, rows): (usize, &mut [f32])| {
            for ti in 0..t {
                let row = &mut rows[ti * stride + off..];
                for h in 0..nh {
                    copy(&mut row[h * hs..(h + 1) * hs], &src[((bi * nh + h) * t + ti) * hs..][..hs]);
                }
            }
        };
        let dst = &mut dst[..b * t * stride];
        if host_parallel(b * nh * t * hs) {
            dst.par_chunks_mut((t * stride).max(1)).enumerate().for_each(one);
        } else {
            dst.chunks_mut((t * stride).max(1)).enumerate().for_each(one);
        }
        Ok(())
    }
}

/// Elements from which the host's element-wise ops and head split/merge run in parallel pieces.
const HOST_PAR_ELEMS: usize = 1 << 16;

/// Whether a host op over n elements runs in parallel pieces (never in the browser: `cpu::PAR_MEMORY_BOUND`).
fn host_parallel(n: usize) -> bool {
    crate::backend::cpu::PAR_MEMORY_BOUND && n >= HOST_PAR_ELEMS
}
/// Elements per piece.
const HOST_PIECE: usize = 1 << 14;

/// f(out piece, a piece, b piece) over fixed pieces of out, a (and b): in parallel when large. Element-wise, so the
/// pieces never change a result.
fn zip_pieces(out: &mut [f32], a: &[f32], b: Option<&[f32]>, f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
    let n = out.len().min(a.len()).min(b.map_or(usize::MAX, |b| b.len()));
    let (out, a, b) = (&mut out[..n], &a[..n], b.map_or(&[][..], |b| &b[..n]));
    let piece = |(i, o): (usize, &mut [f32])| {
        let r = i * HOST_PIECE..i * HOST_PIECE + o.len();
        f(o, &a[r.clone()], if b.is_empty() { b } else { &b[r] })
    };
    if host_parallel(n) {
        out.par_chunks_mut(HOST_PIECE).enumerate().for_each(piece);
    } else {
        out.chunks_mut(HOST_PIECE).enumerate().for_each(piece);
    }
}

/// The backend's bias over host slices.
pub fn host_bias<'a>(b: Bias<'a, &'a [f32]>) -> AttnBias<'a> {
    match b {
        Bias::None => AttnBias::None,
        Bias::Alibi { slopes } => AttnBias::Alibi { slopes },
        Bias::Relative { table, bucket } => AttnBias::Relative { table, bucket },
    }
}

/// Unwraps a host result: the host device never fails.
pub(crate) fn on_host<T>(r: Result<T>) -> T {
    match r {
        Ok(x) => x,
        Err(e) => unreachable!("the host device does not fail: {e}"),
    }
}
