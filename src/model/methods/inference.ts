/**
 * Inference mode inside a gradient scope. tf.variableGrads records every op run inside it on the
 * tape and keeps the tensors each op's gradient needs until backward ends — even for ops that no
 * gradient will reach. PAC's backbone must keep nothing for backward, so its forward pass runs
 * with the tape off. tfjs has no public "no_grad"; it turns the tape off the same way for the ops
 * nested in a kernel (engine.isTapeOn() is false while kernelDepth > 0), which this reuses
 * (an engine internal, checked at start-up by src/model/tfjs-internals.ts).
 */
import { engineInternals } from '../tfjs-internals.ts';

/** Runs fn with the gradient tape off: nothing it computes is recorded or kept for backward. */
export function withoutTape<T>(fn: () => T): T {
  const state = engineInternals();
  state.kernelDepth++;
  try {
    return fn();
  } finally {
    state.kernelDepth--;
  }
}
