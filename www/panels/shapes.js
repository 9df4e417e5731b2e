// Shape flow: the Transformer's dimension table made live for the current configuration and batch — input (B,T) →
// embedding (B,T,C) → Q (B,NH,T,HS), K/V (B,NKV,T,HS) → scores (B,NH,T,T) → concat (B,T,C) → FFN up (B,T,F) →
// down (B,T,C) → logits (B,T,V) — with the parameters of every stage. The numbers come from the engine's
// shapeFlow (the same check as the live summary); each row is coloured by its stage's kind (attention, ffn, …).
// A Mixture-of-Experts FFN adds its router's stage, says how many experts the FFN stages hold and how many a token
// runs, and the total is followed by the parameters one token uses.
import { $, h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import { grouped } from '../format.js';

const EXPERT_STAGES = ['ffn_up', 'ffn_activation', 'ffn_down'];

/** A stage's name in the page's language, from its id, stack and count (strings shp.s.<id>, shp.in.<stack>). */
function stageName(s) {
  let name = t(`shp.s.${s.id}`, { n: s.per_layer });
  if (moe && EXPERT_STAGES.includes(s.id)) name = t('shp.moe', { stage: name, e: moe.experts, k: moe.top_k });
  return s.stack ? t(`shp.in.${s.stack}`, { stage: name }) : name;
}

let flow = null;
let moe = null; // the config's model.ffn.moe, when it has one

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
  fill(foot, h('tr', {}, h('th', { scope: 'row', colSpan: 2 }, t('shp.total')), h('td', { class: 'num' }, grouped(flow.n_params))),
    moe ? h('tr', { class: 'active' }, h('th', { scope: 'row', colSpan: 2 }, t('shp.active')), h('td', { class: 'num' }, grouped(flow.active_params))) : null);
}

export function mount() {
  on('check', ({ flow: f, error, config }) => {
    flow = error ? null : f;
    moe = config?.model?.ffn?.moe ?? null;
    render();
  });
  on('lang', render);
  render();
}
