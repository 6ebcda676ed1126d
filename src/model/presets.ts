/**
 * Built-in presets with seeded random weights (GPT-2 style init: N(0, 0.02), residual
 * projections N(0, 0.02/sqrt(2L)), norms at 1, biases at 0). Each weight's values come from its
 * own stream seeded by (seed, weight name), so a stage holding layers 3..4 gets exactly the
 * weights the full model has there, run after run.
 */
import type { BackboneRange, ModelConfig } from './types.ts';
import { transpose2d, weightSpecs, type WeightData } from './weights.ts';

export type PresetName = 'tiny' | 'tiny-llama' | 'w1';

const gpt2Base = { family: 'gpt2', qkvBias: true, ropeTheta: 10000, activation: 'gelu_new', normEps: 1e-5, tiedHead: true } as const;

export const presets: Record<PresetName, ModelConfig> = {
  /** Fast tests: GPT-2 architecture, 2 layers, width 64. */
  tiny: { ...gpt2Base, vocabSize: 256, dModel: 64, nLayers: 2, nHeads: 4, nKvHeads: 4, headDim: 16, dFF: 256, maxPositions: 32 },
  /** Fast tests of the Llama path: GQA (4 query heads over 2 key/value heads), untied head. */
  'tiny-llama': {
    family: 'llama',
    qkvBias: false,
    ropeTheta: 10000,
    activation: 'silu',
    normEps: 1e-6,
    tiedHead: false,
    vocabSize: 256,
    dModel: 64,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 16,
    dFF: 176,
    maxPositions: 32,
  },
  /** W1, the reference workload: GPT-2 architecture, 8 layers, width 512, vocab 8192, context 128. */
  w1: { ...gpt2Base, vocabSize: 8192, dModel: 512, nLayers: 8, nHeads: 8, nKvHeads: 8, headDim: 64, dFF: 2048, maxPositions: 128 },
};

export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(presets, name);
}

/** FNV-1a of a string, 32-bit. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: a small, fast, deterministic 32-bit generator; returns uniforms in [0, 1). */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n samples of N(0, std) from the stream seeded by (seed, name), Box-Muller. */
export function seededNormal(seed: number, name: string, n: number, std: number): Float32Array {
  const u = seededUniform(hash32(`${seed}:${name}`));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u())) * std,
      th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** The seeded weights of `range` for a preset config, canonical names and layout. */
export function presetWeights(c: ModelConfig, range: BackboneRange, seed: number): Map<string, WeightData> {
  const out = new Map<string, WeightData>();
  const residualStd = 0.02 / Math.sqrt(2 * c.nLayers);
  for (const spec of weightSpecs(c, range)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (spec.name === 'head.weight' && c.tiedHead) {
      data = transpose2d(seededNormal(seed, 'embed.tokens', n, 0.02), c.vocabSize, c.dModel); // (d, V)
    } else if (spec.init === 'normal' || spec.init === 'residual') {
      data = seededNormal(seed, spec.name, n, spec.init === 'normal' ? 0.02 : residualStd);
    } else {
      data = new Float32Array(n).fill(spec.init === 'ones' ? 1 : 0);
    }
    out.set(spec.name, { data, shape: spec.shape });
  }
  return out;
}
