// cross_entropy.wgsl: softmax, cross-entropy and its gradient, fused; rows whose target is -1 are ignored (the
// masked-LM loss counts masked positions only).
//
// Bindings (group 0):
//   0 uniform Params        rows (N), v (V), dscale
//   1 read    logits: f32   (N,V)
//   2 read    targets: i32  (N), -1 = ignored
//   3 rw      dlogits: f32  (N,V) = (softmax − onehot)·dscale, 0 on ignored rows (written, not accumulated)
//   4 rw      losses: f32   (N): lse − logit[target], 0 on ignored rows (summed by reduce.wgsl's `sum`)
// Invocation → element: workgroup g owns row g; its WG = 256 threads take columns ≡ thread (mod 256); the row max
// and Σ exp are `workgroup_max` and `workgroup_sum` over the 256 partials (put before this file: a tree in
// workgroup memory, or subgroup operations where the device has them).

struct Params {
    rows: u32,
    v: u32,
    dscale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> losses: array<f32>;

// The workgroup size, for workgroup_sum and workgroup_max.
const WG: u32 = 256u;

var<workgroup> target_of_row: i32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: Lane) {
    let t = lane.t;
    let row = group_index(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.v;
    if (t == 0u) {
        target_of_row = targets[row];
    }
    let tgt = workgroupUniformLoad(&target_of_row);
    if (tgt < 0) {
        for (var i = t; i < p.v; i += WG) {
            dlogits[base + i] = 0.0;
        }
        if (t == 0u) {
            losses[row] = 0.0;
        }
        return;
    }
    var m = NEG_BIG;
    for (var i = t; i < p.v; i += WG) {
        m = max(m, logits[base + i]);
    }
    let mx = workgroup_max(m, lane);
    var s = 0.0;
    for (var i = t; i < p.v; i += WG) {
        s += exp(logits[base + i] - mx);
    }
    let lse = mx + log(workgroup_sum(s, lane));
    let tu = u32(tgt);
    for (var i = t; i < p.v; i += WG) {
        let prob = exp(logits[base + i] - lse);
        dlogits[base + i] = (prob - select(0.0, 1.0, i == tu)) * p.dscale;
    }
    if (t == 0u) {
        losses[row] = lse - logits[base + tu];
    }
}
