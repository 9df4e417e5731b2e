// adamw.wgsl: one AdamW step (Loshchilov & Hutter 2019) as PyTorch's: decoupled decay p ← p·(1 − lr·wd), then
// m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², p ← p − lr·(m/bc1) / (sqrt(v/bc2) + eps).
// bc1 = 1 − β1^t and bc2 = 1 − β2^t come from the host (computed as the reference does); wd is 0 for tensors
// without decay.
//
// Compiled twice (the Rust side puts `alias V` and `const LANES` before it): V = f32 (LANES 1) for any length, and
// V = vec4<f32> (LANES 4) when the length is a multiple of 4 — 16-byte loads and stores, a quarter of the invocations.
//
// Bindings (group 0):
//   0 uniform Params   n (elements of V), lr, beta1, beta2, eps, wd, bc1, bc2
//   1 read    g: V     (n) gradients
//   2 rw      w: V     (n) parameters
//   3 rw      m: V     (n) first moments
//   4 rw      v: V     (n) second moments
// Invocation → element: invocation i < n (256 per workgroup) updates element i of w, m, v (LANES floats).
//
// Entry `flat`: the whole parameter buffer in one dispatch, as a training step on the device runs it:
//   5 read    decay: u32   (n·LANES / 64) 1 where the 64-float block belongs to a tensor with weight decay (the
//                          layout aligns every tensor to 64 floats, so a vec4 never straddles two), else 0; wd is
//                          the config's weight decay
//   6 read    guard: f32   [Σ g², loss sum, and the same two of the step before]: when any is not finite
//                          (overflow, NaN) this step or the one before diverged and nothing is updated, so the
//                          model and the optimizer keep their last good state — also when the host submitted this
//                          step before it had read the one before (train::gpu: steps are read one step late)

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
    bc1: f32,
    bc2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<V>;
@group(0) @binding(2) var<storage, read_write> w: array<V>;
@group(0) @binding(3) var<storage, read_write> m: array<V>;
@group(0) @binding(4) var<storage, read_write> v: array<V>;
@group(0) @binding(5) var<storage, read> decay: array<u32>;
@group(0) @binding(6) var<storage, read> guard: array<f32>;

fn update(i: u32, wd: f32) {
    let gi = g[i];
    var wi = w[i] * (1.0 - p.lr * wd);
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * gi;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    wi -= p.lr * (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);
    w[i] = wi;
}

// Not NaN and not ±infinity, by the exponent bits (WGSL does not promise IEEE comparisons with NaN).
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256)
fn flat(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let i = group_index(wg, nwg) * 256u + t;
    if (i >= p.n || !is_finite(guard[0]) || !is_finite(guard[1]) || !is_finite(guard[2]) || !is_finite(guard[3])) {
        return;
    }
    update(i, select(0.0, p.wd, decay[i * LANES / 64u] != 0u));
}
