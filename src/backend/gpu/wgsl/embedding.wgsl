// embedding.wgsl: the input embedding of a stack, x = wte[id] (+ wpe[pos0 + t], learned) (+ PE[t], sinusoidal),
// added in that order, as the host does.
//
// Bindings (group 0):
//   0 uniform Params    n (B·T·C), c (C), t (T), pos0, flags (1 = learned positions, 2 = sinusoidal table)
//   1 read    ids: u32  (B·T) token ids, row r at position r mod T
//   2 read    wte: f32  (V,C)
//   3 read    wpe: f32  (ctx_len,C) learned positions (unused without flag 1)
//   4 read    pe: f32   (T,C) sinusoidal table made on the host (unused without flag 2)
//   5 rw      out: f32  (B·T,C)
// Invocation → element: invocation e < B·T·C (256 per workgroup) writes out[e], row r = e / C, channel j = e % C.

struct Params {
    n: u32,
    c: u32,
    t: u32,
    pos0: u32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const LEARNED: u32 = 1u;
const SINUSOIDAL: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> wte: array<f32>;
@group(0) @binding(3) var<storage, read> wpe: array<f32>;
@group(0) @binding(4) var<storage, read> pe: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 256u + li;
    if (e >= p.n) {
        return;
    }
    let r = e / p.c;
    let j = e % p.c;
    let tp = r % p.t;
    var x = wte[ids[r] * p.c + j];
    if ((p.flags & LEARNED) != 0u) {
        x += wpe[(p.pos0 + tp) * p.c + j];
    }
    if ((p.flags & SINUSOIDAL) != 0u) {
        x += pe[tp * p.c + j];
    }
    out[e] = x;
}
