//! The position–position term of attention's scores, before and after the projections (issue 19, lesson 4).
//!
//! With absolute positions p_t added to the token embeddings e_t, the first layer's score of query t for key s
//! expands into four terms (Ke et al. 2021, "Rethinking Positional Encoding in Language Pre-training", TUPE):
//!
//! ```text
//! (e_t + p_t)ᵀ W_Qᵀ W_K (e_s + p_s) = e_tᵀ W_Qᵀ W_K e_s + e_tᵀ W_Qᵀ W_K p_s + p_tᵀ W_Qᵀ W_K e_s + p_tᵀ W_Qᵀ W_K p_s
//! ```
//!
//! The last is the position–position term. Without the projections it would be p_tᵀ p_s, which for the
//! sinusoidal table is Σ_i cos(ω_i (t − s)): a function of t − s alone, a clean relative pattern. Through W_Qᵀ W_K
//! (different matrices, not a rotation that commutes with each frequency's pair) it no longer is: the projections
//! blur the pattern, which is the paper's argument for untying positions from tokens.
//!
//! `position_terms` computes both matrices for every head of the first layer of the model's first stack (the
//! decoder of gpt, the encoder of bert and the encoder-decoder) from the parameters as they are, and how relative
//! each is: the fraction of its variance that the means of its diagonals explain (1: a function of t − s alone).
//! Simplifications, as in the paper: the norm before attention (pre-LN) and the projections' biases are left out —
//! the term is of the positions and the two projections alone —, and the full T × T matrix is shown (the causal mask
//! hides s > t from the scores, not from this term). Positions that are not added to the input (relative, RoPE,
//! ALiBi, recurrent, none) have no such term: refused, naming `model.position`.

use crate::config::Position;
use crate::error::{Error, Result};
use crate::model::{position, Model};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct PositionTerms {
    /// "learned" or "sinusoidal".
    pub position: &'static str,
    /// Positions along each axis (ctx_len).
    pub t: usize,
    pub heads: usize,
    /// p_tᵀ p_s, (t, t).
    pub raw: Vec<f32>,
    /// (p_t W_Q,hᵀ)·(p_s W_K,hᵀ) × the score scale, per head: (heads, t, t).
    pub projected: Vec<f32>,
    /// `relative_share` of `raw`.
    pub raw_relative: f32,
    /// `relative_share` of each head's projected term.
    pub projected_relative: Vec<f32>,
}

/// The share of the variance of a square matrix `m` (n × n) that the means of its diagonals explain:
/// 1 − Σ (m_ts − d_{t−s})² / Σ (m_ts − mean)², with d_k the mean of diagonal k. 1 when m depends on t − s alone;
/// near 0 when its diagonals say nothing. A constant matrix counts as relative (1).
pub fn relative_share(m: &[f32], n: usize) -> f32 {
    assert_eq!(m.len(), n * n, "relative_share: an n × n matrix");
    // Diagonal k = t − s + n − 1 in 0..2n−1.
    let mut sum = vec![0.0f64; 2 * n - 1];
    let mut count = vec![0usize; 2 * n - 1];
    let mut total = 0.0f64;
    for t in 0..n {
        for s in 0..n {
            sum[t + n - 1 - s] += m[t * n + s] as f64;
            count[t + n - 1 - s] += 1;
            total += m[t * n + s] as f64;
        }
    }
    let mean = total / (n * n) as f64;
    let (mut within, mut all) = (0.0f64, 0.0f64);
    for t in 0..n {
        for s in 0..n {
            let k = t + n - 1 - s;
            let x = m[t * n + s] as f64;
            within += (x - sum[k] / count[k] as f64).powi(2);
            all += (x - mean).powi(2);
        }
    }
    if all <= f64::EPSILON * (n * n) as f64 * mean.abs().max(1.0) {
        return 1.0;
    }
    (1.0 - within / all) as f32
}

/// The position–position term of `model`'s first attention layer, raw and per head projected (see the module doc).
pub fn position_terms(model: &Model) -> Result<PositionTerms> {
    let m = &model.cfg;
    let l = &model.layout;
    let sp = l.encoder.as_ref().or(l.decoder.as_ref()).ok_or_else(|| Error::Invalid("the model has no stack".into()))?;
    let (t, c) = (m.ctx_len, m.d_model);
    let (p, name): (Vec<f32>, _) = match m.position {
        Position::Sinusoidal => (position::sinusoidal_table(t, c, 0), "sinusoidal"),
        Position::Learned => {
            let v = sp.wpe.ok_or_else(|| Error::Invalid("learned positions without a table".into()))?;
            (model.params[v.offset..v.offset + t * c].to_vec(), "learned")
        }
        ref other => {
            return Err(Error::Config {
                field: "model.position".into(),
                // The kind as the config spells it ("rope", "alibi", …).
                value: serde_json::to_value(other).ok().and_then(|v| v["kind"].as_str().map(str::to_string)).unwrap_or_default(),
                rule: "only positions added to the input (learned, sinusoidal) have a position–position term in the \
                       scores; relative, RoPE and ALiBi act inside attention, recurrent positions are computed from \
                       the tokens, and none has none"
                    .into(),
            })
        }
    };
    let block = sp.blocks.first().ok_or_else(|| Error::Invalid("the model has no layer".into()))?;
    let (nh, nkv, hs) = (m.n_heads, m.n_kv_heads, m.head_size());
    let w = &model.params[block.qkv.w.offset..block.qkv.w.offset + block.qkv.w.len]; // ((NH+2·NKV)·HS, C)
    // x W_rowsᵀ for the HS rows of W starting at row r0: (t, hs).
    let project = |r0: usize| -> Vec<f32> {
        let mut out = vec![0.0f32; t * hs];
        for i in 0..t {
            for j in 0..hs {
                let row = &w[(r0 + j) * c..(r0 + j + 1) * c];
                out[i * hs + j] = p[i * c..(i + 1) * c].iter().zip(row).map(|(a, b)| a * b).sum();
            }
        }
        out
    };
    // a bᵀ for a, b of shape (t, k), times `scale`: (t, t).
    let gram = |a: &[f32], b: &[f32], k: usize, scale: f32| -> Vec<f32> {
        let mut out = vec![0.0f32; t * t];
        for i in 0..t {
            for j in 0..t {
                out[i * t + j] = scale * a[i * k..(i + 1) * k].iter().zip(&b[j * k..(j + 1) * k]).map(|(x, y)| x * y).sum::<f32>();
            }
        }
        out
    };
    let raw = gram(&p, &p, c, 1.0);
    let mut projected = Vec::with_capacity(nh * t * t);
    let mut projected_relative = Vec::with_capacity(nh);
    for h in 0..nh {
        // Query head h reads key head h / (NH / NKV) (GQA, MQA).
        let q = project(h * hs);
        let k = project(nh * hs + (h / (nh / nkv)) * hs);
        let term = gram(&q, &k, hs, m.score_scale());
        projected_relative.push(relative_share(&term, t));
        projected.extend(term);
    }
    Ok(PositionTerms { position: name, t, heads: nh, raw_relative: relative_share(&raw, t), raw, projected, projected_relative })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(position: &str) -> Model {
        let json = r#"{"arch":"gpt","d_model":16,"n_layers":1,"n_heads":2,"n_kv_heads":1,"ctx_len":12,"ffn":{"activation":"gelu","mult":4},"norm":{"kind":"layernorm","placement":"pre"},"position":{"kind":"KIND"},"attention":{"scale":"inv_sqrt_dk"}}"#;
        let m: crate::config::ModelConfig = serde_json::from_str(&json.replace("KIND", position)).unwrap();
        Model::new(&m, 10, 7)
    }

    #[test]
    fn relative_share_is_one_for_a_function_of_the_offset_and_low_for_noise() {
        let n = 9;
        let toeplitz: Vec<f32> = (0..n * n).map(|i| ((i / n) as f32 - (i % n) as f32).sin()).collect();
        assert!((relative_share(&toeplitz, n) - 1.0).abs() < 1e-6);
        let mut rng = crate::rng::Rng::new(1);
        let noise: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
        let r = relative_share(&noise, n);
        assert!(r < 0.5, "noise explained {r}");
        // Rows alternating in sign are not relative: each diagonal holds both signs in turn.
        let rows: Vec<f32> = (0..n * n).map(|i| if (i / n) % 2 == 0 { 1.0 } else { -1.0 }).collect();
        assert!(relative_share(&rows, n) < 0.1, "{}", relative_share(&rows, n));
    }

    #[test]
    fn sinusoidal_raw_term_is_relative_and_the_projections_blur_it() {
        let pt = position_terms(&model("sinusoidal")).unwrap();
        assert_eq!((pt.t, pt.heads, pt.raw.len(), pt.projected.len()), (12, 2, 144, 2 * 144));
        // p_tᵀ p_s = Σ cos(ω (t − s)): d_model / 2 on the diagonal.
        assert!((pt.raw[0] - 8.0).abs() < 1e-4 && (pt.raw[5 * 12 + 5] - 8.0).abs() < 1e-4);
        assert!(pt.raw_relative > 0.999_99, "{}", pt.raw_relative);
        for r in &pt.projected_relative {
            assert!(*r < 0.99, "projected still relative: {r}");
        }
    }

    #[test]
    fn projected_term_is_the_first_layers_scores_of_positions_alone() {
        // Against a direct computation from the named tensors: q = p W_qᵀ, k = p W_kᵀ, (q·k)/√HS.
        let m = model("learned");
        let pt = position_terms(&m).unwrap();
        let (t, c, hs) = (12, 16, 8);
        let wpe = m.layout.tensors.iter().find(|x| x.name.ends_with("wpe")).unwrap().view;
        let qkv = m.layout.tensors.iter().find(|x| x.name.ends_with("blocks.0.attn.qkv.weight")).unwrap().view;
        let p = |i: usize, j: usize| m.params[wpe.offset + i * c + j];
        let w = |r: usize, j: usize| m.params[qkv.offset + r * c + j];
        for (h, kv_row) in [(0, 16), (1, 16)] {
            for (i, s) in [(0, 0), (3, 7), (11, 2)] {
                let mut dot = 0.0f64;
                for d in 0..hs {
                    let q: f64 = (0..c).map(|j| p(i, j) as f64 * w(h * hs + d, j) as f64).sum();
                    let k: f64 = (0..c).map(|j| p(s, j) as f64 * w(kv_row + d, j) as f64).sum();
                    dot += q * k;
                }
                let got = pt.projected[h * t * t + i * t + s] as f64;
                assert!((got - dot / (hs as f64).sqrt()).abs() < 1e-6, "head {h} ({i},{s}): {got} vs {dot}");
            }
        }
    }

    #[test]
    fn positions_inside_attention_are_refused_naming_the_field() {
        for kind in ["rope", "alibi", "none"] {
            let e = position_terms(&model(kind)).unwrap_err().to_string();
            assert!(e.contains("model.position"), "{kind}: {e}");
        }
    }
}
