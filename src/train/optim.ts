/**
 * AdamW (decoupled weight decay, bias-corrected moments), global-norm gradient clipping and a
 * learning-rate schedule (linear warm-up, then constant or cosine). Updates are applied in the
 * sorted order of parameter names, so a run is reproducible whatever order the method lists them.
 */
import type * as tf from '@tensorflow/tfjs';
import { assignFromHost, hostValues } from '../model/host.ts';

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay; applied only to matrices (rank >= 2), never to biases or norm gains. */
  weightDecay?: number;
  /** Clip the global L2 norm of all gradients to this value; 0 or undefined disables clipping. */
  maxGradNorm?: number;
  /** Steps of linear warm-up from lr/warmup to lr. */
  warmupSteps?: number;
  /** 'constant' after warm-up, or 'cosine' decay to 0 at `totalSteps`. */
  schedule?: 'constant' | 'cosine';
  totalSteps?: number;
}

/** Optimiser state as plain data: per-parameter first/second moments and the step count. */
export interface AdamWState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

/** What one `apply` did: the learning rate used and the gradient norm before clipping. */
export interface StepReport {
  lr: number;
  gradNorm: number;
}

/**
 * The options of a run of `epochs` epochs of `stepsPerEpoch` steps: a cosine schedule without
 * `totalSteps` decays to 0 at the run's last step, wherever the run trains.
 */
export function forRun(o: AdamWOptions, stepsPerEpoch: number, epochs: number): AdamWOptions {
  return { ...o, totalSteps: o.totalSteps ?? stepsPerEpoch * epochs };
}

/** Learning rate at 1-based step `step`. */
export function learningRate(o: AdamWOptions, step: number): number {
  const warm = o.warmupSteps ?? 0;
  if (warm > 0 && step <= warm) return (o.lr * step) / warm;
  if (o.schedule === 'cosine' && o.totalSteps && o.totalSteps > warm) {
    const p = Math.min(1, (step - warm) / (o.totalSteps - warm));
    return o.lr * 0.5 * (1 + Math.cos(Math.PI * p));
  }
  return o.lr;
}

/**
 * AdamW over plain typed arrays. The model is small next to its step (PAC's side network: many
 * small tensors), so as tfjs ops the update is a dozen elementwise kernels per parameter plus a
 * norm per tensor, mostly dispatch; one JS pass over the gradients costs far less. Moments live
 * in Float32Arrays (counted by `stateBytes`); parameters are read and written once per step.
 */
export class AdamW {
  private stepCount = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();

  constructor(readonly options: AdamWOptions) {}

  get step(): number {
    return this.stepCount;
  }

  /** Bytes of optimiser state (both moments), held outside the tensor heap. */
  stateBytes(): number {
    let n = 0;
    for (const a of this.m.values()) n += a.byteLength;
    for (const a of this.v.values()) n += a.byteLength;
    return n;
  }

  /**
   * Applies one update to `params` from `grads` (same names; a parameter without a gradient is
   * left untouched). Consumes nothing: the caller disposes `grads`. `gradNorm` is the norm to clip
   * by when these gradients are only part of the model's (a pipeline stage: the global norm over
   * every stage); default: the norm of `grads`.
   */
  apply(params: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>, gradNorm?: number): StepReport {
    const names = [...grads.keys()].filter((n) => params.has(n)).sort();
    return this.applyArrays(params, new Map(names.map((n) => [n, grads.get(n)!.dataSync() as Float32Array])), gradNorm);
  }

  /**
   * `apply` with gradients already in plain arrays (a reduced gradient off the wire): the same
   * update, without a round trip of every gradient through the tensor heap.
   */
  applyArrays(params: Map<string, tf.Variable>, grads: Map<string, Float32Array>, gradNorm?: number): StepReport {
    const names = [...grads.keys()].filter((n) => params.has(n)).sort();
    const gs = names.map((n) => grads.get(n)!);
    const state: AdamWState = { step: this.stepCount, m: this.m, v: this.v };
    const xs = names.map((n) => ({ data: hostValues(params.get(n)!), rank: params.get(n)!.rank }));
    const { outs, report } = adamwStep(this.options, state, names, xs, gs, gradNorm);
    this.stepCount = state.step;
    names.forEach((name, j) => assignFromHost(params.get(name)!, outs[j]!));
    return report;
  }

  /** A copy of the state as typed arrays (for checkpoints). */
  state(): AdamWState {
    const m = new Map<string, Float32Array>(),
      v = new Map<string, Float32Array>();
    for (const [n, a] of this.m) m.set(n, a.slice());
    for (const [n, a] of this.v) v.set(n, a.slice());
    return { step: this.stepCount, m, v };
  }

  /** Restores a state saved by `state()`; sizes are checked against `params`. */
  load(state: AdamWState, params: Map<string, tf.Variable>): void {
    this.dispose();
    this.stepCount = state.step;
    for (const [name, data] of state.m) {
      const p = params.get(name);
      if (!p) throw new Error(`optimiser state names parameter '${name}' that the method does not have`);
      const vd = state.v.get(name);
      if (!vd || data.length !== p.size || vd.length !== p.size)
        throw new Error(`optimiser state for '${name}' does not match its shape [${p.shape}]`);
      this.m.set(name, data.slice());
      this.v.set(name, vd.slice());
    }
  }

  dispose(): void {
    this.m.clear();
    this.v.clear();
  }
}

/**
 * One AdamW step over plain arrays: the single code path behind `AdamW.apply` and the
 * coordinator's replay of a device's update (src/engine/side-state.ts `replayStep`), so both round
 * identically. `names` are in update order (sorted), `xs[j]` the current values of `names[j]`
 * (its rank decides weight decay), `gs[j]` its gradient. Advances `state.step`, updates the
 * moments in place (creating zero moments for a parameter seen first) and returns new values,
 * or (`inPlace`) the values `xs` updated in place, which spares a copy of every parameter.
 * `gradNorm` overrides the norm clipping uses (see AdamW.apply).
 */
export function adamwStep(
  o: AdamWOptions,
  state: AdamWState,
  names: string[],
  xs: { data: Float32Array; rank: number }[],
  gs: Float32Array[],
  gradNorm = Math.sqrt(squaredNorm(gs)),
  inPlace = false,
): { outs: Float32Array[]; report: StepReport } {
  const b1 = o.beta1 ?? 0.9,
    b2 = o.beta2 ?? 0.999,
    eps = o.eps ?? 1e-8,
    wd = o.weightDecay ?? 0;
  state.step += 1;
  const t = state.step;
  const lr = learningRate(o, t);
  const clip = o.maxGradNorm && o.maxGradNorm > 0 && gradNorm > o.maxGradNorm ? o.maxGradNorm / (gradNorm + 1e-6) : 1;
  const c1 = 1 - b1 ** t,
    c2 = 1 - b2 ** t;
  const outs = names.map((name, j) => {
    const x = xs[j]!;
    let m = state.m.get(name),
      v = state.v.get(name);
    if (!m || !v) {
      m = new Float32Array(x.data.length);
      v = new Float32Array(x.data.length);
      state.m.set(name, m);
      state.v.set(name, v);
    }
    const out = inPlace ? x.data : new Float32Array(x.data.length);
    const decay = wd > 0 && x.rank >= 2 ? 1 - lr * wd : 1;
    adamwUpdate(out, x.data, gs[j]!, m, v, { clip, b1, b2, eps, c1, c2, lr, decay });
    return out;
  });
  return { outs, report: { lr, gradNorm } };
}

interface UpdateScalars {
  clip: number;
  b1: number;
  b2: number;
  eps: number;
  c1: number;
  c2: number;
  lr: number;
  decay: number;
}

/** out = x decay - lr m-hat / (sqrt(v-hat) + eps), updating the moments m, v in place from gradient g. */
function adamwUpdate(out: Float32Array, x: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, s: UpdateScalars): void {
  const { clip, b1, b2, eps, decay } = s;
  const a1 = (1 - b1) * clip,
    a2 = (1 - b2) * clip * clip,
    step = s.lr / s.c1,
    ic2 = 1 / s.c2;
  for (let i = 0; i < out.length; i++) {
    const gi = g[i]!;
    const mi = (m[i] = b1 * m[i]! + a1 * gi);
    const vi = (v[i] = b2 * v[i]! + a2 * gi * gi);
    out[i] = x[i]! * decay - (step * mi) / (Math.sqrt(vi * ic2) + eps);
  }
}

/** Sum of squares over all arrays together (summed in the given order, in double precision). */
export function squaredNorm(arrays: readonly Float32Array[]): number {
  let sq = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) sq += a[i]! * a[i]!;
  return sq;
}

/** Whether `o` clips gradients at all. */
export function clips(o: AdamWOptions): boolean {
  return (o.maxGradNorm ?? 0) > 0;
}
