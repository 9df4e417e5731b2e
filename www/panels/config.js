// The configuration panel: one control per option of options.js, grouped, each with its one-line explanation and
// origin; the explanation of a choice follows the value chosen. Edits go to runs.applyValues; the panel redraws
// from the 'values' event (so a refused edit springs back). The numbers' min and max are the core's, set once
// the engine is up (options.applyLimits).
import { h, $, fill, debounce } from '../dom.js';
import { t, has } from '../i18n.js';
import { on } from '../bus.js';
import { OPTIONS, GROUPS, BY_KEY, applies, kvLayout, moeRouting } from '../options.js';
import * as runs from '../runs.js';
import { PRESETS, presetValues, matchPreset, presetNeedsGpu } from '../presets.js';

let current = null; // the values shown
const rows = new Map(); // key → { row, control, help, tag }
const groupEls = new Map();

function parseControl(o, el) {
  if (o.type === 'bool') return el.checked;
  if (o.type === 'choice') return el.value;
  const s = el.value.trim();
  if (o.type === 'optint' || o.type === 'optfloat') {
    if (s === '') return null;
  }
  if (s === '' || Number.isNaN(Number(s))) return s; // not a number: the summary says so
  return Number(s);
}

/** Switching architecture carries the depth over between n_layers and the encoder/decoder layer counts. */
function withArch(values, arch) {
  const v = { ...values, arch };
  if (arch === 'encoder_decoder' && values.arch !== 'encoder_decoder') {
    v.n_encoder_layers = values.n_layers;
    v.n_decoder_layers = values.n_layers;
  } else if (arch !== 'encoder_decoder' && values.arch === 'encoder_decoder') {
    v.n_layers = values.n_encoder_layers;
  }
  return v;
}

function edit(key, value) {
  const base = runs.selectedRun()?.values ?? current;
  const next = key === 'arch' ? withArch(base, value) : { ...base, [key]: value };
  runs.applyValues(next, 'edit');
}

function control(o) {
  const id = `opt-${o.key}`;
  const described = `help-${o.key}`;
  let el;
  if (o.type === 'choice') {
    el = h('select', { id, attrs: { 'aria-describedby': described } },
      o.choices.map((c) => h('option', { value: c })));
    el.addEventListener('change', () => edit(o.key, el.value));
  } else if (o.type === 'bool') {
    el = h('input', { id, type: 'checkbox', attrs: { 'aria-describedby': described } });
    el.addEventListener('change', () => edit(o.key, el.checked));
  } else {
    el = h('input', {
      id,
      type: 'number',
      inputMode: o.type.endsWith('int') ? 'numeric' : 'decimal',
      attrs: { step: o.step ?? (o.type.endsWith('int') ? 1 : 'any'), 'aria-describedby': described },
    });
    const commit = () => edit(o.key, parseControl(o, el));
    const later = debounce(commit, 400);
    el.addEventListener('input', later);
    el.addEventListener('change', commit);
  }
  return el;
}

function buildRow(o) {
  const ctl = control(o);
  const tag = o.key === 'n_kv_heads' ? h('span', { class: 'tag', attrs: { 'aria-live': 'polite' } }) : null;
  const help = h('p', { class: 'help', id: `help-${o.key}` });
  const label = h('label', { htmlFor: ctl.id });
  // The fields of a switched-on part (the Mixture-of-Experts FFN) sit indented under their switch.
  // (`when` is one condition or a list of alternatives.)
  const sub = [o.when ?? {}].flat().some((w) => Object.keys(w).some((k) => BY_KEY[k]?.type === 'bool')) ? ' opt-sub' : '';
  const row = h('div', { class: `opt opt-${o.type}${sub}`, dataset: { key: o.key } }, label, h('div', { class: 'ctl' }, ctl, tag), help);
  rows.set(o.key, { row, control: ctl, help, tag, label });
  return row;
}

/** Renders the groups into `root`; `slots` are extra elements appended to a group (e.g. the pasted-text box). */
export function mount(root, { slots = {} } = {}) {
  for (const g of GROUPS) {
    const body = h('div', { class: 'group-body' });
    const title = h('summary', {}, h('span', { dataset: { i18n: `group.${g}` } }));
    // At phone width the groups start closed (but the first), so the page is not one long form.
    const open = g === GROUPS[0] || !matchMedia('(max-width: 760px)').matches;
    const details = h('details', { class: 'group', open, id: `group-${g}` }, title, body);
    for (const o of OPTIONS.filter((x) => x.group === g)) {
      body.append(buildRow(o));
      if (slots[o.key]) body.append(slots[o.key]);
    }
    groupEls.set(g, details);
    root.append(details);
  }
  mountPreset();
  setBounds();
  on('engine', ({ engine }) => engine && setBounds());
  on('values', ({ values, source }) => render(values, source));
  on('lang', () => current && render(current, 'lang'));
}

/** The min and max of the number controls, from the options table (which has the core's once it has started). */
function setBounds() {
  for (const o of OPTIONS) {
    const el = rows.get(o.key).control;
    if (el.type !== 'number') continue;
    for (const a of ['min', 'max']) {
      if (o[a] === undefined) el.removeAttribute(a);
      else el.setAttribute(a, String(o[a]));
    }
  }
}

function mountPreset() {
  const sel = $('#preset');
  fill(sel, h('option', { value: '' }), PRESETS.map((p) => h('option', { value: p })));
  sel.addEventListener('change', () => {
    if (!sel.value) return;
    runs.applyValues(presetValues(sel.value), 'preset');
  });
}

function renderPreset(values) {
  const sel = $('#preset');
  for (const opt of sel.options) {
    const name = t(opt.value ? `preset.${opt.value}` : 'preset.custom');
    opt.textContent = presetNeedsGpu(opt.value) ? t('preset.gpu', { name }) : name;
  }
  const p = matchPreset(values);
  sel.value = p ?? '';
  $('#preset-help').textContent = p ? t(`preset.d.${p}`) : '';
}

function render(values, source) {
  current = values;
  for (const o of OPTIONS) {
    const r = rows.get(o.key);
    r.label.textContent = t(`opt.${o.key}.label`);
    const show = applies(o, values);
    r.row.hidden = !show;
    const v = values[o.key];
    const focused = document.activeElement === r.control;
    if (o.type === 'choice') {
      for (const opt of r.control.options) opt.textContent = t(`opt.${o.key}.v.${opt.value}`);
      r.control.value = v;
    } else if (o.type === 'bool') {
      r.control.checked = !!v;
    } else if (!(focused && source === 'edit')) {
      // Leave a field the user is typing in alone; anything else shows the value.
      r.control.value = v === null || v === undefined ? '' : String(v);
      // An empty optional field means "auto", or what the option says it means (opt.<key>.empty).
      if (o.type.startsWith('opt')) r.control.placeholder = t(has(`opt.${o.key}.empty`) ? `opt.${o.key}.empty` : 'opt.auto');
    }
    const parts = [t(`opt.${o.key}.help`)];
    if (o.type === 'choice' && o.choices.includes(v)) parts.push(t(`opt.${o.key}.d.${v}`));
    fill(r.help, parts[0], parts[1] ? h('span', { class: 'choice-help' }, ` ${parts[1]}`) : null);
  }
  const kv = kvLayout(values);
  const kvRow = rows.get('n_kv_heads');
  kvRow.tag.textContent = t(`kv.tag.${kv.kind}`);
  kvRow.tag.dataset.kind = kv.kind;
  fill(kvRow.help, t('opt.n_kv_heads.help'), h('span', { class: 'choice-help' }, ` ${t(`kv.${kv.kind}`, { group: kv.group })}`));
  const routing = moeRouting(values);
  if (routing === 'top1' || routing === 'topk') {
    fill(rows.get('top_k').help, t('opt.top_k.help'), h('span', { class: 'choice-help' }, ` ${t(`opt.top_k.d.${routing}`, { k: values.top_k })}`));
  }
  for (const [g, el] of groupEls) el.hidden = OPTIONS.filter((o) => o.group === g).every((o) => !applies(o, values));
  renderPreset(values);
}

/** Marks the row of the option named by a core error ('model.n_heads', 'train.betas[0]', …), or clears marks. */
export function markInvalid(field) {
  for (const r of rows.values()) r.row.classList.remove('invalid');
  if (!field) return;
  const path = field.replace(/\[(\d+)\]/g, '.$1');
  const o = OPTIONS.find((x) => x.path === path) ?? (path === 'model.position.kind' ? BY_KEY.position : null)
    ?? OPTIONS.find((x) => x.path && path.startsWith(`${x.path}.`));
  if (o) rows.get(o.key).row.classList.add('invalid');
}

/** Marks the rows holding something that is not a number. */
export function markKeys(keys) {
  for (const [k, r] of rows) r.row.classList.toggle('invalid', keys.includes(k));
}
