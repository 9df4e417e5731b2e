//! Native matmuls through the `gemm` crate (runtime-dispatched micro-kernels: AVX2+FMA or NEON; AVX-512 only when
//! gemm's `x86-v4` feature is on, as Cargo.toml sets it; on an AVX-512 machine they take a good part off W1's
//! training step, measured in docs/BENCHMARKS.md).
//!
//! Determinism: rows of C are split into blocks whose size depends only on the matrix sizes; each block is one
//! rayon task calling `gemm` single-threaded (`Parallelism::None`). A block's result does not depend on which thread
//! runs it, so the output is the same for every thread count (tested in `tests/cpu_vs_reference.rs`).

use super::pointwise::Epilogue;
use super::portable::Strided;
use gemm::Parallelism;
use rayon::prelude::*;

/// C (m×n, contiguous) = [C +] A (m×k) · B (k×n) on one thread: the checked call into gemm.
fn gemm_serial(c: &mut [f32], accumulate: bool, a: Strided, b: Strided, m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds that make the raw-pointer call below sound: every element gemm may touch lies inside its slice.
    assert!(c.len() >= m * n, "gemm: C too short");
    assert!(k == 0 || (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(), "gemm: A too short");
    assert!(k == 0 || (k - 1) * b.rs + (n - 1) * b.cs < b.data.len(), "gemm: B too short");
    // SAFETY: the asserts above bound every index gemm reads or writes; `c` is borrowed mutably, `a` and `b`
    // shared, so nothing else aliases the destination.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Multiply-adds per task we aim for: big enough that packing and task overheads stay small (W1's matmuls get
/// 2 to 4 tasks, which measured fastest on 2 cores), small enough that bigger models spread over more cores.
const TASK_WORK: usize = 16 << 20;

/// Rows of C per task: a power-of-two number of tasks (at least 2, at most one per 8 rows), rows a multiple of 8.
/// A function of the sizes only, never of the thread count.
fn row_block(m: usize, n: usize, k: usize) -> usize {
    let tasks = (m * n * k / TASK_WORK).max(2).next_power_of_two().min(m.div_ceil(8)).max(1);
    m.div_ceil(tasks).div_ceil(8) * 8
}

/// C (m×n) = [C +] A (m×k) · B (k×n), split over fixed row blocks of C.
#[allow(clippy::too_many_arguments)]
pub fn gemm(c: &mut [f32], accumulate: bool, a: Strided, b: Strided, m: usize, n: usize, k: usize, parallel: bool) {
    gemm_init(c, accumulate, None, a, b, m, n, k, parallel)
}

/// `gemm`, where `init` (n values), when given, is first copied into every row of C by the task that owns the row
/// (out = bias + x·wᵀ without a separate pass over out).
#[allow(clippy::too_many_arguments)]
pub fn gemm_init(c: &mut [f32], accumulate: bool, init: Option<&[f32]>, a: Strided, b: Strided, m: usize, n: usize, k: usize, parallel: bool) {
    gemm_epilogue(c, accumulate, init, a, b, m, n, k, Epilogue::None, parallel);
}

/// `gemm_init`, then `epi` run by each task on its row block of C as soon as gemm has finished it (the FFN's
/// activation, `pointwise::Epilogue`), while the block is still in cache.
#[allow(clippy::too_many_arguments)]
pub fn gemm_epilogue(
    c: &mut [f32],
    accumulate: bool,
    init: Option<&[f32]>,
    a: Strided,
    b: Strided,
    m: usize,
    n: usize,
    k: usize,
    epi: Epilogue,
    parallel: bool,
) {
    run(pieces_with(c, accumulate, init, a, b, m, n, k, epi).collect(), parallel);
}

/// One task's share of a product: its row block of C (rows × n) = [C +] its rows of A · B, C's rows first set to
/// `init` when given, then its epilogue run on them.
pub struct Piece<'a> {
    c: &'a mut [f32],
    accumulate: bool,
    init: Option<&'a [f32]>,
    a: Strided<'a>,
    b: Strided<'a>,
    n: usize,
    k: usize,
    epi: Epilogue<'a>,
}

/// The pieces of C (m×n) = [C +] A (m×k) · B (k×n): C's fixed row blocks (`row_block`).
#[allow(clippy::too_many_arguments)]
pub fn pieces<'a>(
    c: &'a mut [f32],
    accumulate: bool,
    init: Option<&'a [f32]>,
    a: Strided<'a>,
    b: Strided<'a>,
    m: usize,
    n: usize,
    k: usize,
) -> impl Iterator<Item = Piece<'a>> {
    pieces_with(c, accumulate, init, a, b, m, n, k, Epilogue::None)
}

/// `pieces`, each with its row block's share of the epilogue.
#[allow(clippy::too_many_arguments)]
fn pieces_with<'a>(
    c: &'a mut [f32],
    accumulate: bool,
    init: Option<&'a [f32]>,
    a: Strided<'a>,
    b: Strided<'a>,
    m: usize,
    n: usize,
    k: usize,
    epi: Epilogue<'a>,
) -> impl Iterator<Item = Piece<'a>> {
    let rb = if m == 0 || n == 0 { 1 } else { row_block(m, n, k) };
    let epis = epi.split(rb, m, n);
    c[..m * n].chunks_mut(rb * n.max(1)).zip(epis).enumerate().map(move |(blk, (c, epi))| {
        let a = Strided { data: &a.data[blk * rb * a.rs..], ..a };
        Piece { c, accumulate, init, a, b, n, k, epi }
    })
}

/// Runs pieces, each one task, on the pool when `parallel` (any number of products in one parallel call: the
/// experts of a Mixture-of-Experts layer wake the pool once, not once per expert). Each piece writes only its own
/// rows, so the result does not depend on which thread runs it.
pub fn run(pieces: Vec<Piece>, parallel: bool) {
    let task = |p: Piece| {
        if p.n == 0 {
            return;
        }
        if let Some(init) = p.init {
            p.c.chunks_exact_mut(p.n).for_each(|row| row.copy_from_slice(&init[..p.n]));
        }
        let rows = p.c.len() / p.n;
        gemm_serial(p.c, p.accumulate || p.init.is_some(), p.a, p.b, rows, p.n, p.k);
        p.epi.apply(p.c, p.n);
    };
    if parallel {
        pieces.into_par_iter().for_each(task);
    } else {
        pieces.into_iter().for_each(task);
    }
}
