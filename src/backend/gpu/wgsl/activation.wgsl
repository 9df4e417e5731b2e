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
// The element-wise functions (`act`, `sigmoid`, `phi`) are in activation_fn.wgsl, put before this file (the matmul's
// fused epilogue uses them too).

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
