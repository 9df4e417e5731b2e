// English / 中文. Strings live in strings/en.js and strings/zh.js (same keys). Static labels in index.html carry
// data-i18n="key" (text) or data-i18n-attr="attr:key;attr:key"; panels call t() when they render and re-render on
// the 'lang' event. The choice is remembered in localStorage.
import { en } from './strings/en.js';
import { zh } from './strings/zh.js';
import { emit } from './bus.js';

const TABLES = { en, zh };
const KEY = 'tp.lang';
let lang = 'en';

export const LANGS = Object.keys(TABLES);

/** The remembered language, else the browser's (中文 for zh-*), else English. */
export function initialLang() {
  let saved = null;
  try {
    saved = localStorage.getItem(KEY);
  } catch {
    // storage may be unavailable (private mode): fall back to the browser language
  }
  if (saved && TABLES[saved]) return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export function getLang() {
  return lang;
}

/**
 * The string for `key` in the current language, with {name} placeholders filled from `vars`. English writes a
 * count's noun as {name:one|other} (`{chars} {chars:character|characters}`): the first form when vars.name is 1.
 */
export function t(key, vars) {
  let s = TABLES[lang][key] ?? TABLES.en[key];
  if (s === undefined) {
    console.warn(`missing string: ${key}`);
    return key;
  }
  if (vars) s = s.replace(/\{(\w+):([^|{}]*)\|([^{}]*)\}/g, (m, k, one, other) => (k in vars ? (Number(vars[k]) === 1 ? one : other) : m));
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

/** True if `key` has a string (in English at least). */
export function has(key) {
  return key in TABLES.en;
}

/** Sets the language, updates every static label and tells the panels. */
export function setLang(next, { remember = true } = {}) {
  if (!TABLES[next]) return;
  lang = next;
  if (remember) {
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // not remembered; still switched
    }
  }
  document.documentElement.lang = next === 'zh' ? 'zh-CN' : 'en';
  translate(document);
  emit('lang', { lang: next });
}

/** Applies data-i18n and data-i18n-attr under `root`. */
export function translate(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':');
      el.setAttribute(attr.trim(), t(key.trim()));
    }
  }
}
