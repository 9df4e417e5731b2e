// The element's loss chart: a small SVG of its own, so that the package needs no chart library. The training
// batches' loss is a line and the validation loss dots, over steps 0 … the run's last step; the y range is the
// losses' own. The SVG is stretched to its box (strokes do not scale), the labels are HTML over it.

const SVG = 'http://www.w3.org/2000/svg';
const W = 300; // viewBox units
const H = 100;

/** The chart's styles, for the shadow root that holds it. */
export const CHART_STYLE = `
.chart { position: relative; height: 9rem; margin: 0.5rem 0; background: #f6f8fb; border-radius: 4px; }
.chart svg { position: absolute; inset: 0; width: 100%; height: 100%; }
.train { fill: none; stroke: #2f6fde; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.val { stroke: #d9480f; stroke-width: 5; stroke-linecap: round; vector-effect: non-scaling-stroke; }
.axis, .empty { position: absolute; font-size: 11px; color: #5a6375; }
.top { top: 2px; left: 6px; }
.bottom { bottom: 2px; left: 6px; }
.empty { inset: 0; display: flex; align-items: center; justify-content: center; }
.empty:empty { display: none; }
`;

export class LossChart {
  constructor() {
    const svgEl = (tag, cls) => {
      const e = document.createElementNS(SVG, tag);
      if (cls) e.setAttribute('class', cls);
      return e;
    };
    const span = (cls) => Object.assign(document.createElement('span'), { className: cls });
    /** The chart's element (part "chart"), to be put in the widget. */
    this.element = Object.assign(document.createElement('div'), { className: 'chart' });
    this.element.setAttribute('part', 'chart');
    this.element.setAttribute('role', 'img');
    const svg = svgEl('svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    this.line = svgEl('polyline', 'train');
    this.dots = svgEl('path', 'val'); // one zero-length segment per validation loss: a round dot
    svg.append(this.line, this.dots);
    this.top = span('axis top');
    this.bottom = span('axis bottom');
    this.empty = span('empty');
    this.element.append(svg, this.top, this.bottom, this.empty);
  }

  /**
   * Draws `points` ([step, loss] of the training batches) and `val` ([step, val_loss]) over steps 0 … `steps`;
   * `labels`: { title, step, empty } in the widget's language.
   */
  draw(points, val, steps, labels) {
    const all = [...points, ...val].map((p) => p[1]).filter(Number.isFinite);
    this.empty.textContent = points.length ? '' : labels.empty;
    this.element.setAttribute('aria-label', labels.title);
    if (!all.length) {
      this.line.setAttribute('points', '');
      this.dots.setAttribute('d', '');
      this.top.textContent = this.bottom.textContent = '';
      return;
    }
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    const span = hi - lo || 1;
    const x = (s) => ((s / Math.max(1, steps ?? s)) * (W - 6) + 3).toFixed(1);
    const y = (v) => (14 + (1 - (v - lo) / span) * (H - 28)).toFixed(1);
    this.line.setAttribute('points', points.filter((p) => Number.isFinite(p[1])).map(([s, v]) => `${x(s)},${y(v)}`).join(' '));
    this.dots.setAttribute('d', val.map(([s, v]) => `M${x(s)} ${y(v)}h0`).join(''));
    this.top.textContent = `${labels.title} ${hi.toFixed(2)}`;
    this.bottom.textContent = `${lo.toFixed(2)} · ${labels.step} ${points.at(-1)?.[0] ?? 0}`;
  }
}
