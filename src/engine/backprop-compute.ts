/**
 * A pipeline stage of a method whose gradient runs through the backbone (LoRA, serial adapters,
 * full fine-tuning): backbone layers from..to with the method's hooks, the embedding on the first
 * stage, final norm, head and loss on the last.
 *
 * Stages exchange full-width tensors: forward b_to (rows*T*d), backward dL/db_{from-1}. tfjs
 * cannot keep a tape open between two calls, so a stage that must send its output before its
 * backward (every stage but the last) runs its forward without a tape, keeps only its input, and
 * re-runs the forward on a tape when the gradient comes back (activation recomputation: one more
 * forward of its layers; in memory, a micro-batch in flight costs its input only). The last stage
 * runs forward, loss and backward on one tape, as the standalone trainer does. The loss is scaled
 * as in stage-loss.ts, so placement never changes the summed gradient.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../model/types.ts';
import { withoutTape } from '../model/methods/inference.ts';
import type { StageMethod } from '../model/methods/stage-method.ts';
import type { ClassificationHead } from '../model/methods/heads.ts';
import { stageLoss } from './stage-loss.ts';
import { leanVariableGrads } from '../train/grads.ts';
import {
  InFlight,
  Trainable,
  type LossOutcome,
  type LossRows,
  type RankCompute,
  type StageForwardOutput,
  type StageInput,
  type TiedWeight,
} from './trainable.ts';

/** A micro-batch in flight: the stage's input (ids on a first stage, b_{from-1} otherwise). */
interface Kept {
  input: tf.Tensor2D;
  rows: number;
}

const none = new Float32Array(0);

export class BackpropCompute extends Trainable implements RankCompute {
  readonly first: boolean;
  readonly last: boolean;
  readonly width: { d: number; r: number; g: number };
  readonly tied: TiedWeight | null;
  layerCalls = 0;
  private readonly kept = new InFlight<Kept>();

  private readonly params: Map<string, tf.Variable>;

  /** `head` (last stage, labelled data): the classification head the loss goes through. */
  constructor(
    readonly backbone: Backbone,
    readonly method: StageMethod,
    readonly seqLen: number,
    readonly head: ClassificationHead | null = null,
  ) {
    super();
    this.first = backbone.range.embed;
    this.last = backbone.range.head;
    if (head && !this.last) throw new Error('stage compute: only the last stage holds the classification head');
    const d = backbone.config.dModel;
    this.width = { d, r: 0, g: d };
    this.tied = method.tied;
    this.params = new Map([...method.params, ...(head?.parameters() ?? [])]);
  }

  parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  /** The stage's layers on its input: ids (rows, T) or b_{from-1} (rows*T, d) -> b_to (rows*T, d). */
  private run(input: tf.Tensor2D): tf.Tensor2D {
    const { from, to } = this.backbone.range;
    let h = this.first ? this.backbone.embed(input) : input; // (rows*T, d)
    for (let i = from; i <= to; i++) {
      h = this.backbone.layer(i, h, this.seqLen, this.method.hooks); // (rows*T, d)
      this.layerCalls++;
    }
    return h;
  }

  forward(mb: number, rows: number, input: StageInput): StageForwardOutput {
    const T = this.seqLen,
      { d } = this.width;
    let x: tf.Tensor2D;
    if (input.kind === 'ids') {
      if (!this.first) throw new Error(`stage compute: stage starting at layer ${this.backbone.range.from} gets hidden states, not ids`);
      x = tf.tensor2d(input.ids, [rows, T], 'int32');
    } else if (input.kind === 'hidden') {
      x = tf.tensor2d(input.b, [rows * T, d]);
    } else {
      throw new Error(`stage compute: method ${this.method.name} has no activation cache`);
    }
    this.kept.keep(mb, { input: x, rows });
    if (this.last) return { b: none, a: none, computed: new Map() };
    const out = withoutTape(() => tf.tidy(() => this.run(x)));
    const b = out.dataSync() as Float32Array;
    out.dispose();
    return { b, a: none, computed: new Map() };
  }

  lossBackward(mb: number, rows: LossRows, stepTargets: number): LossOutcome {
    if (!this.last) throw new Error('stage compute: only the last stage computes the loss');
    const k = this.kept.take(mb);
    const out: { correct?: number } = {};
    const res = this.backward(k, (x) =>
      stageLoss(this.backbone, this.head, this.backbone.finalNorm(this.run(x)), rows, k.rows, this.seqLen, stepTargets, out),
    );
    return { ...res, ...out };
  }

  backwardFrom(mb: number, gradOut: Float32Array): Float32Array | null {
    const k = this.kept.take(mb);
    const g = tf.tensor2d(gradOut, [k.rows * this.seqLen, this.width.d]);
    try {
      return this.backward(k, (x) => tf.sum(tf.mul(this.run(x), g)) as tf.Scalar).gradIn;
    } finally {
      g.dispose();
    }
  }

  /** Runs `f` on the kept input under a tape: the parameters' gradients accumulate, dL/d(input) is returned (null on a first stage). */
  private backward(k: Kept, f: (x: tf.Tensor2D) => tf.Scalar): { loss: number; gradIn: Float32Array | null } {
    const xVar = this.first ? null : tf.variable(k.input, true, `stage-b-in-${Math.random().toString(36).slice(2)}`);
    try {
      const x = xVar ?? k.input;
      const { value, grads } = leanVariableGrads(() => f(x as tf.Tensor2D), [...this.params.values(), ...(xVar ? [xVar] : [])]);
      const loss = value.dataSync()[0]!;
      value.dispose();
      this.accumulate(grads);
      const gradIn = xVar ? (grads[xVar.name]!.dataSync() as Float32Array) : null;
      for (const g of Object.values(grads)) g.dispose();
      return { loss, gradIn };
    } finally {
      xVar?.dispose();
      k.input.dispose();
    }
  }

  clear(): void {
    this.clearGrads();
    for (const k of this.kept.drain()) k.input.dispose();
  }
}
