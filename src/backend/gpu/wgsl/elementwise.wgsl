// elementwise.wgsl: the model's element-wise glue — residual connections, DeepNorm's α, dropout masks.
//
// Bindings (group 0), shared by every entry point:
//   0 uniform Params    n, alpha
//   1 read    x: f32    (n)
//   2 read    y: f32    (n) (add_scaled only)
//   3 rw      out: f32  (n)
// Entry points: add_scaled  out = alpha·x + y;   scale  out = alpha·x;   add_into  out += x;   mul_into  out *= x.
// Invocation → element: invocation i < n (256 per workgroup) writes out[i].

struct Params {
    n: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

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
