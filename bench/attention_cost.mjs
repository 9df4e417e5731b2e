// Attention's cost in headless Chromium, through the engine (engine.attentionCost, src/attention_cost.rs): naive
// vs fused attention forward + backward for each T on WASM threads and on WebGPU (SwiftShader, a CPU emulation:
// record its figures, do not tune to them). Prints one markdown table per backend, each row as soon as measured.
//   node bench/attention_cost.mjs [--t 64,128,256,512,1024] [--backends cpu,webgpu] [--heads 4] [--head-size 64]
//                                 [--batch 1] [--budget-mib 512]
// Needs the browser builds (scripts/build-wasm.sh threads single).
import { loadavg } from 'node:os';
import { startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const ts = opt('--t', '64,128,256,512,1024').split(',').map(Number);
const backends = opt('--backends', 'cpu,webgpu').split(',');
const spec = {
  heads: Number(opt('--heads', 4)),
  head_size: Number(opt('--head-size', 64)),
  batch: Number(opt('--batch', 1)),
  budget_mib: Number(opt('--budget-mib', 512)),
};

const server = await startServer({ isolation: true });
const browser = await launch();
const { page } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
await page.waitForFunction(() => window.harnessReady === true);
const info = await page.evaluate(async () => {
  window.engine = await window.tp.Engine.start();
  return window.engine.info;
});
console.log(`build ${info.build}, ${info.threads} threads; spec ${JSON.stringify(spec)}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const mib = (b) => (b / 2 ** 20).toFixed(3);
for (const backend of backends) {
  console.log(`\n| ${backend} T | naive ms | fused ms | naive / fused | naive MiB | fused MiB |\n|---:|---:|---:|---:|---:|---:|`);
  for (const t of ts) {
    try {
      const r = await page.evaluate(({ t, spec, backend }) => window.engine.attentionCost(t, { spec, backend }), { t, spec, backend });
      const ratio = r.naive_ms == null ? '—' : (r.naive_ms / r.flash_ms).toFixed(2);
      const naive = r.naive_ms == null ? `— (${r.note})` : r.naive_ms.toFixed(2);
      console.log(`| ${t} | ${naive} | ${r.flash_ms.toFixed(2)} | ${ratio} | ${mib(r.naive_bytes)} | ${mib(r.flash_bytes)} |   (${r.backend})`);
    } catch (e) {
      console.log(`| ${t} | failed: ${e.message.split('\n')[0]} | | | | |`);
      break;
    }
  }
}
console.log(`load average at the end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
await browser.close();
await server.close();
