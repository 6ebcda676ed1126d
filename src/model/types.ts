/**
 * The model vocabulary shared by every method, the trainer, the cache and the stage actors.
 *
 * Layer numbering follows the paper: b_0 is the embedding output, b_i (i = 1..L) the output of
 * backbone layer i. A stage holding layers [from, to] (1-based, inclusive) computes b_from..b_to
 * from b_{from-1}.
 */
import type * as tf from '@tensorflow/tfjs';

export type Family = 'gpt2' | 'llama';

/** Normalised architecture, mapped from a Hugging Face `config.json` or a built-in preset. */
export interface ModelConfig {
  family: Family;
  vocabSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
  /** Key/value heads (grouped-query attention); equals nHeads for GPT-2. */
  nKvHeads: number;
  headDim: number;
  /** Hidden width of the MLP. */
  dFF: number;
  /** Context length the model supports (n_positions / max_position_embeddings). */
  maxPositions: number;
  normEps: number;
  /** LM head shares the token embedding matrix. */
  tiedHead: boolean;
  /** q/k/v projections carry a bias (GPT-2, Qwen2). */
  qkvBias: boolean;
  /** Rotary base (Llama family); unused by GPT-2. */
  ropeTheta: number;
  activation: 'gelu_new' | 'silu';
  /** Token id used to pad/terminate generation, when known. */
  eosTokenId?: number;
}

/** Which parts of the backbone a process holds. A stage actor never holds more than its range. */
export interface BackboneRange {
  /** First and last backbone layer held (1-based, inclusive); from > to means no layer. */
  from: number;
  to: number;
  /** Holds the token (and position) embedding: needed to compute b_0. */
  embed: boolean;
  /** Holds the final norm and the LM head (a copy of the embedding when tied). */
  head: boolean;
}

/** Linear projections inside a block that methods may hook (LoRA targets, pruning sources). */
export type ProjectionName = 'query' | 'key' | 'value' | 'attn_out' | 'mlp_up' | 'mlp_gate' | 'mlp_down';

/**
 * Hooks a fine-tuning method installs into the backbone's forward pass. All tensors are 2-D
 * (N = B*T rows) so that matmuls stay on the fast path.
 */
export interface LayerHooks {
  /** After projection `name` of layer i: x (N, din) was the input, y (N, dout) the output. Returns the new output. */
  projection?(layer: number, name: ProjectionName, x: tf.Tensor2D, y: tf.Tensor2D): tf.Tensor2D;
  /** On the output of a sub-layer ('attn' or 'mlp') before the residual add: h (N, d). Returns the new output. */
  sublayer?(layer: number, which: 'attn' | 'mlp', h: tf.Tensor2D): tf.Tensor2D;
}

/**
 * The frozen LM head as losses use it: w (d, V), its transpose wT (V, d), made on first read and
 * kept, and, where the native engine holds the head, its fused loss and gradient (then wT is
 * never made).
 */
export interface FrozenHead {
  readonly w: tf.Tensor2D;
  readonly wT: tf.Tensor2D;
  readonly native?: NativeHeadEngine;
}

/** The head's cross-entropy and its gradient for `rows` rows of final hidden states, natively. */
export interface NativeHeadEngine {
  /** h (rows, d) row-major, targets (rows), scale (rows) -> nll (rows) = -log p(target), dh (rows, d) = scale (p W^T - W^T[target]). */
  lossGrad(h: Float32Array, rows: number, targets: Int32Array, scale: Float32Array): { nll: Float32Array; dh: Float32Array };
  dispose(): void;
}

/** A named weight of the backbone, as loaded (f32). */
export type WeightMap = Map<string, tf.Tensor>;

export interface Backbone {
  readonly config: ModelConfig;
  readonly range: BackboneRange;
  /** Stable hash of the architecture and weights; part of every activation-cache key. */
  readonly fingerprint: string;
  /**
   * The engine of this backbone's inference-mode layer forwards: `tfjs`, or the native engine's
   * description (src/native). Taped or hooked forwards always run on tfjs.
   */
  readonly engine: string;
  /**
   * Whether this backbone was built for the native engine (its layers or head run there): a side
   * network beside it runs natively too, where it can, so that one backbone means one engine.
   */
  readonly nativeEngine: boolean;
  /** b_0 = embedding of ids. ids: int32 (B, T) -> (B*T, d). */
  embed(ids: tf.Tensor2D): tf.Tensor2D;
  /** b_i = layer_i(b_{i-1}). h: (B*T, d) with T = seqLen -> (B*T, d). */
  layer(i: number, h: tf.Tensor2D, seqLen: number, hooks?: LayerHooks): tf.Tensor2D;
  /** Final norm: (N, d) -> (N, d). */
  finalNorm(h: tf.Tensor2D): tf.Tensor2D;
  /** Frozen LM head: (N, d) -> logits (N, V). */
  head(h: tf.Tensor2D): tf.Tensor2D;
  /**
   * The frozen head's weight w (d, V), as head() multiplies by it, and its transpose wT (V, d),
   * made once and kept while the head is held, for losses that fuse the head with its gradient
   * (plain matmuls both ways). Undefined once the head is trainable (makeTrainable).
   */
  frozenHead(): FrozenHead | undefined;
  /** The weights this process holds, by their canonical names (see weight naming in backbone docs). */
  weights(): WeightMap;
  /** Turns every held weight into a trainable tf.Variable (full fine-tuning). */
  makeTrainable(): tf.Variable[];
  /**
   * Frees the weights of the layers and the embedding; the final norm and the head stay. For a
   * frozen backbone whose activations come from a cache (PAC's cached epochs need only the final
   * norm and the head). A later embed() or layer() reloads the freed weights from the model's
   * source first (same values), so recomputing a lost cache entry still works. Throws after
   * makeTrainable (trained weights cannot be reloaded). Idempotent.
   */
  releaseLayers(): void;
  /** False while the layer and embedding weights are released. */
  readonly layersHeld: boolean;
  dispose(): void;
}
