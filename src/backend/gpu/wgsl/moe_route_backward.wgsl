// moe_route_backward.wgsl: the router's gradient (the reference: ops::moe_route_backward).
//
// Bindings (group 0):
//   0 uniform Params (moe_route.wgsl's)
//   1 read    dweight: f32 (N·k)
//   2 read    probs:   f32 (N, E)
//   3 read    choice:  f32 (N·k)
//   4 read    weight:  f32 (N·k)
//   5 read    stats:   f32 (2 + E)
//   6 rw      dlogits: f32 (N, E)  (+=)
// Invocation i < N: through the renormalisation w_j = p_j / Σ p (∂/∂p_m = (dw_m − Σ dw_j·w_j) / Σ p), plus
// aux · E·f_e/N on every p_e (the balancing loss, f_e held constant), then through the softmax.

struct Params {
    n: u32,
    k: u32,
    e: u32,
    c: u32,
    ex: u32,
    rows: u32,
    cap: u32,
    aux: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dweight: array<f32>;
@group(0) @binding(2) var<storage, read> probs: array<f32>;
@group(0) @binding(3) var<storage, read> choice: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * 64u + li;
    if (i >= p.n) {
        return;
    }
    let base = i * p.e;
    var dp: array<f32, 64>;
    var total = 0.0;
    var dot = 0.0;
    for (var j = 0u; j < p.k; j++) {
        let a = i * p.k + j;
        total += probs[base + u32(choice[a])];
        dot += dweight[a] * weight[a];
    }
    for (var j = 0u; j < p.k; j++) {
        let a = i * p.k + j;
        let x = u32(choice[a]);
        dp[x] += (dweight[a] - dot) / total;
    }
    if (p.aux != 0.0) {
        for (var x = 0u; x < p.e; x++) {
            dp[x] += p.aux * f32(p.e) * (stats[2u + x] / f32(p.n * p.k)) / f32(p.n);
        }
    }
    var s = 0.0;
    for (var x = 0u; x < p.e; x++) {
        s += probs[base + x] * dp[x];
    }
    for (var x = 0u; x < p.e; x++) {
        dlogits[base + x] += probs[base + x] * (dp[x] - s);
    }
}
