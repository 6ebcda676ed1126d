/**
 * The trainStep effect: one step of the run, `step` (pipeline epoch) or `cached-step`, sent to
 * every participant at once. Rank 0 of every stage group (the one rank 0 of the cached phase)
 * returns its side state while the coordinator has none; afterwards only its group's reduced
 * gradient, on which the coordinator replays the devices' AdamW update bit for bit
 * (src/engine/side-state.ts replayStep). The step's result goes to metrics.jsonl, its sampled
 * timeline to timeline.jsonl (run-record.ts) and its figures to the run's events.
 */
import { appendFileSync } from 'node:fs';
import { fromPromise } from 'xstate';
import type { Bus } from '../../src/bus/index.ts';
import { mergeStates, replayStep, unpackState, type PackedGrads, type PackedState, type SideState } from '../../src/engine/index.ts';
import type { StepReply } from '../../src/runtime/ctl.ts';
import { plannedMicroBatches } from '../../src/train/run-spec.ts';
import { broadcast, control } from './control.ts';
import type { EpochOneSpeeds } from './epoch-speeds.ts';
import type { StepInput, StepOutput, StepResult } from './run-machine.ts';
import type { TimelineSampler } from './run-record.ts';
import { stepRows, type StepShares } from './step-shares.ts';

export interface TrainStepDeps {
  bus: Bus;
  emit(type: string, fields: Record<string, unknown>): void;
  /** Epoch 1's compute per row by device (the cached phase's shards follow it). */
  speeds: EpochOneSpeeds;
  /** Epoch 1's rows per rank, following measured compute. */
  stepShares: StepShares;
  timelines: TimelineSampler;
  metricsFile: string;
  /** Deadline of one step's replies. */
  stepTimeoutMs: number;
  /** The run's own interrupt (not a machine leaving the step's state). */
  runSignal?: AbortSignal;
}

export function trainStepEffect(deps: TrainStepDeps) {
  const { bus, emit, speeds, stepShares, timelines, metricsFile } = deps;
  return fromPromise<StepOutput, StepInput>(async ({ input, signal }) => {
    const t0 = performance.now(),
      sentAt = Date.now();
    const cached = input.phase === 'cached';
    const who = input.groups.flatMap((g) => g.map((device, rank) => ({ device, rank })));
    const withState = input.side === null;
    const micro = plannedMicroBatches(input.spec);
    const tuned = cached ? null : stepShares.next(input.groups, input.shares, input.sampleIds, micro);
    if (tuned?.changed)
      emit('SHARES_TUNED', {
        step: input.step,
        groups: input.groups,
        shares: tuned.shares,
        rows: stepRows(input.sampleIds, micro, tuned.shares),
        msPerRow: stepShares.measured(input.groups),
      });
    const args = (d: string) => ({
      step: input.step,
      sampleIds: input.sampleIds,
      withState: withState && who.find((p) => p.device === d)!.rank === 0,
      ...(tuned ? { shares: tuned.shares } : {}),
    });
    let replies: Map<string, StepReply & { grads?: PackedGrads }>;
    try {
      replies = await broadcast<StepReply>(
        bus,
        who.map((p) => p.device),
        cached ? 'cached-step' : 'step',
        args,
        { timeoutMs: deps.stepTimeoutMs, signal },
      );
    } catch (err) {
      // The others would wait for the failed rank's messages, and an interrupted run's devices
      // should not finish the step; a step the machine left for recovery is recovery's to abort.
      if (!signal.aborted || deps.runSignal?.aborted)
        await Promise.allSettled(who.map((p) => control(bus, p.device, 'abort', { step: input.step }, { timeoutMs: 5000 })));
      throw err;
    }
    const all = [...replies.values()];
    const groups = input.groups.length;
    if (input.phase === 'pipeline') {
      speeds.record(groups, replies);
      stepShares.record(input.groups, replies);
    }
    let side: SideState;
    if (input.side === null) {
      const states = all.filter((r) => r.state).map((r) => unpackState(r.state as PackedState));
      if (states.length !== groups)
        throw new Error(`step ${input.step}: ${states.length} of ${groups} stage groups returned their side state`);
      side = mergeStates(states);
    } else {
      const grads = all.flatMap((r) => (r.grads ? [r.grads] : []));
      if (grads.length !== groups)
        throw new Error(`step ${input.step}: ${grads.length} of ${groups} stage groups returned their reduced gradient`);
      // In place and synchronously up to the return: a step either updates the committed state whole or not at all.
      side = input.side;
      // The norm the devices clipped by (with several stages, the global one they agreed on).
      replayStep(side, input.spec.optimizer, grads, all.find((r) => r.grads)?.gradNorm);
    }
    const sent = all.reduce((a, r) => a + r.bytesSent, 0);
    const scored = all.filter((r) => r.correct !== undefined);
    const result: StepResult = {
      loss: all.reduce((a, r) => a + r.loss, 0),
      ...(scored.length ? { correct: scored.reduce((a, r) => a + r.correct!, 0) } : {}),
      seconds: (performance.now() - t0) / 1000,
      bytes: sent,
      peakBytes: Object.fromEntries([...replies].map(([d, r]) => [d, r.peakBytes])),
    };
    const { phase, epoch, step } = input;
    timelines.record({
      phase,
      epoch,
      step,
      sentAt,
      doneAt: Date.now(),
      groups: input.groups,
      devices: Object.fromEntries([...replies].map(([d, r]) => [d, r.timeline ?? []])),
    });
    appendFileSync(
      metricsFile,
      JSON.stringify({
        type: 'step',
        at: Date.now(),
        phase,
        epoch,
        step,
        loss: result.loss,
        ...(result.correct !== undefined ? { accuracy: result.correct / input.sampleIds.length } : {}),
        seconds: result.seconds,
        bytes: sent,
        tokens: all.reduce((a, r) => Math.max(a, r.tokens), 0),
        devices: Object.fromEntries(
          [...replies].map(([d, r]) => [
            d,
            { rows: r.rows, computeSeconds: r.computeSeconds, bytesSent: r.bytesSent, peakBytes: r.peakBytes },
          ]),
        ),
      }) + '\n',
    );
    emit('STEP_DONE', { phase, epoch, step, loss: result.loss, seconds: result.seconds, bytes: sent });
    return { ...result, side };
  });
}
