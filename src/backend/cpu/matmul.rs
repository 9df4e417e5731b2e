//! Linear layer forward and backward: `gemm` natively, the portable kernel on wasm32, and for a forward of at most
//! `rows::MAX_ROWS` rows (a decoding step) the few-row kernel, which reads the weight without packing it. All split
//! over what they write (rows or channels of out, rows of dinp, output channels of dw, as llm.c), so each task owns
//! its part.

#[cfg(target_arch = "wasm32")]
use super::portable;
#[cfg(not(target_arch = "wasm32"))]
use super::portable::Strided;

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
    #[cfg(not(target_arch = "wasm32"))]
    {
        if let Some(dinp) = dinp {
            let dy = Strided { data: dout, rs: oc, cs: 1 };
            super::native::gemm(dinp, true, dy, Strided { data: w, rs: c, cs: 1 }, n, c, oc, parallel);
        }
        let dyt = Strided { data: dout, rs: 1, cs: oc };
        super::native::gemm(dw, true, dyt, Strided { data: inp, rs: c, cs: 1 }, oc, c, n, parallel);
    }
    #[cfg(target_arch = "wasm32")]
    {
        // The two products write different buffers: run them side by side, so the threads that finish one product's
        // last tasks early take tasks of the other instead of waiting.
        let dinp_task = || {
            if let Some(dinp) = dinp {
                portable::matmul_backward_input(dinp, dout, w, n, c, oc, parallel);
            }
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
