//! The linear layer, y = x·Wᵀ + b with PyTorch's (out, in) weight layout, forward and backward through one tiled
//! kernel (`wgsl/matmul.wgsl`) over strided operands; the bias gradient is a column sum (`reduce`).

use super::{need, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
}

const ACCUMULATE: u32 = 1;
const BIAS: u32 = 2;
/// Output tile edge (matmul.wgsl's TILE).
const TILE: usize = 64;

/// Bindings: a, b, bias (read), c (read-write).
pub(crate) static MATMUL: Kernel = Kernel {
    name: "matmul.wgsl",
    src: include_str!("wgsl/matmul.wgsl"),
    entry: "main",
    binds: &[Access::Read, Access::Read, Access::Read, Access::Write],
};
pub(crate) static KERNELS: &[&Kernel] = &[&MATMUL];

/// One operand: its slice and the strides of its (row, column) in elements.
type Operand<'a> = (GpuSlice<'a, f32>, (usize, usize));

impl Gpu {
    /// out (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC)
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_forward(
        &self,
        enc: &mut Encoder,
        out: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        b: Option<GpuSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        need("matmul out", &out, n * oc)?;
        need("matmul inp", &inp, n * c)?;
        need("matmul w", &w, oc * c)?;
        if let Some(b) = &b {
            need("matmul b", b, oc)?;
        }
        self.gemm(enc, out, (inp, (c, 1)), (w, (1, c)), b, [n, oc, c], false)
    }

    /// dinp (N,C) += dout·w; dw (OC,C) += doutᵀ·inp; db (OC) += Σ_rows dout.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_backward(
        &self,
        enc: &mut Encoder,
        dinp: Option<GpuSlice<f32>>,
        dw: GpuSlice<f32>,
        db: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        need("matmul dout", &dout, n * oc)?;
        need("matmul inp", &inp, n * c)?;
        need("matmul w", &w, oc * c)?;
        need("matmul dw", &dw, oc * c)?;
        if let Some(dinp) = dinp {
            need("matmul dinp", &dinp, n * c)?;
            self.gemm(enc, dinp, (dout, (oc, 1)), (w, (c, 1)), None, [n, c, oc], true)?;
        }
        self.gemm(enc, dw, (dout, (1, oc)), (inp, (c, 1)), None, [oc, c, n], true)?;
        if let Some(db) = db {
            need("matmul db", &db, oc)?;
            self.col_sum(enc, db, dout, n, oc, true)?;
        }
        Ok(())
    }

    /// c (M,N) (+)= a (M,K) · b (K,N) (+ bias (N)), [M, N, K] = mnk.
    fn gemm(
        &self,
        enc: &mut Encoder,
        c: GpuSlice<f32>,
        a: Operand,
        b: Operand,
        bias: Option<GpuSlice<f32>>,
        mnk: [usize; 3],
        accumulate: bool,
    ) -> Result<()> {
        let [m, n, k] = mnk;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (a, (a_rs, a_cs)) = a;
        let (b, (b_rs, b_cs)) = b;
        let flags = if accumulate { ACCUMULATE } else { 0 } | if bias.is_some() { BIAS } else { 0 };
        let p = Params {
            m: u32_of("matmul rows", m)?,
            n: u32_of("matmul columns", n)?,
            k: u32_of("matmul depth", k)?,
            flags,
            a_rs: u32_of("stride", a_rs)?,
            a_cs: u32_of("stride", a_cs)?,
            b_rs: u32_of("stride", b_rs)?,
            b_cs: u32_of("stride", b_cs)?,
        };
        let bias = bias.map_or(self.no_input(), |s| s.bind(n));
        let (gx, gy) = (n.div_ceil(TILE), m.div_ceil(TILE));
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if gx > max || gy > max {
            return Err(super::gpu_error(format!(
                "a {m}×{n} matmul needs a {gy}×{gx} grid, over the adapter's {max} per dimension"
            )));
        }
        let bufs = [a.bind(m * k), b.bind(k * n), bias, c.bind(m * n)];
        self.dispatch(enc, &MATMUL, &[], &p, &bufs, [gx as u32, gy as u32, 1])
    }
}
