/**
 * The trainable part of a method whose gradient runs through the backbone (LoRA, serial adapters,
 * full fine-tuning), for the layers one pipeline stage holds. Parameter names and seeded values
 * are those of the whole-model method, so stages together hold exactly what the standalone
 * trainer trains.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone, LayerHooks } from '../types.ts';
import type { MethodName, MethodOptions } from './method.ts';
import { loraLayers } from './lora.ts';
import { serialLayers } from './serial.ts';

export type BackpropMethodName = Exclude<MethodName, 'parallel'>;

export interface StageMethod {
  readonly name: BackpropMethodName;
  /** Trainable variables by canonical name. */
  params: Map<string, tf.Variable>;
  hooks?: LayerHooks;
  /**
   * A tied embedding and LM head split over stages (full fine-tuning on a stage that lacks one of
   * the two ends): the (V, d) gradient every stage of the plan exchanges, and this stage's copy of
   * the weight (null on a middle stage), `transposed` when it is the head's (d, V) copy.
   */
  tied: { name: string | null; rows: number; cols: number; transposed: boolean } | null;
  /** Frees the method's own variables (full: the backbone's weights are freed with the backbone). */
  dispose(): void;
}

/** Builds method `name` over the layers `backbone` holds. */
export function stageMethod(name: BackpropMethodName, backbone: Backbone, options: MethodOptions, seed: number): StageMethod {
  const { range, config } = backbone;
  const layers = { from: range.from, to: range.to };
  if (name === 'full') {
    backbone.makeTrainable();
    const params = new Map<string, tf.Variable>();
    for (const [n, w] of backbone.weights()) if (w instanceof tf.Variable) params.set(n, w);
    const split = config.tiedHead && !(range.embed && range.head);
    const own = range.embed ? 'embed.tokens' : range.head ? 'head.weight' : null;
    const tied = split ? { name: own, rows: config.vocabSize, cols: config.dModel, transposed: own === 'head.weight' } : null;
    return { name, params, tied, dispose: () => params.clear() };
  }
  const parts = name === 'lora' ? loraLayers(config, layers, options, seed) : serialLayers(config, layers, options, seed);
  return {
    name,
    params: parts.params,
    hooks: parts.hooks,
    tied: null,
    dispose: () => {
      for (const v of parts.params.values()) v.dispose();
      parts.params.clear();
    },
  };
}
