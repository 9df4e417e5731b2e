// workgroup_reduce.wgsl: a sum or a max over the invocations of a one-dimensional workgroup, as a tree in
// workgroup memory. Put before the kernels that reduce rows or chunks (norm.wgsl, cross_entropy.wgsl, reduce.wgsl),
// each of which declares WG, its workgroup size (a power of two). workgroup_reduce_subgroups.wgsl is the same
// interface over subgroup operations, put there instead where the device has them (`Gpu::reducing`); this one
// runs on every device.
//
// Interface (both files):
//   struct Lane                      the invocation's built-ins: an entry point takes `lane: Lane`, and `lane.t`
//                                    is its local_invocation_index
//   workgroup_sum(v, lane) -> f32    Σ of every invocation's v, returned to every invocation
//   workgroup_max(v, lane) -> f32    the max of every invocation's v, likewise
// Called in uniform control flow by every invocation of the workgroup. Each ends on a barrier, so the next call
// may reuse the scratch at once.
//
// Order: partials[t] = v; then for s = WG/2, WG/4, …, 1 the invocations t < s combine partials[t] with
// partials[t + s]: a fixed tree, one barrier a level.

struct Lane {
    @builtin(local_invocation_index) t: u32,
}

var<workgroup> partials: array<f32, WG>;

fn workgroup_sum(v: f32, lane: Lane) -> f32 {
    return tree_reduce(v, lane.t, false);
}

fn workgroup_max(v: f32, lane: Lane) -> f32 {
    return tree_reduce(v, lane.t, true);
}

fn tree_reduce(v: f32, t: u32, is_max: bool) -> f32 {
    partials[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            if (is_max) {
                partials[t] = max(partials[t], partials[t + s]);
            } else {
                partials[t] += partials[t + s];
            }
        }
        workgroupBarrier();
    }
    let r = partials[0];
    workgroupBarrier();
    return r;
}
