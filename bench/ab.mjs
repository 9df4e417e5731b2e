// Interleaved A/B of two builds of the engine in headless Chromium (bench/ab.sh makes the two roots): W1 steps
// through the engine, rounds alternating A, B, A, B… so that the host's slow spells hit both. A shared machine's
// speed can swing by tens of percent within minutes (docs/BENCHMARKS.md), so a per-run median can mislead: each
// round reports the median, the minimum and the 10th percentile of its per-step times, and the summary the median
// of the per-round p10s (the figure least moved by a burst of load).
//   node bench/ab.mjs ROOT_A ROOT_B [--build threads|single|baseline] [--rounds 5] [--steps 30] [--warmup 5]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const roots = args.filter((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
if (roots.length !== 2) {
  console.error('usage: node bench/ab.mjs ROOT_A ROOT_B [--build threads] [--rounds 5] [--steps 30] [--warmup 5]');
  process.exit(2);
}
const build = opt('--build', 'threads');
const rounds = Number(opt('--rounds', 5));
const steps = Number(opt('--steps', 30));
const warmup = Number(opt('--warmup', 5));
const config = JSON.parse(readFileSync(join(ROOT, 'configs/gpt-shakespeare.json'), 'utf8'));

const servers = [];
for (const root of roots) servers.push(await startServer({ isolation: true, root }));
const browser = await launch();
const stats = [[], []];
const median = (a) => [...a].sort((x, y) => x - y)[(a.length - 1) >> 1];
try {
  for (let r = 0; r < rounds; r++) {
    for (const i of [0, 1]) {
      const { page } = await open(browser.context, `${servers[i].url}/bench/browser.html`);
      await page.waitForFunction(() => window.benchReady === true);
      const ms = await page.evaluate(
        async ({ build, config, steps, warmup }) => {
          const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
          const engine = await window.tp.Engine.start({ build });
          const run = await engine.createRun(config, { corpus });
          const ms = [];
          run.on('progress', (p) => ms.push(p.msPerStep));
          await run.train({ steps: warmup + steps });
          engine.terminate();
          return ms.slice(warmup);
        },
        { build, config, steps, warmup },
      );
      await page.close();
      const t = [...ms].sort((a, b) => a - b);
      const s = { median: median(t), min: t[0], p10: t[Math.floor(t.length / 10)] };
      stats[i].push(s);
      console.log(`round ${r + 1} ${'AB'[i]}: median ${s.median.toFixed(1)}  min ${s.min.toFixed(1)}  p10 ${s.p10.toFixed(1)} ms/step`);
    }
  }
  console.log(`\n${build} build, ${rounds} rounds of ${steps} steps (W1):`);
  for (const i of [0, 1]) {
    const col = (k) => stats[i].map((s) => s[k]);
    console.log(
      `${'AB'[i]} ${roots[i]}: p10 ${median(col('p10')).toFixed(1)} ms (median of rounds), min ${Math.min(...col('min')).toFixed(1)}, median ${median(col('median')).toFixed(1)}`,
    );
  }
} finally {
  await browser.close();
  for (const s of servers) await s.close();
}
