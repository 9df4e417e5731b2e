// The training bar: Train, Pause, Step, Reset, New run for the selected run; its step, loss, tokens/s, ETA and a
// progress bar; and the badge naming the backend that trains.
import { $ } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import { backendKey, getEngine } from '../engine.js';
import * as runs from '../runs.js';
import { draftOk } from './summary.js';
import { loss as fmtLoss, duration, grouped } from '../format.js';

let engineError = null;

function readouts() {
  const rec = runs.selectedRun();
  const total = rec?.values.steps;
  const step = rec?.stepCount ?? 0;
  $('#readout-step').textContent = rec ? `${grouped(step)} / ${Number.isFinite(total) ? grouped(total) : '—'}` : '—';
  const bar = $('#progress');
  bar.max = Number.isFinite(total) && total > 0 ? total : 1;
  bar.value = Math.min(step, bar.max);
  bar.style.setProperty('--run', rec?.color ?? '#888');
  const last = rec?.last;
  $('#readout-loss').textContent = last ? fmtLoss(last.loss) : t('ctl.none');
  // A Mixture-of-Experts run's balancing loss, beside the cross-entropy.
  $('#readout-aux-box').hidden = !rec?.values.moe;
  $('#readout-aux').textContent = last?.auxLoss !== undefined ? fmtLoss(last.auxLoss) : t('ctl.none');
  $('#readout-tokps').textContent = last && rec.training ? grouped(last.tokensPerSec) : t('ctl.none');
  const left = Number.isFinite(total) ? total - step : NaN;
  $('#readout-eta').textContent = rec?.training && rec.rate > 0 ? duration(left / rec.rate) : t('ctl.none');
}

function buttons() {
  const rec = runs.selectedRun();
  const engine = getEngine();
  const busy = rec?.status === 'building';
  const canTrain = !!(engine && rec && draftOk() && rec.status !== 'invalid' && !busy);
  $('#train').disabled = !canTrain || rec.training;
  $('#pause').disabled = !rec?.training;
  $('#step').disabled = !canTrain || rec.training;
  $('#reset').disabled = !(engine && rec && (rec.stepCount > 0 || rec.status === 'error'));
  $('#new-run').disabled = !rec || runs.list().length >= runs.MAX_RUNS;
  document.body.classList.toggle('training', runs.list().some((r) => r.training));
  $('#train').classList.toggle('active', !!rec?.training);
}

function badge() {
  const el = $('#backend');
  const info = getEngine()?.info;
  if (engineError) {
    el.textContent = t('backend.failed');
    el.dataset.backend = 'failed';
  } else {
    // The backend the selected run last stepped on (the engine may move a run, e.g. GPU → CPU), else the engine's.
    const backend = runs.selectedRun()?.last?.backend ?? info?.backend;
    const [key, vars] = backendKey(info && { ...info, backend });
    el.textContent = t(key, vars);
    el.dataset.backend = backend ?? 'loading';
  }
}

export function mount() {
  const act = (fn) => () => fn(runs.selectedRun()).catch?.((e) => console.warn(e));
  $('#train').addEventListener('click', act(runs.train));
  $('#pause').addEventListener('click', act(runs.pause));
  $('#step').addEventListener('click', act(runs.step));
  $('#reset').addEventListener('click', act(runs.reset));
  $('#new-run').addEventListener('click', () => runs.newRun());
  on('runs', () => {
    buttons();
    readouts();
    badge();
  });
  on('verdict', buttons);
  on('values', () => {
    buttons();
    readouts();
  });
  on('progress', ({ rec }) => rec === runs.selectedRun() && readouts());
  on('engine', ({ error }) => {
    engineError = error ?? null;
    badge();
    buttons();
  });
  on('lang', () => {
    badge();
    readouts();
  });
  badge();
  buttons();
  readouts();
}
