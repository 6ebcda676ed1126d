/**
 * PAC's side network (parallel adapters) over a range of backbone layers.
 *
 *   a_0 = down_0(b_0);  a_i = SideBlock_i(a_{i-1} + down_i(b_i)), i = 1..L;  out = b_L + up(a_L)
 *
 * and the method applies the frozen final norm to `out`. `up` starts at zero, so at step 0 the
 * model is the base model exactly.
 *
 * Built for stages: a SideNetwork covers layers [from, to] only, with down_0 when it is the first
 * stage and `up` when it is the last. Parameter names are global (`side.down.<i>.weight`,
 * `side.blocks.<i>.<...>`, `side.up.weight`) and each parameter's values come from
 * (seed, name) or from backbone layer i's own weights, never from construction order — so the
 * union of the stages' parameters is exactly the whole network's.
 *
 * Where the process runs frozen forwards natively (src/model/engine.ts) and the blocks are GPT-2's,
 * the span's forward is one native graph and its backward another (src/native/side-graph.ts),
 * wrapped as a single custom-gradient op on the tfjs tape: the parameters stay tfjs variables, and
 * the gradients reaching them are the ones the tfjs ops compute, to rounding. `up` stays on tfjs.
 */
import * as tf from '@tensorflow/tfjs';
import { inputFrozenLinear, linear } from '../ops.ts';
import { backendName } from '../backend.ts';
import { fromHost2d, hostValues, keepHostCopy } from '../host.ts';
import { nativeSideFactory } from '../engine.ts';
import type { NativeSide } from '../../native/side.ts';
import type { Backbone, ModelConfig } from '../types.ts';
import { initVariable, type Init } from './init.ts';
import { prunedBlock } from './prune.ts';
import { sideBlockForward, sideBlockParameters, sideShape, type SideShape } from './side-block.ts';

/** The part of the side network a process holds. */
export interface SideSpan {
  /** First and last side block (1-based, inclusive), aligned with backbone layers. */
  from: number;
  to: number;
  /** Holds down_0 (the first stage: computes a_0 from b_0). Requires from = 1. */
  hasDown0: boolean;
  /** Holds `up` (the last stage: produces the output). Requires to = nLayers. */
  hasUp: boolean;
}

/** How the side network's parameters start. */
export interface SideInit {
  seed: number;
  /** k in r = dModel / k (default 8). */
  reduction?: number;
  /**
   * 'random' (default): seeded by (seed, name). 'prune': each block i is a structurally pruned
   * copy of backbone layer i (see prune.ts) and down_i selects the kept residual dimensions;
   * needs `backbone`, holding layers from..to.
   */
  sideInit?: 'prune' | 'random';
  backbone?: Backbone;
  /**
   * 'native': run on the native engine where the blocks have a graph (and it loads); 'tfjs': never.
   * Default: native when `backbone` was built for the native engine, else tfjs.
   */
  engine?: 'native' | 'tfjs';
}

/** Activations b_i by layer index: an array b_0..b_L or a record holding a stage's layers. */
export type Activations = { readonly [layer: number]: tf.Tensor2D | undefined };

export class SideNetwork {
  readonly shape: SideShape;
  private readonly params = new Map<string, tf.Variable>();
  private readonly native: NativeSide | null;

  constructor(
    readonly config: ModelConfig,
    readonly span: SideSpan,
    init: SideInit,
  ) {
    const { from, to, hasDown0, hasUp } = span;
    const L = config.nLayers;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to > L || from > to)
      throw new Error(`side network: span ${from}..${to} must lie within layers 1..${L}`);
    if (hasDown0 && from !== 1) throw new Error(`side network: down_0 belongs to the stage starting at layer 1, not ${from}`);
    if (hasUp && to !== L) throw new Error(`side network: up belongs to the stage ending at layer ${L}, not ${to}`);
    const sideInit = init.sideInit ?? 'random';
    if (sideInit === 'prune') {
      const r = init.backbone?.range;
      if (!r || r.from > from || r.to < to) throw new Error(`side network: sideInit 'prune' needs the backbone layers ${from}..${to}`);
    }
    this.shape = sideShape(config, init.reduction ?? 8);
    const d = config.dModel,
      r = this.shape.width;
    const add = (name: string, shape: number[], how: Init) => this.params.set(name, initVariable(init.seed, name, shape, how));
    const selection = (kept: number[]) => {
      const v = new Float32Array(d * r);
      kept.forEach((dim, j) => {
        v[dim * r + j] = 1;
      });
      return v;
    };

    for (let i = from; i <= to; i++) {
      const pruned = sideInit === 'prune' ? prunedBlock(init.backbone!, i, this.shape) : undefined;
      if (i === 1 && hasDown0)
        add('side.down.0.weight', [d, r], pruned ? { kind: 'values', values: selection(pruned.residual) } : { kind: 'kaiming', fanIn: d });
      add(`side.down.${i}.weight`, [d, r], pruned ? { kind: 'values', values: selection(pruned.residual) } : { kind: 'kaiming', fanIn: d });
      for (const p of sideBlockParameters(this.shape)) {
        const values = pruned?.values.get(p.suffix);
        add(`side.blocks.${i}.${p.suffix}`, p.shape, values ? { kind: 'values', values } : p.init);
      }
    }
    if (hasUp) add('side.up.weight', [r, d], { kind: 'zeros' });
    const engine = init.engine ?? (init.backbone?.nativeEngine ? 'native' : 'tfjs');
    this.native = engine === 'native' ? (nativeSideFactory(config, this.shape, backendName())?.(span) ?? null) : null;
    // The native graphs read every parameter each step: their updated values stay on the host.
    for (const p of this.native?.parameters ?? []) {
      const v = this.params.get(p.name);
      if (v) keepHostCopy(v);
    }
  }

  /** Which engine runs the span's forward and backward. */
  get engine(): 'native' | 'tfjs' {
    return this.native ? 'native' : 'tfjs';
  }

  /** Trainable parameters of this span, by canonical name. */
  parameters(): Map<string, tf.Variable> {
    return this.params;
  }

  private weight(name: string): tf.Tensor2D {
    const v = this.params.get(name);
    if (!v) throw new Error(`side network: ${name} is not held by span ${this.span.from}..${this.span.to}`);
    return v as tf.Tensor2D;
  }

  /**
   * Runs side blocks from..to. acts must hold b_i (N, d) for i = from..to, and b_0 when this span
   * holds down_0; aIn (N, r) is a_{from-1} from the previous stage (null when hasDown0).
   * Returns a_to (N, r).
   */
  stageForward(acts: Activations, aIn: tf.Tensor2D | null, seqLen: number): tf.Tensor2D {
    if (this.native) return this.nativeStageForward(this.native, acts, aIn, seqLen);
    const b = (i: number) => {
      const t = acts[i];
      if (!t) throw new Error(`side network: activation b_${i} missing for span ${this.span.from}..${this.span.to}`);
      return t;
    };
    let a: tf.Tensor2D;
    // b_i are backbone activations (frozen, often cached): the down projections train their
    // weights only, and no gradient is computed for b_i.
    if (this.span.hasDown0)
      a = inputFrozenLinear(b(0), this.weight('side.down.0.weight')); // (N, r)
    else if (aIn) a = aIn;
    else throw new Error(`side network: span ${this.span.from}..${this.span.to} needs a_${this.span.from - 1} from the previous stage`);
    for (let i = this.span.from; i <= this.span.to; i++) {
      const x = a.add(inputFrozenLinear(b(i), this.weight(`side.down.${i}.weight`))) as tf.Tensor2D; // (N, r)
      a = sideBlockForward(this.shape, (s) => this.params.get(`side.blocks.${i}.${s}`), x, seqLen); // (N, r)
    }
    return a;
  }

  /**
   * stageForward as one custom-gradient op: inputs are the parameters (and a_{from-1}), so the
   * tape hands their gradients back; the b_i are frozen data, saved for the backward graph (which
   * re-runs the forward: nothing of the native forward is held between the two).
   */
  private nativeStageForward(native: NativeSide, acts: Activations, aIn: tf.Tensor2D | null, seqLen: number): tf.Tensor2D {
    const { from, to, hasDown0 } = this.span;
    if (!hasDown0 && !aIn) throw new Error(`side network: span ${from}..${to} needs a_${from - 1} from the previous stage`);
    const layers = hasDown0 ? [0] : [];
    for (let i = from; i <= to; i++) layers.push(i);
    const bs = layers.map((i) => {
      const t = acts[i];
      if (!t) throw new Error(`side network: activation b_${i} missing for span ${from}..${to}`);
      return t;
    });
    const names = native.parameters.map((p) => p.name);
    const vars = names.map((n) => this.weight(n));
    const N = bs[0]!.shape[0],
      rows = N / seqLen,
      r = this.shape.width;
    const hostActs = (ts: readonly tf.Tensor[]) => new Map(layers.map((i, j) => [i, hostValues(ts[j]!)]));
    const op = tf.customGrad(((...args: unknown[]) => {
      const save = args.pop() as tf.GradSaveFunc;
      const ins = args as tf.Tensor[];
      save(bs);
      const params = new Map(names.map((n, j) => [n, hostValues(ins[j]!)]));
      const aHost = aIn ? hostValues(ins[names.length]!) : null;
      const a = native.forward({ acts: hostActs(bs), aIn: aHost, params, rows, seqLen });
      return {
        value: fromHost2d(a, [N, r]),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const back = native.backward({ acts: hostActs(saved), aIn: aHost, params, rows, seqLen }, dy.dataSync() as Float32Array);
          const grads = names.map((n, j) => tf.tensor(back.grads.get(n)!, ins[j]!.shape));
          return aIn ? [...grads, tf.tensor2d(back.gIn!, [N, r])] : grads;
        },
      };
    }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (...xs: tf.Tensor[]) => tf.Tensor2D;
    return op(...vars, ...(aIn ? [aIn] : []));
  }

  /** Last stage only: b_L (N, d) + up(a_L) -> (N, d), the input of the frozen final norm. */
  output(bL: tf.Tensor2D, aL: tf.Tensor2D): tf.Tensor2D {
    if (!this.span.hasUp) throw new Error(`side network: span ${this.span.from}..${this.span.to} does not hold up (not the last stage)`);
    return bL.add(linear(aL, this.weight('side.up.weight'))) as tf.Tensor2D; // (N, d)
  }

  dispose(): void {
    this.native?.dispose();
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
  }
}
