// One head's attention map (query × key probabilities) drawn on a canvas, with its tokens along the axes, marked
// cells, a cursor, and the hover that names a cell: shared by the attention view (www/panels/attention.js) and the
// Recipes section's view of the in-context-learning model (www/panels/icl-attention.js).
import { showToken, sizeCanvas } from '../dom.js';

const RAMP = [[0, 255, 255, 255], [0.15, 219, 234, 254], [0.35, 147, 197, 253], [0.6, 59, 130, 246], [0.85, 30, 64, 175], [1, 23, 23, 72]];

/** The colour of a weight: the ramp follows √w, so that the many small weights of a long row stay visible. */
export function color(w) {
  const x = Math.sqrt(Math.max(0, Math.min(1, w)));
  let i = 1;
  while (i < RAMP.length - 1 && RAMP[i][0] < x) i++;
  const [a, b] = [RAMP[i - 1], RAMP[i]];
  const f = (x - a[0]) / (b[0] - a[0]);
  const c = [1, 2, 3].map((k) => Math.round(a[k] + f * (b[k] - a[k])));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** The colour of a marked cell's outline (the Recipes view: where an induction head would look). */
export const MARK = '#e11d48';

/**
 * Paints head `head` of map `m` ({ t, s, probs: heads × t × s, row-major }) in cells of `cell` px. `labels`
 * ({ rows, cols }: token strings) are written in `margin` ({ left, top }) beside the rows and above the columns;
 * `cursor` ({ i, j }) is outlined; `marks` (per row i, the columns j to mark) are outlined in MARK; `font`: the
 * labels' size in px.
 */
export function paint(canvas, m, head, cell, { margin = { left: 0, top: 0 }, labels = null, cursor = null, marks = null, font = Math.min(13, cell - 2) } = {}) {
  const w = margin.left + cell * m.s;
  const hgt = margin.top + cell * m.t;
  const ctx = sizeCanvas(canvas, w, hgt);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, w, hgt);
  const base = head * m.t * m.s;
  for (let i = 0; i < m.t; i++) {
    for (let j = 0; j < m.s; j++) {
      ctx.fillStyle = color(m.probs[base + i * m.s + j]);
      ctx.fillRect(margin.left + j * cell, margin.top + i * cell, cell, cell);
    }
  }
  if (labels) {
    ctx.fillStyle = '#334155';
    ctx.font = `${font}px ui-monospace, monospace`;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    labels.rows.forEach((tok, i) => ctx.fillText(showToken(tok), margin.left - 4, margin.top + (i + 0.5) * cell));
    labels.cols.forEach((tok, j) => {
      ctx.save();
      ctx.translate(margin.left + (j + 0.5) * cell, margin.top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = 'left';
      ctx.fillText(showToken(tok), 0, 0);
      ctx.restore();
    });
  }
  if (marks) {
    ctx.strokeStyle = MARK;
    ctx.lineWidth = 1;
    marks.forEach((cols, i) => cols.forEach((j) => ctx.strokeRect(margin.left + j * cell + 0.5, margin.top + i * cell + 0.5, cell - 1, cell - 1)));
  }
  if (cursor) {
    ctx.strokeStyle = '#f97316';
    ctx.lineWidth = 2;
    ctx.strokeRect(margin.left + cursor.j * cell + 1, margin.top + cursor.i * cell + 1, cell - 2, cell - 2);
  }
}

/**
 * Hover on a map canvas painted by `paint`: `describe(i, j)` gives { short (shown in `tip`, placed within `box`, its
 * offset parent), long (written to `readout`) }; `onCell({ i, j })` is told the cell.
 */
export function hoverable(canvas, m, cell, margin, { tip, box, readout, describe, onCell }) {
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((ev.clientX - r.left - margin.left) / cell);
    const i = Math.floor((ev.clientY - r.top - margin.top) / cell);
    return i >= 0 && j >= 0 && i < m.t && j < m.s ? { i, j } : null;
  };
  const hide = () => {
    tip().hidden = true;
  };
  canvas.addEventListener('mousemove', (ev) => {
    const c = at(ev);
    if (!c) return hide();
    const d = describe(c.i, c.j);
    const el = tip();
    el.textContent = d.short;
    el.hidden = false;
    const b = box().getBoundingClientRect();
    el.style.left = `${ev.clientX - b.left + 12}px`;
    el.style.top = `${ev.clientY - b.top + 12}px`;
    readout().textContent = d.long;
    onCell?.(c);
  });
  canvas.addEventListener('mouseleave', hide);
}
