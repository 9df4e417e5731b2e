// activation_fn.wgsl: the FFN activations' element-wise part, put before activation.wgsl and matmul.wgsl (whose
// fused epilogues apply it). Kinds: 0 relu, 1 gelu, 2 swish, 3 glu, 4 geglu, 5 swiglu (the gated ones apply
// σ, gelu, swish to the gate).
//
// Φ is ½·erfc(−x/√2) with erfc from Numerical Recipes' Chebyshev fit (`erfcc`, fractional error < 1.2e-7
// everywhere), as in the CPU backend's `math::phi_k`: WGSL has no erf.

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(min(-x, 88.0)));
}

// Φ(x), the standard normal CDF.
fn phi(x: f32) -> f32 {
    let z = abs(x) * 0.70710678;
    let t = 1.0 / (1.0 + 0.5 * z);
    var q = 0.17087277;
    q = q * t - 0.82215223;
    q = q * t + 1.48851587;
    q = q * t - 1.13520398;
    q = q * t + 0.27886807;
    q = q * t - 0.18628806;
    q = q * t + 0.09678418;
    q = q * t + 0.37409196;
    q = q * t + 1.00002368;
    q = q * t - 1.26551223;
    let half_tail = 0.5 * (t * exp(max(q - z * z, -87.0)));
    return select(half_tail, 1.0 - half_tail, x >= 0.0);
}

// (f(x), f'(x)) of the element-wise part of the activation.
fn act(kind: u32, x: f32) -> vec2<f32> {
    switch kind {
        case 0u: {
            return vec2<f32>(max(x, 0.0), select(0.0, 1.0, x > 0.0));
        }
        case 1u, 4u: {
            let cdf = phi(x);
            let pdf = exp(max(-0.5 * x * x, -87.0)) * 0.3989423;
            return vec2<f32>(x * cdf, cdf + x * pdf);
        }
        case 2u, 5u: {
            let s = sigmoid(x);
            return vec2<f32>(x * s, s * (1.0 + x * (1.0 - s)));
        }
        default: {
            let s = sigmoid(x);
            return vec2<f32>(s, s * (1.0 - s));
        }
    }
}
