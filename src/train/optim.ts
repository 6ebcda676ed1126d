/**
 * AdamW (decoupled weight decay, bias-corrected moments), global-norm gradient clipping and a
 * learning-rate schedule (linear warm-up, then constant or cosine). Updates are applied in the
 * sorted order of parameter names, so a run is reproducible whatever order the method lists them.
 */
import * as tf from '@tensorflow/tfjs';

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
export interface StepReport { lr: number; gradNorm: number }

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

export class AdamW {
  private stepCount = 0;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();

  constructor(readonly options: AdamWOptions) {}

  get step(): number { return this.stepCount; }

  /**
   * Applies one update to `params` from `grads` (same names; a parameter without a gradient is
   * left untouched). Consumes nothing: the caller disposes `grads`.
   */
  apply(params: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>): StepReport {
    const o = this.options;
    const b1 = o.beta1 ?? 0.9, b2 = o.beta2 ?? 0.999, eps = o.eps ?? 1e-8, wd = o.weightDecay ?? 0;
    const names = [...grads.keys()].filter((n) => params.has(n)).sort();
    this.stepCount += 1;
    const t = this.stepCount;
    const lr = learningRate(o, t);
    const gradNorm = globalNorm(names.map((n) => grads.get(n)!));
    const clip = o.maxGradNorm && o.maxGradNorm > 0 && gradNorm > o.maxGradNorm ? o.maxGradNorm / (gradNorm + 1e-6) : 1;
    const c1 = 1 - b1 ** t, c2 = 1 - b2 ** t;
    for (const name of names) {
      const p = params.get(name)!;
      if (!this.m.has(name)) {
        this.m.set(name, tf.variable(tf.zerosLike(p), false));
        this.v.set(name, tf.variable(tf.zerosLike(p), false));
      }
      const m = this.m.get(name)!, v = this.v.get(name)!;
      tf.tidy(() => {
        const g = clip === 1 ? grads.get(name)! : tf.mul(grads.get(name)!, clip);
        const m1 = tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1));
        const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2));
        m.assign(m1);
        v.assign(v1);
        const update = tf.div(tf.div(m1, c1), tf.add(tf.sqrt(tf.div(v1, c2)), eps));
        const decayed = wd > 0 && p.rank >= 2 ? tf.mul(p, 1 - lr * wd) : p;
        p.assign(tf.sub(decayed, tf.mul(update, lr)));
      });
    }
    return { lr, gradNorm };
  }

  /** A copy of the state as typed arrays (for checkpoints). */
  state(): AdamWState {
    const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
    for (const [n, t] of this.m) m.set(n, t.dataSync() as Float32Array);
    for (const [n, t] of this.v) v.set(n, t.dataSync() as Float32Array);
    return { step: this.stepCount, m, v };
  }

  /** Restores a state saved by `state()`; shapes are taken from `params`. */
  load(state: AdamWState, params: Map<string, tf.Variable>): void {
    this.dispose();
    this.stepCount = state.step;
    for (const [name, data] of state.m) {
      const p = params.get(name);
      if (!p) throw new Error(`optimiser state names parameter '${name}' that the method does not have`);
      const vd = state.v.get(name);
      if (!vd || data.length !== p.size || vd.length !== p.size) throw new Error(`optimiser state for '${name}' does not match its shape [${p.shape}]`);
      this.m.set(name, tf.variable(tf.tensor(data, p.shape), false));
      this.v.set(name, tf.variable(tf.tensor(vd, p.shape), false));
    }
  }

  dispose(): void {
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}

/** L2 norm over all tensors together (summed in the given order). */
export function globalNorm(tensors: tf.Tensor[]): number {
  if (tensors.length === 0) return 0;
  const sq = tf.tidy(() => tf.addN(tensors.map((g) => tf.sum(tf.square(g)))));
  const value = Math.sqrt(sq.dataSync()[0]!);
  sq.dispose();
  return value;
}
