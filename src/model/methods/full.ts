/**
 * Full fine-tuning: every weight the backbone holds becomes a trainable variable. The parameters
 * are the backbone's own weights under their canonical names, so they are freed with the backbone.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../types.ts';
import { backboneHidden, requireWholeBackbone, type FineTuneMethod } from './method.ts';

export class FullMethod implements FineTuneMethod {
  readonly name = 'full' as const;
  private readonly params = new Map<string, tf.Variable>();

  constructor(private readonly backbone: Backbone) {
    requireWholeBackbone(backbone, 'full');
    const trainable = new Set(backbone.makeTrainable());
    for (const [name, w] of backbone.weights()) {
      if (w instanceof tf.Variable && trainable.has(w)) this.params.set(name, w);
    }
    if (this.params.size !== trainable.size)
      throw new Error(`method full: ${trainable.size} trainable variables but ${this.params.size} named weights`);
  }

  parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  hidden(ids: tf.Tensor2D): tf.Tensor2D {
    return backboneHidden(this.backbone, ids);
  }

  /** The variables are the backbone's weights: backbone.dispose() frees them, so this only forgets them. */
  dispose(): void {
    this.params.clear();
  }
}
