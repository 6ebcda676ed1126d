/**
 * The tensor work of one pipeline stage (or of a whole side network in the cached epochs), as
 * flat Float32Arrays in and out so that the actors that move rows over the bus never touch tfjs.
 *
 * Forward: backbone layers from..to in inference mode (nothing kept for backward), then the side
 * blocks. Kept per in-flight micro-batch: only what the side path's backward needs — the b_i its
 * side blocks read and a_{from-1}. Backward re-runs the (small) side forward under
 * tf.variableGrads with the upstream gradient as weights: sum(a_out * dL/da_out) has exactly the
 * vector-Jacobian product as its gradient, so no gradient ever reaches the backbone.
 *
 * Loss scaling makes placement irrelevant: the last stage scales each rank's summed token
 * cross-entropy by 1/(predicted tokens in the whole mini-batch), so adding every rank's and every
 * micro-batch's gradients gives the gradient of the mini-batch mean, however rows were split.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../model/types.ts';
import { withoutTape } from '../model/methods/inference.ts';
import type { SideNetwork } from '../model/methods/side-network.ts';
import { frozenHeadCrossEntropy, nextTokenTargets } from '../train/loss.ts';
import type { AdamW, StepReport } from '../train/optim.ts';

/** Rows of a micro-batch at this stage's input: token ids (first stage) or (b_{from-1}, a_{from-1}). */
export type StageInput =
  | { kind: 'ids'; ids: Int32Array }
  | { kind: 'hidden'; b: Float32Array; a: Float32Array }
  /** Cached epochs: every layer b_0..b_L of every row, from the activation cache. */
  | { kind: 'cached'; acts: Float32Array[] };

export interface StageForwardOutput {
  /** b_to (rows*T*d) and a_to (rows*T*r): what the next stage needs (empty on the last stage). */
  b: Float32Array;
  a: Float32Array;
  /** b_i this stage computed (layer index -> rows*T*d), for its device's activation cache. */
  computed: Map<number, Float32Array>;
}

/**
 * What a micro-batch's backward needs. The last stage also keeps `out`: a_L (rows*T, r) after the
 * forward, then h = b_L + up(a_L) (rows*T, d) and the head's gradient chunks `partial` while a
 * paced loss backward is under way (an abort frees them with the rest).
 */
interface Kept { acts: Map<number, tf.Tensor2D>; aIn: tf.Tensor2D | null; out: tf.Tensor2D | null; partial: tf.Tensor2D[]; rows: number }

/**
 * Rows of the frozen head's loss computed between two yields: whole sequences, about 512 rows
 * (frozenHeadCrossEntropy's own chunk). Smaller chunks only add per-chunk dispatch to a step;
 * this one is still short enough that the event loop it blocks keeps heartbeats well inside
 * LOST_AFTER_MS.
 */
const HEAD_CHUNK_ROWS = 512;

export class StageCompute {
  readonly first: boolean;
  readonly last: boolean;
  readonly width: { d: number; r: number };
  private readonly kept = new Map<number, Kept>();
  private grads = new Map<string, tf.Tensor>();
  /** Backbone layer calls so far (cached epochs must leave this at 0). */
  layerCalls = 0;

  /** `backbone` holds the stage's range (only the head range in the cached epochs); `side` the same span. */
  constructor(readonly backbone: Backbone, readonly side: SideNetwork, readonly seqLen: number) {
    this.first = side.span.hasDown0;
    this.last = side.span.hasUp;
    this.width = { d: backbone.config.dModel, r: side.shape.width };
  }

  /** Runs micro-batch `mb` forward on `rows` rows and keeps what its backward needs. */
  forward(mb: number, rows: number, input: StageInput): StageForwardOutput {
    const steps = this.forwardSteps(mb, rows, input);
    let r = steps.next();
    while (!r.done) r = steps.next();
    return r.value;
  }

  /**
   * The same forward, one backbone layer per iteration, so that a caller can yield to the event
   * loop between layers (a device's heartbeats must not wait for a whole stage).
   */
  *forwardSteps(mb: number, rows: number, input: StageInput): Generator<void, StageForwardOutput> {
    const { from, to } = this.side.span;
    const T = this.seqLen, { d, r } = this.width;
    const acts = new Map<number, tf.Tensor2D>();
    const computed = new Map<number, Float32Array>();
    let aIn: tf.Tensor2D | null = null;
    if (input.kind === 'cached') {
      if (!this.first || !this.last) throw new Error('stage compute: cached input needs the whole side network');
      input.acts.forEach((v, i) => acts.set(i, tf.tensor2d(v, [rows * T, d])));
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
        computed.set(i, h.dataSync() as Float32Array);
        yield;
      }
    }
    const aOut = tf.tidy(() => this.side.stageForward(Object.fromEntries(acts), aIn, T)); // a_to (rows*T, r)
    const out: StageForwardOutput = this.last
      ? { b: new Float32Array(0), a: new Float32Array(0), computed }
      : { b: acts.get(to)!.dataSync() as Float32Array, a: aOut.dataSync() as Float32Array, computed };
    if (!this.last) aOut.dispose();
    // Only what the side path reads is kept: b_0 (first stage), b_from..b_to and a_{from-1}; the
    // last stage also keeps a_L, from which the loss's gradient w.r.t. the head input is made.
    this.kept.set(mb, { acts, aIn, out: this.last ? aOut : null, partial: [], rows });
    return out;
  }

  /**
   * Last stage: loss of micro-batch `mb` and its backward, in steps a caller can yield between.
   * `ids`/`mask` are the rows' tokens (rows, T); `stepTokens` the predicted tokens of the whole
   * mini-batch. Returns this rank's share of the mini-batch mean loss and dL/da_{from-1} (null on
   * a first stage). The frozen final norm, head and cross-entropy run a few whole sequences at a
   * time (W1's head is most of a step's work), each giving the loss and dL/dh for its rows of
   * h = b_L + up(a_L); then one side backward from dL/dh. Rows never mix in the head, so the
   * chunking does not change any row's values.
   */
  *lossBackwardSteps(mb: number, ids: Int32Array, mask: Float32Array, stepTokens: number): Generator<void, { loss: number; gradIn: Float32Array | null }> {
    if (!this.last) throw new Error('stage compute: only the last stage computes the loss');
    const head = this.backbone.frozenHead();
    if (!head) throw new Error('stage compute: the backbone head must be frozen');
    const k = this.kept.get(mb);
    if (!k?.out) throw new Error(`stage compute: micro-batch ${mb} has no forward in flight`);
    const T = this.seqLen, d = this.width.d;
    const L = this.backbone.config.nLayers;
    const bL = k.acts.get(L)!;
    const { targets, weights } = nextTokenTargets(ids, mask, k.rows, T);
    const aL = k.out;
    const h = tf.tidy(() => this.side.output(bL, aL)); // (rows*T, d), no tape
    k.out = h;
    aL.dispose();
    const chunk = T * Math.max(1, Math.floor(HEAD_CHUNK_ROWS / T));
    const grads = k.partial;
    let loss = 0;
    for (let at = 0; at < k.rows * T; at += chunk) {
      const n = Math.min(chunk, k.rows * T - at);
      const w = weights.subarray(at, at + n);
      let count = 0;
      for (let i = 0; i < n; i++) count += w[i]!;
      if (count === 0) { grads.push(tf.zeros([n, d])); continue; }
      // frozenHeadCrossEntropy is the mean over the chunk's predicted tokens; scaled to its share of the mini-batch mean.
      const scale = count / Math.max(1, stepTokens);
      const { value, grad } = tf.tidy(() => tf.valueAndGrad((x: tf.Tensor) => tf.mul(frozenHeadCrossEntropy(this.backbone.finalNorm(x as tf.Tensor2D), head, targets.subarray(at, at + n), w), scale) as tf.Scalar)(tf.slice(h, [at, 0], [n, d])));
      loss += value.dataSync()[0]!;
      value.dispose();
      grads.push(grad as tf.Tensor2D);
      yield;
    }
    this.take(mb);
    h.dispose();
    const gH = grads.length === 1 ? grads[0]! : tf.concat(grads, 0); // dL/dh (rows*T, d)
    if (grads.length > 1) for (const g of grads) g.dispose();
    const { gradIn } = this.backward(k, () => tf.sum(tf.mul(this.side.output(bL, this.side.stageForward(Object.fromEntries(k.acts), k.aIn, T)), gH)) as tf.Scalar);
    gH.dispose();
    return { loss, gradIn };
  }

  /** Middle or first stage: backward of micro-batch `mb` given dL/da_to (rows*T*r). */
  backwardFrom(mb: number, gradOut: Float32Array): Float32Array | null {
    const k = this.take(mb);
    const g = tf.tensor2d(gradOut, [k.rows * this.seqLen, this.width.r]);
    const { gradIn } = this.backward(k, () => tf.sum(tf.mul(this.side.stageForward(Object.fromEntries(k.acts), k.aIn, this.seqLen), g)) as tf.Scalar);
    g.dispose();
    return gradIn;
  }

  private take(mb: number): Kept {
    const k = this.kept.get(mb);
    if (!k) throw new Error(`stage compute: micro-batch ${mb} has no forward in flight`);
    this.kept.delete(mb);
    return k;
  }

  private backward(k: Kept, f: () => tf.Scalar): { loss: number; gradIn: Float32Array | null } {
    const params = this.side.parameters();
    const aVar = k.aIn ? tf.variable(k.aIn, true, `stage-a-in-${Math.random().toString(36).slice(2)}`) : null;
    if (aVar) { k.aIn!.dispose(); k.aIn = aVar; }
    const list = [...params.values(), ...(aVar ? [aVar] : [])];
    const { value, grads } = tf.variableGrads(f, list);
    const loss = value.dataSync()[0]!;
    value.dispose();
    let gradIn: Float32Array | null = null;
    for (const [name, p] of params) {
      const g = grads[p.name];
      if (!g) continue;
      const prev = this.grads.get(name);
      this.grads.set(name, prev ? tf.tidy(() => tf.add(prev, g)) : tf.clone(g));
      prev?.dispose();
    }
    if (aVar) gradIn = grads[aVar.name]!.dataSync() as Float32Array;
    for (const g of Object.values(grads)) g.dispose();
    aVar?.dispose();
    for (const t of k.acts.values()) t.dispose();
    return { loss, gradIn };
  }

  /** Parameter names in the fixed order of the flat gradient vector (sorted). */
  names(): string[] { return [...this.side.parameters().keys()].sort(); }

  /** The gradients accumulated since the last `apply`, flattened in `names()` order (zeros if none). */
  flatGradients(): Float32Array {
    const params = this.side.parameters();
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

  /** Applies the reduced flat gradient with `optimizer` and clears the accumulator. */
  apply(flat: Float32Array, optimizer: AdamW): StepReport {
    const params = this.side.parameters();
    const grads = new Map<string, tf.Tensor>();
    let at = 0;
    for (const name of this.names()) {
      const p = params.get(name)!;
      grads.set(name, tf.tensor(flat.subarray(at, at + p.size), p.shape));
      at += p.size;
    }
    if (at !== flat.length) throw new Error(`stage compute: gradient has ${flat.length} values, parameters need ${at}`);
    const report = optimizer.apply(params, grads);
    for (const g of grads.values()) g.dispose();
    this.clear();
    return report;
  }

  /** Drops accumulated gradients and every in-flight micro-batch (an aborted step). */
  clear(): void {
    for (const g of this.grads.values()) g.dispose();
    this.grads.clear();
    for (const k of this.kept.values()) { for (const t of k.acts.values()) t.dispose(); k.aIn?.dispose(); k.out?.dispose(); for (const g of k.partial) g.dispose(); }
    this.kept.clear();
  }

  /** Parameter values by name (for checkpoints). */
  snapshot(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [name, p] of this.side.parameters()) out.set(name, p.dataSync() as Float32Array);
    return out;
  }

  /** Overwrites parameters from a snapshot (a resumed or redistributed side network). */
  load(values: Map<string, Float32Array>): void {
    for (const [name, p] of this.side.parameters()) {
      const v = values.get(name);
      if (!v) throw new Error(`stage compute: checkpoint lacks parameter '${name}'`);
      if (v.length !== p.size) throw new Error(`stage compute: parameter '${name}' has ${v.length} values, expected ${p.size}`);
      tf.tidy(() => p.assign(tf.tensor(v, p.shape)));
    }
  }
}

/** Bytes held by live tensors in this process now (for peak-memory reports). */
export function tensorBytes(): number {
  return tf.memory().numBytes;
}
