// moe_rows.wgsl: moving rows between the tokens and one expert `ex` of a Mixture-of-Experts layer (the reference:
// ops::moe_gather, moe_scatter, moe_combine, moe_combine_backward). An assignment a (token a / k) belongs to the
// expert when choice[a] = ex and 0 ≤ slot[a] < rows.
//
// Bindings (group 0):
//   0 uniform Params (moe_route.wgsl's)
//   1 read    src:    f32   x (gather), dxe (scatter), ye (combine), dout (combine_rows, combine_weights)
//   2 read    choice: f32 (N·k)
//   3 read    slot:   f32 (N·k)
//   4 read    weight: f32 (N·k)
//   5 read    other:  f32   ye (combine_weights; unused otherwise)
//   6 rw      dst:    f32   xe (gather; cleared before), dx, out (+=), dye (+=), dweight (+=)
// Entry points and their invocations:
//   gather          (a, col) < N·k·C:  dst[slot·C + col] = src[token·C + col]
//   scatter         (t, col) < N·C:    dst[t·C + col] += Σ_j src[slot·C + col]        over t's assignments to ex
//   combine         (t, col) < N·C:    dst[t·C + col] += Σ_j weight·src[slot·C + col]
//   combine_rows    (a, col) < N·k·C:  dst[slot·C + col] += weight[a]·src[token·C + col]
//   combine_weights a < N·k:           dst[a] += Σ_col src[token·C + col]·other[slot·C + col]
// Each output element is written by one invocation: no atomics.

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
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> choice: array<f32>;
@group(0) @binding(3) var<storage, read> slot: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> other: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

// The row of assignment a in the expert's rows, or −1 when a is not the expert's.
fn row_of(a: u32) -> i32 {
    let s = slot[a];
    if (u32(choice[a]) == p.ex && s >= 0.0 && u32(s) < p.rows) {
        return i32(s);
    }
    return -1;
}

fn index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return group_index(wg, nwg) * 64u + li;
}

@compute @workgroup_size(64)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = index(wg, nwg, li);
    if (i >= p.n * p.k * p.c) {
        return;
    }
    let a = i / p.c;
    let col = i % p.c;
    let r = row_of(a);
    if (r >= 0) {
        dst[u32(r) * p.c + col] = src[(a / p.k) * p.c + col];
    }
}

@compute @workgroup_size(64)
fn scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = index(wg, nwg, li);
    if (i >= p.n * p.c) {
        return;
    }
    let t = i / p.c;
    let col = i % p.c;
    for (var j = 0u; j < p.k; j++) {
        let r = row_of(t * p.k + j);
        if (r >= 0) {
            dst[i] += src[u32(r) * p.c + col];
        }
    }
}

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = index(wg, nwg, li);
    if (i >= p.n * p.c) {
        return;
    }
    let t = i / p.c;
    let col = i % p.c;
    for (var j = 0u; j < p.k; j++) {
        let a = t * p.k + j;
        let r = row_of(a);
        if (r >= 0) {
            dst[i] += weight[a] * src[u32(r) * p.c + col];
        }
    }
}

@compute @workgroup_size(64)
fn combine_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = index(wg, nwg, li);
    if (i >= p.n * p.k * p.c) {
        return;
    }
    let a = i / p.c;
    let col = i % p.c;
    let r = row_of(a);
    if (r >= 0) {
        dst[u32(r) * p.c + col] += weight[a] * src[(a / p.k) * p.c + col];
    }
}

@compute @workgroup_size(64)
fn combine_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let a = index(wg, nwg, li);
    if (a >= p.n * p.k) {
        return;
    }
    let r = row_of(a);
    if (r >= 0) {
        let t = a / p.k;
        var s = 0.0;
        for (var col = 0u; col < p.c; col++) {
            s += src[t * p.c + col] * other[u32(r) * p.c + col];
        }
        dst[a] += s;
    }
}
