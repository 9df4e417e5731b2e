// gru.wgsl: the GRU recurrence (Cho et al. 2014) of the recurrent position encoding, PyTorch's gate order (r, z, n).
// The input projection gi = x·W_ihᵀ + b_ih is a matmul done before; this is the part that is sequential in T.
//
// Bindings (group 0), shared by the entry points (an entry point that does not use one gets a dummy):
//   0 uniform Params     b (B), t (T), c (C), flags (BIAS, H0)
//   1 read    gi: f32    forward: gi (B,T,3C);  params: dgh (B,T,3C), what `backward` left in o2
//   2 read    w: f32     (3C,C) W_hh
//   3 read    bh: f32    (3C) b_hh, read only with BIAS
//   4 read    h0: f32    (B,C) the state before position 0, read only with H0 (else zeros)
//   5 read    dh: f32    (B,T,C) ∂L/∂h (backward)
//   6 rw      h: f32     (B,T,C): written by `forward`, read by `backward` and `params`
//   7 rw      gates: f32 (B,T,4C) [r | z | n | W_hn·h_{t−1} + b_hn]: written by `forward`, read by `backward`
//   8 rw      o1: f32    backward: dgi (B,T,3C) +=;  params: dW_hh (3C,C) +=
//   9 rw      o2: f32    backward: dgh (B,T,3C) (written: [dr̂ | dẑ | dn̂ ⊙ r]);  params: db_hh (3C) += (with BIAS)
//  10 rw      carry: f32 (B,C) backward's ∂L/∂h_t sent back from t + 1 (scratch)
//
// Maths (ops/gru.rs has the derivation): r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r ⊙ gh_n),
// h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}, gh = W_hh·h_{t−1} + b_hh.
// Invocation → element:
//   forward, backward   workgroup g owns batch row g and walks its positions in order (backward: in reverse); its 64
//                       threads take the channels ≡ thread (mod 64) of each step, with a storage barrier between
//                       steps (and between backward's two phases), so a step reads only what the last one finished.
//   params              invocation k owns dW_hh element k = o·C + i and sums over (b, t) in order; the invocation
//                       with i = 0 also owns db_hh[o].

struct Params {
    b: u32,
    t: u32,
    c: u32,
    flags: u32,
}

const BIAS: u32 = 1u;
const H0: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gi: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bh: array<f32>;
@group(0) @binding(4) var<storage, read> h0: array<f32>;
@group(0) @binding(5) var<storage, read> dh: array<f32>;
@group(0) @binding(6) var<storage, read_write> h: array<f32>;
@group(0) @binding(7) var<storage, read_write> gates: array<f32>;
@group(0) @binding(8) var<storage, read_write> o1: array<f32>;
@group(0) @binding(9) var<storage, read_write> o2: array<f32>;
@group(0) @binding(10) var<storage, read_write> carry: array<f32>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh without overflow: e^(−2|x|) lies in (0, 1].
fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// Channel i of h_{t−1} for batch row b: h0 (or 0) before position 0.
fn prev(b: u32, t: u32, i: u32) -> f32 {
    if (t == 0u) {
        if ((p.flags & H0) != 0u) {
            return h0[b * p.c + i];
        }
        return 0.0;
    }
    return h[(b * p.t + t - 1u) * p.c + i];
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let b = group_index(wg, nwg);
    if (b >= p.b) {
        return;
    }
    let c = p.c;
    for (var t = 0u; t < p.t; t++) {
        let row = b * p.t + t;
        for (var j = tid; j < c; j += 64u) {
            var gr = 0.0;
            var gz = 0.0;
            var gn = 0.0;
            if ((p.flags & BIAS) != 0u) {
                gr = bh[j];
                gz = bh[c + j];
                gn = bh[2u * c + j];
            }
            for (var i = 0u; i < c; i++) {
                let x = prev(b, t, i);
                gr += w[j * c + i] * x;
                gz += w[(c + j) * c + i] * x;
                gn += w[(2u * c + j) * c + i] * x;
            }
            let g = row * 3u * c;
            let r = sigmoid(gi[g + j] + gr);
            let z = sigmoid(gi[g + c + j] + gz);
            let n = tanh_safe(gi[g + 2u * c + j] + r * gn);
            h[row * c + j] = (1.0 - z) * n + z * prev(b, t, j);
            let s = row * 4u * c;
            gates[s + j] = r;
            gates[s + c + j] = z;
            gates[s + 2u * c + j] = n;
            gates[s + 3u * c + j] = gn;
        }
        storageBarrier();
    }
}

@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let b = group_index(wg, nwg);
    if (b >= p.b) {
        return;
    }
    let c = p.c;
    for (var j = tid; j < c; j += 64u) {
        carry[b * c + j] = 0.0;
    }
    storageBarrier();
    for (var k = 0u; k < p.t; k++) {
        let t = p.t - 1u - k;
        let row = b * p.t + t;
        let s = row * 4u * c;
        let g = row * 3u * c;
        // Phase 1: the gate gradients of this step.
        for (var j = tid; j < c; j += 64u) {
            let r = gates[s + j];
            let z = gates[s + c + j];
            let n = gates[s + 2u * c + j];
            let ghn = gates[s + 3u * c + j];
            let d = dh[row * c + j] + carry[b * c + j];
            let dn_hat = d * (1.0 - z) * (1.0 - n * n);
            let dz_hat = d * (prev(b, t, j) - n) * z * (1.0 - z);
            let dr_hat = dn_hat * ghn * r * (1.0 - r);
            o1[g + j] += dr_hat;
            o1[g + c + j] += dz_hat;
            o1[g + 2u * c + j] += dn_hat;
            o2[g + j] = dr_hat;
            o2[g + c + j] = dz_hat;
            o2[g + 2u * c + j] = dn_hat * r;
        }
        storageBarrier();
        // Phase 2: dh_{t−1} = dh ⊙ z + W_hhᵀ·dgh; channel i is read in phase 1 by this same invocation only.
        for (var i = tid; i < c; i += 64u) {
            let d = dh[row * c + i] + carry[b * c + i];
            var acc = d * gates[s + c + i];
            for (var o = 0u; o < 3u * c; o++) {
                acc += w[o * c + i] * o2[g + o];
            }
            carry[b * c + i] = acc;
        }
        storageBarrier();
    }
}

@compute @workgroup_size(64)
fn params(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let k = group_index(wg, nwg) * 64u + tid;
    let c = p.c;
    if (k >= 3u * c * c) {
        return;
    }
    let o = k / c;
    let i = k % c;
    var acc = 0.0;
    var accb = 0.0;
    for (var b = 0u; b < p.b; b++) {
        for (var t = 0u; t < p.t; t++) {
            let d = gi[(b * p.t + t) * 3u * c + o];
            acc += d * prev(b, t, i);
            accb += d;
        }
    }
    o1[k] += acc;
    if (i == 0u && (p.flags & BIAS) != 0u) {
        o2[o] += accb;
    }
}
