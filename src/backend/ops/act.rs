//! FFN activations. Plain: relu, gelu (exact, erf form), swish (x·σ(x), a.k.a. SiLU). Gated (Shazeer 2020,
//! "GLU Variants Improve Transformer"): the input row is [gate (F) | up (F)] and out = act(gate) ⊙ up with
//! act = σ (glu), gelu (geglu), swish (swiglu).

use crate::config::Activation;

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// GELU(x) = x·Φ(x), Φ the standard normal CDF.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * INV_SQRT2))
}

/// d/dx GELU = Φ(x) + x·φ(x).
pub fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(x * INV_SQRT2));
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
    cdf + x * pdf
}

/// (f(x), f'(x)) for the element-wise part of each activation.
fn base(act: Activation, x: f32) -> (f32, f32) {
    match act {
        Activation::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
        Activation::Gelu | Activation::Geglu => (gelu(x), gelu_grad(x)),
        Activation::Swish | Activation::Swiglu => {
            let s = sigmoid(x);
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
        Activation::Glu => {
            let s = sigmoid(x);
            (s, s * (1.0 - s))
        }
    }
}

/// out (N,F) = act(inp); inp (N,F), or (N,2F) for gated activations.
pub fn activation_forward(act: Activation, out: &mut [f32], inp: &[f32], f: usize) {
    if act.is_gated() {
        for (o, x) in out.chunks_exact_mut(f).zip(inp.chunks_exact(2 * f)) {
            for i in 0..f {
                o[i] = base(act, x[i]).0 * x[f + i];
            }
        }
    } else {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = base(act, x).0;
        }
    }
}

/// dinp += ∂L/∂inp. Gated: d gate = dout·up·act'(gate), d up = dout·act(gate).
pub fn activation_backward(act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], f: usize) {
    if act.is_gated() {
        for ((di, d), x) in dinp.chunks_exact_mut(2 * f).zip(dout.chunks_exact(f)).zip(inp.chunks_exact(2 * f)) {
            for i in 0..f {
                let (a, da) = base(act, x[i]);
                di[i] += d[i] * x[f + i] * da;
                di[f + i] += d[i] * a;
            }
        }
    } else {
        for ((di, &d), &x) in dinp.iter_mut().zip(dout).zip(inp) {
            *di += d * base(act, x).1;
        }
    }
}
