// rope.wgsl: rotary position embedding (RoFormer, Su et al. 2021), rotate-half layout (GPT-NeoX, Hugging Face),
// in place. For a head row x (HS) at position t, h = HS/2, angle a_i = t·theta^(−2i/HS):
//   x[i] ← x[i] cos a − x[i+h] sin a,   x[i+h] ← x[i+h] cos a + x[i] sin a;   `inverse` rotates by −a (the backward).
// The (cos, sin) table is made on the host with the reference's f32 formula, so angles of long positions lose
// nothing to the GPU's sin/cos.
//
// Bindings (group 0):
//   0 uniform Params    rows (B·H·T), t (T), half (HS/2), inverse (0 or 1), hs (HS), nh (H), and the layout of the
//                       tensor in x: element (b, h, t, d) at off + b·batch + h·head + t·row + d (`HeadLayout`)
//   1 read    table: f32 (T, HS/2, 2): cos a, sin a of row position t, pair i
//   2 rw      x: f32    a (B, H, T, HS) tensor at that layout (the q or k columns of qkv, or of its gradient)
// Invocation → element: invocation e < rows·half (256 per workgroup) owns the pair i = e % half of row
// r = e / half = (b·H + h)·T + t: (x[base + i], x[base + i + half]) with base = off + b·batch + h·head + t·row; the row
// sits at position t.

struct Params {
    rows: u32,
    t: u32,
    half: u32,
    inverse: u32,
    hs: u32,
    nh: u32,
    _pad0: u32,
    _pad1: u32,
    off: u32,
    batch: u32,
    head: u32,
    row: u32,
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
    let ti = r % p.t;
    let h = (r / p.t) % p.nh;
    let bi = r / (p.t * p.nh);
    let k = (ti * p.half + i) * 2u;
    let cos_a = table[k];
    var sin_a = table[k + 1u];
    if (p.inverse != 0u) {
        sin_a = -sin_a;
    }
    let base = p.off + bi * p.batch + h * p.head + ti * p.row;
    let x1 = x[base + i];
    let x2 = x[base + i + p.half];
    x[base + i] = x1 * cos_a - x2 * sin_a;
    x[base + i + p.half] = x2 * cos_a + x1 * sin_a;
}
