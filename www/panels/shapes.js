// Shape flow: the Transformer's dimension table made live for the current configuration and batch — input (B,T) →
// embedding (B,T,C) → Q (B,NH,T,HS), K/V (B,NKV,T,HS) → scores (B,NH,T,T) → concat (B,T,C) → FFN up (B,T,F) →
// down (B,T,C) → logits (B,T,V) — with the parameters of every stage. The numbers come from the engine's
// shapeFlow (the same check as the live summary); each row is coloured by its stage's kind (attention, ffn, …).
import { $, h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import { grouped } from '../format.js';

/** A stage's name in the page's language, from its id, stack and count (strings shp.s.<id>, shp.in.<stack>). */
function stageName(s) {
  const name = t(`shp.s.${s.id}`, { n: s.per_layer });
  return s.stack ? t(`shp.in.${s.stack}`, { stage: name }) : name;
}

let flow = null;

function render() {
  const body = $('#shape-table tbody');
  const foot = $('#shape-table tfoot');
  $('#shape-empty').hidden = !!flow;
  $('#shape-table').hidden = !flow;
  if (!flow) return;
  fill(body, flow.stages.map((s) => h('tr', { class: `k-${s.kind}` },
    h('th', { scope: 'row' }, stageName(s)),
    h('td', {}, h('span', { class: 'shape' }, `(${s.shape.join(', ')})`), h('span', { class: 'dims' }, s.dims.join(' × '))),
    h('td', { class: 'num' }, s.params ? grouped(s.params) : '·',
      s.repeat > 1 && s.params ? h('span', { class: 'repeat', title: t('shp.repeat', { n: s.repeat }) }, ` ×${s.repeat}`) : null))));
  fill(foot, h('tr', {}, h('th', { scope: 'row', colSpan: 2 }, t('shp.total')), h('td', { class: 'num' }, grouped(flow.n_params))));
}

export function mount() {
  on('check', ({ flow: f, error }) => {
    flow = error ? null : f;
    render();
  });
  on('lang', render);
  render();
}
