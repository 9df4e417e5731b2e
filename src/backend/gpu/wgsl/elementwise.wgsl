// elementwise.wgsl: the model's element-wise glue — residual connections, DeepNorm's α, dropout masks.
//
// Compiled twice (src/backend/gpu/glue.rs puts the alias before it): V = f32 for any length, V = vec4<f32> when the
// length is a multiple of 4 — a quarter of the invocations, each a 16-byte load per input and a 16-byte store.
//
// Bindings (group 0), shared by every entry point:
//   0 uniform Params    n (elements of V), alpha
//   1 read    x: V      (n)
//   2 read    y: V      (n) (add_scaled only)
//   3 rw      out: V    (n)
// Entry points: add_scaled  out = alpha·x + y;   scale  out = alpha·x;   add_into  out += x;   mul_into  out *= x.
// Invocation → element: invocation i < n (256 per workgroup) writes out[i] (4 floats when V is a vec4).

struct Params {
    n: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> y: array<V>;
@group(0) @binding(3) var<storage, read_write> out: array<V>;

fn elem_index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return group_index(wg, nwg) * 256u + li;
}

@compute @workgroup_size(256)
fn add_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = elem_index(wg, nwg, li);
    if (i < p.n) {
        out[i] = p.alpha * x[i] + y[i];
    }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = elem_index(wg, nwg, li);
    if (i < p.n) {
        out[i] = p.alpha * x[i];
    }
}

@compute @workgroup_size(256)
fn add_into(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = elem_index(wg, nwg, li);
    if (i < p.n) {
        out[i] = out[i] + x[i];
    }
}

@compute @workgroup_size(256)
fn mul_into(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = elem_index(wg, nwg, li);
    if (i < p.n) {
        out[i] = out[i] * x[i];
    }
}
