/**
 * The tensor work of one pipeline stage (or of a whole side network in the cached epochs), as
 * flat Float32Arrays in and out so that the actors that move rows over the bus never touch tfjs.
 *
 * Forward: backbone layers from..to in inference mode (nothing kept for backward), then, on all
 * but the last stage, the side blocks whose a_to the next stage needs. Kept per in-flight
 * micro-batch: only what the side path's backward needs — the b_i its side blocks read and
 * a_{from-1}. The last stage runs its side forward, the loss and the side backward on one tape.
 * Other stages re-run the (small) side forward under a tape with the upstream gradient as weights:
 * sum(a_out * dL/da_out) has exactly the vector-Jacobian product as its gradient. Either way no
 * gradient ever reaches the backbone.
 *
 * Loss scaling makes placement irrelevant (see stage-loss.ts): adding every rank's and every
 * micro-batch's gradients gives the gradient of the mini-batch mean, however rows were split.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../model/types.ts';
import { withoutTape } from '../model/methods/inference.ts';
import type { SideNetwork } from '../model/methods/side-network.ts';
import type { ClassificationHead } from '../model/methods/heads.ts';
import { stageLoss } from './stage-loss.ts';
import { leanVariableGrads } from '../train/grads.ts';
import { fromHost2d, hostValues } from '../model/host.ts';
import {
  InFlight,
  Trainable,
  type LossOutcome,
  type LossRows,
  type RankCompute,
  type StageForwardOutput,
  type StageInput,
} from './trainable.ts';

export type { StageForwardOutput, StageInput } from './trainable.ts';

/** What a micro-batch's backward needs: the b_i its side blocks read and a_{from-1} (null on a first stage). */
interface Kept {
  acts: Map<number, tf.Tensor2D>;
  aIn: tf.Tensor2D | null;
  rows: number;
}

export class StageCompute extends Trainable implements RankCompute {
  readonly first: boolean;
  readonly last: boolean;
  readonly width: { d: number; r: number; g: number };
  readonly tied = null;
  private readonly kept = new InFlight<Kept>();
  /** Backbone layer calls so far (cached epochs must leave this at 0). */
  layerCalls = 0;

  private readonly params: Map<string, tf.Variable>;

  /**
   * `backbone` holds the stage's range (only the head range in the cached epochs); `side` the same
   * span; `head` (last stage, labelled data) the classification head the loss goes through.
   */
  constructor(
    readonly backbone: Backbone,
    readonly side: SideNetwork,
    readonly seqLen: number,
    readonly head: ClassificationHead | null = null,
  ) {
    super();
    this.first = side.span.hasDown0;
    this.last = side.span.hasUp;
    if (head && !this.last) throw new Error('stage compute: only the last stage holds the classification head');
    this.width = { d: backbone.config.dModel, r: side.shape.width, g: side.shape.width };
    this.params = new Map([...side.parameters(), ...(head?.parameters() ?? [])]);
  }

  parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  /**
   * Runs micro-batch `mb` forward on `rows` rows and keeps what its backward needs. The last stage
   * stops at the backbone: its side forward runs in `lossBackward`, on the same tape as the loss.
   */
  forward(mb: number, rows: number, input: StageInput): StageForwardOutput {
    const { from, to } = this.side.span;
    const T = this.seqLen,
      { d, r } = this.width;
    const acts = new Map<number, tf.Tensor2D>();
    const computed = new Map<number, Float32Array>();
    let aIn: tf.Tensor2D | null = null;
    if (input.kind === 'cached') {
      if (!this.first || !this.last) throw new Error('stage compute: cached input needs the whole side network');
      input.acts.forEach((v, i) => acts.set(i, fromHost2d(v, [rows * T, d])));
    } else {
      let h: tf.Tensor2D;
      if (input.kind === 'ids') {
        if (!this.first) throw new Error(`stage compute: stage starting at layer ${from} gets hidden states, not ids`);
        h = withoutTape(() => tf.tidy(() => this.backbone.embed(tf.tensor2d(input.ids, [rows, T], 'int32')))); // b_0 (rows*T, d)
        acts.set(0, h);
        computed.set(0, h.dataSync() as Float32Array);
      } else {
        h = tf.tensor2d(input.b, [rows * T, d]); // b_{from-1}
        aIn = tf.tensor2d(input.a, [rows * T, r]); // a_{from-1}
      }
      for (let i = from; i <= to; i++) {
        const prev = h;
        h = withoutTape(() => tf.tidy(() => this.backbone.layer(i, prev, T))); // b_i (rows*T, d)
        this.layerCalls++;
        if (input.kind === 'hidden' && i === from) prev.dispose();
        acts.set(i, h);
        computed.set(i, hostValues(h));
      }
    }
    // Only what the side path reads is kept: b_0 (first stage), b_from..b_to and a_{from-1}.
    this.kept.keep(mb, { acts, aIn, rows });
    if (this.last) return { b: new Float32Array(0), a: new Float32Array(0), computed };
    const aOut = tf.tidy(() => this.side.stageForward(Object.fromEntries(acts), aIn, T)); // a_to (rows*T, r)
    const out = { b: hostValues(acts.get(to)!), a: hostValues(aOut), computed };
    aOut.dispose();
    return out;
  }

  /**
   * Last stage: loss of micro-batch `mb` and its backward, on one tape: side forward,
   * h = b_L + up(a_L), the frozen final norm and the loss (stage-loss.ts: the LM head's
   * cross-entropy, fused with its gradient so the (rows*T, V) logits are made a few rows at a time,
   * or the classification head's), then the side backward. `rows` are the micro-batch's tokens
   * (rows, T) and labels; `stepTargets` the targets of the whole mini-batch. Returns this rank's
   * share of the mini-batch mean loss and dL/da_{from-1} (null on a first stage).
   */
  lossBackward(mb: number, rows: LossRows, stepTargets: number): LossOutcome {
    if (!this.last) throw new Error('stage compute: only the last stage computes the loss');
    const k = this.kept.take(mb);
    const T = this.seqLen,
      bL = k.acts.get(this.backbone.config.nLayers)!;
    const out: { correct?: number } = {};
    const res = this.backward(k, () => {
      const h = this.side.output(bL, this.side.stageForward(Object.fromEntries(k.acts), k.aIn, T)); // (rows*T, d)
      return stageLoss(this.backbone, this.head, this.backbone.finalNorm(h), rows, k.rows, T, stepTargets, out);
    });
    return { ...res, ...out };
  }

  /** Middle or first stage: backward of micro-batch `mb` given dL/da_to (rows*T*r). */
  backwardFrom(mb: number, gradOut: Float32Array): Float32Array | null {
    const k = this.kept.take(mb);
    const g = tf.tensor2d(gradOut, [k.rows * this.seqLen, this.width.r]);
    try {
      return this.backward(k, () => tf.sum(tf.mul(this.side.stageForward(Object.fromEntries(k.acts), k.aIn, this.seqLen), g)) as tf.Scalar)
        .gradIn;
    } finally {
      g.dispose();
    }
  }

  private backward(k: Kept, f: () => tf.Scalar): { loss: number; gradIn: Float32Array | null } {
    const params = this.params;
    const aVar = k.aIn ? tf.variable(k.aIn, true, `stage-a-in-${Math.random().toString(36).slice(2)}`) : null;
    if (aVar) {
      k.aIn!.dispose();
      k.aIn = aVar;
    }
    try {
      const { value, grads } = leanVariableGrads(f, [...params.values(), ...(aVar ? [aVar] : [])]);
      const loss = value.dataSync()[0]!;
      value.dispose();
      this.accumulate(grads);
      const gradIn = aVar ? (grads[aVar.name]!.dataSync() as Float32Array) : null;
      for (const g of Object.values(grads)) g.dispose();
      return { loss, gradIn };
    } finally {
      // The micro-batch has left `kept`: its tensors are freed here whether or not backward succeeded.
      k.aIn?.dispose();
      for (const t of k.acts.values()) t.dispose();
    }
  }

  /** Drops accumulated gradients and every in-flight micro-batch (an aborted step). */
  clear(): void {
    this.clearGrads();
    for (const k of this.kept.drain()) {
      for (const t of k.acts.values()) t.dispose();
      k.aIn?.dispose();
    }
  }
}

/** Bytes held by live tensors in this process now (for peak-memory reports). */
export function tensorBytes(): number {
  return tf.memory().numBytes;
}
