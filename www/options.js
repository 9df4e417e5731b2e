// Every knob of a run, declared once: the configuration panel draws its controls from this table, the URL state
// (state.js) serialises it, and the runs panel diffs it. `path` is the field in the core's config (README
// "Configuration", src/config.rs); options without a path are part of the run's setup but not of the config
// (the corpus); `presence` marks a switch whose value is whether the object at that path is in the config (the
// Mixture-of-Experts FFN: its own fields are options that apply when it is on). `when` lists the values other options must have for this one to apply; an option that does not
// apply is left out of the config. The bounds of the numbers (min, max) are the core's: applyLimits takes them
// from the engine's limits once it has started. Labels and explanations are in strings/*.js under opt.<key>.*.
// This module touches no DOM, so the Node tests can import it too.

export const GROUPS = ['model', 'size', 'attention', 'norm', 'position', 'ffn', 'optim', 'data'];

const TEXT_ARCHS = ['gpt', 'bert'];
/** The encoder-decoder's tasks: generated digits, or a denoising objective over the corpus (T5, BART). */
export const SYNTHETIC_TASKS = ['reverse', 'sort', 'add'];
export const DENOISE_TASKS = ['span_corruption', 'text_infilling'];

/** @type {Array<{key:string, path:string|null, presence?:string, group:string, type:'choice'|'int'|'float'|'bool'|'optint'|'optfloat', choices?:string[], min?:number, max?:number, step?:number|'any', dflt:any, when?:Record<string,string[]>|Array<Record<string, string[]>>}>} */
export const OPTIONS = [
  { key: 'arch', path: 'model.arch', group: 'model', type: 'choice', choices: ['gpt', 'bert', 'encoder_decoder'], dflt: 'gpt' },

  { key: 'd_model', path: 'model.d_model', group: 'size', type: 'int', step: 8, dflt: 128 },
  { key: 'n_layers', path: 'model.n_layers', group: 'size', type: 'int', dflt: 4, when: { arch: TEXT_ARCHS } },
  { key: 'n_encoder_layers', path: 'model.n_encoder_layers', group: 'size', type: 'int', dflt: 2, when: { arch: ['encoder_decoder'] } },
  { key: 'n_decoder_layers', path: 'model.n_decoder_layers', group: 'size', type: 'int', dflt: 2, when: { arch: ['encoder_decoder'] } },
  { key: 'ctx_len', path: 'model.ctx_len', group: 'size', type: 'int', step: 8, dflt: 64 },
  { key: 'dropout', path: 'model.dropout', group: 'size', type: 'float', step: 0.05, dflt: 0 },
  { key: 'bias', path: 'model.bias', group: 'size', type: 'bool', dflt: true },
  { key: 'tie_embeddings', path: 'model.tie_embeddings', group: 'size', type: 'bool', dflt: true },
  { key: 'init_std', path: 'model.init_std', group: 'size', type: 'float', step: 0.005, dflt: 0.02 },

  { key: 'n_heads', path: 'model.n_heads', group: 'attention', type: 'int', dflt: 4 },
  { key: 'n_kv_heads', path: 'model.n_kv_heads', group: 'attention', type: 'int', dflt: 4 },
  { key: 'scale', path: 'model.attention.scale', group: 'attention', type: 'choice', choices: ['inv_sqrt_dk', 'none'], dflt: 'inv_sqrt_dk' },

  { key: 'norm', path: 'model.norm.kind', group: 'norm', type: 'choice', choices: ['layernorm', 'rmsnorm'], dflt: 'layernorm' },
  { key: 'placement', path: 'model.norm.placement', group: 'norm', type: 'choice', choices: ['post', 'pre', 'sandwich', 'deepnorm'], dflt: 'pre' },
  { key: 'alpha', path: 'model.norm.alpha', group: 'norm', type: 'optfloat', step: 'any', dflt: null, when: { placement: ['deepnorm'] } },
  { key: 'beta', path: 'model.norm.beta', group: 'norm', type: 'optfloat', step: 'any', dflt: null, when: { placement: ['deepnorm'] } },
  { key: 'norm_eps', path: 'model.norm.eps', group: 'norm', type: 'float', step: 'any', dflt: 1e-5 },

  { key: 'position', path: 'model.position.kind', group: 'position', type: 'choice', choices: ['none', 'learned', 'sinusoidal', 'relative', 'rope', 'alibi', 'recurrent'], dflt: 'learned' },
  { key: 'theta', path: 'model.position.theta', group: 'position', type: 'float', step: 'any', dflt: 10000, when: { position: ['rope'] } },
  { key: 'buckets', path: 'model.position.buckets', group: 'position', type: 'int', step: 2, dflt: 32, when: { position: ['relative'] } },
  { key: 'max_distance', path: 'model.position.max_distance', group: 'position', type: 'int', dflt: 128, when: { position: ['relative'] } },

  { key: 'activation', path: 'model.ffn.activation', group: 'ffn', type: 'choice', choices: ['relu', 'gelu', 'swish', 'glu', 'geglu', 'swiglu'], dflt: 'gelu' },
  { key: 'mult', path: 'model.ffn.mult', group: 'ffn', type: 'int', dflt: 4 },
  { key: 'hidden', path: 'model.ffn.hidden', group: 'ffn', type: 'optint', dflt: null },
  // Mixture-of-Experts: on, the FFN is `experts` FFNs of the activation and width above and a router.
  { key: 'moe', path: null, presence: 'model.ffn.moe', group: 'ffn', type: 'bool', dflt: false },
  { key: 'experts', path: 'model.ffn.moe.experts', group: 'ffn', type: 'int', dflt: 8, when: { moe: [true] } },
  { key: 'top_k', path: 'model.ffn.moe.top_k', group: 'ffn', type: 'int', dflt: 2, when: { moe: [true] } },
  { key: 'aux_loss', path: 'model.ffn.moe.aux_loss', group: 'ffn', type: 'float', step: 'any', dflt: 0.01, when: { moe: [true] } },
  { key: 'capacity_factor', path: 'model.ffn.moe.capacity_factor', group: 'ffn', type: 'optfloat', step: 'any', dflt: null, when: { moe: [true] } },

  { key: 'batch_size', path: 'train.batch_size', group: 'optim', type: 'int', dflt: 12 },
  { key: 'steps', path: 'train.steps', group: 'optim', type: 'int', dflt: 2000 },
  { key: 'lr', path: 'train.lr', group: 'optim', type: 'float', step: 'any', dflt: 1e-3 },
  { key: 'min_lr', path: 'train.min_lr', group: 'optim', type: 'float', step: 'any', dflt: 1e-4 },
  { key: 'warmup', path: 'train.warmup', group: 'optim', type: 'int', dflt: 100 },
  { key: 'schedule', path: 'train.schedule', group: 'optim', type: 'choice', choices: ['cosine', 'constant'], dflt: 'cosine' },
  { key: 'beta1', path: 'train.betas.0', group: 'optim', type: 'float', step: 'any', dflt: 0.9 },
  { key: 'beta2', path: 'train.betas.1', group: 'optim', type: 'float', step: 'any', dflt: 0.99 },
  { key: 'adam_eps', path: 'train.eps', group: 'optim', type: 'float', step: 'any', dflt: 1e-8 },
  { key: 'weight_decay', path: 'train.weight_decay', group: 'optim', type: 'float', step: 'any', dflt: 0.1 },
  { key: 'grad_clip', path: 'train.grad_clip', group: 'optim', type: 'float', step: 'any', dflt: 1 },
  { key: 'eval_interval', path: 'train.eval_interval', group: 'optim', type: 'int', dflt: 250 },
  { key: 'eval_iters', path: 'train.eval_iters', group: 'optim', type: 'int', dflt: 20 },

  { key: 'corpus', path: null, group: 'data', type: 'choice', choices: ['shakespeare', 'sums', 'custom'], dflt: 'shakespeare', when: [{ arch: TEXT_ARCHS }, { arch: ['encoder_decoder'], task: DENOISE_TASKS }] },
  { key: 'task', path: 'data.task', group: 'data', type: 'choice', choices: [...SYNTHETIC_TASKS, ...DENOISE_TASKS], dflt: 'reverse', when: { arch: ['encoder_decoder'] } },
  { key: 'digits', path: 'data.digits', group: 'data', type: 'int', dflt: 6, when: { arch: ['encoder_decoder'], task: SYNTHETIC_TASKS } },
  // bert's corruption of the positions it predicts (Devlin et al. 2019): [MASK] 80%, a random character 10%, kept 10%.
  { key: 'mlm_mask', path: 'data.mlm_mask', group: 'data', type: 'float', step: 0.05, dflt: 0.8, when: { arch: ['bert'] } },
  { key: 'mlm_random', path: 'data.mlm_random', group: 'data', type: 'float', step: 0.05, dflt: 0.1, when: { arch: ['bert'] } },
  { key: 'seed', path: 'seed', group: 'data', type: 'int', dflt: 1337 },
  { key: 'backend', path: null, group: 'optim', type: 'choice', choices: ['cpu', 'auto', 'webgpu'], dflt: 'cpu' },
];

export const BY_KEY = Object.fromEntries(OPTIONS.map((o) => [o.key, o]));

/**
 * Sets the min and max of every numeric option from the core's limits (Engine#limits.fields: ranges keyed by the
 * core's field names, 'train.betas[0]' for the path 'train.betas.0'). An exclusive end is given as the end
 * itself: a control cannot say "above 0", and the core's message explains a value on it.
 */
export function applyLimits(fields) {
  for (const o of OPTIONS) {
    const b = o.path && fields[o.path.replace(/\.(\d+)$/, '[$1]')];
    if (!b) continue;
    o.min = b.minimum ?? b.exclusive_minimum;
    o.max = b.maximum ?? b.exclusive_maximum;
  }
}

/** Does option `o` apply, given the other values? */
export function applies(o, values) {
  // `when` is one set of conditions, or a list of alternative sets (the corpus: a text model, or a denoising task).
  const all = (w) => Object.entries(w).every(([k, allowed]) => allowed.includes(values[k]));
  return !o.when || (Array.isArray(o.when) ? o.when.some(all) : all(o.when));
}

/** Whether a core config trains on a corpus: gpt and bert, and the encoder-decoder's denoising tasks. */
export function configNeedsCorpus(cfg) {
  return cfg.model?.arch !== 'encoder_decoder' || DENOISE_TASKS.includes(cfg.data?.task);
}

/** The default value of every option. */
export function defaults() {
  return Object.fromEntries(OPTIONS.map((o) => [o.key, o.dflt]));
}

function get(obj, path) {
  return path.split('.').reduce((x, k) => (x === undefined || x === null ? undefined : x[k]), obj);
}

function set(obj, path, value) {
  const keys = path.split('.');
  let x = obj;
  keys.slice(0, -1).forEach((k, i) => {
    if (x[k] === undefined) x[k] = /^\d+$/.test(keys[i + 1]) ? [] : {};
    x = x[k];
  });
  x[keys.at(-1)] = value;
}

/** Option values from a core config (a preset file, a checkpoint's config); missing fields take the defaults. */
export function valuesFromConfig(cfg, corpus = 'shakespeare') {
  const v = defaults();
  for (const o of OPTIONS) {
    if (o.presence) v[o.key] = get(cfg, o.presence) !== undefined && get(cfg, o.presence) !== null;
    if (!o.path) continue;
    const x = get(cfg, o.path);
    if (x !== undefined && x !== null) v[o.key] = x;
  }
  const m = cfg.model ?? {};
  if (m.arch === 'encoder_decoder') {
    v.n_encoder_layers = m.n_encoder_layers ?? m.n_layers ?? v.n_encoder_layers;
    v.n_decoder_layers = m.n_decoder_layers ?? m.n_layers ?? v.n_decoder_layers;
    if (v.task === 'text') v.task = 'reverse';
  } else {
    if (v.task === 'text' || !BY_KEY.task.choices.includes(v.task)) v.task = BY_KEY.task.dflt;
    if (!m.n_layers && m.n_encoder_layers) v.n_layers = m.n_encoder_layers;
  }
  v.corpus = corpus;
  return v;
}

/** The core config of a set of option values: options that do not apply, and empty optional ones, are left out. */
export function configFromValues(values) {
  const cfg = {};
  for (const o of OPTIONS) {
    if (!o.path || !applies(o, values)) continue;
    const x = values[o.key];
    if (x === null || x === undefined) continue;
    set(cfg, o.path, x);
  }
  if (!cfg.data) cfg.data = { task: 'text' };
  return cfg;
}

/** Keys whose values differ between two sets of values, among the options that apply to both (an option that
 * applies to only one of them differs because another option does, and that one is listed). */
export function diffKeys(a, b) {
  return OPTIONS.filter((o) => applies(o, a) && applies(o, b) && a[o.key] !== b[o.key]).map((o) => o.key);
}

/**
 * How a Mixture-of-Experts FFN routes, for the words beside top_k: 'dense' (off), 'top1' (Switch's one expert),
 * 'topk' (k experts mixed by renormalised weights, Mixtral's k = 2), 'invalid' (k not in 1..E: the core says why).
 */
export function moeRouting(values) {
  const { moe, experts: e, top_k: k } = values;
  if (!moe) return 'dense';
  if (!(Number.isInteger(k) && Number.isInteger(e) && k >= 1 && k <= e)) return 'invalid';
  return k === 1 ? 'top1' : 'topk';
}

/** The number of queries sharing one key/value head, and the attention variant that makes. */
export function kvLayout(values) {
  const { n_heads: nh, n_kv_heads: nkv } = values;
  if (!(nh > 0 && nkv > 0) || nh % nkv !== 0 || nkv > nh) return { kind: 'invalid', group: 0 };
  if (nkv === nh) return { kind: 'mha', group: 1 };
  if (nkv === 1) return { kind: 'mqa', group: nh };
  return { kind: 'gqa', group: nh / nkv };
}
