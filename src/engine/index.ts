/**
 * The training engine: one stage rank's compute (StageCompute) and its set-up, the 1F1B runner
 * and the cached data-parallel step, activation rows as cache entries, micro-batch routing by
 * sample id, the ring all-reduce, stage links over the bus or in memory, side-network state
 * packing and replay, and in-process runs of a whole plan.
 * Actors bind it to the bus and their machines; tests and benches use it directly.
 */
export * from './stage-compute.ts';
export * from './trainable.ts';
export * from './backprop-compute.ts';
export * from './cross-stage.ts';
export * from './runner.ts';
export * from './routing.ts';
export * from './allreduce.ts';
export * from './links.ts';
export * from './ring.ts';
export * from './side-state.ts';
export * from './local-run.ts';
export * from './stage-setup.ts';
export * from './cache-rows.ts';
export * from './timeline.ts';
