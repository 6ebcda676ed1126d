/**
 * Device control (`dev.<device>.ctl`, envelope kind 'ctl', body `ctlRequest` of messages.ts): the
 * handler seam a device process fills, and the argument and reply bodies of the training kinds
 * that the coordinator sends and the stage handlers serve. Shared here so that neither side
 * imports the other.
 */
import { z } from 'zod';
import type { Bus } from '../bus/index.ts';
import type { SimulatedDevice } from './simulation.ts';
import type { RunSpec } from '../train/run-spec.ts';
import type { PackedState, Span, StepOutcome } from '../engine/index.ts';

/** What a control handler sees of the device serving the request. */
export interface CtlDevice {
  readonly name: string;
  /** The device's simulated slowdown and link (slowdown 1 and no bandwidth cap on real hardware). */
  sim: SimulatedDevice;
  /** The device's bus connection (for handlers that talk to other actors). @throws when not connected. */
  bus(): Bus;
}

/** A control handler: gets the request's args, returns the result placed in the reply. */
export type CtlHandler = (args: unknown, device: CtlDevice) => unknown | Promise<unknown>;

const sampleIds = z.array(z.number().int().nonnegative());

/**
 * Plan generation: grows at every re-plan; the stage links and the cached-phase ring stamp it on
 * every message and drop what another generation sent.
 */
const generation = z.number().int().nonnegative();

/** `assign`: load stage `stage`, rank `rank` of the plan `stages`; `state` is a PackedState when resuming or recovering. */
const assignSpec = z.custom<RunSpec>((v) => typeof v === 'object' && v !== null && 'model' in v && 'data' in v);
export const assignArgs = z
  .strictObject({
    spec: assignSpec,
    stages: z
      .array(
        z.strictObject({
          from: z.number().int(),
          to: z.number().int(),
          devices: z.array(z.string()).min(1),
          shares: z.array(z.number().positive()).min(1),
        }),
      )
      .min(1),
    stage: z.number().int().nonnegative(),
    rank: z.number().int().nonnegative(),
    generation,
    firstStep: z.number().int().positive(),
    state: z.unknown().optional(),
  })
  .superRefine((a, ctx) => {
    const st = a.stages[a.stage];
    if (!st) ctx.addIssue({ code: 'custom', path: ['stage'], message: `stage ${a.stage} is not in a plan of ${a.stages.length} stages` });
    else if (a.rank >= st.devices.length)
      ctx.addIssue({
        code: 'custom',
        path: ['rank'],
        message: `rank ${a.rank} is not in stage ${a.stage}'s group of ${st.devices.length}`,
      });
  });

export type AssignArgs = z.output<typeof assignArgs>;
/** `cached-step`: rank 0 adds its side state to the reply when `withState`. */
export const cachedStepArgs = z.strictObject({ step: z.number().int().positive(), sampleIds: sampleIds.min(1), withState: z.boolean() });

/**
 * `step`: as `cached-step`; `shares`, when given, replaces the plan's row shares of every stage
 * for this step (one positive weight per rank of each stage), the same for every rank.
 */
export const stepArgs = cachedStepArgs.extend({
  shares: z.array(z.array(z.number().positive().finite()).min(1)).min(1).optional(),
});
export type StepArgs = z.output<typeof stepArgs>;

/** `fill`: forward only, caching what this rank computes. */
export const fillArgs = z.strictObject({ sampleIds });

/**
 * `abort`: end the work in flight (a step, a cache fill, a redistribution) and drop what it
 * holds in flight; with `step`, only if the work in flight is that step.
 */
export const abortArgs = z.strictObject({ step: z.number().int().optional() });

/** `cache-report`: layers held per sample; opens the run's cache if the device has none yet. */
export const cacheReportArgs = z.strictObject({ spec: assignSpec, fingerprint: z.string().min(1) });

/**
 * `redistribute`: `shards[k]` is the cached-phase shard of `devices[k]`; `keep`: samples this
 * device holds a copy of beside its shard (replicas); `sends[k]`: the samples this device sends
 * `devices[k]` (absent: what it holds of `shards[k]`).
 */
export const redistributeArgs = z.strictObject({
  shards: z.array(sampleIds),
  devices: z.array(z.string()).min(1),
  keep: sampleIds.optional(),
  sends: z.array(sampleIds).optional(),
});
export type RedistributeArgs = z.output<typeof redistributeArgs>;

/** `cached-load`: the whole side network + head from `state` (a PackedState) for the cached epochs. */
export const cachedLoadArgs = z.strictObject({
  rank: z.number().int().nonnegative(),
  /** the device of each rank of the data-parallel ring */
  devices: z.array(z.string()).min(1),
  shard: sampleIds,
  generation,
  firstStep: z.number().int().positive(),
  state: z.unknown(),
});

/** The reply of `step` and `cached-step`: what a step reports to the coordinator. */
export interface StepReply extends StepOutcome {
  tokens: number;
  computeSeconds: number;
  /** The step's forward, backward, send, all-reduce and update spans on the device's wall clock. */
  timeline?: Span[];
  /** The step's memory as the standalone trainer reports it too (src/model/memory.ts `stepMemory`). */
  peakBytes: number;
  state?: PackedState;
}

/**
 * How each training control kind meets the device machine: `load` and `unload` change what the
 * device holds, `work` is a unit of work (the device is 'working' meanwhile), `query` only reads
 * (any state), `signal` is delivered at once to the compute thread without waiting (abort).
 */
export const TRAINING_KINDS = {
  assign: 'load',
  'cached-load': 'load',
  step: 'work',
  'cached-step': 'work',
  fill: 'work',
  redistribute: 'work',
  release: 'unload',
  finish: 'unload',
  'cache-report': 'query',
  abort: 'signal',
} as const;
export type TrainingKind = keyof typeof TRAINING_KINDS;

export function isTrainingKind(kind: string): kind is TrainingKind {
  return Object.hasOwn(TRAINING_KINDS, kind);
}

/** What a request tells about the device's role, step and phase (for heartbeats and `charon status`). */
export function describeRequest(kind: TrainingKind, args: unknown): { role?: string; step?: number; phase?: string } {
  const a = (typeof args === 'object' && args !== null ? args : {}) as Record<string, unknown>;
  const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
  switch (kind) {
    case 'assign':
      return { role: `stage ${int(a.stage) ?? '?'} rank ${int(a.rank) ?? '?'}` };
    case 'cached-load':
      return { role: `cached rank ${int(a.rank) ?? '?'}` };
    case 'step':
      return { step: int(a.step), phase: 'pipeline' };
    case 'cached-step':
      return { step: int(a.step), phase: 'cached' };
    case 'fill':
      return { phase: 'fill' };
    case 'redistribute':
      return { phase: 'redistribute' };
    default:
      return {};
  }
}
