/**
 * Analytic profiles: per-layer costs derived from FLOP and byte counts of a model shape on a
 * device spec, so anyone can plan for hardware they do not have.
 *
 * Derivation (per sample, T = seqLen tokens, d = dModel, f = dFF, h = heads, V = vocab, r = d/k
 * side width with k = sideReduction, f_s = f/k side FFN width, h_s = max(1, r/64) side heads;
 * a multiply-add is 2 FLOPs; an encoder-decoder runs its decoder over T tokens too, which is the
 * conservative sequence-to-sequence case):
 * - backbone encoder layer forward: 8Td^2 (q, k, v, o) + 4T^2 d (scores, weighted sum) + 4Tdf (MLP);
 *   a decoder layer adds cross-attention: +8Td^2 + 4T^2 d.
 * - side block forward: the same formulas at width r, f_s, plus the down-projection 2Tdr;
 *   side backward: 2x its forward (input and weight gradients), plus 2Tdr for the down-projection's
 *   weight gradient only (no gradient enters the backbone).
 * - head: final norm, frozen LM head over `headTokens` tokens (2 headTokens d V) and the side
 *   up-projection (2Trd); its backward carries the loss gradient through the frozen head to the
 *   side output (2 headTokens d V + 4Trd). Embedding: a table lookup (no FLOPs) and down_0 (2Tdr).
 * - time = FLOPs / (TFLOPS * efficiency) plus a fixed per-block launch overhead; the backbone's
 *   wide matmuls use `efficiency`, the side network's narrow ones `sideEfficiency`.
 * - bytes (bytesPerValue each): backbone weights 4d^2 + 2df per encoder layer (+4d^2 decoder);
 *   side training state = params x 4 (param, gradient, two AdamW moments); the side block keeps
 *   for backward its backbone input b_i (Td, for the down-projection's weight gradient), about
 *   8 width-r and 2 width-f_s vectors per token and one h_s x T x T attention map (twice in a
 *   decoder); the backbone's forward needs transient room for its MLP hidden, three width-d
 *   buffers and its attention maps. The head keeps its logits (headTokens x V) for backward.
 * - the device's usable memory is its memory minus `reserveBytes` (OS, CUDA context, runtime).
 */
import type { BlockCost, Profile } from './profile.ts';

export interface ModelShape {
  name: string;
  /** 0 for decoder-only models. */
  encoderLayers: number;
  decoderLayers: number;
  dModel: number;
  dFF: number;
  heads: number;
  vocab: number;
  seqLen: number;
  /** Tokens the LM head scores per sample (seqLen for language modelling). */
  headTokens: number;
  /** k: side width r = dModel / k. */
  sideReduction: number;
  /** 4 for fp32. */
  bytesPerValue: number;
  /** The fine-tuning method (default parallel: PAC's side network); see `backpropLayerCost`. */
  method?: MethodShape;
}

/** What the cost of a method whose gradient runs through the backbone depends on. */
export type MethodShape =
  | { kind: 'parallel' }
  /** `targets`: projections adapted per layer (each taken at width d x d). */
  | { kind: 'lora'; rank: number; targets: number }
  | { kind: 'serial'; bottleneck: number }
  | { kind: 'full' };

export interface DeviceSpec {
  name: string;
  /** Peak TFLOPS the vendor states. */
  tflops: number;
  memoryBytes: number;
  /** Memory unavailable to training: OS, CUDA context, runtime. */
  reserveBytes: number;
  mbps: number;
  latencyMs: number;
  /** Fraction of peak reached by the backbone's wide matmuls. */
  efficiency: number;
  /** Fraction of peak reached by the side network's narrow matmuls. */
  sideEfficiency: number;
  /** Fixed cost per block and pass (kernel launches, dispatch). */
  fixedMsPerBlock: number;
}

const GiB = 2 ** 30;

/** Model shapes of the paper's evaluation (Hugging Face configs of t5-base, facebook/bart-large, t5-large). */
export const modelPresets: Record<string, ModelShape> = {
  't5-base': {
    name: 't5-base',
    encoderLayers: 12,
    decoderLayers: 12,
    dModel: 768,
    dFF: 3072,
    heads: 12,
    vocab: 32128,
    seqLen: 128,
    headTokens: 128,
    sideReduction: 8,
    bytesPerValue: 4,
  },
  'bart-large': {
    name: 'bart-large',
    encoderLayers: 12,
    decoderLayers: 12,
    dModel: 1024,
    dFF: 4096,
    heads: 16,
    vocab: 50265,
    seqLen: 128,
    headTokens: 128,
    sideReduction: 8,
    bytesPerValue: 4,
  },
  't5-large': {
    name: 't5-large',
    encoderLayers: 24,
    decoderLayers: 24,
    dModel: 1024,
    dFF: 4096,
    heads: 16,
    vocab: 32128,
    seqLen: 128,
    headTokens: 128,
    sideReduction: 8,
    bytesPerValue: 4,
  },
};

/**
 * Device presets. jetson-nano: 0.47 TFLOPS (the paper's figure), 4 GiB shared CPU/GPU memory
 * of which 1 GiB is taken as reserved for the OS and CUDA context, 1000 Mbps Ethernet, 0.5 ms
 * per message; 40% of peak for wide matmuls and 10% for the side network's narrow ones, 0.2 ms
 * launch overhead per block and pass. These are assumptions, stated so they can be changed.
 */
export const devicePresets: Record<string, DeviceSpec> = {
  'jetson-nano': {
    name: 'nano',
    tflops: 0.47,
    memoryBytes: 4 * GiB,
    reserveBytes: 1 * GiB,
    mbps: 1000,
    latencyMs: 0.5,
    efficiency: 0.4,
    sideEfficiency: 0.1,
    fixedMsPerBlock: 0.2,
  },
};

interface Flops {
  fwd: number;
  bwd: number;
}

/** wide: FLOPs of backbone-width matmuls; narrow: FLOPs of side-width matmuls. */
function blockCost(spec: DeviceSpec, wide: Flops, narrow: Flops, bytes: Omit<BlockCost, 'fwd' | 'bwd'>): BlockCost {
  const ms = (f: number, eff: number) => (f * 1e3) / (spec.tflops * 1e12 * eff);
  return {
    fwd: { fixedMs: spec.fixedMsPerBlock, perSampleMs: ms(wide.fwd, spec.efficiency) + ms(narrow.fwd, spec.sideEfficiency) },
    bwd: { fixedMs: spec.fixedMsPerBlock, perSampleMs: ms(wide.bwd, spec.efficiency) + ms(narrow.bwd, spec.sideEfficiency) },
    ...bytes,
  };
}

/** One backbone layer and its side block, as a BlockCost on `spec`. */
function layerCost(model: ModelShape, spec: DeviceSpec, decoder: boolean, cached: boolean): BlockCost {
  if (model.method && model.method.kind !== 'parallel') return backpropLayerCost(model, model.method, spec, decoder);
  const { seqLen: T, dModel: d, dFF: f, heads: h, bytesPerValue: bv } = model;
  const r = d / model.sideReduction;
  const fs = f / model.sideReduction;
  const hs = Math.max(1, Math.round(r / 64));
  const x = decoder ? 2 : 1;
  const backbone = x * (8 * T * d * d + 4 * T * T * d) + 4 * T * d * f;
  const sideBlock = x * (8 * T * r * r + 4 * T * T * r) + 4 * T * r * fs;
  const down = 2 * T * d * r;
  const backboneParams = x * 4 * d * d + 2 * d * f;
  const sideParams = x * 4 * r * r + 2 * r * fs + d * r;
  // From the cache the backbone layer neither runs nor stays in memory: its output b_i is read.
  return blockCost(
    spec,
    { fwd: cached ? 0 : backbone, bwd: 0 },
    { fwd: sideBlock + down, bwd: 2 * sideBlock + down },
    {
      backboneBytes: cached ? 0 : backboneParams * bv,
      sideBytes: sideParams * 4 * bv,
      sideGradBytes: sideParams * bv,
      activationBytesPerSample: (T * (d + x * 8 * r + 2 * fs) + x * hs * T * T) * bv,
      workBytesPerSample: cached ? (T * (fs + 3 * r) + hs * T * T) * bv : (T * (f + 3 * d) + h * T * T) * bv,
    },
  );
}

/**
 * One backbone layer of a method whose gradient runs through the backbone (LoRA, serial adapters,
 * full fine-tuning), as the engine runs it (src/engine/backprop-compute.ts):
 * - forward: the layer (B) plus the adapter (LoRA: 4 T d r per target; serial: 2 adapters of
 *   4 T d m);
 * - backward: the input gradient through the layer (B) plus the forward again (a stage re-runs
 *   its forward on a tape when the gradient comes back; the last stage does not, so this
 *   overestimates it), plus the weight gradients (full: B more; adapters: 2x their forward);
 * - memory: trainable state x4 (parameter, gradient, two AdamW moments; full: the layer's
 *   weights, which then count once in backboneBytes and three times in sideBytes), and per
 *   sample kept for backward the layer's tape: T (8d + 3f) values and three h x T x T attention
 *   maps (fitted to the standalone trainer's measured W1 peaks: full, lora and serial within
 *   +3%), counted for every micro-batch in flight (the engine keeps only a stage's
 *   input per micro-batch and builds one micro-batch's tape at a time: an overestimate that
 *   keeps the planner from over-packing).
 */
function backpropLayerCost(
  model: ModelShape,
  m: Exclude<MethodShape, { kind: 'parallel' }>,
  spec: DeviceSpec,
  decoder: boolean,
): BlockCost {
  const { seqLen: T, dModel: d, dFF: f, heads: h, bytesPerValue: bv } = model;
  const x = decoder ? 2 : 1;
  const backbone = x * (8 * T * d * d + 4 * T * T * d) + 4 * T * d * f;
  const backboneParams = x * 4 * d * d + 2 * d * f;
  const adapter = m.kind === 'lora' ? 4 * T * d * m.rank * m.targets : m.kind === 'serial' ? 2 * 4 * T * d * m.bottleneck : 0;
  const adapterParams =
    m.kind === 'lora' ? 2 * d * m.rank * m.targets : m.kind === 'serial' ? 2 * (2 * d * m.bottleneck + m.bottleneck + d) : 0;
  const trainable = m.kind === 'full' ? backboneParams : adapterParams;
  const adapterActs = m.kind === 'lora' ? T * m.rank * m.targets : m.kind === 'serial' ? 4 * T * m.bottleneck : 0;
  return blockCost(
    spec,
    { fwd: backbone + adapter, bwd: (m.kind === 'full' ? 3 : 2) * backbone + 3 * adapter },
    { fwd: 0, bwd: 0 },
    {
      backboneBytes: backboneParams * bv,
      sideBytes: (m.kind === 'full' ? 3 : 4) * trainable * bv,
      sideGradBytes: trainable * bv,
      activationBytesPerSample: (x * (T * (8 * d + 3 * f) + 3 * h * T * T) + adapterActs) * bv,
      workBytesPerSample: (T * (f + 3 * d) + h * T * T) * bv,
    },
  );
}

/**
 * A profile for `count` identical devices named `<spec.name>-0..count-1` running `model`, with
 * per-layer costs derived as documented above. `training` fills the profile's batch and epoch size.
 * `cached`: the epochs after the first of parallel adapters, which train the side network from the
 * activation cache: no backbone layer runs or is held (the frozen head still runs, on the cached
 * b_L combined with the side output), no embedding table; one stage of every layer over all the
 * devices is then the cached phase's data parallelism (ring all-reduce of the side gradients).
 */
export function analyticProfile(
  model: ModelShape,
  spec: DeviceSpec,
  count: number,
  training?: { batchSize: number; samples: number },
  cached = false,
): Profile {
  if (cached && model.method && model.method.kind !== 'parallel')
    throw new RangeError(`only parallel adapters train from the activation cache, not ${model.method.kind}`);
  const { seqLen: T, dModel: d, vocab: V, headTokens: ht, bytesPerValue: bv } = model;
  const r = d / model.sideReduction;
  if (!Number.isInteger(r)) throw new RangeError(`dModel ${d} is not divisible by sideReduction ${model.sideReduction}`);
  const layers: BlockCost[] = [];
  for (let i = 0; i < model.encoderLayers + model.decoderLayers; i++)
    layers.push(layerCost(model, spec, i >= model.encoderLayers && model.encoderLayers > 0, cached));
  const m = model.method?.kind ?? 'parallel';
  const full = m === 'full';
  // Methods other than parallel: no side network at the ends; full trains the embedding and head.
  const embed =
    m !== 'parallel'
      ? blockCost(
          spec,
          { fwd: 0, bwd: 0 },
          { fwd: 0, bwd: 0 },
          {
            backboneBytes: V * d * bv,
            sideBytes: full ? 3 * V * d * bv : 0,
            sideGradBytes: full ? V * d * bv : 0,
            activationBytesPerSample: T * d * bv,
            workBytesPerSample: T * d * bv,
          },
        )
      : blockCost(
          spec,
          { fwd: 0, bwd: 0 },
          { fwd: 2 * T * d * r, bwd: 2 * T * d * r },
          {
            backboneBytes: cached ? 0 : V * d * bv,
            sideBytes: d * r * 4 * bv,
            sideGradBytes: d * r * bv,
            activationBytesPerSample: T * d * bv,
            workBytesPerSample: T * d * bv,
          },
        );
  const head =
    m !== 'parallel'
      ? blockCost(
          spec,
          { fwd: 2 * ht * d * V, bwd: (full ? 4 : 2) * ht * d * V },
          { fwd: 0, bwd: 0 },
          {
            backboneBytes: V * d * bv,
            sideBytes: full ? 3 * V * d * bv : 0,
            sideGradBytes: full ? V * d * bv : 0,
            activationBytesPerSample: ht * V * bv,
            workBytesPerSample: ht * V * bv,
          },
        )
      : blockCost(
          spec,
          { fwd: 2 * ht * d * V, bwd: 2 * ht * d * V },
          { fwd: 2 * T * r * d, bwd: 4 * T * r * d },
          {
            backboneBytes: V * d * bv,
            sideBytes: r * d * 4 * bv,
            sideGradBytes: r * d * bv,
            activationBytesPerSample: ht * V * bv,
            workBytesPerSample: ht * V * bv,
          },
        );
  const devices = Array.from({ length: count }, (_, i) => ({
    name: `${spec.name}-${i}`,
    memoryBytes: spec.memoryBytes - spec.reserveBytes,
    embed,
    head,
    layers,
  }));
  return {
    version: 1,
    model: {
      name: model.name,
      layers: layers.length,
      encoderLayers: model.encoderLayers,
      dModel: d,
      sideWidth: r,
      seqLen: T,
      bytesPerActivation: bv,
      ...(m !== 'parallel' ? { backprop: true } : {}),
    },
    ...(training ? { training } : {}),
    devices,
    links: { defaultMbps: spec.mbps, latencyMs: spec.latencyMs, pairs: [] },
  };
}
