// A GPT small enough to take a few dozen steps in about a second on a busy 2-core machine: the element's tests train it.
export const TINY = {
  model: {
    arch: 'gpt', d_model: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, ctx_len: 16,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 8, steps: 40, lr: 3e-3, warmup: 2, eval_interval: 10, eval_iters: 2 },
  seed: 5,
};
