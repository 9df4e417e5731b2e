// The lessons' wall time at their page sizes in headless Chromium, as a class would run them: the playground page
// opens `#lesson=<id>` and runs it (threaded build, the page's own lesson runner), timed from the click to the
// result; prints each run's metrics and each expected direction's outcome. Issue 19's target: each lesson ≤ 2
// minutes in the browser with threads on 2 cores.
//   node bench/lessons.mjs [--lessons gpt-vs-bert,bert-mask,attention-cost,icl-emerges]
// It is a benchmark, not a test: record the numbers with the CPU and command in docs/BENCHMARKS.md (and the
// lesson's "measured" text where they belong).
import { startServer, launch } from '../tests/browser/util.mjs';
import { openPlayground } from '../tests/browser/playground-helpers.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const ids = opt('--lessons', 'gpt-vs-bert,bert-mask,attention-cost,icl-emerges').split(',');

const server = await startServer({ isolation: true });
const browser = await launch();
try {
  for (const id of ids) {
    const { page } = await openPlayground(browser.context, server.url, { hash: `#lesson=${id}` });
    await page.waitForFunction(() => document.querySelector('#lesson-detail .lesson-detail'), null, { timeout: 15000 });
    const t0 = Date.now();
    await page.evaluate((id) => window.__tp.runLesson(id), id);
    await page.waitForFunction((id) => ['done', 'error'].includes(window.__tp.lessons().lessons[id]?.state), id, { timeout: 600000, polling: 500 });
    const s = (Date.now() - t0) / 1000;
    const { state, result } = (await page.evaluate((id) => window.__tp.lessons(), id)).lessons[id];
    console.log(`lesson ${id}: ${state} in ${s.toFixed(1)} s (page sizes, threads)`);
    for (const r of result?.runs ?? []) {
      console.log(`  ${r.id.padStart(10)}: ${Object.entries(r.metrics).map(([k, v]) => `${k} ${v === null ? '—' : Number(v).toFixed(4)}`).join(', ')}`);
    }
    for (const c of result?.checks ?? []) console.log(`  ${c.metric} of ${c.a} ${c.is} than ${c.b_metric ?? c.metric} of ${c.b} (margin ${c.margin}): ${c.outcome}`);
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
