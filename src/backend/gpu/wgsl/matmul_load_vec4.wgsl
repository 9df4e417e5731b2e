// matmul_load_vec4.wgsl: matmul.wgsl's operands as vec4<f32> and its staging of one step along K, each thread
// taking 4 consecutive elements of A and of B with one 16-byte load apiece. The Rust side (`gpu/matmul.rs`,
// `vec4_loads`) picks it where every such load is whole and aligned: each operand's stride-1 dimension (K, or M for
// A and N for B) and its other stride are multiples of 4, so 4 consecutive elements are one vec4 and either all
// inside the matrix or all outside it (ke and the tiles' corners are multiples of 4 too).

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;

fn stage_tiles(m0: u32, n0: u32, li: u32, k0: u32, ke: u32) {
    // A: thread li's 4 elements along A's stride-1 dimension.
    var i: u32;
    var kk: u32;
    var av = vec4<f32>(0.0);
    if (p.a_cs == 1u) {
        kk = 4u * (li % (TK / 4u));
        i = li / (TK / 4u);
        if (m0 + i < p.m && k0 + kk < ke) {
            av = a[((m0 + i) * p.a_rs + k0 + kk) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            as_t[(kk + q) * PAD + i] = av[q];
        }
    } else {
        i = 4u * (li % (TILE / 4u));
        kk = li / (TILE / 4u);
        if (m0 + i < p.m && k0 + kk < ke) {
            av = a[(m0 + i + (k0 + kk) * p.a_cs) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            as_t[kk * PAD + i + q] = av[q];
        }
    }
    // B: the same along B's stride-1 dimension.
    var j: u32;
    var bv = vec4<f32>(0.0);
    if (p.b_rs == 1u) {
        kk = 4u * (li % (TK / 4u));
        j = li / (TK / 4u);
        if (n0 + j < p.n && k0 + kk < ke) {
            bv = b[(k0 + kk + (n0 + j) * p.b_cs) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            bs_t[(kk + q) * PAD + j] = bv[q];
        }
    } else {
        j = 4u * (li % (TILE / 4u));
        kk = li / (TILE / 4u);
        if (n0 + j < p.n && k0 + kk < ke) {
            bv = b[((k0 + kk) * p.b_rs + n0 + j) / 4u];
        }
        for (var q = 0u; q < 4u; q++) {
            bs_t[kk * PAD + j + q] = bv[q];
        }
    }
}
