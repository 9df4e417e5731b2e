// Types of the <transformer-playground> element (element.js) and the isolation helper (isolate.js).
import type { Engine, Run } from './index.js';

/** detail of the `progress` event: one per training step. `val_loss` is null on steps without an evaluation. */
export interface PlaygroundProgress { step: number; loss: number; val_loss: number | null }

/** detail of the `done` event: the run reached its steps. */
export interface PlaygroundDone { step: number; loss: number | null; val_loss: number | null }

/**
 * detail of the `error` event: a bad attribute or a failed run; the message is also shown in the widget.
 * kind: an EngineError kind ('config', 'data', 'invalid', 'io', 'runtime', …) or 'lesson'; field: the attribute
 * ('preset', 'config', 'steps', 'backend', 'lesson') or the knob ('model.n_heads') at fault, where there is one.
 */
export interface PlaygroundError { kind: string; message: string; field?: string }

/** What `lesson="<id>"` loads, once lessons exist (TransformerPlayground.lessonLoader). */
export interface PlaygroundLesson { config: object; title?: string; text?: string }

export declare class TransformerPlayground extends HTMLElement {
  static readonly observedAttributes: string[];
  /** Extension point for `lesson`: (id, lang) → the lesson; null until lessons exist (the widget then says so). */
  static lessonLoader: ((id: string, lang: 'en' | 'zh') => Promise<PlaygroundLesson>) | null;
  /** The run being trained, null before the first Train. */
  readonly run: Run | null;
  /** The config the widget trains (attributes and knobs applied), null while it loads or when it is bad. */
  readonly config: object | null;
  /** 'zh' or 'en'. */
  readonly language: 'en' | 'zh';
  /** Trains to the config's steps (a fresh run at first and after `done`); resolves when it stops. */
  train(): Promise<void>;
  /** Pauses after the current step. */
  pause(): Promise<void>;
  addEventListener(type: 'progress', listener: (e: CustomEvent<PlaygroundProgress>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: 'done', listener: (e: CustomEvent<PlaygroundDone>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: 'error', listener: (e: CustomEvent<PlaygroundError>) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}

/** The one Engine that every widget of the page shares (started on first use, after isolate()'s isolation). */
export declare function sharedEngine(): Promise<Engine>;

declare global {
  interface HTMLElementTagNameMap { 'transformer-playground': TransformerPlayground }
}
