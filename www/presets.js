// The presets are the project's configs/*.json (also used by the command line and the benchmarks), which
// scripts/pkg-assets.mjs turns into the package's pkg/presets.js: the one list, shared with the
// <transformer-playground> element. Text presets train on Tiny Shakespeare.
import { valuesFromConfig } from './options.js';
import { PRESETS, DEFAULT_PRESET, presetConfig, presetNeedsGpu } from '../pkg/presets.js';

export { PRESETS, DEFAULT_PRESET, presetNeedsGpu };

const loaded = new Map(); // name → option values

/** Turns every preset's config into option values. */
export async function loadPresets() {
  for (const name of PRESETS) {
    const values = valuesFromConfig(presetConfig(name), 'shakespeare');
    // A preset that needs a GPU trains on backend 'auto': WebGPU, or a refusal saying why where there is none.
    loaded.set(name, presetNeedsGpu(name) ? { ...values, backend: 'auto' } : values);
  }
}

export function presetValues(name = DEFAULT_PRESET) {
  return { ...loaded.get(name) };
}

/** The preset whose values these are, or null. */
export function matchPreset(values) {
  const s = JSON.stringify(values);
  return PRESETS.find((p) => loaded.has(p) && JSON.stringify(loaded.get(p)) === s) ?? null;
}
