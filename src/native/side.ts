/**
 * PAC's side network on the native engine (src/native/side-graph.ts): a forward session and a
 * forward-and-backward session per span. The parameters stay tfjs variables (AdamW, checkpoints
 * and the all-reduce read them there); each run is fed their current values.
 */
import type { ModelConfig } from '../model/types.ts';
import type { SideShape } from '../model/methods/side-block.ts';
import type { SideSpan } from '../model/methods/side-network.ts';
import { causalMask } from './layers.ts';
import { NativeSession, nativeThreads } from './runtime.ts';
import { sideGraphModels } from './side-graph.ts';

type Feeds = Record<string, { data: Float32Array; dims: number[] }>;

/** One run of a span: b_i by layer (rows*T, d), a_{from-1} (null when the span starts the network), parameter values by name. */
export interface SpanInputs {
  acts: ReadonlyMap<number, Float32Array>;
  aIn: Float32Array | null;
  params: ReadonlyMap<string, Float32Array>;
  rows: number;
  seqLen: number;
}

export class NativeSide {
  private readonly fwd: NativeSession;
  private readonly bwd: NativeSession;
  /** The parameters the graphs take (every one of the span but `up`), in order. */
  readonly parameters: { name: string; shape: number[] }[];
  private readonly d: number;
  private readonly r: number;

  constructor(
    config: ModelConfig,
    shape: SideShape,
    private readonly span: SideSpan,
    threads = nativeThreads(),
  ) {
    const models = sideGraphModels(config, shape, span);
    this.parameters = models.parameters;
    this.d = config.dModel;
    this.r = shape.width;
    this.fwd = new NativeSession(models.forward, 0, threads);
    try {
      this.bwd = new NativeSession(models.backward, 0, threads);
    } catch (e) {
      this.fwd.dispose();
      throw e;
    }
  }

  private feeds({ acts, aIn, params, rows, seqLen }: SpanInputs): Feeds {
    const N = rows * seqLen;
    const feeds: Feeds = { mask: { data: causalMask(seqLen), dims: [seqLen, seqLen] } };
    const layers = this.span.hasDown0 ? [0] : [];
    for (let i = this.span.from; i <= this.span.to; i++) layers.push(i);
    for (const i of layers) {
      const b = acts.get(i);
      if (!b) throw new Error(`native side: activation b_${i} missing for span ${this.span.from}..${this.span.to}`);
      feeds[`b${i}`] = { data: b, dims: [N, this.d] };
    }
    if (!this.span.hasDown0) {
      if (!aIn) throw new Error(`native side: span ${this.span.from}..${this.span.to} needs a_${this.span.from - 1}`);
      feeds.a_in = { data: aIn, dims: [N, this.r] };
    }
    for (const p of this.parameters) {
      const v = params.get(p.name);
      if (!v) throw new Error(`native side: parameter ${p.name} missing`);
      feeds[p.name] = { data: v, dims: p.shape };
    }
    return feeds;
  }

  /** a_to (rows*T, r) of the span. */
  forward(inputs: SpanInputs): Float32Array {
    return this.fwd.run(this.feeds(inputs), ['a_out']).a_out!;
  }

  /** Gradients of every parameter but `up` (by canonical name) and dL/da_{from-1}, given dL/da_to. */
  backward(inputs: SpanInputs, gOut: Float32Array): { grads: Map<string, Float32Array>; gIn: Float32Array | null } {
    const feeds = this.feeds(inputs);
    feeds.g_out = { data: gOut, dims: [inputs.rows * inputs.seqLen, this.r] };
    const names = this.parameters.map((p) => `grad:${p.name}`);
    const out = this.bwd.run(feeds, this.span.hasDown0 ? names : [...names, 'g_in']);
    const grads = new Map(this.parameters.map((p) => [p.name, out[`grad:${p.name}`]!]));
    return { grads, gIn: this.span.hasDown0 ? null : out.g_in! };
  }

  dispose(): void {
    this.fwd.dispose();
    this.bwd.dispose();
  }
}
