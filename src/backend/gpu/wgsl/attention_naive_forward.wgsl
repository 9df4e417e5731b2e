// attention_naive_forward.wgsl: scaled dot-product attention the textbook way — the materialising counterpart of
// the fused attention_forward.wgsl, for teaching and for the fused-vs-naive benchmark (examples/gpu_bench.rs);
// training does not use it. Three passes, each a separate dispatch, over a (B,NH,T,S) matrix in device memory:
//   scores        probs[b,h,i,j] = scale·q_i·k_j, or NEG_BIG where the mask hides key j from query i
//   softmax       each row of probs in place: p_j = exp(s_j − max) / Σ_j' exp(s_j' − max)  (masked keys: 0)
//   weighted_sum  out[b,i,h,:] = Σ_j p_ij·v_j
// The probabilities stay in `probs` for the backward (attention_naive_backward.wgsl): that matrix of B·NH·T·S
// floats is the memory FlashAttention never allocates. Same layouts and masks as the fused kernels (causal with
// q_offset, bidirectional, cross S ≠ T; GQA/MQA: query head h reads kv head h / (NH/NKV)), so the same inputs
// give the same `out`; no score bias (ALiBi, relative) and no lse.
//
// Bindings (group 0), one layout for the three entry points (each uses part of it):
//   0 uniform Params      b, t, s, nh, nkv, hs, causal, q_offset, scale, and the layouts q_lay, k_lay, v_lay
//   1 read    q: f32      (B,NH,T,HS) at q_lay (q, k and v may be one buffer: self-attention's qkv rows)
//   2 read    k: f32      (B,NKV,S,HS) at k_lay
//   3 read    v: f32      (B,NKV,S,HS) at v_lay
//   4 rw      probs: f32  (B,NH,T,S): the scores, then (softmax) the probabilities
//   5 rw      out: f32    (B,T,NH·HS), heads concatenated
// Invocation → element: 64 invocations per workgroup, e = 64·(linear workgroup index) + local index; e past the
// end returns. Every element has exactly one writer.
//   scores        e = ((b·NH + h)·T + i)·S + j   writes probs[b,h,i,j]
//   softmax       e = (b·NH + h)·T + i           rewrites the row probs[b,h,i,:]
//   weighted_sum  e = ((b·T + i)·NH + h)·HS + d  writes out[b,i,h,d] (e is out's own index)

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
@group(0) @binding(4) var<storage, read_write> probs: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Whether query i (of this call) may see key j: all keys, or (causal) those up to its absolute position.
fn visible(i: u32, j: u32) -> bool {
    return p.causal == 0u || j <= p.q_offset + i;
}

@compute @workgroup_size(64)
fn scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 64u + li;
    if (e >= p.b * p.nh * p.t * p.s) {
        return;
    }
    let j = e % p.s;
    let row = e / p.s; // (b·NH + h)·T + i
    let i = row % p.t;
    let bh = row / p.t;
    let g = (bh % p.nh) / (p.nh / p.nkv);
    if (!visible(i, j)) {
        probs[e] = NEG_BIG;
        return;
    }
    let qi = at(p.q_lay, bh / p.nh, bh % p.nh, i);
    let kj = at(p.k_lay, bh / p.nh, g, j);
    var dot = 0.0;
    for (var d = 0u; d < p.hs; d++) {
        dot += q[qi + d] * k[kj + d];
    }
    probs[e] = p.scale * dot;
}

@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let row = group_index(wg, nwg) * 64u + li;
    if (row >= p.b * p.nh * p.t) {
        return;
    }
    let i = row % p.t;
    let base = row * p.s;
    var m = NEG_BIG;
    for (var j = 0u; j < p.s; j++) {
        if (visible(i, j)) {
            m = max(m, probs[base + j]);
        }
    }
    var l = 0.0;
    for (var j = 0u; j < p.s; j++) {
        if (visible(i, j)) {
            l += exp(probs[base + j] - m);
        }
    }
    // A row that sees no key at all (l = 0) gets probabilities 0, and so an output of 0, as the fused kernel.
    var inv = 0.0;
    if (l > 0.0) {
        inv = 1.0 / l;
    }
    for (var j = 0u; j < p.s; j++) {
        var pj = 0.0;
        if (visible(i, j)) {
            pj = exp(probs[base + j] - m) * inv;
        }
        probs[base + j] = pj;
    }
}

@compute @workgroup_size(64)
fn weighted_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 64u + li;
    if (e >= p.b * p.t * p.nh * p.hs) {
        return;
    }
    let d = e % p.hs;
    let h = (e / p.hs) % p.nh;
    let i = (e / (p.hs * p.nh)) % p.t;
    let bi = e / (p.hs * p.nh * p.t);
    let g = h / (p.nh / p.nkv);
    let prow = ((bi * p.nh + h) * p.t + i) * p.s;
    // Over every key, masked ones included (their p is 0): the full (T,S)·(S,HS) product, as a naive version does.
    var acc = 0.0;
    for (var j = 0u; j < p.s; j++) {
        acc += probs[prow + j] * v[at(p.v_lay, bi, g, j) + d];
    }
    out[e] = acc;
}
