// Helpers shared by attention_forward.wgsl and attention_backward.wgsl, prepended to each (WGSL has no includes,
// and functions cannot take storage arrays as parameters). They read the including file's bindings by name:
//   q, k, v: array<f32> (read) — head rows of HS floats;  bias: array<u32> (read) — ALiBi slopes (f32 bits) or the
//   relative table (f32 bits) followed by the buckets at p.bucket_off;  p: the kernel's params (hs, s, nh,
//   q_offset, causal, bias_kind, bucket_off, and the layouts q_lay, k_lay, v_lay);  ALIBI, RELATIVE: the bias kinds.
// No invocation mapping of their own: each runs in the calling invocation.

// Where row t of head h of batch b starts in q (or dq), k (dk), v (dv): a layout (offset, batch, head, row strides)
// puts element (b, h, t, d) at offset + b·batch + h·head + t·row + d (`backend::HeadLayout`).
fn at(lay: vec4<u32>, b: u32, h: u32, t: u32) -> u32 {
    return lay.x + b * lay.y + h * lay.z + t * lay.w;
}

// Elements 4·d4 .. 4·d4+3 of the head row at `base` (0 past HS).
fn q4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (d4 * 4u + c < p.hs) {
            r[c] = q[base + d4 * 4u + c];
        }
    }
    return r;
}

fn k4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (d4 * 4u + c < p.hs) {
            r[c] = k[base + d4 * 4u + c];
        }
    }
    return r;
}

fn v4(base: u32, d4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (d4 * 4u + c < p.hs) {
            r[c] = v[base + d4 * 4u + c];
        }
    }
    return r;
}

// The additive score bias of head h, query i (of this call), key j.
fn bias_at(h: u32, i: u32, j: u32) -> f32 {
    if (p.bias_kind == ALIBI) {
        let d = f32(p.q_offset + i) - f32(j);
        let slope = bitcast<f32>(bias[h]);
        if (p.causal != 0u) {
            return -slope * d;
        }
        return -slope * abs(d);
    }
    if (p.bias_kind == RELATIVE) {
        let bucket = bias[p.bucket_off + i * p.s + j];
        return bitcast<f32>(bias[bucket * p.nh + h]);
    }
    return 0.0;
}
