// The recipes' wall time in headless Chromium through the engine (engine.createRecipe, threaded build unless
// --build says otherwise): each default recipe (configs/recipes/*.json, knobs at their defaults, the shipped
// pretrained checkpoint for finetune and rlhf) run to the end; prints the wall time of each stage (the Worker's
// time in its units, and the page's wall clock) and each recipe's total, and the stages' final metrics.
// Issue 18's targets: RLHF ≤ 5 min, finetune and ICL ≤ 3 min in Chromium with threads on 2 cores.
//   node bench/recipes.mjs [--recipes finetune,icl,rlhf,zeroshot] [--build threads] [--threads N]
// It is a benchmark, not a test: run it once, record the numbers with the CPU, load (uptime) and command in
// docs/BENCHMARKS.md.
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const kinds = opt('--recipes', 'rlhf,finetune,icl').split(',');
const build = opt('--build', 'threads');
const threads = opt('--threads', undefined);

const server = await startServer({ isolation: build === 'threads' });
const browser = await launch();
try {
  const { page } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  page.on('console', (m) => m.type() === 'log' && console.log(m.text()));
  for (const kind of kinds) {
    const r = await page.evaluate(async ({ kind, build, threads }) => {
      const engine = await window.tp.Engine.start({ build, ...(threads ? { threads: Number(threads) } : {}) });
      const t0 = performance.now();
      const recipe = await engine.createRecipe(kind, {});
      const created = performance.now() - t0;
      const stages = [];
      let last = performance.now();
      recipe.on('stage', (s) => {
        const now = performance.now();
        stages.push({ stage: s.stage, steps: s.step, worker_s: s.ms / 1000, wall_s: (now - last) / 1000, metrics: s.metrics });
        console.log(`  ${kind} ${s.stage}: ${s.step} steps, ${((now - last) / 1000).toFixed(1)} s wall`);
        last = now;
      });
      await recipe.run();
      const total = (performance.now() - t0) / 1000;
      const info = { ...engine.info, hardwareConcurrency: navigator.hardwareConcurrency };
      await recipe.dispose();
      engine.terminate();
      return { info, created_s: created / 1000, stages, total };
    }, { kind, build, threads });
    const parts = r.stages.map((s) => `${s.stage} ${s.wall_s.toFixed(1)} s (${s.steps} steps)`).join(', ');
    console.log(`RESULT recipe-${kind} ${r.info.build} (${r.info.threads} threads): total ${r.total.toFixed(1)} s = create ${r.created_s.toFixed(1)} s + ${parts}`);
    for (const s of r.stages) {
      const m = Object.entries(s.metrics).map(([k, v]) => `${k} ${typeof v === 'number' ? +v.toFixed(4) : v}`).join(', ');
      console.log(`  ${s.stage}: ${m}`);
    }
  }
} finally {
  await browser.close();
  await server.close();
}
void ROOT;
