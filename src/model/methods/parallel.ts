/**
 * PAC's parallel adapters as a fine-tuning method: the backbone runs in inference mode (no tape,
 * nothing kept for backward, no gradient), and only the side network trains.
 *
 *   hidden(ids) = finalNorm(b_L + up(a_L)),  b_0..b_L = backbone activations of ids
 *
 * The two halves are separate so that the activation cache can stand in for the backbone:
 * `hiddenFromActivations` needs only the side network and the frozen final norm.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../types.ts';
import { withoutTape } from './inference.ts';
import { requireWholeBackbone, withDefaults, type FineTuneMethod, type MethodOptions } from './method.ts';
import { SideNetwork, type Activations } from './side-network.ts';

export class ParallelMethod implements FineTuneMethod {
  readonly name = 'parallel' as const;
  readonly side: SideNetwork;
  private layerCalls = 0;

  constructor(
    private readonly backbone: Backbone,
    options: MethodOptions,
    seed: number,
  ) {
    requireWholeBackbone(backbone, 'parallel');
    const o = withDefaults(options);
    const L = backbone.config.nLayers;
    this.side = new SideNetwork(
      backbone.config,
      { from: 1, to: L, hasDown0: true, hasUp: true },
      { seed, reduction: o.reduction, sideInit: o.sideInit, backbone },
    );
  }

  /** Backbone layer calls so far (L per backboneActivations); the cache uses it to prove it skipped the backbone. */
  get backboneLayerCalls(): number {
    return this.layerCalls;
  }

  parameters(): Map<string, tf.Variable> {
    return this.side.parameters();
  }

  /**
   * b_0..b_L for ids (B, T), each (B*T, d), computed with the gradient tape off: even inside
   * tf.variableGrads nothing is recorded or kept for backward. The caller owns the tensors.
   */
  backboneActivations(ids: tf.Tensor2D): tf.Tensor2D[] {
    const seqLen = ids.shape[1];
    const L = this.backbone.config.nLayers;
    return withoutTape(() => {
      const acts: tf.Tensor2D[] = [this.backbone.embed(ids)]; // b_0 (B*T, d)
      for (let i = 1; i <= L; i++) {
        acts.push(tf.tidy(() => this.backbone.layer(i, acts[i - 1]!, seqLen))); // b_i (B*T, d)
        this.layerCalls++;
      }
      return acts;
    });
  }

  /** Final hidden (B*T, d) from b_0..b_L alone: side network + frozen final norm; no backbone layer runs. */
  hiddenFromActivations(acts: Activations, seqLen: number): tf.Tensor2D {
    const L = this.backbone.config.nLayers;
    const bL = acts[L];
    if (!bL) throw new Error(`parallel: activation b_${L} missing`);
    const aL = this.side.stageForward(acts, null, seqLen); // (B*T, r)
    return this.backbone.finalNorm(this.side.output(bL, aL)); // (B*T, d)
  }

  hidden(ids: tf.Tensor2D): tf.Tensor2D {
    return this.hiddenFromActivations(this.backboneActivations(ids), ids.shape[1]);
  }

  dispose(): void {
    this.side.dispose();
  }
}
