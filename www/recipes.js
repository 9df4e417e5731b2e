// The Recipes section's table (panels/recipes.js draws it): for each recipe of issue 18 (docs/RECIPES.md), which
// of the engine's knobs the page offers, which start points it has, and what each stage's charts plot. The knobs'
// defaults and ranges are not here: the defaults come from the engine (engine.recipeInfo(kind).knobs, the shipped
// recipe file's values) and the engine checks every value, naming the knob it refuses. Metric names are the
// engine's (RecipeProgress.metrics in pkg/index.d.ts, the CLI's JSON lines); strings are in strings/recipes.js.
// This module touches no DOM.

/**
 * A chart: `id` (its title is rcp.chart.<id>) and its series — `metric` from the stage's progress events, with
 * `eval: true` from its held-out evaluations only (drawn as dots), else from its training steps (a line); `label`:
 * the series' name is rcp.metric.<label> (default: the metric's, marked held out for an evaluation's).
 * @typedef {{ id: string, series: Array<{ metric: string, eval?: boolean, label?: string }> }} Chart
 */

const train = (metric, label) => ({ metric, label });
const held = (metric, label) => ({ metric, eval: true, label });

/** The charts of a pretraining stage (the next-character loss and its validation loss). */
const LM_CHARTS = [{ id: 'loss', series: [train('loss'), held('val_loss', 'val_loss')] }];

/**
 * Each recipe: `kind` (engine.createRecipe's), `starts` (the model to start from: 'pretrained' is the shipped
 * checkpoint, 'scratch' a fresh model, 'run' the playground's selected run — "pretrain first"; none: the recipe
 * trains its own models), `tasks` (the task choices, when the engine takes one: the first is the default),
 * `knobs` (engine knob names, in the order shown), `charts` by stage name, `results` by stage name where a stage's
 * result table shows only some of its metrics (an evaluation report's numbers are many), and `byK` when the
 * evaluation's report holds accuracy against the number of in-context examples.
 * @type {Array<{ kind: string, starts: string[], tasks: string[], knobs: string[], charts: Record<string, Chart[]>, results?: Record<string, string[]>, byK?: boolean }>}
 */
export const RECIPES = [
  {
    kind: 'finetune',
    starts: ['pretrained', 'scratch', 'run'],
    tasks: ['verse_prose', 'speaker'],
    knobs: ['aux_lm', 'steps'],
    charts: {
      finetune: [
        { id: 'accuracy', series: [held('val_accuracy', 'val_accuracy'), held('accuracy', 'train_accuracy'), held('baseline', 'baseline')] },
        { id: 'loss', series: [train('task_loss'), train('lm_loss'), held('val_lm_loss', 'val_lm_loss')] },
      ],
    },
  },
  {
    kind: 'zeroshot',
    starts: [],
    tasks: [],
    knobs: ['steps'],
    charts: { pattern: LM_CHARTS, baseline: LM_CHARTS },
    results: { eval: ['accuracy', 'baseline_accuracy', 'chance', 'questions'] },
  },
  {
    kind: 'icl',
    starts: [],
    tasks: [],
    knobs: ['steps'],
    charts: { pretrain: LM_CHARTS },
    results: { eval: ['baseline.k0_accuracy', 'baseline.chance', 'episodes'] },
    byK: true,
  },
  {
    kind: 'rlhf',
    starts: ['pretrained', 'run'],
    tasks: [],
    knobs: ['beta', 'gamma_ptx', 'clip', 'k', 'rollouts', 'sft_steps', 'rm_steps', 'ppo_steps'],
    charts: {
      sft: [
        { id: 'loss', series: [train('loss')] },
        { id: 'score', series: [held('score')] },
        { id: 'lm_loss', series: [held('lm_loss')] },
      ],
      rm: [
        { id: 'accuracy', series: [train('accuracy', 'batch_accuracy'), held('rm_accuracy', 'rm_accuracy'), held('baseline', 'chance')] },
        { id: 'loss', series: [train('loss'), held('loss', 'heldout_loss')] },
      ],
      ppo: [
        { id: 'reward', series: [train('reward'), held('reward')] },
        { id: 'score', series: [train('score'), held('score')] },
        { id: 'kl', series: [train('kl'), held('kl')] },
        { id: 'lm_loss', series: [held('lm_loss')] },
      ],
    },
  },
];

export const BY_KIND = Object.fromEntries(RECIPES.map((r) => [r.kind, r]));

/** Metrics a stage's result table shows first, when the stage reports them (the rest follow in the engine's order). */
export const HEADLINE = ['val_accuracy', 'accuracy', 'baseline', 'rm_accuracy', 'score', 'reward', 'kl', 'lm_loss', 'val_lm_loss', 'baseline_accuracy', 'chance'];

/** Metrics that are bookkeeping, not results: left out of the result tables. */
export const NOT_SHOWN = new Set(['lr', 'grad_norm', 'step', 'elapsed_s', 'reward_mean', 'reward_std']);

/**
 * The knob values of the form, checked only as numbers (the engine checks their ranges): { knobs } or
 * { bad: { knob, raw } } for the first that is not a finite number. `raw`: knob → the input's text.
 */
export function parseKnobs(raw) {
  const knobs = {};
  for (const [knob, text] of Object.entries(raw)) {
    const v = Number(String(text).trim());
    if (String(text).trim() === '' || !Number.isFinite(v)) return { bad: { knob, raw: String(text) } };
    knobs[knob] = v;
  }
  return { knobs };
}

/** The knob an engine error names (its `field`, `knobs.<name>`), if any. */
export function knobOfError(e) {
  const m = /^knobs\.(\w+)$/.exec(e?.field ?? '');
  return m ? m[1] : null;
}
