// Every concept the playground teaches, declared once: the concept index (panels/concepts.js) lists them in the
// page's language (strings concept.<id>.name and .def in strings/*.js) with a jump to where each can be seen or
// changed. `knob`: the option (options.js key) that sets it; `view`: the page section that shows it; `lesson`:
// the lesson that tests it (www/lessons/<id>.json); `recipe`: with view sec-recipes, the recipe (www/recipes.js)
// that the jump opens. The test tests/browser/playground-concepts.test.mjs checks that
// every knob, view and string exists. This module touches no DOM.

/** @type {Array<{id: string, knob?: string, view?: string, lesson?: string, recipe?: string}>} */
export const CONCEPTS = [
  // Architectures and objectives
  { id: 'gpt', knob: 'arch', view: 'sec-use', lesson: 'gpt-vs-bert' },
  { id: 'bert', knob: 'arch', view: 'sec-use', lesson: 'gpt-vs-bert' },
  { id: 'mlm_masking', knob: 'mlm_mask', lesson: 'bert-mask' },
  { id: 'encoder_decoder', knob: 'arch', view: 'sec-attention' },
  { id: 't5_span_corruption', knob: 'task', view: 'sec-use' },
  { id: 'bart_infilling', knob: 'task', view: 'sec-use' },
  { id: 'causal_mask', knob: 'arch', view: 'sec-attention' },
  // Embeddings and the residual stream
  { id: 'token_embedding', knob: 'd_model', view: 'sec-shapes' },
  { id: 'tied_embeddings', knob: 'tie_embeddings' },
  { id: 'residual_stream', view: 'sec-step' },
  // Attention
  { id: 'self_attention', knob: 'n_heads', view: 'sec-attention' },
  { id: 'scaled_dot_product', knob: 'scale', view: 'sec-step', lesson: 'sqrt-dk' },
  { id: 'mha', knob: 'n_heads', view: 'sec-attention', lesson: 'heads' },
  { id: 'gqa', knob: 'n_kv_heads', view: 'sec-use', lesson: 'kv-heads' },
  { id: 'mqa', knob: 'n_kv_heads', view: 'sec-use', lesson: 'kv-heads' },
  { id: 'cross_attention', knob: 'arch', view: 'sec-attention' },
  { id: 'flash_attention', view: 'sec-cost', lesson: 'attention-cost' },
  { id: 'attention_cost', view: 'sec-cost', lesson: 'attention-cost' },
  // Positions
  { id: 'no_positions', knob: 'position', lesson: 'permutation' },
  { id: 'learned_positions', knob: 'position', lesson: 'extrapolation' },
  { id: 'sinusoidal_positions', knob: 'position', lesson: 'extrapolation' },
  { id: 'position_terms', knob: 'position', view: 'sec-attention', lesson: 'position-terms' },
  { id: 'rope', knob: 'position', lesson: 'extrapolation' },
  { id: 'alibi', knob: 'position', lesson: 'extrapolation' },
  { id: 't5_relative', knob: 'position', lesson: 'extrapolation-relative' },
  { id: 'recurrent_positions', knob: 'position' },
  // Norms and where they sit
  { id: 'layernorm', knob: 'norm', lesson: 'rmsnorm' },
  { id: 'rmsnorm', knob: 'norm', lesson: 'rmsnorm' },
  { id: 'post_ln', knob: 'placement', lesson: 'norm-placement' },
  { id: 'pre_ln', knob: 'placement', lesson: 'post-ln-gradients' },
  { id: 'sandwich_ln', knob: 'placement', lesson: 'norm-placement' },
  { id: 'deepnorm', knob: 'placement', lesson: 'deepnorm' },
  // Feed-forward
  { id: 'ffn', knob: 'mult', view: 'sec-shapes' },
  { id: 'relu', knob: 'activation' },
  { id: 'gelu', knob: 'activation' },
  { id: 'swish', knob: 'activation' },
  { id: 'glu_variants', knob: 'activation', lesson: 'gated-ffn' },
  { id: 'moe', knob: 'moe', view: 'sec-charts', lesson: 'moe-vs-dense' },
  { id: 'load_balancing', knob: 'aux_loss', view: 'sec-charts', lesson: 'moe-balance' },
  { id: 'capacity_factor', knob: 'capacity_factor', view: 'sec-charts' },
  // Training
  { id: 'cross_entropy', view: 'sec-step' },
  { id: 'backpropagation', view: 'sec-step' },
  { id: 'adamw', knob: 'lr', view: 'sec-step' },
  { id: 'weight_decay', knob: 'weight_decay' },
  { id: 'warmup_cosine', knob: 'schedule', view: 'sec-charts', lesson: 'post-ln-warmup' },
  { id: 'grad_clipping', knob: 'grad_clip', view: 'sec-charts' },
  { id: 'dropout', knob: 'dropout' },
  { id: 'seed', knob: 'seed', view: 'sec-runs' },
  // After pretraining: the recipes (issue 18)
  { id: 'fine_tuning', view: 'sec-recipes', recipe: 'finetune', lesson: 'finetune-pretrained' },
  { id: 'aux_lm_loss', view: 'sec-recipes', recipe: 'finetune', lesson: 'finetune-aux-lm' },
  { id: 'zero_shot', view: 'sec-recipes', recipe: 'zeroshot' },
  { id: 'in_context_learning', view: 'sec-recipes', recipe: 'icl', lesson: 'icl-emerges' },
  { id: 'induction_heads', view: 'sec-recipes', recipe: 'icl' },
  { id: 'rlhf', view: 'sec-recipes', recipe: 'rlhf', lesson: 'rlhf-kl' },
  { id: 'reward_model', view: 'sec-recipes', recipe: 'rlhf' },
  { id: 'ppo', view: 'sec-recipes', recipe: 'rlhf' },
  { id: 'kl_penalty', view: 'sec-recipes', recipe: 'rlhf', lesson: 'rlhf-kl' },
  // Inference
  { id: 'sampling', view: 'sec-use' },
  { id: 'kv_cache', view: 'sec-use' },
  { id: 'paged_attention', view: 'sec-use', lesson: 'attention-cost' },
  { id: 'parameters_flops', view: 'sec-shapes' },
];

export const BY_ID = Object.fromEntries(CONCEPTS.map((c) => [c.id, c]));
