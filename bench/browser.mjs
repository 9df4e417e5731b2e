// W1 in headless Chromium through the engine (pkg/): ms/iter and tokens/s of the threaded and single builds,
// generation tokens/s with the KV cache, and (--full) the time to reach val loss 1.89.
// Prints `RESULT browser-<build>: …` lines. Used by bench/browser.sh, which adds native, PyTorch and tf.js.
//   node bench/browser.mjs [--steps 40] [--warmup 5] [--builds threads,single,baseline] [--full]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const steps = Number(opt('--steps', 40));
const warmup = Number(opt('--warmup', 5));
const builds = opt('--builds', 'threads,single,baseline').split(',');
const full = args.includes('--full');
const config = JSON.parse(readFileSync(join(ROOT, 'configs/gpt-shakespeare.json'), 'utf8'));

const server = await startServer({ isolation: true });
const browser = await launch();
try {
  for (const build of builds) {
    const { page } = await open(browser.context, `${server.url}/bench/browser.html`);
    await page.waitForFunction(() => window.benchReady === true);
    const r = await page.evaluate(
      async ({ build, config, steps, warmup, full }) => {
        const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
        const engine = await window.tp.Engine.start({ build });
        const run = await engine.createRun(config, { corpus });
        const ms = [];
        const off = run.on('progress', (p) => ms.push(p.msPerStep));
        await run.train({ steps: warmup + steps });
        off();
        const timed = ms.slice(warmup).sort((a, b) => a - b);
        const median = timed[Math.floor(timed.length / 2)];
        // Generation with the KV cache: 500 tokens from a short prompt (the cache restarts past ctx_len).
        await run.generate('ROMEO:', { maxTokens: 50 });
        const t0 = performance.now();
        await run.generate('ROMEO:', { maxTokens: 500, temperature: 0.8, seed: 1 });
        const genTokS = 500 / ((performance.now() - t0) / 1000);
        let reach = null;
        if (full) {
          const fresh = await engine.createRun(config, { corpus });
          const t1 = performance.now();
          const vals = [];
          fresh.on('progress', (p) => {
            if (p.valLoss != null) {
              vals.push([p.step, p.valLoss, (performance.now() - t1) / 1000]);
              if (p.valLoss <= 1.89 && reach === null) reach = { step: p.step, seconds: (performance.now() - t1) / 1000 };
            }
          });
          await fresh.train({ steps: config.train.steps });
          reach = { reached: reach, evals: vals, totalSeconds: (performance.now() - t1) / 1000 };
        }
        const matmul = [];
        for (const [m, n, k] of [[768, 512, 128], [768, 128, 512], [512, 512, 512]]) {
          const ms = await engine._benchMatmul(m, n, k, 10);
          matmul.push(`${m}x${n}x${k} ${((2 * m * n * k) / ms / 1e6).toFixed(1)} GFLOPS`);
        }
        const info = engine.info;
        engine.terminate();
        return { info, matmul, median, tokS: (config.train.batch_size * config.model.ctx_len) / (median / 1000), genTokS, reach };
      },
      { build, config, steps, warmup, full },
    );
    console.log(`RESULT browser-${build} threads=${r.info.threads}: ${r.median.toFixed(2)} ms/iter (median of ${steps}), ${r.tokS.toFixed(0)} tok/s, generation ${r.genTokS.toFixed(0)} tok/s`);
    console.log(`RESULT browser-${build} matmul: ${r.matmul.join(', ')}`);
    if (r.reach) console.log(`RESULT browser-${build} full W1: ${JSON.stringify(r.reach)}`);
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
