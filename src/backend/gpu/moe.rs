//! Mixture-of-Experts routing on the device (on the host: `ops::moe`): the router's softmax and top-k and the
//! capacity (`wgsl/moe_route.wgsl`), the router's gradient (`moe_route_backward.wgsl`), and moving rows between
//! the tokens and one expert (`moe_rows.wgsl`). The experts' FFNs are the usual matmul and activation kernels.
//! Routing is data, and a recorded step cannot wait for it: the model runs every expert over its capacity (rows
//! past its assignments are zeros that no token reads).

use super::{need, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::backend::{moe_stats_len, Routing};
use crate::error::Result;

const ROUTE_SRC: &str = include_str!("wgsl/moe_route.wgsl");
/// logits (read); probs, choice, weight, slot, stats (read-write).
const ROUTE_BINDS: &[Access] = &[Access::Read, Access::Write, Access::Write, Access::Write, Access::Write, Access::Write];
pub(crate) static ROUTE_TOKENS: Kernel = Kernel { name: "moe_route.wgsl", src: ROUTE_SRC, entry: "tokens", binds: ROUTE_BINDS };
pub(crate) static ROUTE_SLOTS: Kernel = Kernel { name: "moe_route.wgsl", src: ROUTE_SRC, entry: "slots", binds: ROUTE_BINDS };
/// dweight, probs, choice, weight, stats (read); dlogits (read-write).
pub(crate) static ROUTE_BACKWARD: Kernel = Kernel {
    name: "moe_route_backward.wgsl",
    src: include_str!("wgsl/moe_route_backward.wgsl"),
    entry: "main",
    binds: &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Write],
};
const ROWS_SRC: &str = include_str!("wgsl/moe_rows.wgsl");
/// src, choice, slot, weight, other (read); dst (read-write).
const ROWS_BINDS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Write];
pub(crate) static GATHER: Kernel = Kernel { name: "moe_rows.wgsl", src: ROWS_SRC, entry: "gather", binds: ROWS_BINDS };
pub(crate) static SCATTER: Kernel = Kernel { name: "moe_rows.wgsl", src: ROWS_SRC, entry: "scatter", binds: ROWS_BINDS };
pub(crate) static COMBINE: Kernel = Kernel { name: "moe_rows.wgsl", src: ROWS_SRC, entry: "combine", binds: ROWS_BINDS };
pub(crate) static COMBINE_ROWS: Kernel = Kernel { name: "moe_rows.wgsl", src: ROWS_SRC, entry: "combine_rows", binds: ROWS_BINDS };
pub(crate) static COMBINE_WEIGHTS: Kernel = Kernel { name: "moe_rows.wgsl", src: ROWS_SRC, entry: "combine_weights", binds: ROWS_BINDS };

pub(crate) static KERNELS: &[&Kernel] =
    &[&ROUTE_TOKENS, &ROUTE_SLOTS, &ROUTE_BACKWARD, &GATHER, &SCATTER, &COMBINE, &COMBINE_ROWS, &COMBINE_WEIGHTS];

/// The most experts the kernels hold in their fixed arrays (`config::MAX_EXPERTS`).
const MAX_EXPERTS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct MoeParams {
    n: u32,
    k: u32,
    e: u32,
    c: u32,
    ex: u32,
    rows: u32,
    cap: u32,
    aux: f32,
}

/// Which pass of `moe_rows.wgsl` to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RowPass {
    Gather,
    Scatter,
    Combine,
    CombineRows,
    CombineWeights,
}

impl Gpu {
    fn moe_params(&self, n: usize, k: usize, e: usize, c: usize) -> Result<MoeParams> {
        if e > MAX_EXPERTS || k > e {
            return Err(super::gpu_error(format!("{e} experts, top {k}: the routing kernels take at most {MAX_EXPERTS} experts and k ≤ E")));
        }
        Ok(MoeParams { n: u32_of("tokens", n)?, k: u32_of("k", k)?, e: u32_of("experts", e)?, c: u32_of("C", c)?, ..Default::default() })
    }

    /// See `Backend::moe_route`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_route(
        &self,
        enc: &mut Encoder,
        probs: GpuSlice<f32>,
        choice: GpuSlice<f32>,
        slot: GpuSlice<f32>,
        weight: GpuSlice<f32>,
        stats: GpuSlice<f32>,
        logits: GpuSlice<f32>,
        n: usize,
        e: usize,
        k: usize,
        cap: usize,
    ) -> Result<()> {
        let p = MoeParams { cap: u32_of("capacity", cap)?, ..self.moe_params(n, k, e, 0)? };
        need("moe logits", &logits, n * e)?;
        need("moe probs", &probs, n * e)?;
        for (what, s) in [("moe choice", &choice), ("moe slot", &slot), ("moe weight", &weight)] {
            need(what, s, n * k)?;
        }
        need("moe stats", &stats, moe_stats_len(e))?;
        if n == 0 {
            return Ok(());
        }
        let bufs = [logits.bind(n * e), probs.bind(n * e), choice.bind(n * k), weight.bind(n * k), slot.bind(n * k), stats.bind(moe_stats_len(e))];
        self.dispatch(enc, &ROUTE_TOKENS, &[], &p, &bufs, self.grid(n.div_ceil(64))?)?;
        self.dispatch(enc, &ROUTE_SLOTS, &[], &p, &bufs, [1, 1, 1])
    }

    /// See `Backend::moe_route_backward`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_route_backward(
        &self,
        enc: &mut Encoder,
        dlogits: GpuSlice<f32>,
        dweight: GpuSlice<f32>,
        probs: GpuSlice<f32>,
        r: Routing<GpuSlice<f32>>,
        stats: GpuSlice<f32>,
        e: usize,
        aux: f32,
    ) -> Result<()> {
        let (n, k) = (r.n, r.k);
        let p = MoeParams { aux, ..self.moe_params(n, k, e, 0)? };
        need("moe dlogits", &dlogits, n * e)?;
        need("moe probs", &probs, n * e)?;
        for (what, s) in [("moe dweight", &dweight), ("moe choice", &r.choice), ("moe weight", &r.weight)] {
            need(what, s, n * k)?;
        }
        need("moe stats", &stats, moe_stats_len(e))?;
        if n == 0 {
            return Ok(());
        }
        let bufs = [dweight.bind(n * k), probs.bind(n * e), r.choice.bind(n * k), r.weight.bind(n * k), stats.bind(moe_stats_len(e)), dlogits.bind(n * e)];
        self.dispatch(enc, &ROUTE_BACKWARD, &[], &p, &bufs, self.grid(n.div_ceil(64))?)
    }

    /// One pass of `moe_rows.wgsl` for expert `ex` over its `rows` rows: `src` and `dst` as the pass reads and
    /// writes them (see the kernel), `other` the expert's output for `CombineWeights`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_rows(
        &self,
        enc: &mut Encoder,
        pass: RowPass,
        dst: GpuSlice<f32>,
        src: GpuSlice<f32>,
        other: Option<GpuSlice<f32>>,
        r: Routing<GpuSlice<f32>>,
        ex: usize,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        let (n, k) = (r.n, r.k);
        let p = MoeParams { ex: u32_of("expert", ex)?, rows: u32_of("rows", rows)?, ..self.moe_params(n, k, MAX_EXPERTS, c)? };
        for (what, s) in [("moe choice", &r.choice), ("moe slot", &r.slot), ("moe weight", &r.weight)] {
            need(what, s, n * k)?;
        }
        let (token_len, expert_len) = (n * c, rows * c);
        let (src_len, dst_len, invocations, k_) = match pass {
            RowPass::Gather => (token_len, expert_len, n * k * c, &GATHER),
            RowPass::Scatter => (expert_len, token_len, n * c, &SCATTER),
            RowPass::Combine => (expert_len, token_len, n * c, &COMBINE),
            RowPass::CombineRows => (token_len, expert_len, n * k * c, &COMBINE_ROWS),
            RowPass::CombineWeights => (token_len, n * k, n * k, &COMBINE_WEIGHTS),
        };
        need("moe rows src", &src, src_len)?;
        need("moe rows dst", &dst, dst_len)?;
        if let Some(o) = &other {
            need("moe expert output", o, expert_len)?;
        }
        if invocations == 0 || src_len == 0 || dst_len == 0 {
            return Ok(());
        }
        let other = other.map_or(self.no_input(), |o| o.bind(expert_len));
        let bufs = [src.bind(src_len), r.choice.bind(n * k), r.slot.bind(n * k), r.weight.bind(n * k), other, dst.bind(dst_len)];
        self.dispatch(enc, k_, &[], &p, &bufs, self.grid(invocations.div_ceil(64))?)
    }
}
