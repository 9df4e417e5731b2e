// heads.wgsl: copies a (B,H,N,HS) tensor from one strided layout to another — element (b, h, t, d) of a layout
// (off, batch, head, row) is at off + b·batch + h·head + t·row + d (`backend::HeadLayout`). A KV cache growing by
// this call's keys and values (`append_heads`) reads them from the qkv projection's rows into its contiguous heads.
// Pure copies.
//
// Bindings (group 0):
//   0 uniform Params    n (B·H·N·HS), h (H), t (N), hs (HS), the source layout (s_*), the destination layout (d_*)
//   1 read    src: f32  the tensor at the source layout
//   2 rw      dst: f32  the tensor at the destination layout; only its elements are written
// Invocation → element: invocation e < B·H·N·HS (256 per workgroup) is element e = ((b·H + h)·N + t)·HS + d of the
// tensor; it moves that one element.

struct Params {
    n: u32,
    h: u32,
    t: u32,
    hs: u32,
    s_off: u32,
    s_batch: u32,
    s_head: u32,
    s_row: u32,
    d_off: u32,
    d_batch: u32,
    d_head: u32,
    d_row: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 256u + li;
    if (e >= p.n) {
        return;
    }
    let d = e % p.hs;
    let ti = (e / p.hs) % p.t;
    let h = (e / (p.hs * p.t)) % p.h;
    let bi = e / (p.hs * p.t * p.h);
    dst[p.d_off + bi * p.d_batch + h * p.d_head + ti * p.d_row + d] = src[p.s_off + bi * p.s_batch + h * p.s_head + ti * p.s_row + d];
}
