// The in-context-learning recipe's attention on a held-out episode, for the Recipes section (panels/recipes.js):
// every layer × head of the trained model as a map over the episode's characters (drawn by panels/heatmap.js, as the
// attention view draws a run's), its induction score beside it, the cells an induction head would attend to (the
// key right after each earlier occurrence of the query's character: the engine's induction_targets) outlined. The
// numbers are the engine's (recipe.attention and the evaluation's report); nothing is computed here.
import { h, fill, showToken } from '../dom.js';
import { t, has } from '../i18n.js';
import { paint, hoverable } from './heatmap.js';

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? String(Number(v.toPrecision(4))) : '—');

/**
 * The view of `a` ({ data: recipe.attention()'s answer } or { error }) for a section `width` px wide: a figure per
 * layer × head, its tokens along both axes, its induction score from `score` (the evaluation's report's induction) beside it,
 * the induction targets outlined; hover names the pair and the weight.
 */
export function attentionView(a, score, width) {
  if (a.error) return h('p', { class: 'validation bad', dataset: { attn: 'failed' } }, t('rcp.attn.failed', { msg: a.error }));
  const { data } = a;
  const tip = h('div', { class: 'tooltip', hidden: true });
  const readout = h('p', { class: 'readout rcp-attn-readout', attrs: { 'aria-live': 'polite' } });
  const view = h('div', { class: 'rcp-attn', dataset: { episode: String(data.episode) } });
  const text = data.tokens.map(showToken).join('');
  const family = `rcp.family.${data.family}`;
  const n = data.tokens.length;
  const marks = data.induction_targets;
  const labels = { rows: data.tokens, cols: data.tokens };
  const margin = { left: 16, top: 16 };
  // As many maps side by side as fit with cells of at least 8 px (a layer's heads in a row where there is room), at
  // most 16 px; the labels a pixel smaller than a cell.
  const heads = data.maps[0]?.heads ?? 1;
  const gap = 14;
  const across = Math.max(1, Math.min(heads, Math.floor((width + gap) / (margin.left + 8 * n + gap))));
  const cell = Math.max(7, Math.min(16, Math.floor(((width + gap) / across - gap - margin.left) / n)));
  const font = Math.max(7, Math.min(13, cell - 1));
  const figures = data.maps.flatMap((m) => Array.from({ length: m.heads }, (_, head) => {
    const v = score?.scores?.[m.layer]?.[head];
    const best = score?.best?.layer === m.layer && score?.best?.head === head;
    const canvas = h('canvas', { class: 'rcp-attn-map', attrs: { role: 'img', 'aria-label': t('rcp.attn.map', { layer: m.layer, head, text }) } });
    paint(canvas, m, head, cell, { margin, labels, marks, font });
    hoverable(canvas, m, cell, margin, {
      tip: () => tip, box: () => view, readout: () => readout,
      describe: (i, j) => {
        const [q, k, w] = [showToken(data.tokens[i]), showToken(data.tokens[j]), m.probs[(head * m.t + i) * m.s + j].toFixed(3)];
        const target = marks[i]?.includes(j) ? ` · ${t('rcp.attn.target')}` : '';
        return { short: `${t('att.hover', { q, k, w })}${target}`, long: `${t('att.cell', { layer: m.layer, head, q, i, k, j, w })}${target}` };
      },
    });
    const caption = h('figcaption', {}, t('rcp.attn.head', { layer: m.layer, head }), ' ',
      v === undefined ? null : h('span', { class: `rcp-attn-score${best ? ' best' : ''}` }, t('rcp.attn.score', { value: num(v) }), best ? ` ${t('rcp.attn.best')}` : ''));
    caption.style.maxWidth = canvas.style.width; // the caption wraps within its map's width
    return h('figure', { class: 'rcp-attn-head', dataset: { layer: String(m.layer), head: String(head), score: v === undefined ? '' : String(v) } },
      caption, canvas);
  }));
  fill(view,
    h('h3', { class: 'rcp-h' }, t('rcp.attn.title')),
    h('p', { class: 'help' }, t('rcp.attn.help', { n: data.episode, family: has(family) ? t(family) : data.family, uniform: num(score?.uniform) })),
    h('p', { class: 'rcp-attn-episode' }, h('span', { class: 'mono' }, t('rcp.attn.episode', { n: data.episode, family: has(family) ? t(family) : data.family, text })),
      ' ', h('span', { class: 'rcp-attn-legend' }, t('rcp.attn.legend'))),
    h('div', { class: 'rcp-attn-grid' }, figures),
    readout,
    tip);
  return view;
}
