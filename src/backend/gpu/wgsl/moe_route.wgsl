// moe_route.wgsl: Mixture-of-Experts routing (the reference: ops::moe_route).
//
// Bindings (group 0):
//   0 uniform Params
//   1 read    logits: f32 (N, E)
//   2 rw      probs:  f32 (N, E)
//   3 rw      choice: f32 (N·k)   expert of assignment a = token·k + j
//   4 rw      weight: f32 (N·k)
//   5 rw      slot:   f32 (N·k)   row among the expert's rows, −1 when over the capacity
//   6 rw      stats:  f32 (2 + E) [E·Σ f_e·P_e, dropped, count_0 … count_{E−1}]
// Entry points:
//   tokens — invocation i < N: the softmax of row i, its k most probable experts (ties: the lower index), their
//            probabilities renormalised over the k.
//   slots  — one workgroup: invocation e < E numbers the assignments to expert e in token order (from `cap` on:
//            dropped), counts them and averages probs[·, e]; invocation 0 then writes the balancing loss and the
//            dropped count. Sequential in token order, as the capacity is defined.

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
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> choice: array<f32>;
@group(0) @binding(4) var<storage, read_write> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> slot: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn tokens(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = group_index(wg, nwg) * 64u + li;
    if (i >= p.n) {
        return;
    }
    let base = i * p.e;
    var m = NEG_BIG;
    for (var x = 0u; x < p.e; x++) {
        m = max(m, logits[base + x]);
    }
    var s = 0.0;
    for (var x = 0u; x < p.e; x++) {
        let v = exp(logits[base + x] - m);
        probs[base + x] = v;
        s += v;
    }
    for (var x = 0u; x < p.e; x++) {
        probs[base + x] = probs[base + x] / s;
    }
    var taken: array<bool, 64>;
    var total = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best = 0u;
        var bp = -1.0;
        for (var x = 0u; x < p.e; x++) {
            if (!taken[x] && probs[base + x] > bp) {
                best = x;
                bp = probs[base + x];
            }
        }
        taken[best] = true;
        choice[i * p.k + j] = f32(best);
        weight[i * p.k + j] = bp;
        total += bp;
    }
    for (var j = 0u; j < p.k; j++) {
        weight[i * p.k + j] = weight[i * p.k + j] / total;
    }
}

var<workgroup> counts: array<u32, 64>;
var<workgroup> mean_p: array<f32, 64>;

@compute @workgroup_size(64)
fn slots(@builtin(local_invocation_index) li: u32) {
    if (li < p.e) {
        var c = 0u;
        for (var a = 0u; a < p.n * p.k; a++) {
            if (u32(choice[a]) == li) {
                if (c < p.cap) {
                    slot[a] = f32(c);
                } else {
                    slot[a] = -1.0;
                }
                c++;
            }
        }
        var s = 0.0;
        for (var i = 0u; i < p.n; i++) {
            s += probs[i * p.e + li];
        }
        counts[li] = c;
        mean_p[li] = s / f32(p.n);
        stats[2u + li] = f32(c);
    }
    workgroupBarrier();
    if (li == 0u) {
        var balance = 0.0;
        var dropped = 0u;
        for (var x = 0u; x < p.e; x++) {
            balance += f32(counts[x]) / f32(p.n * p.k) * mean_p[x];
            if (counts[x] > p.cap) {
                dropped += counts[x] - p.cap;
            }
        }
        stats[0] = f32(p.e) * balance;
        stats[1] = f32(dropped);
    }
}
