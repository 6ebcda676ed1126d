/**
 * Tensors that remember the host array they were made from. The native engine reads and writes
 * Float32Arrays while tfjs holds its own copy of each value, so the same data crossed between the
 * two several times a step: every `dataSync` hands back a fresh array. In a device's compute
 * thread those arrays (tens of MB a step) are external memory to V8, and their churn alone started
 * several full collections a step, with helper threads marking beside the compute. A tensor made
 * with `fromHost` (or a variable given a value with `assignFromHost`) answers `hostValues` with the
 * array itself instead of a copy.
 *
 * Contract: the array is never written while the tensor holds that value, and what `hostValues`
 * returns is never written by its reader (unlike `dataSync`'s copy). Any other tensor, or a
 * variable assigned elsewhere since, is read back with `dataSync` as before.
 */
import * as tf from '@tensorflow/tfjs';

// Keyed by the tensor's data, not the tensor object: a clone (a tape saving its inputs) shares the
// data, and a variable's assign moves it to new data, which has no entry until assignFromHost.
const hosts = new WeakMap<object, Float32Array>();

/** A f32 tensor of `shape` holding `values`, which it remembers (see the contract above). */
export function fromHost(values: Float32Array, shape: number[]): tf.Tensor {
  const t = tf.tensor(values, shape, 'float32');
  hosts.set(t.dataId, values);
  return t;
}

/** fromHost for a (rows, cols) matrix. */
export function fromHost2d(values: Float32Array, shape: [number, number]): tf.Tensor2D {
  return fromHost(values, shape) as tf.Tensor2D;
}

// Variables whose host copy is worth its memory: those a native engine reads every step (the
// side network's). Any other variable's host array is dropped at assignment, as before: for full
// fine-tuning it would be a second copy of the whole model.
const kept = new WeakSet<tf.Variable>();

/** Marks `v` as a variable whose assigned host arrays assignFromHost keeps. */
export function keepHostCopy(v: tf.Variable): void {
  kept.add(v);
}

/** Assigns `values` to the variable `v`; remembers them as its host copy when `v` is marked (keepHostCopy). */
export function assignFromHost(v: tf.Variable, values: Float32Array): void {
  tf.tidy(() => v.assign(tf.tensor(values, v.shape, 'float32')));
  if (kept.has(v)) hosts.set(v.dataId, values);
}

/** `t`'s values: the array it was made from while it still holds them, else a copy read back. Read-only. */
export function hostValues(t: tf.Tensor): Float32Array {
  return hosts.get(t.dataId) ?? (t.dataSync() as Float32Array);
}
