// Types for transformer-playground's JS API (index.js). Config fields use the core's snake_case names
// (see the project README and docs/MODEL.md); the API's own options are camelCase.

export type Arch = 'gpt' | 'bert' | 'encoder_decoder';
export type Activation = 'relu' | 'gelu' | 'swish' | 'glu' | 'geglu' | 'swiglu';
export type NormKind = 'layernorm' | 'rmsnorm';
export type NormPlacement = 'post' | 'pre' | 'sandwich' | 'deepnorm';
export type PositionKind = 'none' | 'learned' | 'sinusoidal' | 'relative' | 'rope' | 'alibi' | 'recurrent';
export type Task = 'text' | 'reverse' | 'sort' | 'add' | 'span_corruption' | 'text_infilling';

export interface ModelConfig {
  arch: Arch;
  d_model: number;
  n_layers?: number;
  n_encoder_layers?: number;
  n_decoder_layers?: number;
  n_heads: number;
  /** = n_heads: MHA; 1: MQA; a divisor of n_heads: GQA. */
  n_kv_heads: number;
  ctx_len: number;
  /** `moe` (absent: a dense FFN) makes it a Mixture-of-Experts of `experts` FFNs of this activation and width. */
  ffn: { activation: Activation; mult?: number; hidden?: number; moe?: MoeConfig };
  norm: { kind: NormKind; placement: NormPlacement; eps?: number; alpha?: number; beta?: number };
  position: { kind: PositionKind; theta?: number; buckets?: number; max_distance?: number };
  attention: { scale: 'inv_sqrt_dk' | 'none' };
  dropout?: number;
  bias?: boolean;
  tie_embeddings?: boolean;
  init_std?: number;
}

/**
 * A Mixture-of-Experts FFN (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2021; Mixtral, Jiang et al. 2024):
 * each token goes to the `top_k` of `experts` FFNs its router rates highest, their outputs mixed by the router's
 * probabilities renormalised over the k. Ranges in engine.limits.fields['model.ffn.moe.*'].
 */
export interface MoeConfig {
  /** 2 to 64. */
  experts: number;
  /** 1 to `experts`. */
  top_k: number;
  /** Weight of the load-balancing loss (Switch) added per MoE layer; 0 turns it off (default 0.01). */
  aux_loss?: number;
  /** Each expert takes at most ceil(capacity_factor · top_k · tokens / experts) assignments of a batch, in token order; the rest are dropped. null or absent: no limit; else 1 to 64. */
  capacity_factor?: number | null;
}

export interface TrainConfig {
  batch_size?: number;
  steps?: number;
  lr?: number;
  min_lr?: number;
  warmup?: number;
  schedule?: 'cosine' | 'constant';
  betas?: [number, number];
  eps?: number;
  weight_decay?: number;
  grad_clip?: number;
  eval_interval?: number;
  eval_iters?: number;
}

export interface Config {
  model: ModelConfig;
  train?: TrainConfig;
  data?: { task?: Task; digits?: number };
  seed?: number;
}

/** The config with every default filled in, as the core holds it. */
export type FullConfig = Required<Config> & { model: Required<ModelConfig>; train: Required<TrainConfig> };

export interface EngineOptions {
  /**
   * 'auto' (default): 'threads' when the page is cross-origin isolated, else 'single' (both use relaxed SIMD);
   * 'baseline' (SIMD128 only, one thread) in browsers without relaxed SIMD.
   */
  build?: 'auto' | 'threads' | 'single' | 'baseline';
  /** Threads in the pool of the threaded build (default: navigator.hardwareConcurrency). */
  threads?: number;
  /** Where worker.js is served, when not next to index.js. */
  workerUrl?: string | URL;
  /**
   * How often (ms) a training run's state is kept for recovery (default 20000; also when training stops and after
   * a single step). After a restart a run loses at most this much of its training, plus the round of steps under way.
   */
  snapshotEveryMs?: number;
  /** The memory budget configs are checked against, in GiB ((0, 3.5]; default 2): see `setMemoryBudget`. */
  memoryBudgetGiB?: number;
  /**
   * The watchdog: a Worker silent this long (ms) while a call is pending, pings unanswered, is taken to be stuck
   * and replaced (default 60000; at least 10 × the longest silence seen from a Worker that then answered).
   * A Worker that dies is noticed at once (it holds a Web Lock until it ends).
   */
  watchdogMs?: number;
}

export interface EngineInfo {
  build: 'threads' | 'single' | 'baseline';
  backend: 'wasm-threads' | 'wasm-single';
  threads: number;
  simd128: boolean;
  relaxedSimd: boolean;
  version: string;
  /** Whether runs can use WebGPU here (the build has it and the browser has navigator.gpu). */
  webgpu: boolean;
}

export interface RunOptions {
  /** 'cpu' (default), 'webgpu', or 'auto': WebGPU when available and measured faster for this config. */
  backend?: 'cpu' | 'webgpu' | 'auto';
  /** Training text for gpt and bert, and for the encoder-decoder's denoising tasks (span_corruption, text_infilling). */
  corpus?: string;
  /** Synthetic task for the encoder-decoder (overrides config.data.task). */
  task?: Task;
  /** Overrides config.seed. */
  seed?: number;
}

export interface Progress {
  runId: number;
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** [parameter group, gradient norm] per layer, before clipping. */
  layerGradNorms: [string, number][];
  /** Present at every eval_interval steps and at the end of a train() call. */
  valLoss?: number | null;
  trainLoss?: number | null;
  tokensPerSec: number;
  msPerStep: number;
  /** What ran this step. */
  backend: 'webgpu' | 'wasm-threads' | 'wasm-single';
  /**
   * Mixture-of-Experts models only: the load-balancing term added to the objective this step, Σ over MoE layers of
   * aux_loss · E·Σ_e f_e·P_e (`loss` is the cross-entropy alone).
   */
  auxLoss?: number;
  /** Mixture-of-Experts models only: how each MoE layer spread this step's tokens. */
  expertLoad?: ExpertLoad[];
  /** Set when something changed, e.g. the GPU was lost and the run continues on the CPU. */
  notice?: string;
}

/** One Mixture-of-Experts layer's load in a training step. */
export interface ExpertLoad {
  /** The layer's parameter prefix: 'blocks.3', 'decoder.blocks.0'. */
  layer: string;
  /** Each expert's share of the (token, choice) assignments, before the capacity: E numbers summing to 1. */
  load: number[];
  /** Assignments over an expert's capacity, dropped (their tokens pass through the residual). */
  dropped: number;
  /** The balancing loss E·Σ_e f_e·P_e before its weight: 1 when perfectly balanced. */
  balance: number;
}

/** maxTokens, topK and seed are integers ≥ 0, temperature and topP finite numbers: anything else is an 'invalid' EngineError. */
export interface SampleOptions {
  maxTokens?: number;
  /** 0 = greedy. */
  temperature?: number;
  /** 0 = off. */
  topK?: number;
  /** 1 = off. */
  topP?: number;
  seed?: number;
}

/**
 * `run.generate({ … })`: N continuations of one prompt over the paged KV cache (PagedAttention, Kwon et al. 2023).
 * The sampling options are SampleOptions' (for an encoder-decoder run, `prompt` is the source and maxTokens 0 means
 * its length). Anything out of range is an 'invalid' EngineError naming the field ('n', 'blockSize', …).
 */
export interface GenerateOptions extends SampleOptions {
  prompt: string;
  /** Continuations, 1 (default) to engine.limits.generation.max_n (64). Continuation i samples with seed + i. */
  n?: number;
  /** Positions per cache block, 1 to engine.limits.generation.max_block_size (1024); default 16. */
  blockSize?: number;
  /** 'paged' (default), or 'contiguous': the reference path (n = 1), one call that holds the engine until it ends — no cancel, no kv. */
  kvCache?: 'paged' | 'contiguous';
  /** Aborting it stops the generation before its next token (as run.cancelGenerate()); it resolves with what it had. */
  signal?: AbortSignal;
  /** The text continuation `index` sampled since its last call: every 4 tokens, sooner after 16 ms, and at the end. */
  onText?: (piece: string, index: number) => void;
  /** The cache as it fills: at most every 50 ms, and the last view with live sequences before they end. */
  onKv?: (view: KvView) => void;
}

/** What `run.generate({ … })` resolves. */
export interface Generation {
  /** Each continuation's new text, by index (seed + index). */
  texts: string[];
  /** texts[0]: the text when n = 1. */
  text: string;
  /** 'cancelled': by run.cancelGenerate() or the signal; texts hold what was generated until then. */
  stopped: 'done' | 'cancelled';
  /**
   * The cache as the generation stopped (done: every sequence has finished and freed its blocks, so `now` is empty
   * and `peak` says what it held; cancelled: the blocks the cancel then freed). null for kvCache 'contiguous' and
   * for a generation whose signal was aborted before it began.
   */
  kv: KvView | null;
}

/** A paged KV cache's figures (the core's KvStats). */
export interface KvStats {
  /** Positions per block. */
  blockSize: number;
  /** Blocks held by at least one sequence. */
  blocksUsed: number;
  /** Bytes of those blocks: every layer's K and V, f32. */
  bytesUsed: number;
  /** What one contiguous cache of ctx_len positions per live sequence would take. */
  bytesContiguous: number;
  /** One position of one sequence, all layers' K and V (grows with the KV heads: n_kv_heads × head size). */
  bytesPerPosition: number;
}

/** The cache of a generation: figures now and at their peak, and the block table. */
export interface KvView {
  now: KvStats;
  /** When the cache held the most bytes. */
  peak: KvStats;
  table: {
    blockSize: number;
    /** Each live sequence (finished ones are gone): its continuation index, its physical blocks in position order, and the positions it holds (block j holds positions j·blockSize …). */
    seqs: { index: number; blocks: number[]; positions: number }[];
    /** Each physical block's reference count, by block number: 0 free, > 1 shared (the prompt's blocks after the fork). */
    refs: number[];
  };
  /** Every continuation has its tokens. */
  done: boolean;
  /** What one position would take with as many KV heads as query heads (MHA): GQA's and MQA's saving is bytesPerPosition / this. */
  bytesPerPositionMha: number;
}

export interface MaskFill {
  position: number;
  candidates: [token: string, probability: number][];
}

export interface AttentionMap {
  stack: string;
  kind: string;
  layer: number;
  heads: number;
  t: number;
  s: number;
  /** heads × t × s probabilities, row-major. */
  probs: number[];
}

/** Where one Mixture-of-Experts layer sent each token of the text. */
export interface Routes {
  /** 'encoder' or 'decoder', as for the attention maps (a gpt is a decoder, a bert an encoder). */
  stack: string;
  layer: number;
  /** Experts per token. */
  k: number;
  /** tokens × k expert indices, row-major: each token's experts, best first. */
  experts: number[];
  /** tokens × k: their weights (summing to 1 per token). */
  weights: number[];
  /** tokens × k: the assignment was over its expert's capacity and dropped. */
  dropped: boolean[];
}

export interface AttentionMaps {
  tokens: string[];
  source_tokens: string[];
  maps: AttentionMap[];
  /** One entry per Mixture-of-Experts layer (empty for a dense FFN). */
  routes: Routes[];
}

/** What a stage of the shape flow is (its `name` is English, for people). */
export type StageKind = 'input' | 'embedding' | 'position' | 'norm' | 'attention' | 'cross_attention' | 'ffn' | 'head';

/** A stage's stable id (name it in your own words from this, its stack and per_layer). */
export type StageId =
  | 'input_ids' | 'token_embedding' | 'learned_positions' | 'sinusoidal_positions' | 'relative_bias_table' | 'norm'
  | 'q' | 'kv' | 'scores' | 'heads_concatenated' | 'attention_output' | 'cross_q' | 'cross_kv' | 'cross_output'
  | 'moe_router' | 'ffn_up' | 'ffn_activation' | 'ffn_down' | 'final_norm' | 'logits';

export interface Stage {
  name: string;
  id: StageId;
  /** 'encoder' or 'decoder' in an encoder-decoder; absent for gpt and bert. */
  stack?: 'encoder' | 'decoder';
  /** How many of it each layer has (the norms: 2 to 6); 1 otherwise. */
  per_layer: number;
  kind: StageKind;
  shape: string[];
  dims: number[];
  /** Parameters of the stage in one layer (a Mixture-of-Experts FFN's stages: all its experts). */
  params: number;
  repeat: number;
}

/** A tensor of the traced step reduced to what a person can look at (src/trace.rs). */
export interface TraceSummary {
  /** The first values (sequence 0, head 0 where the tensor has heads). */
  values: number[];
  mean: number;
  std: number;
  min: number;
  max: number;
  /** √Σx² over the whole tensor. */
  norm: number;
}

/** A matrix averaged over blocks of cells to at most 32 × 32: `rows` × `cols` cells, row-major. */
export interface TraceHeat {
  rows: number;
  cols: number;
  /** What the rows and columns are, e.g. ["T", "C"]. */
  axes: [string, string];
  /** The matrix before averaging. */
  of: [number, number];
  cells: number[];
}

export interface TraceStage {
  pass: 'forward' | 'loss' | 'backward' | 'update';
  /** Forward: the shape flow's stage ids (plus k, v, residual, cross_k, cross_v, cross_scores,
   *  cross_heads_concatenated); 'loss'; 'dlogits'; 'gradient' (backward); 'adamw' (update). */
  id: string;
  stack?: 'encoder' | 'decoder';
  layer?: number;
  /** The parameter tensor (backward, update). */
  tensor?: string;
  shape: number[];
  summary: TraceSummary;
  heat?: TraceHeat;
  /** Backward, update: the parameter's norm. */
  param_norm?: number;
  /** Update: ‖m‖ and √(mean v) after the step, and ‖Δθ‖ / ‖θ‖. */
  m_norm?: number;
  v_rms?: number;
  ratio?: number;
  /** The function that computes it, e.g. "model::block::qkv_heads". */
  source: string;
  /** The section of docs/MODEL.md with its formula, e.g. "MODEL.md#attention". */
  doc: string;
}

/** One training step in slow motion (Run.trace). */
export interface StepTrace {
  step: number;
  lr: number;
  b: number;
  t: number;
  /** The source length of an encoder-decoder (0 otherwise). */
  s: number;
  /** Sequence 0's tokens (the decoder's input for an encoder-decoder) and its source tokens. */
  tokens: string[];
  source_tokens: string[];
  loss: number;
  /** Global gradient norm before clipping, and the clip threshold (0: none). */
  grad_norm: number;
  grad_clip: number;
  stages: TraceStage[];
}

export interface ShapeFlow {
  stages: Stage[];
  n_params: number;
  /** Parameters one token uses: all but the experts it is not sent to (Mixture-of-Experts); n_params otherwise. */
  active_params: number;
  forward_flops_per_token: number;
  train_flops_per_token: number;
  memory_bytes: number;
}

/** The kinds of EngineError: the core's error kinds (src/error.rs), and 'runtime' when the engine itself failed. */
export type ErrorKind = 'config' | 'data' | 'checkpoint' | 'gpu' | 'diverged' | 'invalid' | 'io' | 'runtime';

/** Why a text cannot be trained on (an EngineError of kind 'data'). */
export type DataReason =
  | 'no_text'
  | 'empty'
  | 'too_large'
  | 'not_utf8'
  | 'control_characters'
  | 'too_many_characters'
  | 'too_short'
  | 'not_in_vocabulary';

/** The values of createRun's and loadRun's backend option. */
export const BACKEND_OPTIONS: readonly ['cpu', 'webgpu', 'auto'];

/**
 * What every call rejects with (and every 'error' event carries): an Error with the core's message, and properties
 * to act on instead of the message.
 *   config      (bad config) field, value, rule: `createRun({ …, n_heads: 3, d_model: 64 })` rejects with field
 *               'model.n_heads', value '3', rule 'must divide model.d_model = 64 …'. A config that does not parse
 *               as the schema is a config error without a field.
 *   data        (the text) reason, and its numbers: too_large { bytes, limit }, not_utf8 { at },
 *               too_many_characters { distinct, limit }, too_short { chars, need }, not_in_vocabulary { character }.
 *   checkpoint  not a checkpoint of this format, or one that does not match itself
 *   gpu         no usable WebGPU, or the GPU failed
 *   diverged    the loss or gradients stopped being finite; the run keeps its last good state
 *   invalid     a request that cannot be done (an unknown character in a prompt, a run that is training, …)
 *   io          reading or writing failed
 *   runtime     the engine itself failed (a Rust panic, a Worker that died or stopped answering: the engine
 *               restarts and restores its runs; `restart` says which)
 *
 * An error about a run carries the run's `runId` (its `Run.id`); the message never names it, so a caller words it
 * in its own terms (the playground: "Run 2").
 */
export class EngineError extends Error {
  readonly name: 'EngineError';
  readonly kind: ErrorKind;
  /** kind 'config': the field as the core names it ('model.n_heads', 'train.betas[0]'), its value and the rule. */
  readonly field?: string;
  readonly value?: string;
  readonly rule?: string;
  /** kind 'data': why the text cannot be used; the numbers below go with some reasons. */
  readonly reason?: DataReason;
  readonly bytes?: number;
  readonly limit?: number;
  readonly at?: number;
  readonly distinct?: number;
  readonly chars?: number;
  readonly need?: number;
  readonly character?: string;
  /** The run the error is about (`Run.id`), when it is about one. */
  readonly runId?: number;
  /** kind 'runtime': the call failed because the engine restarts — after a panic ('error'), or because its Worker died or stopped answering. */
  readonly restart?: 'error' | 'died' | 'stuck';
}

/** The range of a numeric config field: up to two of the four ends (JSON Schema's names). */
export interface Bound {
  minimum?: number;
  exclusive_minimum?: number;
  maximum?: number;
  exclusive_maximum?: number;
}

/** The limits the core enforces (engine.limits), so a front end need not copy them. */
export interface Limits {
  /** By field, named as config errors name them: 'model.d_model', 'train.betas[0]', … */
  fields: Record<string, Bound>;
  text: { max_bytes: number; max_chars: number };
  max_params: number;
  /** What run.generate({ n, blockSize }) takes. */
  generation: { max_n: number; max_block_size: number; default_block_size: number };
}

/** The attention a cost row measures (engine.attentionCost); every field optional. */
export interface AttentionCostSpec {
  /** B (default 1). */
  batch?: number;
  /** NH (default 4). */
  heads?: number;
  /** NKV, dividing NH (default NH). */
  kv_heads?: number;
  /** HS (default 64). */
  head_size?: number;
  /** Causal (default) or bidirectional. */
  causal?: boolean;
  /** The naive path runs only where its bytes stay within this many MiB (default 512). */
  budget_mib?: number;
}

/** One sequence length of the attention-cost sweep: naive vs fused (FlashAttention) forward + backward. */
export interface AttentionCostRow {
  t: number;
  /** Median ms; null where the naive path was skipped (see note). */
  naive_ms: number | null;
  flash_ms: number;
  /** Bytes each path holds beyond its inputs, outputs and gradients (formulas: src/attention_cost.rs). */
  naive_bytes: number;
  flash_bytes: number;
  note?: string;
  backend: 'webgpu' | 'wasm-threads' | 'wasm-single';
}

/** A text the core accepts (engine.checkText). */
/** Run#positionTerms: the position–position term of the first layer's scores (src/position_terms.rs). */
export interface PositionTerms {
  position: 'learned' | 'sinusoidal';
  /** Positions along each axis (ctx_len). */
  t: number;
  heads: number;
  /** p_tᵀ p_s, t × t row-major. */
  raw: number[];
  /** (p_t W_Q,hᵀ)·(p_s W_K,hᵀ) × the score scale, heads × t × t. */
  projected: number[];
  /** The share of raw's variance its diagonals' means explain: 1 = a function of t − s alone. */
  raw_relative: number;
  /** The same for each head's projected term. */
  projected_relative: number[];
}

export interface TextStats {
  bytes: number;
  chars: number;
  /** Distinct characters: the vocabulary before special tokens. */
  distinct: number;
}

// ------------------------------------------------------------------------------------------------- recipes
// Issue 18's recipes (docs/RECIPES.md) in the engine: GPT-1 fine-tuning, GPT-2 zero-shot, GPT-3 in-context
// learning and InstructGPT's RLHF, each a sequence of stages stepped in the engine Worker a bounded piece of work at a
// time (one training step, one PPO step, one evaluation), so a page can watch, pause and resume them.

export type RecipeKind = 'finetune' | 'zeroshot' | 'icl' | 'rlhf';
/** Every RecipeKind, in order. */
export const RECIPE_KINDS: readonly RecipeKind[];

/**
 * The stages of each kind, in order. finetune: 'finetune'; zeroshot: 'pattern' (pretrain on the text with the
 * templated task), 'baseline' (the same on plain text), 'eval'; icl: 'pretrain', 'eval'; rlhf: 'sft', 'rm', 'ppo'.
 */
export type RecipeStageName = 'finetune' | 'pattern' | 'baseline' | 'eval' | 'pretrain' | 'sft' | 'rm' | 'ppo';

/**
 * Knobs, by kind (each optional; engine.recipeInfo(kind).knobs has every one with its default). Out of range: a
 * 'config' EngineError whose `field` is `knobs.<name>` and whose message names it (and the recipe field it sets); a
 * knob that is not a number: an 'invalid' one naming `opts.knobs.<name>`.
 *   finetune: steps, aux_lm (λ), lr, batch, eval_every
 *   zeroshot: steps (per model), every (a templated line after every N corpus lines), eval_questions, eval_every
 *   icl:      steps, train_episodes, eval_episodes, eval_every
 *   rlhf:     sft_steps, rm_steps, ppo_steps, beta (β, KL penalty), gamma_ptx (γ, pretraining mix), clip (ε),
 *             k (completions ranked per prompt), rollouts (per PPO step), epochs, eval_every
 * eval_every: steps between the held-out evaluations that a stage's progress events carry (eval: true).
 */
export type RecipeKnobs = Record<string, number>;

export interface RecipeOptions {
  /**
   * The recipe file (configs/recipes/*.json) as an object or JSON; default: the shipped one for the kind
   * (finetune: finetune-verse-prose.json or finetune-speaker.json by `task`, a from-scratch config used only with
   * checkpoint 'scratch'; zeroshot.json; icl.json; rlhf.json — its "checkpoint" path is ignored here).
   */
  recipe?: object | string;
  /**
   * finetune and rlhf: the model to start from. 'pretrained' (default): the shipped checkpoint
   * (data/pretrained-gpt-tiny.safetensors next to index.js; made by scripts/recipes-pretrain.sh); 'scratch' (finetune
   * only): a fresh model of the recipe's config; or a checkpoint's bytes (a gpt trained on this corpus).
   */
  checkpoint?: Uint8Array | ArrayBuffer | 'pretrained' | 'scratch';
  /** finetune, rlhf and zeroshot: the text (default: Tiny Shakespeare, data/tinyshakespeare.txt, as the CLI uses it; icl generates its own). */
  corpus?: string;
  /** finetune: 'verse_prose' (default) or 'speaker'. */
  task?: 'verse_prose' | 'speaker';
  knobs?: RecipeKnobs;
  /** Overrides the recipe's seed. */
  seed?: number;
  /**
   * 'cpu' (default), 'webgpu' or 'auto'. 'webgpu': zeroshot's and icl's pretraining stages (plain language-model
   * training) train on the engine Worker's GPU, their evaluations stay on the CPU; finetune and rlhf refuse it
   * (kind 'gpu': their steps add losses computed on the host), as does a browser or build without WebGPU. 'auto':
   * finetune and rlhf run on the CPU; zeroshot and icl take whichever trained a few steps of their pretraining
   * config faster here; recipe.backendChoice says what was taken and why.
   */
  backend?: 'cpu' | 'webgpu' | 'auto';
  /**
   * Start at a later stage from what earlier stages saved (recipe.save(stage)): `checkpoints` by stage name.
   * rlhf 'rm' needs sft; 'ppo' needs sft and rm. zeroshot 'baseline' needs pattern; 'eval' pattern and baseline.
   * icl 'eval' needs pretrain. finetune 'finetune' continues a saved fine-tuned model (its head, AdamW state, step).
   */
  from?: { stage: RecipeStageName; checkpoints: Record<string, Uint8Array | ArrayBuffer> };
}

export interface RecipeStage {
  name: RecipeStageName;
  /** The stage's units of work (training steps, PPO steps; 1 for an evaluation stage). */
  steps: number;
}

/** A held-out prompt and what the model wrote (rlhf: the policy's completion; zeroshot: a question and the answer). */
export interface RecipeSample {
  prompt: string;
  completion: string;
}

/**
 * One unit of work done (or one held-out evaluation: eval true). `metrics`: the numbers of the core's report for
 * the stage, named as the CLI's JSON lines name them (tp finetune|zeroshot|icl|rlhf): finetune: loss, task_loss,
 * lm_loss, lr, grad_norm, and at evaluations accuracy, val_accuracy, val_task_loss, val_lm_loss, baseline;
 * pattern/baseline/pretrain: loss, lr, grad_norm, and val_loss at evaluations; sft: loss, lr, grad_norm; rm: loss, accuracy, pairs,
 * grad_norm, and at evaluations rm_accuracy, pairs, baseline; ppo: reward, score, kl, return_mean, loss, pg_loss,
 * vf_loss, ptx_loss, clipfrac, grad_norm; evaluations of sft and ppo: score, lm_loss (and reward, kl for ppo).
 * A nested object's numbers are named after it (icl's eval: 'baseline.chance', 'induction.best.score'). A non-finite
 * number is null.
 */
export interface RecipeProgress {
  stage: RecipeStageName;
  /** Units done in this stage (after this one; an evaluation reports the step it measured, before its update). */
  step: number;
  steps: number;
  eval: boolean;
  metrics: Record<string, number | null>;
  /** At rlhf evaluations: held-out samples. */
  samples?: RecipeSample[];
  /** Something to know, said once: e.g. the GPU was lost and the pretraining goes on on the CPU. */
  notice?: string;
  /** Wall time of this unit in the Worker. */
  ms: number;
}

/** A stage finished: its final held-out evaluation. */
export interface RecipeStageResult {
  stage: RecipeStageName;
  step: number;
  /** As RecipeProgress.metrics (rm adds reward_mean, reward_std: the normalisation). */
  metrics: Record<string, number | null>;
  samples?: RecipeSample[];
  /**
   * The core's whole report, as the CLI's line for the stage: icl 'eval': accuracy_by_k, char_accuracy_by_k,
   * by_family, baseline, induction, lookup …; zeroshot 'eval': accuracy, baseline_accuracy, chance, examples,
   * top_answers …
   */
  report: Record<string, unknown>;
  /** Wall time of the stage in the Worker (ms, over the run() calls that did it). */
  ms: number;
}

/** What engine.recipeInfo(kind) says about a kind before creating one. */
export interface RecipeInfo {
  kind: RecipeKind;
  stages: RecipeStage[];
  /** Every knob with its default (the shipped recipe's value). */
  knobs: Record<string, number>;
  /** The shipped recipe file. */
  recipe: Record<string, unknown>;
}

/** icl: the model's attention on one held-out episode (recipe.attention), with the induction pattern to compare. */
export interface RecipeAttention {
  /** The episode's index among the evaluation's held-out episodes (0 … icl.eval_episodes − 1). */
  episode: number;
  /** The family its rule was drawn from. */
  family: 'substitution' | 'shift' | 'affine' | 'reverse_shift';
  /** What the model read: a newline, then the episode's pairs (x>Y|x>Y|…). */
  text: string;
  /** Its characters, along both axes of every map (queries down, keys across). */
  tokens: string[];
  /** One per layer (self-attention): heads × t × t probabilities, each row summing to 1, zero after the query. */
  maps: AttentionMap[];
  /**
   * Per query position i, the key positions an induction head attends to: j + 1 for every earlier j holding the
   * same token as i (empty where the token has not occurred before).
   */
  induction_targets: number[][];
}

export class Recipe {
  readonly id: number;
  readonly kind: RecipeKind;
  readonly stages: RecipeStage[];
  /** The recipe as it runs (knobs applied). */
  readonly recipe: Record<string, unknown>;
  readonly knobs: Record<string, number>;
  /** What trains it: 'webgpu' (zeroshot's and icl's pretraining stages; evaluations on the CPU), else 'wasm-threads' or 'wasm-single'. */
  readonly backend: 'webgpu' | 'wasm-threads' | 'wasm-single';
  /** With backend 'auto': what it took and why (for zeroshot and icl, the measured ms per step of each). */
  readonly backendChoice: { backend: 'cpu' | 'webgpu'; reason: string; ms?: { webgpu: number; cpu: number } } | null;
  /** Where it is now: the stage under way (the next one, at step 0, once a stage has finished; the last when done) and its units done. */
  readonly stage: RecipeStageName;
  readonly step: number;
  readonly done: boolean;
  on(event: 'progress', fn: (p: RecipeProgress) => void): Unsubscribe;
  on(event: 'stage', fn: (r: RecipeStageResult) => void): Unsubscribe;
  /** The recipe stopped on an error (a diverged step, or the engine stopped: then 'restored' follows). */
  on(event: 'error', fn: (e: EngineError) => void): Unsubscribe;
  /**
   * After an engine restart: the recipe is back, paused, at the start of `stage` (the stage it was in), made again
   * from the models of the stages it had finished; `lost` is where it was.
   */
  on(event: 'restored', fn: (r: { stage: string; step: number; lost: { stage: string; step: number } }) => void): Unsubscribe;
  /**
   * Steps the stages, in turn with the engine's other work, until `opts.stage` has finished (default: the last
   * stage), or pause() or dispose(). Resolves with 'done' the stage that finished and its steps (at once when it
   * had already finished), else where it stopped. Resume: call run() again. A stage not of this kind is refused.
   */
  run(opts?: { stage?: RecipeStageName }): Promise<{ stopped: 'done' | 'paused' | 'disposed'; stage: RecipeStageName; step: number }>;
  /** Stops after the unit under way; resolves where it is. */
  pause(): Promise<{ stage: RecipeStageName; step: number }>;
  /** The held-out evaluation of the current stage's model now (no weight update). */
  evaluate(): Promise<{ stage: RecipeStageName; step: number; metrics: Record<string, number | null>; samples?: RecipeSample[] }>;
  /** Held-out samples of the current model (rlhf: the policy's completions; zeroshot after 'eval': its examples; else []). */
  samples(): Promise<RecipeSample[]>;
  /**
   * A stage's model as a safetensors checkpoint (default: the current stage's, as it is now): rlhf 'rm' is the
   * reward model (scalar head), 'ppo' the policy (value head); zeroshot 'pattern' / 'baseline' the two models.
   * Refused (invalid) for a stage not yet started or one without a model ('eval').
   */
  save(stage?: RecipeStageName): Promise<Uint8Array>;
  /**
   * icl only: the model's attention maps on held-out episode `opts.episode` (default 0, the evaluation's first: the
   * same for a seed) — the pretrained model once pretraining has ended, else the one training now. Refused
   * (invalid) for the other kinds and before pretraining has started; an episode past the evaluation's is a
   * 'config' error whose `field` is 'episode'; one that is not an integer ≥ 0 an 'invalid' naming opts.episode.
   */
  attention(opts?: { episode?: number }): Promise<RecipeAttention>;
  dispose(): Promise<boolean>;
}

type Unsubscribe = () => void;

export class Engine {
  static start(opts?: EngineOptions): Promise<Engine>;
  readonly info: EngineInfo;
  readonly limits: Limits;
  readonly runs: Run[];
  createRun(config: Config | string, opts?: RunOptions): Promise<Run>;
  loadRun(bytes: Uint8Array | ArrayBuffer, opts?: { corpus?: string; backend?: 'cpu' | 'webgpu' | 'auto' }): Promise<Run>;
  validate(config: Config | string): Promise<FullConfig>;
  /** `vocab`: an integer from 1 to 2^24, else an 'invalid' EngineError. */
  shapeFlow(config: Config | string, vocab: number, opts?: { backend?: 'cpu' | 'webgpu' | 'auto' }): Promise<ShapeFlow>;
  /** The special tokens of a run of this config, in vocabulary order after the characters ("[BOS]", "[S0]", …). */
  specialTokens(config: Config | string): Promise<string[]>;
  /** The memory budget configs are checked against from now on, in GiB ((0, 3.5], null: the default 2); survives a restart. Resolves the budget in force. */
  setMemoryBudget(gib: number | null): Promise<number>;
  /**
   * Attention's cost at length `t` on the CPU backend or WebGPU (one call per t, for progress); rejects with an
   * 'invalid' EngineError naming a bad t or spec value, a 'gpu' one without WebGPU.
   */
  attentionCost(t: number, opts?: { spec?: AttentionCostSpec; backend?: 'cpu' | 'webgpu' }): Promise<AttentionCostRow>;
  /** Only the core's checks of `t` and the spec (nothing runs). */
  attentionCost(t: number, opts: { spec?: AttentionCostSpec; backend?: 'cpu' | 'webgpu'; check: true }): Promise<true>;
  /** Forward FLOPs per token of the config's attention vs its FFN for T = 16 … 65536, and where attention's pass the FFN's. */
  attentionFlops(config: Config | string): Promise<{ rows: { t: number; attention: number; ffn: number }[]; crossover_t: number; ctx_len: number }>;
  /** The core's check of a text before it becomes a corpus; rejects with a 'data' EngineError. */
  checkText(text: string | Uint8Array | ArrayBuffer): Promise<TextStats>;
  /**
   * A recipe of issue 18 (docs/RECIPES.md) to run stage by stage. Rejects with an EngineError for bad options,
   * naming the option (`opts.task`, `knobs.beta`, `opts.from.checkpoints.rm`, …).
   */
  createRecipe(kind: RecipeKind, opts?: RecipeOptions): Promise<Recipe>;
  /** A kind's stages, knobs (with defaults) and shipped recipe file, without creating one. */
  recipeInfo(kind: RecipeKind): Promise<RecipeInfo>;
  readonly recipes: Recipe[];
  /** How often a training run's state is kept for recovery (opts.snapshotEveryMs). */
  readonly snapshotEveryMs: number;
  /** Resolves once a restart in progress (after a crash) has finished. */
  ready(): Promise<void>;
  /**
   * The engine restarted and every run is back at its last snapshot ('restored' on each run first). cause: 'error'
   * (a Rust panic; runId: the run it hit, if one), 'died' (the Worker ended: killed by the browser, e.g. out of
   * memory), 'stuck' (the watchdog: the Worker stopped answering). Calls pending at the time rejected (kind
   * 'runtime', with `restart`); a run that was training is paused: call train() again.
   */
  on(event: 'restart', fn: (e: { message: string; runId?: number; cause: 'error' | 'died' | 'stuck' }) => void): Unsubscribe;
  on(event: 'error', fn: (e: EngineError) => void): Unsubscribe;
  terminate(): void;
}

export class Run {
  readonly id: number;
  readonly config: FullConfig;
  readonly vocabSize: number;
  readonly paramCount: number;
  readonly tokensPerStep: number;
  readonly stepCount: number;
  /** What trains the run now. */
  readonly backend: 'webgpu' | 'wasm-threads' | 'wasm-single';
  /** With backend 'auto': what was chosen and why. */
  readonly backendChoice: { backend: 'cpu' | 'webgpu'; reason: string; ms?: { webgpu: number; cpu: number } } | null;
  readonly last: Progress | null;
  on(event: 'progress', fn: (p: Progress) => void): Unsubscribe;
  on(event: 'error', fn: (e: EngineError) => void): Unsubscribe;
  on(event: 'restored', fn: (e: { step: number }) => void): Unsubscribe;
  /** The engine's last-good-state checkpoint of this run (when training stops, after step(), and every snapshotEveryMs while it trains). */
  on(event: 'snapshot', fn: (e: { step: number; bytes: Uint8Array }) => void): Unsubscribe;
  train(opts?: { steps?: number }): Promise<{ step: number; stopped: 'done' | 'paused' | 'disposed' }>;
  pause(): Promise<{ step: number }>;
  step(): Promise<Progress>;
  evaluate(): Promise<{ train: number | null; val: number | null }>;
  /**
   * Val loss on sequences of `t` tokens, past ctx_len too; rejected for learned positions past ctx_len (model.position).
   * `mlm` (bert only): show the chosen positions by this rule instead of data.mlm_mask / data.mlm_random —
   * `{ mask: 0, random: 0 }` is the masked-LM loss on text with no [MASK] in it (what fine-tuning feeds).
   */
  evalAt(t: number, opts?: { mlm?: { mask: number; random: number } }): Promise<{ t: number; val: number | null }>;
  /** The first layer's position–position term before and after the projections; learned and sinusoidal positions only. */
  positionTerms(): Promise<PositionTerms>;
  /** `onText` gets the text sampled since its last call: every 4 tokens, sooner after 16 ms, and at the end. */
  /**
   * One continuation (as the object form with n = 1; opts.n other than 1 is refused). Resolves its text.
   */
  generate(prompt: string, opts?: SampleOptions, onText?: (piece: string) => void): Promise<string>;
  /**
   * N continuations over the paged KV cache, decoded together from a copy of the weights as they are now: the
   * engine takes their tokens in turns with the steps of training runs, so training goes on meanwhile. Resolves a
   * Generation (also when cancelled); rejects with an EngineError ('invalid' for a bad option or prompt, naming it).
   */
  generate(opts: GenerateOptions): Promise<Generation>;
  /** Stops this run's generations before their next token and frees their blocks; each resolves with `stopped: 'cancelled'`. Resolves how many stopped. */
  cancelGenerate(): Promise<number>;
  fillMask(text: string, opts?: { k?: number }): Promise<MaskFill[]>;
  decode(input: string, opts?: SampleOptions): Promise<{ output: string; answer: string | null }>;
  /** Denoising runs: a corrupted val example (drawn with `opts.seed`, default 0) and the model's greedy reconstruction; null for other tasks. */
  denoiseExample(opts?: { seed?: number }): Promise<DenoiseExample | null>;
  attention(text: string, opts?: { target?: string }): Promise<AttentionMaps>;
  shapes(): Promise<ShapeFlow>;
  /** What issuing the last WebGPU step cost (recorded once, replayed: 0 bind groups after the first step); null on the CPU. */
  gpuStats(): Promise<{ issue_ms: number; dispatches_per_step: number; bind_groups_per_step: number; param_writes_per_step: number; overlapped_steps: number } | null>;
  /** One training step in slow motion: the step this run would take next, stage by stage; the run is not advanced. */
  trace(): Promise<StepTrace>;
  save(): Promise<Uint8Array>;
  dispose(): Promise<boolean>;
}

/** A denoising example (T5 span corruption or BART text infilling) and what the model makes of it. */
export interface DenoiseExample {
  task: 'span_corruption' | 'text_infilling';
  /** The corrupted input, token by token (sentinels and [MASK] as written). */
  source: string[];
  /** Which source tokens are sentinels or [MASK]. */
  sourceSpecial: boolean[];
  /** The uncorrupted text. */
  truth: string;
  /** What the decoder is trained to produce: span corruption's "[S0] span [S1] span … [Sk]", infilling's text. */
  target: string[];
  targetSpecial: boolean[];
  /** The model's greedy output, token by token. */
  output: string[];
  outputSpecial: boolean[];
  /** The text the output gives back (span corruption: the source with the output's spans in place). */
  reconstruction: string;
  /** `reconstruction` token by token; which tokens the model wrote, and which of those differ from the truth (span
   * corruption: at the same offset of the same span; infilling: at the same position). */
  reconTokens: string[];
  reconFilled: boolean[];
  reconMiss: boolean[];
  /** [start, length] of each corrupted span in `truth`, in characters (length 0: an inserted [MASK]). */
  spans: [number, number][];
  /** Span corruption: hidden characters the model wrote at their offset in their span, over the hidden characters;
   * infilling: output characters equal to the truth at the same position, over the length of the truth. */
  charAccuracy: number;
}
