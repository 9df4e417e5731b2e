// N continuations over the paged KV cache through the engine (issue 17 §1): they stream with their indices,
// continuation i is the one-continuation text of seed + i (on the paged and the contiguous path), the cache's view
// comes as it fills, training goes on between a generation's tokens, a cancel (run.cancelGenerate or an
// AbortSignal) stops it and frees its blocks with the engine still usable, and bad arguments are refused naming
// the field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launch, open } from './util.mjs';

// GQA (4 heads, 2 KV heads), so that the view's MHA figure differs from the cache's own.
const SMALL = {
  model: {
    arch: 'gpt', d_model: 48, n_layers: 2, n_heads: 4, n_kv_heads: 2, ctx_len: 32,
    ffn: { activation: 'gelu', mult: 4 }, norm: { kind: 'layernorm', placement: 'pre' },
    position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
  },
  train: { batch_size: 8, steps: 100000, lr: 3e-3, eval_interval: 100000, eval_iters: 1 },
  seed: 7,
};

let isolated, plain, browser;
before(async () => {
  isolated = await startServer({ isolation: true });
  plain = await startServer({ isolation: false });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await isolated?.close();
  await plain?.close();
});

/** A harness page with an engine and a run of SMALL trained a few steps (window.engine, window.run). */
async function setUp(server) {
  const { page, problems } = await open(browser.context, `${server.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  await page.evaluate(async (config) => {
    const corpus = await (await fetch('/www/data/tinyshakespeare.txt')).text();
    window.engine = await window.tp.Engine.start();
    window.restarts = 0;
    window.engine.on('restart', () => window.restarts++);
    window.run = await window.engine.createRun(config, { corpus });
    await window.run.train({ steps: 5 });
  }, SMALL);
  return { page, problems };
}

for (const [build, server] of [['threads', () => isolated], ['single', () => plain]]) {
  test(`${build}: N continuations stream with their indices, and continuation i is the n = 1 text of seed + i`, { timeout: 180000 }, async () => {
    const { page, problems } = await setUp(server());
    const r = await page.evaluate(async () => {
      const streamed = ['', '', '', ''];
      const indices = new Set();
      const many = await window.run.generate({
        prompt: 'ROMEO:', n: 4, maxTokens: 60, temperature: 1, topK: 20, seed: 11,
        onText: (piece, i) => {
          streamed[i] += piece;
          indices.add(i);
        },
      });
      const one = [];
      const contiguous = [];
      for (let i = 0; i < 4; i++) {
        one.push(await window.run.generate({ prompt: 'ROMEO:', maxTokens: 60, temperature: 1, topK: 20, seed: 11 + i }));
        contiguous.push(await window.run.generate({ prompt: 'ROMEO:', maxTokens: 60, temperature: 1, topK: 20, seed: 11 + i, kvCache: 'contiguous' }));
      }
      const pieces = [];
      const legacy = await window.run.generate('ROMEO:', { maxTokens: 60, temperature: 1, topK: 20, seed: 12 }, (p) => pieces.push(p));
      return { many, streamed, indices: [...indices].sort(), one, contiguous, legacy, pieces, engineInfo: window.engine.info, restarts: window.restarts };
    });
    assert.equal(r.engineInfo.build, build);
    assert.equal(r.many.stopped, 'done');
    assert.equal(r.many.texts.length, 4);
    assert.equal(r.many.text, r.many.texts[0]);
    assert.deepEqual(r.indices, [0, 1, 2, 3], 'every continuation streamed, under its index');
    assert.deepEqual(r.streamed, r.many.texts, 'the streamed pieces make up each text');
    for (let i = 0; i < 4; i++) {
      assert.equal([...r.many.texts[i]].length, 60);
      assert.equal(r.one[i].texts.length, 1);
      assert.equal(r.many.texts[i], r.one[i].text, `continuation ${i} = n = 1 with seed ${11 + i} (paged)`);
      assert.equal(r.many.texts[i], r.contiguous[i].text, `continuation ${i} = the contiguous path with seed ${11 + i}`);
      assert.equal(r.contiguous[i].kv, null);
    }
    assert.ok(new Set(r.many.texts).size > 1, 'different seeds, different texts');
    assert.equal(r.legacy, r.many.texts[1], 'generate(prompt, opts, onText) resolves the text of its seed');
    assert.equal(r.pieces.join(''), r.legacy);
    // The cache at the end: every sequence finished and freed its blocks; the peak held them.
    const kv = r.many.kv;
    assert.equal(kv.now.blocksUsed, 0);
    assert.deepEqual(kv.table.seqs, []);
    assert.ok(kv.table.refs.every((c) => c === 0), 'every block free');
    assert.ok(kv.peak.blocksUsed > 0 && kv.peak.bytesUsed === kv.peak.blocksUsed * kv.peak.blockSize * kv.peak.bytesPerPosition);
    assert.equal(kv.peak.blockSize, 16);
    assert.equal(kv.bytesPerPositionMha, 2 * kv.peak.bytesPerPosition, '4 heads over 2 KV heads: MHA would take twice');
    assert.equal(r.restarts, 0);
    assert.deepEqual(problems, []);
    await page.close();
  });
}

test('the cache view comes as the continuations grow: a sequence per continuation, the prompt\'s full blocks shared, bytes against the contiguous allocation', { timeout: 180000 }, async () => {
  const { page, problems } = await setUp(isolated);
  const r = await page.evaluate(async () => {
    const views = [];
    // 9 prompt tokens in blocks of 4: two full blocks shared by all four continuations, the third copied on write.
    const g = await window.run.generate({ prompt: 'KING RICH', n: 4, blockSize: 4, maxTokens: 20, seed: 3, onKv: (v) => views.push(v) });
    return { views, kv: g.kv };
  });
  assert.ok(r.views.length >= 1);
  const last = r.views.at(-1);
  assert.equal(last.done, false, 'the last view sent has the live sequences');
  assert.deepEqual(last.table.seqs.map((s) => s.index), [0, 1, 2, 3]);
  for (const v of r.views) {
    const { now, table } = v;
    assert.equal(table.blockSize, 4);
    const used = table.refs.filter((c) => c > 0).length;
    assert.equal(now.blocksUsed, used);
    assert.equal(now.bytesUsed, used * 4 * now.bytesPerPosition);
    assert.equal(now.bytesContiguous, table.seqs.length * 32 * now.bytesPerPosition, 'ctx_len positions per live sequence');
    for (const s of table.seqs) {
      assert.equal(s.blocks.length, Math.ceil(s.positions / 4));
      for (const b of s.blocks) assert.ok(table.refs[b] >= 1);
    }
    // Each block's count is the number of sequences that hold it.
    const held = table.refs.map(() => 0);
    for (const s of table.seqs) for (const b of s.blocks) held[b]++;
    assert.deepEqual(held, table.refs);
    // The prompt's two full blocks (until the sequences restart past ctx_len) are the same physical blocks in all.
    if (table.seqs[0].positions <= 32) {
      const firsts = table.seqs.map((s) => s.blocks.slice(0, 2).join());
      assert.equal(new Set(firsts).size, 1, 'prompt blocks shared');
      assert.equal(table.refs[table.seqs[0].blocks[0]], 4);
      assert.ok(now.bytesUsed < now.bytesContiguous);
    }
  }
  assert.ok(r.views.some((v) => v.table.refs.some((c) => c > 1)), 'shared blocks seen');
  assert.equal(r.kv.now.blocksUsed, 0);
  assert.deepEqual(problems, []);
  await page.close();
});

test('training steps go on while a long generation runs; a cancel stops it, frees its blocks, and the engine keeps working', { timeout: 180000 }, async () => {
  const { page, problems } = await setUp(isolated);
  const r = await page.evaluate(async () => {
    const run = window.run;
    const log = [];
    run.on('progress', () => log.push('step'));
    const training = run.train({ steps: 100000 });
    // A long generation (past ctx_len many times): it ends when cancelled.
    let pieces = 0;
    const first = new Promise((ok) => {
      window.gotText = ok;
    });
    const g = run.generate({
      prompt: 'ROMEO:', n: 4, maxTokens: 100000, seed: 1,
      onText: () => {
        log.push('text');
        pieces++;
        window.gotText();
      },
    });
    await Promise.race([first, g]);
    // Let both go on for a while, then cancel.
    while (log.filter((e) => e === 'step').length < 5 || pieces < 20) await new Promise((ok) => setTimeout(ok, 20));
    const stoppedCount = await run.cancelGenerate();
    const cancelled = await g;
    const stepsAtCancel = run.stepCount;
    // A signal stops a generation too.
    const ac = new AbortController();
    const viaSignal = run.generate({ prompt: 'ROMEO:', n: 2, maxTokens: 100000, seed: 2, signal: ac.signal, onText: () => ac.abort() });
    const signalled = await viaSignal;
    const aborted = await run.generate({ prompt: 'ROMEO:', n: 2, signal: AbortSignal.abort() });
    // The engine still generates and trains.
    const again = await run.generate({ prompt: 'ROMEO:', n: 2, maxTokens: 10, seed: 5 });
    while (run.stepCount < stepsAtCancel + 3) await new Promise((ok) => setTimeout(ok, 20));
    await run.pause();
    const done = await training;
    const nothing = await run.cancelGenerate();
    return {
      log, stoppedCount, cancelled, signalled, aborted, again, done, nothing,
      restarts: window.restarts, lengths: cancelled.texts.map((t) => [...t].length),
    };
  });
  // Training steps came between the generation's texts, not only before or after it.
  const firstText = r.log.indexOf('text');
  const lastText = r.log.lastIndexOf('text');
  const stepsDuring = r.log.slice(firstText, lastText).filter((e) => e === 'step').length;
  assert.ok(stepsDuring >= 3, `training steps during the generation: ${stepsDuring}`);
  assert.equal(r.stoppedCount, 1);
  assert.equal(r.cancelled.stopped, 'cancelled');
  assert.equal(r.cancelled.texts.length, 4);
  assert.ok(r.lengths[0] > 0 && r.lengths[0] < 100000, `stopped partway: ${r.lengths}`);
  assert.ok(r.lengths.every((l) => l === r.lengths[0]), 'the continuations decode in lockstep');
  // The cache as the cancel found it: the four sequences' blocks, which free() then gave back.
  assert.equal(r.cancelled.kv.done, false);
  assert.deepEqual(r.cancelled.kv.table.seqs.map((s) => s.index), [0, 1, 2, 3]);
  assert.ok(r.cancelled.kv.now.blocksUsed > 0 && r.cancelled.kv.now.blocksUsed <= r.cancelled.kv.peak.blocksUsed);
  assert.equal(r.signalled.stopped, 'cancelled');
  assert.ok(r.signalled.texts.every((t) => t.length > 0 && t.length < 100000));
  assert.deepEqual(r.aborted, { texts: ['', ''], text: '', stopped: 'cancelled', kv: null });
  assert.equal(r.again.stopped, 'done');
  assert.deepEqual(r.again.texts.map((t) => t.length), [10, 10]);
  assert.equal(r.done.stopped, 'paused');
  assert.equal(r.nothing, 0);
  assert.equal(r.restarts, 0);
  assert.deepEqual(problems, []);
  await page.close();
});

test('bad n, blockSize and options are refused as invalid naming the field; a failed generation leaves the engine usable', { timeout: 180000 }, async () => {
  const { page, problems } = await setUp(isolated);
  const r = await page.evaluate(async () => {
    const run = window.run;
    const outcome = (f) => Promise.resolve().then(f).then(
      (v) => ({ accepted: true, v }),
      (e) => ({ kind: e.kind, message: e.message, isEngineError: e instanceof window.tp.EngineError }),
    );
    const cases = {
      'n 0': () => run.generate({ prompt: 'To', n: 0 }),
      'n 65': () => run.generate({ prompt: 'To', n: 65 }),
      'n 2.5': () => run.generate({ prompt: 'To', n: 2.5 }),
      'n "4"': () => run.generate({ prompt: 'To', n: '4' }),
      'blockSize 0': () => run.generate({ prompt: 'To', blockSize: 0 }),
      'blockSize 1025': () => run.generate({ prompt: 'To', blockSize: 1025 }),
      'blockSize 2**32': () => run.generate({ prompt: 'To', blockSize: 2 ** 32 }),
      'maxTokens -1': () => run.generate({ prompt: 'To', maxTokens: -1 }),
      'kvCache "flat"': () => run.generate({ prompt: 'To', kvCache: 'flat' }),
      'contiguous n 2': () => run.generate({ prompt: 'To', n: 2, kvCache: 'contiguous' }),
      'signal 5': () => run.generate({ prompt: 'To', signal: 5 }),
      'onKv 5': () => run.generate({ prompt: 'To', onKv: 5 }),
      'unknown max_tokens': () => run.generate({ prompt: 'To', max_tokens: 5 }),
      'object and opts': () => run.generate({ prompt: 'To' }, { maxTokens: 5 }),
      'positional n 4': () => run.generate('To', { n: 4 }),
      'temperature -1 (core)': () => run.generate({ prompt: 'To', temperature: -1 }),
      'unknown character (core)': () => run.generate({ prompt: '€', n: 3 }),
    };
    const out = {};
    for (const [name, f] of Object.entries(cases)) {
      out[name] = await outcome(f);
      out[name].usableAfter = (await outcome(() => run.generate({ prompt: 'To', n: 2, maxTokens: 3 }))).accepted === true;
    }
    const trained = await outcome(() => run.train({ steps: 2 }));
    return { out, trained, restarts: window.restarts, limits: window.engine.limits.generation };
  });
  const NAMES = {
    'n 0': /^n = 0: .*1 to 64/, 'n 65': /^n = 65/, 'n 2.5': /^n = 2\.5/, 'n "4"': /^n = '4'/, 'blockSize 0': /^blockSize = 0: .*1 to 1024/,
    'blockSize 1025': /^blockSize = 1025/, 'blockSize 2**32': /^blockSize/, 'maxTokens -1': /^maxTokens = -1/,
    'kvCache "flat"': /^kvCache/, 'contiguous n 2': /^n = 2: the contiguous cache/, 'signal 5': /^signal.*AbortSignal/,
    'onKv 5': /^onKv.*function/, 'unknown max_tokens': /^max_tokens: not an option/, 'object and opts': /one object/,
    'positional n 4': /^opts\.n = 4/, 'temperature -1 (core)': /temperature/, 'unknown character (core)': /not in the model's vocabulary/,
  };
  assert.deepEqual(r.limits, { max_n: 64, max_block_size: 1024, default_block_size: 16 });
  for (const [name, rule] of Object.entries(NAMES)) {
    const o = r.out[name];
    assert.ok(!o.accepted, `${name}: accepted`);
    assert.equal(o.isEngineError, true, `${name}: ${o.message}`);
    assert.equal(o.kind, 'invalid', `${name}: kind ${o.kind}: ${o.message}`);
    assert.match(o.message, rule, name);
    assert.ok(o.usableAfter, `${name}: no generation afterwards`);
  }
  assert.deepEqual(Object.keys(r.out).sort(), Object.keys(NAMES).sort());
  assert.equal(r.trained.accepted, true);
  assert.equal(r.restarts, 0);
  assert.deepEqual(problems, []);
  await page.close();
});

// An encoder-decoder run: run.generate({ prompt, n }) decodes the prompt as the source N times together over the
// paged cache (its cross-attention keys and values computed once); decoding i is run.decode's output with seed + i.
test('encoder-decoder: N decodings of one source together, decoding i equal to run.decode with seed + i', { timeout: 180000 }, async () => {
  const { page, problems } = await open(browser.context, `${isolated.url}/tests/browser/harness.html`);
  await page.waitForFunction(() => window.harnessReady === true);
  const r = await page.evaluate(async () => {
    const engine = await window.tp.Engine.start();
    const run = await engine.createRun({
      model: {
        arch: 'encoder_decoder', d_model: 32, n_layers: 2, n_encoder_layers: 2, n_decoder_layers: 2, n_heads: 4, n_kv_heads: 1,
        ctx_len: 16, ffn: { activation: 'gelu', mult: 2 }, norm: { kind: 'layernorm', placement: 'pre' },
        position: { kind: 'learned' }, attention: { scale: 'inv_sqrt_dk' },
      },
      train: { batch_size: 8, steps: 1000, lr: 3e-3, eval_interval: 1000, eval_iters: 1 },
      data: { task: 'reverse', digits: 6 },
      seed: 5,
    });
    await run.train({ steps: 5 });
    const many = await run.generate({ prompt: '314159', n: 3, blockSize: 2, maxTokens: 6, temperature: 1, seed: 21 });
    const one = [];
    for (let i = 0; i < 3; i++) one.push(await run.decode('314159', { maxTokens: 6, temperature: 1, seed: 21 + i }));
    engine.terminate();
    return { many, one };
  });
  assert.equal(r.many.stopped, 'done');
  assert.equal(r.many.texts.length, 3);
  for (let i = 0; i < 3; i++) {
    assert.equal([...r.many.texts[i]].length, 6);
    assert.equal(r.many.texts[i], r.one[i].output, `decoding ${i} = run.decode with seed ${21 + i}`);
  }
  assert.equal(r.many.kv.now.blocksUsed, 0, 'every block freed');
  assert.ok(r.many.kv.peak.blocksUsed >= 3, 'the [BOS] block shared, then a block of its own per decoding');
  assert.deepEqual(problems, []);
  await page.close();
});
