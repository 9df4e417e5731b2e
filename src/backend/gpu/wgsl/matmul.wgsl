// matmul.wgsl: C (+)= A·B (+ bias), the one tiled kernel behind the linear layer's forward and backward, with
// three epilogues (entry points), applied where each thread's finished outputs are still in registers:
//   main          C (+)= A·B (+ bias)
//   act_forward   C = A·B (+ bias), the pre-activation, and act_out = act(C)           (the FFN's fc layer)
//   act_backward  C = (A·B) ⊙ act'(pre)                                                (the FFN's proj layer, dinp)
// The fused ones take plain activations only (relu, gelu, swish): a gated one pairs column j with column F + j,
// which another workgroup computes, so the Rust side runs those as the product then activation.wgsl.
//
// Bindings (group 0):
//   0 uniform Params         m, n, k; flags (ACCUMULATE, BIAS); strides of A and B; act (activation_fn.wgsl's kinds);
//                            k_split (0: the whole of K)
//   1 read    a: f32         A (M,K): element (i, kk) at a[i*a_rs + kk*a_cs]   (vec4<f32> in the vec4-load kernels)
//   2 read    b: f32         B (K,N): element (kk, j) at b[kk*b_rs + j*b_cs]   (idem)
//   3 read    bias: f32      (N), read only with BIAS
//   4 rw      c: f32         C (M,N), row-major: c[i*N + j]
//   5 rw      act_out: f32   (M,N), act_forward only
//   6 read    pre: f32       (M,N), act_backward only
// The linear layer, inp (N,C), w (OC,C), dout (N,OC), is three stridings of it:
//   forward  out = inp·wᵀ + b   M=N,  N=OC, K=C   A=inp   (a_rs=C, a_cs=1)   B=wᵀ  (b_rs=1, b_cs=C)
//   dinp += dout·w              M=N,  N=C,  K=OC  A=dout  (a_rs=OC, a_cs=1)  B=w   (b_rs=C, b_cs=1)
//   dw   += doutᵀ·inp           M=OC, N=C,  K=N   A=doutᵀ (a_rs=1, a_cs=OC)  B=inp (b_rs=C, b_cs=1)
//
// The register tile RT (a const the Rust side puts before the source, `gpu/matmul.rs`): 4, or 8 for products
// with tiles enough to fill a large GPU. TILE = 16·RT, TK = 64 / RT (so each step stages 1024 elements of A and of
// B: 4 per thread).
// Invocation → element: workgroup (x, y) owns the TILE×TILE tile of C at rows TILE·y.., columns TILE·x..; thread
// (tx, ty) of its 16×16 owns the RT×RT elements C[TILE·y + ty + 16r, TILE·x + tx + 16s], r, s < RT (strided, so
// neighbouring threads store neighbouring columns), and the same elements of act_out. For each step of TK along K
// the 256 threads stage A (TILE×TK) and B (TK×TILE) in workgroup memory, 4 elements of each per thread, walking
// along whichever dimension has stride 1 so that neighbouring threads read neighbouring addresses — one at a time
// (matmul_load.wgsl), or as one 16-byte load where both operands allow (matmul_load_vec4.wgsl); then each thread
// makes TK rank-1 updates of its RT×RT block from registers (2·RT workgroup loads per RT² multiply-adds: RT 4, 8 per
// 16; RT 8, 16 per 64). Rows of the staged tiles are padded to TILE + 1 so that the column-wise stores do not all
// fall in one memory bank. The sums run along K in the same order for either RT: the same bits.
// Edges: elements outside M, N or K are staged as 0 and not stored, so any sizes work.
// Split-K (`main` only, k_split > 0): workgroup (x, y, z) sums only K's rows [z·k_split, (z+1)·k_split) and
// writes its tile into the z-th (M,N) slab of c, c[z·M·N + i·N + j]; the host then sums the slabs (a column sum
// over z). For a weight gradient, M·N is small and K (the batch's rows) long: without the split only
// ⌈M/64⌉·⌈N/64⌉ workgroups would run, each over all of K.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    act: u32,
    k_split: u32,
    _pad1: u32,
    _pad2: u32,
}

const ACCUMULATE: u32 = 1u;
const BIAS: u32 = 2u;

const TILE: u32 = 16u * RT;
const TK: u32 = 64u / RT;
const PAD: u32 = TILE + 1u;
// vec4s per row of a thread's block.
const NV: u32 = RT / 4u;

@group(0) @binding(0) var<uniform> p: Params;
// Bindings 1 and 2 (a, b) and `stage_tiles` are in matmul_load.wgsl (f32 loads) or matmul_load_vec4.wgsl.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read_write> act_out: array<f32>;
@group(0) @binding(6) var<storage, read> pre: array<f32>;

// as_t[kk*PAD + i]: A tile, K-major; bs_t[kk*PAD + j]: B tile, K-major (1040 or 1032 floats).
var<workgroup> as_t: array<f32, TK * PAD>;
var<workgroup> bs_t: array<f32, TK * PAD>;

// The product's RT×RT block of thread (tx, ty) in the tile at (m0, n0), summed over K's rows kb .. ke:
// acc[r·NV + s/4][s%4] is (A·B)[m0 + ty + 16r, n0 + tx + 16s] over them. Called by every thread of the workgroup
// (it has barriers).
fn tile_product(m0: u32, n0: u32, tx: u32, ty: u32, li: u32, kb: u32, ke: u32) -> array<vec4<f32>, RT * NV> {
    var acc: array<vec4<f32>, RT * NV>;
    for (var r = 0u; r < RT * NV; r++) {
        acc[r] = vec4<f32>(0.0);
    }
    for (var k0 = kb; k0 < ke; k0 += TK) {
        stage_tiles(m0, n0, li, k0, ke);
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var ar: array<f32, RT>;
            for (var r = 0u; r < RT; r++) {
                ar[r] = as_t[kk * PAD + ty + 16u * r];
            }
            for (var h = 0u; h < NV; h++) {
                let o = kk * PAD + tx + 64u * h;
                let br = vec4<f32>(bs_t[o], bs_t[o + 16u], bs_t[o + 32u], bs_t[o + 48u]);
                for (var r = 0u; r < RT; r++) {
                    acc[r * NV + h] += ar[r] * br;
                }
            }
        }
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * TILE;
    let n0 = wg.x * TILE;
    var kb = 0u;
    var ke = p.k;
    var slab = 0u;
    if (p.k_split > 0u) {
        kb = wg.z * p.k_split;
        ke = min(p.k, kb + p.k_split);
        slab = wg.z * p.m * p.n;
    }
    let acc = tile_product(m0, n0, lid.x, lid.y, li, kb, ke);
    for (var r = 0u; r < RT; r++) {
        let i = m0 + lid.y + 16u * r;
        for (var s = 0u; s < RT; s++) {
            let j = n0 + lid.x + 16u * s;
            if (i < p.m && j < p.n) {
                var v = acc[r * NV + s / 4u][s % 4u];
                if ((p.flags & BIAS) != 0u) {
                    v += bias[j];
                }
                if ((p.flags & ACCUMULATE) != 0u) {
                    v += c[slab + i * p.n + j];
                }
                c[slab + i * p.n + j] = v;
            }
        }
    }
}

// The FFN's fc layer: c = A·B (+ bias), the pre-activation the backward needs, and act_out = act(c), from the
// same registers (no second pass reading c back).
@compute @workgroup_size(16, 16)
fn act_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * TILE;
    let n0 = wg.x * TILE;
    let acc = tile_product(m0, n0, lid.x, lid.y, li, 0u, p.k);
    for (var r = 0u; r < RT; r++) {
        let i = m0 + lid.y + 16u * r;
        for (var s = 0u; s < RT; s++) {
            let j = n0 + lid.x + 16u * s;
            if (i < p.m && j < p.n) {
                var v = acc[r * NV + s / 4u][s % 4u];
                if ((p.flags & BIAS) != 0u) {
                    v += bias[j];
                }
                c[i * p.n + j] = v;
                act_out[i * p.n + j] = act(p.act, v).x;
            }
        }
    }
}

// The FFN's proj layer's input gradient carried through the activation: c = (dout·w) ⊙ act'(pre), written (a
// pre-activation's gradient has no other term), so dout·w itself is never stored.
@compute @workgroup_size(16, 16)
fn act_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * TILE;
    let n0 = wg.x * TILE;
    let acc = tile_product(m0, n0, lid.x, lid.y, li, 0u, p.k);
    for (var r = 0u; r < RT; r++) {
        let i = m0 + lid.y + 16u * r;
        for (var s = 0u; s < RT; s++) {
            let j = n0 + lid.x + 16u * s;
            if (i < p.m && j < p.n) {
                c[i * p.n + j] = acc[r * NV + s / 4u][s % 4u] * act(p.act, pre[i * p.n + j]).y;
            }
        }
    }
}
