// Types of lessons.js (the lessons' logic) and lessons-data.js (generated from www/lessons/*.json by
// scripts/pkg-assets.mjs). A lesson's file format: docs/ARCHITECTURE.md, "Checklist: add a lesson".
import type { LessonResult } from './element.js';
import type { Engine, Run } from './index.js';

/** A text in English and 中文. */
export interface LessonText { en: string; zh: string }

/** A comparison's outcome: the direction held, went the other way, or was within the margin. */
export type Outcome = 'holds' | 'reversed' | 'tie';

/** A lesson: a claim, 2–4 runs that differ in one knob, the metrics compared and the expected directions. */
export interface Lesson {
  id: string; claim_no: number;
  title: LessonText; claim: LessonText; source: LessonText; watch: LessonText; question: LessonText; measured: LessonText; why_not: LessonText;
  /**
   * A training lesson: preset and corpus, `set` config paths. A recipe lesson: `recipe` (engine.createRecipe's kind),
   * `task` (finetune), `set` the recipe's knobs (engine.recipeInfo(kind).knobs) — its runs are recipes, not runs.
   */
  base: { preset?: string; corpus?: string; recipe?: 'finetune' | 'zeroshot' | 'icl' | 'rlhf'; task?: string; set: Record<string, unknown> };
  /**
   * `checkpoint` (finetune recipe lessons only; every run or none): the model the run starts from, as
   * engine.createRecipe's option — the lesson's knob when its runs differ in nothing else (`set` may then be empty).
   */
  runs: { id: string; label: LessonText; set: Record<string, unknown>; checkpoint?: 'pretrained' | 'scratch' }[];
  metrics: string[];
  /** Run a's `metric` against run b's (`b_metric` when given: two metrics, e.g. of one run). */
  expect: { metric: string; a: string; is: 'lower' | 'higher' | 'tie'; b: string; b_metric?: string; margin: number }[];
  /** Per expect, what the native test asserts at the test sizes: one outcome, or the outcomes the CPUs give where their rounding decides. */
  test: { set: Record<string, unknown>; outcome: (Outcome | Outcome[])[] };
}

/** The lessons by id, in order. */
export declare const LESSONS: Readonly<Record<string, Lesson>>;
/** The lessons' ids, in order. */
export declare const LESSON_IDS: readonly string[];
/** Lesson `id`, or null. */
export declare function lessonById(id: string): Lesson | null;
/** Whether the lesson's runs are recipes (base.recipe). */
export declare function isRecipeLesson(lesson: Lesson): boolean;
/** A recipe lesson's engine.createRecipe options per run: task, checkpoint and knobs (base, with sizes 'test' the test sizes, the run's). */
export declare function recipeOptions(lesson: Lesson, options?: { sizes?: 'page' | 'test' }): { task?: string; checkpoint?: 'pretrained' | 'scratch'; knobs: Record<string, number> }[];
/** The core config of each run: the preset's config, the base settings (with sizes 'test' the test sizes), the run's knob. */
export declare function runConfigs(lesson: Lesson, presetConfig: object, options?: { sizes?: 'page' | 'test' }): object[];
/** A run's progress history (what the metrics read). */
export declare function emptyHistory(): object;
/** Adds an engine Progress to `rec.history` and updates `rec.msPerStep`. */
export declare function recordProgress(rec: { history: object; msPerStep?: number | null }, p: object): void;
/** The metrics: digits shown, probe (needs probeRun), comparable, and of(rec). */
export declare const METRICS: Readonly<Record<string, { digits: number; probe?: boolean; recipe?: boolean; comparable?: boolean; of: (rec: object) => number | null; refused?: (rec: object) => string | null }>>;
/** The probes of a finished run (attention maps, shape flow) that the probe metrics read, or null when none is needed. */
export declare function probeRun(lesson: Lesson, handle: Run, config: object, corpus: string, engine: Engine): Promise<object | null>;
/** Attention's share of the forward FLOPs per token at T = t, from engine.attentionFlops' result (exact at any T: attention is a0 + a1·T). */
export declare function flopsShare(flops: { rows: { t: number; attention: number; ffn: number }[] }, t: number): number;
/** One expected comparison as a sentence: `label` names a run, `t` looks a string up (the page's or the element's). */
export declare function checkText(check: Lesson['expect'][number], label: (runId: string) => string, t: (key: string, vars?: object) => string): string;
/** A lesson's result from its run records ({ history, config, status, message?, msPerStep?, lessonProbe? }), in run order. */
export declare function result(lesson: Lesson, recs: object[]): LessonResult;
