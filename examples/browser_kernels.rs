//! Kernel timings in the browser, for workload W1 (GPT, B=12, T=64, C=128, 4 heads, FFN 512, vocab 65): the
//! browser's counterpart of `cpu_kernels`. Built for wasm32 by `bench/kernels.sh` (the threaded build's flags, so
//! one page can time each op on 1 and on N threads) and run in headless Chromium by `bench/kernels.mjs`. Exports:
//!
//! - `Kernels::run(op, reps)`: one hot op of the step at W1's shapes on the cpu backend, `reps` times, on rayon's
//!   pool (`OPS` lists them, with their FLOPs and calls per step);
//! - `peakFma(iters)`: ten independent chains of `f32x4.relaxed_madd`, the most multiply-adds V8 issues per
//!   second on this CPU (the ceiling of any simd128 kernel);
//! - `StepProfile`: W1 training steps with every backend op timed (`performance.now`) inside the real step — the
//!   model's glue (zeroing, residual adds) and the optimizer's ops (Σg², clipping, AdamW) are
//!   ops of the trait too — so each op's share, and what is left outside them, show.
//!
//! Natively this example compiles to nothing.

#[cfg(target_arch = "wasm32")]
mod browser {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use transformer_playground::backend::cpu::{portable, Cpu};
    use transformer_playground::backend::{AdamW, AttnBias, AttnGrads, AttnShape, Backend, BackendKind, HeadLayout, Segment, View};
    use transformer_playground::config::{Activation, NormKind};
    use transformer_playground::data::Split;
    use transformer_playground::rng::Rng;
    use transformer_playground::train::{train_step, Run};
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = performance)]
        fn now() -> f64;
    }

    const N: usize = 12 * 64; // B·T rows
    const C: usize = 128;
    const F: usize = 512;
    const V: usize = 65;

    /// (op, multiply-adds ×2 per call or 0, calls per W1 step)
    const OPS: &[(&str, usize, usize)] = &[
        ("matmul_fwd qkv 128→384", 2 * N * C * 384, 4),
        ("matmul_fwd proj 128→128", 2 * N * C * C, 4),
        // fc's forward and fc_proj's backward run fused with GELU in the step (the matmul_act_* rows); the plain
        // ops stay listed, at 0 calls, to compare with.
        ("matmul_fwd fc 128→512", 2 * N * C * F, 0),
        ("matmul_act_fwd fc 128→512 gelu", 2 * N * C * F, 4),
        ("matmul_fwd fc_proj 512→128", 2 * N * C * F, 4),
        ("matmul_fwd head 128→65", 2 * N * C * V, 1),
        ("matmul_bwd qkv 128→384", 4 * N * C * 384, 4),
        ("matmul_bwd proj 128→128", 4 * N * C * C, 4),
        ("matmul_bwd fc 128→512", 4 * N * C * F, 4),
        ("matmul_bwd fc_proj 512→128", 4 * N * C * F, 0),
        ("matmul_act_bwd fc_proj 512→128 gelu", 4 * N * C * F, 4),
        ("matmul_bwd head 128→65", 4 * N * C * V, 1),
        // The two products of matmul_bwd on their own (counted there, so 0 calls per step here).
        ("matmul_dx qkv 128→384", 2 * N * C * 384, 0),
        ("matmul_dw qkv 128→384", 2 * N * C * 384, 0),
        ("matmul_dx fc 128→512", 2 * N * C * F, 0),
        ("matmul_dw fc 128→512", 2 * N * C * F, 0),
        ("matmul_dx fc_proj 512→128", 2 * N * C * F, 0),
        ("matmul_dw fc_proj 512→128", 2 * N * C * F, 0),
        ("attention_fwd", 0, 4),
        ("attention_bwd", 0, 4),
        ("layernorm_fwd", 0, 9),
        ("layernorm_bwd", 0, 9),
        ("gelu_fwd", 0, 0),
        ("gelu_bwd", 0, 0),
        ("cross_entropy", 0, 1),
        ("adamw (0.79M values, ≈ all of W1)", 0, 1),
    ];

    /// The ops' names, FLOPs per call and calls per step, as JSON `[[name, flops, calls], …]`.
    #[wasm_bindgen(js_name = kernelOps)]
    pub fn kernel_ops() -> String {
        serde_json::to_string(OPS).expect("plain data")
    }

    /// Threads in rayon's pool.
    #[wasm_bindgen]
    pub fn threads() -> usize {
        rayon::current_num_threads()
    }

    fn data(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.normal() as f32 * scale).collect()
    }

    /// Inputs and outputs for every op, allocated once.
    #[wasm_bindgen]
    pub struct Kernels {
        bufs: Vec<Vec<f32>>,
        targets: Vec<i32>,
    }

    #[wasm_bindgen]
    impl Kernels {
        #[wasm_bindgen(constructor)]
        pub fn new() -> Kernels {
            let bufs = (0..8).map(|i| data(N * 2 * F, 0.5, 1 + i)).collect();
            Kernels { bufs, targets: (0..N as i32).map(|i| i % V as i32).collect() }
        }

        /// Runs `op` (a name from `kernelOps`) `reps` times on rayon's pool.
        pub fn run(&mut self, op: &str, reps: usize) -> Result<(), JsError> {
            rayon::scope(|_| (0..reps).try_for_each(|_| self.run_once(op))).map_err(|e| JsError::new(&e))
        }

        fn run_once(&mut self, op: &str) -> Result<(), String> {
            self.op(op).map_err(|e| e.to_string())
        }

        fn op(&mut self, op: &str) -> transformer_playground::Result<()> {
            let cpu = Cpu;
            let [o, a, b, d, e, f, g, h] = &mut self.bufs[..] else { unreachable!("eight buffers") };
            let linear = |name: &str| -> (usize, usize) {
                match name.rsplit(' ').next() {
                    Some("128→384") => (C, 3 * C),
                    Some("128→128") => (C, C),
                    Some("128→512") => (C, F),
                    Some("512→128") => (F, C),
                    _ => (C, V),
                }
            };
            // Self-attention as the model runs it: q, k, v read from the qkv rows (N, 3C), dq, dk, dv added to dqkv.
            let [ql, kl, vl] = [0, C, 2 * C].map(|off| HeadLayout::rows(64, 3 * C, off, 32));
            let sh = AttnShape { b: 12, t: 64, s: 64, nh: 4, nkv: 4, hs: 32, causal: true, q_offset: 0, scale: 0.176_776_7, q: ql, k: kl, v: vl };
            let m = N * C;
            match op {
                "matmul_act_fwd fc 128→512 gelu" => {
                    let (pre, act) = o.split_at_mut(N * F);
                    cpu.matmul_act_forward(Activation::Gelu, pre, &mut act[..N * F], &a[..N * C], &b[..F * C], Some(&d[..F]), N, C, F)
                }
                "matmul_act_bwd fc_proj 512→128 gelu" => {
                    let (dw, db) = (&mut e[..C * F], Some(&mut f[..C]));
                    cpu.matmul_act_backward(Activation::Gelu, &mut o[..N * F], dw, db, &a[..N * C], &b[..N * F], &g[..N * F], &d[..C * F], N, F, C)
                }
                _ if op.starts_with("matmul_fwd") => {
                    let (c, oc) = linear(op);
                    cpu.matmul_forward(o, a, b, Some(&d[..oc]), N, c, oc)
                }
                _ if op.starts_with("matmul_bwd") => {
                    let (c, oc) = linear(op);
                    let bias = (oc != V).then_some(&mut f[..oc]);
                    cpu.matmul_backward(Some(&mut o[..]), &mut e[..oc * c], bias, &a[..N * oc], &b[..N * c], &d[..oc * c], N, c, oc)
                }
                _ if op.starts_with("matmul_dx") => {
                    let (c, oc) = linear(op);
                    portable::matmul_backward_input(&mut o[..N * c], &a[..N * oc], &d[..oc * c], N, c, oc, true);
                    Ok(())
                }
                _ if op.starts_with("matmul_dw") => {
                    let (c, oc) = linear(op);
                    portable::matmul_backward_weight(&mut e[..oc * c], &a[..N * oc], &b[..N * c], N, c, oc, true);
                    Ok(())
                }
                "attention_fwd" => {
                    let qkv = &a[..3 * m];
                    cpu.attention_forward(&mut o[..m], &mut h[..12 * 4 * 64], qkv, qkv, qkv, AttnBias::None, &sh)
                }
                "attention_bwd" => {
                    let (qkv, lse) = (&a[..3 * m], &g[..12 * 4 * 64]);
                    let dqkv = AttnGrads::Qkv(&mut e[..3 * m]);
                    cpu.attention_backward(dqkv, None, &f[..m], qkv, qkv, qkv, &o[..m], lse, AttnBias::None, &sh)
                }
                "layernorm_fwd" => {
                    let (mean, rstd) = h.split_at_mut(N);
                    cpu.norm_forward(NormKind::Layernorm, &mut o[..m], mean, &mut rstd[..N], &a[..m], &b[..C], Some(&d[..C]), 1e-5, C)
                }
                "layernorm_bwd" => {
                    let (mean, rstd) = (&g[..N], &h[..N]);
                    cpu.norm_backward(NormKind::Layernorm, &mut o[..m], &mut e[..C], Some(&mut f[..C]), &a[..m], &b[..m], &d[..C], mean, rstd, C)
                }
                "gelu_fwd" => cpu.activation_forward(Activation::Gelu, &mut o[..N * F], &a[..N * F], F),
                "gelu_bwd" => cpu.activation_backward(Activation::Gelu, &mut o[..N * F], &a[..N * F], &b[..N * F], &d[..N * F], F),
                "cross_entropy" => cpu.mean_cross_entropy(&mut o[..N * V], &a[..N * V], &self.targets, V, N).map(drop),
                "adamw (0.79M values, ≈ all of W1)" => {
                    let hp = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, t: 5 };
                    let p = N * 2 * F;
                    let all = [Segment { view: View { offset: 0, len: p }, decay: true }];
                    cpu.adamw(&mut o[..p], &a[..p], &mut e[..p], &mut f[..p], &all, &[1.0], 1.0, &hp)
                }
                _ => Err(transformer_playground::Error::Invalid(format!("unknown op '{op}'"))),
            }
        }
    }

    impl Default for Kernels {
        fn default() -> Self {
            Kernels::new()
        }
    }

    /// Ten independent chains of `iters` multiply-adds on four lanes (80 FLOPs per iteration): the most V8
    /// issues per second here. The chains are as many as x86's two FMA ports × four cycles of latency need.
    #[wasm_bindgen(js_name = peakFma)]
    pub fn peak_fma(iters: usize) -> f32 {
        use core::arch::wasm32::*;
        let b = f32x4_splat(std::hint::black_box(0.999_999_9f32));
        let c = f32x4_splat(std::hint::black_box(1e-7f32));
        let mut acc = [f32x4_splat(std::hint::black_box(1.0f32)); 10];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = f32x4_relaxed_madd(*x, b, c);
            }
        }
        acc.iter().map(|x| f32x4_extract_lane::<0>(*x)).sum()
    }

    /// Per-op time inside the step: (ms, calls) by op.
    static TIMES: Mutex<BTreeMap<String, (f64, usize)>> = Mutex::new(BTreeMap::new());

    fn timed<R>(name: String, f: impl FnOnce() -> R) -> R {
        let t0 = now();
        let r = f();
        let dt = now() - t0;
        let mut t = TIMES.lock().unwrap_or_else(|e| e.into_inner());
        let e = t.entry(name).or_insert((0.0, 0));
        e.0 += dt;
        e.1 += 1;
        r
    }

    /// The cpu backend with every op timed, its buffers included (allocation and zeroing).
    mod timed_backend {
        use super::timed;
        use transformer_playground::backend::cpu::Cpu;
        use transformer_playground::backend::{AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Routing, Segment, View};
        use transformer_playground::config::{Activation, NormKind};
        use transformer_playground::Result;

        pub struct Timed;

        impl Backend for Timed {
            type Buf = Vec<f32>;
            type In<'a> = &'a [f32];
            type Out<'a> = &'a mut [f32];
            type Params = [f32];
            type Loss = f32;
            type Read = Vec<f32>;

            fn name(&self) -> &'static str {
                "cpu (timed)"
            }
            fn zeros(&self, n: usize) -> Result<Vec<f32>> {
                timed("zeros (allocation)".into(), || Cpu.zeros(n))
            }
            fn output(&self, n: usize) -> Result<Vec<f32>> {
                timed("output (a spare buffer, else zeros)".into(), || Cpu.output(n))
            }
            fn recycle(&self, bufs: Vec<Vec<f32>>) {
                timed("recycle (the spare buffers kept)".into(), || Cpu.recycle(bufs))
            }
            fn upload(&self, data: Vec<f32>) -> Result<Vec<f32>> {
                Cpu.upload(data)
            }
            fn copy_of(&self, x: &[f32]) -> Result<Vec<f32>> {
                timed("copy_of".into(), || Cpu.copy_of(x))
            }
            fn zero(&self, x: &mut [f32]) -> Result<()> {
                timed("zero".into(), || Cpu.zero(x))
            }
            fn read(&self, x: &[f32]) -> Result<Vec<f32>> {
                Cpu.read(x)
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
                <Cpu as Backend>::param(p, v)
            }
            fn grad(g: &mut [f32], v: View) -> Result<&mut [f32]> {
                <Cpu as Backend>::grad(g, v)
            }
            fn grad_pair(g: &mut [f32], a: View, b: Option<View>) -> Result<(&mut [f32], Option<&mut [f32]>)> {
                <Cpu as Backend>::grad_pair(g, a, b)
            }
            fn grad_many<'a>(g: &'a mut [f32], views: &[View]) -> Result<Vec<&'a mut [f32]>> {
                <Cpu as Backend>::grad_many(g, views)
            }
            fn known(&self, x: &[f32]) -> Option<Vec<f32>> {
                Cpu.known(x)
            }
            fn loss_value(loss: f32, scalars: &[f32]) -> f32 {
                <Cpu as Backend>::loss_value(loss, scalars)
            }
            fn moe_route(&self, probs: &mut [f32], choice: &mut [f32], slot: &mut [f32], weight: &mut [f32], stats: &mut [f32], logits: &[f32], n: usize, e: usize, k: usize, cap: usize) -> Result<()> {
                timed("moe_route".into(), || Cpu.moe_route(probs, choice, slot, weight, stats, logits, n, e, k, cap))
            }
            fn moe_route_backward(&self, dlogits: &mut [f32], dweight: &[f32], probs: &[f32], r: Routing<&[f32]>, stats: &[f32], e: usize, aux: f32) -> Result<()> {
                timed("moe_route_bwd".into(), || Cpu.moe_route_backward(dlogits, dweight, probs, r, stats, e, aux))
            }
            fn moe_gather(&self, xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
                timed("moe_gather".into(), || Cpu.moe_gather(xe, x, r, ex, rows, c))
            }
            fn moe_scatter(&self, dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
                timed("moe_scatter".into(), || Cpu.moe_scatter(dx, dxe, r, ex, rows, c))
            }
            fn moe_combine(&self, out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
                timed("moe_combine".into(), || Cpu.moe_combine(out, ye, r, ex, rows, c))
            }
            fn moe_combine_backward(&self, dye: &mut [f32], dweight: &mut [f32], dout: &[f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
                timed("moe_combine_bwd".into(), || Cpu.moe_combine_backward(dye, dweight, dout, ye, r, ex, rows, c))
            }
            fn gru_forward(&self, h: &mut [f32], gates: &mut [f32], gi: &[f32], w_hh: &[f32], b_hh: Option<&[f32]>, h0: Option<&[f32]>, b: usize, t: usize, c: usize) -> Result<()> {
                timed("gru_fwd".into(), || Cpu.gru_forward(h, gates, gi, w_hh, b_hh, h0, b, t, c))
            }
            fn gru_backward(&self, dgi: &mut [f32], dw_hh: &mut [f32], db_hh: Option<&mut [f32]>, dh: &[f32], gates: &[f32], h: &[f32], h0: Option<&[f32]>, w_hh: &[f32], b: usize, t: usize, c: usize) -> Result<()> {
                timed("gru_bwd".into(), || Cpu.gru_backward(dgi, dw_hh, db_hh, dh, gates, h, h0, w_hh, b, t, c))
            }
            fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Result<()> {
                timed(format!("matmul_fwd {c}→{oc}"), || Cpu.matmul_forward(out, inp, w, b, n, c, oc))
            }
            fn matmul_backward(&self, dinp: Option<&mut [f32]>, dw: &mut [f32], db: Option<&mut [f32]>, dout: &[f32], inp: &[f32], w: &[f32], n: usize, c: usize, oc: usize) -> Result<()> {
                timed(format!("matmul_bwd {c}→{oc}"), || Cpu.matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc))
            }
            fn norm_forward(&self, kind: NormKind, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, c: usize) -> Result<()> {
                timed("norm_fwd".into(), || Cpu.norm_forward(kind, out, mean, rstd, inp, w, b, eps, c))
            }
            fn norm_backward(&self, kind: NormKind, dinp: &mut [f32], dw: &mut [f32], db: Option<&mut [f32]>, dout: &[f32], inp: &[f32], w: &[f32], mean: &[f32], rstd: &[f32], c: usize) -> Result<()> {
                timed("norm_bwd".into(), || Cpu.norm_backward(kind, dinp, dw, db, dout, inp, w, mean, rstd, c))
            }
            fn attention_forward(&self, out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: AttnBias, sh: &AttnShape) -> Result<()> {
                timed("attention_fwd".into(), || Cpu.attention_forward(out, lse, q, k, v, bias, sh))
            }
            fn attention_backward(&self, grads: AttnGrads<&mut [f32]>, dtable: Option<&mut [f32]>, dout: &[f32], q: &[f32], k: &[f32], v: &[f32], out: &[f32], lse: &[f32], bias: AttnBias, sh: &AttnShape) -> Result<()> {
                timed("attention_bwd".into(), || Cpu.attention_backward(grads, dtable, dout, q, k, v, out, lse, bias, sh))
            }
            fn matmul_act_forward(&self, act: Activation, pre: &mut [f32], out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Result<()> {
                timed(format!("matmul_act_fwd {c}→{oc}"), || Cpu.matmul_act_forward(act, pre, out, inp, w, b, n, c, oc))
            }
            fn matmul_act_backward(&self, act: Activation, dpre: &mut [f32], dw: &mut [f32], db: Option<&mut [f32]>, dout: &[f32], inp: &[f32], pre: &[f32], w: &[f32], n: usize, c: usize, oc: usize) -> Result<()> {
                timed(format!("matmul_act_bwd {c}→{oc}"), || Cpu.matmul_act_backward(act, dpre, dw, db, dout, inp, pre, w, n, c, oc))
            }
            fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) -> Result<()> {
                timed("activation_fwd".into(), || Cpu.activation_forward(act, out, inp, f))
            }
            fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], out: &[f32], f: usize) -> Result<()> {
                timed("activation_bwd".into(), || Cpu.activation_backward(act, dinp, dout, inp, out, f))
            }
            fn rope(&self, x: &mut [f32], lay: HeadLayout, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
                timed("rope".into(), || Cpu.rope(x, lay, b, h, t, hs, pos0, theta, inverse))
            }
            fn mean_cross_entropy(&self, dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, count: usize) -> Result<f32> {
                timed("cross_entropy".into(), || Cpu.mean_cross_entropy(dlogits, logits, targets, v, count))
            }
            fn embedding_forward(&self, out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) -> Result<()> {
                timed("embedding_fwd".into(), || Cpu.embedding_forward(out, ids, wte, wpe, sin, t, pos0, c))
            }
            fn embedding_backward(&self, dwte: &mut [f32], dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) -> Result<()> {
                timed("embedding_bwd".into(), || Cpu.embedding_backward(dwte, dwpe, dx, ids, t, c))
            }
            fn add_scaled(&self, out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) -> Result<()> {
                timed("residual add".into(), || Cpu.add_scaled(out, a, b, alpha))
            }
            fn scale(&self, out: &mut [f32], a: &[f32], alpha: f32) -> Result<()> {
                timed("scale".into(), || Cpu.scale(out, a, alpha))
            }
            fn add_into(&self, a: &mut [f32], b: &[f32]) -> Result<()> {
                timed("add_into".into(), || Cpu.add_into(a, b))
            }
            fn mul_into(&self, a: &mut [f32], m: &[f32]) -> Result<()> {
                timed("dropout mask".into(), || Cpu.mul_into(a, m))
            }
            fn append_heads(&self, out: &mut [f32], old: &[f32], new: &[f32], new_lay: HeadLayout, h: usize, len: usize, n: usize, hs: usize) -> Result<()> {
                timed("append_heads".into(), || Cpu.append_heads(out, old, new, new_lay, h, len, n, hs))
            }
            fn sums_of_squares(&self, out: &mut [f32], g: &[f32], segments: &[Segment]) -> Result<()> {
                timed("sums_of_squares".into(), || Cpu.sums_of_squares(out, g, segments))
            }
            fn clip_grad_norm(&self, g: &mut [f32], sq: &[f32], clip: f32) -> Result<()> {
                timed("clip_grad_norm".into(), || Cpu.clip_grad_norm(g, sq, clip))
            }
            fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], segments: &[Segment], sq: &[f32], loss: f32, h: &AdamW) -> Result<()> {
                timed("adamw".into(), || Cpu.adamw(p, g, m, v, segments, sq, loss, h))
            }
        }
    }
    use timed_backend::Timed;

    /// A training run whose steps are timed op by op.
    #[wasm_bindgen]
    pub struct StepProfile {
        run: Run,
        rng: Rng,
    }

    #[wasm_bindgen]
    impl StepProfile {
        /// `config`: a Config as JSON; `text`: the corpus.
        #[wasm_bindgen(constructor)]
        pub fn new(config: &str, text: &str) -> Result<StepProfile, JsError> {
            let cfg = transformer_playground::Config::from_json(config).map_err(|e| JsError::new(&e.to_string()))?;
            let run = Run::new(cfg, Some(text), BackendKind::Cpu).map_err(|e| JsError::new(&e.to_string()))?;
            Ok(StepProfile { run, rng: Rng::new(5) })
        }

        /// `steps` training steps on one batch: JSON `{"step_ms", "ops": {op: [ms per step, calls per step]}}`.
        pub fn profile(&mut self, steps: usize) -> Result<String, JsError> {
            let (b, t) = (self.run.cfg.train.batch_size, self.run.cfg.model.ctx_len);
            let batch = self.run.data.batch(Split::Train, b, t, &mut self.rng);
            TIMES.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let (model, opt, tc) = (&mut self.run.model, &mut self.run.opt, &self.run.cfg.train);
            let t0 = now();
            rayon::scope(|_| (0..steps).try_for_each(|s| train_step(&Timed, model, opt, tc, &batch, s, None).map(drop)))
                .map_err(|e| JsError::new(&e.to_string()))?;
            let per = steps.max(1) as f64;
            let step_ms = (now() - t0) / per;
            let times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
            let ops: serde_json::Map<_, _> =
                times.iter().map(|(k, (ms, n))| (k.clone(), serde_json::json!([ms / per, *n as f64 / per]))).collect();
            Ok(serde_json::json!({ "step_ms": step_ms, "ops": ops }).to_string())
        }
    }
}
