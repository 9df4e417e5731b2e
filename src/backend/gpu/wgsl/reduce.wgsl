// reduce.wgsl: sums, and the scaling of a buffer (gradient clipping).
//
// Bindings (group 0), shared by every entry point:
//   0 uniform Params    n, cols, chunk, flags, factor, out_index
//   1 read    x: f32    the input
//   2 rw      out: f32  the output (or, for `scale` and `clip`, the buffer scaled in place)
//
// Entry points and their invocation → element maps:
//   col_sum   x (n rows, cols) row-major → out[s*cols + j] (+)= Σ_i x[i*cols + j] over the rows i of split s:
//             [s·chunk, min(n, (s+1)·chunk)). Workgroup (32, 8): 32 columns of one split; its 8 row phases each sum
//             rows ≡ phase (mod 8) in order, then the 8 partials are added in a fixed tree. Workgroup g owns
//             columns 32(g mod G) .. +31 of split g / G, G = ⌈cols/32⌉. With chunk ≥ n there is one split (out[j]);
//             with more (split-K: a few columns over many rows would keep only ⌈cols/32⌉ workgroups busy), the
//             host sums the splits' partials with a second col_sum.
//   sum       out[out_index + g] = Σ x[i] (or Σ x[i]² with SQUARE) over the chunk i ∈ [g·chunk, (g+1)·chunk) of
//             workgroup g (WG = 256 threads: thread t sums i ≡ t (mod 256) in order, then `workgroup_sum` over the
//             256, put before this file: a tree in workgroup memory, or subgroup operations where the device has
//             them). Applied again to the partials until one value is left, so the order depends only on n (and,
//             with subgroups, the device's subgroup size).
//   scale     out[i] *= factor; one element per invocation, 256 per workgroup.
//   clip      out[i] *= min(1, factor / (sqrt(x[0]) + 1e-6)) when that is below 1 (x[0] = Σ g², factor = the
//             clip norm): PyTorch's clip_grad_norm_ without reading the norm back.
//   segment_sum  (binding 3: segs (2·n) u32, segment g = x[segs[2g] .. segs[2g+1]])
//             out[out_index + g] = Σ over segment g of x (or x² with SQUARE); workgroup g, WG threads as `sum`.
//             Gradient norms per tensor: chunks of each tensor, then each tensor's chunks, in one pass each.

struct Params {
    n: u32,
    cols: u32,
    chunk: u32,
    flags: u32,
    factor: f32,
    out_index: u32,
    _pad0: u32,
    _pad1: u32,
}

const ACCUMULATE: u32 = 1u;
const SQUARE: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> segs: array<u32>;

// The workgroup size of sum and segment_sum, for workgroup_sum.
const WG: u32 = 256u;

// col_sum's partials: its 8 row phases × 32 columns.
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(32, 8)
fn col_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wg, nwg);
    let groups = (p.cols + 31u) / 32u;
    let splits = (p.n + p.chunk - 1u) / p.chunk;
    if (g >= groups * max(splits, 1u)) {
        return;
    }
    let split = g / groups;
    let j = (g % groups) * 32u + lid.x;
    let end = min(p.n, (split + 1u) * p.chunk);
    var acc = 0.0;
    if (j < p.cols) {
        for (var i = split * p.chunk + lid.y; i < end; i += 8u) {
            acc += x[i * p.cols + j];
        }
    }
    red[lid.y * 32u + lid.x] = acc;
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if (lid.y < s) {
            red[lid.y * 32u + lid.x] += red[(lid.y + s) * 32u + lid.x];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && j < p.cols) {
        let o = split * p.cols + j;
        var v = red[lid.x];
        if ((p.flags & ACCUMULATE) != 0u) {
            v += out[o];
        }
        out[o] = v;
    }
}

@compute @workgroup_size(WG)
fn sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: Lane) {
    let t = lane.t;
    let g = group_index(wg, nwg);
    if (g >= (p.n + p.chunk - 1u) / p.chunk) {
        return;
    }
    let end = min(g * p.chunk + p.chunk, p.n);
    var acc = 0.0;
    for (var i = g * p.chunk + t; i < end; i += WG) {
        let v = x[i];
        if ((p.flags & SQUARE) != 0u) {
            acc += v * v;
        } else {
            acc += v;
        }
    }
    let total = workgroup_sum(acc, lane);
    if (t == 0u) {
        out[p.out_index + g] = total;
    }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
    let i = group_index(wg, nwg) * 256u + t;
    if (i < p.n) {
        out[i] *= p.factor;
    }
}

@compute @workgroup_size(256)
fn clip(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let i = group_index(wg, nwg) * 256u + t;
    let coef = p.factor / (sqrt(x[0]) + 1e-6);
    if (i < p.n && coef < 1.0) {
        out[i] *= coef;
    }
}

@compute @workgroup_size(WG)
fn segment_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lane: Lane) {
    let t = lane.t;
    let g = group_index(wg, nwg);
    if (g >= p.n) {
        return;
    }
    let end = segs[2u * g + 1u];
    var acc = 0.0;
    for (var i = segs[2u * g] + t; i < end; i += WG) {
        let v = x[i];
        if ((p.flags & SQUARE) != 0u) {
            acc += v * v;
        } else {
            acc += v;
        }
    }
    let total = workgroup_sum(acc, lane);
    if (t == 0u) {
        out[p.out_index + g] = total;
    }
}
