// A consumer of the npm package, bundled by Vite: imports the package by name (installed from ../../pkg),
// trains a tiny GPT for a few steps and generates. The browser test reads window.result.
import { Engine } from 'transformer-playground';

const config = {
  model: {
    arch: 'gpt', d_model: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, ctx_len: 16,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 4, steps: 10, lr: 3e-3, warmup: 2, eval_interval: 5, eval_iters: 2 },
  seed: 5,
};

async function main() {
  const engine = await Engine.start();
  const run = await engine.createRun(config, { corpus: 'the quick brown fox jumps over the lazy dog. '.repeat(50) });
  const losses = [];
  run.on('progress', (p) => losses.push(p.loss));
  await run.train({ steps: 10 });
  const text = await run.generate('the', { maxTokens: 12 });
  window.result = { build: engine.info.build, threads: engine.info.threads, losses, text };
  document.getElementById('out').textContent = JSON.stringify(window.result);
}

main().catch((e) => {
  window.result = { error: e.message };
});
