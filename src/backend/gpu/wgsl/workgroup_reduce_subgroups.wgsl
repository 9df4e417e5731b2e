// workgroup_reduce_subgroups.wgsl: workgroup_reduce.wgsl's interface (struct Lane, workgroup_sum, workgroup_max;
// the same rules: one-dimensional workgroups of WG invocations, called in uniform control flow, ending on a
// barrier) over subgroup operations. Compiled only where the device has them (wgpu's `Features::SUBGROUP`;
// `Gpu::reducing` picks it). No `enable subgroups;` directive: naga 30 gates the built-ins on the device's
// feature and does not parse that directive yet.
//
// A subgroup's invocations combine their values without workgroup memory or barriers (subgroupAdd, subgroupMax);
// the subgroups of a workgroup then meet in workgroup memory:
//   1. s = subgroupAdd(v) (or subgroupMax) over the invocation's subgroup;
//   2. one invocation of each subgroup writes s to partials[subgroup_id]; a barrier;
//   3. every subgroup reads the num_subgroups partials — invocation i those at i, i + size, i + 2·size, … in
//      order — and combines them with a second subgroupAdd: each subgroup the same values in the same lanes, so
//      every invocation gets the same bits;
//   4. a barrier, so that the partials may be written again.
// Two barriers, where the tree has log2(WG) + 2. Any subgroup size works (sizes are powers of two): one ≤ WG
// divides WG, so the subgroups are full and number at most WG (WG partials always suffice); one > WG makes a
// single partly filled subgroup, whose s is already the total (num_subgroups = 1: step 3 returns s, whichever
// lanes are active).
//
// Order: the device's within a subgroup, then across the partials as step 3 reads them. The bits may differ from
// the tree's, and between devices (their subgroup sizes differ); nothing depends on timing (no atomics).

struct Lane {
    @builtin(local_invocation_index) t: u32,
    // The invocation's index in its subgroup, its subgroup's index in the workgroup, the number of subgroups in
    // the workgroup, and the invocations of a subgroup.
    @builtin(subgroup_invocation_id) id: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_size) size: u32,
}

var<workgroup> partials: array<f32, WG>;

fn workgroup_sum(v: f32, lane: Lane) -> f32 {
    let s = subgroupAdd(v);
    share(s, lane);
    var r = 0.0;
    for (var k = lane.id; k < lane.subgroups; k += lane.size) {
        r += partials[k];
    }
    r = select(subgroupAdd(r), s, lane.subgroups == 1u);
    workgroupBarrier();
    return r;
}

fn workgroup_max(v: f32, lane: Lane) -> f32 {
    let s = subgroupMax(v);
    share(s, lane);
    var r = NEG_BIG;
    for (var k = lane.id; k < lane.subgroups; k += lane.size) {
        r = max(r, partials[k]);
    }
    r = select(subgroupMax(r), s, lane.subgroups == 1u);
    workgroupBarrier();
    return r;
}

// Step 2 and its barrier: the subgroup's value s (the same in each of its invocations) into its partial, written
// by one invocation: the first active one (subgroupBroadcastFirst), which assumes nothing about which lanes a
// partly filled subgroup holds.
fn share(s: f32, lane: Lane) {
    if (lane.id == subgroupBroadcastFirst(lane.id)) {
        partials[lane.subgroup] = s;
    }
    workgroupBarrier();
}
