//! The test harness of the gpu backend: the shared device (failing, not skipping, without an adapter) and
//! `OnGpu`, an adapter of the `Backend` trait over the gpu kernels that uploads its slices, records and submits the
//! kernel, and reads the results back. The kernels' own API keeps everything on the device; this exists so that the
//! reference backend and the model code can drive them unchanged in tests. It panics on any GPU error.
//! Also the tiny config and seeded batches the training tests share (`config`, `lab_batch`), and `new_gpu` for
//! tests whose training engine owns its device.

#![allow(dead_code)] // each test file uses part of it

use std::sync::OnceLock;
use transformer_playground::backend::gpu::{Element, Encoder, Gpu, GpuAttnBias, GpuBuffer};
use transformer_playground::backend::{AdamW, AttnBias, AttnShape, Backend};
use transformer_playground::config::{Activation, Config, NormKind};
use transformer_playground::model::Batch;
use transformer_playground::rng::Rng;

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(new_gpu)
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

/// The tiny config of the gpu tests (C = 36, 6 heads sharing 2 kv heads, 2 layers), with `patch` over its model.
#[allow(dead_code)]
pub fn config(arch: &str, patch: serde_json::Value) -> Config {
    let layers = if arch == "encoder_decoder" { r#""n_encoder_layers": 2, "n_decoder_layers": 2,"# } else { "" };
    let data = if arch == "encoder_decoder" { r#""data": {"task": "reverse", "digits": 4},"# } else { "" };
    let json = format!(
        r#"{{ "model": {{ "arch": "{arch}", "d_model": 36, "n_layers": 2, {layers} "n_heads": 6, "n_kv_heads": 2, "ctx_len": 16,
             "ffn": {{ "activation": "gelu", "mult": 2 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
             "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
             "train": {{ "batch_size": 2, "steps": 100, "lr": 0.01, "warmup": 0, "schedule": "constant", "weight_decay": 0.1, "grad_clip": 1.0, "eval_iters": 2 }},
             {data} "seed": 1 }}"#
    );
    let c = Config::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    let mut v = serde_json::to_value(&c).unwrap();
    for (k, x) in patch.as_object().unwrap() {
        v["model"][k] = x.clone();
    }
    let c: Config = serde_json::from_value(v).unwrap();
    c.validate().unwrap();
    c
}

/// A seeded batch of random ids (B,T) (and a source (B,S) for the encoder-decoder); bert: masked-LM targets.
#[allow(dead_code)]
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

/// The `Backend` trait over the gpu kernels: every call uploads, runs and reads back.
pub struct OnGpu;

pub fn up<T: Element>(x: &[T]) -> GpuBuffer<T> {
    gpu().upload(x).expect("upload")
}

pub fn zeros(n: usize) -> GpuBuffer<f32> {
    gpu().zeros(n).expect("allocate")
}

pub fn run(f: impl FnOnce(&mut Encoder) -> transformer_playground::Result<()>) {
    let mut e = gpu().encoder();
    f(&mut e).expect("record");
    gpu().submit(e).expect("submit");
}

pub fn down(b: &GpuBuffer<f32>, dst: &mut [f32]) {
    dst.copy_from_slice(&gpu().read_blocking(b.all()).expect("read back"));
}

/// Device copies of an `AttnBias`'s buffers.
enum BiasBufs {
    None,
    Alibi(GpuBuffer<f32>),
    Relative(GpuBuffer<f32>, GpuBuffer<u32>),
}

impl BiasBufs {
    fn new(b: &AttnBias) -> BiasBufs {
        match *b {
            AttnBias::None => BiasBufs::None,
            AttnBias::Alibi { slopes } => BiasBufs::Alibi(up(slopes)),
            AttnBias::Relative { table, bucket } => BiasBufs::Relative(up(table), up(bucket)),
        }
    }
    fn get(&self) -> GpuAttnBias<'_> {
        match self {
            BiasBufs::None => GpuAttnBias::None,
            BiasBufs::Alibi(s) => GpuAttnBias::Alibi { slopes: s.all() },
            BiasBufs::Relative(t, b) => GpuAttnBias::Relative { table: t.all(), bucket: b.all() },
        }
    }
}

impl Backend for OnGpu {
    fn name(&self) -> &'static str {
        "gpu (upload, run, read back)"
    }

    fn matmul_forward(
        &self,
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        let (o, x, wb, bb) = (zeros(out.len()), up(inp), up(w), b.map(up));
        run(|e| gpu().matmul_forward(e, o.all(), x.all(), wb.all(), bb.as_ref().map(|b| b.all()), n, c, oc));
        down(&o, out);
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
    ) {
        let (di, dwb, dbb) = (dinp.as_deref().map(up), up(dw), db.as_deref().map(up));
        let (d, x, wb) = (up(dout), up(inp), up(w));
        run(|e| {
            gpu().matmul_backward(
                e,
                di.as_ref().map(|b| b.all()),
                dwb.all(),
                dbb.as_ref().map(|b| b.all()),
                d.all(),
                x.all(),
                wb.all(),
                n,
                c,
                oc,
            )
        });
        if let (Some(dst), Some(b)) = (dinp, &di) {
            down(b, dst);
        }
        down(&dwb, dw);
        if let (Some(dst), Some(b)) = (db, &dbb) {
            down(b, dst);
        }
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
    ) {
        let (o, m, r) = (zeros(out.len()), zeros(mean.len()), zeros(rstd.len()));
        let (x, wb, bb) = (up(inp), up(w), b.map(up));
        run(|e| {
            gpu().norm_forward(
                e,
                kind,
                o.all(),
                m.all(),
                r.all(),
                x.all(),
                wb.all(),
                bb.as_ref().map(|b| b.all()),
                eps,
                c,
            )
        });
        down(&o, out);
        down(&m, mean);
        down(&r, rstd);
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
    ) {
        let (di, dwb, dbb) = (up(dinp), up(dw), db.as_deref().map(up));
        let (d, x, wb, m, r) = (up(dout), up(inp), up(w), up(mean), up(rstd));
        run(|e| {
            gpu().norm_backward(
                e,
                kind,
                di.all(),
                dwb.all(),
                dbb.as_ref().map(|b| b.all()),
                d.all(),
                x.all(),
                wb.all(),
                m.all(),
                r.all(),
                c,
            )
        });
        down(&di, dinp);
        down(&dwb, dw);
        if let (Some(dst), Some(b)) = (db, &dbb) {
            down(b, dst);
        }
    }

    fn attention_forward(
        &self,
        out: &mut [f32],
        lse: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) {
        let (o, l, qb, kb, vb, bb) = (zeros(out.len()), zeros(lse.len()), up(q), up(k), up(v), BiasBufs::new(&bias));
        run(|e| gpu().attention_forward(e, o.all(), l.all(), qb.all(), kb.all(), vb.all(), bb.get(), sh));
        down(&o, out);
        down(&l, lse);
    }

    fn attention_backward(
        &self,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        dtable: Option<&mut [f32]>,
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) {
        let (dqb, dkb, dvb, dtb) = (up(dq), up(dk), up(dv), dtable.as_deref().map(up));
        let (d, qb, kb, vb, ob, lb, bb) = (up(dout), up(q), up(k), up(v), up(out), up(lse), BiasBufs::new(&bias));
        run(|e| {
            let dt = dtb.as_ref().map(|b| b.all());
            gpu().attention_backward(
                e,
                dqb.all(),
                dkb.all(),
                dvb.all(),
                dt,
                d.all(),
                qb.all(),
                kb.all(),
                vb.all(),
                ob.all(),
                lb.all(),
                bb.get(),
                sh,
            )
        });
        down(&dqb, dq);
        down(&dkb, dk);
        down(&dvb, dv);
        if let (Some(dst), Some(b)) = (dtable, &dtb) {
            down(b, dst);
        }
    }

    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) {
        let (o, x) = (zeros(out.len()), up(inp));
        run(|e| gpu().activation_forward(e, act, o.all(), x.all(), f));
        down(&o, out);
    }

    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], _out: &[f32], f: usize) {
        let (di, d, x) = (up(dinp), up(dout), up(inp));
        run(|e| gpu().activation_backward(e, act, di.all(), d.all(), x.all(), f));
        down(&di, dinp);
    }

    fn cross_entropy(
        &self,
        dlogits: &mut [f32],
        logits: &[f32],
        targets: &[i32],
        v: usize,
        dscale: f32,
    ) -> (f64, usize) {
        let (dl, losses, l, t) = (zeros(dlogits.len()), zeros(targets.len()), up(logits), up(targets));
        let total = zeros(1);
        run(|e| {
            gpu().cross_entropy(e, dl.all(), losses.all(), l.all(), t.all(), v, dscale)?;
            gpu().sum(e, total.all(), 0, losses.all())
        });
        down(&dl, dlogits);
        let mut sum = [0.0f32];
        down(&total, &mut sum);
        (sum[0] as f64, targets.iter().filter(|&&t| t >= 0).count())
    }

    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamW, decay: bool) {
        let (pb, gb, mb, vb) = (up(p), up(g), up(m), up(v));
        run(|e| gpu().adamw(e, pb.all(), gb.all(), mb.all(), vb.all(), h, decay));
        down(&pb, p);
        down(&mb, m);
        down(&vb, v);
    }

    fn rope(&self, x: &mut [f32], t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) {
        let xb = up(x);
        run(|e| gpu().rope(e, xb.all(), t, hs, pos0, theta, inverse));
        down(&xb, x);
    }

    fn sum_squares(&self, g: &[f32]) -> f64 {
        let (gb, out) = (up(g), zeros(1));
        run(|e| gpu().sum_squares(e, out.all(), 0, gb.all()));
        let mut s = [0.0f32];
        down(&out, &mut s);
        s[0] as f64
    }
}
