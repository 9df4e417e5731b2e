// The paged KV cache of a generation (PagedAttention, Kwon et al. 2023), drawn from the engine's view (KvView in
// pkg/index.d.ts) as it fills: each continuation's block table — its physical blocks in position order — with the
// blocks it shares marked, the pool of physical blocks (held once, shared, free), bytes in blocks against one
// contiguous cache of ctx_len positions per sequence, and the bytes of one position with this run's KV heads beside
// MHA's. Every figure is the core's; this module only lays them out.
import { $, h, fill, perFrame } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';
import { bytes, grouped } from '../format.js';

let shown = null; // { view, heads: { nh, nkv, ctx }, state: 'live' | 'done' | 'cancelled' }

/** MHA, GQA or MQA for NKV KV heads over NH query heads. */
function kind(nh, nkv) {
  if (nkv === nh) return 'mha';
  return nkv === 1 ? 'mqa' : 'gqa';
}

function figures(view, heads) {
  const { now, peak, table } = view;
  const alloc = table.refs.length;
  const pct = (x, of) => (of > 0 ? Math.round((100 * x) / of) : 0);
  const row = (key, value, id) => [h('dt', {}, t(key)), h('dd', { id }, value)];
  const saved = 100 - pct(now.bytesPerPosition, view.bytesPerPositionMha);
  return [
    row('kv.blocks', t('kv.blocks.v', { used: now.blocksUsed, alloc, free: alloc - now.blocksUsed, bs: table.blockSize }), 'kv-blocks'),
    row('kv.bytes', t('kv.bytes.v', {
      used: bytes(now.bytesUsed), contig: bytes(now.bytesContiguous), ctx: heads.ctx, pct: pct(now.bytesUsed, now.bytesContiguous),
    }), 'kv-bytes'),
    row('kv.peak', t('kv.peak.v', { blocks: peak.blocksUsed, used: bytes(peak.bytesUsed), contig: bytes(peak.bytesContiguous) }), 'kv-peak'),
    row('kv.perPos', kind(heads.nh, heads.nkv) === 'mha'
      ? t('kv.perPos.mha', { b: grouped(now.bytesPerPosition), nkv: heads.nkv })
      : t('kv.perPos.v', {
        b: grouped(now.bytesPerPosition), nkv: heads.nkv, kind: t(`kv.kind.${kind(heads.nh, heads.nkv)}`), nh: heads.nh,
        mha: grouped(view.bytesPerPositionMha), pct: saved,
      }), 'kv-per-position'),
  ];
}

/** A block's cell: its physical number, shaded by how many sequences hold it. */
function cell(b, refs, title) {
  const cls = refs === 0 ? 'kv-block free' : refs > 1 ? 'kv-block shared' : 'kv-block';
  return h('span', { class: cls, title, dataset: { block: b, refs } }, String(b));
}

function seqRows(table) {
  const bs = table.blockSize;
  return table.seqs.map((s) => h('div', { class: 'kv-seq', dataset: { index: s.index } },
    h('span', { class: 'kv-seq-name' }, `#${s.index}`),
    h('span', { class: 'kv-cells' }, s.blocks.map((b, j) => {
      const to = Math.min((j + 1) * bs, s.positions) - 1;
      const c = cell(b, table.refs[b], t('kv.cell', { b, from: j * bs, to, i: s.index, refs: table.refs[b] }));
      if (to - j * bs + 1 < bs) c.classList.add('partial'); // the last block, not yet full
      return c;
    }))));
}

function pool(table) {
  return [
    h('span', { class: 'kv-seq-name' }, t('kv.pool')),
    h('span', { class: 'kv-cells' }, table.refs.map((refs, b) => cell(b, refs, refs === 0
      ? t('kv.poolCell.free', { b }) : t('kv.poolCell', { b, refs })))),
  ];
}

/** Draws `shown` now; `draw` is the same once a frame, for the views that stream in. */
function render() {
  const empty = !shown;
  $('#kv-empty').hidden = !empty;
  for (const id of ['#kv-caption', '#kv-figures', '#kv-seqs', '#kv-pool', '#kv-legend']) $(id).hidden = empty;
  if (empty) return;
  const { view, heads, state } = shown;
  const pos = view.table.seqs[0]?.positions ?? 0;
  $('#kv-view').dataset.state = state;
  $('#kv-caption').textContent = t(`kv.caption.${state}`, { seqs: view.table.seqs.length, pos });
  fill($('#kv-figures'), figures(view, heads));
  fill($('#kv-seqs'), h('p', { class: 'kv-sub' }, t('kv.seqs')), seqRows(view.table));
  fill($('#kv-pool'), pool(view.table));
}
const draw = perFrame(render);

/** Shows `view` (a KvView) of a generation of a run with `heads` ({ nh, nkv, ctx }); state 'live' while it runs. */
export function showKv(view, heads) {
  shown = { view, heads, state: 'live' };
  draw();
}

/**
 * The generation ended ('done' or 'cancelled'): the last view with live sequences stays up, captioned so, and its
 * peak figures become the final ones (`final`: the view as it stopped).
 */
export function endKv(state, final) {
  if (!shown) return;
  shown = { ...shown, state, view: final && final.table.seqs.length > 0 ? final : { ...shown.view, peak: final?.peak ?? shown.view.peak } };
  // At once, not at the next frame: the generation's done flag follows, and what it says must be on the page by then.
  render();
}

/** Clears the view (a new generation, another run). */
export function clearKv() {
  shown = null;
  render();
}

export function mount() {
  on('lang', draw);
  draw();
}
