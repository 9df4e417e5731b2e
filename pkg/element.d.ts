// Types of the <transformer-playground> element (element.js) and the isolation helper (isolate.js).
import type { Engine, Run } from './index.js';

/**
 * detail of the `progress` event: one per training step. `val_loss` is null on steps without an evaluation.
 * `run`: with `lesson`, the index of the lesson's run (in its run order) that took the step.
 */
export interface PlaygroundProgress { run?: number; step: number; loss: number; val_loss: number | null }

/** detail of the `done` event: the run reached its steps. */
export interface PlaygroundDone { step: number; loss: number | null; val_loss: number | null }

/** detail of the `done` event of a lesson: every run stopped; `result` is the lesson's result. */
export interface PlaygroundLessonDone { result: LessonResult }

/** A lesson's result (lessons.js result): each run's metrics and each expected comparison's outcome. */
export interface LessonResult {
  /** In the lesson's run order; a metric is null where the run has none; `diverged`: it stopped with an error. */
  runs: { id: string; diverged: boolean; message: string | null; metrics: Record<string, number | null>;
    /** Metrics the engine refused for this run, with its reason (val_loss_2x/4x of learned positions). */
    refused: Record<string, string> }[];
  /** The lesson's `expect` entries, each with its outcome here. */
  checks: { metric: string; a: string; is: 'lower' | 'higher' | 'tie'; b: string; margin: number; outcome: 'holds' | 'reversed' | 'tie' }[];
  /** Whether every check held. */
  held: boolean;
}

/**
 * detail of the `error` event: a bad attribute or a failed run; the message is also shown in the widget.
 * kind: an EngineError kind ('config', 'data', 'invalid', 'io', 'runtime', …) or 'lesson'; field: the attribute
 * ('preset', 'config', 'steps', 'backend', 'lesson', 'sizes') or the knob ('model.n_heads') at fault, where there is one.
 */
export interface PlaygroundError { kind: string; message: string; field?: string }

export declare class TransformerPlayground extends HTMLElement {
  static readonly observedAttributes: string[];
  /** The run being trained, null before the first Train (and with `lesson`: see runs). */
  readonly run: Run | null;
  /** With `lesson`: its runs, in its run order (empty before the first Train). */
  readonly runs: Run[];
  /** With `lesson`: its result once every run stopped, else null. */
  readonly result: LessonResult | null;
  /** The config the widget trains (attributes and knobs applied; a lesson's first run's), null while it loads or when it is bad. */
  readonly config: object | null;
  /** 'zh' or 'en'. */
  readonly language: 'en' | 'zh';
  /** Trains to the config's steps (a fresh run at first and after `done`); resolves when it stops. */
  train(): Promise<void>;
  /** Pauses after the current step. */
  pause(): Promise<void>;
  addEventListener(type: 'progress', listener: (e: CustomEvent<PlaygroundProgress>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: 'done', listener: (e: CustomEvent<PlaygroundDone | PlaygroundLessonDone>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: 'error', listener: (e: CustomEvent<PlaygroundError>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}

/** The one Engine that every widget of the page shares (started on first use, after isolate()'s isolation). */
export declare function sharedEngine(): Promise<Engine>;

declare global {
  interface HTMLElementTagNameMap { 'transformer-playground': TransformerPlayground }
}
