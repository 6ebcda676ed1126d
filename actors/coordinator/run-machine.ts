/**
 * The run machine: the coordinator's logic for one distributed PAC run, as a pure XState v5
 * `setup()`. Every effect is only named here; `run-actor.ts` provides the real ones (bus,
 * compute, disk) and tests provide fakes.
 *
 *   gathering -> profiling -> planning -> training.deploying -> training.pipelineEpoch
 *     -> training.redistributing -> training.cachedEpochs -> finishing -> done      (+ failed)
 *
 * The context owns the run's data: every effect gets what it needs as `input` and hands back
 * what it produced as `output`, which `onDone` assigns; nothing travels between effects beside
 * the machine. The final state's output is the run summary (or the error that ended the run).
 *
 * A step is a mini-batch fixed by (seed, epoch). It runs (`trainStep`), then commits
 * (`commitStep`: checkpoint the side network, persist {epoch, stepInEpoch, step, ledger,
 * checkpoint ref}); only then does the ledger count it. A restarted coordinator is given the last
 * persisted state as `input.resume` and continues at the next uncommitted step.
 *
 * Recovery hooks: DEVICE_LOST inside `training` is where a `recovering` state belongs (today the
 * run fails, naming the device); DEVICE_JOINED inside `training` is recorded in
 * `pendingJoins` for `replanning` at a step boundary.
 */
import { assertEvent, assign, fromPromise, setup } from 'xstate';
import { Ledger } from '../../src/train/ledger.ts';
import type { RunSpec } from '../../src/train/run-spec.ts';
import type { Profile } from '../../src/plan/profile.ts';
import type { StagePlan } from '../../src/plan/planner.ts';
import type { SideState, StageLayout } from '../../src/engine/index.ts';
import type { RunSummary } from './run-summary.ts';
import { afterCommit, nextSampleIds, persistedRun, startState, type Phase, type PersistedRun, type RunState, type StepResult } from './run-state.ts';

export type { EpochRecord, EpochTotals, PersistedRun, Phase, StepResult } from './run-state.ts';

export interface RunInput {
  runId: string;
  /** What the run trains; planning fills in the micro-batch count when the topology leaves it open. */
  spec: RunSpec;
  /** Devices that must have joined before profiling starts. */
  expectedDevices: string[];
  gatherTimeoutMs: number;
  resume?: PersistedRun;
}

/** What planning decided, as the devices and the summary see it. */
export interface PlannedRun {
  plan: StagePlan;
  layout: StageLayout[];
  /** The input spec with the plan's micro-batch count. */
  spec: RunSpec;
  simulatedStepMs: number;
}

/** What deploying the plan left on the devices and in the coordinator. */
export interface Deployment {
  /** The backbone the devices loaded; checkpoints and caches are keyed by it. */
  fingerprint: string;
  /** Backbone tensors each device loaded for its stage. */
  heldWeights: Record<string, string[]>;
  /** The side network resumed from the checkpoint; null when the devices initialise it. */
  side: SideState | null;
}

/** The cached phase's one data-parallel group: every device a rank with its shard of sample ids. */
export interface CachedPhase { ranks: string[]; shards: number[][] }

/** Moving the activation caches to the cached phase's shards. */
export interface Redistribution { bytes: number; seconds: number; shardSizes: Record<string, number> }

export interface Redistributed {
  cached: CachedPhase;
  redistribution: Redistribution;
  /** Everything devices sent for it, refilling lost caches included. */
  bytes: number;
}

/** Bytes sent by devices per phase (activations, gradients, all-reduce, cache moves). */
export interface BytesPerPhase { pipeline: number; redistribution: number; cached: number }

export interface ProfileInput { devices: string[]; spec: RunSpec }
export interface PlanInput { devices: string[]; profile: Profile; spec: RunSpec }
export interface DeployInput { spec: RunSpec; layout: StageLayout[]; checkpointRef: string | null; epoch: number; firstStep: number }
export interface RedistributeInput { spec: RunSpec; layout: StageLayout[]; fingerprint: string; side: SideState; firstStep: number }
export interface StepInput {
  runId: string;
  phase: Phase;
  epoch: number;
  step: number;
  sampleIds: number[];
  spec: RunSpec;
  /** Device groups running the step: the plan's stages, or the cached phase's one group. Rank 0 of each answers for its group. */
  groups: string[][];
  /** Null until the first step: then rank 0 of every group returns its part of the side network. */
  side: SideState | null;
}
/** A step's figures and the side network after it (the input's reference, updated in place, once there is one). */
export interface StepOutput extends StepResult { side: SideState }
export interface CommitInput { runId: string; phase: Phase; result: StepResult; state: PersistedRun; spec: RunSpec; fingerprint: string; side: SideState }
export interface FinishInput {
  runId: string;
  state: PersistedRun;
  spec: RunSpec;
  plan: StagePlan;
  layout: StageLayout[];
  simulatedStepMs: number;
  heldWeights: Record<string, string[]>;
  peakBytes: Record<string, number>;
  bytes: BytesPerPhase;
  redistribution: Redistribution | null;
  /** The committed step this run resumed after (null: trained from the start). */
  resumedFromStep: number | null;
}

export type RunOutput = { status: 'done'; summary: RunSummary } | { status: 'failed'; error: string };

export type RunEvent =
  | { type: 'DEVICE_JOINED'; device: string }
  | { type: 'DEVICE_LOST'; device: string; reason?: string };

/**
 * The persisted run (always with the totals of the epoch in progress) plus what lives only in
 * memory. Fields filled by an effect hold their empty value until it has run.
 */
export interface RunContext extends RunState {
  input: RunInput;
  devices: string[];
  /** The input spec until planning fills in the micro-batch count. */
  spec: RunSpec;
  profile: Profile | null;
  plan: StagePlan | null;
  layout: StageLayout[];
  simulatedStepMs: number;
  fingerprint: string;
  heldWeights: Record<string, string[]>;
  /** The coordinator's copy of the side network and optimiser: a reference that steps update in place. */
  side: SideState | null;
  cached: CachedPhase | null;
  lastResult: StepResult | null;
  peakBytes: Record<string, number>;
  bytes: BytesPerPhase;
  redistribution: Redistribution | null;
  pendingJoins: string[];
  error: string | null;
  summary: RunSummary | null;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const notProvided = <Out, In>(name: string) => fromPromise<Out, In>(async () => { throw new Error(`run machine: effect '${name}' was not provided`); });

function maxPeaks(peaks: Record<string, number>, step: Record<string, number>): Record<string, number> {
  const out = { ...peaks };
  for (const [d, b] of Object.entries(step)) out[d] = Math.max(out[d] ?? 0, b);
  return out;
}

/** Any effect's failure ends the run with its message. */
const failRun = { target: '#run.failed', actions: { type: 'recordError', params: ({ event }: { event: { error: unknown } }) => ({ error: event.error }) } } as const;

const run = setup({
  types: { context: {} as RunContext, input: {} as RunInput, events: {} as RunEvent, output: {} as RunOutput },
  actors: {
    profileDevices: notProvided<Profile, ProfileInput>('profileDevices'),
    planRun: notProvided<PlannedRun, PlanInput>('planRun'),
    deployPlan: notProvided<Deployment, DeployInput>('deployPlan'),
    trainStep: notProvided<StepOutput, StepInput>('trainStep'),
    commitStep: notProvided<{ checkpointRef: string }, CommitInput>('commitStep'),
    redistribute: notProvided<Redistributed, RedistributeInput>('redistribute'),
    finishRun: notProvided<RunSummary, FinishInput>('finishRun'),
  },
  delays: {
    gatherTimeout: ({ context }) => context.input.gatherTimeoutMs,
  },
  guards: {
    allGathered: ({ context, event }) => {
      assertEvent(event, 'DEVICE_JOINED');
      const have = new Set([...context.devices, event.device]);
      return context.input.expectedDevices.every((d) => have.has(d));
    },
    runComplete: ({ context }) => context.epoch > context.spec.epochs,
    pipelineEpochDone: ({ context }) => context.epoch > 1,
  },
  actions: {
    addDevice: assign({
      devices: ({ context, event }) => {
        assertEvent(event, 'DEVICE_JOINED');
        return context.devices.includes(event.device) ? context.devices : [...context.devices, event.device];
      },
    }),
    dropDevice: assign({
      devices: ({ context, event }) => {
        assertEvent(event, 'DEVICE_LOST');
        return context.devices.filter((d) => d !== event.device);
      },
    }),
    noteDeviceLost: assign({
      error: ({ event }) => {
        assertEvent(event, 'DEVICE_LOST');
        return `device ${event.device} lost during training${event.reason ? ` (${event.reason})` : ''}; recovery is not built yet`;
      },
    }),
    notePendingJoin: assign({
      pendingJoins: ({ context, event }) => {
        assertEvent(event, 'DEVICE_JOINED');
        return [...context.pendingJoins, event.device];
      },
    }),
    beginStep: assign({
      ledger: ({ context: c }) => {
        const ledger = Ledger.fromJSON(c.ledger);
        ledger.begin(c.epoch, c.step + 1, nextSampleIds(c, c.spec));
        return ledger.toJSON();
      },
    }),
    applyDeployment: assign((_, d: Deployment) => ({ fingerprint: d.fingerprint, heldWeights: d.heldWeights, side: d.side })),
    recordError: assign((_, p: { error: unknown }) => ({ error: message(p.error) })),
  },
});

/** Steps of one phase until the run or (pipeline) its only epoch is over. */
function stepLoop(phase: Phase) {
  return run.createStateConfig({
    initial: 'step',
    states: {
      step: {
        entry: 'beginStep',
        invoke: {
          src: 'trainStep',
          input: ({ context: c }) => ({
            runId: c.input.runId, phase, epoch: c.epoch, step: c.step + 1, sampleIds: nextSampleIds(c, c.spec),
            spec: c.spec, groups: phase === 'pipeline' ? c.layout.map((s) => s.devices) : [c.cached!.ranks], side: c.side,
          }),
          onDone: {
            target: 'commit',
            actions: assign(({ context: c, event }) => {
              const { side, ...result } = event.output;
              return { side, lastResult: result, bytes: { ...c.bytes, [phase]: c.bytes[phase] + result.bytes } };
            }),
          },
          onError: failRun,
        },
      },
      commit: {
        invoke: {
          src: 'commitStep',
          input: ({ context: c }) => ({ runId: c.input.runId, phase, result: c.lastResult!, state: afterCommit(c, c.spec, c.lastResult!), spec: c.spec, fingerprint: c.fingerprint, side: c.side! }),
          onDone: {
            target: 'committed',
            actions: assign(({ context: c, event }) => ({ ...afterCommit(c, c.spec, c.lastResult!), checkpointRef: event.output.checkpointRef, peakBytes: maxPeaks(c.peakBytes, c.lastResult!.peakBytes) })),
          },
          onError: failRun,
        },
      },
      committed: {
        always: phase === 'pipeline'
          ? [{ guard: 'runComplete', target: '#run.finishing' }, { guard: 'pipelineEpochDone', target: '#run.training.redistributing' }, { target: 'step' }]
          : [{ guard: 'runComplete', target: '#run.finishing' }, { target: 'step' }],
      },
    },
  });
}

export const runMachine = run.createMachine({
  id: 'run',
  context: ({ input }) => ({
    input,
    devices: [],
    spec: input.spec,
    profile: null,
    plan: null,
    layout: [],
    simulatedStepMs: 0,
    fingerprint: '',
    heldWeights: {},
    side: null,
    cached: null,
    ...startState(input.spec.samples, input.resume),
    lastResult: null,
    peakBytes: {},
    bytes: { pipeline: 0, redistribution: 0, cached: 0 },
    redistribution: null,
    pendingJoins: [],
    error: null,
    summary: null,
  }),
  initial: 'gathering',
  states: {
    gathering: {
      on: {
        DEVICE_JOINED: [{ guard: 'allGathered', target: 'profiling', actions: 'addDevice' }, { actions: 'addDevice' }],
        DEVICE_LOST: { actions: 'dropDevice' },
      },
      after: { gatherTimeout: { target: 'failed', actions: assign({ error: ({ context }) => `gathering timed out: waiting for ${context.input.expectedDevices.filter((d) => !context.devices.includes(d)).join(', ')}` }) } },
    },
    profiling: {
      on: { DEVICE_LOST: { target: 'failed', actions: 'noteDeviceLost' } },
      invoke: {
        src: 'profileDevices',
        input: ({ context }) => ({ devices: context.devices, spec: context.spec }),
        onDone: { target: 'planning', actions: assign({ profile: ({ event }) => event.output }) },
        onError: failRun,
      },
    },
    planning: {
      invoke: {
        src: 'planRun',
        input: ({ context }) => ({ devices: context.devices, profile: context.profile!, spec: context.spec }),
        onDone: { target: 'training', actions: assign(({ event }) => ({ plan: event.output.plan, layout: event.output.layout, spec: event.output.spec, simulatedStepMs: event.output.simulatedStepMs })) },
        onError: failRun,
      },
    },
    training: {
      on: {
        DEVICE_LOST: { target: 'failed', actions: 'noteDeviceLost' },
        DEVICE_JOINED: { actions: 'notePendingJoin' },
      },
      initial: 'deploying',
      states: {
        deploying: {
          invoke: {
            src: 'deployPlan',
            // The devices start numbering at the step after the last committed one.
            input: ({ context: c }) => ({ spec: c.spec, layout: c.layout, checkpointRef: c.checkpointRef, epoch: c.epoch, firstStep: c.step + 1 }),
            onDone: [
              { guard: 'pipelineEpochDone', target: 'redistributing', actions: { type: 'applyDeployment', params: ({ event }) => event.output } },
              { target: 'pipelineEpoch', actions: { type: 'applyDeployment', params: ({ event }) => event.output } },
            ],
            onError: failRun,
          },
        },
        pipelineEpoch: stepLoop('pipeline'),
        redistributing: {
          invoke: {
            src: 'redistribute',
            input: ({ context: c }) => ({ spec: c.spec, layout: c.layout, fingerprint: c.fingerprint, side: c.side!, firstStep: c.step + 1 }),
            onDone: {
              target: 'cachedEpochs',
              actions: assign(({ context: c, event }) => ({
                cached: event.output.cached, redistribution: event.output.redistribution,
                bytes: { ...c.bytes, redistribution: c.bytes.redistribution + event.output.bytes },
              })),
            },
            onError: failRun,
          },
        },
        cachedEpochs: stepLoop('cached'),
      },
    },
    finishing: {
      invoke: {
        src: 'finishRun',
        input: ({ context: c }) => ({
          runId: c.input.runId, state: persistedRun(c), spec: c.spec, plan: c.plan!, layout: c.layout, simulatedStepMs: c.simulatedStepMs,
          heldWeights: c.heldWeights, peakBytes: c.peakBytes, bytes: c.bytes, redistribution: c.redistribution, resumedFromStep: c.input.resume?.step ?? null,
        }),
        onDone: { target: 'done', actions: assign({ summary: ({ event }) => event.output }) },
        onError: failRun,
      },
    },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
  output: ({ context }): RunOutput => (context.summary ? { status: 'done', summary: context.summary } : { status: 'failed', error: context.error ?? 'run failed' }),
});
