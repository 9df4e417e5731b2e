//! The test harness of the gpu backend: the shared device (failing, not skipping, without an adapter) and
//! `OnGpu`, the op trait over host memory (a `Host` backend, like `Reference` and `Cpu`) whose every op uploads
//! its slices, records the op through a fresh `GpuStep` — the GPU's own implementation of the trait, bias uploads,
//! optimizer ops and all — submits, and reads the outputs back. The GPU keeps everything on the device; this exists
//! so that the tests and the model code can drive `GpuStep` op by op against the reference. It panics when a
//! submission or a readback fails; an op's own error (a shape the kernel refuses) is returned.
//! Also seeded batches (`lab_batch`), the tiny config the training tests share (`config`, from tests/lab_config),
//! and `new_gpu` for tests whose training engine owns its device.

#![allow(dead_code)] // each test file uses part of it

#[path = "../lab_config/mod.rs"]
mod lab_config;
#[allow(unused_imports)] // gpu_kernels uses neither
pub use lab_config::{config, output_cases};

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, OnceLock};
use transformer_playground::backend::gpu::{Element, Encoder, Gpu, GpuBuffer, GpuSlice, GpuStep, PendingLoss};
use transformer_playground::backend::{ops, AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Routing, Segment, View};
use transformer_playground::config::{Activation, NormKind};
use transformer_playground::model::Batch;
use transformer_playground::rng::Rng;
use transformer_playground::Result;

/// The shared device, held by this thread until the guard drops (re-entrant: a thread holding it may ask again).
/// The device's pool lends a scratch buffer again once a submission has happened after it was given back, so a
/// submission from another thread while this one records could hand this recording's buffers to a third: the
/// test threads take turns.
pub fn gpu() -> Turn {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let gpu = GPU.get_or_init(new_gpu);
    if HOLDING.get() {
        return Turn { gpu, _guard: None };
    }
    // A test that panicked while holding the turn left the device as usable as any other failed test does.
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    HOLDING.set(true);
    Turn { gpu, _guard: Some(guard) }
}

thread_local! {
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// This thread's turn on the shared device (`gpu`).
pub struct Turn {
    gpu: &'static Gpu,
    _guard: Option<MutexGuard<'static, ()>>,
}

impl std::ops::Deref for Turn {
    type Target = Gpu;
    fn deref(&self) -> &Gpu {
        self.gpu
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self._guard.is_some() {
            HOLDING.set(false);
        }
    }
}

/// A fresh device (each training engine owns its own): fails, not skips, without an adapter.
pub fn new_gpu() -> Gpu {
    // Mesa's shader cache goes to a temporary directory, not ~/.cache (set before the driver loads).
    let cache = std::env::temp_dir().join("tp-gpu-kernels-cache");
    std::env::set_var("XDG_CACHE_HOME", &cache);
    match Gpu::new_blocking() {
        Ok(g) => {
            eprintln!("gpu tests on: {}", g.adapter_name());
            g
        }
        Err(e) => panic!(
            "{e}\n\nThese tests need a GPU adapter and do not skip without one. Without a GPU, install Mesa's \
             software Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1"
        ),
    }
}

/// A seeded batch of random ids (B,T) (and a source (B,S) for the encoder-decoder); bert: masked-LM targets.
pub fn lab_batch(arch: &str, b: usize, t: usize, s: usize, vocab: usize, seed: u64) -> Batch {
    let mut r = Rng::new(seed);
    let mut ids = |n: usize| (0..n).map(|_| r.below(vocab - 1) as u32).collect::<Vec<u32>>();
    let (mut idx, src) = (ids(b * t), ids(b * s));
    let mut targets: Vec<i32> = idx.iter().map(|&x| ((x as usize + 1) % vocab) as i32).collect();
    if arch == "bert" {
        // Masked LM: every third position is masked (the last id) and predicts its original; the rest are ignored.
        for i in 0..idx.len() {
            targets[i] = if i % 3 == 0 { idx[i] as i32 } else { -1 };
            if i % 3 == 0 {
                idx[i] = (vocab - 1) as u32;
            }
        }
    }
    Batch { b, t, idx, targets, s, src }
}

// -- The kernels' own API, for the kernel-level tests ----------------------------------------------------------

pub fn up<T: Element>(x: &[T]) -> GpuBuffer<T> {
    gpu().upload(x).expect("upload")
}

pub fn zeros(n: usize) -> GpuBuffer<f32> {
    gpu().zeros(n).expect("allocate")
}

/// Records `f` into one encoder and submits it.
pub fn run(f: impl FnOnce(&mut Encoder) -> Result<()>) {
    let g = gpu();
    let mut e = g.encoder();
    f(&mut e).expect("record");
    g.submit(e).expect("submit");
}

/// The buffer's values, after everything submitted so far.
pub fn read(b: &GpuBuffer<f32>) -> Vec<f32> {
    gpu().read_blocking(b.all()).expect("read back")
}

// -- `OnGpu`: the op trait through `GpuStep`, over host memory -----------------------------------------------

/// The op trait over host slices, each op run by `GpuStep` (see the module docs).
pub struct OnGpu;

/// Uploads `ins` and `outs` (outputs too: backward ops accumulate into them) with the step's own `upload`, records
/// `op` over them through a fresh `GpuStep` whose scalars buffer holds `scalar` (a loss sum), reads every output and
/// the scalars back in the same submission, and copies the outputs into the host's slices. Absent buffers (`None`)
/// are passed to `op` as `None`. Returns what `op` returned and the scalars buffer's value after the op.
fn on_gpu<R, const I: usize, const O: usize>(
    scalar: f32,
    ins: [Option<&[f32]>; I],
    outs: [Option<&mut [f32]>; O],
    op: impl FnOnce(&GpuStep, [Option<GpuSlice<f32>>; I], [Option<GpuSlice<f32>>; O]) -> Result<R>,
) -> Result<(R, f32)> {
    let g = gpu();
    let scalars = g.upload(&[scalar]).expect("upload");
    let step = GpuStep::new(&g, &scalars, 0);
    let upload = |x: &[f32]| step.upload(x.to_vec()).expect("upload");
    let in_bufs = ins.map(|x| x.map(upload));
    let out_bufs = outs.each_ref().map(|x| x.as_deref().map(upload));
    let r = op(&step, in_bufs.each_ref().map(|b| b.as_ref().map(|b| b.all())), out_bufs.each_ref().map(|b| b.as_ref().map(|b| b.all())))?;
    let reads = out_bufs.each_ref().map(|b| b.as_ref().map(|b| step.read(b.all()).expect("read")));
    let scalars_read = step.read(scalars.all()).expect("read");
    g.submit(step.finish()).expect("submit");
    for (host, rb) in outs.into_iter().zip(reads) {
        if let (Some(host), Some(rb)) = (host, rb) {
            host.copy_from_slice(&rb.wait_blocking(&g).expect("read back"));
        }
    }
    let s = scalars_read.wait_blocking(&g).expect("read back");
    Ok((r, s[0]))
}

/// A buffer `on_gpu` was given.
fn d(x: Option<GpuSlice<'_, f32>>) -> GpuSlice<'_, f32> {
    x.expect("a buffer on_gpu was given")
}

/// `AttnBias` over the device's copy of a relative-bias table (the slopes and buckets stay host slices: `GpuStep`
/// uploads them itself).
fn device_bias<'a>(bias: AttnBias<'a>, table: Option<GpuSlice<'a, f32>>) -> AttnBias<'a, GpuSlice<'a, f32>> {
    match bias {
        AttnBias::None => AttnBias::None,
        AttnBias::Alibi { slopes } => AttnBias::Alibi { slopes },
        AttnBias::Relative { bucket, .. } => AttnBias::Relative { table: d(table), bucket },
    }
}

fn table_of<'a>(bias: &AttnBias<'a>) -> Option<&'a [f32]> {
    match *bias {
        AttnBias::Relative { table, .. } => Some(table),
        _ => None,
    }
}

impl Backend for OnGpu {
    type Buf = Vec<f32>;
    type In<'a> = &'a [f32];
    type Out<'a> = &'a mut [f32];
    type Params = [f32];
    type Loss = f32;
    type Read = Vec<f32>;

    fn name(&self) -> &'static str {
        "gpu (GpuStep: upload, record, submit, read back)"
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn upload(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }
    fn copy_of(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![f32::NAN; x.len()];
        on_gpu(0.0, [Some(x)], [Some(&mut out)], |s, [x], [out]| {
            let copy = s.copy_of(d(x))?;
            s.record(|g, e| g.copy(e, d(out), copy.all()))
        })?;
        Ok(out)
    }
    fn zero(&self, x: &mut [f32]) -> Result<()> {
        on_gpu(0.0, [], [Some(x)], |s, [], [x]| s.zero(d(x))).map(drop)
    }
    fn read(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn view(x: &Vec<f32>) -> &[f32] {
        x
    }
    fn view_mut(x: &mut Vec<f32>) -> &mut [f32] {
        x
    }
    fn len(x: &[f32]) -> usize {
        x.len()
    }
    fn param(p: &[f32], v: View) -> Result<&[f32]> {
        v.check(p.len())?;
        Ok(v.of(p))
    }
    fn grad(g: &mut [f32], v: View) -> Result<&mut [f32]> {
        v.check(g.len())?;
        Ok(v.of_mut(g))
    }
    fn grad_pair(g: &mut [f32], a: View, b: Option<View>) -> Result<(&mut [f32], Option<&mut [f32]>)> {
        ops::two_mut(g, a, b)
    }
    fn grad_many<'a>(g: &'a mut [f32], views: &[View]) -> Result<Vec<&'a mut [f32]>> {
        ops::many_mut(g, views)
    }
    /// As on the device: the routing's values are not known while recording, so a Mixture-of-Experts layer runs
    /// every expert over its capacity (the path `GpuStep` takes).
    fn known(&self, _x: &[f32]) -> Option<Vec<f32>> {
        None
    }
    fn loss_value(loss: f32, _scalars: &[f32]) -> f32 {
        loss
    }

    fn moe_route(
        &self,
        probs: &mut [f32],
        choice: &mut [f32],
        slot: &mut [f32],
        weight: &mut [f32],
        stats: &mut [f32],
        logits: &[f32],
        n: usize,
        e: usize,
        k: usize,
        cap: usize,
    ) -> Result<()> {
        let outs = [Some(probs), Some(choice), Some(slot), Some(weight), Some(stats)];
        on_gpu(0.0, [Some(logits)], outs, |s, [l], [p, ch, sl, w, st]| s.moe_route(d(p), d(ch), d(sl), d(w), d(st), d(l), n, e, k, cap)).map(drop)
    }

    fn moe_route_backward(&self, dlogits: &mut [f32], dweight: &[f32], probs: &[f32], r: Routing<&[f32]>, stats: &[f32], e: usize, aux: f32) -> Result<()> {
        let ins = [Some(dweight), Some(probs), Some(r.choice), Some(r.slot), Some(r.weight), Some(stats)];
        on_gpu(0.0, ins, [Some(dlogits)], |s, [dw, p, ch, sl, w, st], [dl]| {
            let r = Routing { choice: d(ch), slot: d(sl), weight: d(w), n: r.n, k: r.k };
            s.moe_route_backward(d(dl), d(dw), d(p), r, d(st), e, aux)
        })
        .map(drop)
    }

    fn moe_gather(&self, xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        on_gpu(0.0, [Some(x), Some(r.choice), Some(r.slot), Some(r.weight)], [Some(xe)], |s, [x, ch, sl, w], [xe]| {
            s.moe_gather(d(xe), d(x), Routing { choice: d(ch), slot: d(sl), weight: d(w), n: r.n, k: r.k }, ex, rows, c)
        })
        .map(drop)
    }

    fn moe_scatter(&self, dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        on_gpu(0.0, [Some(dxe), Some(r.choice), Some(r.slot), Some(r.weight)], [Some(dx)], |s, [dxe, ch, sl, w], [dx]| {
            s.moe_scatter(d(dx), d(dxe), Routing { choice: d(ch), slot: d(sl), weight: d(w), n: r.n, k: r.k }, ex, rows, c)
        })
        .map(drop)
    }

    fn moe_combine(&self, out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        on_gpu(0.0, [Some(ye), Some(r.choice), Some(r.slot), Some(r.weight)], [Some(out)], |s, [ye, ch, sl, w], [out]| {
            s.moe_combine(d(out), d(ye), Routing { choice: d(ch), slot: d(sl), weight: d(w), n: r.n, k: r.k }, ex, rows, c)
        })
        .map(drop)
    }

    fn moe_combine_backward(
        &self,
        dye: &mut [f32],
        dweight: &mut [f32],
        dout: &[f32],
        ye: &[f32],
        r: Routing<&[f32]>,
        ex: usize,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        let ins = [Some(dout), Some(ye), Some(r.choice), Some(r.slot), Some(r.weight)];
        on_gpu(0.0, ins, [Some(dye), Some(dweight)], |s, [dout, ye, ch, sl, w], [dye, dw]| {
            let r = Routing { choice: d(ch), slot: d(sl), weight: d(w), n: r.n, k: r.k };
            s.moe_combine_backward(d(dye), d(dw), d(dout), d(ye), r, ex, rows, c)
        })
        .map(drop)
    }

    fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Result<()> {
        on_gpu(0.0, [Some(inp), Some(w), b], [Some(out)], |s, [inp, w, b], [out]| s.matmul_forward(d(out), d(inp), d(w), b, n, c, oc)).map(drop)
    }

    fn matmul_backward(
        &self,
        dinp: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        on_gpu(0.0, [Some(dout), Some(inp), Some(w)], [dinp, Some(dw), db], |s, [dout, inp, w], [dinp, dw, db]| {
            s.matmul_backward(dinp, d(dw), db, d(dout), d(inp), d(w), n, c, oc)
        })
        .map(drop)
    }

    fn norm_forward(
        &self,
        kind: NormKind,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        eps: f32,
        c: usize,
    ) -> Result<()> {
        on_gpu(0.0, [Some(inp), Some(w), b], [Some(out), Some(mean), Some(rstd)], |s, [inp, w, b], [out, mean, rstd]| {
            s.norm_forward(kind, d(out), d(mean), d(rstd), d(inp), d(w), b, eps, c)
        })
        .map(drop)
    }

    fn norm_backward(
        &self,
        kind: NormKind,
        dinp: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) -> Result<()> {
        let ins = [Some(dout), Some(inp), Some(w), Some(mean), Some(rstd)];
        on_gpu(0.0, ins, [Some(dinp), Some(dw), db], |s, [dout, inp, w, mean, rstd], [dinp, dw, db]| {
            s.norm_backward(kind, d(dinp), d(dw), db, d(dout), d(inp), d(w), d(mean), d(rstd), c)
        })
        .map(drop)
    }

    fn attention_forward(&self, out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: AttnBias, sh: &AttnShape) -> Result<()> {
        on_gpu(0.0, [Some(q), Some(k), Some(v), table_of(&bias)], [Some(out), Some(lse)], |s, [q, k, v, table], [out, lse]| {
            s.attention_forward(d(out), d(lse), d(q), d(k), d(v), device_bias(bias, table), sh)
        })
        .map(drop)
    }

    fn attention_backward(
        &self,
        grads: AttnGrads<&mut [f32]>,
        dtable: Option<&mut [f32]>,
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) -> Result<()> {
        let ins = [Some(dout), Some(q), Some(k), Some(v), Some(out), Some(lse), table_of(&bias)];
        let (first, second) = match grads {
            AttnGrads::Qkv(all) => (all, None),
            AttnGrads::QAndKv { dq, dkv } => (dq, Some(dkv)),
        };
        on_gpu(0.0, ins, [Some(first), second, dtable], |s, [dout, q, k, v, out, lse, table], [g1, g2, dtable]| {
            let grads = match g2 {
                None => AttnGrads::Qkv(d(g1)),
                Some(dkv) => AttnGrads::QAndKv { dq: d(g1), dkv },
            };
            s.attention_backward(grads, dtable, d(dout), d(q), d(k), d(v), d(out), d(lse), device_bias(bias, table), sh)
        })
        .map(drop)
    }

    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) -> Result<()> {
        on_gpu(0.0, [Some(inp)], [Some(out)], |s, [inp], [out]| s.activation_forward(act, d(out), d(inp), f)).map(drop)
    }

    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize) -> Result<()> {
        on_gpu(0.0, [Some(dout), Some(inp), Some(out)], [Some(dinp)], |s, [dout, inp, out], [dinp]| {
            s.activation_backward(act, d(dinp), d(dout), d(inp), d(out), f)
        })
        .map(drop)
    }

    fn matmul_act_forward(
        &self,
        act: Activation,
        pre: &mut [f32],
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        on_gpu(0.0, [Some(inp), Some(w), b], [Some(pre), Some(out)], |s, [inp, w, b], [pre, out]| {
            s.matmul_act_forward(act, d(pre), d(out), d(inp), d(w), b, n, c, oc)
        })
        .map(drop)
    }

    fn matmul_act_backward(
        &self,
        act: Activation,
        dpre: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        pre: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        on_gpu(0.0, [Some(dout), Some(inp), Some(pre), Some(w)], [Some(dpre), Some(dw), db], |s, [dout, inp, pre, w], [dpre, dw, db]| {
            s.matmul_act_backward(act, d(dpre), d(dw), db, d(dout), d(inp), d(pre), d(w), n, c, oc)
        })
        .map(drop)
    }

    fn rope(&self, x: &mut [f32], lay: HeadLayout, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
        on_gpu(0.0, [], [Some(x)], |s, [], [x]| s.rope(d(x), lay, b, h, t, hs, pos0, theta, inverse)).map(drop)
    }

    /// The loss sum lands in the step's scalars buffer; the mean is formed from it as the trainer forms it.
    fn mean_cross_entropy(&self, dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, count: usize) -> Result<f32> {
        let (pending, sum) = on_gpu(f32::NAN, [Some(logits)], [Some(dlogits)], |s, [logits], [dlogits]| {
            s.mean_cross_entropy(d(dlogits), d(logits), targets, v, count)
        })?;
        assert_eq!((pending.slot, pending.count), (0, count), "the first loss of a step goes to its first slot");
        Ok(pending.mean(&[sum]))
    }

    fn embedding_forward(&self, out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) -> Result<()> {
        on_gpu(0.0, [Some(wte), wpe], [Some(out)], |s, [wte, wpe], [out]| s.embedding_forward(d(out), ids, d(wte), wpe, sin, t, pos0, c)).map(drop)
    }

    fn embedding_backward(&self, dwte: &mut [f32], dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) -> Result<()> {
        on_gpu(0.0, [Some(dx)], [Some(dwte), dwpe], |s, [dx], [dwte, dwpe]| s.embedding_backward(d(dwte), dwpe, d(dx), ids, t, c)).map(drop)
    }

    fn add_scaled(&self, out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) -> Result<()> {
        on_gpu(0.0, [Some(a), Some(b)], [Some(out)], |s, [a, b], [out]| s.add_scaled(d(out), d(a), d(b), alpha)).map(drop)
    }

    fn scale(&self, out: &mut [f32], a: &[f32], alpha: f32) -> Result<()> {
        on_gpu(0.0, [Some(a)], [Some(out)], |s, [a], [out]| s.scale(d(out), d(a), alpha)).map(drop)
    }

    fn add_into(&self, a: &mut [f32], b: &[f32]) -> Result<()> {
        on_gpu(0.0, [Some(b)], [Some(a)], |s, [b], [a]| s.add_into(d(a), d(b))).map(drop)
    }

    fn mul_into(&self, a: &mut [f32], m: &[f32]) -> Result<()> {
        on_gpu(0.0, [Some(m)], [Some(a)], |s, [m], [a]| s.mul_into(d(a), d(m))).map(drop)
    }

    fn append_heads(&self, out: &mut [f32], old: &[f32], new: &[f32], new_lay: HeadLayout, h: usize, len: usize, n: usize, hs: usize) -> Result<()> {
        on_gpu(0.0, [Some(old), Some(new)], [Some(out)], |s, [old, new], [out]| s.append_heads(d(out), d(old), d(new), new_lay, h, len, n, hs)).map(drop)
    }

    fn gru_forward(&self, h: &mut [f32], gates: &mut [f32], gi: &[f32], w_hh: &[f32], b_hh: Option<&[f32]>, h0: Option<&[f32]>, b: usize, t: usize, c: usize) -> Result<()> {
        on_gpu(0.0, [Some(gi), Some(w_hh), b_hh, h0], [Some(h), Some(gates)], |s, [gi, w, bh, h0], [h, gates]| {
            s.gru_forward(d(h), d(gates), d(gi), d(w), bh, h0, b, t, c)
        })
        .map(drop)
    }

    fn gru_backward(
        &self,
        dgi: &mut [f32],
        dw_hh: &mut [f32],
        db_hh: Option<&mut [f32]>,
        dh: &[f32],
        gates: &[f32],
        h: &[f32],
        h0: Option<&[f32]>,
        w_hh: &[f32],
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        on_gpu(0.0, [Some(dh), Some(gates), Some(h), h0, Some(w_hh)], [Some(dgi), Some(dw_hh), db_hh], |s, [dh, gates, h, h0, w], [dgi, dw, db]| {
            s.gru_backward(d(dgi), d(dw), db, d(dh), d(gates), d(h), h0, d(w), b, t, c)
        })
        .map(drop)
    }

    fn sums_of_squares(&self, out: &mut [f32], g: &[f32], segments: &[Segment]) -> Result<()> {
        on_gpu(0.0, [Some(g)], [Some(out)], |s, [g], [out]| s.sums_of_squares(d(out), d(g), segments)).map(drop)
    }

    fn clip_grad_norm(&self, g: &mut [f32], sq: &[f32], clip: f32) -> Result<()> {
        on_gpu(0.0, [Some(sq)], [Some(g)], |s, [sq], [g]| s.clip_grad_norm(d(g), d(sq), clip)).map(drop)
    }

    /// The host's mean loss goes into the step's scalars buffer as the sum over one counted row, where the guard
    /// of `GpuStep::adamw` reads it on the device.
    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], segments: &[Segment], sq: &[f32], loss: f32, h: &AdamW) -> Result<()> {
        let pending = PendingLoss { slot: 0, count: 1 };
        on_gpu(loss, [Some(g), Some(sq)], [Some(p), Some(m), Some(v)], |s, [g, sq], [p, m, v]| {
            s.adamw(d(p), d(g), d(m), d(v), segments, d(sq), pending, h)
        })
        .map(drop)
    }
}
