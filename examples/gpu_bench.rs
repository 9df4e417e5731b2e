//! Timings of the WebGPU backend's kernels on the adapter wgpu picks natively: matmul GFLOP/s (forward, and the
//! backward's dinp + dw) at square sizes; the kernels whose workgroups reduce (LayerNorm, cross-entropy, Σx²) on
//! the tree in workgroup memory and on subgroup operations where the adapter has them; attention forward and
//! forward + backward for T = 64 … 1024, fused (FlashAttention-2, `attention.rs`) against naive (the (B,NH,T,T)
//! matrices materialised, `attention_naive.rs`), with the memory each allocates beyond q, k, v, out and the
//! gradients; then whole training steps (`train::Run`, gpt, 4 layers, HS = 64) on the gpu and on the cpu backend for
//! d_model = 64 … 512: ms/step and the cpu/gpu ratio.
//! Times are wall-clock from submit to completion (median of repeats), so they include the submission overhead.
//!
//!   cargo run --release --features gpu --example gpu_bench [-- --quick] [--attention-only] [--lens 64,128,256]
//!                                                           [--train-only] [--dmodels 64,128,256,512]
//!                                                           [--peak-gflops 66900]
//!
//! `--quick` uses small sizes (for lavapipe or SwiftShader, which are CPU emulations: record their figures, do not
//! tune to them). `--attention-only` prints only the attention table; `--lens` sets its sequence lengths.
//! `--train-only` prints only the training-step table; `--dmodels` sets its widths (with `--quick`: B = 4, T = 64).
//! `--peak-gflops` is the adapter's fp32 peak from its data sheet: the matmul figures are then also printed as a %
//! of it (`bench/gpu_device.sh` runs the whole benchmark on a machine with a GPU).

#[cfg(not(feature = "gpu"))]
fn main() {
    eprintln!("gpu_bench needs the gpu feature: cargo run --release --features gpu --example gpu_bench");
    std::process::exit(2);
}

#[cfg(feature = "gpu")]
fn main() {
    if let Err(e) = bench::run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "gpu")]
mod bench {
    use std::time::Instant;
    use transformer_playground::backend::gpu::{Encoder, Gpu, MatmulTile};
    use transformer_playground::backend::{AttnBias, AttnGrads, AttnShape, HeadLayout};
    use transformer_playground::backend::BackendKind;
    use transformer_playground::config::NormKind;
    use transformer_playground::rng::Rng;
    use transformer_playground::train::Run;
    use transformer_playground::{Config, Result};

    fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// Median ms of recording, submitting and completing `f`, over enough repeats to fill ~0.5 s (3 ..= 50).
    fn median_ms(g: &Gpu, mut f: impl FnMut(&mut Encoder) -> Result<()>) -> Result<f64> {
        let mut once = || -> Result<f64> {
            let t = Instant::now();
            let mut e = g.encoder();
            f(&mut e)?;
            g.submit(e)?;
            g.wait()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        once()?; // warm-up: compiles the pipelines
        let first = once()?;
        let reps = ((500.0 / first.max(1e-3)) as usize).clamp(3, 50);
        let mut times = (0..reps).map(|_| once()).collect::<Result<Vec<f64>>>()?;
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(times[reps / 2])
    }

    pub fn run() -> Result<()> {
        let quick = std::env::args().any(|a| a == "--quick");
        let attention_only = std::env::args().any(|a| a == "--attention-only");
        if std::env::args().any(|a| a == "--train-only") {
            return train_steps(quick);
        }
        let g = Gpu::new_blocking()?;
        let info = &g.ctx.info;
        let subgroups = if g.ctx.subgroups {
            format!("subgroups of {}..={} invocations", info.subgroup_min_size, info.subgroup_max_size)
        } else {
            "no subgroups".into()
        };
        println!("adapter: {} ({subgroups})", g.adapter_name());
        let mut rng = Rng::new(1);
        if !attention_only {
            matmuls(&g, &mut rng, quick)?;
            reductions(&g, &mut rng, quick)?;
        }

        let lens = list_arg("--lens")?.unwrap_or(if quick { vec![64, 128] } else { vec![64, 128, 256, 512, 1024] });
        attention(&g, &mut rng, quick, &lens)?;
        if attention_only {
            return Ok(());
        }
        drop(g);
        train_steps(quick)
    }

    fn matmuls(g: &Gpu, rng: &mut Rng, quick: bool) -> Result<()> {
        // `--peak-gflops P`: the adapter's fp32 peak (from its data sheet), to print each figure as a % of it.
        let peak: Option<f64> = arg_value("--peak-gflops").and_then(|v| v.parse().ok());
        println!("\nmatmul  (N = C = OC), tile      forward ms   GFLOP/s   backward ms   GFLOP/s   (% of peak fwd / bwd)");
        let sizes: &[usize] = if quick { &[128, 256] } else { &[256, 512, 1024, 2048, 4096] };
        // Each size with both register tiles forced (4×4 outputs a thread in 64×64 tiles, 8×8 in 128×128); a
        // product picks by itself with `MatmulTile::for_product` (8×8 from 256 tiles of 128: N ≥ 2048 here).
        let tiles = [(MatmulTile::Rt4, "4×4"), (MatmulTile::Rt8, "8×8")];
        for (&n, &(tile, label)) in sizes.iter().flat_map(|n| tiles.iter().map(move |t| (n, t))) {
            g.set_matmul_tile(Some(tile));
            let (x, w, b) = (g.upload(&randn(rng, n * n))?, g.upload(&randn(rng, n * n))?, g.upload(&randn(rng, n))?);
            let (out, dx, dw, db) =
                (g.zeros::<f32>(n * n)?, g.zeros::<f32>(n * n)?, g.zeros::<f32>(n * n)?, g.zeros::<f32>(n)?);
            let fwd = median_ms(g, |e| g.matmul_forward(e, out.all(), x.all(), w.all(), Some(b.all()), n, n, n))?;
            let bwd = median_ms(g, |e| {
                g.matmul_backward(e, Some(dx.all()), dw.all(), Some(db.all()), out.all(), x.all(), w.all(), n, n, n)
            })?;
            let flops = 2.0 * (n * n * n) as f64;
            let (gf, gb) = (flops / fwd / 1e6, 2.0 * flops / bwd / 1e6);
            let pct = peak.map_or(String::new(), |p| format!("   ({:.1}% / {:.1}%)", 100.0 * gf / p, 100.0 * gb / p));
            println!("{n:>6}, {label}                     {fwd:>10.3} {gf:>9.1} {bwd:>13.3} {gb:>9.1}{pct}");
        }
        g.set_matmul_tile(None);
        Ok(())
    }

    /// The kernels whose workgroups reduce, at the baby GPT's sizes (N = B·T = 16384 rows, C = 384, V = 65, P = 10 M,
    /// about its parameter count): LayerNorm forward + backward over (N, C), the fused cross-entropy over (N, V)
    /// logits, Σx² of P floats (the gradient norm); each on the tree in workgroup memory, then on subgroups where the
    /// device has them (`Gpu::set_subgroups`).
    fn reductions(g: &Gpu, rng: &mut Rng, quick: bool) -> Result<()> {
        let (n, c, v, p) = if quick { (1024, 384, 65, 1 << 20) } else { (16384, 384, 65, 10_000_000) };
        println!("\nreductions  N={n} C={c} V={v} P={p}   layernorm fwd+bwd ms   cross-entropy ms   Σx² ms");
        let (x, dout) = (g.upload(&randn(rng, n * c))?, g.upload(&randn(rng, n * c))?);
        let (w, b) = (g.upload(&randn(rng, c))?, g.upload(&randn(rng, c))?);
        let (out, mean, rstd) = (g.zeros::<f32>(n * c)?, g.zeros::<f32>(n)?, g.zeros::<f32>(n)?);
        let (dx, dw, db) = (g.zeros::<f32>(n * c)?, g.zeros::<f32>(c)?, g.zeros::<f32>(c)?);
        let targets: Vec<i32> = (0..n).map(|i| (i % v) as i32).collect();
        let (logits, targets) = (g.upload(&randn(rng, n * v))?, g.upload(&targets)?);
        let (dlogits, losses) = (g.zeros::<f32>(n * v)?, g.zeros::<f32>(n)?);
        let (grads, sum) = (g.upload(&randn(rng, p))?, g.zeros::<f32>(1)?);
        let paths: &[bool] = if g.ctx.subgroups { &[false, true] } else { &[false] };
        for &on in paths {
            g.set_subgroups(on)?;
            let ln = median_ms(g, |e| {
                let (ln, x, w, mean, rstd) = (NormKind::Layernorm, x.all(), w.all(), mean.all(), rstd.all());
                g.norm_forward(e, ln, out.all(), mean, rstd, x, w, Some(b.all()), 1e-5, c)?;
                g.norm_backward(e, ln, dx.all(), dw.all(), Some(db.all()), dout.all(), x, w, mean, rstd, c)
            })?;
            let (dscale, targets, logits) = (1.0 / n as f32, targets.all(), logits.all());
            let ce = median_ms(g, |e| g.cross_entropy(e, dlogits.all(), losses.all(), logits, targets, v, dscale))?;
            let sq = median_ms(g, |e| g.sum_squares(e, sum.all(), 0, grads.all()))?;
            let label = if on { "subgroups" } else { "tree" };
            println!("{label:<9}                                {ln:>20.3} {ce:>18.3} {sq:>8.3}");
        }
        g.set_subgroups(g.ctx.subgroups)
    }

    /// A comma-separated list of sizes given after `flag`, if any.
    fn list_arg(flag: &str) -> Result<Option<Vec<usize>>> {
        let Some(v) = arg_value(flag) else { return Ok(None) };
        let bad = || transformer_playground::Error::Invalid(format!("{flag} {v}: expected sizes like 64,128"));
        v.split(',').map(|x| x.trim().parse().map_err(|_| bad())).collect::<Result<_>>().map(Some)
    }

    /// The value after `flag` on the command line.
    fn arg_value(flag: &str) -> Option<String> {
        let args: Vec<String> = std::env::args().collect();
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
    }

    fn mib(bytes: u64) -> f64 {
        bytes as f64 / (1u64 << 20) as f64
    }

    /// Fused against naive attention, causal, for each T: forward and forward + backward ms, and the bytes each
    /// allocates beyond its inputs, outputs and gradients — fused: lse (B,NH,T) kept for the backward plus the
    /// backward's (lse, δ) scratch; naive: the probabilities (B,NH,T,T) kept for the backward plus the backward's
    /// dP/dS scratch of the same size. The scratch is measured as the pool's growth over the first run.
    fn attention(g: &Gpu, rng: &mut Rng, quick: bool, lens: &[usize]) -> Result<()> {
        let (b, nh, hs) = if quick { (1, 4, 32) } else { (4, 8, 64) };
        println!(
            "\nattention  B={b} NH={nh} HS={hs}, causal    fused fwd ms  fused fwd+bwd ms  naive fwd ms  naive fwd+bwd ms  \
             fused MiB  naive MiB"
        );
        for &t in lens {
            let heads = HeadLayout::heads(nh, t, hs);
            let sh = AttnShape {
                b,
                t,
                s: t,
                nh,
                nkv: nh,
                hs,
                causal: true,
                q_offset: 0,
                scale: 1.0 / (hs as f32).sqrt(),
                q: heads,
                k: heads,
                v: heads,
            };
            let n = b * nh * t * hs;
            // k and v (and dk, dv) are the two halves of one buffer: the backward writes dk and dv through one binding.
            let sh = AttnShape { v: HeadLayout { offset: n, ..heads }, ..sh };
            let (q, kv, dout) = (g.upload(&randn(rng, n))?, g.upload(&randn(rng, 2 * n))?, g.upload(&randn(rng, n))?);
            let (out, lse) = (g.zeros::<f32>(n)?, g.zeros::<f32>(b * nh * t)?);
            let (dq, dkv) = (g.zeros::<f32>(n)?, g.zeros::<f32>(2 * n)?);
            g.trim_pool();
            let fused_fwd = |e: &mut Encoder| {
                g.attention_forward(e, out.all(), lse.all(), q.all(), kv.all(), kv.all(), AttnBias::None, &sh)
            };
            let fwd = median_ms(g, &fused_fwd)?;
            let pool0 = g.pool_bytes();
            let both = median_ms(g, |e| {
                fused_fwd(e)?;
                g.attention_backward(
                    e,
                    AttnGrads::QAndKv { dq: dq.all(), dkv: dkv.all() },
                    None,
                    dout.all(),
                    q.all(),
                    kv.all(),
                    kv.all(),
                    out.all(),
                    lse.all(),
                    AttnBias::None,
                    &sh,
                )
            })?;
            let fused_bytes = (lse.len() * 4) as u64 + (g.pool_bytes() - pool0);

            let probs = g.zeros::<f32>(Gpu::attention_naive_probs_len(&sh))?;
            let naive_fwd =
                |e: &mut Encoder| g.attention_naive_forward(e, out.all(), probs.all(), q.all(), kv.all(), kv.all(), &sh);
            let nfwd = median_ms(g, &naive_fwd)?;
            let pool1 = g.pool_bytes();
            let nboth = median_ms(g, |e| {
                naive_fwd(e)?;
                let grads = AttnGrads::QAndKv { dq: dq.all(), dkv: dkv.all() };
                g.attention_naive_backward(e, grads, dout.all(), q.all(), kv.all(), kv.all(), probs.all(), &sh)
            })?;
            let naive_bytes = (probs.len() * 4) as u64 + (g.pool_bytes() - pool1);
            println!(
                "T={t:<5}                             {fwd:>12.2} {both:>17.2} {nfwd:>13.2} {nboth:>17.2} {:>10.3} {:>10.3}",
                mib(fused_bytes),
                mib(naive_bytes)
            );
        }
        Ok(())
    }

    /// Median ms of `steps` training steps after `warmup`.
    fn step_ms(run: &mut Run, warmup: usize, steps: usize) -> Result<f64> {
        for _ in 0..warmup {
            run.step()?;
        }
        let mut times = vec![];
        for _ in 0..steps {
            let t = Instant::now();
            run.step()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(times[steps / 2])
    }

    fn train_steps(quick: bool) -> Result<()> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/www/data/tinyshakespeare.txt"))
            .map_err(|e| transformer_playground::Error::Io(e.to_string()))?;
        let (t, b, default): (usize, usize, &[usize]) =
            if quick { (64, 4, &[64]) } else { (256, 8, &[64, 128, 192, 256, 384, 512]) };
        let sizes = list_arg("--dmodels")?.unwrap_or(default.to_vec());
        println!(
            "\ntraining step  gpt, 4 layers, HS=64, B={b} T={t}   gpu ms/step   cpu ms/step   cpu/gpu   gpu run on"
        );
        for &c in &sizes {
            let json = format!(
                r#"{{ "model": {{ "arch": "gpt", "d_model": {c}, "n_layers": 4, "n_heads": {h}, "n_kv_heads": {h}, "ctx_len": {t},
                     "ffn": {{ "activation": "gelu", "mult": 4 }}, "norm": {{ "kind": "layernorm", "placement": "pre" }},
                     "position": {{ "kind": "learned" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
                     "train": {{ "batch_size": {b}, "steps": 1000, "lr": 0.0003 }}, "seed": 1 }}"#,
                h = c / 64
            );
            let cfg = Config::from_json(&json)?;
            let mut gpu = Run::new(cfg.clone(), Some(&text), BackendKind::Gpu)?;
            gpu.sync_every = 0;
            let g = step_ms(&mut gpu, 2, if quick { 3 } else { 5 })?;
            let ran_on = gpu.backend_name();
            drop(gpu);
            let mut cpu = Run::new(cfg, Some(&text), BackendKind::Cpu)?;
            let cms = step_ms(&mut cpu, 1, 3)?;
            println!("d_model={c:<4}                                {g:>11.2} {cms:>13.2} {:>9.2}   {ran_on}", cms / g);
        }
        Ok(())
    }
}
