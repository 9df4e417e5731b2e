//! The model's glue between the layers on the device (on the host: `ops::glue`, `cpu::glue`): the input
//! embedding and its gradient (`wgsl/embedding.wgsl`, `embedding_backward.wgsl`), residual adds, scaling and
//! dropout masks (`elementwise.wgsl`), and a copy between two strided head layouts (`heads.wgsl`: a KV cache
//! taking this call's keys and values from the qkv rows). Plus what a training step needs at its end: per-tensor sums of squares
//! (`reduce.wgsl`'s `segment_sum`) and AdamW over the whole flat buffer with a divergence guard (`adamw.wgsl`'s
//! `flat`).

use super::{lanes, layout_u32, need, scalar_and_vec4, tree_and_subgroups, u32_of, Access, Encoder, Gpu, GpuSlice, Kernel};
use crate::backend::{AdamW, HeadLayout};
use crate::error::Result;

/// ids, wte, wpe, pe (read); out (read-write).
pub(crate) static EMBEDDING: Kernel = Kernel {
    name: "embedding.wgsl",
    src: include_str!("wgsl/embedding.wgsl"),
    entry: "main",
    binds: &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write],
};
/// csr, dx (read); dw (read-write).
pub(crate) static EMBEDDING_BACKWARD: Kernel = Kernel {
    name: "embedding_backward.wgsl",
    src: include_str!("wgsl/embedding_backward.wgsl"),
    entry: "main",
    binds: &[Access::Read, Access::Read, Access::Write],
};
/// x, y (read); out (read-write).
const ELEM_BINDS: &[Access] = &[Access::Read, Access::Read, Access::Write];
pub(crate) static ADD_SCALED: [Kernel; 2] = scalar_and_vec4!("elementwise.wgsl", "wgsl/elementwise.wgsl", "add_scaled", ELEM_BINDS);
pub(crate) static SCALE_INTO: [Kernel; 2] = scalar_and_vec4!("elementwise.wgsl", "wgsl/elementwise.wgsl", "scale", ELEM_BINDS);
pub(crate) static ADD_INTO: [Kernel; 2] = scalar_and_vec4!("elementwise.wgsl", "wgsl/elementwise.wgsl", "add_into", ELEM_BINDS);
pub(crate) static MUL_INTO: [Kernel; 2] = scalar_and_vec4!("elementwise.wgsl", "wgsl/elementwise.wgsl", "mul_into", ELEM_BINDS);
/// src (read); dst (read-write).
pub(crate) static COPY_HEADS: Kernel =
    Kernel { name: "heads.wgsl", src: include_str!("wgsl/heads.wgsl"), entry: "main", binds: &[Access::Read, Access::Write] };
/// x (read); out (read-write); segs (read). Each segment's Σ on the tree or on subgroups (`Gpu::reducing`).
pub(crate) static SEGMENT_SUM: [Kernel; 2] =
    tree_and_subgroups!("reduce.wgsl", "wgsl/reduce.wgsl", "segment_sum", &[Access::Read, Access::Write, Access::Read]);
/// g (read); w, m, v (read-write); decay, guard (read).
pub(crate) static ADAMW_FLAT: [Kernel; 2] = scalar_and_vec4!(
    "adamw.wgsl",
    "wgsl/adamw.wgsl",
    "flat",
    &[Access::Read, Access::Write, Access::Write, Access::Write, Access::Read, Access::Read]
);
pub(crate) static KERNELS: &[&Kernel] = &[
    &EMBEDDING,
    &EMBEDDING_BACKWARD,
    &ADD_SCALED[0],
    &ADD_SCALED[1],
    &SCALE_INTO[0],
    &SCALE_INTO[1],
    &ADD_INTO[0],
    &ADD_INTO[1],
    &MUL_INTO[0],
    &MUL_INTO[1],
    &COPY_HEADS,
    &ADAMW_FLAT[0],
    &ADAMW_FLAT[1],
];
pub(crate) static REDUCING: &[&[Kernel; 2]] = &[&SEGMENT_SUM];

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbeddingParams {
    n: u32,
    c: u32,
    t: u32,
    pos0: u32,
    flags: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TableGradParams {
    n: u32,
    c: u32,
    groups: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElemParams {
    n: u32,
    alpha: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct HeadsParams {
    n: u32,
    h: u32,
    t: u32,
    hs: u32,
    src: [u32; 4],
    dst: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SegmentParams {
    n: u32,
    cols: u32,
    chunk: u32,
    flags: u32,
    factor: f32,
    out_index: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamWParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    bc1: f32,
    bc2: f32,
}

const LEARNED: u32 = 1;
const SINUSOIDAL: u32 = 2;
const SQUARE: u32 = 2;

/// The rows of each group in increasing order, as embedding_backward.wgsl reads them: offsets (groups + 1), then
/// the lists. `group_of(r)` is row r's group.
pub(crate) fn csr(rows: usize, groups: usize, group_of: impl Fn(usize) -> usize) -> Vec<u32> {
    let mut counts = vec![0u32; groups + 1];
    for r in 0..rows {
        counts[group_of(r) + 1] += 1;
    }
    for g in 0..groups {
        counts[g + 1] += counts[g];
    }
    let mut out = counts.clone();
    out.resize(groups + 1 + rows, 0);
    let mut fill = counts;
    for r in 0..rows {
        let g = group_of(r);
        out[groups + 1 + fill[g] as usize] = r as u32;
        fill[g] += 1;
    }
    out
}

impl Gpu {
    /// out (B·T, C) = wte[ids] (+ wpe[pos0 + t]) (+ pe[t]); pe (T,C) is the sinusoidal table or empty.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_forward(
        &self,
        enc: &mut Encoder,
        out: GpuSlice<f32>,
        ids: GpuSlice<u32>,
        wte: GpuSlice<f32>,
        wpe: Option<GpuSlice<f32>>,
        pe: Option<GpuSlice<f32>>,
        t: usize,
        pos0: usize,
        c: usize,
    ) -> Result<()> {
        let n = ids.len() * c;
        need("embedding out", &out, n)?;
        if n == 0 || t == 0 {
            return Ok(());
        }
        if let Some(pe) = &pe {
            need("embedding sinusoidal table", pe, t * c)?;
        }
        let flags = if wpe.is_some() { LEARNED } else { 0 } | if pe.is_some() { SINUSOIDAL } else { 0 };
        let p = EmbeddingParams {
            n: u32_of("embedding elements", n)?,
            c: u32_of("C", c)?,
            t: u32_of("T", t)?,
            pos0: u32_of("pos0", pos0)?,
            flags,
            ..Default::default()
        };
        let (wpe, pe) = (wpe.map_or(self.no_input(), |w| w.bind(w.len())), pe.map_or(self.no_input(), |s| s.bind(t * c)));
        let bufs = [ids.bind(ids.len()), wte.bind(wte.len()), wpe, pe, out.bind(n)];
        self.dispatch(enc, &EMBEDDING, &[], &p, &bufs, self.grid(n.div_ceil(256))?)
    }

    /// dw (groups, C) += Σ dx rows of each group, rows listed by `csr` (see `csr`).
    pub fn table_gradient(&self, enc: &mut Encoder, dw: GpuSlice<f32>, csr: GpuSlice<u32>, dx: GpuSlice<f32>, groups: usize, c: usize) -> Result<()> {
        let n = groups * c;
        need("table gradient dw", &dw, n)?;
        if n == 0 {
            return Ok(());
        }
        let p = TableGradParams { n: u32_of("table elements", n)?, c: u32_of("C", c)?, groups: u32_of("groups", groups)?, _pad: 0 };
        let bufs = [csr.bind(csr.len()), dx.bind(dx.len()), dw.bind(n)];
        self.dispatch(enc, &EMBEDDING_BACKWARD, &[], &p, &bufs, self.grid(n.div_ceil(256))?)
    }

    fn elementwise(&self, enc: &mut Encoder, k: &[Kernel; 2], out: GpuSlice<f32>, x: GpuSlice<f32>, y: Option<GpuSlice<f32>>, alpha: f32) -> Result<()> {
        let n = out.len();
        need("elementwise x", &x, n)?;
        if let Some(y) = &y {
            need("elementwise y", y, n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let (variant, lanes) = lanes(n);
        let p = ElemParams { n: u32_of("elements", n / lanes)?, alpha, _pad: [0; 2] };
        let bufs = [x.bind(n), y.map_or(self.no_input(), |y| y.bind(n)), out.bind(n)];
        self.dispatch(enc, &k[variant], &[], &p, &bufs, self.grid((n / lanes).div_ceil(256))?)
    }

    /// out = α·a + b.
    pub fn add_scaled(&self, enc: &mut Encoder, out: GpuSlice<f32>, a: GpuSlice<f32>, b: GpuSlice<f32>, alpha: f32) -> Result<()> {
        self.elementwise(enc, &ADD_SCALED, out, a, Some(b), alpha)
    }

    /// out = α·a.
    pub fn scale_into(&self, enc: &mut Encoder, out: GpuSlice<f32>, a: GpuSlice<f32>, alpha: f32) -> Result<()> {
        self.elementwise(enc, &SCALE_INTO, out, a, None, alpha)
    }

    /// a += b.
    pub fn add_into(&self, enc: &mut Encoder, a: GpuSlice<f32>, b: GpuSlice<f32>) -> Result<()> {
        self.elementwise(enc, &ADD_INTO, a, b, None, 1.0)
    }

    /// a *= m.
    pub fn mul_into(&self, enc: &mut Encoder, a: GpuSlice<f32>, m: GpuSlice<f32>) -> Result<()> {
        self.elementwise(enc, &MUL_INTO, a, m, None, 1.0)
    }

    /// dst at layout `dl` ← src at layout `sl`, a (B,H,N,HS) tensor (`heads.wgsl`).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_heads(
        &self,
        enc: &mut Encoder,
        dst: GpuSlice<f32>,
        dl: HeadLayout,
        src: GpuSlice<f32>,
        sl: HeadLayout,
        b: usize,
        h: usize,
        n: usize,
        hs: usize,
    ) -> Result<()> {
        let count = b * h * n * hs;
        if count == 0 {
            return Ok(());
        }
        let (s_end, d_end) = (sl.end(b, h, n, hs), dl.end(b, h, n, hs));
        need("heads source", &src, s_end)?;
        need("heads destination", &dst, d_end)?;
        let p = HeadsParams {
            n: u32_of("head elements", count)?,
            h: u32_of("heads", h)?,
            t: u32_of("rows", n)?,
            hs: u32_of("HS", hs)?,
            src: layout_u32(sl)?,
            dst: layout_u32(dl)?,
        };
        self.dispatch(enc, &COPY_HEADS, &[], &p, &[src.bind(s_end), dst.bind(d_end)], self.grid(count.div_ceil(256))?)
    }

    /// out[out_index + g] = Σ x (or Σ x² when `square`) over segment g = x[segs[2g] .. segs[2g+1]].
    pub fn segment_sum(&self, enc: &mut Encoder, out: GpuSlice<f32>, out_index: usize, x: GpuSlice<f32>, segs: GpuSlice<u32>, square: bool) -> Result<()> {
        let n = segs.len() / 2;
        need("segment_sum out", &out, out_index + n)?;
        if n == 0 {
            return Ok(());
        }
        let p = SegmentParams {
            n: u32_of("segments", n)?,
            flags: if square { SQUARE } else { 0 },
            out_index: u32_of("index", out_index)?,
            ..Default::default()
        };
        let bufs = [x.bind(x.len()), out.bind(out.len()), segs.bind(2 * n)];
        self.dispatch(enc, self.reducing(&SEGMENT_SUM), &[], &p, &bufs, self.grid(n)?)
    }

    /// One AdamW step over a whole flat buffer: weight decay where `decay` (one u32 per 64 elements) is nonzero;
    /// nothing at all when guard[0] (Σg²) or guard[1] (the loss sum) is not finite.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_flat(
        &self,
        enc: &mut Encoder,
        p: GpuSlice<f32>,
        g: GpuSlice<f32>,
        m: GpuSlice<f32>,
        v: GpuSlice<f32>,
        decay: GpuSlice<u32>,
        guard: GpuSlice<f32>,
        h: &AdamW,
    ) -> Result<()> {
        let n = p.len();
        need("adamw g", &g, n)?;
        need("adamw m", &m, n)?;
        need("adamw v", &v, n)?;
        need("adamw decay flags", &decay, n.div_ceil(64))?;
        need("adamw guard", &guard, 4)?;
        if n == 0 {
            return Ok(());
        }
        let (variant, lanes) = lanes(n);
        let params = AdamWParams {
            n: u32_of("elements", n / lanes)?,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            wd: h.weight_decay,
            bc1: 1.0 - h.beta1.powi(h.t as i32),
            bc2: 1.0 - h.beta2.powi(h.t as i32),
        };
        let bufs = [g.bind(n), p.bind(n), m.bind(n), v.bind(n), decay.bind(n.div_ceil(64)), guard.bind(4)];
        self.dispatch(enc, &ADAMW_FLAT[variant], &[], &params, &bufs, self.grid((n / lanes).div_ceil(256))?)
    }
}

#[cfg(test)]
mod tests {
    use super::csr;

    #[test]
    fn csr_lists_each_groups_rows_in_order() {
        // rows 0..5 with groups [2, 0, 2, 1, 2]
        let g = [2usize, 0, 2, 1, 2];
        let c = csr(5, 3, |r| g[r]);
        assert_eq!(&c[..4], &[0, 1, 2, 5]);
        assert_eq!(&c[4..], &[1, 3, 0, 2, 4]);
    }
}
