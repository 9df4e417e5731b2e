// attention_delta.wgsl: the first step of the attention backward (FlashAttention-2's preprocessing): per query row,
// δ = dout·out (= Σ_j p_j·dp_j, the term the softmax backward subtracts), stored beside lse for the two backward
// kernels.
//
// Bindings (group 0):
//   0 uniform Params      b, t, nh, hs
//   1 read    dout: f32   (B,T,NH·HS)
//   2 read    out: f32    (B,T,NH·HS), the forward's output
//   3 read    lse: f32    (B,NH,T)
//   4 rw      stats: vec2<f32>  (B,NH,T): (lse, δ)
// Invocation → element: invocation e < B·NH·T (256 per workgroup) owns stats[e], e = (b·NH + h)·T + i.

struct Params {
    b: u32,
    t: u32,
    nh: u32,
    hs: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> out: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<vec2<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let e = group_index(wg, nwg) * 256u + t;
    if (e >= p.b * p.nh * p.t) {
        return;
    }
    let bh = e / p.t;
    let i = e % p.t;
    let row = ((bh / p.nh) * p.t + i) * p.nh * p.hs + (bh % p.nh) * p.hs;
    var delta = 0.0;
    for (var d = 0u; d < p.hs; d++) {
        delta += dout[row + d] * out[row + d];
    }
    stats[e] = vec2<f32>(lse[e], delta);
}
