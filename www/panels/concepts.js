// The concept index: every concept the playground teaches (concepts.js), with a one-line definition in the page's
// language and a jump to its knob (the option's control, its group opened; where the option does not apply to the
// current setup, the option that makes it apply), to the view that shows it, or to its lesson. A filter box
// narrows the list by name or definition.
import { $, h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { on, emit } from '../bus.js';
import { CONCEPTS } from '../concepts.js';
import { BY_KEY } from '../options.js';

/** The control to jump to for option `key`: its own if shown, else the first shown control its `when` names. */
function visibleControl(key) {
  const el = document.getElementById(`opt-${key}`);
  const shown = (e) => e && !e.closest('[hidden]');
  if (shown(el)) return el;
  const when = BY_KEY[key]?.when;
  const keys = Array.isArray(when) ? when.flatMap(Object.keys) : Object.keys(when ?? {});
  for (const k of keys) {
    const c = visibleControl(k);
    if (c) return c;
  }
  return null;
}

/** Scrolls to `el` and marks it for a moment. */
function flash(el) {
  el.scrollIntoView({ block: 'center', behavior: 'smooth' });
  el.classList.add('jumped');
  setTimeout(() => el.classList.remove('jumped'), 1600);
}

export function jumpToKnob(key) {
  const el = visibleControl(key);
  if (!el) return false;
  const group = el.closest('details');
  if (group) group.open = true;
  flash(el.closest('.opt') ?? el);
  el.focus({ preventScroll: true });
  return true;
}

export function jumpToView(id) {
  const el = document.getElementById(id);
  if (!el) return false;
  flash(el);
  return true;
}

function item(c) {
  const links = [
    c.knob && h('button', { type: 'button', class: 'link', dataset: { knob: c.knob }, on: { click: () => jumpToKnob(c.knob) } }, t('concepts.knob', { name: t(`opt.${c.knob}.label`) })),
    c.view && h('button', { type: 'button', class: 'link', dataset: { view: c.view }, on: { click: () => {
      if (c.recipe) emit('recipe', { kind: c.recipe });
      jumpToView(c.view);
    } } }, t('concepts.view', { name: c.recipe ? t(`rcp.${c.recipe}.name`) : t(`sec.${c.view.slice(4)}`) })),
    c.lesson && h('a', { href: `#lesson=${c.lesson}`, dataset: { lesson: c.lesson } }, t('concepts.lesson')),
  ].filter(Boolean);
  return h('li', { class: 'concept', dataset: { concept: c.id } },
    h('dfn', {}, t(`concept.${c.id}.name`)), ' — ', t(`concept.${c.id}.def`),
    links.length ? h('span', { class: 'concept-links' }, links) : null);
}

function render() {
  const q = $('#concepts-filter').value.trim().toLowerCase();
  const shown = CONCEPTS.filter((c) => !q || `${t(`concept.${c.id}.name`)} ${t(`concept.${c.id}.def`)}`.toLowerCase().includes(q));
  fill($('#concepts-list'), shown.map(item));
  $('#concepts-count').textContent = t('concepts.count', { n: shown.length, of: CONCEPTS.length });
}

export function mount() {
  $('#concepts-filter').addEventListener('input', render);
  on('lang', render);
  render();
}
