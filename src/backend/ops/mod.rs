//! The scalar reference ops: direct loops over the maths, written to be read, not to be fast. Every fast kernel
//! is tested against these, and these are tested by finite differences and against PyTorch. `Reference`
//! implements the op trait with them.

mod act;
mod attention;
mod glue;
mod gru;
mod linear;
mod loss;
mod moe;
mod norm;
mod rope;

pub use act::{activation_backward, activation_forward, gelu, gelu_grad, sigmoid};
pub use attention::{attention_backward, attention_forward, attention_probs};
pub use glue::{
    add_into, add_scaled, adamw, append_heads, clip_coef, clip_grad_norm, embedding_backward, embedding_forward, many_mut, mul_into, scale,
    step_is_good, sum_squares, sums_of_squares, two_mut,
};
pub use gru::{gru_backward, gru_forward, gru_prev};
pub use linear::{matmul_act_backward, matmul_act_forward, matmul_backward, matmul_forward};
pub use loss::cross_entropy;
pub use moe::{
    expert_groups, matmul_grouped_backward, matmul_grouped_forward, moe_combine, moe_combine_backward, moe_combine_backward_grouped, moe_combine_grouped,
    moe_gather, moe_gather_grouped, moe_route, moe_route_backward, moe_scatter, moe_scatter_grouped,
};
pub use norm::{norm_backward, norm_forward};
pub use rope::rope_apply;

use super::{AdamW, AttnBias, AttnGrads, AttnShape, Backend, HeadLayout, Reference, Routing, Segment};
use crate::config::{Activation, NormKind};
use crate::error::Result;

/// The mean of a loss sum over `count` rows (NaN when there are none), as every backend forms it.
pub fn mean_loss(total: f64, count: usize) -> f32 {
    if count == 0 {
        f32::NAN
    } else {
        (total / count as f64) as f32
    }
}

impl Backend for Reference {
    super::host_buffers!();

    fn name(&self) -> &'static str {
        "reference"
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn zero(&self, x: &mut [f32]) -> Result<()> {
        x.fill(0.0);
        Ok(())
    }

    fn matmul_forward(&self, out: &mut [f32], inp: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, c: usize, oc: usize) -> Result<()> {
        matmul_forward(out, inp, w, b, n, c, oc);
        Ok(())
    }

    fn matmul_backward(
        &self,
        dinp: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc);
        Ok(())
    }

    fn norm_forward(
        &self,
        kind: NormKind,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        eps: f32,
        c: usize,
    ) -> Result<()> {
        norm_forward(kind, out, mean, rstd, inp, w, b, eps, c);
        Ok(())
    }

    fn norm_backward(
        &self,
        kind: NormKind,
        dinp: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) -> Result<()> {
        norm_backward(kind, dinp, dw, db, dout, inp, w, mean, rstd, c);
        Ok(())
    }

    fn attention_forward(&self, out: &mut [f32], lse: &mut [f32], q: &[f32], k: &[f32], v: &[f32], bias: AttnBias, sh: &AttnShape) -> Result<()> {
        attention_forward(out, lse, q, k, v, bias, sh);
        Ok(())
    }

    fn attention_backward(
        &self,
        grads: AttnGrads<&mut [f32]>,
        dtable: Option<&mut [f32]>,
        dout: &[f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &[f32],
        lse: &[f32],
        bias: AttnBias,
        sh: &AttnShape,
    ) -> Result<()> {
        attention_backward(grads, dtable, dout, q, k, v, out, lse, bias, sh);
        Ok(())
    }

    fn activation_forward(&self, act: Activation, out: &mut [f32], inp: &[f32], f: usize) -> Result<()> {
        activation_forward(act, out, inp, f);
        Ok(())
    }

    fn activation_backward(&self, act: Activation, dinp: &mut [f32], dout: &[f32], inp: &[f32], _out: &[f32], f: usize) -> Result<()> {
        activation_backward(act, dinp, dout, inp, f);
        Ok(())
    }

    fn matmul_act_forward(
        &self,
        act: Activation,
        pre: &mut [f32],
        out: &mut [f32],
        inp: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        matmul_act_forward(act, pre, out, inp, w, b, n, c, oc);
        Ok(())
    }

    fn matmul_act_backward(
        &self,
        act: Activation,
        dpre: &mut [f32],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        pre: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        matmul_act_backward(act, dpre, dw, db, dout, inp, pre, w, n, c, oc);
        Ok(())
    }

    fn rope(&self, x: &mut [f32], lay: HeadLayout, b: usize, h: usize, t: usize, hs: usize, pos0: usize, theta: f32, inverse: bool) -> Result<()> {
        rope_apply(x, lay, b, h, t, hs, pos0, theta, inverse);
        Ok(())
    }

    fn mean_cross_entropy(&self, dlogits: &mut [f32], logits: &[f32], targets: &[i32], v: usize, count: usize) -> Result<f32> {
        let (total, n) = cross_entropy(dlogits, logits, targets, v, 1.0 / count.max(1) as f32);
        debug_assert_eq!(n, count);
        Ok(mean_loss(total, count))
    }

    fn embedding_forward(&self, out: &mut [f32], ids: &[u32], wte: &[f32], wpe: Option<&[f32]>, sin: &[f32], t: usize, pos0: usize, c: usize) -> Result<()> {
        embedding_forward(out, ids, wte, wpe, sin, t, pos0, c);
        Ok(())
    }

    fn embedding_backward(&self, dwte: &mut [f32], dwpe: Option<&mut [f32]>, dx: &[f32], ids: &[u32], t: usize, c: usize) -> Result<()> {
        embedding_backward(dwte, dwpe, dx, ids, t, c);
        Ok(())
    }

    fn add_scaled(&self, out: &mut [f32], a: &[f32], b: &[f32], alpha: f32) -> Result<()> {
        add_scaled(out, a, b, alpha);
        Ok(())
    }

    fn scale(&self, out: &mut [f32], a: &[f32], alpha: f32) -> Result<()> {
        scale(out, a, alpha);
        Ok(())
    }

    fn add_into(&self, a: &mut [f32], b: &[f32]) -> Result<()> {
        add_into(a, b);
        Ok(())
    }

    fn mul_into(&self, a: &mut [f32], m: &[f32]) -> Result<()> {
        mul_into(a, m);
        Ok(())
    }

    fn append_heads(&self, out: &mut [f32], old: &[f32], new: &[f32], new_lay: HeadLayout, h: usize, len: usize, n: usize, hs: usize) -> Result<()> {
        append_heads(out, old, new, new_lay, h, len, n, hs);
        Ok(())
    }

    fn moe_route(
        &self,
        probs: &mut [f32],
        choice: &mut [f32],
        slot: &mut [f32],
        weight: &mut [f32],
        stats: &mut [f32],
        logits: &[f32],
        n: usize,
        e: usize,
        k: usize,
        cap: usize,
    ) -> Result<()> {
        moe_route(probs, choice, slot, weight, stats, logits, n, e, k, cap);
        Ok(())
    }

    fn moe_route_backward(&self, dlogits: &mut [f32], dweight: &[f32], probs: &[f32], r: Routing<&[f32]>, stats: &[f32], e: usize, aux: f32) -> Result<()> {
        moe_route_backward(dlogits, dweight, probs, r, stats, e, aux);
        Ok(())
    }

    fn moe_gather(&self, xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        moe_gather(xe, x, r, ex, rows, c);
        Ok(())
    }

    fn moe_scatter(&self, dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        moe_scatter(dx, dxe, r, ex, rows, c);
        Ok(())
    }

    fn moe_combine(&self, out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, ex: usize, rows: usize, c: usize) -> Result<()> {
        moe_combine(out, ye, r, ex, rows, c);
        Ok(())
    }

    fn moe_combine_backward(
        &self,
        dye: &mut [f32],
        dweight: &mut [f32],
        dout: &[f32],
        ye: &[f32],
        r: Routing<&[f32]>,
        ex: usize,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        moe_combine_backward(dye, dweight, dout, ye, r, ex, rows, c);
        Ok(())
    }

    fn moe_gather_grouped(&self, xe: &mut [f32], x: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe_gather_grouped(xe, x, r, rows, c);
        Ok(())
    }

    fn moe_scatter_grouped(&self, dx: &mut [f32], dxe: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe_scatter_grouped(dx, dxe, r, rows, c);
        Ok(())
    }

    fn moe_combine_grouped(&self, out: &mut [f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe_combine_grouped(out, ye, r, rows, c);
        Ok(())
    }

    fn moe_combine_backward_grouped(&self, dye: &mut [f32], dweight: &mut [f32], dout: &[f32], ye: &[f32], r: Routing<&[f32]>, rows: &[usize], c: usize) -> Result<()> {
        moe_combine_backward_grouped(dye, dweight, dout, ye, r, rows, c);
        Ok(())
    }

    fn matmul_grouped_forward(&self, out: &mut [f32], inp: &[f32], w: &[&[f32]], b: &[Option<&[f32]>], rows: &[usize], c: usize, oc: usize) -> Result<()> {
        matmul_grouped_forward(out, inp, w, b, rows, c, oc);
        Ok(())
    }

    fn matmul_grouped_backward(
        &self,
        dinp: &mut [f32],
        dw: Vec<&mut [f32]>,
        db: Vec<Option<&mut [f32]>>,
        dout: &[f32],
        inp: &[f32],
        w: &[&[f32]],
        rows: &[usize],
        c: usize,
        oc: usize,
    ) -> Result<()> {
        matmul_grouped_backward(dinp, dw, db, dout, inp, w, rows, c, oc);
        Ok(())
    }

    fn gru_forward(&self, h: &mut [f32], gates: &mut [f32], gi: &[f32], w_hh: &[f32], b_hh: Option<&[f32]>, h0: Option<&[f32]>, b: usize, t: usize, c: usize) -> Result<()> {
        gru_forward(h, gates, gi, w_hh, b_hh, h0, b, t, c);
        Ok(())
    }

    fn gru_backward(
        &self,
        dgi: &mut [f32],
        dw_hh: &mut [f32],
        db_hh: Option<&mut [f32]>,
        dh: &[f32],
        gates: &[f32],
        h: &[f32],
        h0: Option<&[f32]>,
        w_hh: &[f32],
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        gru_backward(dgi, dw_hh, db_hh, dh, gates, h, h0, w_hh, b, t, c);
        Ok(())
    }

    fn sums_of_squares(&self, out: &mut [f32], g: &[f32], segments: &[Segment]) -> Result<()> {
        sums_of_squares(out, g, segments);
        Ok(())
    }

    fn clip_grad_norm(&self, g: &mut [f32], sq: &[f32], clip: f32) -> Result<()> {
        clip_grad_norm(g, sq[0], clip);
        Ok(())
    }

    fn adamw(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], segments: &[Segment], sq: &[f32], loss: f32, h: &AdamW) -> Result<()> {
        if step_is_good(sq[0], loss) {
            for s in segments {
                let r = s.view;
                adamw(r.of_mut(p), r.of(g), r.of_mut(m), r.of_mut(v), h, s.decay);
            }
        }
        Ok(())
    }
}
