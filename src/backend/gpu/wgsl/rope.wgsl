// rope.wgsl: rotary position embedding (RoFormer, Su et al. 2021), rotate-half layout (GPT-NeoX, Hugging Face),
// in place. For a head row x (HS) at position t, h = HS/2, angle a_i = t·theta^(−2i/HS):
//   x[i] ← x[i] cos a − x[i+h] sin a,   x[i+h] ← x[i+h] cos a + x[i] sin a;   `inverse` rotates by −a (the backward).
// The (cos, sin) table is made on the host with the reference's f32 formula, so angles of long positions lose
// nothing to the GPU's sin/cos.
//
// Bindings (group 0):
//   0 uniform Params    rows (B·H·T), t (T), half (HS/2), inverse (0 or 1), hs (HS)
//   1 read    table: f32 (T, HS/2, 2): cos a, sin a of row position t, pair i
//   2 rw      x: f32    (B·H, T, HS)
// Invocation → element: invocation e < rows·half (256 per workgroup) owns the pair (x[r·HS + i], x[r·HS + i + h]),
// r = e / half, i = e % half; row r sits at position r % T.

struct Params {
    rows: u32,
    t: u32,
    half: u32,
    inverse: u32,
    hs: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let e = group_index(wg, nwg) * 256u + t;
    if (e >= p.rows * p.half) {
        return;
    }
    let r = e / p.half;
    let i = e % p.half;
    let k = ((r % p.t) * p.half + i) * 2u;
    let cos_a = table[k];
    var sin_a = table[k + 1u];
    if (p.inverse != 0u) {
        sin_a = -sin_a;
    }
    let base = r * p.hs;
    let x1 = x[base + i];
    let x2 = x[base + i + p.half];
    x[base + i] = x1 * cos_a - x2 * sin_a;
    x[base + i + p.half] = x2 * cos_a + x1 * sin_a;
}
