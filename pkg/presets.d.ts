// Types of presets.js (generated from configs/*.json by scripts/pkg-assets.mjs).
/** The presets by name, in menu order: core configs. */
export declare const PRESET_CONFIGS: Readonly<Record<string, object>>;
/** The presets' names, in menu order. */
export declare const PRESETS: readonly string[];
/** The preset the playground opens with. */
export declare const DEFAULT_PRESET: string;
/** A deep copy of preset `name`'s config, or undefined. */
export declare function presetConfig(name: string): object | undefined;
