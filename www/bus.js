// The page's event bus: panels publish and subscribe to named events instead of calling each other.
//   'values'    the draft setup changed (config panel, preset, URL)           detail: { values, source }
//   'runs'      the list of runs, the selection or a run's status changed
//   'progress'  a training step of a run                                     detail: { rec, p }
//   'engine'    the engine started or failed                                  detail: { engine, error }
//   'check'     a validation / shape-flow result for the draft                detail: { flow, error, vocab }
//               (error: the engine's EngineError, with kind and, for a config error, field)
//   'lang'      the language changed
//   'notice'    a message for the user                                        detail: { text, kind }
//   'recipe'    show this recipe in the Recipes section (the concept index)    detail: { kind }
const target = new EventTarget();

export function on(type, fn) {
  const listener = (e) => fn(e.detail);
  target.addEventListener(type, listener);
  return () => target.removeEventListener(type, listener);
}

export function emit(type, detail) {
  target.dispatchEvent(new CustomEvent(type, { detail }));
}
