//! Element- and row-wise ops: activations (`wgsl/activation.wgsl`), softmax cross-entropy (`cross_entropy.wgsl`)
//! and RoPE (`rope.wgsl`). AdamW runs over the whole flat buffer (`glue.rs`'s `adamw_flat`).

use super::{gpu_error, layout_u32, need, tree_and_subgroups, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::backend::HeadLayout;
use crate::config::Activation;
use crate::error::Result;

const ACT_SRC: &str = concat!(include_str!("wgsl/activation_fn.wgsl"), include_str!("wgsl/activation.wgsl"));
/// inp, dout (read); out or dinp (read-write).
const ACT_BINDS: &[Access] = &[Access::Read, Access::Read, Access::Write];
pub(crate) static ACT_FORWARD: Kernel =
    Kernel { name: "activation.wgsl", src: ACT_SRC, entry: "forward", binds: ACT_BINDS };
pub(crate) static ACT_BACKWARD: Kernel =
    Kernel { name: "activation.wgsl", src: ACT_SRC, entry: "backward", binds: ACT_BINDS };
/// logits, targets (read); dlogits, losses (read-write). The row max and Σ exp on the tree or on subgroups.
pub(crate) static CROSS_ENTROPY: [Kernel; 2] = tree_and_subgroups!(
    "cross_entropy.wgsl",
    "wgsl/cross_entropy.wgsl",
    "main",
    &[Access::Read, Access::Read, Access::Write, Access::Write]
);
/// table (read); x (read-write).
pub(crate) static ROPE: Kernel = Kernel {
    name: "rope.wgsl",
    src: include_str!("wgsl/rope.wgsl"),
    entry: "main",
    binds: &[Access::Read, Access::Write],
};
pub(crate) static KERNELS: &[&Kernel] = &[&ACT_FORWARD, &ACT_BACKWARD, &ROPE];
pub(crate) static REDUCING: &[&[Kernel; 2]] = &[&CROSS_ENTROPY];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ActParams {
    n: u32,
    f: u32,
    act: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CrossEntropyParams {
    rows: u32,
    v: u32,
    dscale: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeParams {
    rows: u32,
    t: u32,
    half: u32,
    inverse: u32,
    hs: u32,
    nh: u32,
    _pad: [u32; 2],
    lay: [u32; 4],
}

/// An activation's number in the WGSL kernels (activation_fn.wgsl).
pub(crate) fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Relu => 0,
        Activation::Gelu => 1,
        Activation::Swish => 2,
        Activation::Glu => 3,
        Activation::Geglu => 4,
        Activation::Swiglu => 5,
    }
}

impl Gpu {
    /// out (N,F) = act(inp): inp is (N,F), or (N,2F) [gate | up] for gated activations. N = out.len() / F.
    pub fn activation_forward(
        &self,
        enc: &mut Encoder,
        act: Activation,
        out: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        f: usize,
    ) -> Result<()> {
        let (n, width) = self.act_sizes(act, out.len(), f)?;
        need("activation inp", &inp, n * width)?;
        if n == 0 {
            return Ok(());
        }
        let p = ActParams { n: u32_of("elements", n * f)?, f: u32_of("F", f)?, act: act_code(act), _pad: 0 };
        let bufs = [inp.bind(n * width), self.no_input(), out.bind(n * f)];
        self.dispatch(enc, &ACT_FORWARD, &[], &p, &bufs, self.grid((n * f).div_ceil(256))?)
    }

    /// dinp (N,F or 2F) += ∂L/∂inp. N = dout.len() / F.
    pub fn activation_backward(
        &self,
        enc: &mut Encoder,
        act: Activation,
        dinp: GpuSlice<f32>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        f: usize,
    ) -> Result<()> {
        let (n, width) = self.act_sizes(act, dout.len(), f)?;
        need("activation inp", &inp, n * width)?;
        need("activation dinp", &dinp, n * width)?;
        if n == 0 {
            return Ok(());
        }
        let p = ActParams { n: u32_of("elements", n * f)?, f: u32_of("F", f)?, act: act_code(act), _pad: 0 };
        let bufs = [inp.bind(n * width), dout.bind(n * f), dinp.bind(n * width)];
        self.dispatch(enc, &ACT_BACKWARD, &[], &p, &bufs, self.grid((n * f).div_ceil(256))?)
    }

    /// (rows N, input width F or 2F) from the length of the (N,F) side.
    fn act_sizes(&self, act: Activation, len: usize, f: usize) -> Result<(usize, usize)> {
        if f == 0 {
            return Err(gpu_error("activation with F = 0"));
        }
        Ok((len / f, if act.is_gated() { 2 * f } else { f }))
    }

    /// Fused softmax + cross-entropy + its gradient over N = targets.len() rows: losses (N) = lse − logit[target]
    /// (0 where the target is -1), dlogits (N,V) = (softmax − onehot)·dscale (0 on ignored rows). The total is
    /// Σ losses (`sum`); the count of counted rows is known to the host, which made the targets.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy(
        &self,
        enc: &mut Encoder,
        dlogits: GpuSlice<f32>,
        losses: GpuSlice<f32>,
        logits: GpuSlice<f32>,
        targets: GpuSlice<i32>,
        v: usize,
        dscale: f32,
    ) -> Result<()> {
        let n = targets.len();
        need("cross_entropy logits", &logits, n * v)?;
        need("cross_entropy dlogits", &dlogits, n * v)?;
        need("cross_entropy losses", &losses, n)?;
        if n == 0 || v == 0 {
            return Ok(());
        }
        let p = CrossEntropyParams { rows: u32_of("rows", n)?, v: u32_of("V", v)?, dscale, _pad: 0 };
        let bufs = [logits.bind(n * v), targets.bind(n), dlogits.bind(n * v), losses.bind(n)];
        self.dispatch(enc, self.reducing(&CROSS_ENTROPY), &[], &p, &bufs, self.grid(n)?)
    }

    /// RoPE in place on the (B, H, T, HS) tensor at `lay` in x, row t at position pos0 + t; `inverse` rotates back
    /// (the backward).
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        enc: &mut Encoder,
        x: GpuSlice<f32>,
        lay: HeadLayout,
        b: usize,
        nh: usize,
        t: usize,
        hs: usize,
        pos0: usize,
        theta: f32,
        inverse: bool,
    ) -> Result<()> {
        let (half, rows) = (hs / 2, b * nh * t);
        if rows == 0 || half == 0 {
            return Ok(());
        }
        let end = lay.end(b, nh, t, hs);
        need("rope x", &x, end)?;
        let table = self.pooled_upload(&rope_table(t, hs, pos0, theta))?;
        let p = RopeParams {
            rows: u32_of("rows", rows)?,
            t: u32_of("T", t)?,
            half: u32_of("HS/2", half)?,
            inverse: inverse as u32,
            hs: u32_of("HS", hs)?,
            nh: u32_of("heads", nh)?,
            _pad: [0; 2],
            lay: layout_u32(lay)?,
        };
        self.dispatch(
            enc,
            &ROPE,
            &[],
            &p,
            &[table.all().bind(table.len()), x.bind(end)],
            self.grid((rows * half).div_ceil(256))?,
        )
    }
}

/// (cos a, sin a) for positions pos0 .. pos0 + t and pairs i < HS/2, with the reference's f32 arithmetic:
/// a = pos · (1 / theta^(2i/HS)).
fn rope_table(t: usize, hs: usize, pos0: usize, theta: f32) -> Vec<f32> {
    let half = hs / 2;
    let mut out = Vec::with_capacity(t * half * 2);
    for tp in 0..t {
        let pos = (pos0 + tp) as f32;
        for i in 0..half {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / hs as f32);
            let (sin, cos) = (pos * inv_freq).sin_cos();
            out.extend([cos, sin]);
        }
    }
    out
}
