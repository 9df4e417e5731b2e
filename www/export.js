// Charts and metrics out of the page, for slides and spreadsheets: a chart as PNG (its uPlot canvas with a title and
// a legend drawn under it) or SVG (the same curves redrawn as vector paths: axes, ticks, one path per series), and
// every run's logged metrics as CSV. Pure functions of the data plus a download helper; charts.js wires the buttons.

/** A value as CSV writes it: numbers as they are, empty for missing, text quoted when it needs to be. */
function cell(v) {
  if (v === null || v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '';
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The CSV columns: each run's logged metrics per step (history fields of runs.js). */
export const CSV_COLUMNS = [['loss', 'loss'], ['val_loss', 'val'], ['lr', 'lr'], ['grad_norm', 'grad'], ['aux_loss', 'aux']];

/** Every run's metrics, one row per (run, logged step): run, label, step, loss, val_loss, lr, grad_norm, aux_loss. */
export function metricsCsv(list) {
  const lines = [['run', 'label', 'step', ...CSV_COLUMNS.map(([name]) => name)].join(',')];
  for (const rec of list) {
    const hist = rec.history;
    hist.step.forEach((step, i) => {
      lines.push([rec.no, cell(rec.label ?? ''), step, ...CSV_COLUMNS.map(([, k]) => cell(hist[k]?.[i]))].join(','));
    });
  }
  return `${lines.join('\n')}\n`;
}

/** About `n` round tick values covering [lo, hi] (1, 2, 5 × 10^k steps; powers of ten on a log scale). */
export function ticks(lo, hi, n = 5, log = false) {
  if (!(hi > lo)) return [lo];
  if (log) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      const v = 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
    return out.length ? out : [lo, hi];
  }
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * An SVG of a chart: `data` = [x, ...series values] (null = no point), `series` = [{ label, stroke, dash, width,
 * points }] for each series after x, `log` for a log y axis, labels with `fmt`.
 */
export function chartSvg({ title, xLabel, data, series, log = false, fmt = String, width = 640, height = 320 }) {
  const [xs, ...ys] = data;
  const m = { left: 64, right: 16, top: 34, bottom: 44 };
  const legendRows = Math.ceil(series.length / 3);
  const h = height + legendRows * 18;
  const finite = ys.flat().filter((v) => v !== null && Number.isFinite(v) && (!log || v > 0));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = finite.length ? [Math.min(...finite), Math.max(...finite)] : [0, 1];
  if (y0 === y1) [y0, y1] = log ? [y0 / 2, y1 * 2] : [y0 - 1, y1 + 1];
  const ty = (v) => (log ? Math.log10(v) : v);
  const px = (x) => m.left + ((x - x0) / Math.max(1e-12, x1 - x0)) * (width - m.left - m.right);
  const py = (y) => m.top + (1 - (ty(y) - ty(y0)) / Math.max(1e-12, ty(y1) - ty(y0))) * (height - m.top - m.bottom);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" viewBox="0 0 ${width} ${h}" font-family="system-ui, sans-serif" font-size="11">`,
    `<rect width="${width}" height="${h}" fill="#fff"/>`,
    `<text x="${m.left}" y="20" font-size="14" font-weight="600">${esc(title)}</text>`,
  ];
  const yt = ticks(y0, y1, 5, log);
  for (const v of yt) {
    const y = py(v).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#555">${esc(fmt(v))}</text>`);
  }
  for (const v of ticks(x0, x1, 6).filter(Number.isInteger)) {
    const x = px(v).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${height - m.bottom}" y2="${height - m.bottom + 4}" stroke="#555"/>`);
    out.push(`<text x="${x}" y="${height - m.bottom + 16}" text-anchor="middle" fill="#555">${esc(fmt(v))}</text>`);
  }
  out.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${height - m.bottom}" y2="${height - m.bottom}" stroke="#555"/>`);
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${height - m.bottom}" stroke="#555"/>`);
  out.push(`<text x="${(m.left + width - m.right) / 2}" y="${height - 8}" text-anchor="middle" fill="#333">${esc(xLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = xs.map((x, j) => [x, ys[i][j]]).filter(([, y]) => y !== null && Number.isFinite(y) && (!log || y > 0));
    const dash = s.dash ? ` stroke-dasharray="${s.dash.join(' ')}"` : '';
    if (s.width !== 0 && pts.length > 1) {
      const d = pts.map(([x, y], j) => `${j ? 'L' : 'M'}${px(x).toFixed(1)} ${py(y).toFixed(1)}`).join('');
      out.push(`<path class="series" data-series="${i}" d="${d}" fill="none" stroke="${esc(s.stroke)}" stroke-width="${s.width ?? 1.5}"${dash}/>`);
    }
    if (s.points?.show || s.width === 0 || pts.length === 1) {
      out.push(`<g class="points" data-series="${i}" fill="#fff" stroke="${esc(s.stroke)}" stroke-width="2">${
        pts.map(([x, y]) => `<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3"/>`).join('')}</g>`);
    }
    const lx = m.left + (i % 3) * ((width - m.left) / 3);
    const ly = height + Math.floor(i / 3) * 18 + 4;
    out.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${esc(s.stroke)}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${lx + 24}" y="${ly}" dominant-baseline="middle">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** Lays `words` out in lines no wider than `width` with `measure`: [[text, …], …]. */
function wrap(words, width, measure, gap) {
  const lines = [[]];
  let x = 0;
  for (const w of words) {
    const len = measure(w);
    if (x > 0 && x + len > width) {
      lines.push([]);
      x = 0;
    }
    lines.at(-1).push(w);
    x += len + gap;
  }
  return lines;
}

/**
 * A PNG of a chart: its uPlot canvas under its title (wrapped to the chart's width), with a legend of the series
 * flowing below it. Resolves to a Blob.
 */
export function chartPng({ title, canvas, series }) {
  const dpr = canvas.width / Math.max(1, canvas.clientWidth || canvas.width);
  const width = canvas.width / dpr; // CSS pixels
  const pad = 8;
  const probe = document.createElement('canvas').getContext('2d');
  probe.font = '600 13px system-ui, sans-serif';
  const titleLines = wrap(title.split(' '), width - 2 * pad, (w) => probe.measureText(`${w} `).width, 0).map((l) => l.join(' '));
  probe.font = '11px system-ui, sans-serif';
  const item = (s) => 24 + probe.measureText(s.label).width;
  const legend = wrap(series, width - 2 * pad, item, 14);
  const top = pad + titleLines.length * 17;
  const out = document.createElement('canvas');
  out.width = canvas.width;
  out.height = Math.ceil((top + canvas.height / dpr + legend.length * 18 + pad) * dpr);
  const ctx = out.getContext('2d');
  ctx.scale(dpr, dpr);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width, out.height / dpr);
  ctx.fillStyle = '#111';
  ctx.font = '600 13px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  titleLines.forEach((l, i) => ctx.fillText(l, pad, pad + i * 17));
  ctx.drawImage(canvas, 0, top, width, canvas.height / dpr);
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  legend.forEach((line, row) => {
    let x = pad;
    const y = top + canvas.height / dpr + row * 18 + 9;
    for (const s of line) {
      ctx.strokeStyle = s.stroke;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash ?? []);
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 18, y);
      ctx.stroke();
      ctx.fillStyle = '#111';
      ctx.fillText(s.label, x + 24, y);
      x += item(s) + 14;
    }
  });
  return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
}

/** Saves `data` (a string or Blob) as a file named `name`. */
export function download(name, data, type = 'text/plain') {
  const blob = data instanceof Blob ? data : new Blob([data], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000); // a large file may still be on its way to the disk
}
