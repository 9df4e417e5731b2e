// activation.wgsl: the FFN activations, forward and backward. Plain: relu, gelu (exact: x·Φ(x)), swish (x·σ(x)).
// Gated (Shazeer 2020): the input row is [gate (F) | up (F)] and out = act(gate) ⊙ up, act = σ (glu), gelu (geglu),
// swish (swiglu).
//
// Bindings (group 0):
//   0 uniform Params    n (= N·F, elements of out), f (F), act (0 relu, 1 gelu, 2 swish, 3 glu, 4 geglu, 5 swiglu)
//   1 read    inp: f32  (N,F), or (N,2F) gated
//   2 read    dout: f32 (N,F) (backward)
//   3 rw      o: f32    forward: out (N,F); backward: dinp (N,F or 2F) +=
// Invocation → element: invocation e < N·F (256 per workgroup) owns out[e], or in the backward dinp[e] (plain) or
// dinp[r·2F + i] and dinp[r·2F + F + i] (gated, e = r·F + i).
// Backward: plain dinp += dout·act'(x); gated d gate += dout·up·act'(gate), d up += dout·act(gate).
//
// Φ is ½·erfc(−x/√2) with erfc from Numerical Recipes' Chebyshev fit (`erfcc`, fractional error < 1.2e-7
// everywhere), as in the CPU backend's `math::phi_k`: WGSL has no erf.

struct Params {
    n: u32,
    f: u32,
    act: u32,
    _pad: u32,
}

const RELU: u32 = 0u;
const GELU: u32 = 1u;
const SWISH: u32 = 2u;
const GLU: u32 = 3u;
const GEGLU: u32 = 4u;
const SWIGLU: u32 = 5u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

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

fn gated(kind: u32) -> bool {
    return kind >= GLU;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let e = group_index(wg, nwg) * 256u + t;
    if (e >= p.n) {
        return;
    }
    if (gated(p.act)) {
        let r = e / p.f;
        let i = e % p.f;
        o[e] = act(p.act, inp[r * 2u * p.f + i]).x * inp[r * 2u * p.f + p.f + i];
    } else {
        o[e] = act(p.act, inp[e]).x;
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let e = group_index(wg, nwg) * 256u + t;
    if (e >= p.n) {
        return;
    }
    let d = dout[e];
    if (gated(p.act)) {
        let r = e / p.f;
        let i = e % p.f;
        let gi = r * 2u * p.f + i;
        let a = act(p.act, inp[gi]);
        let up = inp[gi + p.f];
        o[gi] += d * up * a.y;
        o[gi + p.f] += d * a.x;
    } else {
        o[e] += d * act(p.act, inp[e]).y;
    }
}
