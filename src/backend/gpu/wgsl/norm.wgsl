// norm.wgsl: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019), forward and backward, rows of C.
//
// Bindings (group 0), shared by the entry points (an entry point that does not use one gets a dummy):
//   0 uniform Params     rows (N), c (C), kind (0 LayerNorm, 1 RMSNorm), flags (BIAS), eps
//   1 read    inp: f32   (N,C)
//   2 read    w: f32     (C)
//   3 read    b: f32     (C), read only with BIAS (forward)
//   4 read    dout: f32  (N,C) (backward)
//   5 rw      mean: f32  (N), 0 for RMSNorm: written by `forward`, read by the backward
//   6 rw      rstd: f32  (N): likewise
//   7 rw      o1: f32    forward: out (N,C); backward_rows: dinp (N,C) +=; backward_params: dw (C) +=
//   8 rw      o2: f32    backward_params: db (C) += (with BIAS)
//
// Maths, with x̂ = (x − μ)·r and g = dout ⊙ w:
//   forward    μ = mean(x) (0 for RMSNorm), r = 1/sqrt(mean((x − μ)²) + eps), out = x̂·w + b
//   backward   LayerNorm dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂));  RMSNorm dx = r·(g − x̂·mean(g ⊙ x̂))
//              dw += Σ_rows dout ⊙ x̂,  db += Σ_rows dout
// Invocation → element:
//   forward, backward_rows   workgroup g owns row g; its WG = 64 threads take columns ≡ thread (mod 64), and the
//                            row sums are `workgroup_sum` over the 64 partials (put before this file: a tree in
//                            workgroup memory, or subgroup operations where the device has them).
//   backward_params          workgroup (32, 8) g owns columns 32g .. 32g+31; its 8 row phases each sum rows
//                            ≡ phase (mod 8), then a fixed tree over the 8.

struct Params {
    rows: u32,
    c: u32,
    kind: u32,
    flags: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const RMS: u32 = 1u;
const BIAS: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(7) var<storage, read_write> o1: array<f32>;
@group(0) @binding(8) var<storage, read_write> o2: array<f32>;

// The row kernels' workgroup size, for workgroup_sum.
const WG: u32 = 64u;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: Lane) {
    let t = lane.t;
    let row = group_index(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.c;
    let cf = f32(p.c);
    var s = 0.0;
    for (var i = t; i < p.c; i += WG) {
        s += inp[base + i];
    }
    var mu = workgroup_sum(s, lane) / cf;
    if (p.kind == RMS) {
        mu = 0.0;
    }
    var v = 0.0;
    for (var i = t; i < p.c; i += WG) {
        let d = inp[base + i] - mu;
        v += d * d;
    }
    let rs = 1.0 / sqrt(workgroup_sum(v, lane) / cf + p.eps);
    if (t == 0u) {
        mean[row] = mu;
        rstd[row] = rs;
    }
    for (var i = t; i < p.c; i += WG) {
        var y = (inp[base + i] - mu) * rs * w[i];
        if ((p.flags & BIAS) != 0u) {
            y += b[i];
        }
        o1[base + i] = y;
    }
}

@compute @workgroup_size(WG)
fn backward_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: Lane) {
    let t = lane.t;
    let row = group_index(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.c;
    let cf = f32(p.c);
    let mu = mean[row];
    let rs = rstd[row];
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = t; i < p.c; i += WG) {
        let g = dout[base + i] * w[i];
        sg += g;
        sgx += g * (inp[base + i] - mu) * rs;
    }
    var g_mean = workgroup_sum(sg, lane) / cf;
    let gx_mean = workgroup_sum(sgx, lane) / cf;
    if (p.kind == RMS) {
        g_mean = 0.0;
    }
    for (var i = t; i < p.c; i += WG) {
        let g = dout[base + i] * w[i];
        let xhat = (inp[base + i] - mu) * rs;
        o1[base + i] += rs * (g - g_mean - xhat * gx_mean);
    }
}

@compute @workgroup_size(32, 8)
fn backward_params(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wg, nwg);
    if (g >= (p.c + 31u) / 32u) {
        return;
    }
    let j = g * 32u + lid.x;
    var dw = 0.0;
    var db = 0.0;
    if (j < p.c) {
        for (var r = lid.y; r < p.rows; r += 8u) {
            let d = dout[r * p.c + j];
            dw += d * (inp[r * p.c + j] - mean[r]) * rstd[r];
            db += d;
        }
    }
    let k = lid.y * 32u + lid.x;
    red[k] = dw;
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if (lid.y < s) {
            red[k] += red[k + s * 32u];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && j < p.c) {
        o1[j] += red[lid.x];
    }
    workgroupBarrier();
    red[k] = db;
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if (lid.y < s) {
            red[k] += red[k + s * 32u];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && j < p.c && (p.flags & BIAS) != 0u) {
        o2[j] += red[lid.x];
    }
}
