// The minimal page: pick a preset, train it, watch the loss, use the model. It talks only to the engine API
// (pkg/index.js); all model maths runs in the engine's Worker.
import { Engine } from '../pkg/index.js';

const $ = (id) => document.getElementById(id);
const CORPUS_URL = 'www/data/tinyshakespeare.txt';
let engine = null;
let run = null;
let corpus = null;
let target = 0;

function setStatus(text) {
  $('status').textContent = text;
}

function buttons({ training }) {
  const ready = engine && run;
  $('train').disabled = !ready || training;
  $('pause').disabled = !ready || !training;
  $('step').disabled = !ready || training;
  $('reset').disabled = !ready;
  $('generate').disabled = !ready;
}

function fmt(x, digits = 4) {
  return x === undefined || x === null ? '' : Number(x).toFixed(digits);
}

function logRow(p) {
  const tr = document.createElement('tr');
  for (const v of [p.step, fmt(p.loss), fmt(p.valLoss), p.lr.toExponential(2), Math.round(p.tokensPerSec)]) {
    const td = document.createElement('td');
    td.textContent = String(v);
    tr.append(td);
  }
  const body = $('log').tBodies[0];
  body.prepend(tr);
  while (body.rows.length > 12) body.deleteRow(-1);
}

async function newRun() {
  if (run) await run.dispose();
  run = null;
  $('log').tBodies[0].replaceChildren();
  $('output').textContent = '';
  const name = $('preset').value;
  const config = await (await fetch(`configs/${name}.json`)).json();
  const text = config.data?.task && config.data.task !== 'text' ? undefined : (corpus ??= await (await fetch(CORPUS_URL)).text());
  run = await engine.createRun(config, { corpus: text });
  $('steps').value = config.train.steps;
  $('prompt').value = config.model.arch === 'gpt' ? 'ROMEO:' : '';
  if (config.model.arch === 'bert') $('prompt').value = 'To be, or not to [MASK]e, that is the question';
  if (config.model.arch === 'encoder_decoder') $('prompt').value = '31415926'.slice(0, config.data.digits ?? 6);
  run.on('progress', (p) => {
    logRow(p);
    $('progress').value = target ? Math.min(1, p.step / target) : 0;
    setStatus(`step ${p.step} · loss ${fmt(p.loss)}${p.valLoss !== undefined ? ` · val ${fmt(p.valLoss)}` : ''} · ${Math.round(p.tokensPerSec)} tokens/s`);
  });
  run.on('error', (e) => setStatus(`Stopped: ${e.message}`));
  setStatus(`${name}: ${run.paramCount.toLocaleString()} parameters. Press Train.`);
  buttons({ training: false });
}

async function train() {
  const steps = Math.max(1, Number($('steps').value) - run.stepCount);
  target = run.stepCount + steps;
  buttons({ training: true });
  try {
    const r = await run.train({ steps });
    setStatus(`${r.stopped === 'done' ? 'Done' : 'Paused'} at step ${r.step}.`);
  } catch (e) {
    setStatus(`Stopped: ${e.message}`);
  }
  buttons({ training: false });
}

async function use() {
  const out = $('output');
  out.textContent = '';
  const arch = run.config.model.arch;
  try {
    if (arch === 'gpt') {
      await run.generate($('prompt').value, { maxTokens: 300, temperature: 0.8 }, (piece) => out.append(piece));
    } else if (arch === 'bert') {
      const fills = await run.fillMask($('prompt').value, { k: 5 });
      out.textContent = fills.map((f) => `#${f.position}: ${f.candidates.map(([t, p]) => `${JSON.stringify(t)} ${(p * 100).toFixed(1)}%`).join('  ')}`).join('\n');
    } else {
      const r = await run.decode($('prompt').value);
      out.textContent = `${r.output}${r.answer != null ? `   (expected ${r.answer})` : ''}`;
    }
  } catch (e) {
    out.textContent = `Error: ${e.message}`;
  }
}

async function main() {
  try {
    engine = await Engine.start();
  } catch (e) {
    setStatus(`The engine could not start: ${e.message}`);
    return;
  }
  const i = engine.info;
  $('backend').textContent = i.build === 'threads' ? `WASM threads × ${i.threads}` : 'WASM single';
  engine.on('restart', ({ message }) => setStatus(`The engine restarted after an error: ${message}`));
  $('preset').addEventListener('change', () => newRun().catch((e) => setStatus(e.message)));
  $('train').addEventListener('click', train);
  $('pause').addEventListener('click', () => run.pause());
  $('step').addEventListener('click', async () => {
    try {
      await run.step();
    } catch (e) {
      setStatus(`Stopped: ${e.message}`);
    }
  });
  $('reset').addEventListener('click', () => newRun().catch((e) => setStatus(e.message)));
  $('generate').addEventListener('click', use);
  await newRun();
  window.__tp = { engine, get run() { return run; } };
}

main();
