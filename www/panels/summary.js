// The live numbers of the configuration panel — parameters (and, for a Mixture-of-Experts FFN, those one token
// uses), FLOPs per token, memory, tokens per step — and the
// core's verdict on the draft: its validation message, inline, naming field, value and rule. The same check
// feeds the shape-flow panel and decides whether Train is enabled.
import { $, fill, h, debounce } from '../dom.js';
import { t } from '../i18n.js';
import { on, emit } from '../bus.js';
import { OPTIONS, applies, configFromValues, DENOISE_TASKS } from '../options.js';
import { check, getEngine, startEngine, savedBudget, setBudget } from '../engine.js';
import { distinctChars } from '../data.js';
import * as runs from '../runs.js';
import { si, bytes, grouped } from '../format.js';
import { markInvalid, markKeys } from './config.js';

let verdict = { ok: false, pending: true, flow: null };

/** Is the selected run's setup known to be buildable? */
export function draftOk() {
  return verdict.ok;
}

export function lastFlow() {
  return verdict.flow;
}

/** Vocabulary size for a setup: characters of the corpus plus the architecture's special token, or the task's;
 * a denoising task's specials ([BOS] and [MASK] or the sentinels) come from the core. */
async function vocabFor(values) {
  if (values.arch === 'encoder_decoder' && !DENOISE_TASKS.includes(values.task)) return 12; // 0-9, '+', [BOS]
  const n = await distinctChars(values.corpus);
  if (values.arch === 'encoder_decoder') {
    const e = getEngine() ?? (await startEngine().catch(() => null));
    const specials = e ? await e.specialTokens(configFromValues(values)).catch(() => ['[BOS]']) : ['[BOS]'];
    return n + specials.length;
  }
  return n + (values.arch === 'bert' ? 1 : 0);
}

function notNumbers(values) {
  return OPTIONS.filter((o) => applies(o, values) && o.type !== 'choice' && o.type !== 'bool'
    && values[o.key] !== null && typeof values[o.key] !== 'number');
}

function set(v) {
  verdict = v;
  render();
  emit('verdict', verdict);
}

const run = debounce(async () => {
  const values = runs.selectedRun()?.values;
  if (!values) return;
  const bad = notNumbers(values);
  if (bad.length) {
    markKeys(bad.map((o) => o.key));
    set({ ok: false, pending: false, flow: null, message: t('sum.notNumber', { label: t(`opt.${bad[0].key}.label`) }) });
    return;
  }
  let vocab;
  try {
    vocab = await vocabFor(values);
  } catch (e) {
    set({ ok: false, pending: false, flow: null, message: e.key ? t(e.key) : e.message, dataError: true });
    return;
  }
  check(configFromValues(values), vocab, values.backend);
}, 120);

function render() {
  const f = verdict.flow;
  $('#sum-params').textContent = f ? si(f.n_params) : '—';
  $('#sum-params').title = f ? grouped(f.n_params) : '';
  $('#sum-flops').textContent = f ? si(f.forward_flops_per_token) : '—';
  $('#sum-memory').textContent = f ? bytes(f.memory_bytes) : '—';
  const rec = runs.selectedRun();
  $('#sum-tokens').textContent = f && rec ? grouped(rec.values.batch_size * rec.values.ctx_len) : '—';
  // Mixture-of-Experts: every expert counts in the parameters; a token uses the router and top_k of them.
  const moe = !!(f && rec?.values.moe);
  $('#sum-active-box').hidden = !moe;
  $('#sum-active').textContent = moe ? si(f.active_params) : '—';
  $('#sum-active').title = moe ? grouped(f.active_params) : '';
  $('#sum-active-note').textContent = moe ? t('sum.active.note', { total: si(f.n_params), k: rec.values.top_k, e: rec.values.experts }) : '';
  const msg = $('#validation');
  msg.classList.toggle('bad', !verdict.ok && !verdict.pending);
  msg.classList.toggle('good', verdict.ok);
  const m = rec?.status === 'invalid' ? rec.message : null;
  const runMsg = m ? (m.key ? t(m.key, m.vars) : m.text) : null;
  if (verdict.pending) fill(msg, getEngine() ? t('sum.checking') : t('app.engineStarting'));
  else if (verdict.ok && runMsg) {
    msg.classList.replace('good', 'bad');
    fill(msg, h('strong', {}, `✗ ${t('sum.invalid')}: `), runMsg);
  } else if (verdict.ok) fill(msg, `✓ ${t('sum.valid')}`);
  else fill(msg, h('strong', {}, `✗ ${t('sum.invalid')}: `), verdict.message ?? '');
}

/** The memory-budget field: the engine checks every config against it; a bad value is refused by the engine,
 * naming it, in the validation line. */
function mountBudget() {
  const input = $('#mem-budget');
  input.value = String(savedBudget() ?? 2);
  input.addEventListener('change', async () => {
    const gib = input.value.trim() === '' ? NaN : Number(input.value);
    try {
      input.value = String(await setBudget(gib));
      input.removeAttribute('aria-invalid');
      run();
    } catch (e) {
      input.setAttribute('aria-invalid', 'true');
      set({ ok: false, pending: false, flow: null, message: `${t('sum.budget')}: ${e.message}` });
    }
  });
}

export function mount() {
  mountBudget();
  on('values', () => {
    verdict = { ...verdict, pending: true };
    render();
    run();
  });
  on('data', run);
  on('runs', render);
  on('engine', ({ engine }) => (engine ? run() : render()));
  on('lang', () => {
    render();
    run();
  });
  on('check', ({ flow, error, config }) => {
    const rec = runs.selectedRun();
    if (!rec || JSON.stringify(config) !== JSON.stringify(configFromValues(rec.values))) return;
    if (error) {
      markInvalid(error.kind === 'config' ? error.field : null);
      set({ ok: false, pending: false, flow: null, message: error.message });
    } else {
      markInvalid(null);
      set({ ok: true, pending: false, flow, message: null });
    }
  });
  render();
}
