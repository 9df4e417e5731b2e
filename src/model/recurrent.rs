//! The recurrent position encoding: a one-layer GRU (Cho et al. 2014) of width C runs over the token embeddings
//! and its states are added to them, `x ← x + GRU(x)`, before the first block. Position is what the recurrence has
//! counted, learned rather than given by a table or a formula; the price is a pass that is sequential in T
//! (docs/MODEL.md). The input projection of every position at once is a matmul, `gi = x·W_ihᵀ + b_ih`; the
//! recurrence is `Backend::gru_forward` / `gru_backward`.

use super::layout::Rnn;
use super::Ctx;
use crate::backend::Backend;
use crate::error::Result;

/// Saved activations of the recurrent position encoding.
pub struct RnnCache<B = Vec<f32>> {
    pub x: B,     // (B,T,C) the GRU's input, the token embeddings
    pub h: B,     // (B,T,C) its states, added to x
    pub gates: B, // (B,T,4C) [r | z | n | W_hn·h_{t−1} + b_hn]
}

impl<B> crate::model::Buffers<B> for RnnCache<B> {
    fn buffers_into(self, out: &mut Vec<B>) {
        let RnnCache { x, h, gates } = self;
        out.extend([x, h, gates]);
    }
}

/// x (B,T,C) ← x + GRU(x), starting from the state h0 (B,C) (zeros when None: every training sequence).
pub fn recurrent_forward<D: Backend>(
    ctx: &Ctx<D>,
    rnn: &Rnn,
    x: &mut D::Buf,
    h0: Option<D::In<'_>>,
    b: usize,
    t: usize,
) -> Result<RnnCache<D::Buf>> {
    let (d, c) = (ctx.be, ctx.cfg.d_model);
    let p = |v| D::param(ctx.params, v);
    let mut gi = d.output(b * t * 3 * c)?; // (B,T,3C)
    let b_ih = rnn.b_ih.map(p).transpose()?;
    d.matmul_forward(D::view_mut(&mut gi), D::view(x), p(rnn.w_ih)?, b_ih, b * t, c, 3 * c)?;
    let (mut h, mut gates) = (d.output(b * t * c)?, d.output(b * t * 4 * c)?);
    let b_hh = rnn.b_hh.map(p).transpose()?;
    d.gru_forward(D::view_mut(&mut h), D::view_mut(&mut gates), D::view(&gi), p(rnn.w_hh)?, b_hh, h0, b, t, c)?;
    let inp = d.copy_of(D::view(x))?;
    d.add_into(D::view_mut(x), D::view(&h))?;
    Ok(RnnCache { x: inp, h, gates })
}

/// Given dx = ∂L/∂(x + GRU(x)) (B,T,C), adds the gradient that reaches x through the GRU (so dx becomes ∂L/∂x)
/// and accumulates the GRU's parameter gradients: backward through time, then the input projection's matmul.
pub fn recurrent_backward<D: Backend>(ctx: &mut Ctx<D>, rnn: &Rnn, rc: &RnnCache<D::Buf>, dx: &mut D::Buf, b: usize, t: usize) -> Result<()> {
    let (d, c) = (ctx.be, ctx.cfg.d_model);
    let params = ctx.params;
    let grads = ctx.grads.as_deref_mut().expect("grads");
    let mut dgi = d.zeros(b * t * 3 * c)?; // (B,T,3C)
    {
        let (dw_hh, db_hh) = D::grad_pair(grads, rnn.w_hh, rnn.b_hh)?;
        let w_hh = D::param(params, rnn.w_hh)?;
        d.gru_backward(D::view_mut(&mut dgi), dw_hh, db_hh, D::view(dx), D::view(&rc.gates), D::view(&rc.h), None, w_hh, b, t, c)?;
    }
    let (dw_ih, db_ih) = D::grad_pair(grads, rnn.w_ih, rnn.b_ih)?;
    let w_ih = D::param(params, rnn.w_ih)?;
    d.matmul_backward(Some(D::view_mut(dx)), dw_ih, db_ih, D::view(&dgi), D::view(&rc.x), w_ih, b * t, c, 3 * c)
}
