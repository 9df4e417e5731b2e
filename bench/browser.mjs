// W1 in headless Chromium through the engine (pkg/): ms/iter and tokens/s of the threaded and single builds,
// generation tokens/s with the KV cache, and (--full) the time to reach val loss 1.89: W1 trained to its 2000
// iterations for each of --seeds, evaluated every --eval-interval iterations (the time includes the evaluations).
// Prints `RESULT browser-<build>: …` lines. Used by bench/browser.sh, which adds native, PyTorch and tf.js.
//   node bench/browser.mjs [--steps 40] [--warmup 5] [--builds threads,single,baseline]
//                          [--full [--seeds 1337,1,2] [--eval-interval 100]]
//                          [--config configs/gpt-shakespeare.json] [--step-only]
// --config times another config (a path from the repository root); --step-only skips generation and the matmuls.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const steps = Number(opt('--steps', 40));
const warmup = Number(opt('--warmup', 5));
const builds = opt('--builds', 'threads,single,baseline').split(',');
const full = args.includes('--full');
const seeds = opt('--seeds', '1337,1,2').split(',').map(Number);
const evalInterval = Number(opt('--eval-interval', 100));
const configPath = opt('--config', 'configs/gpt-shakespeare.json');
const config = JSON.parse(readFileSync(join(ROOT, configPath), 'utf8'));
const stepOnly = args.includes('--step-only');

const server = await startServer({ isolation: true });
const browser = await launch();
try {
  for (const build of builds) {
    const { page } = await open(browser.context, `${server.url}/bench/browser.html`);
    await page.waitForFunction(() => window.benchReady === true);
    const r = await page.evaluate(
      async ({ build, config, steps, warmup, full, seeds, evalInterval, stepOnly }) => {
        const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
        const engine = await window.tp.Engine.start({ build });
        const run = await engine.createRun(config, { corpus });
        const ms = [];
        const off = run.on('progress', (p) => ms.push(p.msPerStep));
        await run.train({ steps: warmup + steps });
        off();
        const timed = ms.slice(warmup).sort((a, b) => a - b);
        const median = timed[Math.floor(timed.length / 2)];
        const tokS = (config.train.batch_size * config.model.ctx_len) / (median / 1000);
        if (stepOnly) {
          const info = engine.info;
          engine.terminate();
          return { info, matmul: [], median, tokS, genTokS: NaN, reach: [] };
        }
        // Generation with the KV cache: 500 tokens from a short prompt (the cache restarts past ctx_len).
        await run.generate('ROMEO:', { maxTokens: 50 });
        const t0 = performance.now();
        await run.generate('ROMEO:', { maxTokens: 500, temperature: 0.8, seed: 1 });
        const genTokS = 500 / ((performance.now() - t0) / 1000);
        const reach = [];
        for (const seed of full ? seeds : []) {
          const fresh = await engine.createRun({ ...config, train: { ...config.train, eval_interval: evalInterval } }, { corpus, seed });
          const t1 = performance.now();
          const evals = [];
          let first = null;
          fresh.on('progress', (p) => {
            if (p.valLoss == null) return;
            const s = (performance.now() - t1) / 1000;
            evals.push([p.step, Number(p.valLoss.toFixed(4)), Number(s.toFixed(1))]);
            if (p.valLoss <= 1.89 && first === null) first = { step: p.step, seconds: Number(s.toFixed(1)) };
          });
          await fresh.train({ steps: config.train.steps });
          reach.push({ seed, reached: first, evals, totalSeconds: Number(((performance.now() - t1) / 1000).toFixed(1)) });
          fresh.dispose();
        }
        const matmul = [];
        for (const [m, n, k] of [[768, 512, 128], [768, 128, 512], [512, 512, 512]]) {
          const ms = await engine._benchMatmul(m, n, k, 10);
          matmul.push(`${m}x${n}x${k} ${((2 * m * n * k) / ms / 1e6).toFixed(1)} GFLOPS`);
        }
        const info = engine.info;
        engine.terminate();
        return { info, matmul, median, tokS, genTokS, reach };
      },
      { build, config, steps, warmup, full, seeds, evalInterval, stepOnly },
    );
    const what = configPath === 'configs/gpt-shakespeare.json' ? '' : ` ${configPath}`;
    const gen = stepOnly ? '' : `, generation ${r.genTokS.toFixed(0)} tok/s`;
    console.log(`RESULT browser-${build}${what} threads=${r.info.threads}: ${r.median.toFixed(2)} ms/iter (median of ${steps}), ${r.tokS.toFixed(0)} tok/s${gen}`);
    if (!stepOnly) console.log(`RESULT browser-${build} matmul: ${r.matmul.join(', ')}`);
    for (const f of r.reach) console.log(`RESULT browser-${build} full W1 seed ${f.seed}: ${JSON.stringify(f)}`);
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
