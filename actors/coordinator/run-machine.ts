/**
 * The run machine: the coordinator's logic for one distributed PAC run, as a pure XState v5
 * `setup()`. Every effect is only named here; `run-actor.ts` provides the real ones (bus,
 * compute, disk) and tests provide fakes.
 *
 *   gathering -> profiling -> planning -> training.deploying -> training.pipelineEpoch
 *     -> training.redistributing -> training.cachedEpochs -> finishing -> done      (+ failed)
 *
 * A step is a mini-batch fixed by (seed, epoch). It runs (`trainStep`), then commits
 * (`commitStep`: checkpoint the side network, persist {epoch, stepInEpoch, step, ledger,
 * checkpoint ref}); only then does the ledger count it. A restarted coordinator is given the last
 * persisted state as `input.resume` and continues at the next uncommitted step.
 *
 * Hooks for the next issue: DEVICE_LOST inside `training` is where `recovering` will start (today
 * the run fails, naming the device); DEVICE_JOINED inside `training` is recorded in
 * `pendingJoins` for `replanning` at a step boundary.
 */
import { assign, fromPromise, setup } from 'xstate';
import { Ledger, type LedgerJson } from '../../src/train/ledger.ts';
import { epochSteps } from '../../src/train/data.ts';

export type Phase = 'pipeline' | 'cached';

/** What the machine persists after every committed step (enough to resume). */
export interface PersistedRun {
  /** 1-based epoch of the next step to run. */
  epoch: number;
  /** 0-based index of the next step inside that epoch. */
  stepInEpoch: number;
  /** Committed steps so far (global, 1-based numbering of steps). */
  step: number;
  ledger: LedgerJson;
  checkpointRef: string | null;
  epochs: EpochRecord[];
  /** Running totals of the epoch in progress (so a resumed epoch's record counts every step). */
  current?: EpochTotals;
}

/** Running totals of the committed steps of an epoch in progress. */
export interface EpochTotals { steps: number; seconds: number; lossSum: number; bytes: number }

/** Per-epoch figures for summary.json. */
export interface EpochRecord {
  epoch: number;
  phase: Phase;
  steps: number;
  seconds: number;
  /** Mean of the committed steps' losses. */
  loss: number;
  bytes: number;
}

export interface RunInput {
  runId: string;
  epochs: number;
  samples: number;
  batch: number;
  seed: number;
  /** Devices that must have joined before profiling starts. */
  expectedDevices: string[];
  gatherTimeoutMs: number;
  resume?: PersistedRun;
}

/** What one step reports back (sums over devices). */
export interface StepResult {
  loss: number;
  seconds: number;
  bytes: number;
  peakBytes: Record<string, number>;
}

export interface ProfileInput { devices: string[] }
export interface PlanInput { devices: string[]; profile: unknown }
export interface DeployInput { plan: unknown; checkpointRef: string | null; epoch: number }
export interface RedistributeInput { plan: unknown }
export interface StepInput { runId: string; phase: Phase; epoch: number; step: number; sampleIds: number[] }
export interface CommitInput { runId: string; phase: Phase; result: StepResult; state: PersistedRun }
export interface FinishInput { runId: string; state: PersistedRun; plan: unknown; peakBytes: Record<string, number>; redistribution: { bytes: number; seconds: number } | null }

export type RunEvent =
  | { type: 'DEVICE_JOINED'; device: string }
  | { type: 'DEVICE_LOST'; device: string; reason?: string };

/** The persisted run (always with the totals of the epoch in progress) plus what lives only in memory. */
export interface RunContext extends PersistedRun {
  input: RunInput;
  devices: string[];
  profile: unknown;
  plan: unknown;
  current: EpochTotals;
  lastResult: StepResult | null;
  peakBytes: Record<string, number>;
  redistribution: { bytes: number; seconds: number } | null;
  pendingJoins: string[];
  error: string | null;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const notProvided = <Out, In>(name: string) => fromPromise<Out, In>(async () => { throw new Error(`run machine: effect '${name}' was not provided`); });

function persisted(c: RunContext): PersistedRun {
  return { epoch: c.epoch, stepInEpoch: c.stepInEpoch, step: c.step, ledger: c.ledger, checkpointRef: c.checkpointRef, epochs: c.epochs, current: c.current };
}

/** The state persisted once the step in flight commits: ledger marked, position advanced. */
function afterCommit(c: RunContext): Required<PersistedRun> {
  const ledger = Ledger.fromJSON(c.ledger);
  ledger.commit(c.epoch, c.step + 1);
  const lastOfEpoch = c.stepInEpoch + 1 >= epochSteps(c.input, c.epoch).length;
  if (lastOfEpoch) ledger.finish(c.epoch);
  const r = c.lastResult!;
  return {
    epoch: lastOfEpoch ? c.epoch + 1 : c.epoch,
    stepInEpoch: lastOfEpoch ? 0 : c.stepInEpoch + 1,
    step: c.step + 1,
    ledger: ledger.toJSON(),
    checkpointRef: c.checkpointRef,
    epochs: lastOfEpoch ? [...c.epochs, closeEpoch(c, r)] : c.epochs,
    current: lastOfEpoch ? { steps: 0, seconds: 0, lossSum: 0, bytes: 0 } : { steps: c.current.steps + 1, seconds: c.current.seconds + r.seconds, lossSum: c.current.lossSum + r.loss, bytes: c.current.bytes + r.bytes },
  };
}

function closeEpoch(c: RunContext, r: StepResult): EpochRecord {
  const steps = c.current.steps + 1;
  return { epoch: c.epoch, phase: c.epoch === 1 ? 'pipeline' : 'cached', steps, seconds: c.current.seconds + r.seconds, loss: (c.current.lossSum + r.loss) / steps, bytes: c.current.bytes + r.bytes };
}

function stepLoop(phase: Phase, next: string) {
  return {
    initial: 'step',
    states: {
      step: {
        entry: 'beginStep',
        invoke: {
          src: 'trainStep',
          input: ({ context: c }: { context: RunContext }): StepInput => ({ runId: c.input.runId, phase, epoch: c.epoch, step: c.step + 1, sampleIds: epochSteps(c.input, c.epoch)[c.stepInEpoch]! }),
          onDone: { target: 'commit', actions: 'recordStep' },
          onError: { target: '#run.failed', actions: 'recordError' },
        },
      },
      commit: {
        invoke: {
          src: 'commitStep',
          input: ({ context: c }: { context: RunContext }): CommitInput => ({ runId: c.input.runId, phase, result: c.lastResult!, state: afterCommit(c) }),
          onDone: [
            { guard: 'runComplete', target: '#run.finishing', actions: 'applyCommit' },
            { guard: 'pipelineComplete', target: next, actions: 'applyCommit' },
            { target: 'step', reenter: true, actions: 'applyCommit' },
          ],
          onError: { target: '#run.failed', actions: 'recordError' },
        },
      },
    },
  } as const;
}

export const runMachine = setup({
  types: { context: {} as RunContext, input: {} as RunInput, events: {} as RunEvent },
  actors: {
    profileDevices: notProvided<unknown, ProfileInput>('profileDevices'),
    planRun: notProvided<unknown, PlanInput>('planRun'),
    deployPlan: notProvided<void, DeployInput>('deployPlan'),
    trainStep: notProvided<StepResult, StepInput>('trainStep'),
    commitStep: notProvided<{ checkpointRef: string }, CommitInput>('commitStep'),
    redistribute: notProvided<{ bytes: number; seconds: number }, RedistributeInput>('redistribute'),
    finishRun: notProvided<void, FinishInput>('finishRun'),
  },
  delays: {
    gatherTimeout: ({ context }) => context.input.gatherTimeoutMs,
  },
  guards: {
    allGathered: ({ context, event }) => {
      const have = new Set(context.devices);
      if (event.type === 'DEVICE_JOINED') have.add(event.device);
      return context.input.expectedDevices.every((d) => have.has(d));
    },
    resumeInCachedPhase: ({ context }) => context.epoch > 1,
    runComplete: ({ context }) => afterCommit(context).epoch > context.input.epochs,
    pipelineComplete: ({ context }) => context.epoch === 1 && afterCommit(context).epoch === 2,
  },
  actions: {
    addDevice: assign({ devices: ({ context, event }) => (event.type === 'DEVICE_JOINED' && !context.devices.includes(event.device) ? [...context.devices, event.device] : context.devices) }),
    dropDevice: assign({ devices: ({ context, event }) => context.devices.filter((d) => event.type !== 'DEVICE_LOST' || d !== event.device) }),
    noteDeviceLost: assign({ error: ({ event }) => (event.type === 'DEVICE_LOST' ? `device ${event.device} lost during training${event.reason ? ` (${event.reason})` : ''}; recovery is not built yet` : null) }),
    notePendingJoin: assign({ pendingJoins: ({ context, event }) => (event.type === 'DEVICE_JOINED' ? [...context.pendingJoins, event.device] : context.pendingJoins) }),
    beginStep: assign({
      ledger: ({ context: c }) => {
        const ledger = Ledger.fromJSON(c.ledger);
        ledger.begin(c.epoch, c.step + 1, epochSteps(c.input, c.epoch)[c.stepInEpoch]!);
        return ledger.toJSON();
      },
    }),
    recordStep: assign({ lastResult: ({ event }) => (event as unknown as { output: StepResult }).output }),
    applyCommit: assign(({ context: c, event }) => {
      const next = afterCommit(c);
      const r = c.lastResult!;
      const peak = { ...c.peakBytes };
      for (const [d, b] of Object.entries(r.peakBytes)) peak[d] = Math.max(peak[d] ?? 0, b);
      return { ...next, checkpointRef: (event as unknown as { output: { checkpointRef: string } }).output.checkpointRef, peakBytes: peak };
    }),
    recordError: assign({ error: ({ event }) => message((event as unknown as { error: unknown }).error) }),
  },
}).createMachine({
  id: 'run',
  context: ({ input }) => ({
    input,
    devices: [],
    profile: null,
    plan: null,
    epoch: input.resume?.epoch ?? 1,
    stepInEpoch: input.resume?.stepInEpoch ?? 0,
    step: input.resume?.step ?? 0,
    ledger: input.resume?.ledger ?? new Ledger(input.samples).toJSON(),
    checkpointRef: input.resume?.checkpointRef ?? null,
    epochs: input.resume?.epochs ?? [],
    current: input.resume?.current ?? { steps: 0, seconds: 0, lossSum: 0, bytes: 0 },
    lastResult: null,
    peakBytes: {},
    redistribution: null,
    pendingJoins: [],
    error: null,
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
        input: ({ context }) => ({ devices: context.devices }),
        onDone: { target: 'planning', actions: assign({ profile: ({ event }) => event.output }) },
        onError: { target: 'failed', actions: 'recordError' },
      },
    },
    planning: {
      invoke: {
        src: 'planRun',
        input: ({ context }) => ({ devices: context.devices, profile: context.profile }),
        onDone: { target: 'training', actions: assign({ plan: ({ event }) => event.output }) },
        onError: { target: 'failed', actions: 'recordError' },
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
            input: ({ context }) => ({ plan: context.plan, checkpointRef: context.checkpointRef, epoch: context.epoch }),
            onDone: [{ guard: 'resumeInCachedPhase', target: 'redistributing' }, { target: 'pipelineEpoch' }],
            onError: { target: '#run.failed', actions: 'recordError' },
          },
        },
        pipelineEpoch: stepLoop('pipeline', '#run.training.redistributing'),
        redistributing: {
          invoke: {
            src: 'redistribute',
            input: ({ context }) => ({ plan: context.plan }),
            onDone: { target: 'cachedEpochs', actions: assign({ redistribution: ({ event }) => event.output }) },
            onError: { target: '#run.failed', actions: 'recordError' },
          },
        },
        cachedEpochs: stepLoop('cached', '#run.training.cachedEpochs'),
      },
    },
    finishing: {
      invoke: {
        src: 'finishRun',
        input: ({ context: c }) => ({ runId: c.input.runId, state: persisted(c), plan: c.plan, peakBytes: c.peakBytes, redistribution: c.redistribution }),
        onDone: 'done',
        onError: { target: 'failed', actions: 'recordError' },
      },
    },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
});

/** The persisted form of a run context (what `commitStep` writes, what `resume` reads). */
export { persisted as persistedRun };
