// common.wgsl: prepended to every kernel's source (after the compile-time constants the Rust side generates).

// The linear workgroup index of a dispatch laid out as a grid (n, 1, 1) or (max, ceil(n / max), 1) by
// `Gpu::grid`: kernels compare it with their number of groups and return past the end.
fn group_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// A finite stand-in for -infinity: WGSL does not promise IEEE infinities, so masks are explicit and running
// maxima start here.
const NEG_BIG: f32 = -3.0e38;
