// heads.wgsl: between the projections' row layout (B,T,stride), head h at columns off + h·HS .. off + (h+1)·HS,
// and attention's head-major layout (B,H,T,HS). Pure copies.
//
// Bindings (group 0):
//   0 uniform Params    n (B·H·T·HS), t (T), stride, off, nh (H), hs (HS)
//   1 read    src: f32  split: (B,T,stride);  merge: (B,H,T,HS)
//   2 rw      dst: f32  split: (B,H,T,HS);   merge: (B,T,stride), only columns [off, off + H·HS) written
// Invocation → element: invocation e < B·H·T·HS (256 per workgroup) is element e of the (B,H,T,HS) tensor,
// e = ((b·H + h)·T + t)·HS + d; it moves that one element.

struct Params {
    n: u32,
    t: u32,
    stride: u32,
    off: u32,
    nh: u32,
    hs: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

/// The row-layout index of head-major element e.
fn row_index(e: u32) -> u32 {
    let d = e % p.hs;
    let ti = (e / p.hs) % p.t;
    let h = (e / (p.hs * p.t)) % p.nh;
    let bi = e / (p.hs * p.t * p.nh);
    return (bi * p.t + ti) * p.stride + p.off + h * p.hs + d;
}

@compute @workgroup_size(256)
fn split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 256u + li;
    if (e < p.n) {
        dst[e] = src[row_index(e)];
    }
}

@compute @workgroup_size(256)
fn merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 256u + li;
    if (e < p.n) {
        dst[row_index(e)] = src[e];
    }
}
