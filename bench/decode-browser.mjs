// Decoding speed over the paged KV cache in headless Chromium, through the engine (pkg/), issue 17 §1:
//   - tokens/s of 8 continuations of one prompt decoded together (one batched pass per token) against 1
//     (goal: 8 ≥ 3× the tokens/s of 1), and
//   - one paged continuation against the contiguous path (`kvCache: 'contiguous'`, WasmRun.generate; goal: within 10%).
// The three are timed in alternating rounds on one run of the config (untrained: speed does not depend on the
// weights), after a warm-up of each, and the medians are printed, with a Markdown table row per build.
// tokens/s counts every continuation's tokens (8 continuations of 500 tokens: 4,000 tokens). The prompt is short
// and the config's ctx_len 64, so each continuation restarts from its last 32 tokens every 32 tokens, as generate does.
//   node bench/decode-browser.mjs [--builds threads,single] [--rounds 5] [--tokens 500] [--n 8]
//                                 [--config configs/gpt-shakespeare.json]
// Needs the builds (scripts/build-wasm.sh threads single). Docs: docs/BENCHMARKS.md, "Paged KV cache in the browser".
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, launch, open } from '../tests/browser/util.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const builds = opt('--builds', 'threads,single').split(',');
const rounds = Number(opt('--rounds', 5));
const tokens = Number(opt('--tokens', 500));
const many = Number(opt('--n', 8));
const configPath = opt('--config', 'configs/gpt-shakespeare.json');
const config = JSON.parse(readFileSync(join(ROOT, configPath), 'utf8'));

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const server = await startServer({ isolation: true });
const browser = await launch();
const rows = [];
try {
  for (const build of builds) {
    const { page } = await open(browser.context, `${server.url}/bench/browser.html`);
    await page.waitForFunction(() => window.benchReady === true);
    const r = await page.evaluate(
      async ({ build, config, rounds, tokens, many }) => {
        const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
        const engine = await window.tp.Engine.start({ build });
        const run = await engine.createRun(config, { corpus });
        const kinds = {
          contiguous: { n: 1, kvCache: 'contiguous' },
          paged1: { n: 1 },
          pagedN: { n: many },
        };
        const time = async ({ n, kvCache }, maxTokens) => {
          const t0 = performance.now();
          const g = await run.generate({ prompt: 'ROMEO:', n, kvCache, maxTokens, temperature: 0.8, seed: 1 });
          const s = (performance.now() - t0) / 1000;
          if (g.texts.some((t) => [...t].length !== maxTokens)) throw new Error('a continuation came back short');
          return (n * maxTokens) / s;
        };
        for (const k of Object.values(kinds)) await time(k, 50); // warm-up
        const tokS = Object.fromEntries(Object.keys(kinds).map((k) => [k, []]));
        for (let i = 0; i < rounds; i++) {
          for (const [name, k] of Object.entries(kinds)) tokS[name].push(await time(k, tokens));
        }
        const info = engine.info;
        engine.terminate();
        return { info, tokS };
      },
      { build, config, rounds, tokens, many },
    );
    const m = Object.fromEntries(Object.entries(r.tokS).map(([k, xs]) => [k, median(xs)]));
    const all = (k) => r.tokS[k].map((x) => x.toFixed(0)).join(' ');
    console.log(`RESULT decode-browser-${build} threads=${r.info.threads}: contiguous ${m.contiguous.toFixed(0)} tok/s [${all('contiguous')}], `
      + `paged n=1 ${m.paged1.toFixed(0)} [${all('paged1')}], paged n=${many} ${m.pagedN.toFixed(0)} [${all('pagedN')}]`);
    rows.push(`| ${build} (${r.info.threads} ${r.info.threads === 1 ? 'thread' : 'threads'}) | ${m.contiguous.toFixed(0)} | ${m.paged1.toFixed(0)} `
      + `| ${(m.paged1 / m.contiguous).toFixed(2)}× | ${m.pagedN.toFixed(0)} | ${(m.pagedN / m.paged1).toFixed(2)}× |`);
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
console.log(`\n| build | contiguous, n = 1 (tok/s) | paged, n = 1 | paged / contiguous | paged, n = ${many} | n = ${many} / n = 1 |`);
console.log('|---|---:|---:|---:|---:|---:|');
for (const row of rows) console.log(row);
