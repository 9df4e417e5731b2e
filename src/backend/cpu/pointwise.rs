//! Element-wise and row-wise ops: FFN activations, fused softmax cross-entropy, AdamW, Σg². Work is cut into
//! fixed-size chunks of elements or rows (never a function of the thread count); reductions (the loss sum, Σg²)
//! are per-chunk values added in chunk order.

use super::math;
use super::simd::multiversion;
use crate::backend::AdamW;
use crate::config::Activation;
use rayon::prelude::*;

/// A task's index and its chunks of three outputs, as `zip` nests them.
type Chunk3<'a> = (usize, (&'a mut [f32], (&'a mut [f32], &'a mut [f32])));

/// Elements per task for element-wise ops.
const CHUNK: usize = 8192;

/// Runs `f(chunk index, chunk)` over fixed-size chunks of `x`, in parallel or not (the split is the same).
fn for_chunks<T: Send>(x: &mut [T], size: usize, parallel: bool, f: impl Fn(usize, &mut [T]) + Send + Sync) {
    if parallel {
        x.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        x.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Rows per task for a row-wise op on rows of `width` elements.
fn rows_per_chunk(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
#[inline(always)]
fn swish_grad(x: f32) -> f32 {
    let s = math::sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

/// (act(x), act'(x)) for the element-wise part of each activation, as `ops::act`.
#[inline(always)]
fn act_and_grad(act: Activation, x: f32) -> (f32, f32) {
    match act {
        Activation::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
        Activation::Gelu | Activation::Geglu => (math::gelu(x), math::gelu_grad(x)),
        Activation::Swish | Activation::Swiglu => (x * math::sigmoid(x), swish_grad(x)),
        Activation::Glu => {
            let s = math::sigmoid(x);
            (s, s * (1.0 - s))
        }
    }
}

// The kernels below loop by index over slices cut to one length, with the activation matched outside the loop
// and every function in the loop `#[inline(always)]` (no closures: LLVM may leave a closure call in the loop, and
// then nothing vectorises).

multiversion! {
    /// One chunk of a plain activation: o = act(x).
    fn plain_forward(act: Activation, o: &mut [f32], x: &[f32]) {
        let n = o.len().min(x.len());
        let (o, x) = (&mut o[..n], &x[..n]);
        match act {
            Activation::Relu => for i in 0..n { o[i] = x[i].max(0.0) },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Activation::Gelu => super::wasm128::gelu_forward(o, x),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            Activation::Gelu => {
                // K interleaved streams (see `math::K`), then the tail one by one.
                let q = n / math::K;
                for i in 0..q {
                    let g = math::gelu_k(std::array::from_fn::<f32, { math::K }, _>(|k| x[k * q + i]));
                    for k in 0..math::K {
                        o[k * q + i] = g[k];
                    }
                }
                for i in math::K * q..n { o[i] = math::gelu(x[i]) }
            }
            _ => for i in 0..n { o[i] = x[i] * math::sigmoid(x[i]) },
        }
    }
}

multiversion! {
    /// One chunk of a plain activation's backward: di += d·act'(x); y = act(x), the forward's output (GELU's
    /// derivative is formed from it: `math::gelu_grad_from_out_k`).
    fn plain_backward(act: Activation, di: &mut [f32], d: &[f32], x: &[f32], y: &[f32]) {
        let n = di.len().min(d.len()).min(x.len()).min(y.len());
        let (di, d, x, y) = (&mut di[..n], &d[..n], &x[..n], &y[..n]);
        match act {
            Activation::Relu => for i in 0..n { di[i] += d[i] * if x[i] > 0.0 { 1.0 } else { 0.0 } },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Activation::Gelu => super::wasm128::gelu_backward(di, d, x, y),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            Activation::Gelu => {
                let q = n / math::K;
                for i in 0..q {
                    let xs = std::array::from_fn::<f32, { math::K }, _>(|k| x[k * q + i]);
                    let ys = std::array::from_fn::<f32, { math::K }, _>(|k| y[k * q + i]);
                    let g = math::gelu_grad_from_out_k(xs, ys);
                    for k in 0..math::K {
                        di[k * q + i] += d[k * q + i] * g[k];
                    }
                }
                for i in math::K * q..n { di[i] += d[i] * math::gelu_grad_from_out_k([x[i]], [y[i]])[0] }
            }
            _ => for i in 0..n { di[i] += d[i] * swish_grad(x[i]) },
        }
    }
}

multiversion! {
    /// One chunk of a plain activation's backward in place: d ← d·act'(x), turning ∂L/∂act into ∂L/∂x where
    /// nothing else accumulates into it (`Epilogue::ActGrad`); the same products as `plain_backward` adding into 0.
    fn plain_grad_in_place(act: Activation, d: &mut [f32], x: &[f32], y: &[f32]) {
        let n = d.len().min(x.len()).min(y.len());
        let (d, x, y) = (&mut d[..n], &x[..n], &y[..n]);
        match act {
            Activation::Relu => for i in 0..n { d[i] *= if x[i] > 0.0 { 1.0 } else { 0.0 } },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Activation::Gelu => super::wasm128::gelu_grad_in_place(d, x, y),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            Activation::Gelu => {
                let q = n / math::K;
                for i in 0..q {
                    let xs = std::array::from_fn::<f32, { math::K }, _>(|k| x[k * q + i]);
                    let ys = std::array::from_fn::<f32, { math::K }, _>(|k| y[k * q + i]);
                    let g = math::gelu_grad_from_out_k(xs, ys);
                    for k in 0..math::K {
                        d[k * q + i] *= g[k];
                    }
                }
                for i in math::K * q..n { d[i] *= math::gelu_grad_from_out_k([x[i]], [y[i]])[0] }
            }
            _ => for i in 0..n { d[i] *= swish_grad(x[i]) },
        }
    }
}

multiversion! {
    /// Rows of a gated activation: o (rows, F) = act(gate)·up, x (rows, 2F) = [gate | up].
    fn gated_forward(act: Activation, o: &mut [f32], x: &[f32], f: usize) {
        for (o, x) in o.chunks_exact_mut(f).zip(x.chunks_exact(2 * f)) {
            let (g, u) = (&x[..f], &x[f..2 * f]);
            match act {
                Activation::Glu => for i in 0..f { o[i] = math::sigmoid(g[i]) * u[i] },
                Activation::Geglu => for i in 0..f { o[i] = math::gelu(g[i]) * u[i] },
                _ => for i in 0..f { o[i] = g[i] * math::sigmoid(g[i]) * u[i] },
            }
        }
    }
}

multiversion! {
    /// Rows of a gated activation's backward: d gate += d·up·act'(gate), d up += d·act(gate).
    fn gated_backward(act: Activation, di: &mut [f32], d: &[f32], x: &[f32], f: usize) {
        for ((di, x), d) in di.chunks_exact_mut(2 * f).zip(x.chunks_exact(2 * f)).zip(d.chunks_exact(f)) {
            let (dg, du) = di.split_at_mut(f);
            let (g, u) = (&x[..f], &x[f..2 * f]);
            match act {
                Activation::Glu => for i in 0..f {
                    let (a, da) = act_and_grad(Activation::Glu, g[i]);
                    dg[i] += d[i] * u[i] * da;
                    du[i] += d[i] * a;
                },
                Activation::Geglu => for i in 0..f {
                    let (a, da) = act_and_grad(Activation::Geglu, g[i]);
                    dg[i] += d[i] * u[i] * da;
                    du[i] += d[i] * a;
                },
                _ => for i in 0..f {
                    let (a, da) = act_and_grad(Activation::Swiglu, g[i]);
                    dg[i] += d[i] * u[i] * da;
                    du[i] += d[i] * a;
                },
            }
        }
    }
}

/// out (N,F) = act(inp); inp (N,F), or (N,2F) = [gate | up] for gated activations.
pub fn activation_forward(act: Activation, out: &mut [f32], inp: &[f32], f: usize, parallel: bool) {
    if act.is_gated() {
        let rows = rows_per_chunk(2 * f);
        let n = inp.len() / (2 * f);
        for_chunks(&mut out[..n * f], rows * f, parallel, |ci, o| gated_forward(act, o, &inp[ci * rows * 2 * f..], f));
    } else {
        let n = inp.len();
        for_chunks(&mut out[..n], CHUNK, parallel, |ci, o| plain_forward(act, o, &inp[ci * CHUNK..][..o.len()]));
    }
}

/// dinp (N,F or 2F) += ∂L/∂inp; out (N,F) is the forward's output.
#[allow(clippy::too_many_arguments)]
pub fn activation_backward(act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize, parallel: bool) {
    if act.is_gated() {
        let rows = rows_per_chunk(2 * f);
        let n = inp.len() / (2 * f);
        for_chunks(&mut dinp[..n * 2 * f], rows * 2 * f, parallel, |ci, di| {
            gated_backward(act, di, &dout[ci * rows * f..], &inp[ci * rows * 2 * f..], f)
        });
    } else {
        let n = inp.len();
        for_chunks(&mut dinp[..n], CHUNK, parallel, |ci, di| {
            let r = ci * CHUNK..ci * CHUNK + di.len();
            plain_backward(act, di, &dout[r.clone()], &inp[r.clone()], &out[r])
        });
    }
}

/// What a matmul task does to its rows of C once they are final, while they are still in cache: the FFN's
/// activation fused into the epilogue of the product that makes its input (`Backend::matmul_act_forward`) or its
/// gradient (`matmul_act_backward`), instead of a separate pass over B·T·F elements. Each task holds whole rows of
/// C, so a gated activation's gate (column j) and up (column F + j) are in the same task and fuse too (forward).
pub enum Epilogue<'a> {
    /// Nothing: C is the product.
    None,
    /// out = act(C): C is the pre-activation (rows, F), or (rows, 2F) [gate | up] gated; out (rows, F).
    Act { act: Activation, out: &'a mut [f32] },
    /// C ← C ⊙ act'(pre), a plain activation's: C = ∂L/∂act becomes ∂L/∂pre. post = act(pre), the forward's
    /// output, from which GELU's derivative is formed (as `activation_backward`).
    ActGrad { act: Activation, pre: &'a [f32], post: &'a [f32] },
}

impl<'a> Epilogue<'a> {
    /// The epilogue of each block of `rows` rows of a C of m rows × n columns, in block order: the parts of out,
    /// pre and post that belong to those rows (an epilogue per block, so each task owns what it writes).
    pub fn split(self, rows: usize, m: usize, n: usize) -> Vec<Epilogue<'a>> {
        let blocks = if n == 0 { 0 } else { m.div_ceil(rows) };
        match self {
            Epilogue::None => (0..blocks).map(|_| Epilogue::None).collect(),
            Epilogue::Act { act, out } => {
                let f = if act.is_gated() { n / 2 } else { n };
                assert!(blocks == 0 || f > 0, "epilogue: a gated activation needs an even number of columns");
                let out = &mut out[..m * f];
                out.chunks_mut((rows * f).max(1)).take(blocks).map(|out| Epilogue::Act { act, out }).collect()
            }
            Epilogue::ActGrad { act, pre, post } => {
                assert!(!act.is_gated(), "epilogue: a gated activation's gradient (N,2F) is not the product's shape");
                let (pre, post) = (&pre[..m * n], &post[..m * n]);
                let chunk = (rows * n).max(1);
                pre.chunks(chunk).zip(post.chunks(chunk)).take(blocks).map(|(pre, post)| Epilogue::ActGrad { act, pre, post }).collect()
            }
        }
    }

    /// Runs on a task's finished rows of C (rows × n).
    pub fn apply(self, c: &mut [f32], n: usize) {
        match self {
            Epilogue::None => {}
            Epilogue::Act { act, out } if act.is_gated() => gated_forward(act, out, c, n / 2),
            Epilogue::Act { act, out } => plain_forward(act, out, c),
            Epilogue::ActGrad { act, pre, post } => plain_grad_in_place(act, c, pre, post),
        }
    }
}

multiversion! {
    /// Rows of the fused cross-entropy: dlogits d (rows, V) and each row's loss (None when ignored).
    fn cross_entropy_rows(d: &mut [f32], loss: &mut [Option<f64>], logits: &[f32], targets: &[i32], v: usize, dscale: f32) {
        for ((d, loss), (l, &t)) in d.chunks_exact_mut(v).zip(loss.iter_mut()).zip(logits.chunks_exact(v).zip(targets)) {
            if t < 0 {
                d.fill(0.0);
                *loss = None;
                continue;
            }
            let max = math::max(l);
            math::exp_sub(d, l, max);
            let sum = math::sum(d);
            let lse = max as f64 + (sum as f64).ln();
            *loss = Some(lse - l[t as usize] as f64);
            math::scale(d, dscale / sum);
            d[t as usize] -= dscale;
        }
    }
}

/// Fused softmax + cross-entropy + gradient, rows with target −1 ignored (zero gradient). Per-row losses are
/// computed in parallel and summed in row order.
pub fn cross_entropy(
    dlogits: &mut [f32],
    logits: &[f32],
    targets: &[i32],
    v: usize,
    dscale: f32,
    parallel: bool,
) -> (f64, usize) {
    let n = targets.len();
    let rows = rows_per_chunk(v);
    let mut losses: Vec<Option<f64>> = vec![None; n];
    let task = |(ci, (d, loss)): (usize, (&mut [f32], &mut [Option<f64>]))| {
        let r0 = ci * rows;
        cross_entropy_rows(d, loss, &logits[r0 * v..], &targets[r0..], v, dscale)
    };
    let d = &mut dlogits[..n * v];
    if parallel {
        d.par_chunks_mut(rows * v).zip(losses.par_chunks_mut(rows)).enumerate().for_each(task);
    } else {
        d.chunks_mut(rows * v).zip(losses.chunks_mut(rows)).enumerate().for_each(task);
    }
    losses.iter().flatten().fold((0.0, 0), |(s, c), &l| (s + l, c + 1))
}

multiversion! {
    /// One chunk of AdamW, operation for operation as `ops::adamw`: `wasm128::adamw` on wasm32 with simd128,
    /// `adamw_scalar` elsewhere.
    fn adamw_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], h: &AdamW, shrink: f32, bc1: f32, bc2: f32) {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            super::wasm128::adamw(p, m, v, g, h, shrink, bc1, bc2)
        }
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        {
            adamw_scalar(p, m, v, g, h, shrink, bc1, bc2)
        }
    }
}

/// AdamW over slices in plain Rust (shrink = 1 − lr·wd, bc1, bc2 the bias corrections).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn adamw_scalar(
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    h: &AdamW,
    shrink: f32,
    bc1: f32,
    bc2: f32,
) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        *p *= shrink;
        *m = h.beta1 * *m + (1.0 - h.beta1) * g;
        *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
        let mhat = *m / bc1;
        let vhat = *v / bc2;
        *p -= h.lr * mhat / (vhat.sqrt() + h.eps);
    }
}

/// AdamW as PyTorch (see `ops::adamw`), element-wise over fixed chunks.
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, decay: bool, parallel: bool) {
    let bc1 = 1.0 - h.beta1.powi(h.t as i32);
    let bc2 = 1.0 - h.beta2.powi(h.t as i32);
    let wd = if decay { h.weight_decay } else { 0.0 };
    let shrink = 1.0 - h.lr * wd;
    let n = p.len();
    let task = |(ci, (p, (m, v))): Chunk3| adamw_chunk(p, m, v, &g[ci * CHUNK..], h, shrink, bc1, bc2);
    let (m, v) = (&mut m[..n], &mut v[..n]);
    if parallel {
        p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK))).enumerate().for_each(task);
    } else {
        p.chunks_mut(CHUNK).zip(m.chunks_mut(CHUNK).zip(v.chunks_mut(CHUNK))).enumerate().for_each(task);
    }
}

multiversion! {
    /// Σ x² of one chunk in f64: `wasm128::sum_squares` on wasm32 with simd128, `sum_squares_scalar` elsewhere.
    fn chunk_sum_squares(x: &[f32]) -> f64 {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            super::wasm128::sum_squares(x)
        }
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        {
            sum_squares_scalar(x)
        }
    }
}

/// Σ x² in f64, 8 lanes summed as a fixed tree (`tree8`).
#[inline(always)]
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(super) fn sum_squares_scalar(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut c = x.chunks_exact(8);
    for v in &mut c {
        for l in 0..8 {
            acc[l] += v[l] as f64 * v[l] as f64;
        }
    }
    for (l, &v) in c.remainder().iter().enumerate() {
        acc[l] += v as f64 * v as f64;
    }
    tree8(&acc)
}

/// The sum of 8 lanes as a fixed tree.
#[inline(always)]
pub(super) fn tree8(acc: &[f64; 8]) -> f64 {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Σ g² in f64: fixed chunks, chunk sums added in order.
pub fn sum_squares(g: &[f32], parallel: bool) -> f64 {
    let sums: Vec<f64> = if parallel {
        g.par_chunks(CHUNK).map(chunk_sum_squares).collect()
    } else {
        g.chunks(CHUNK).map(chunk_sum_squares).collect()
    };
    sums.iter().sum()
}
