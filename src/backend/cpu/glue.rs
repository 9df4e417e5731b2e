//! The model's glue ops on the CPU (embedding, residual adds, dropout masks, the KV cache's append, zeroing): the
//! reference's loops (`ops::glue`) cut into fixed pieces that run on the pool when large (natively; not in the
//! browser: see `PAR_MEMORY_BOUND`). Element-wise, so the pieces never change a result. And the buffers: fresh
//! zeros, and the last step's buffers lent again as op outputs (`output`, `recycle`).

use super::math::copy;
use super::PAR_MEMORY_BOUND;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Elements from which these ops run in parallel pieces.
const PAR_ELEMS: usize = 1 << 16;
/// Elements per piece.
const PIECE: usize = 1 << 14;

/// Whether an op over n elements runs in parallel pieces.
fn parallel(n: usize) -> bool {
    PAR_MEMORY_BOUND && n >= PAR_ELEMS
}

/// n zeros. Large buffers (activations, the gradients) are zeroed by the pool in fixed pieces rather than by one
/// `memset` on the calling thread (natively: with 2 threads that stretch left one core idle).
pub fn zeros(n: usize) -> Vec<f32> {
    const ZERO_PIECE: usize = 1 << 15;
    if n < 2 * ZERO_PIECE || !PAR_MEMORY_BOUND {
        return vec![0.0; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut().par_chunks_mut(ZERO_PIECE).for_each(|c| c.iter_mut().for_each(|x| _ = x.write(0.0)));
    // SAFETY: the loop above initialised all n elements of the capacity.
    unsafe { v.set_len(n) };
    v
}

/// The buffers of the last training step's forward pass (`recycle`), lent again by `output`: an op output of a
/// length found here skips the allocation and the zero-fill (its op writes every element). At most one step's worth
/// is held: each `recycle` replaces what the one before left.
static SPARE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// A check for tests (`set_poison_outputs`): every `output` starts as NaN, fresh or lent.
static POISON: AtomicBool = AtomicBool::new(false);

fn spare() -> std::sync::MutexGuard<'static, Vec<Vec<f32>>> {
    // The list stays whole whatever a panicking holder was doing (a push or a swap_remove), so a poisoned lock's
    // contents are still good.
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// n floats for an op that writes every one of them (`Backend::output`): a spare buffer of that length when there
/// is one (holding an earlier step's values), else fresh zeros.
pub fn output(n: usize) -> Vec<f32> {
    let lent = {
        let mut s = spare();
        s.iter().rposition(|v| v.len() == n).map(|i| s.swap_remove(i))
    };
    let mut v = lent.unwrap_or_else(|| zeros(n));
    if POISON.load(Ordering::Relaxed) {
        v.fill(f32::NAN);
    }
    v
}

/// Keeps `bufs` (a finished step's caches) as the spares for later `output`s, dropping the spares left before
/// (after the lock is released).
pub fn recycle(bufs: Vec<Vec<f32>>) {
    let old = std::mem::replace(&mut *spare(), bufs);
    drop(old);
}

/// Lets go of the spare buffers the last training step left: a new run does not start with another run's
/// activations held beside its own.
pub fn release_spare() {
    recycle(Vec::new())
}

/// How many spare buffers are held (for tests).
pub fn spare_buffers() -> usize {
    spare().len()
}

/// A check for tests: fill every `output` buffer with NaN before its op writes it, so a test shows that the op writes all of it (an
/// accumulator handed out as an output, or an op that skips elements, leaves NaN behind). Process-wide.
pub fn set_poison_outputs(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

/// x ← 0.
pub fn zero(x: &mut [f32]) {
    if parallel(x.len()) {
        x.par_chunks_mut(PIECE).for_each(|c| c.fill(0.0));
    } else {
        x.fill(0.0);
    }
}

/// f(out piece, a piece, b piece) over fixed pieces of out, a (and b): in parallel when large.
fn zip_pieces(out: &mut [f32], a: &[f32], b: Option<&[f32]>, f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync) {
    let n = out.len().min(a.len()).min(b.map_or(usize::MAX, |b| b.len()));
    let (out, a, b) = (&mut out[..n], &a[..n], b.map_or(&[][..], |b| &b[..n]));
    let piece = |(i, o): (usize, &mut [f32])| {
        let r = i * PIECE..i * PIECE + o.len();
        f(o, &a[r.clone()], if b.is_empty() { b } else { &b[r] })
    };
    if parallel(n) {
        out.par_chunks_mut(PIECE).enumerate().for_each(piece);
    } else {
        out.chunks_mut(PIECE).enumerate().for_each(piece);
    }
}

/// out = α·a + b. α = 1 gives a + b exactly (1·a = a in IEEE arithmetic).
pub fn add_scaled(out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) {
    zip_pieces(out, a, Some(b), |o, a, b| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = alpha * a + b));
}

/// out = α·a.
pub fn scale(out: &mut [f32], a: &[f32], alpha: f32) {
    zip_pieces(out, a, None, |o, a, _| o.iter_mut().zip(a).for_each(|(o, a)| *o = alpha * a));
}

/// a += b.
pub fn add_into(a: &mut [f32], b: &[f32]) {
    zip_pieces(a, b, None, |a, b, _| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}

/// a ⊙= m.
pub fn mul_into(a: &mut [f32], m: &[f32]) {
    zip_pieces(a, m, None, |a, m, _| a.iter_mut().zip(m).for_each(|(a, m)| *a *= m));
}

/// g *= coef, in fixed pieces.
pub fn scale_in_place(g: &mut [f32], coef: f32) {
    let f = |c: &mut [f32]| c.iter_mut().for_each(|x| *x *= coef);
    if PAR_MEMORY_BOUND {
        g.par_chunks_mut(1 << 15).for_each(f);
    } else {
        f(g);
    }
}

/// out (B·T, C) = wte[ids] + wpe[pos0 + t] + sin[t], row by row with row copies.
pub fn embedding_forward(out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) {
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
}

/// dwte[ids[r]] += dx[r]; dwpe[r mod T] += dx[r], row by row in order (rows scatter into the tables, so serially),
/// each row added as a whole slice.
pub fn embedding_backward(dwte: &mut [f32], mut dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) {
    for (r, d) in dx.chunks_exact(c).enumerate() {
        dwte[ids[r] as usize * c..][..c].iter_mut().zip(d).for_each(|(a, b)| *a += b);
        if let Some(wpe) = dwpe.as_deref_mut() {
            wpe[(r % t) * c..][..c].iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
    }
}
