/**
 * Autoregressive generation with a fine-tuned method: greedy, or temperature + nucleus (top-p)
 * sampling from a seeded generator (the same seed gives the same tokens). No key/value cache:
 * each new token reruns the (at most context-length) window, which is plenty for a CLI.
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../model/types.ts';
import type { FineTuneMethod } from '../model/methods/method.ts';
import { createRng, type Rng } from './rng.ts';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Greedy decoding (arg-max) when true; otherwise temperature/top-p sampling. */
  greedy: boolean;
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop early after emitting this token. */
  eosTokenId?: number;
}

/** Generates up to maxNewTokens ids after `prompt`; returns only the new ids. */
export function generate(backbone: Backbone, method: FineTuneMethod, prompt: number[], o: GenerateOptions): number[] {
  if (prompt.length === 0) throw new Error('generate: the prompt has no tokens');
  const rng = createRng(o.seed ?? 0, 0x47454e);
  const window = backbone.config.maxPositions;
  const ids = [...prompt];
  const out: number[] = [];
  for (let k = 0; k < o.maxNewTokens; k++) {
    const ctx = ids.slice(-window);
    const row = tf.tidy(() => {
      const hidden = method.hidden(tf.tensor2d(ctx, [1, ctx.length], 'int32')); // (T, d)
      const last = tf.slice(hidden, [ctx.length - 1, 0], [1, -1]) as tf.Tensor2D; // (1, d)
      return backbone.head(last); // (1, V)
    });
    const logits = row.dataSync() as Float32Array;
    row.dispose();
    const next = o.greedy ? argMax(logits) : sample(logits, o.temperature ?? 1, o.topP ?? 1, rng);
    ids.push(next);
    out.push(next);
    if (o.eosTokenId !== undefined && next === o.eosTokenId) break;
  }
  return out;
}

function argMax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/** Samples from softmax(logits / temperature) restricted to the smallest set with mass >= topP. */
export function sample(logits: Float32Array, temperature: number, topP: number, rng: Rng): number {
  if (temperature <= 0) return argMax(logits);
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  const p = new Float64Array(logits.length);
  let z = 0;
  for (let i = 0; i < logits.length; i++) {
    p[i] = Math.exp((logits[i]! - max) / temperature);
    z += p[i]!;
  }
  const order = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
  const kept: number[] = [];
  let mass = 0;
  for (const i of order) {
    kept.push(i);
    mass += p[i]! / z;
    if (mass >= topP) break;
  }
  let r = rng.next() * mass;
  for (const i of kept) {
    r -= p[i]! / z;
    if (r <= 0) return i;
  }
  return kept[kept.length - 1]!;
}
