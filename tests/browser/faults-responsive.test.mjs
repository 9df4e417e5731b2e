// The page stays responsive under load, in Chromium: six runs training at once (small models, so progress events
// come as fast as they can) and a generation streaming, with no main-thread task over 50 ms while they run.
//
// A task's length is measured twice: by the page's own 'longtask' observer (wall-clock time), and in a trace of the
// page's thread (its CPU time). On a machine whose cores are all busy (the engine's pool takes every core, and a
// shared test machine more) a task of a few ms can take 50 ms of wall-clock time while the thread waits for a
// core: the wall-clock figures are logged for docs/RELIABILITY.md, and the test holds each task's CPU time — what
// the page itself spends — under 50 ms.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpus, loadavg } from 'node:os';
import { startServer, launch } from './util.mjs';
import { openPlayground, makeSmall, waitTrainable, screenshot } from './playground-helpers.mjs';

let browser;
let server;
before(async () => {
  browser = await launch();
  server = await startServer({ isolation: true });
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('six runs training and a generation: no main-thread task over 50 ms', async () => {
  const { page, problems } = await openPlayground(browser.context, server.url, { hash: '#arch=gpt' });
  await makeSmall(page, { steps: 100000 });
  await waitTrainable(page);
  for (let i = 1; i < 6; i++) {
    await page.click('#new-run');
    await waitTrainable(page);
  }
  assert.equal(await page.evaluate(() => window.__tp.runs.list().length), 6);
  await page.evaluate(() => window.__tp.runs.list().forEach((r) => window.__tp.runs.train(r)));
  await page.waitForFunction(() => window.__tp.runs.list().every((r) => r.training && r.stepCount > 3), null, { timeout: 60000 });

  // From here on, every task of the page's thread longer than 50 ms is recorded, and the gaps between animation
  // frames (for the figure in the docs); the trace records every task's wall-clock and CPU time.
  const cdp = await page.context().newCDPSession(page);
  const events = [];
  cdp.on('Tracing.dataCollected', ({ value }) => events.push(...value));
  const traced = new Promise((ok) => cdp.once('Tracing.tracingComplete', ok));
  await cdp.send('Tracing.start', { transferMode: 'ReportEvents', traceConfig: { recordMode: 'recordAsMuchAsPossible', includedCategories: ['toplevel'] } });
  const load0 = loadavg()[0];
  await page.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__long.push(Math.round(e.duration));
    }).observe({ type: 'longtask' });
    window.__frames = { n: 0, worst: 0 };
    let last = performance.now();
    const frame = (t) => {
      window.__frames.worst = Math.max(window.__frames.worst, t - last);
      window.__frames.n++;
      last = t;
      if (!window.__frames.stop) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  });
  const steps0 = await page.evaluate(() => window.__tp.runs.list().map((r) => r.stepCount));
  await page.fill('#gen-length', '400');
  await page.click('#gen-go');
  await page.waitForFunction(() => document.getElementById('gen-out').dataset.done === '1', null, { timeout: 60000 });
  // And a few more seconds of the six runs alone.
  await page.waitForTimeout(3000);
  const r = await page.evaluate(() => {
    window.__frames.stop = true;
    return {
      long: window.__long,
      frames: window.__frames,
      steps: window.__tp.runs.list().map((x) => x.stepCount),
      training: window.__tp.runs.list().every((x) => x.training),
      text: document.getElementById('gen-out').textContent.length,
    };
  });
  await cdp.send('Tracing.end');
  await traced;
  const load1 = loadavg()[0];
  // The page's thread: the renderer's main thread with the most tasks (the trace also holds the browser's).
  const mains = events.filter((e) => e.name === 'thread_name' && e.args.name === 'CrRendererMain');
  const count = (m) => events.filter((e) => e.pid === m.pid && e.tid === m.tid).length;
  const main = mains.sort((a, b) => count(b) - count(a))[0];
  const tasks = events.filter((e) => e.pid === main.pid && e.tid === main.tid && e.ph === 'X' && /RunTask/.test(e.name));
  const ms = (us) => Math.round(us / 100) / 10;
  // A task's CPU time (tdur); the trace now and then leaves it out of one (a task cut by the trace's end), and a
  // task's CPU time is at most its wall-clock time, so that one counts at its wall-clock time (an upper bound).
  const cpu = (e) => (Number.isFinite(e.tdur) ? e.tdur : e.dur);
  const cpuMax = ms(Math.max(...tasks.map(cpu)));
  const wallMax = ms(Math.max(...tasks.map((e) => e.dur)));
  const span = (Math.max(...tasks.map((e) => e.ts + e.dur)) - Math.min(...tasks.map((e) => e.ts))) / 1e6;
  const busy = tasks.reduce((a, e) => a + cpu(e), 0) / 1e6 / span;
  console.log(`six runs training and a generation: ${tasks.length} tasks in ${span.toFixed(1)} s; longest task ${cpuMax} ms of CPU time, `
    + `${wallMax} ms of wall-clock time; the page's thread busy ${(100 * busy).toFixed(0)}% of the time; long tasks seen by the page: `
    + `${JSON.stringify(r.long)}; ${r.frames.n} frames, longest gap ${r.frames.worst.toFixed(1)} ms; steps ${steps0} → ${r.steps}; `
    + `${cpus()[0]?.model}, ${cpus().length} cores, load average ${load0.toFixed(1)} → ${load1.toFixed(1)}`);
  assert.ok(tasks.length > 100, 'the trace holds the page\'s tasks');
  assert.ok(r.training, 'all six still training');
  assert.ok(r.steps.every((s, i) => s > steps0[i]), 'every run made progress');
  assert.ok(r.text >= 400, 'the generation finished');
  await screenshot(page, 'faults-six-runs');
  await page.click('#pause');
  await page.close();
  assert.ok(cpuMax <= 50, `no main-thread task spends over 50 ms (longest: ${cpuMax} ms)`);
  assert.deepEqual(problems, []);
});
