// embedding_backward.wgsl: a table gradient from the rows that read it, dw[g] += Σ dx[r] over the rows r of group
// g in increasing order (the host's order, so the sums match it). Used for the token table (group = token id)
// and the learned positions (group = position). Without atomics: the host lists each group's rows (CSR).
//
// Bindings (group 0):
//   0 uniform Params    n (groups·C), c (C), groups
//   1 read    csr: u32  offsets (groups + 1), then the row lists: rows of group g are
//                       csr[groups + 1 + csr[g] .. groups + 1 + csr[g + 1]]
//   2 read    dx: f32   (B·T,C)
//   3 rw      dw: f32   (groups,C) +=
// Invocation → element: invocation e < groups·C (256 per workgroup) owns dw[e], group e / C, channel e % C.

struct Params {
    n: u32,
    c: u32,
    groups: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> csr: array<u32>;
@group(0) @binding(2) var<storage, read> dx: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = group_index(wg, nwg) * 256u + li;
    if (e >= p.n) {
        return;
    }
    let g = e / p.c;
    let j = e % p.c;
    let lists = p.groups + 1u;
    let end = csr[g + 1u];
    var acc = dw[e];
    for (var k = csr[g]; k < end; k++) {
        acc += dx[csr[lists + k] * p.c + j];
    }
    dw[e] = acc;
}
