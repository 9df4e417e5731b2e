// matmul_load.wgsl: matmul.wgsl's operands as f32 and its staging of one step along K, one element at a time —
// any strides and sizes.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

// A's rows m0 .. m0+TILE × K's rows k0 .. k0+TK into as_t, B's into bs_t (0 outside M, N and ke): element e of the
// 1024 of each is taken by thread e mod 256, consecutive e along the operand's stride-1 dimension.
fn stage_tiles(m0: u32, n0: u32, li: u32, k0: u32, ke: u32) {
    for (var q = 0u; q < 4u; q++) {
        let e = li + q * 256u;
        var i: u32;
        var kk: u32;
        if (p.a_cs == 1u) {
            kk = e % TK;
            i = e / TK;
        } else {
            i = e % TILE;
            kk = e / TILE;
        }
        var v = 0.0;
        if (m0 + i < p.m && k0 + kk < ke) {
            v = a[(m0 + i) * p.a_rs + (k0 + kk) * p.a_cs];
        }
        as_t[kk * PAD + i] = v;
        var j: u32;
        if (p.b_rs == 1u) {
            kk = e % TK;
            j = e / TK;
        } else {
            j = e % TILE;
            kk = e / TILE;
        }
        var w = 0.0;
        if (n0 + j < p.n && k0 + kk < ke) {
            w = b[(k0 + kk) * p.b_rs + (n0 + j) * p.b_cs];
        }
        bs_t[kk * PAD + j] = w;
    }
}
