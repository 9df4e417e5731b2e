// Number formatting shared by the panels.

/** 823552 → "823.6 K", 1.2e9 → "1.20 G" */
export function si(n, digits = 1) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(digits)} K`;
  return String(Math.round(n));
}

export function bytes(n) {
  if (!Number.isFinite(n)) return '—';
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

export function loss(x) {
  return x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(4);
}

/** Seconds as "1 h 02 min", "3 min 05 s", "12 s". */
export function duration(s) {
  if (!Number.isFinite(s) || s < 0) return '—';
  s = Math.round(s);
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${s} s`;
}

export function grouped(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—';
}
