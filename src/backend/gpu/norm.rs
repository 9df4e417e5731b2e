//! LayerNorm and RMSNorm (`wgsl/norm.wgsl`): forward one workgroup per row; backward as a row kernel (dinp) and a
//! column kernel (dw, db), so every output element has one writer.

use super::{need, tree_and_subgroups, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::config::NormKind;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    kind: u32,
    flags: u32,
    eps: f32,
    _pad: [u32; 3],
}

const BIAS: u32 = 1;

/// inp, w, b, dout (read); mean, rstd, o1, o2 (read-write).
const BINDS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Write,
    Access::Write,
    Access::Write,
    Access::Write,
];
/// The row kernels, whose row sums are `workgroup_sum`s: on the tree or on subgroups (`Gpu::reducing`).
pub(crate) static FORWARD: [Kernel; 2] = tree_and_subgroups!("norm.wgsl", "wgsl/norm.wgsl", "forward", BINDS);
pub(crate) static BACKWARD_ROWS: [Kernel; 2] = tree_and_subgroups!("norm.wgsl", "wgsl/norm.wgsl", "backward_rows", BINDS);
/// The column kernel sums across its workgroup's rows of threads, not within subgroups: the tree's file only.
pub(crate) static BACKWARD_PARAMS: Kernel = Kernel {
    name: "norm.wgsl",
    src: concat!(include_str!("wgsl/workgroup_reduce.wgsl"), include_str!("wgsl/norm.wgsl")),
    entry: "backward_params",
    binds: BINDS,
};
pub(crate) static KERNELS: &[&Kernel] = &[&BACKWARD_PARAMS];
pub(crate) static REDUCING: &[&[Kernel; 2]] = &[&FORWARD, &BACKWARD_ROWS];

fn params(kind: NormKind, rows: usize, c: usize, bias: bool, eps: f32) -> Result<Params> {
    Ok(Params {
        rows: u32_of("rows", rows)?,
        c: u32_of("channels", c)?,
        kind: match kind {
            NormKind::Layernorm => 0,
            NormKind::Rmsnorm => 1,
        },
        flags: if bias { BIAS } else { 0 },
        eps,
        ..Default::default()
    })
}

impl Gpu {
    /// out (N,C) = norm(inp) · w + b; saves mean (N) (0 for RMSNorm) and rstd (N). N = inp.len() / C.
    #[allow(clippy::too_many_arguments)]
    pub fn norm_forward(
        &self,
        enc: &mut Encoder,
        kind: NormKind,
        out: GpuSlice<f32>,
        mean: GpuSlice<f32>,
        rstd: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        b: Option<GpuSlice<f32>>,
        eps: f32,
        c: usize,
    ) -> Result<()> {
        if c == 0 || inp.is_empty() {
            return Ok(());
        }
        let n = inp.len() / c;
        need("norm out", &out, n * c)?;
        need("norm mean", &mean, n)?;
        need("norm rstd", &rstd, n)?;
        need("norm w", &w, c)?;
        if let Some(b) = &b {
            need("norm b", b, c)?;
        }
        let p = params(kind, n, c, b.is_some(), eps)?;
        let b = b.map_or(self.no_input(), |b| b.bind(c));
        let bufs = [
            inp.bind(n * c),
            w.bind(c),
            b,
            self.no_input(),
            mean.bind(n),
            rstd.bind(n),
            out.bind(n * c),
            self.no_output(),
        ];
        self.dispatch(enc, self.reducing(&FORWARD), &[], &p, &bufs, self.grid(n)?)
    }

    /// dinp (N,C) += ∂L/∂inp; dw, db (C) +=.
    #[allow(clippy::too_many_arguments)]
    pub fn norm_backward(
        &self,
        enc: &mut Encoder,
        kind: NormKind,
        dinp: GpuSlice<f32>,
        dw: GpuSlice<f32>,
        db: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        mean: GpuSlice<f32>,
        rstd: GpuSlice<f32>,
        c: usize,
    ) -> Result<()> {
        if c == 0 || inp.is_empty() {
            return Ok(());
        }
        let n = inp.len() / c;
        need("norm dinp", &dinp, n * c)?;
        need("norm dout", &dout, n * c)?;
        need("norm dw", &dw, c)?;
        need("norm w", &w, c)?;
        need("norm mean", &mean, n)?;
        need("norm rstd", &rstd, n)?;
        if let Some(db) = &db {
            need("norm db", db, c)?;
        }
        let p = params(kind, n, c, db.is_some(), 0.0)?;
        let (x, d, m, r) = (inp.bind(n * c), dout.bind(n * c), mean.bind(n), rstd.bind(n));
        let rows = [x, w.bind(c), self.no_input(), d, m, r, dinp.bind(n * c), self.no_output()];
        self.dispatch(enc, self.reducing(&BACKWARD_ROWS), &[], &p, &rows, self.grid(n)?)?;
        let db = db.map_or(self.no_output(), |db| db.bind(c));
        let (x, d, m, r) = (inp.bind(n * c), dout.bind(n * c), mean.bind(n), rstd.bind(n));
        let cols = [x, self.no_input(), self.no_input(), d, m, r, dw.bind(c), db];
        self.dispatch(enc, &BACKWARD_PARAMS, &[], &p, &cols, self.grid(c.div_ceil(32))?)
    }
}
