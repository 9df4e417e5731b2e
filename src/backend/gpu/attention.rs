//! Fused attention (`wgsl/attention_forward.wgsl`, `attention_delta.wgsl`, `attention_backward.wgsl`):
//! FlashAttention-2 forward with lse saved, and a backward that recomputes the probabilities from lse. The head
//! size and the number of relative-bias buckets are compile-time constants of the kernels (register arrays and
//! workgroup tiles are sized by them), so each (HS, buckets) pair has its own pipelines.

use super::{gpu_error, layout_u32, need, u32_of, Access, Binding, Encoder, Gpu, GpuSlice, Kernel, KernelWith, Pooled};
use crate::backend::{AttnBias, AttnGrads, AttnShape};
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    s: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    causal: u32,
    q_offset: u32,
    scale: f32,
    bias_kind: u32,
    bucket_off: u32,
    want_dtable: u32,
    /// Layouts of q (and dq), k (dk), v (dv): offset, batch, head, row strides.
    q_lay: [u32; 4],
    k_lay: [u32; 4],
    v_lay: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DeltaParams {
    b: u32,
    t: u32,
    nh: u32,
    hs: u32,
}

/// Queries (forward, dq) or keys (dkdv) per workgroup: one per thread (the kernels' BQ).
const ROWS: usize = 64;
/// Largest head size: the kernels keep 2–4 head rows per thread in registers.
const MAX_HS: usize = 256;

/// q, k, v, bias (read); out, lse (read-write).
pub(crate) static FORWARD: Kernel = Kernel {
    name: "attention_forward.wgsl",
    src: concat!(include_str!("wgsl/attention_common.wgsl"), include_str!("wgsl/attention_forward.wgsl")),
    entry: "main",
    binds: &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write],
};
/// dout, out, lse (read); stats (read-write).
pub(crate) static DELTA: Kernel = Kernel {
    name: "attention_delta.wgsl",
    src: include_str!("wgsl/attention_delta.wgsl"),
    entry: "main",
    binds: &[Access::Read, Access::Read, Access::Read, Access::Write],
};
const BACKWARD_SRC: &str =
    concat!(include_str!("wgsl/attention_common.wgsl"), include_str!("wgsl/attention_backward.wgsl"));
/// q, k, v, dout, stats, bias (read); o1, o2 (read-write): dq and the table-gradient partials, or dk and dv (both
/// in o1) and nothing.
const BACKWARD_BINDS: &[Access] =
    &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
pub(crate) static BACKWARD_DQ: Kernel =
    Kernel { name: "attention_backward.wgsl", src: BACKWARD_SRC, entry: "dq", binds: BACKWARD_BINDS };
pub(crate) static BACKWARD_DKDV: Kernel =
    Kernel { name: "attention_backward.wgsl", src: BACKWARD_SRC, entry: "dkdv", binds: BACKWARD_BINDS };

/// Rows of a K/V (or Q/dout) tile: the largest power of two ≤ 32 such that two tiles of HS4 vec4s fit in 12 KiB,
/// within WebGPU's guaranteed 16 KiB of workgroup memory.
fn tile_rows(hs4: usize) -> usize {
    let mut n = 32;
    while n > 1 && 2 * n * hs4 * 16 > 12 * 1024 {
        n /= 2;
    }
    n
}

fn forward_consts(hs: usize) -> Vec<(&'static str, u32)> {
    let hs4 = hs.div_ceil(4);
    vec![("HS4", hs4 as u32), ("BK", tile_rows(hs4) as u32)]
}

fn backward_consts(hs: usize, buckets: usize) -> Vec<(&'static str, u32)> {
    let hs4 = hs.div_ceil(4);
    let n = tile_rows(hs4) as u32;
    vec![("HS4", hs4 as u32), ("BK", n), ("BQ2", n), ("NBK", buckets.max(1) as u32)]
}

/// The attention kernels to compile for each (head size, relative-bias buckets; 0 for none) pair.
pub(crate) fn kernels_for(pairs: &[(usize, usize)]) -> Result<Vec<KernelWith>> {
    let mut v = vec![];
    for &(hs, buckets) in pairs {
        check_head_size(hs)?;
        v.push((&FORWARD, forward_consts(hs)));
        // Cross-attention of a model with a relative bias has none: both variants.
        for nb in if buckets > 0 { vec![buckets, 0] } else { vec![0] } {
            v.push((&BACKWARD_DQ, backward_consts(hs, nb)));
            v.push((&BACKWARD_DKDV, backward_consts(hs, nb)));
        }
    }
    Ok(v)
}

fn check_head_size(hs: usize) -> Result<()> {
    if hs == 0 || hs > MAX_HS {
        return Err(gpu_error(format!("head size {hs}: the gpu attention kernels support 1 ..= {MAX_HS}")));
    }
    Ok(())
}

fn check_shape(sh: &AttnShape) -> Result<()> {
    check_head_size(sh.hs)?;
    if sh.nkv == 0 || !sh.nh.is_multiple_of(sh.nkv) {
        return Err(gpu_error(format!("{} query heads cannot share {} kv heads", sh.nh, sh.nkv)));
    }
    Ok(())
}

/// The bias as (kind, buffer binding, bucket offset, buckets). A relative bias's table and buckets go to one
/// packed u32 buffer (table bits, then buckets), keeping the kernels within 8 storage buffers.
struct PackedBias<'a> {
    kind: u32,
    binding: Binding<'a>,
    bucket_off: u32,
    buckets: usize,
}

/// The pooled buffers a packed bias binds.
#[derive(Default)]
struct Scratch {
    slopes: Option<Pooled<f32>>,
    packed: Option<Pooled<u32>>,
}

impl Gpu {
    /// Uploads the host parts of the bias (ALiBi slopes, T5 buckets) into `scratch` (pooled: alive until the
    /// submission) and packs it for the kernels.
    fn pack_bias<'a>(
        &'a self,
        enc: &mut Encoder,
        bias: &AttnBias<'_, GpuSlice<'a, f32>>,
        sh: &AttnShape,
        scratch: &'a mut Scratch,
    ) -> Result<PackedBias<'a>> {
        match *bias {
            AttnBias::None => Ok(PackedBias { kind: 0, binding: self.no_input(), bucket_off: 0, buckets: 0 }),
            AttnBias::Alibi { slopes } => {
                if slopes.len() < sh.nh {
                    return Err(gpu_error(format!("attention ALiBi slopes has {} elements, the op needs {}", slopes.len(), sh.nh)));
                }
                let slopes = scratch.slopes.insert(self.pooled_upload(&slopes[..sh.nh])?);
                Ok(PackedBias { kind: 1, binding: slopes.all().bind(sh.nh), bucket_off: 0, buckets: 0 })
            }
            AttnBias::Relative { table, bucket } => {
                let buckets = table.len() / sh.nh;
                if bucket.len() < sh.t * sh.s {
                    return Err(gpu_error(format!("attention relative buckets has {} elements, the op needs {}", bucket.len(), sh.t * sh.s)));
                }
                if buckets == 0 {
                    return Err(gpu_error("a relative-bias table with no buckets"));
                }
                let (tl, bl) = (buckets * sh.nh, sh.t * sh.s);
                let uploaded = self.pooled_upload(&bucket[..bl])?;
                let packed = self.pooled::<u32>(tl + bl)?;
                let (tb, bb) = (table.bind(tl), uploaded.all().bind(bl));
                enc.commands().copy_buffer_to_buffer(tb.buf, tb.offset, &packed.buf, 0, tb.size);
                enc.commands().copy_buffer_to_buffer(bb.buf, bb.offset, &packed.buf, tb.size, bb.size);
                let packed = scratch.packed.insert(packed);
                Ok(PackedBias {
                    kind: 2,
                    binding: packed.all().bind(tl + bl),
                    bucket_off: u32_of("bucket offset", tl)?,
                    buckets,
                })
            }
        }
    }

    fn attn_params(sh: &AttnShape, bias: &PackedBias, want_dtable: bool) -> Result<Params> {
        Ok(Params {
            b: u32_of("B", sh.b)?,
            t: u32_of("T", sh.t)?,
            s: u32_of("S", sh.s)?,
            nh: u32_of("NH", sh.nh)?,
            nkv: u32_of("NKV", sh.nkv)?,
            hs: u32_of("HS", sh.hs)?,
            causal: sh.causal as u32,
            q_offset: u32_of("q_offset", sh.q_offset)?,
            scale: sh.scale,
            bias_kind: bias.kind,
            bucket_off: bias.bucket_off,
            want_dtable: want_dtable as u32,
            q_lay: layout_u32(sh.q)?,
            k_lay: layout_u32(sh.k)?,
            v_lay: layout_u32(sh.v)?,
        })
    }

    /// out (B,T,NH·HS) = softmax(scale·q·kᵀ + bias, masked) · v; lse (B,NH,T) = log-sum-exp of each score row.
    /// q (B,NH,T,HS), k, v (B,NKV,S,HS), each at its layout in `sh` (they may be views of one buffer).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_forward(
        &self,
        enc: &mut Encoder,
        out: GpuSlice<f32>,
        lse: GpuSlice<f32>,
        q: GpuSlice<f32>,
        k: GpuSlice<f32>,
        v: GpuSlice<f32>,
        bias: AttnBias<'_, GpuSlice<f32>>,
        sh: &AttnShape,
    ) -> Result<()> {
        if sh.b == 0 || sh.t == 0 {
            return Ok(());
        }
        check_shape(sh)?;
        let (nq, qe, ke, ve) = (sh.b * sh.nh * sh.t * sh.hs, sh.q_end(), sh.k_end(), sh.v_end());
        need("attention out", &out, nq)?;
        need("attention lse", &lse, sh.b * sh.nh * sh.t)?;
        need("attention q", &q, qe)?;
        need("attention k", &k, ke)?;
        need("attention v", &v, ve)?;
        let mut scratch = Scratch::default();
        let pb = self.pack_bias(enc, &bias, sh, &mut scratch)?;
        let p = Gpu::attn_params(sh, &pb, false)?;
        let groups = sh.b * sh.nh * sh.t.div_ceil(ROWS);
        let bufs = [q.bind(qe), k.bind(ke), v.bind(ve), pb.binding, out.bind(nq), lse.bind(sh.b * sh.nh * sh.t)];
        self.dispatch(enc, &FORWARD, &forward_consts(sh.hs), &p, &bufs, self.grid(groups)?)
    }

    /// dq (B,NH,T,HS), dk, dv (B,NKV,S,HS) += at the layouts of q, k, v, into `grads`; dtable (buckets,NH) += for
    /// a relative bias. Probabilities are recomputed from lse, so no (T,S) matrix is kept between forward and
    /// backward or made here.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        &self,
        enc: &mut Encoder,
        grads: AttnGrads<GpuSlice<f32>>,
        dtable: Option<GpuSlice<f32>>,
        dout: GpuSlice<f32>,
        q: GpuSlice<f32>,
        k: GpuSlice<f32>,
        v: GpuSlice<f32>,
        out: GpuSlice<f32>,
        lse: GpuSlice<f32>,
        bias: AttnBias<'_, GpuSlice<f32>>,
        sh: &AttnShape,
    ) -> Result<()> {
        if sh.b == 0 || sh.t == 0 || sh.s == 0 {
            return Ok(());
        }
        check_shape(sh)?;
        let (dq, dkv) = match grads {
            AttnGrads::Qkv(all) => (all, all),
            AttnGrads::QAndKv { dq, dkv } => (dq, dkv),
        };
        let (nq, nl) = (sh.b * sh.nh * sh.t * sh.hs, sh.b * sh.nh * sh.t);
        let (qe, ke, ve, kve) = (sh.q_end(), sh.k_end(), sh.v_end(), sh.k_end().max(sh.v_end()));
        for (what, s, n) in [("dq", &dq, qe), ("dk, dv", &dkv, kve), ("dout", &dout, nq), ("q", &q, qe)] {
            need(&format!("attention {what}"), s, n)?;
        }
        for (what, s, n) in [("k", &k, ke), ("v", &v, ve), ("out", &out, nq), ("lse", &lse, nl)] {
            need(&format!("attention {what}"), s, n)?;
        }
        // (lse, δ) per query row.
        let stats = self.pooled::<f32>(2 * nl)?;
        let dp = DeltaParams {
            b: u32_of("B", sh.b)?,
            t: u32_of("T", sh.t)?,
            nh: u32_of("NH", sh.nh)?,
            hs: u32_of("HS", sh.hs)?,
        };
        let bufs = [dout.bind(nq), out.bind(nq), lse.bind(nl), stats.all().bind(2 * nl)];
        self.dispatch(enc, &DELTA, &[], &dp, &bufs, self.grid(nl.div_ceil(256))?)?;

        let mut scratch = Scratch::default();
        let pb = self.pack_bias(enc, &bias, sh, &mut scratch)?;
        let want_dtable = dtable.is_some() && pb.kind == 2;
        let consts = backward_consts(sh.hs, if pb.kind == 2 { pb.buckets } else { 0 });
        let p = Gpu::attn_params(sh, &pb, want_dtable)?;
        // Table-gradient partials (B·T, buckets·NH), one row per query and head set, summed below.
        let cols = pb.buckets * sh.nh;
        if let (true, Some(dt)) = (want_dtable, &dtable) {
            need("attention dtable", dt, cols)?;
        }
        let partials = if want_dtable { Some(self.pooled::<f32>(sh.b * sh.t * cols)?) } else { None };
        let part_binding = partials.as_ref().map_or(self.no_output(), |b| b.all().bind(b.len()));
        let [a, b, c, d, e] = [q.bind(qe), k.bind(ke), v.bind(ve), dout.bind(nq), stats.all().bind(2 * nl)];
        let dq_bufs = [a, b, c, d, e, pb.binding, dq.bind(qe), part_binding];
        self.dispatch(enc, &BACKWARD_DQ, &consts, &p, &dq_bufs, self.grid(sh.b * sh.nh * sh.t.div_ceil(ROWS))?)?;
        // dk and dv through one binding: two writable bindings of overlapping ranges of one buffer (dqkv's
        // interleaved columns) are refused by WebGPU.
        let dkdv_bufs = [a, b, c, d, e, pb.binding, dkv.bind(kve), self.no_output()];
        self.dispatch(enc, &BACKWARD_DKDV, &consts, &p, &dkdv_bufs, self.grid(sh.b * sh.nkv * sh.s.div_ceil(ROWS))?)?;
        if let (Some(part), Some(dt)) = (&partials, dtable) {
            self.col_sum(enc, dt, part.all(), sh.b * sh.t, cols, true)?;
        }
        // The scratch buffers (stats, packed bias, partials) go back to the pool here; later commands may reuse them.
        Ok(())
    }
}
