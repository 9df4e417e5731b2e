// Shape flow: the Transformer's dimension table made live for the current configuration and batch — input (B,T) →
// embedding (B,T,C) → Q (B,NH,T,HS), K/V (B,NKV,T,HS) → scores (B,NH,T,T) → concat (B,T,C) → FFN up (B,T,F) →
// down (B,T,C) → logits (B,T,V) — with the parameters of every stage. The numbers come from the engine's
// shapeFlow (the same check as the live summary); each row is coloured by its stage's kind (attention, ffn, …).
import { $, h, fill } from '../dom.js';
import { t, getLang } from '../i18n.js';
import { on } from '../bus.js';
import { grouped } from '../format.js';

// Stage names come from the core in English; these are their Chinese names.
const ZH = {
  'input ids': '输入 id',
  'token embedding': '词元嵌入',
  '+ learned positions': '+ 可学习位置',
  '+ sinusoidal positions': '+ 正弦位置',
  'relative bias table': '相对偏置表',
  Q: 'Q',
  'K, V': 'K、V',
  scores: '注意力分数',
  'heads concatenated': '各头拼接',
  'attention output projection': '注意力输出投影',
  'cross-attention Q': '交叉注意力 Q',
  'cross-attention K, V (from encoder)': '交叉注意力 K、V（来自编码器）',
  'cross-attention output': '交叉注意力输出',
  'FFN up': '前馈升维',
  'FFN activation': '前馈激活',
  'FFN down': '前馈降维',
  'final norm': '最终归一化',
  logits: 'logits',
};

function stageName(name) {
  if (getLang() !== 'zh') return name;
  let prefix = '';
  let rest = name;
  const m = /^(encoder|decoder) (.*)$/.exec(name);
  if (m) {
    prefix = m[1] === 'encoder' ? '编码器 ' : '解码器 ';
    rest = m[2];
  }
  const norm = /^norm \((\d+) per layer\)$/.exec(rest);
  if (norm) return `${prefix}归一化（每层 ${norm[1]} 个）`;
  return prefix + (ZH[rest] ?? rest);
}

let flow = null;

function render() {
  const body = $('#shape-table tbody');
  const foot = $('#shape-table tfoot');
  $('#shape-empty').hidden = !!flow;
  $('#shape-table').hidden = !flow;
  if (!flow) return;
  fill(body, flow.stages.map((s) => h('tr', { class: `k-${s.kind}` },
    h('th', { scope: 'row' }, stageName(s.name)),
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
