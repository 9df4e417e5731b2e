// The playground page: wires the panels together and starts things in an order that makes the page usable at
// once — strings and controls first, the engine (wasm, thread pool) in the background, the model after it.
// Panels talk through the event bus (bus.js); all model computation is in the engine's Worker.
import { $ } from './dom.js';
import { setLang, initialLang, getLang, translate, t } from './i18n.js';
import { on, emit } from './bus.js';
import * as state from './state.js';
import * as runs from './runs.js';
import * as autosave from './autosave.js';
import * as options from './options.js';
import * as data from './data.js';
import { startEngine, getEngine } from './engine.js';
import { loadPresets, presetValues } from './presets.js';
import * as configPanel from './panels/config.js';
import * as dataPanel from './panels/data.js';
import * as summaryPanel from './panels/summary.js';
import * as controlsPanel from './panels/controls.js';
import * as runsPanel from './panels/runs.js';
import * as chartsPanel from './panels/charts.js';
import * as attentionPanel from './panels/attention.js';
import * as shapesPanel from './panels/shapes.js';
import * as usePanel from './panels/use.js';
import * as checkpointPanel from './panels/checkpoint.js';
import * as noticesPanel from './panels/notices.js';
import * as expertsPanel from './panels/experts.js';
import * as costPanel from './panels/cost.js';
import * as stepPanel from './panels/step.js';
import * as conceptsPanel from './panels/concepts.js';
import * as lessonsPanel from './panels/lessons.js';
import * as recipesPanel from './panels/recipes.js';
import { isolate } from '../pkg/isolate.js';

const params = new URLSearchParams(location.search);

/**
 * The service worker (sw.js): cross-origin isolation on a host that sends no COOP/COEP (the first visit reloads
 * once), and the page offline after the first visit. `?nosw` turns it off. The engine waits for it (www/engine.js).
 */
function serviceWorker() {
  isolate({ url: 'sw.js', off: params.has('nosw') }).then((how) => {
    window.__tp.isolation = how;
  });
}

/**
 * Teacher mode's projector layout (`#…&present`): large type, only the lessons, the runs and their charts. The
 * Present button in the header turns it on and off; the hash keeps it, so a lesson link with &present opens in it.
 */
function setPresent(on) {
  document.documentElement.toggleAttribute('data-present', on);
  $('#present').setAttribute('aria-pressed', String(on));
  $('#present').textContent = t(on ? 'app.present.exit' : 'app.present');
  state.setPresent(on);
}

function mountPanels() {
  const customBox = dataPanel.create();
  configPanel.mount($('#config-groups'), { slots: { corpus: customBox } });
  for (const p of [summaryPanel, controlsPanel, runsPanel, chartsPanel, attentionPanel, shapesPanel, usePanel, checkpointPanel, noticesPanel, dataPanel, expertsPanel, costPanel, stepPanel, conceptsPanel, lessonsPanel, recipesPanel]) p.mount();
  translate(document);
  $('#lang').addEventListener('click', () => setLang(getLang() === 'en' ? 'zh' : 'en'));
  $('#present').addEventListener('click', () => setPresent(!document.documentElement.hasAttribute('data-present')));
  on('lang', () => setPresent(document.documentElement.hasAttribute('data-present')));
}

/** A link's text as a notice quotes it: at most 60 characters (a hostile link can be long). */
const quote = (s) => (s.length > 60 ? `${s.slice(0, 60)}…` : s);

/**
 * Says which values of a link were refused (state.decode), naming each option in the page's words, and which of
 * its keys are no option at all — a few notices at most, however many a link holds.
 */
function sayRefused(setup) {
  for (const { key, raw, kept } of (setup?.refused ?? []).slice(0, 3)) {
    if (key === 'lesson') {
      emit('notice', { key: 'lessons.unknown', vars: { id: quote(raw) }, kind: 'warn' });
      continue;
    }
    const [rule, ruleVars] = state.ruleOf(options.BY_KEY[key]);
    const vars = { name: t(`opt.${key}.label`), value: quote(raw), rule: t(rule, ruleVars), dflt: kept };
    emit('notice', { key: 'notice.badLink', vars, kind: 'warn' });
  }
  const unknown = setup?.unknown ?? [];
  if (unknown.length) {
    const keys = unknown.slice(0, 5).map((k) => `“${quote(k)}”`).join(', ') + (unknown.length > 5 ? ', …' : '');
    emit('notice', { key: 'notice.unknownLink', vars: { keys, n: unknown.length }, kind: 'warn' });
  }
}

async function main() {
  serviceWorker(); // first: on a first visit without isolation the page reloads as soon as the worker is installed
  setLang(initialLang(), { remember: false });
  mountPanels();
  on('values', ({ values }) => state.writeHash(values, data.getCustomText()));
  on('data', () => runs.selectedRun() && state.writeHash(runs.selectedRun().values, data.getCustomText()));

  const [, saved] = await Promise.all([loadPresets(), autosave.load()]);
  const link = state.readHash(presetValues());
  sayRefused(link);
  const restoring = saved && (!link || state.currentHash() === saved.hash);

  // The engine checks a text before it becomes the corpus (dataPanel.useText); runs on it are built once it has.
  if (restoring) {
    const text = saved.customText ? dataPanel.useText(saved.customText) : Promise.resolve();
    // Show the saved settings at once; the runs come back when the engine is up and the text is back.
    runs.init(saved.runs.find((r) => r.no === saved.selected)?.values ?? saved.runs[0].values, { build: false });
    text.then(() => runs.restore(saved)).then(
      () => emit('notice', { key: 'notice.restored', vars: { n: saved.runs.length } }),
      (e) => {
        emit('notice', { key: 'notice.restoreFailed', vars: { msg: e.message }, kind: 'error' });
        runs.init(link?.values ?? presetValues());
      },
    ).finally(() => autosave.enable());
  } else {
    const text = link?.text ?? (link?.values.corpus === 'custom' ? saved?.customText : null);
    if (text) dataPanel.useText(text); // builds the runs on it once accepted (runs.customTextChanged)
    else if (link?.values.corpus === 'custom') dataPanel.sayNotInLink();
    runs.init(link?.values ?? presetValues(), { build: !text });
    autosave.enable();
  }
  // A lesson link (#lesson=<id>) opens the lesson and sets up its runs, in place of the saved ones.
  if (link?.lesson) lessonsPanel.open(link.lesson, { setup: !restoring });
  if (link?.present) setPresent(true);
  state.onHashChange((setup) => {
    sayRefused(setup);
    if (setup.present !== document.documentElement.hasAttribute('data-present')) setPresent(setup.present);
    if (setup.lesson) {
      lessonsPanel.open(setup.lesson, { setup: true });
      return;
    }
    if (setup.text) dataPanel.useText(setup.text);
    runs.applyValues(setup.values, 'hash');
  }, () => presetValues());

  document.documentElement.dataset.ui = 'ready';
  window.__tp.uiReadyMs = performance.now();
  // The page is usable now; the engine (wasm, thread pool) loads behind it.
  startEngine().catch((e) => emit('notice', { key: 'notice.engineFailed', vars: { msg: e.message }, kind: 'error' }));
  chartsPanel.preload();
}

// For the browser tests and the curious: the page's modules.
window.__tp = { runs, options, state, data, autosave, getEngine, charts: chartsPanel.pointCounts, draftOk: summaryPanel.draftOk, cost: costPanel.state, lessons: lessonsPanel.snapshot, runLesson: lessonsPanel.run, recipes: recipesPanel.snapshot };

main().catch((e) => {
  console.error(e);
  emit('notice', { key: 'notice.engineFailed', vars: { msg: e.message }, kind: 'error' });
});
