/**
 * The frozen layers of a backbone range on the native engine: one onnxruntime session per layer,
 * built from the loaded weights. Per layer rather than per stage because the side network reads
 * every b_i, and each session accepts any batch size and sequence length.
 */
import type { FrozenLayerEngine } from '../model/backbone.ts';
import type { BackboneRange, ModelConfig } from '../model/types.ts';
import type { WeightData } from '../model/weights.ts';
import { gpt2LayerModel, gpt2LayerWeightBytes, headLossModel } from './gpt2-graph.ts';
import { loadNativeRuntime, NativeSession, nativeRuntimeVersion, nativeThreads } from './runtime.ts';

/** Families whose layers have a native graph; the others run on tfjs. */
export function nativeFamilySupported(c: ModelConfig): boolean {
  return c.family === 'gpt2';
}

const masks = new Map<number, Float32Array>();

/** Additive causal mask (T, T) as ops.ts makes it: 0 on and below the diagonal, -1e9 above. */
export function causalMask(T: number): Float32Array {
  let m = masks.get(T);
  if (!m) {
    m = new Float32Array(T * T);
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = -1e9;
    masks.set(T, m);
  }
  return m;
}

export class NativeLayers implements FrozenLayerEngine {
  readonly detail: string;
  private readonly sessions = new Map<number, NativeSession>();

  constructor(
    private readonly config: ModelConfig,
    range: BackboneRange,
    weights: Map<string, WeightData>,
    threads = nativeThreads(),
  ) {
    if (!nativeFamilySupported(config)) throw new Error(`native engine: no native graph for the ${config.family} family`);
    const why = loadNativeRuntime();
    if (why) throw new Error(`native engine: ${why}`);
    this.detail = `native (onnxruntime-node ${nativeRuntimeVersion()}, ${threads} thread${threads === 1 ? '' : 's'})`;
    try {
      for (let i = range.from; i <= range.to; i++)
        this.sessions.set(i, new NativeSession(gpt2LayerModel(config, i, weights), gpt2LayerWeightBytes(config), threads));
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  layer(i: number, x: Float32Array, rows: number, seqLen: number): Float32Array {
    const s = this.sessions.get(i);
    if (!s) throw new Error(`native engine: layer ${i} is not held`);
    const d = this.config.dModel;
    return s.run(
      {
        x: { data: x, dims: [rows * seqLen, d] },
        mask: { data: causalMask(seqLen), dims: [seqLen, seqLen] },
      },
      ['y'],
    ).y!;
  }

  dispose(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
  }
}

/**
 * The frozen head's loss and gradient on the native engine (see headLossModel): per row, the
 * negative log-likelihood of its target and dL/dh scaled by the row's weight.
 */
export class NativeHead {
  private readonly session: NativeSession;

  constructor(w: WeightData, threads = nativeThreads()) {
    // The two products read the head in two orientations (h W and p W^T): prepacked, it would be
    // held twice. Unpacked it is held once, and packing its panels per call costs next to nothing
    // beside two (rows, V) products.
    this.session = new NativeSession(headLossModel(w), w.data.byteLength, threads, { prepack: false });
  }

  /** h (rows, d) row-major, targets (rows), scale (rows) -> nll (rows) and dh (rows, d). */
  lossGrad(h: Float32Array, rows: number, targets: Int32Array, scale: Float32Array): { nll: Float32Array; dh: Float32Array } {
    const d = h.length / rows;
    const out = this.session.run(
      {
        h: { data: h, dims: [rows, d] },
        t: { data: BigInt64Array.from(targets, (x) => BigInt(x)), dims: [rows] },
        scale: { data: scale, dims: [rows, 1] },
      },
      ['nll', 'dh'],
    );
    return { nll: out.nll!, dh: out.dh! };
  }

  dispose(): void {
    this.session.dispose();
  }
}
