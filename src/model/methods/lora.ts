/**
 * LoRA: y' = y + (alpha / r) * (x A) B on the target projections of every block.
 * A (din, r) is Kaiming-uniform (seeded per name), B (r, dout) is zero, so step 0 is the base model.
 * Parameters: `lora.<layer>.<projection>.A` and `lora.<layer>.<projection>.B`.
 */
import type * as tf from '@tensorflow/tfjs';
import { linear } from '../ops.ts';
import type { Backbone, LayerHooks, ModelConfig, ProjectionName } from '../types.ts';
import { initVariable } from './init.ts';
import { HookedMethod, withDefaults, type MethodOptions } from './method.ts';

/** (input, output) widths of a block projection. */
export function projectionShape(config: ModelConfig, name: ProjectionName): [number, number] {
  const q = config.nHeads * config.headDim;
  const kv = config.nKvHeads * config.headDim;
  switch (name) {
    case 'query':
      return [config.dModel, q];
    case 'key':
    case 'value':
      return [config.dModel, kv];
    case 'attn_out':
      return [q, config.dModel];
    case 'mlp_up':
    case 'mlp_gate':
      return [config.dModel, config.dFF];
    case 'mlp_down':
      return [config.dFF, config.dModel];
  }
}

/**
 * LoRA's parameters and hooks for layers from..to (a whole model, or one pipeline stage's
 * layers): the same names and seeded values whatever the range.
 */
export function loraLayers(
  config: ModelConfig,
  layers: { from: number; to: number },
  options: MethodOptions,
  seed: number,
): { params: Map<string, tf.Variable>; hooks: LayerHooks } {
  const { rank, alpha, targets } = withDefaults(options);
  if (targets.includes('mlp_gate') && config.family !== 'llama')
    throw new Error(`method lora: target mlp_gate exists only in the llama family, not ${config.family}`);
  const scale = alpha / rank;
  const params = new Map<string, tf.Variable>();
  for (let i = layers.from; i <= layers.to; i++) {
    for (const t of targets) {
      const [din, dout] = projectionShape(config, t);
      params.set(`lora.${i}.${t}.A`, initVariable(seed, `lora.${i}.${t}.A`, [din, rank], { kind: 'kaiming', fanIn: din }));
      params.set(`lora.${i}.${t}.B`, initVariable(seed, `lora.${i}.${t}.B`, [rank, dout], { kind: 'zeros' }));
    }
  }
  const hooks: LayerHooks = {
    projection: (layer, name, x, y) => {
      const a = params.get(`lora.${layer}.${name}.A`);
      if (!a) return y;
      const b = params.get(`lora.${layer}.${name}.B`)!;
      // Scaling the narrow (N, r) product costs r/dout of scaling y's update.
      const xa = linear(x, a as tf.Tensor2D).mul(scale) as tf.Tensor2D; // (N, r)
      return y.add(linear(xa, b as tf.Tensor2D)); // (N, dout)
    },
  };
  return { params, hooks };
}

export class LoraMethod extends HookedMethod {
  readonly name = 'lora' as const;
  protected readonly hooks: LayerHooks;

  constructor(backbone: Backbone, options: MethodOptions, seed: number) {
    super(backbone, 'lora');
    const parts = loraLayers(backbone.config, { from: 1, to: backbone.config.nLayers }, options, seed);
    for (const [n, v] of parts.params) this.params.set(n, v);
    this.hooks = parts.hooks;
  }
}
