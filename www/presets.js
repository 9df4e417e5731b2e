// The presets are the project's configs/*.json (also used by the command line and the benchmarks); text presets
// train on Tiny Shakespeare.
import { valuesFromConfig } from './options.js';

export const PRESETS = ['gpt-shakespeare', 'original-transformer', 'llama-style', 'bert-mini', 't5-mini', 'mixtral-moe', 't5-span-corruption', 'bart-infilling'];
export const DEFAULT_PRESET = 'gpt-shakespeare';

const loaded = new Map(); // name → option values

/** Fetches every preset's config (small files, in parallel) and turns each into option values. */
export async function loadPresets() {
  await Promise.all(PRESETS.map(async (name) => {
    const r = await fetch(`configs/${name}.json`);
    if (!r.ok) throw new Error(`configs/${name}.json: HTTP ${r.status}`);
    loaded.set(name, valuesFromConfig(await r.json(), 'shakespeare'));
  }));
}

export function presetValues(name = DEFAULT_PRESET) {
  return { ...loaded.get(name) };
}

/** The preset whose values these are, or null. */
export function matchPreset(values) {
  const s = JSON.stringify(values);
  return PRESETS.find((p) => loaded.has(p) && JSON.stringify(loaded.get(p)) === s) ?? null;
}
