//! The linear layer, y = x·Wᵀ + b with PyTorch's (out, in) weight layout, forward and backward through one tiled
//! kernel (`wgsl/matmul.wgsl`) over strided operands; the bias gradient is a column sum (`reduce`). The FFN's
//! layers with the activation fused into the kernel's epilogue (`matmul_act_forward`, `matmul_act_backward`) are
//! two more entry points of it, for plain activations; gated ones run the product then `activation.wgsl`.

use super::pointwise::act_code;
use super::{need, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::config::Activation;
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
    /// The activation of the fused epilogues (`pointwise::act_code`).
    act: u32,
    /// Rows of K per split (split-K, `main` only); 0: all of K.
    k_split: u32,
    _pad: [u32; 2],
}

const ACCUMULATE: u32 = 1;
const BIAS: u32 = 2;
/// Split-K of a weight gradient: at least this many of K's rows per split, and splits until about this many
/// workgroups run (a tile is one workgroup).
const MIN_SPLIT_ROWS: usize = 512;
const TARGET_WORKGROUPS: usize = 128;
/// At most this many floats of partial sums (64 MiB): fewer splits past it.
const MAX_PARTIALS: usize = 16 << 20;

/// How many splits of K a product of (M,N) over K rows runs as: 1 (no split) unless its tiles are too few to
/// keep a GPU busy and K is long enough to cut into pieces of `MIN_SPLIT_ROWS` or more.
pub fn k_splits(m: usize, n: usize, k: usize) -> usize {
    // Split-K's products run with the 4×4 register tile (64×64 tiles).
    let edge = MatmulTile::Rt4.edge();
    let tiles = m.div_ceil(edge) * n.div_ceil(edge);
    let by_work = TARGET_WORKGROUPS.div_ceil(tiles.max(1));
    let by_rows = k / MIN_SPLIT_ROWS;
    let by_memory = MAX_PARTIALS / (m * n).max(1);
    by_work.min(by_rows).min(by_memory).max(1)
}

/// The kernel with its register tile RT (4: 64×64 tiles; 8: 128×128), its operands' loads (f32: any strides;
/// vec4: `vec4_loads`) and the activations' element-wise functions (its fused epilogues call them):
/// `[RT 4, RT 4 vec4, RT 8, RT 8 vec4]`, indexed by `kernel_index`.
macro_rules! matmul_kernels {
    ($entry:literal, $binds:expr) => {
        [
            matmul_kernels!(@one "matmul.wgsl", "4u", "wgsl/matmul_load.wgsl", $entry, $binds),
            matmul_kernels!(@one "matmul.wgsl (vec4 loads)", "4u", "wgsl/matmul_load_vec4.wgsl", $entry, $binds),
            matmul_kernels!(@one "matmul.wgsl (8×8 register tile)", "8u", "wgsl/matmul_load.wgsl", $entry, $binds),
            matmul_kernels!(@one "matmul.wgsl (8×8 register tile, vec4 loads)", "8u", "wgsl/matmul_load_vec4.wgsl", $entry, $binds),
        ]
    };
    (@one $name:literal, $rt:literal, $load:literal, $entry:literal, $binds:expr) => {
        Kernel {
            name: $name,
            src: concat!(
                "const RT: u32 = ",
                $rt,
                ";\n",
                include_str!("wgsl/activation_fn.wgsl"),
                include_str!($load),
                include_str!("wgsl/matmul.wgsl")
            ),
            entry: $entry,
            binds: $binds,
        }
    };
}
/// Bindings: a, b, bias (read), c (read-write).
pub(crate) static MATMUL: [Kernel; 4] = matmul_kernels!("main", &[Access::Read, Access::Read, Access::Read, Access::Write]);
/// Bindings: a, b, bias (read), c = pre, act_out (read-write).
pub(crate) static MATMUL_ACT_FORWARD: [Kernel; 4] =
    matmul_kernels!("act_forward", &[Access::Read, Access::Read, Access::Read, Access::Write, Access::Write]);
/// Bindings: a, b, (bias: unused), c = dpre, (act_out: unused), pre (read).
pub(crate) static MATMUL_ACT_BACKWARD: [Kernel; 4] =
    matmul_kernels!("act_backward", &[Access::Read, Access::Read, Access::Read, Access::Write, Access::Write, Access::Read]);
pub(crate) static KERNELS: &[&Kernel] = &[
    &MATMUL[0],
    &MATMUL[1],
    &MATMUL[2],
    &MATMUL[3],
    &MATMUL_ACT_FORWARD[0],
    &MATMUL_ACT_FORWARD[1],
    &MATMUL_ACT_FORWARD[2],
    &MATMUL_ACT_FORWARD[3],
    &MATMUL_ACT_BACKWARD[0],
    &MATMUL_ACT_BACKWARD[1],
    &MATMUL_ACT_BACKWARD[2],
    &MATMUL_ACT_BACKWARD[3],
];

/// Whether both operands of a product can be staged with 16-byte loads (matmul_load_vec4.wgsl): each one's
/// stride-1 dimension (K, or M for A and N for B) and its other stride multiples of 4, so that every 4 consecutive
/// elements it stages are one aligned vec4, all inside the matrix or all outside. (Bindings start on 256 bytes.)
fn vec4_loads([m, n, k]: [usize; 3], (a_rs, a_cs): (usize, usize), (b_rs, b_cs): (usize, usize)) -> bool {
    let a = if a_cs == 1 { a_rs % 4 == 0 && k % 4 == 0 } else { a_rs == 1 && a_cs % 4 == 0 && m % 4 == 0 };
    let b = if b_rs == 1 { b_cs % 4 == 0 && k % 4 == 0 } else { b_cs == 1 && b_rs % 4 == 0 && n % 4 == 0 };
    a && b
}

/// The register tile of a product: each thread's block of outputs, RT×RT. 8×8 (128×128 tiles: 64 multiply-adds
/// for 16 workgroup loads, against 16 for 8 with 4×4) where the product has enough such tiles to keep a large GPU
/// busy; 4×4 (64×64 tiles) elsewhere, and always for split-K. `Gpu::set_matmul_tile` forces one (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulTile {
    /// 4×4 outputs per thread, 64×64 per workgroup.
    Rt4,
    /// 8×8 outputs per thread, 128×128 per workgroup.
    Rt8,
}

impl MatmulTile {
    /// At least this many 128×128 tiles for the 8×8 register tile (a GPU of ~100 cores, two workgroups each,
    /// still has work after one round).
    const RT8_MIN_TILES: usize = 256;

    /// The tile a product of (M, N) runs with.
    pub fn for_product(m: usize, n: usize) -> MatmulTile {
        let edge = MatmulTile::Rt8.edge();
        if m.div_ceil(edge) * n.div_ceil(edge) >= Self::RT8_MIN_TILES {
            MatmulTile::Rt8
        } else {
            MatmulTile::Rt4
        }
    }

    fn edge(self) -> usize {
        match self {
            MatmulTile::Rt4 => 64,
            MatmulTile::Rt8 => 128,
        }
    }

    /// The kernel of this tile in a `matmul_kernels!` array, with vec4 loads or not.
    fn kernel_index(self, vec4: bool) -> usize {
        2 * (self == MatmulTile::Rt8) as usize + vec4 as usize
    }
}

/// Which of matmul.wgsl's epilogues a product ends with.
enum Epilogue<'a> {
    /// C (+)= A·B (+ bias).
    Plain,
    /// C = A·B (+ bias) and act_out = act(C).
    Act(Activation, GpuSlice<'a, f32>),
    /// C = (A·B) ⊙ act'(pre).
    ActGrad(Activation, GpuSlice<'a, f32>),
    /// Split-K: slab z of C (splits, M, N) = A·B over K's rows [z·rows, (z+1)·rows) (`main` with k_split).
    SplitK { rows: usize, splits: usize },
}

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
        self.gemm(enc, out, (inp, (c, 1)), (w, (1, c)), b, [n, oc, c], false, Epilogue::Plain)
    }

    /// pre (N,OC) = inp (N,C) · w (OC,C)ᵀ + b (OC) and out (N,F) = act(pre): one kernel for a plain activation
    /// (OC = F), the activation applied to each output in registers; a gated one (OC = 2F) is the product, then
    /// `activation_forward`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_act_forward(
        &self,
        enc: &mut Encoder,
        act: Activation,
        pre: GpuSlice<f32>,
        out: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        w: GpuSlice<f32>,
        b: Option<GpuSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        if act.is_gated() {
            self.matmul_forward(enc, pre, inp, w, b, n, c, oc)?;
            return self.activation_forward(enc, act, out.sub(0, n * (oc / 2))?, pre.sub(0, n * oc)?, oc / 2);
        }
        need("matmul pre", &pre, n * oc)?;
        need("matmul act out", &out, n * oc)?;
        need("matmul inp", &inp, n * c)?;
        need("matmul w", &w, oc * c)?;
        if let Some(b) = &b {
            need("matmul b", b, oc)?;
        }
        self.gemm(enc, pre, (inp, (c, 1)), (w, (1, c)), b, [n, oc, c], false, Epilogue::Act(act, out))
    }

    /// dpre (N,C) = (dout (N,OC) · w (OC,C)) ⊙ act'(pre), written; dw (OC,C) += doutᵀ·inp; db (OC) += Σ_rows dout.
    /// One kernel for dpre of a plain activation; a gated one (dpre and pre (N,2C)) is the product into a scratch
    /// dact, then `activation_backward` into dpre cleared first.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_act_backward(
        &self,
        enc: &mut Encoder,
        act: Activation,
        dpre: GpuSlice<f32>,
        dw: GpuSlice<f32>,
        db: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        inp: GpuSlice<f32>,
        pre: GpuSlice<f32>,
        w: GpuSlice<f32>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        need("matmul dout", &dout, n * oc)?;
        need("matmul w", &w, oc * c)?;
        if act.is_gated() {
            need("matmul dpre", &dpre, n * 2 * c)?;
            need("matmul pre", &pre, n * 2 * c)?;
            let dact = self.pooled::<f32>(n * c)?;
            self.gemm(enc, dact.all(), (dout, (oc, 1)), (w, (c, 1)), None, [n, c, oc], false, Epilogue::Plain)?;
            let dpre = dpre.sub(0, n * 2 * c)?;
            self.clear(enc, dpre);
            self.activation_backward(enc, act, dpre, dact.all(), pre.sub(0, n * 2 * c)?, c)?;
        } else {
            need("matmul dpre", &dpre, n * c)?;
            need("matmul pre", &pre, n * c)?;
            self.gemm(enc, dpre, (dout, (oc, 1)), (w, (c, 1)), None, [n, c, oc], false, Epilogue::ActGrad(act, pre))?;
        }
        self.matmul_backward(enc, None, dw, db, dout, inp, w, n, c, oc)
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
            self.gemm(enc, dinp, (dout, (oc, 1)), (w, (c, 1)), None, [n, c, oc], true, Epilogue::Plain)?;
        }
        let splits = k_splits(oc, c, n);
        if splits == 1 {
            self.gemm(enc, dw, (dout, (1, oc)), (inp, (c, 1)), None, [oc, c, n], true, Epilogue::Plain)?;
        } else {
            // Split-K: each split's doutᵀ·inp over its rows into a slab of the partials, then the slabs' sum added
            // into dw (a column sum over the slabs, in a fixed order).
            let rows = n.div_ceil(splits).next_multiple_of(16);
            let splits = n.div_ceil(rows);
            let partials = self.pooled::<f32>(splits * oc * c)?;
            let epi = Epilogue::SplitK { rows, splits };
            self.gemm(enc, partials.all(), (dout, (1, oc)), (inp, (c, 1)), None, [oc, c, n], false, epi)?;
            self.col_sum(enc, dw, partials.all(), splits, oc * c, true)?;
        }
        if let Some(db) = db {
            need("matmul db", &db, oc)?;
            self.col_sum(enc, db, dout, n, oc, true)?;
        }
        Ok(())
    }

    /// c (M,N) (+)= a (M,K) · b (K,N) (+ bias (N)), [M, N, K] = mnk, ending with `epi`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        enc: &mut Encoder,
        c: GpuSlice<f32>,
        a: Operand,
        b: Operand,
        bias: Option<GpuSlice<f32>>,
        mnk: [usize; 3],
        accumulate: bool,
        epi: Epilogue,
    ) -> Result<()> {
        let [m, n, k] = mnk;
        // K's rows per split and the splits (slabs of c): (0, 1) unless split-K.
        let split = match epi {
            Epilogue::SplitK { rows, splits } => (rows, splits),
            _ => (0, 1),
        };
        need("matmul c", &c, split.1 * m * n)?;
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
            act: match epi {
                Epilogue::Plain | Epilogue::SplitK { .. } => 0,
                Epilogue::Act(act, _) | Epilogue::ActGrad(act, _) => act_code(act),
            },
            k_split: u32_of("matmul split rows", split.0)?,
            _pad: [0; 2],
        };
        let bias = bias.map_or(self.no_input(), |s| s.bind(n));
        let tile = match (&epi, self.matmul_tile()) {
            (Epilogue::SplitK { .. }, _) => MatmulTile::Rt4,
            (_, Some(forced)) => forced,
            (_, None) => MatmulTile::for_product(m, n),
        };
        let (gx, gy) = (n.div_ceil(tile.edge()), m.div_ceil(tile.edge()));
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if gx > max || gy > max {
            return Err(super::gpu_error(format!(
                "a {m}×{n} matmul needs a {gy}×{gx} grid, over the adapter's {max} per dimension"
            )));
        }
        if split.1 > max {
            return Err(super::gpu_error(format!("a matmul split {} ways, over the adapter's {max} per dimension", split.1)));
        }
        let grid = [gx as u32, gy as u32, split.1 as u32];
        let (a, b, c) = (a.bind(m * k), b.bind(k * n), c.bind(split.1 * m * n));
        let t = tile.kernel_index(self.matmul_vec4_loads() && vec4_loads(mnk, (a_rs, a_cs), (b_rs, b_cs)));
        match epi {
            Epilogue::Plain | Epilogue::SplitK { .. } => self.dispatch(enc, &MATMUL[t], &[], &p, &[a, b, bias, c], grid),
            Epilogue::Act(_, out) => self.dispatch(enc, &MATMUL_ACT_FORWARD[t], &[], &p, &[a, b, bias, c, out.bind(m * n)], grid),
            Epilogue::ActGrad(_, pre) => {
                let bufs = [a, b, bias, c, self.no_output(), pre.bind(m * n)];
                self.dispatch(enc, &MATMUL_ACT_BACKWARD[t], &[], &p, &bufs, grid)
            }
        }
    }
}
