/**
 * tf.variableGrads with a lower peak. tfjs keeps every tensor saved for backward and every
 * intermediate gradient until the whole backward pass ends, so a step's peak was the forward's
 * saved activations plus the gradients of all of them (full fine-tuning of W1 needed more than
 * the 4 GB wasm heap can hold once fragmented).
 *
 * Here each tape node, once its gradient has run, releases the gradients of its outputs and the
 * tensors it saved: nothing else reads them (the tape is walked in reverse topological order, and
 * an output's gradient is complete before its producer runs). Results are identical; only the
 * time of disposal changes. Relies on tfjs-core engine internals (activeTape, node.gradient,
 * node.saved), reached through src/model/tfjs-internals.ts, which checks them at start-up.
 */
import * as tf from '@tensorflow/tfjs';
import { engineInternals } from '../model/tfjs-internals.ts';

/** Wraps the gradient of every node on the active tape to release what it consumed. */
function releaseAsConsumed(): void {
  const tape = engineInternals().activeTape;
  if (!tape) return;
  // Releases what the node processed last consumed; runs when the next node (its predecessor on
  // the tape) starts, after the engine has called all of the last node's input closures.
  let pending: (() => void) | undefined;
  for (const node of tape) {
    const gradient = node.gradient;
    if (!gradient) continue;
    node.gradient = (dys: tf.Tensor[]) => {
      pending?.();
      const map = gradient(dys);
      const returned = new Set<tf.Tensor>();
      const wrapped: Record<string, () => tf.Tensor> = {};
      for (const [name, fn] of Object.entries(map)) {
        wrapped[name] = () => {
          const dx = fn();
          returned.add(dx); // a gradient passed through as-is now belongs to the input: keep it
          return dx;
        };
      }
      pending = () => {
        for (const t of [...dys, ...(node.saved ?? [])]) if (t && !returned.has(t)) t.dispose();
        pending = undefined;
      };
      return wrapped;
    };
  }
}

/**
 * Same contract as tf.variableGrads(f, vars): value and gradients by variable name; the caller
 * disposes both. Peak memory is the forward's saved tensors plus about one layer of gradients.
 */
export function leanVariableGrads(f: () => tf.Scalar, vars: tf.Variable[]): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  return tf.variableGrads(() => {
    const y = f();
    releaseAsConsumed();
    return y;
  }, vars);
}
