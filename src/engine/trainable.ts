/**
 * What every stage rank's compute shares, whatever the method: gradients accumulated over a step's
 * micro-batches, flattened in one fixed order (sorted names) for the all-reduce, applied with
 * AdamW, and parameters as plain arrays for checkpoints and re-deployments. The runner and the
 * actors see a rank's compute only through `RankCompute`.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdamW, StepReport } from '../train/optim.ts';

/** Rows of a micro-batch at this stage's input: token ids (first stage) or (b_{from-1}, a_{from-1}). */
export type StageInput =
  | { kind: 'ids'; ids: Int32Array }
  | { kind: 'hidden'; b: Float32Array; a: Float32Array }
  /** Cached epochs (PAC): every layer b_0..b_L of every row, from the activation cache. */
  | { kind: 'cached'; acts: Float32Array[] };

export interface StageForwardOutput {
  /** b_to (rows*T*d) and a_to (rows*T*r): what the next stage needs (empty on the last stage). */
  b: Float32Array;
  a: Float32Array;
  /** b_i this stage computed (layer index -> rows*T*d), for its device's activation cache (PAC only). */
  computed: Map<number, Float32Array>;
}

/**
 * A weight whose value two stages hold (a tied embedding and LM head split over stages): both
 * copies must get the sum of both stages' gradients, so every stage of the plan takes part in
 * exchanging a (rows, cols) gradient. `name`: this stage's copy (null: it holds none);
 * `transposed`: the copy is the transpose of the exchanged layout.
 */
export interface TiedWeight {
  name: string | null;
  rows: number;
  cols: number;
  transposed: boolean;
}

/** A micro-batch's rows as the loss reads them: tokens and mask (rows, T), and class labels for labelled data. */
export interface LossRows {
  ids: Int32Array;
  mask: Float32Array;
  labels?: Int32Array;
}

/** A last stage's loss of one micro-batch: its share of the mini-batch mean, dL/d(input), rows classified right. */
export interface LossOutcome {
  loss: number;
  gradIn: Float32Array | null;
  /** Classification runs only. */
  correct?: number;
}

/** One stage rank's compute, as the runner drives it. */
export interface RankCompute {
  readonly first: boolean;
  readonly last: boolean;
  readonly seqLen: number;
  /** Values per token: d of b, r of a (0 when the method sends no side activations), g of a backward message. */
  readonly width: { d: number; r: number; g: number };
  /** The weight this stage shares with another stage, if any. */
  readonly tied: TiedWeight | null;
  /** Backbone layer calls so far. */
  layerCalls: number;
  forward(mb: number, rows: number, input: StageInput): StageForwardOutput;
  /** `stepTargets`: the mini-batch's targets (predicted tokens, or rows when classifying). */
  lossBackward(mb: number, rows: LossRows, stepTargets: number): LossOutcome;
  backwardFrom(mb: number, gradOut: Float32Array): Float32Array | null;
  parameters(): Map<string, tf.Variable>;
  names(): string[];
  flatGradients(): Float32Array;
  apply(flat: Float32Array, optimizer: AdamW, gradNorm?: number): StepReport;
  clear(): void;
  snapshot(): Map<string, Float32Array>;
  load(values: Map<string, Float32Array>): void;
}

/** Gradient accumulation, the flat vector, the update and snapshots over `parameters()`. */
export abstract class Trainable {
  private grads = new Map<string, tf.Tensor>();

  abstract parameters(): Map<string, tf.Variable>;

  /** Adds one micro-batch's gradients (by variable name, as tf.variableGrads returns them). */
  protected accumulate(grads: tf.NamedTensorMap): void {
    for (const [name, p] of this.parameters()) {
      const g = grads[p.name];
      if (!g) continue;
      const prev = this.grads.get(name);
      this.grads.set(name, prev ? tf.tidy(() => tf.add(prev, g)) : tf.clone(g));
      prev?.dispose();
    }
  }

  /** Parameter names in the fixed order of the flat gradient vector (sorted). */
  names(): string[] {
    return [...this.parameters().keys()].sort();
  }

  /** The gradients accumulated since the last `apply`, flattened in `names()` order (zeros if none). */
  flatGradients(): Float32Array {
    const params = this.parameters();
    const names = this.names();
    const out = new Float32Array(names.reduce((n, name) => n + params.get(name)!.size, 0));
    let at = 0;
    for (const name of names) {
      const g = this.grads.get(name);
      if (g) out.set(g.dataSync() as Float32Array, at);
      at += params.get(name)!.size;
    }
    return out;
  }

  /** Applies the reduced flat gradient with `optimizer` (clipping by `gradNorm` when given) and clears the accumulator. */
  apply(flat: Float32Array, optimizer: AdamW, gradNorm?: number): StepReport {
    const params = this.parameters();
    const grads = new Map<string, Float32Array>();
    let at = 0;
    for (const name of this.names()) {
      const p = params.get(name)!;
      grads.set(name, flat.subarray(at, at + p.size));
      at += p.size;
    }
    if (at !== flat.length) throw new Error(`stage compute: gradient has ${flat.length} values, parameters need ${at}`);
    const report = optimizer.applyArrays(params, grads, gradNorm);
    this.clearGrads();
    return report;
  }

  protected clearGrads(): void {
    for (const g of this.grads.values()) g.dispose();
    this.grads.clear();
  }

  /** Parameter values by name (for checkpoints). */
  snapshot(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [name, p] of this.parameters()) out.set(name, p.dataSync() as Float32Array);
    return out;
  }

  /** Overwrites parameters from a snapshot (a resumed or redistributed network). */
  load(values: Map<string, Float32Array>): void {
    for (const [name, p] of this.parameters()) {
      const v = values.get(name);
      if (!v) throw new Error(`stage compute: checkpoint lacks parameter '${name}'`);
      if (v.length !== p.size) throw new Error(`stage compute: parameter '${name}' has ${v.length} values, expected ${p.size}`);
      tf.tidy(() => p.assign(tf.tensor(v, p.shape)));
    }
  }
}

/** The micro-batches a stage has run forward and not yet backward, each with what its backward needs. */
export class InFlight<K> {
  private readonly kept = new Map<number, K>();

  keep(mb: number, k: K): void {
    this.kept.set(mb, k);
  }

  /** What micro-batch `mb`'s backward needs; it leaves the set. @throws Error when `mb` has no forward in flight. */
  take(mb: number): K {
    const k = this.kept.get(mb);
    if (!k) throw new Error(`stage compute: micro-batch ${mb} has no forward in flight`);
    this.kept.delete(mb);
    return k;
  }

  /** Every micro-batch still in flight (an aborted step); the set is empty after. */
  drain(): K[] {
    const all = [...this.kept.values()];
    this.kept.clear();
    return all;
  }
}
