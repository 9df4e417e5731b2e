//! The GRU recurrence of the recurrent position encoding (`wgsl/gru.wgsl`): a sequential kernel, one workgroup
//! per batch row walking its positions with a storage barrier between steps (the recurrence cannot be split over
//! T); the backward walks them in reverse the same way, and a third kernel forms dW_hh and db_hh with one writer per
//! element.

use super::{need, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    c: u32,
    flags: u32,
}

const BIAS: u32 = 1;
const H0: u32 = 2;

const SRC: &str = include_str!("wgsl/gru.wgsl");
/// gi, w, bh, h0, dh (read); h, gates, o1, o2, carry (read-write).
const BINDS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Write,
    Access::Write,
    Access::Write,
    Access::Write,
    Access::Write,
];
pub(crate) static FORWARD: Kernel = Kernel { name: "gru.wgsl", src: SRC, entry: "forward", binds: BINDS };
pub(crate) static BACKWARD: Kernel = Kernel { name: "gru.wgsl", src: SRC, entry: "backward", binds: BINDS };
pub(crate) static PARAMS: Kernel = Kernel { name: "gru.wgsl", src: SRC, entry: "params", binds: BINDS };
pub(crate) static KERNELS: &[&Kernel] = &[&FORWARD, &BACKWARD, &PARAMS];

fn params(b: usize, t: usize, c: usize, bias: bool, h0: bool) -> Result<Params> {
    u32_of("GRU weights", 3 * c * c)?;
    Ok(Params {
        b: u32_of("batch", b)?,
        t: u32_of("positions", t)?,
        c: u32_of("channels", c)?,
        flags: if bias { BIAS } else { 0 } | if h0 { H0 } else { 0 },
    })
}

impl Gpu {
    /// Three distinct one-float buffers for the read-write bindings an entry point does not use: WebGPU refuses
    /// two writable bindings of one buffer in a dispatch, so they cannot all be the shared `no_output`.
    fn spares(&self) -> Result<[super::Pooled<f32>; 3]> {
        Ok([self.pooled::<f32>(1)?, self.pooled::<f32>(1)?, self.pooled::<f32>(1)?])
    }

    /// h (B,T,C), gates (B,T,4C) ← the GRU recurrence over gi (B,T,3C) with w_hh (3C,C), b_hh (3C), h0 (B,C).
    #[allow(clippy::too_many_arguments)]
    pub fn gru_forward(
        &self,
        enc: &mut Encoder,
        h: GpuSlice<f32>,
        gates: GpuSlice<f32>,
        gi: GpuSlice<f32>,
        w_hh: GpuSlice<f32>,
        b_hh: Option<GpuSlice<f32>>,
        h0: Option<GpuSlice<f32>>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        if b * t * c == 0 {
            return Ok(());
        }
        need("gru h", &h, b * t * c)?;
        need("gru gates", &gates, b * t * 4 * c)?;
        need("gru gi", &gi, b * t * 3 * c)?;
        need("gru w_hh", &w_hh, 3 * c * c)?;
        if let Some(x) = &b_hh {
            need("gru b_hh", x, 3 * c)?;
        }
        if let Some(x) = &h0 {
            need("gru h0", x, b * c)?;
        }
        let p = params(b, t, c, b_hh.is_some(), h0.is_some())?;
        let spare = self.spares()?;
        let bufs = [
            gi.bind(b * t * 3 * c),
            w_hh.bind(3 * c * c),
            b_hh.map_or(self.no_input(), |x| x.bind(3 * c)),
            h0.map_or(self.no_input(), |x| x.bind(b * c)),
            self.no_input(),
            h.bind(b * t * c),
            gates.bind(b * t * 4 * c),
            spare[0].all().bind(1),
            spare[1].all().bind(1),
            spare[2].all().bind(1),
        ];
        self.dispatch(enc, &FORWARD, &[], &p, &bufs, self.grid(b)?)
    }

    /// Backpropagation through time: dgi (B,T,3C) +=, dw_hh (3C,C) +=, db_hh (3C) += from dh (B,T,C). `dgh`
    /// (B,T,3C) and `carry` (B,C) are scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn gru_backward(
        &self,
        enc: &mut Encoder,
        dgi: GpuSlice<f32>,
        dw_hh: GpuSlice<f32>,
        db_hh: Option<GpuSlice<f32>>,
        dh: GpuSlice<f32>,
        gates: GpuSlice<f32>,
        h: GpuSlice<f32>,
        h0: Option<GpuSlice<f32>>,
        w_hh: GpuSlice<f32>,
        dgh: GpuSlice<f32>,
        carry: GpuSlice<f32>,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        if b * t * c == 0 {
            return Ok(());
        }
        need("gru dgi", &dgi, b * t * 3 * c)?;
        need("gru dw_hh", &dw_hh, 3 * c * c)?;
        need("gru dh", &dh, b * t * c)?;
        need("gru gates", &gates, b * t * 4 * c)?;
        need("gru h", &h, b * t * c)?;
        need("gru w_hh", &w_hh, 3 * c * c)?;
        need("gru dgh scratch", &dgh, b * t * 3 * c)?;
        need("gru carry scratch", &carry, b * c)?;
        if let Some(x) = &db_hh {
            need("gru db_hh", x, 3 * c)?;
        }
        if let Some(x) = &h0 {
            need("gru h0", x, b * c)?;
        }
        let p = params(b, t, c, db_hh.is_some(), h0.is_some())?;
        let steps = [
            self.no_input(),
            w_hh.bind(3 * c * c),
            self.no_input(),
            h0.map_or(self.no_input(), |x| x.bind(b * c)),
            dh.bind(b * t * c),
            h.bind(b * t * c),
            gates.bind(b * t * 4 * c),
            dgi.bind(b * t * 3 * c),
            dgh.bind(b * t * 3 * c),
            carry.bind(b * c),
        ];
        self.dispatch(enc, &BACKWARD, &[], &p, &steps, self.grid(b)?)?;
        let spare = self.spares()?;
        let sums = [
            dgh.bind(b * t * 3 * c),
            self.no_input(),
            self.no_input(),
            h0.map_or(self.no_input(), |x| x.bind(b * c)),
            self.no_input(),
            h.bind(b * t * c),
            spare[0].all().bind(1),
            dw_hh.bind(3 * c * c),
            db_hh.map_or(spare[1].all().bind(1), |x| x.bind(3 * c)),
            spare[2].all().bind(1),
        ];
        self.dispatch(enc, &PARAMS, &[], &p, &sums, self.grid((3 * c * c).div_ceil(64))?)
    }
}
