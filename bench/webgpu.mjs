// WebGPU vs WebAssembly (threads) in headless Chromium, through the engine: ms/iter of each preset and of W1 at
// d_model 64…512 (head size 32), 1 warm-up then the median of `--steps` steps each. In headless Chromium WebGPU is
// SwiftShader, a CPU emulation: record its figures, do not tune to them. Prints a markdown table, with the host time
// to issue a WebGPU step (`run.gpuStats()` after each step: recording + submission, not the GPU's execution; on
// SwiftShader the GPU's work runs on the same cores, so it can slow the issuing too) and the step's counts.
//   node bench/webgpu.mjs [--steps 3] [--dmodels 64,128,256,512] [--cases w1,llama,512] [--out FILE]
//                         [--timeout 600]
// Each row is printed as soon as it is measured and, with --out, appended to FILE at once (the header when the
// run starts), so a run cut short keeps every row it finished. --cases keeps the cases whose name contains one
// of the comma-separated words (case-insensitive; "512" picks "W1 at d_model 512"). --timeout: seconds per
// measurement (one backend of one case); past it the cell says "not measured (> N s)" and the page is reopened.
// With --steps 1 each cell is the one step after the warm-up.
import { appendFileSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const steps = Number(opt('--steps', 3));
const dmodels = opt('--dmodels', '64,128,256').split(',').map(Number);
const filter = opt('--cases', '').toLowerCase().split(',').filter(Boolean);
const outFile = opt('--out', null);
const timeoutS = Number(opt('--timeout', 600));
if (!(steps >= 1) || dmodels.some((d) => !(d > 0 && d % 32 === 0))) {
  console.error('usage: --steps N (≥ 1), --dmodels multiples of 32 (head size 32)');
  process.exit(2);
}

const preset = (name) => JSON.parse(readFileSync(join(ROOT, `configs/${name}.json`), 'utf8'));
let cases = ['gpt-shakespeare', 'llama-style', 'bert-mini', 'original-transformer', 't5-mini'].map((n) => [n, preset(n)]);
for (const d of dmodels) {
  const c = preset('gpt-shakespeare');
  c.model.d_model = d;
  c.model.n_heads = c.model.n_kv_heads = d / 32;
  cases.push([`W1 at d_model ${d}`, c]);
}
if (filter.length) cases = cases.filter(([name]) => filter.some((f) => name.toLowerCase().includes(f)));
// The last step of a train() call evaluates (outside the timed step): one validation batch is enough here.
for (const [, c] of cases) c.train.eval_iters = 1;

/** A line to stdout and, with --out, to the file at once. */
function emit(line) {
  console.log(line);
  if (outFile) appendFileSync(outFile, `${line}\n`);
}

const server = await startServer({ isolation: true });
const browser = await launch();
let page = null;
async function freshPage() {
  if (page) await page.close().catch(() => {});
  ({ page } = await open(browser.context, `${server.url}/bench/browser.html`));
  await page.waitForFunction(() => window.benchReady === true);
}
await freshPage();

/** Median ms/iter of one backend on one config, and what it trained on; or { error } (time limit, failure). */
async function measure(config, backend) {
  const work = page.evaluate(async ({ config, steps, backend }) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    window.engine ??= await window.tp.Engine.start();
    const run = await window.engine.createRun(config, { corpus, backend });
    const t = [];
    const on = new Set();
    // What issuing a step cost the engine on the host (WebGPU runs; null on the CPU): asked after each step's
    // progress, so each answer is of the latest step issued when the Worker reads it.
    const asked = [];
    run.on('progress', (p) => {
      t.push(p.msPerStep);
      on.add(p.backend);
      asked.push(run.gpuStats().catch(() => null));
    });
    await run.train({ steps: steps + 1 });
    const stats = (await Promise.all(asked)).slice(1).filter(Boolean);
    await run.dispose();
    const s = t.slice(1).sort((a, b) => a - b);
    const issue = stats.map((x) => x.issue_ms).sort((a, b) => a - b);
    return { ms: s[s.length >> 1], on: [...on].join('+'), stats: stats.at(-1), issue };
  }, { config, steps, backend });
  let timer;
  const limit = new Promise((ok) => {
    timer = setTimeout(() => ok({ error: `not measured (> ${timeoutS} s)` }), timeoutS * 1000);
  });
  const r = await Promise.race([work.catch((e) => ({ error: `failed: ${e.message.split('\n')[0]}` })), limit]);
  clearTimeout(timer);
  if (r.error) await freshPage(); // the engine may still be busy with the abandoned run
  return r;
}

emit(`<!-- node bench/webgpu.mjs ${args.join(' ')} — ${new Date().toISOString()} -->`);
emit('| config | WebGPU (SwiftShader) ms/iter | WASM threads ms/iter | WASM / WebGPU | WebGPU issue ms, median (each step) | dispatches / bind groups made per step |');
emit('|---|---:|---:|---:|---:|---:|');
const cell = (r, want) => (r.error ? r.error : `${r.ms.toFixed(1)}${r.on === want ? '' : ` (ran on ${r.on})`}`);
for (const [name, config] of cases) {
  const t0 = Date.now();
  const gpu = await measure(config, 'webgpu');
  const cpu = await measure(config, 'cpu');
  const ratio = gpu.error || cpu.error ? '–' : (cpu.ms / gpu.ms).toFixed(2);
  const st = gpu.stats;
  const issue = gpu.issue?.length ? `${gpu.issue[gpu.issue.length >> 1].toFixed(2)} (${gpu.issue.map((x) => x.toFixed(2)).join(', ')})` : '–';
  const counts = st ? `${st.dispatches_per_step} / ${st.bind_groups_per_step}` : '–';
  emit(`| ${name} | ${cell(gpu, 'webgpu')} | ${cell(cpu, 'wasm-threads')} | ${ratio} | ${issue} | ${counts} |`);
  console.error(`  (${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s, load average ${loadavg()[0].toFixed(2)})`);
}
await browser.close();
await server.close();
process.exit(0);
