//! `tp attention-cost` end to end on the CPU backend: one JSON row per T with both paths' times and bytes, naive
//! rows stopped with a note over the budget, and bad values refused naming the flag (no panic, nothing printed).
//! Times are only checked to be positive numbers: tests do not judge speed (docs/BENCHMARKS.md does).

use std::process::Command;
use transformer_playground::attention_cost::{flash_bytes, naive_bytes, CostBackend, CostSpec};

fn tp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tp")).arg("attention-cost").args(args).output().expect("run tp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn rows(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).expect(l)).collect()
}

#[test]
fn attention_cost_prints_one_row_per_t_with_both_paths_times_and_bytes() {
    let (ok, out, err) = tp(&["--t", "16,48,96", "--heads", "4", "--kv-heads", "2", "--head-size", "12", "--batch", "2"]);
    assert!(ok, "{err}");
    let rows = rows(&out);
    assert_eq!(rows.iter().map(|r| r["t"].as_u64().unwrap()).collect::<Vec<_>>(), [16, 48, 96]);
    for r in &rows {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 5, "{r}: {keys:?}");
        assert!(r["naive_ms"].as_f64().unwrap() > 0.0 && r["flash_ms"].as_f64().unwrap() > 0.0, "{r}");
        // naive: P and dS (B,NH,T,T) plus Vᵀ (B,NKV,HS,T), in bytes.
        let t = r["t"].as_u64().unwrap();
        assert_eq!(r["naive_bytes"].as_u64().unwrap(), 4 * (2 * 2 * 4 * t * t + 2 * 2 * 12 * t), "{r}");
        assert!(r["flash_bytes"].as_u64().unwrap() > 0, "{r}");
    }
    // Quadratic against linear: T doubles, naive bytes grow 4× (less the linear term), fused bytes 2×.
    let b = |i: usize, k: &str| rows[i][k].as_u64().unwrap() as f64;
    assert!(b(2, "naive_bytes") / b(1, "naive_bytes") > 3.5 && b(2, "flash_bytes") / b(1, "flash_bytes") < 2.01);
}

#[test]
fn naive_rows_stop_with_a_note_where_they_would_pass_the_budget() {
    // B = 1, NH = 2, T = 512: P and dS take 2·2·512²·4 bytes = 4 MiB, over a 1 MiB budget; T = 64 fits.
    let (ok, out, err) = tp(&["--t", "64,512", "--heads", "2", "--head-size", "8", "--budget-mib", "1", "--bidirectional"]);
    assert!(ok, "{err}");
    let rows = rows(&out);
    assert!(rows[0]["naive_ms"].as_f64().unwrap() > 0.0 && rows[0].get("note").is_none(), "{}", rows[0]);
    assert!(rows[1]["naive_ms"].is_null(), "{}", rows[1]);
    assert!(rows[1]["flash_ms"].as_f64().unwrap() > 0.0);
    let note = rows[1]["note"].as_str().unwrap();
    assert!(note.contains("naive skipped") && note.contains("over the budget of 1 MiB"), "{note}");
    assert!(rows[1]["naive_bytes"].as_u64().unwrap() > 1 << 20);
}

#[test]
fn bad_values_are_refused_naming_the_flag_before_any_row() {
    for (args, says) in [
        (&["--t", "0"][..], "--t 0: every T must be 1 ..= 16384"),
        (&["--t", "64,99999"], "--t 99999"),
        (&["--t", "64,abc"], "--t \"64,abc\": expected lengths like 64,128,256"),
        (&["--t", ""], "--t \"\""),
        (&["--heads", "0"], "--heads 0: must be 1 ..= 64"),
        (&["--heads", "4", "--kv-heads", "3"], "--kv-heads 3: must divide --heads 4"),
        (&["--heads", "4", "--kv-heads", "8"], "--kv-heads 8: must be 1 ..= 4"),
        (&["--head-size", "300"], "--head-size 300: must be 1 ..= 256"),
        (&["--batch", "0"], "--batch 0: must be 1 ..= 64"),
        (&["--budget-mib", "0"], "--budget-mib 0"),
        (&["--batch", "64", "--heads", "64", "--head-size", "256", "--t", "16384"], "the limit is 1024 MiB"),
        (&["--backend", "tpu"], "unknown backend \"tpu\""),
        (&["--backend", "reference"], "--backend reference"),
    ] {
        let (ok, out, err) = tp(args);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed rows before failing: {out}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn the_byte_formulas_are_quadratic_for_naive_and_linear_for_fused() {
    for backend in [CostBackend::Cpu, CostBackend::Gpu] {
        let spec = CostSpec { heads: 8, kv_heads: Some(2), ..CostSpec::default() };
        let at = |t| spec.shape(t).unwrap();
        let (n1, n2) = (naive_bytes(backend, &at(1024)), naive_bytes(backend, &at(2048)));
        let (f1, f2) = (flash_bytes(backend, &at(1024), 2), flash_bytes(backend, &at(2048), 2));
        assert!((3.9..=4.0).contains(&(n2 as f64 / n1 as f64)), "{backend:?}: naive {n1} → {n2}");
        assert_eq!(f2, 2 * f1, "{backend:?}: fused {f1} → {f2}");
        // Two (B,NH,T,T) float matrices at least; the GPU holds exactly those.
        assert!(n1 >= 2 * 8 * 1024 * 1024 * 4);
    }
    assert_eq!(naive_bytes(CostBackend::Gpu, &CostSpec::default().shape(100).unwrap()), 2 * 4 * 100 * 100 * 4);
    assert_eq!(flash_bytes(CostBackend::Gpu, &CostSpec::default().shape(100).unwrap(), 2), 3 * 4 * 100 * 4);
}

#[test]
fn attention_and_ffn_flops_add_up_to_the_shape_flows_forward_flops_for_every_architecture() {
    use transformer_playground::attention_cost::attention_vs_ffn;
    use transformer_playground::{probe, Config};
    let model = |arch: &str, extra: &str| {
        format!(
            r#"{{ "model": {{ "arch": "{arch}", "d_model": 48, "n_layers": 3, "n_heads": 6, "n_kv_heads": 2, "ctx_len": 40,
            "ffn": {{ "activation": "swiglu", "mult": 4 {extra} }}, "norm": {{ "kind": "rmsnorm", "placement": "pre" }},
            "position": {{ "kind": "rope" }}, "attention": {{ "scale": "inv_sqrt_dk" }} }},
            "train": {{ "batch_size": 2, "steps": 1, "lr": 0.001 }} {data} }}"#,
            data = if arch == "encoder_decoder" { r#", "data": { "task": "reverse" }"# } else { "" }
        )
    };
    let moe = r#", "moe": { "experts": 4, "top_k": 2 }"#;
    for (arch, extra) in [("gpt", ""), ("bert", ""), ("encoder_decoder", ""), ("gpt", moe)] {
        let cfg = Config::from_json(&model(arch, extra)).unwrap();
        let (vocab, m) = (65, &cfg.model);
        let flow = probe::shape_flow(m, vocab, 2, m.ctx_len);
        let (rows, crossover) = attention_vs_ffn(m, &[m.ctx_len, 2 * m.ctx_len]);
        let head = 2.0 * (vocab * m.d_model) as f64; // the logits
        let total = rows[0].attention + rows[0].ffn + head;
        assert!((total - flow.forward_flops_per_token).abs() < 1e-6 * total, "{arch}{extra}: {total} vs {}", flow.forward_flops_per_token);
        // Attention grows with T, the FFN does not; attention passes the FFN at `crossover` and not one token before.
        assert!(rows[1].attention > rows[0].attention && rows[1].ffn == rows[0].ffn);
        let (at, before) = (attention_vs_ffn(m, &[crossover]).0, attention_vs_ffn(m, &[crossover - 1]).0);
        assert!(at[0].attention >= at[0].ffn && before[0].attention < before[0].ffn, "{arch}{extra}: crossover {crossover}");
    }
}
