// DOM helpers. Text is always set as text (textContent / text nodes), never parsed as HTML: user and model text
// go through here unchanged and cannot become markup.

/**
 * h('div', { class: 'x', id: 'y', on: { click: fn }, dataset: { k: 'v' }, attrs: { 'aria-label': '…' } }, …children)
 * Children: strings (→ text nodes), nodes, arrays, null/false (skipped). Other props are set as properties
 * (`for` as a label's htmlFor).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') el.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'for') el.htmlFor = v; // a label's control (the property is htmlFor)
    else if (k === 'attrs') {
      for (const [a, av] of Object.entries(v)) {
        if (av !== null && av !== undefined) el.setAttribute(a, String(av));
      }
    } else if (k === 'style') throw new Error('set styles through classes or el.style, not a style attribute (CSP)');
    else el[k] = v;
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el` (text children become text nodes). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** A token as it should be read in a label: whitespace made visible. */
export function showToken(t) {
  if (t === ' ') return '␣';
  if (t === '\n') return '↵';
  if (t === '\t') return '⇥';
  if (t === '\r') return '␍';
  return t;
}

/** Runs `fn` at most once per animation frame, with the latest arguments. */
export function perFrame(fn) {
  let pending = false;
  let args = [];
  return (...a) => {
    args = a;
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fn(...args);
    });
  };
}

/**
 * Like perFrame, but at most once every `ms`: for views that follow every training step, so that six runs' steps
 * (dozens a second) cost a few frames a second instead of every frame's time. The last call's arguments win, and a
 * call always leads to a run.
 */
export function paced(fn, ms) {
  let waiting = false;
  let last = -Infinity;
  let args = [];
  return (...a) => {
    args = a;
    if (waiting) return;
    waiting = true;
    setTimeout(() => requestAnimationFrame(() => {
      waiting = false;
      last = performance.now();
      fn(...args);
    }), Math.max(0, last + ms - performance.now()));
  };
}

/**
 * Sizes `canvas` to w × hgt CSS pixels backed by the device's pixels (sharp on a high-density screen) and returns its
 * 2-D context, scaled so that drawing is in CSS pixels.
 */
export function sizeCanvas(canvas, w, hgt) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(hgt * dpr);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${hgt}px`;
  const ctx = canvas.getContext('2d');
  ctx.scale(dpr, dpr);
  return ctx;
}

/** Debounce: `fn` runs `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  return (...a) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...a), ms);
  };
}
