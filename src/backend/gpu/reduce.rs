//! Reductions and scaling (`wgsl/reduce.wgsl`): column sums (bias gradients, the relative-bias table gradient),
//! Σx and Σx² of a buffer (loss, grad norm) left on the device, and gradient clipping from a device-side norm.

use super::{need, tree_and_subgroups, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    chunk: u32,
    flags: u32,
    factor: f32,
    out_index: u32,
    _pad: [u32; 2],
}

const ACCUMULATE: u32 = 1;
const SQUARE: u32 = 2;
/// Elements summed by one workgroup of `sum` (256 threads × 16).
const CHUNK: usize = 4096;
/// Rows of one split of `col_sum` when it splits (split-K): past twice this many rows, the rows are cut into
/// splits of this many, each summed by its own workgroups, then the splits' partials are summed.
pub(crate) const COL_SUM_SPLIT: usize = 1024;

/// The entry points that do not reduce a workgroup, after the tree's file (`sum` calls `workgroup_sum`). col_sum
/// sums across its workgroup's rows of threads, not within subgroups.
const SRC: &str = concat!(include_str!("wgsl/workgroup_reduce.wgsl"), include_str!("wgsl/reduce.wgsl"));
const BINDS: &[Access] = &[Access::Read, Access::Write];
pub(crate) static COL_SUM: Kernel = Kernel { name: "reduce.wgsl", src: SRC, entry: "col_sum", binds: BINDS };
/// Σ of a chunk: on the tree or on subgroups (`Gpu::reducing`).
pub(crate) static SUM: [Kernel; 2] = tree_and_subgroups!("reduce.wgsl", "wgsl/reduce.wgsl", "sum", BINDS);
pub(crate) static SCALE: Kernel = Kernel { name: "reduce.wgsl", src: SRC, entry: "scale", binds: BINDS };
pub(crate) static CLIP: Kernel = Kernel { name: "reduce.wgsl", src: SRC, entry: "clip", binds: BINDS };
pub(crate) static KERNELS: &[&Kernel] = &[&COL_SUM, &SCALE, &CLIP];
pub(crate) static REDUCING: &[&[Kernel; 2]] = &[&SUM];

impl Gpu {
    /// out (cols) (+)= Σ_rows x (rows, cols).
    pub fn col_sum(
        &self,
        enc: &mut Encoder,
        out: GpuSlice<f32>,
        x: GpuSlice<f32>,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) -> Result<()> {
        need("col_sum out", &out, cols)?;
        need("col_sum x", &x, rows * cols)?;
        if cols == 0 {
            return Ok(());
        }
        let flags = if accumulate { ACCUMULATE } else { 0 };
        let params = |n: usize, chunk: usize, flags: u32| -> Result<Params> {
            Ok(Params { n: u32_of("rows", n)?, cols: u32_of("columns", cols)?, chunk: u32_of("rows", chunk.max(1))?, flags, ..Default::default() })
        };
        if rows <= 2 * COL_SUM_SPLIT {
            // One split: ⌈cols/32⌉ workgroups, each over every row.
            let x = if rows == 0 { self.no_input() } else { x.bind(rows * cols) };
            return self.dispatch(enc, &COL_SUM, &[], &params(rows, rows, flags)?, &[x, out.bind(cols)], self.grid(cols.div_ceil(32))?);
        }
        // Split-K: partials (splits, cols), then their column sums into out. The order of the additions depends
        // only on (rows, cols), so results stay the same from run to run.
        let splits = rows.div_ceil(COL_SUM_SPLIT);
        let partials = self.pooled::<f32>(splits * cols)?;
        let p = params(rows, COL_SUM_SPLIT, 0)?;
        let (xb, pb) = (x.bind(rows * cols), partials.all().bind(splits * cols));
        self.dispatch(enc, &COL_SUM, &[], &p, &[xb, pb], self.grid(splits * cols.div_ceil(32))?)?;
        self.dispatch(enc, &COL_SUM, &[], &params(splits, splits, flags)?, &[pb, out.bind(cols)], self.grid(cols.div_ceil(32))?)
    }

    /// out[index] = Σ x² (the squared global grad norm), on the device.
    pub fn sum_squares(&self, enc: &mut Encoder, out: GpuSlice<f32>, index: usize, x: GpuSlice<f32>) -> Result<()> {
        self.sum_into(enc, out, index, x, true)
    }

    /// out[index] = Σ x (a total loss from per-row losses), on the device.
    pub fn sum(&self, enc: &mut Encoder, out: GpuSlice<f32>, index: usize, x: GpuSlice<f32>) -> Result<()> {
        self.sum_into(enc, out, index, x, false)
    }

    /// Sums chunk by chunk into partials, then the partials likewise, until one chunk is left for out[index].
    fn sum_into(
        &self,
        enc: &mut Encoder,
        out: GpuSlice<f32>,
        index: usize,
        x: GpuSlice<f32>,
        square: bool,
    ) -> Result<()> {
        need("sum out", &out, index + 1)?;
        let mut n = x.len();
        if n == 0 {
            self.clear(enc, out.sub(index, 1)?);
            return Ok(());
        }
        let mut sizes = vec![];
        while n > CHUNK {
            n = n.div_ceil(CHUNK);
            sizes.push(n);
        }
        let parts = sizes.iter().map(|&s| self.pooled::<f32>(s)).collect::<Result<Vec<_>>>()?;
        let (mut src, mut n) = (x.bind(x.len()), x.len());
        let mut flags = if square { SQUARE } else { 0 };
        for part in &parts {
            let p = Params { n: u32_of("elements", n)?, chunk: CHUNK as u32, flags, ..Default::default() };
            self.dispatch(enc, self.reducing(&SUM), &[], &p, &[src, part.all().bind(part.len())], self.grid(part.len())?)?;
            (src, n) = (part.all().bind(part.len()), part.len());
            flags &= !SQUARE;
        }
        let p = Params {
            n: u32_of("elements", n)?,
            chunk: CHUNK as u32,
            flags,
            out_index: u32_of("index", index)?,
            ..Default::default()
        };
        self.dispatch(enc, self.reducing(&SUM), &[], &p, &[src, out.bind(out.len())], [1, 1, 1])?;
        // The partials go back to the pool here: a later command may reuse them (after these dispatches).
        Ok(())
    }

    /// x *= factor.
    pub fn scale(&self, enc: &mut Encoder, x: GpuSlice<f32>, factor: f32) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        let p = Params { n: u32_of("elements", x.len())?, factor, ..Default::default() };
        self.dispatch(enc, &SCALE, &[], &p, &[self.no_input(), x.bind(x.len())], self.grid(x.len().div_ceil(256))?)
    }

    /// PyTorch's clip_grad_norm_ with the norm on the device: g *= clip / (sqrt(sum_sq[0]) + 1e-6) when that is
    /// below 1. `sum_sq` holds Σg² (from `sum_squares`) at its first element.
    pub fn clip_grads(&self, enc: &mut Encoder, g: GpuSlice<f32>, sum_sq: GpuSlice<f32>, clip: f32) -> Result<()> {
        need("clip sum_sq", &sum_sq, 1)?;
        if g.is_empty() || clip <= 0.0 {
            return Ok(());
        }
        let p = Params { n: u32_of("elements", g.len())?, factor: clip, ..Default::default() };
        self.dispatch(enc, &CLIP, &[], &p, &[sum_sq.bind(1), g.bind(g.len())], self.grid(g.len().div_ceil(256))?)
    }
}
