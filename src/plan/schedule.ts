/**
 * The 1F1B (PipeDream-flush) order of one pipeline stage. Shared by the simulator and the stage
 * actors, so what is simulated is what runs.
 */

/** One operation of a stage: forward or backward of micro-batch `mb` (0-based). */
export interface PipelineOp {
  op: 'F' | 'B';
  mb: number;
}

/**
 * The order in which stage `stage` (0-based) of `numStages` runs the forward and backward passes
 * of micro-batches 0..numMicroBatches-1 in one step:
 * - warm-up: min(numStages - stage - 1, M) forwards, filling the pipeline behind it;
 * - steady state: one forward, then one backward, until every forward has run;
 * - drain: the remaining backwards.
 * Every micro-batch appears once as F and once as B, B after its F, and backwards run in
 * micro-batch order. At most numStages - stage micro-batches are in flight (forwarded, not yet
 * backwarded) at any point, which bounds the activations the stage keeps.
 */
export function oneFOneB(stage: number, numStages: number, numMicroBatches: number): PipelineOp[] {
  if (!Number.isInteger(numStages) || numStages < 1) throw new RangeError(`numStages must be a positive integer, got ${numStages}`);
  if (!Number.isInteger(stage) || stage < 0 || stage >= numStages)
    throw new RangeError(`stage must be in 0..${numStages - 1}, got ${stage}`);
  if (!Number.isInteger(numMicroBatches) || numMicroBatches < 1)
    throw new RangeError(`numMicroBatches must be a positive integer, got ${numMicroBatches}`);
  const warmup = Math.min(numStages - stage - 1, numMicroBatches);
  const ops: PipelineOp[] = [];
  let nextF = 0;
  let nextB = 0;
  for (; nextF < warmup; nextF++) ops.push({ op: 'F', mb: nextF });
  while (nextF < numMicroBatches) {
    ops.push({ op: 'F', mb: nextF++ });
    ops.push({ op: 'B', mb: nextB++ });
  }
  while (nextB < numMicroBatches) ops.push({ op: 'B', mb: nextB++ });
  return ops;
}
