//! Linear layer forward and backward: `gemm` natively, the portable kernel on wasm32, and for a forward of at most
//! `rows::MAX_ROWS` rows (a decoding step) the few-row kernel, which reads the weight without packing it. All split
//! over what they write (rows or channels of out, rows of dinp, output channels of dw, as llm.c), so each task owns
//! its part.

use super::pointwise::Epilogue;
#[cfg(target_arch = "wasm32")]
use super::portable;
#[cfg(not(target_arch = "wasm32"))]
use super::portable::Strided;
use crate::config::Activation;

/// out (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC)
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    if n <= super::rows::MAX_ROWS {
        // A decoding step's few rows: the weight read in place, no packing (`rows`).
        return super::rows::matmul_forward(out, inp, w, b, n, c, oc, parallel);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let out = &mut out[..n * oc];
        let x = Strided { data: inp, rs: c, cs: 1 };
        let wt = Strided { data: w, rs: 1, cs: c };
        super::native::gemm_init(out, false, b.map(|b| &b[..oc]), x, wt, n, oc, c, parallel);
    }
    #[cfg(target_arch = "wasm32")]
    portable::matmul_forward(out, inp, w, b, n, c, oc, parallel);
}

/// Whether `matmul_act_forward` fuses on n rows: not for a decoding step's few rows, which `rows` computes
/// without the row-block tasks that carry the epilogue (the caller runs the two ops instead).
pub fn fuses_forward(n: usize) -> bool {
    n > super::rows::MAX_ROWS
}

/// pre (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC), and out (N,F) = act(pre) (OC = F, or 2F gated) applied by each task
/// to its row block of pre as soon as the block is final (`pointwise::Epilogue::Act`). n > `rows::MAX_ROWS`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_act_forward(
    act: Activation,
    pre: &mut [f32],
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    debug_assert!(fuses_forward(n));
    #[cfg(not(target_arch = "wasm32"))]
    {
        let x = Strided { data: inp, rs: c, cs: 1 };
        let wt = Strided { data: w, rs: 1, cs: c };
        let epi = Epilogue::Act { act, out };
        super::native::gemm_epilogue(&mut pre[..n * oc], false, b.map(|b| &b[..oc]), x, wt, n, oc, c, epi, parallel);
    }
    #[cfg(target_arch = "wasm32")]
    portable::matmul_act_forward(act, pre, out, inp, w, b, n, c, oc, parallel);
}

/// dinp (N,C) += dout·w; dw (OC,C) += doutᵀ·inp; db (OC) += Σ_rows dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    backward(dinp.map(|d| (d, Epilogue::None)), dw, db, dout, inp, w, n, c, oc, parallel)
}

/// A plain activation's `Backend::matmul_act_backward`: dpre (N,C) = (dout·w) ⊙ act'(pre), written, with act'
/// applied by each task to its row block of dout·w as soon as the block is final (`pointwise::Epilogue::ActGrad`);
/// dw (OC,C) += doutᵀ·inp; db (OC) += Σ_rows dout. inp = act(pre) is the layer's input.
#[allow(clippy::too_many_arguments)]
pub fn matmul_act_backward(
    act: Activation,
    dpre: &mut [f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    pre: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    let epi = Epilogue::ActGrad { act, pre, post: inp };
    backward(Some((dpre, epi)), dw, db, dout, inp, w, n, c, oc, parallel)
}

/// The linear layer's backward. dinp with `Epilogue::None`: dinp += dout·w; with an `ActGrad` epilogue:
/// dinp = (dout·w) ⊙ act'(pre) (written, since nothing else adds into a pre-activation's gradient).
#[allow(clippy::too_many_arguments)]
fn backward(
    dinp: Option<(&mut [f32], Epilogue)>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    parallel: bool,
) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        if let Some((dinp, epi)) = dinp {
            let dy = Strided { data: dout, rs: oc, cs: 1 };
            let add = matches!(epi, Epilogue::None);
            super::native::gemm_epilogue(dinp, add, None, dy, Strided { data: w, rs: c, cs: 1 }, n, c, oc, epi, parallel);
        }
        let dyt = Strided { data: dout, rs: 1, cs: oc };
        super::native::gemm(dw, true, dyt, Strided { data: inp, rs: c, cs: 1 }, oc, c, n, parallel);
    }
    #[cfg(target_arch = "wasm32")]
    {
        // The two products write different buffers: run them side by side, so the threads that finish one product's
        // last tasks early take tasks of the other instead of waiting.
        let dinp_task = || match dinp {
            Some((dinp, Epilogue::ActGrad { act, pre, post })) => {
                portable::matmul_act_backward_input(act, dinp, dout, w, pre, post, n, c, oc, parallel)
            }
            Some((dinp, _)) => portable::matmul_backward_input(dinp, dout, w, n, c, oc, parallel),
            None => {}
        };
        let mut dw_task = || portable::matmul_backward_weight(dw, dout, inp, n, c, oc, parallel);
        if parallel {
            rayon::join(dinp_task, dw_task);
        } else {
            dinp_task();
            dw_task();
        }
    }
    if let Some(db) = db {
        bias_grad(&mut db[..oc], &dout[..n * oc], parallel && super::PAR_MEMORY_BOUND);
    }
}

/// Mixture-of-Experts, grouped (`Backend::matmul_grouped_forward`): expert ex's rows of out = its rows of inp ·
/// w[ex]ᵀ + b[ex]. Natively every expert's row blocks are pieces of one parallel call; on wasm32 (where the model
/// runs the experts one by one, `Cpu::groups_experts`) a loop over the experts.
#[allow(clippy::too_many_arguments)]
pub fn matmul_grouped_forward(out: &mut [f32], inp: &[f32], w: &[&[f32]], b: &[Option<&[f32]>], rows: &[usize], c: usize, oc: usize, parallel: bool) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut pieces = Vec::new();
        let (mut rest, mut start) = (out, 0);
        for (ex, &n) in rows.iter().enumerate() {
            let (o, tail) = std::mem::take(&mut rest).split_at_mut(n * oc);
            let x = Strided { data: &inp[start * c..], rs: c, cs: 1 };
            let wt = Strided { data: w[ex], rs: 1, cs: c };
            pieces.extend(super::native::pieces(o, false, b[ex].map(|b| &b[..oc]), x, wt, n, oc, c));
            (rest, start) = (tail, start + n);
        }
        super::native::run(pieces, parallel);
    }
    #[cfg(target_arch = "wasm32")]
    for (ex, start, n) in crate::backend::ops::expert_groups(rows) {
        matmul_forward(&mut out[start * oc..], &inp[start * c..], w[ex], b[ex], n, c, oc, parallel);
    }
}

/// Mixture-of-Experts, grouped (`Backend::matmul_grouped_backward`): per expert, over its rows, dinp += dout·w;
/// dw += doutᵀ·inp; db += Σ_rows dout. Natively both products of every expert are pieces of one parallel call.
#[allow(clippy::too_many_arguments)]
pub fn matmul_grouped_backward(
    dinp: &mut [f32],
    dw: Vec<&mut [f32]>,
    mut db: Vec<Option<&mut [f32]>>,
    dout: &[f32],
    inp: &[f32],
    w: &[&[f32]],
    rows: &[usize],
    c: usize,
    oc: usize,
    parallel: bool,
) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use super::native::pieces;
        let mut all = Vec::new();
        let (mut rest, mut start) = (dinp, 0);
        for (ex, (dw, &n)) in dw.into_iter().zip(rows).enumerate() {
            let (di, tail) = std::mem::take(&mut rest).split_at_mut(n * c);
            rest = tail;
            if n == 0 {
                continue; // an expert without rows: nothing to add (and its dw product would sum over no rows)
            }
            let (dy, x) = (&dout[start * oc..], &inp[start * c..]);
            all.extend(pieces(di, true, None, Strided { data: dy, rs: oc, cs: 1 }, Strided { data: w[ex], rs: c, cs: 1 }, n, c, oc));
            all.extend(pieces(dw, true, None, Strided { data: dy, rs: 1, cs: oc }, Strided { data: x, rs: c, cs: 1 }, oc, c, n));
            start += n;
        }
        super::native::run(all, parallel);
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut dw = dw;
        for (ex, start, n) in crate::backend::ops::expert_groups(rows) {
            let (di, dy, x) = (&mut dinp[start * c..], &dout[start * oc..], &inp[start * c..]);
            matmul_backward(Some(di), &mut *dw[ex], db[ex].take(), dy, x, w[ex], n, c, oc, parallel);
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    for (ex, start, n) in crate::backend::ops::expert_groups(rows) {
        if let Some(db) = db[ex].as_deref_mut() {
            bias_grad(&mut db[..oc], &dout[start * oc..(start + n) * oc], parallel && super::PAR_MEMORY_BOUND);
        }
    }
}

/// Columns of db (and of the rows it sums) per task.
const DB_COLS: usize = 64;

/// db (OC) += Σ_rows dout (N,OC): rows added in order, one vector add per row, the same sums in the same order as
/// the reference; tasks own DB_COLS columns each.
fn bias_grad(db: &mut [f32], dout: &[f32], parallel: bool) {
    use rayon::prelude::*;
    let oc = db.len();
    let task = |(j, d): (usize, &mut [f32])| {
        for row in dout.chunks_exact(oc) {
            d.iter_mut().zip(&row[j * DB_COLS..]).for_each(|(d, &x)| *d += x);
        }
    };
    if parallel {
        db.par_chunks_mut(DB_COLS).enumerate().for_each(task);
    } else {
        db.chunks_mut(DB_COLS).enumerate().for_each(task);
    }
}
