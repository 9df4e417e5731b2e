//! Kernel timings for workload W1 (GPT, B=12, T=64, C=128, 4 heads, FFN 512, vocab 65): median ms and GFLOP/s of
//! each hot op, reference backend vs cpu backend (and, for matmuls, the portable kernel the browser build uses,
//! here compiled for the baseline x86-64 SSE2, 4 lanes like simd128), on the global rayon pool (RAYON_NUM_THREADS).
//!
//!   cargo run --release --example cpu_kernels [-- [--no-reference] [NAME-FILTER]]

use std::time::Instant;
use transformer_playground::backend::cpu::{portable, Cpu};
use transformer_playground::backend::{AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Reference, Segment, View};
use transformer_playground::config::{Activation, NormKind};
use transformer_playground::rng::Rng;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Median wall time of `f` in ms, over enough repetitions to fill ~0.3 s (at least 3).
fn median_ms(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64();
    let reps = ((0.3 / once.max(1e-6)) as usize).clamp(3, 2000);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[reps / 2]
}

/// Whether a benchmark's name passes the command line's filter.
fn selected(name: &str) -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_default();
    name.contains(&filter)
}

/// Times `$body` with `$be` bound to each backend in turn (the reference first, when listed: the others are
/// reported as its multiple) and prints one line: median ms and GFLOP/s per backend.
macro_rules! report {
    ($name:expr, $flops:expr, [$($backend:expr),+], |$be:ident| $body:expr) => {{
        let (name, flops): (String, f64) = ($name.to_string(), $flops);
        if selected(&name) {
            let mut line = format!("{name:<44}");
            let mut times: Vec<(&str, f64)> = Vec::new();
            $(
                if include($backend.name()) {
                    let $be = &$backend;
                    let ms = median_ms(|| {
                        let _ = std::hint::black_box($body);
                    });
                    line += &format!(" | {:>9}: {ms:8.3} ms {:7.1} GFLOP/s", $be.name(), flops / ms / 1e6);
                    times.push(($be.name(), ms));
                }
            )+
            if times[0].0 == "reference" {
                for (be, t) in times.iter().skip(1) {
                    line += &format!(" | {be} ×{:.1}", times[0].1 / t);
                }
            }
            println!("{line}");
        }
    }};
}

/// Whether to time a backend (`--no-reference` leaves the reference out).
fn include(name: &str) -> bool {
    name != "reference" || !std::env::args().any(|a| a == "--no-reference")
}

/// The cpu backend's matmuls on the portable kernel (the browser's), to time that kernel natively.
struct Portable;
impl Portable {
    fn name(&self) -> &'static str {
        "portable"
    }
    fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) {
        portable::matmul_forward(out, inp, w, b, n, c, oc, true)
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
        if let Some(dinp) = dinp {
            portable::matmul_backward_input(dinp, dout, w, n, c, oc, true);
        }
        portable::matmul_backward_weight(dw, dout, inp, n, c, oc, true);
        if let Some(db) = db {
            for row in dout.chunks_exact(oc) {
                db.iter_mut().zip(row).for_each(|(d, x)| *d += x);
            }
        }
    }
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_default();
    println!("rayon threads: {}", rayon::current_num_threads());
    let mut rng = Rng::new(1);
    let n = 12 * 64;

    let mut total_cpu = 0.0;
    for (c, oc, what) in
        [(128, 384, "qkv"), (128, 512, "fc"), (512, 128, "fc proj"), (128, 65, "lm head"), (128, 128, "attn proj")]
    {
        let (x, w, b, dy) =
            (randn(&mut rng, n * c), randn(&mut rng, oc * c), randn(&mut rng, oc), randn(&mut rng, n * oc));
        let (mut y, mut dx, mut dw, mut db) = (vec![0.0; n * oc], vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
        let f = 2.0 * (n * c * oc) as f64;
        report!(format!("matmul fwd {what} ({n}x{c})·({oc}x{c})ᵀ"), f, [Reference, Cpu, Portable], |be| {
            be.matmul_forward(&mut y, &x, &w, Some(&b), n, c, oc)
        });
        report!(format!("matmul bwd {what} (dx, dw, db)"), 2.0 * f, [Reference, Cpu, Portable], |be| {
            be.matmul_backward(Some(&mut dx), &mut dw, Some(&mut db), &dy, &x, &w, n, c, oc)
        });
        if filter.is_empty() {
            total_cpu += median_ms(|| Cpu.matmul_forward(&mut y, &x, &w, Some(&b), n, c, oc).unwrap())
                + median_ms(|| Cpu.matmul_backward(Some(&mut dx), &mut dw, Some(&mut db), &dy, &x, &w, n, c, oc).unwrap());
        }
    }

    // Self-attention as the model runs it: q, k, v read from the qkv rows (N, 3·128), dq, dk, dv added to dqkv.
    let [ql, kl, vl] = [0, 128, 256].map(|off| HeadLayout::rows(64, 384, off, 32));
    let sh = AttnShape { b: 12, t: 64, s: 64, nh: 4, nkv: 4, hs: 32, causal: true, q_offset: 0, scale: 1.0 / 32f32.sqrt(), q: ql, k: kl, v: vl };
    let qkv = randn(&mut rng, n * 384);
    let dout = randn(&mut rng, n * 128);
    let (mut out, mut lse) = (vec![0.0; n * 128], vec![0.0; 12 * 4 * 64]);
    let mut dqkv = vec![0.0; n * 384];
    // Useful flops of causal attention: half the (T,S) scores; forward 2 products, backward 5 (s, dp, dq, dk, dv).
    let pairs = (sh.b * sh.nh * sh.t * (sh.t + 1) / 2 * sh.hs) as f64;
    report!("attention fwd B12 NH4 T64 HS32 causal", 2.0 * 2.0 * pairs, [Reference, Cpu], |be| {
        be.attention_forward(&mut out, &mut lse, &qkv, &qkv, &qkv, AttnBias::None, &sh)
    });
    Cpu.attention_forward(&mut out, &mut lse, &qkv, &qkv, &qkv, AttnBias::None, &sh).unwrap();
    report!("attention bwd", 2.0 * 5.0 * pairs, [Reference, Cpu], |be| {
        be.attention_backward(AttnGrads::Qkv(&mut dqkv), None, &dout, &qkv, &qkv, &qkv, &out, &lse, AttnBias::None, &sh)
    });

    let c = 128;
    let (x, w, b) = (randn(&mut rng, n * c), randn(&mut rng, c), randn(&mut rng, c));
    let (mut y, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    report!("layernorm fwd (768x128)", 8.0 * (n * c) as f64, [Reference, Cpu], |be| {
        be.norm_forward(NormKind::Layernorm, &mut y, &mut mean, &mut rstd, &x, &w, Some(&b), 1e-5, c)
    });
    report!("layernorm bwd", 12.0 * (n * c) as f64, [Reference, Cpu], |be| {
        be.norm_backward(NormKind::Layernorm, &mut dx, &mut dw, Some(&mut db), &y, &x, &w, &mean, &rstd, c)
    });

    let f = 512;
    let (a, dh) = (randn(&mut rng, n * f), randn(&mut rng, n * f));
    let (mut h, mut da) = (vec![0.0; n * f], vec![0.0; n * f]);
    report!("gelu fwd (768x512)", 20.0 * (n * f) as f64, [Reference, Cpu], |be| {
        be.activation_forward(Activation::Gelu, &mut h, &a, f)
    });
    report!("gelu bwd", 30.0 * (n * f) as f64, [Reference, Cpu], |be| {
        be.activation_backward(Activation::Gelu, &mut da, &dh, &a, &h, f)
    });

    let vocab = 65;
    let logits = randn(&mut rng, n * vocab);
    let targets: Vec<i32> = (0..n).map(|i| (i % vocab) as i32).collect();
    let mut dlogits = vec![0.0; n * vocab];
    report!("cross entropy (768x65)", 10.0 * (n * vocab) as f64, [Reference, Cpu], |be| {
        be.mean_cross_entropy(&mut dlogits, &logits, &targets, vocab, n)
    });

    let np = 818_560; // ≈ W1's parameter count
    let (mut p, g, mut m, mut vv) = (randn(&mut rng, np), randn(&mut rng, np), vec![0.0; np], vec![0.0; np]);
    let hp = AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, t: 1 };
    let all = [Segment { view: View { offset: 0, len: np }, decay: true }];
    report!("adamw (818k params)", 12.0 * np as f64, [Reference, Cpu], |be| be.adamw(&mut p, &g, &mut m, &mut vv, &all, &[1.0], 1.0, &hp));
    let mut sums = [0.0f32; 2];
    report!("sum_squares (818k)", 2.0 * np as f64, [Reference, Cpu], |be| be.sums_of_squares(&mut sums, &g, &all));

    if !filter.is_empty() {
        return;
    }
    // A W1 step runs each of qkv, attn proj, fc, fc proj 4 times and the lm head once.
    println!(
        "cpu matmul time per W1 step (fwd+bwd, 4 layers + head) ≈ {:.2} ms (lm head counted 4×: upper bound)",
        4.0 * total_cpu
    );
}
