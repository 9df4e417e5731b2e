//! Moving the rows of a Mixture-of-Experts layer on the CPU, grouped (every expert's rows in one buffer,
//! expert-major: `Backend::groups_experts`). The reference (`ops::moe`) walks the experts one by one and, for
//! each, its assignments in token order; here the same moves are cut into pieces of rows or of tokens that run on
//! the pool (natively), each piece owning what it writes. A token's contributions are added in expert order, as
//! the reference's expert-by-expert loop adds them, so the sums are the reference's, bit for bit, on any number
//! of threads.

use super::PAR_MEMORY_BOUND;
use crate::backend::Routing;
use rayon::prelude::*;

/// Rows (or tokens) per piece.
const PIECE_ROWS: usize = 32;
/// Elements moved from which the pieces run on the pool.
const PAR_ELEMS: usize = 1 << 15;

/// For every assignment a = token·k + j, its row in the grouped buffer (None: dropped, or past its expert's rows).
fn row_of(r: Routing<&[f32]>, rows: &[usize]) -> Vec<Option<usize>> {
    let mut start = vec![0; rows.len()];
    for ex in 1..rows.len() {
        start[ex] = start[ex - 1] + rows[ex - 1];
    }
    (0..r.n * r.k)
        .map(|a| {
            let (ex, s) = (r.choice[a] as usize, r.slot[a]);
            (s >= 0.0 && (s as usize) < rows[ex]).then(|| start[ex] + s as usize)
        })
        .collect()
}

/// For every row of the grouped buffer, the assignment it holds (None: a row no assignment fills).
fn assignment_of(at: &[Option<usize>], total: usize) -> Vec<Option<usize>> {
    let mut of = vec![None; total];
    for (a, row) in at.iter().enumerate() {
        if let Some(row) = *row {
            of[row] = Some(a);
        }
    }
    of
}

/// Token t's routed assignments (a, row), in expert order (the reference's order of adding them).
fn by_expert(r: Routing<&[f32]>, at: &[Option<usize>], t: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut mine: Vec<(usize, usize)> = (t * r.k..(t + 1) * r.k).filter_map(|a| at[a].map(|row| (a, row))).collect();
    mine.sort_by_key(|&(a, _)| r.choice[a] as usize);
    mine.into_iter()
}

/// f(piece index, piece) over pieces of `PIECE_ROWS` rows of `width` floats: on the pool when there is enough to move.
fn rows_in_pieces(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let piece = PIECE_ROWS * width.max(1);
    if PAR_MEMORY_BOUND && out.len() >= PAR_ELEMS {
        out.par_chunks_mut(piece).enumerate().for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(piece).enumerate().for_each(|(i, p)| f(i, p));
    }
}

/// See `Backend::moe_gather_grouped`: each grouped row copies its token's row of x (rows no assignment fills: 0).
pub fn moe_gather_grouped(xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    let total = rows.iter().sum::<usize>();
    let of = assignment_of(&row_of(r, rows), total);
    rows_in_pieces(&mut xe[..total * c], c, |i, piece| {
        for (j, dst) in piece.chunks_exact_mut(c).enumerate() {
            match of[i * PIECE_ROWS + j] {
                Some(a) => dst.copy_from_slice(&x[a / r.k * c..(a / r.k + 1) * c]),
                None => dst.fill(0.0),
            }
        }
    });
}

/// See `Backend::moe_combine_grouped`: out[token] += weight · ye[row], token by token, in expert order.
pub fn moe_combine_grouped(out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    let at = row_of(r, rows);
    rows_in_pieces(&mut out[..r.n * c], c, |i, piece| {
        for (j, o) in piece.chunks_exact_mut(c).enumerate() {
            for (a, row) in by_expert(r, &at, i * PIECE_ROWS + j) {
                let w = r.weight[a];
                o.iter_mut().zip(&ye[row * c..(row + 1) * c]).for_each(|(o, y)| *o += w * y);
            }
        }
    });
}

/// See `Backend::moe_scatter_grouped`: dx[token] += dxe[row], token by token, in expert order.
pub fn moe_scatter_grouped(dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    let at = row_of(r, rows);
    rows_in_pieces(&mut dx[..r.n * c], c, |i, piece| {
        for (j, d) in piece.chunks_exact_mut(c).enumerate() {
            for (_, row) in by_expert(r, &at, i * PIECE_ROWS + j) {
                d.iter_mut().zip(&dxe[row * c..(row + 1) * c]).for_each(|(d, g)| *d += g);
            }
        }
    });
}

/// See `Backend::moe_combine_backward_grouped`: dye[row] += weight · dout[token] over the grouped rows, then
/// dweight[a] += dout[token] · ye[row] over the assignments (the reference's sum, element by element in order).
#[allow(clippy::too_many_arguments)]
pub fn moe_combine_backward_grouped(dye: &mut [f32], dweight: &mut [f32], dout: &[f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) {
    let total = rows.iter().sum::<usize>();
    let at = row_of(r, rows);
    let of = assignment_of(&at, total);
    rows_in_pieces(&mut dye[..total * c], c, |i, piece| {
        for (j, g) in piece.chunks_exact_mut(c).enumerate() {
            if let Some(a) = of[i * PIECE_ROWS + j] {
                let (w, d) = (r.weight[a], &dout[a / r.k * c..(a / r.k + 1) * c]);
                g.iter_mut().zip(d).for_each(|(g, d)| *g += w * d);
            }
        }
    });
    // One float per assignment: pieces of tokens (k assignments each), on the pool when the dots are many.
    let dots = |i: usize, piece: &mut [f32]| {
        for (j, dw) in piece.iter_mut().enumerate() {
            let a = i * PIECE_ROWS * r.k + j;
            if let Some(row) = at[a] {
                let (d, y) = (&dout[a / r.k * c..(a / r.k + 1) * c], &ye[row * c..(row + 1) * c]);
                *dw += d.iter().zip(y).map(|(d, y)| d * y).sum::<f32>();
            }
        }
    };
    let dweight = &mut dweight[..r.n * r.k];
    if PAR_MEMORY_BOUND && dweight.len() * c >= PAR_ELEMS {
        dweight.par_chunks_mut(PIECE_ROWS * r.k).enumerate().for_each(|(i, p)| dots(i, p));
    } else {
        dweight.chunks_mut(PIECE_ROWS * r.k).enumerate().for_each(|(i, p)| dots(i, p));
    }
}
