// WebGPU vs WebAssembly (threads) in headless Chromium, through the engine: ms/iter of each preset and of W1 at
// d_model 64…512 (head size 32), 1 warm-up then the median of `--steps` steps each. In headless Chromium WebGPU is
// SwiftShader, a CPU emulation: record its figures, do not tune to them. Prints a markdown table.
//   node bench/webgpu.mjs [--steps 3] [--dmodels 64,128,256,512]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const steps = Number(opt('--steps', 3));
const dmodels = opt('--dmodels', '64,128,256').split(',').map(Number);
const preset = (name) => JSON.parse(readFileSync(join(ROOT, `configs/${name}.json`), 'utf8'));
const cases = ['gpt-shakespeare', 'llama-style', 'bert-mini', 'original-transformer', 't5-mini'].map((n) => [n, preset(n)]);
for (const d of dmodels) {
  const c = preset('gpt-shakespeare');
  c.model.d_model = d;
  c.model.n_heads = c.model.n_kv_heads = d / 32;
  cases.push([`W1 at d_model ${d}`, c]);
}

const server = await startServer({ isolation: true });
const browser = await launch();
const { page } = await open(browser.context, `${server.url}/bench/browser.html`);
await page.waitForFunction(() => window.benchReady === true);
console.log('| config | WebGPU (SwiftShader) ms/iter | WASM threads ms/iter | WASM / WebGPU |');
console.log('|---|---:|---:|---:|');
for (const [name, config] of cases) {
  const r = await page.evaluate(async ({ config, steps }) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    window.engine ??= await window.tp.Engine.start();
    const ms = {};
    for (const backend of ['webgpu', 'cpu']) {
      const run = await window.engine.createRun(config, { corpus, backend });
      const t = [];
      run.on('progress', (p) => t.push(p.msPerStep));
      await run.train({ steps: steps + 1 });
      await run.dispose();
      const s = t.slice(1).sort((a, b) => a - b);
      ms[backend] = s[s.length >> 1];
    }
    return ms;
  }, { config, steps });
  console.log(`| ${name} | ${r.webgpu.toFixed(1)} | ${r.cpu.toFixed(1)} | ${(r.cpu / r.webgpu).toFixed(2)} |`);
}
await browser.close();
await server.close();
