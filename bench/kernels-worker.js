// The browser kernel benchmark's Worker (bench/kernels.mjs): loads examples/browser_kernels.rs as built by
// bench/kernels.sh, starts a pool of `?threads=N` threads and answers {peak} | {ops} | {profile} messages.
const wasm = await import('../pkg/wasm/kernels/threads/tp.js');
await wasm.default();
const threads = Number(new URL(location.href).searchParams.get('threads'));
await wasm.initThreadPool(threads);
const kernels = new wasm.Kernels();
let profile = null;

function median(f, rounds) {
  const t = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    f();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[rounds >> 1];
}

onmessage = ({ data }) => {
  try {
    if (data.peak) {
      wasm.peakFma(1e7); // tier up
      const iters = 1e8;
      const ms = median(() => wasm.peakFma(iters), 3);
      postMessage({ ok: true, result: { gflops: (iters * 80) / ms / 1e6 } });
    } else if (data.ops) {
      const result = { threads: wasm.threads() };
      for (const op of data.ops) kernels.run(op, 3); // tier up every kernel first
      for (const op of data.ops) result[op] = median(() => kernels.run(op, data.reps), data.rounds) / data.reps;
      postMessage({ ok: true, result });
    } else if (data.profile) {
      profile ??= new wasm.StepProfile(data.config, data.text);
      profile.profile(5); // warm-up
      postMessage({ ok: true, result: JSON.parse(profile.profile(data.steps)) });
    }
  } catch (e) {
    postMessage({ ok: false, error: String(e) });
  }
};
postMessage({ ready: true, ops: JSON.parse(wasm.kernelOps()) });
