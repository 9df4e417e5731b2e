// The element's loss chart: a small SVG of its own, so that the package needs no chart library. Each series (a run)
// draws its training batches' loss as a line and its validation loss as dots, over steps 0 … the last step; the y
// range is the losses' own. The SVG is stretched to its box (strokes do not scale), the labels are HTML over it.
// Several series (a lesson's runs) each have their colour and a legend naming them.

const SVG = 'http://www.w3.org/2000/svg';
const W = 300; // viewBox units
const H = 100;

/** The colours of the runs, in order: the page's runs (www/runs.js) and a lesson's runs in the element. */
export const COLORS = ['#2563eb', '#ea580c', '#059669', '#9333ea', '#db2777', '#0891b2'];

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
.legend { display: flex; flex-wrap: wrap; gap: 0.2rem 0.9rem; margin: -0.25rem 0 0.5rem; padding: 0; list-style: none; font-size: 0.85em; }
.legend:empty { display: none; }
.legend .swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 0.3em; vertical-align: -0.05em; }
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
    this.svg = svg;
    this.svgEl = svgEl;
    this.lines = []; // per series: { line, dots }
    this.#grow(1);
    this.top = span('axis top');
    this.bottom = span('axis bottom');
    this.empty = span('empty');
    this.element.append(svg, this.top, this.bottom, this.empty);
    /** The legend (part "legend"): one entry per named series; to be put below the chart. */
    this.legend = Object.assign(document.createElement('ul'), { className: 'legend' });
    this.legend.setAttribute('part', 'legend');
  }

  /** Makes the SVG elements of `n` series. */
  #grow(n) {
    while (this.lines.length < n) {
      const line = this.svgEl('polyline', 'train');
      const dots = this.svgEl('path', 'val'); // one zero-length segment per validation loss: a round dot
      this.svg.append(line, dots);
      this.lines.push({ line, dots });
    }
  }

  /**
   * Draws `series` — each { points: [step, loss] of the training batches, val: [step, val_loss], color?, label? } —
   * over steps 0 … `steps`; `labels`: { title, step, empty } in the widget's language. Series with a label are
   * named in the legend.
   */
  draw(series, steps, labels) {
    this.#grow(series.length);
    for (const { line, dots } of this.lines.splice(Math.max(1, series.length))) {
      line.remove();
      dots.remove();
    }
    const legend = series.filter((s) => s.label).map((s) => {
      const li = document.createElement('li');
      const sw = Object.assign(document.createElement('span'), { className: 'swatch' });
      sw.style.background = s.color ?? '';
      li.append(sw, s.label);
      return li;
    });
    if (this.legend.textContent !== legend.map((li) => li.textContent).join('')) this.legend.replaceChildren(...legend);
    const all = series.flatMap((s) => [...s.points, ...s.val]).map((p) => p[1]).filter(Number.isFinite);
    this.empty.textContent = series.some((s) => s.points.length) ? '' : labels.empty;
    this.element.setAttribute('aria-label', labels.title);
    if (!all.length) {
      for (const { line, dots } of this.lines) {
        line.setAttribute('points', '');
        dots.setAttribute('d', '');
      }
      this.top.textContent = this.bottom.textContent = '';
      return;
    }
    const lo = Math.min(...all);
    const hi = Math.max(...all);
    const span = hi - lo || 1;
    const x = (s) => ((s / Math.max(1, steps ?? s)) * (W - 6) + 3).toFixed(1);
    const y = (v) => (14 + (1 - (v - lo) / span) * (H - 28)).toFixed(1);
    for (const { line, dots } of this.lines.slice(series.length)) {
      line.setAttribute('points', '');
      dots.setAttribute('d', '');
    }
    series.forEach((s, i) => {
      const { line, dots } = this.lines[i];
      line.setAttribute('points', s.points.filter((p) => Number.isFinite(p[1])).map(([st, v]) => `${x(st)},${y(v)}`).join(' '));
      dots.setAttribute('d', s.val.map(([st, v]) => `M${x(st)} ${y(v)}h0`).join(''));
      line.style.stroke = dots.style.stroke = s.color ?? '';
    });
    const lastStep = Math.max(0, ...series.map((s) => s.points.at(-1)?.[0] ?? 0));
    this.top.textContent = `${labels.title} ${hi.toFixed(2)}`;
    this.bottom.textContent = `${lo.toFixed(2)} · ${labels.step} ${lastStep}`;
  }
}
