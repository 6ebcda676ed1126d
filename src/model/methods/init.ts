/**
 * Seeded parameter initialisation. Every trainable parameter draws its values from a generator
 * seeded by (run seed, parameter name) — never from construction order — so that a network built
 * whole and the same network built stage by stage (a distributed run) hold identical values.
 */
import * as tf from '@tensorflow/tfjs';

/** 32-bit seed for one parameter: FNV-1a over the name, mixed with the run seed. */
export function parameterSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return mix32(h ^ Math.imul(seed >>> 0, 0x9e3779b1));
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Uniform [0, 1) stream (mulberry32): small, fast, and the same on every platform. */
function uniformStream(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [-bound, bound). */
export function uniformValues(seed: number, n: number, bound: number): Float32Array {
  const next = uniformStream(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * next() - 1) * bound;
  return out;
}

/** n values from N(0, std^2) (Box-Muller). */
export function normalValues(seed: number, n: number, std: number): Float32Array {
  const next = uniformStream(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - next(); // (0, 1]: log stays finite
    const u2 = next();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** How a parameter starts. */
export type Init =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  /** Kaiming-uniform as PyTorch's nn.Linear / LoRA A: bound 1/sqrt(fanIn). */
  | { kind: 'kaiming'; fanIn: number }
  | { kind: 'normal'; std: number }
  | { kind: 'values'; values: Float32Array };

/** Creates the trainable variable `name` of `shape`, its values fixed by (seed, name, init). */
export function initVariable(seed: number, name: string, shape: number[], init: Init): tf.Variable {
  const n = shape.reduce((a, b) => a * b, 1);
  let values: Float32Array;
  switch (init.kind) {
    case 'zeros':
      values = new Float32Array(n);
      break;
    case 'ones':
      values = new Float32Array(n).fill(1);
      break;
    case 'kaiming':
      values = uniformValues(parameterSeed(seed, name), n, 1 / Math.sqrt(init.fanIn));
      break;
    case 'normal':
      values = normalValues(parameterSeed(seed, name), n, init.std);
      break;
    case 'values':
      if (init.values.length !== n)
        throw new Error(`initVariable: '${name}' expects ${n} values for shape [${shape}], got ${init.values.length}`);
      values = init.values;
      break;
  }
  const initial = tf.tensor(values, shape, 'float32');
  const v = tf.variable(initial, true, `${name}#${nextVariableId++}`);
  initial.dispose(); // the variable holds its own reference to the data
  return v;
}

/** tf.Variable names are global in the engine; the suffix keeps two methods in one process apart. */
let nextVariableId = 0;
