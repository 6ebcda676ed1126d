/**
 * The one interface every fine-tuning method implements, and the options that size them.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Backbone, LayerHooks, ProjectionName } from '../types.ts';

export type MethodName = 'full' | 'lora' | 'serial' | 'parallel';

/** Sizes of the methods; each method reads only its own fields. Defaults are the W1 workload's. */
export interface MethodOptions {
  /** LoRA rank r (default 8). */
  rank?: number;
  /** LoRA alpha; the update is scaled by alpha / rank (default 16). */
  alpha?: number;
  /** LoRA target projections (default query and value). */
  targets?: ProjectionName[];
  /** Serial (Houlsby) adapter bottleneck width (default 64). */
  bottleneck?: number;
  /** Parallel side-network reduction k: side width r = dModel / k (default 8). */
  reduction?: number;
  /** Parallel side blocks start from pruned backbone weights or seeded random values (default 'prune'). */
  sideInit?: 'prune' | 'random';
}

/**
 * A fine-tuning method bound to one backbone. Contract:
 * - `parameters()` holds exactly the trainable variables, keyed by their canonical checkpoint
 *   names (stable across processes and runs with the same options and seed).
 * - `hidden(ids)` maps int32 ids (B, T) to the final hidden state after the final norm, (B*T, d),
 *   for the frozen LM head or a classification head. It is meant to be called inside
 *   tf.variableGrads / tf.tidy, which own the intermediate tensors.
 * - At step 0 (fresh parameters) `hidden` equals the base model's final hidden state, except for
 *   `full`, which is the base model itself.
 * - `dispose()` frees the method's own variables (never the backbone's, except for `full`, whose
 *   trainable variables are the backbone's weights and are freed with the backbone).
 */
export interface FineTuneMethod {
  readonly name: MethodName;
  parameters(): Map<string, tf.Variable>;
  hidden(ids: tf.Tensor2D): tf.Tensor2D;
  dispose(): void;
}

/** Resolved options with every default applied. */
export function withDefaults(o: MethodOptions = {}): Required<MethodOptions> {
  return {
    rank: o.rank ?? 8,
    alpha: o.alpha ?? 16,
    targets: o.targets ?? ['query', 'value'],
    bottleneck: o.bottleneck ?? 64,
    reduction: o.reduction ?? 8,
    sideInit: o.sideInit ?? 'prune',
  };
}

/** Methods train a whole model: the backbone must hold every layer, the embedding and the head. */
export function requireWholeBackbone(backbone: Backbone, method: MethodName): void {
  const { range, config } = backbone;
  if (!range.embed || !range.head || range.from !== 1 || range.to !== config.nLayers) {
    throw new Error(
      `method ${method}: needs the whole backbone (layers 1..${config.nLayers}, embedding, head), got layers ${range.from}..${range.to}, embed ${range.embed}, head ${range.head}`,
    );
  }
}

/** Runs the whole backbone on ids with optional hooks: (B, T) -> final hidden (B*T, d). */
export function backboneHidden(backbone: Backbone, ids: tf.Tensor2D, hooks?: LayerHooks): tf.Tensor2D {
  const seqLen = ids.shape[1];
  let h = backbone.embed(ids); // (B*T, d)
  for (let i = 1; i <= backbone.config.nLayers; i++) h = backbone.layer(i, h, seqLen, hooks); // (B*T, d)
  return backbone.finalNorm(h);
}

/**
 * A method whose trainable variables act through hooks in the backbone's forward pass (LoRA,
 * serial adapters). Subclasses fill `params` and set `hooks` in their constructor.
 */
export abstract class HookedMethod implements FineTuneMethod {
  abstract readonly name: MethodName;
  protected readonly params = new Map<string, tf.Variable>();
  protected abstract readonly hooks: LayerHooks;

  constructor(
    protected readonly backbone: Backbone,
    method: MethodName,
  ) {
    requireWholeBackbone(backbone, method);
  }

  parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  hidden(ids: tf.Tensor2D): tf.Tensor2D {
    return backboneHidden(this.backbone, ids, this.hooks);
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
  }
}
