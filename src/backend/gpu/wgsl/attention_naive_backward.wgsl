// attention_naive_backward.wgsl: the backward of attention_naive_forward.wgsl from the probabilities P it kept —
// the materialising counterpart of attention_backward.wgsl (which recomputes P from lse instead). With dO = dout,
// one dispatch per line, in this order:
//   dv                dV = Pᵀ·dO          dv[b,g,j,:] += Σ_{h of g} Σ_i p_ij·dout[b,i,h,:]
//   dprobs            dP = dO·Vᵀ          dscores[b,h,i,j] = dout[b,i,h,:]·v[b,g,j,:]
//   softmax_backward  dS = P ⊙ (dP − rowsum(dP ⊙ P)), each row of dscores in place:
//                                         ds_j = p_j·(dp_j − Σ_j' p_j'·dp_j')
//   dq                dQ = scale·dS·K     dq[b,h,i,:] += scale·Σ_j ds_ij·k[b,g,j,:]
//   dk                dK = scale·dSᵀ·Q    dk[b,g,j,:] += scale·Σ_{h of g} Σ_i ds_ij·q[b,h,i,:]
// (g = h / (NH/NKV), the kv head of query head h; with MHA g = h and the sums over "h of g" have one term.)
// dscores is a second (B,NH,T,S) matrix, scratch of this backward. Masked entries have p = 0, so ds = 0 there and
// the sums may run over every i and j, as a naive version does. Gradients ACCUMULATE (+=), as the fused kernels'.
//
// Bindings (group 0), one layout for the five entry points (each uses part of it; 7 storage buffers, within
// WebGPU's 8 per stage):
//   0 uniform Params        as attention_naive_forward.wgsl
//   1 read    q: f32        (B,NH,T,HS) at q_lay
//   2 read    k: f32        (B,NKV,S,HS) at k_lay
//   3 read    v: f32        (B,NKV,S,HS) at v_lay
//   4 read    dout: f32     (B,T,NH·HS)
//   5 read    probs: f32    (B,NH,T,S), from the forward
//   6 rw      dscores: f32  (B,NH,T,S): dP (dprobs), then dS in place (softmax_backward)
//   7 rw      grad: f32     the buffer the entry point accumulates into: dv (B,NKV,S,HS) at v_lay, dq (B,NH,T,HS)
//                           at q_lay or dk (B,NKV,S,HS) at k_lay (dk and dv in one buffer; dq in it too, or in
//                           its own); unused by dprobs and softmax_backward
// Invocation → element: 64 invocations per workgroup, e = 64·(linear workgroup index) + local index; e past the
// end returns. Every element has exactly one writer.
//   dv, dk            e = ((b·NKV + g)·S + j)·HS + d   owns dv or dk[b,g,j,d] (its element at v_lay or k_lay)
//   dprobs            e = ((b·NH + h)·T + i)·S + j     writes dscores[b,h,i,j]
//   softmax_backward  e = (b·NH + h)·T + i             rewrites the row dscores[b,h,i,:]
//   dq                e = ((b·NH + h)·T + i)·HS + d    owns dq[b,h,i,d] (its element at q_lay)

struct Params {
    b: u32,
    t: u32,
    s: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    causal: u32,
    q_offset: u32,
    scale: f32,
    q_lay: vec4<u32>,
    k_lay: vec4<u32>,
    v_lay: vec4<u32>,
}

// Where row t of head h of batch b starts in q (or dq), k (dk), v (dv): a layout (offset, batch, head, row strides)
// puts element (b, h, t, d) at offset + b·batch + h·head + t·row + d (`backend::HeadLayout`).
fn at(lay: vec4<u32>, b: u32, h: u32, t: u32) -> u32 {
    return lay.x + b * lay.y + h * lay.z + t * lay.w;
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> probs: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscores: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad: array<f32>;

// Where row i, head h of batch b starts in dout (B,T,NH·HS).
fn dout_row(bi: u32, i: u32, h: u32) -> u32 {
    return (bi * p.t + i) * p.nh * p.hs + h * p.hs;
}

@compute @workgroup_size(64)
fn dv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 64u + li;
    if (e >= p.b * p.nkv * p.s * p.hs) {
        return;
    }
    let d = e % p.hs;
    let j = (e / p.hs) % p.s;
    let g = (e / (p.hs * p.s)) % p.nkv;
    let bi = e / (p.hs * p.s * p.nkv);
    let group = p.nh / p.nkv;
    var acc = 0.0;
    for (var h = g * group; h < (g + 1u) * group; h++) {
        for (var i = 0u; i < p.t; i++) {
            acc += probs[((bi * p.nh + h) * p.t + i) * p.s + j] * dout[dout_row(bi, i, h) + d];
        }
    }
    grad[at(p.v_lay, bi, g, j) + d] += acc;
}

@compute @workgroup_size(64)
fn dprobs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 64u + li;
    if (e >= p.b * p.nh * p.t * p.s) {
        return;
    }
    let j = e % p.s;
    let i = (e / p.s) % p.t;
    let h = (e / (p.s * p.t)) % p.nh;
    let bi = e / (p.s * p.t * p.nh);
    let g = h / (p.nh / p.nkv);
    let orow = dout_row(bi, i, h);
    let vrow = at(p.v_lay, bi, g, j);
    var dot = 0.0;
    for (var d = 0u; d < p.hs; d++) {
        dot += dout[orow + d] * v[vrow + d];
    }
    dscores[e] = dot;
}

@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row = group_index(wg, nwg) * 64u + li;
    if (row >= p.b * p.nh * p.t) {
        return;
    }
    let base = row * p.s;
    var delta = 0.0;
    for (var j = 0u; j < p.s; j++) {
        delta += probs[base + j] * dscores[base + j];
    }
    for (var j = 0u; j < p.s; j++) {
        dscores[base + j] = probs[base + j] * (dscores[base + j] - delta);
    }
}

@compute @workgroup_size(64)
fn dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 64u + li;
    if (e >= p.b * p.nh * p.t * p.hs) {
        return;
    }
    let d = e % p.hs;
    let row = e / p.hs; // (b·NH + h)·T + i
    let bh = row / p.t;
    let g = (bh % p.nh) / (p.nh / p.nkv);
    var acc = 0.0;
    for (var j = 0u; j < p.s; j++) {
        acc += dscores[row * p.s + j] * k[at(p.k_lay, bh / p.nh, g, j) + d];
    }
    grad[at(p.q_lay, bh / p.nh, bh % p.nh, row % p.t) + d] += p.scale * acc;
}

@compute @workgroup_size(64)
fn dk(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
      @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 64u + li;
    if (e >= p.b * p.nkv * p.s * p.hs) {
        return;
    }
    let d = e % p.hs;
    let j = (e / p.hs) % p.s;
    let g = (e / (p.hs * p.s)) % p.nkv;
    let bi = e / (p.hs * p.s * p.nkv);
    let group = p.nh / p.nkv;
    var acc = 0.0;
    for (var h = g * group; h < (g + 1u) * group; h++) {
        let bh = bi * p.nh + h;
        for (var i = 0u; i < p.t; i++) {
            acc += dscores[(bh * p.t + i) * p.s + j] * q[at(p.q_lay, bi, h, i) + d];
        }
    }
    grad[at(p.k_lay, bi, g, j) + d] += p.scale * acc;
}
