/**
 * The transformer backbone of both families: pre-norm blocks of attention and MLP over 2-D
 * activations (B*T, d). GPT-2: LayerNorm, learned positions, GELU MLP, biases everywhere.
 * Llama family: RMSNorm, rotary embeddings (HF convention), SwiGLU MLP, grouped-query attention,
 * optional q/k/v bias. Weights are held in the canonical fast layout of weights.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { applyRotary, causalAttention, frozenLinear, geluNew, layerNorm, linear, rmsNorm, silu } from './ops.ts';
import type { Backbone, BackboneRange, FrozenHead, LayerHooks, ModelConfig, NativeHeadEngine, ProjectionName, WeightMap } from './types.ts';
import type { WeightData } from './weights.ts';
import { engineInternals } from './tfjs-internals.ts';
import { fromHost2d, hostValues } from './host.ts';

/**
 * A native forward of frozen layers (src/native): in inference mode it takes over layer() from
 * tfjs. It holds its own copy of the layer weights, so the tfjs copy is not made while it runs.
 */
export interface FrozenLayerEngine {
  /** What results report, e.g. `native (onnxruntime-node 1.30.0, 1 thread)`. */
  readonly detail: string;
  /** b_i from b_{i-1}: x (rows*T, d) row-major -> (rows*T, d). */
  layer(i: number, x: Float32Array, rows: number, seqLen: number): Float32Array;
  dispose(): void;
}

/** Builds the native engine of a range's layers from their weights (only `layers.*` are passed). */
export type FrozenLayerEngineFactory = (weights: Map<string, WeightData>) => FrozenLayerEngine;

const isLayerWeight = (name: string) => name.startsWith('layers.');

/** True while a gradient tape records ops (inside tf.grads/variableGrads and not under withoutTape). */
function tapeRecording(): boolean {
  const s = engineInternals();
  return s.activeTape != null && s.kernelDepth === 0;
}

export class TransformerBackbone implements Backbone {
  private held = new Map<string, tf.Tensor>();
  private trainable: tf.Variable[] | undefined;
  /** True once a trainable tied head reads the embedding variable instead of a copy. */
  private headFromEmbed = false;

  /** Names freed by releaseLayers, reloaded on first use. */
  private released = new Set<string>();

  /** The native forward of the held layers, while one is attached and the layers are held. */
  private native: FrozenLayerEngine | undefined;
  /** Layer weights whose tfjs copy was never made (the native engine holds them); made on first tfjs use. */
  private nativeOnly = new Set<string>();
  /** Set once a layer ran on tfjs (hooks or a tape): its layer weights then stay in tfjs. */
  private tfjsLayerRan = false;

  /**
   * `reload` returns the same weights again (from the model directory or the preset's seed); it
   * lets releaseLayers free layer weights that a later call may still need. Without it,
   * releaseLayers keeps everything.
   */
  constructor(
    readonly config: ModelConfig,
    readonly range: BackboneRange,
    weights: Map<string, WeightData>,
    readonly fingerprint: string,
    private readonly reload?: () => Map<string, WeightData>,
    private readonly nativeFactory?: FrozenLayerEngineFactory,
    private readonly nativeHeadFactory?: (w: WeightData) => NativeHeadEngine,
  ) {
    if (nativeFactory && range.from <= range.to) this.native = nativeFactory(layerWeights(weights));
    for (const [name, w] of weights) {
      // Without a way to reload them, the tfjs copy is made now: a later hooked or taped call needs it.
      if (this.native && reload && isLayerWeight(name)) this.nativeOnly.add(name);
      else this.held.set(name, tf.keep(tf.tensor(w.data, w.shape, 'float32')));
    }
  }

  get nativeEngine(): boolean {
    return this.nativeFactory !== undefined || this.nativeHeadFactory !== undefined;
  }

  /** Which engine runs the frozen layers' inference forward: the native one's detail, or `tfjs`. */
  get engine(): string {
    return this.nativeFactory && this.range.from <= this.range.to && !this.trainable
      ? (this.native?.detail ?? 'native (layers released)')
      : 'tfjs';
  }

  get layersHeld(): boolean {
    return this.released.size === 0;
  }

  releaseLayers(): void {
    if (this.trainable) throw new Error('backbone: releaseLayers on a trainable backbone (full fine-tuning) would lose trained weights');
    if (!this.reload) return;
    this.native?.dispose();
    this.native = undefined;
    for (const name of this.nativeOnly) this.released.add(name);
    this.nativeOnly.clear();
    for (const [name, t] of this.held) {
      if (name.startsWith('final_norm.') || name.startsWith('head.')) continue;
      t.dispose();
      this.held.delete(name);
      this.released.add(name);
    }
  }

  /**
   * Makes the tfjs copies of `names` again from the model's source. With a native engine attached,
   * a tfjs call that needs no layer weight (embed, the head) reloads only the others: the layers
   * stay native-only.
   */
  private restoreLayers(names: Set<string>, needed: string): void {
    const weights = this.reload!();
    const keepNative = this.nativeFactory !== undefined && !this.trainable && !isLayerWeight(needed);
    for (const name of [...names]) {
      if (keepNative && isLayerWeight(name)) continue;
      const w = weights.get(name);
      if (!w) throw new Error(`backbone: reloading released weight ${name} failed: the model source no longer has it`);
      this.held.set(name, tf.keep(tf.tensor(w.data, w.shape, 'float32')));
      names.delete(name);
    }
  }

  private w(name: string): tf.Tensor {
    if (this.released.has(name)) this.restoreLayers(this.released, name);
    if (this.nativeOnly.has(name)) this.restoreLayers(this.nativeOnly, name);
    const t = this.held.get(name);
    if (!t)
      throw new Error(
        `backbone: weight ${name} is not held by this process (range layers ${this.range.from}..${this.range.to}, embed ${this.range.embed}, head ${this.range.head})`,
      );
    return t;
  }

  private maybe(name: string): tf.Tensor | undefined {
    return this.held.get(name);
  }

  private norm(x: tf.Tensor2D, name: string): tf.Tensor2D {
    const g = this.w(`${name}.weight`) as tf.Tensor1D;
    if (this.config.family === 'gpt2') return layerNorm(x, g, this.w(`${name}.bias`) as tf.Tensor1D, this.config.normEps);
    return rmsNorm(x, g, this.config.normEps);
  }

  private linear(x: tf.Tensor2D, name: string): tf.Tensor2D {
    const w = this.w(`${name}.weight`) as tf.Tensor2D;
    const b = this.maybe(`${name}.bias`) as tf.Tensor1D | undefined;
    return this.trainable ? linear(x, w, b) : frozenLinear(x, w, b);
  }

  /** b_0: token embedding (+ learned positions for GPT-2). ids int32 (B, T) -> (B*T, d). */
  embed(ids: tf.Tensor2D): tf.Tensor2D {
    const [B, T] = ids.shape;
    const d = this.config.dModel;
    if (T > this.config.maxPositions)
      throw new Error(`backbone: sequence length ${T} exceeds the model's context ${this.config.maxPositions}`);
    return tf.tidy(() => {
      const tok = tf.gather(this.w('embed.tokens'), tf.reshape(ids, [B * T])) as tf.Tensor2D; // (B*T, d)
      if (this.config.family !== 'gpt2') return tok;
      const pos = tf.slice(this.w('embed.positions'), [0, 0], [T, d]); // (T, d)
      return tf.reshape(tf.add(tf.reshape(tok, [B, T, d]), pos), [B * T, d]) as tf.Tensor2D;
    });
  }

  /**
   * b_i = layer_i(b_{i-1}), h (B*T, d) -> (B*T, d). Runs inside tf.tidy: a hook that keeps a
   * tensor beyond the call must tf.keep it. Without makeTrainable the weights are frozen (only h
   * gets a gradient).
   */
  layer(i: number, h: tf.Tensor2D, seqLen: number, hooks?: LayerHooks): tf.Tensor2D {
    if (i < this.range.from || i > this.range.to)
      throw new Error(`backbone: layer ${i} is outside the held range ${this.range.from}..${this.range.to}`);
    if (this.nativeFactory && !hooks && !this.trainable && !tapeRecording()) return this.nativeLayer(i, h, seqLen);
    this.tfjsLayerRan = true;
    const c = this.config;
    const p = `layers.${i}`;
    return tf.tidy(() => {
      const proj = (name: ProjectionName, x: tf.Tensor2D) => {
        const y = this.linear(x, `${p}.${name}`);
        return hooks?.projection ? hooks.projection(i, name, x, y) : y;
      };
      const a = this.norm(h, `${p}.attn_norm`); // (N, d)
      let q = proj('query', a); // (N, H*hd)
      let k = proj('key', a); // (N, Hkv*hd)
      const v = proj('value', a); // (N, Hkv*hd)
      if (c.family === 'llama') {
        q = applyRotary(q, seqLen, c.nHeads, c.headDim, c.ropeTheta);
        k = applyRotary(k, seqLen, c.nKvHeads, c.headDim, c.ropeTheta);
      }
      const att = causalAttention(q, k, v, seqLen, c.nHeads, c.nKvHeads, c.headDim); // (N, H*hd)
      let o = proj('attn_out', att); // (N, d)
      if (hooks?.sublayer) o = hooks.sublayer(i, 'attn', o);
      const h1 = tf.add(h, o) as tf.Tensor2D; // (N, d)
      const m = this.norm(h1, `${p}.mlp_norm`);
      const u =
        c.family === 'gpt2'
          ? geluNew(proj('mlp_up', m)) // (N, dFF)
          : (tf.mul(silu(proj('mlp_gate', m)), proj('mlp_up', m)) as tf.Tensor2D);
      let down = proj('mlp_down', u); // (N, d)
      if (hooks?.sublayer) down = hooks.sublayer(i, 'mlp', down);
      return tf.add(h1, down) as tf.Tensor2D;
    });
  }

  /** Inference-mode layer on the native engine (rebuilt from the model's source after releaseLayers). */
  private nativeLayer(i: number, h: tf.Tensor2D, seqLen: number): tf.Tensor2D {
    if (!this.native) {
      this.native = this.nativeFactory!(layerWeights(this.reload!()));
      // The tfjs copies of released layers stay released: only a tfjs call needing them reloads them.
      for (const name of this.released) if (isLayerWeight(name)) this.nativeOnly.add(name);
      for (const name of this.nativeOnly) this.released.delete(name);
    }
    // Layer weights read through weights() (the side network's pruned init reads them once) are
    // dropped again while no layer has run on tfjs: the native engine holds them.
    if (this.reload && !this.tfjsLayerRan)
      for (const [name, t] of this.held)
        if (isLayerWeight(name)) {
          t.dispose();
          this.held.delete(name);
          this.nativeOnly.add(name);
        }
    const [n, d] = h.shape;
    return fromHost2d(this.native.layer(i, hostValues(h), n / seqLen, seqLen), [n, d]);
  }

  finalNorm(h: tf.Tensor2D): tf.Tensor2D {
    return this.norm(h, 'final_norm');
  }

  /** Logits (N, V) = h (N, d) @ head (d, V); a trainable tied head reads the embedding. */
  head(h: tf.Tensor2D): tf.Tensor2D {
    if (this.headFromEmbed) return tf.tidy(() => linear(h, tf.transpose(this.w('embed.tokens')) as tf.Tensor2D));
    return this.linear(h, 'head');
  }

  private headT: tf.Tensor2D | undefined;
  private nativeHead: NativeHeadEngine | undefined;

  frozenHead(): FrozenHead | undefined {
    if (this.trainable) return undefined;
    const w = this.w('head.weight') as tf.Tensor2D; // (d, V)
    if (this.nativeHeadFactory) this.nativeHead ??= this.nativeHeadFactory({ data: w.dataSync() as Float32Array, shape: w.shape });
    // The transposed copy is made only for a loss that reads it (the tfjs path), then kept.
    const transposed = () => (this.headT ??= tf.keep(tf.transpose(w)) as tf.Tensor2D); // (V, d)
    return {
      w,
      get wT() {
        return transposed();
      },
      ...(this.nativeHead ? { native: this.nativeHead } : {}),
    };
  }

  /**
   * Canonical name -> tensor of every held weight (variables after makeTrainable). A trainable
   * tied head has no `head.weight` entry: it is `embed.tokens`. With a native engine, the layer
   * weights are made in tfjs for this call and dropped again at the next native layer call
   * unless a layer has run on tfjs by then: read them at once, do not keep them.
   */
  weights(): WeightMap {
    const first = [...this.nativeOnly][0];
    if (first !== undefined) this.restoreLayers(this.nativeOnly, first);
    return new Map(this.held);
  }

  /**
   * Turns every held weight into a trainable tf.Variable (idempotent). With a tied head and both
   * ends held, the head copy is dropped and the head reads the embedding variable, so the tie
   * survives training as in Hugging Face.
   */
  makeTrainable(): tf.Variable[] {
    if (this.trainable) return this.trainable;
    // Trained weights leave the frozen native copy behind: the tfjs copies take over for good.
    const first = [...this.nativeOnly][0];
    if (first !== undefined) this.restoreLayers(this.nativeOnly, first);
    this.native?.dispose();
    this.native = undefined;
    this.headT?.dispose();
    this.headT = undefined;
    this.nativeHead?.dispose();
    this.nativeHead = undefined;
    if (this.config.tiedHead && this.range.embed && this.range.head) {
      this.held.get('head.weight')?.dispose();
      this.held.delete('head.weight');
      this.headFromEmbed = true;
    }
    const vars: tf.Variable[] = [];
    for (const [name, t] of this.held) {
      const v = tf.variable(t, true);
      t.dispose();
      this.held.set(name, v);
      vars.push(v);
    }
    this.trainable = vars;
    return vars;
  }

  dispose(): void {
    for (const t of this.held.values()) t.dispose();
    this.held.clear();
    this.released.clear();
    this.nativeOnly.clear();
    this.native?.dispose();
    this.native = undefined;
    this.headT?.dispose();
    this.headT = undefined;
    this.nativeHead?.dispose();
    this.nativeHead = undefined;
  }
}

function layerWeights(weights: Map<string, WeightData>): Map<string, WeightData> {
  return new Map([...weights].filter(([name]) => isLayerWeight(name)));
}

/** Full forward: ids int32 (B, T) -> logits (B*T, V). Needs a backbone holding everything. */
export function forwardLogits(bb: Backbone, ids: tf.Tensor2D, hooks?: LayerHooks): tf.Tensor2D {
  return tf.tidy(() => {
    const T = ids.shape[1];
    let h = bb.embed(ids); // (B*T, d)
    for (let i = bb.range.from; i <= bb.range.to; i++) h = bb.layer(i, h, T, hooks);
    return bb.head(bb.finalNorm(h)); // (B*T, V)
  });
}

/** The full range of a config: every layer, embedding and head. */
export function fullRange(c: ModelConfig): BackboneRange {
  return { from: 1, to: c.nLayers, embed: true, head: true };
}
