// Kernel benchmark in headless Chromium (run by bench/kernels.sh, which builds examples/browser_kernels.rs first):
// the FMA ceiling V8 reaches on this CPU, each hot op of W1 on 1 and on N threads (median ms, GFLOP/s of the
// matmuls, × per step), and W1's step timed op by op on 1 and N threads (what the rest of the step costs).
//   node bench/kernels.mjs [--threads N] [--reps 10] [--rounds 7] [--steps 20]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const reps = Number(opt('--reps', 10));
const rounds = Number(opt('--rounds', 7));
const steps = Number(opt('--steps', 20));
const config = readFileSync(join(ROOT, 'configs/gpt-shakespeare.json'), 'utf8');
const text = readFileSync(join(ROOT, 'www/data/tinyshakespeare.txt'), 'utf8');

const server = await startServer({ isolation: true });
const browser = await launch();
const results = [];
try {
  const n = Number(opt('--threads', 0)) || (await (async () => {
    const { page } = await open(browser.context, `${server.url}/bench/kernels.html?threads=1`);
    const hc = await page.evaluate(() => navigator.hardwareConcurrency);
    await page.close();
    return hc;
  })());
  for (const threads of [...new Set([1, n])]) {
    const { page, problems } = await open(browser.context, `${server.url}/bench/kernels.html?threads=${threads}`);
    await page.waitForFunction(() => window.kernelOps, null, { timeout: 60000 });
    const ops = await page.evaluate(() => window.kernelOps);
    const peak = await page.evaluate(() => window.ask({ peak: true }));
    const times = await page.evaluate((m) => window.ask(m), { ops: ops.map((o) => o[0]), reps, rounds });
    const prof = await page.evaluate((m) => window.ask(m), { profile: true, steps, config, text });
    if (problems.length) throw new Error(problems.join('\n'));
    results.push({ threads, ops, peak, times, prof });
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}

const cols = results.map((r) => `${r.threads} thread${r.threads > 1 ? 's' : ''}`);
console.log(`FMA ceiling (10 chains of f32x4.relaxed_madd): ${results.map((r, i) => `${r.peak.gflops.toFixed(1)} GFLOP/s (${cols[i]})`).join(', ')}`);
console.log();
console.log(`| op (W1 shapes) | calls/step | ${cols.map((c) => `${c}: ms | GFLOP/s`).join(' | ')} | ms/step (${cols.at(-1)}) |`);
console.log(`|---|---:|${cols.map(() => '---:|---:').join('|')}|---:|`);
const totals = results.map(() => 0);
for (const [name, flops, calls] of results[0].ops) {
  const cells = results.map((r, i) => {
    const ms = r.times[name];
    totals[i] += ms * calls;
    return `${ms.toFixed(3)} | ${flops ? (flops / ms / 1e6).toFixed(1) : ''}`;
  });
  console.log(`| ${name} | ${calls} | ${cells.join(' | ')} | ${(results.at(-1).times[name] * calls).toFixed(2)} |`);
}
console.log(`| sum over a step | | ${totals.map((t) => `${t.toFixed(1)} | `).join('| ')}| |`);
console.log();
console.log(`W1 training step timed op by op inside the step (ms per step):`);
console.log();
console.log(`| op | ${cols.join(' | ')} |`);
console.log(`|---|${cols.map(() => '---:').join('|')}|`);
const names = Object.keys(results.at(-1).prof.ops).sort((a, b) => results.at(-1).prof.ops[b][0] - results.at(-1).prof.ops[a][0]);
const opSums = results.map(() => 0);
for (const name of names) {
  const cells = results.map((r, i) => {
    const ms = r.prof.ops[name]?.[0] ?? 0;
    opSums[i] += ms;
    return ms.toFixed(2);
  });
  console.log(`| ${name} ×${results.at(-1).prof.ops[name][1]} | ${cells.join(' | ')} |`);
}
console.log(`| the rest (buffers and zeroing, residual adds, embedding, loop) | ${results.map((r, i) => (r.prof.step_ms - opSums[i]).toFixed(2)).join(' | ')} |`);
console.log(`| **step** | ${results.map((r) => `**${r.prof.step_ms.toFixed(1)}**`).join(' | ')} |`);
