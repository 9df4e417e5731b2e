// Types of isolate.js: cross-origin isolation through the package's service worker (sw.js).

/** How isolate() ended (it never resolves while the page reloads). */
export type IsolationResult = 'isolated' | 'off' | 'unsupported' | 'error' | 'out-of-scope' | 'failed';

/**
 * Registers the service worker at `url` (relative to the page; default 'sw.js') and reloads the page once if it is not
 * cross-origin isolated yet (at most once per tab session). `off`: unregister this origin's service workers instead.
 */
export declare function isolate(opts?: { url?: string; off?: boolean }): Promise<IsolationResult>;

/** isolate()'s promise, or a resolved one when the page did not call it. */
export declare function isolation(): Promise<IsolationResult | null>;
