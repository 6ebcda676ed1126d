/**
 * The run machine: the coordinator's logic for one distributed PAC run, as a pure XState v5
 * `setup()`. Every effect is only named here; `run-actor.ts` provides the real ones (bus,
 * compute, disk) and tests provide fakes.
 *
 *   gathering -> profiling -> planning -> training.deploying -> training.pipelineEpoch
 *     -> training.redistributing -> training.cachedEpochs -> finishing -> done      (+ failed)
 *   training.* --DEVICE_LOST--> training.recovering (aborting -> replanning) -> training.deploying
 *   step --deadline--> training.replaying (aborting) -> training.deploying | (reloading) -> training.cachedEpochs
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
 * Recovery: a device lost during training (a pipeline step, a cached step, deploying,
 * redistributing, or an earlier recovery) sends the run to `recovering`: leaving the state that
 * waited on it cancels that effect's requests; `abortWork` ends what the survivors have in flight
 * and releases their cached-phase workers (their caches stay; in a pipeline epoch their stages
 * stay loaded); the planner re-plans over a profile restricted to the survivors, the generation
 * grows, and `deploying` deploys the new plan with the coordinator's side network, the last
 * committed state whatever the survivors had applied: a survivor the new plan leaves on the same
 * layers keeps them and only takes the new generation and that state (the re-plan's `kept`), the
 * others load their stage anew (`redeployed`). In
 * epoch 1 the step in flight is then replayed, and the entries that died with the device are
 * recomputed before redistribution; in the cached epochs the new plan is a forward-only pipeline
 * that recomputes the lost shard (`redistributing` refills, releases it and redistributes over
 * the survivors) before the step is replayed. A loss while a step commits waits for the commit.
 * An effect that fails with a retryable error (a device that stopped answering) waits in
 * `stalled` for liveness to report the loss; if none comes, the run fails with that error.
 *
 * Joins and leaves (run-elastic.ts): a device that becomes ready mid-run (DEVICE_JOINED: an
 * optional or unlisted device, a restarted process, a stalled device that came back) or asks to
 * leave (DEVICE_LEAVING) is queued; at the next step boundary the run goes through `recovering`
 * without a step to replay: the joiners' (and in the cached epochs every device's) work is released, the devices are profiled again
 * (joiners with what they reported), the plan is made over the run's devices plus the joiners
 * minus the leavers, and deployed; in the cached epochs `redistributing` gives a joiner its shard
 * and takes the leavers' entries from them before they are dismissed. Recovery waits
 * `debounceMs` first, so that losses, joins and leaves arriving together make one re-plan.
 *
 * Step deadline (step-deadline.ts): a step that does not return in time, or that was in flight
 * when the coordinator's bus reconnected, goes through `replaying`: no re-plan, the same devices
 * end it and take the committed side network under a new generation (their stages, or their
 * cached-phase workers over the same shards), and the step is replayed.
 */
import { assertEvent, assign, fromPromise, setup } from 'xstate';
import { isRetryable } from '../../src/runtime/errors.ts';
import { Ledger } from '../../src/train/ledger.ts';
import { usesCache, type RunSpec } from '../../src/train/run-spec.ts';
import type { Profile } from '../../src/plan/profile.ts';
import type { StageLayout } from '../../src/engine/index.ts';
import type { RunSummary } from './run-summary.ts';
import { MAX_STEP_ATTEMPTS, stepDeadlineMs } from './step-deadline.ts';
import { afterCommit, nextSampleIds, persistedRun, startState, type Phase, type RunHistory } from './run-state.ts';
import { survivorsProfile, type FaultRecord, type PlanBrief, type ReplanRecord } from './run-faults.ts';
import {
  adoptMembership,
  ELASTIC_DEBOUNCE_MS,
  forget,
  noElastic,
  plannedDevices,
  queueJoin,
  queueLeave,
  rebalanceDue,
  releasedAtAbort,
  resetDevices,
} from './run-elastic.ts';
import type {
  AbortInput,
  CommitInput,
  Committed,
  DeployInput,
  Deployment,
  FinishInput,
  PlanInput,
  PlannedRun,
  ReloadInput,
  ProfileInput,
  RedistributeInput,
  Redistributed,
  RunContext,
  RunEvent,
  RunInput,
  RunOutput,
  StepInput,
  StepOutput,
} from './run-io.ts';

export type * from './run-io.ts';
export type { CoordinatorRecord, EpochRecord, EpochTotals, PersistedRun, Phase, RunHistory, StepResult } from './run-state.ts';
export type { FaultRecord, PlanBrief, ReplanRecord, StageRank } from './run-faults.ts';
export type { JoinRecord, LeaveRecord } from './run-elastic.ts';

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const notProvided = <Out, In>(name: string) =>
  fromPromise<Out, In>(async () => {
    throw new Error(`run machine: effect '${name}' was not provided`);
  });

function maxPeaks(peaks: Record<string, number>, step: Record<string, number>): Record<string, number> {
  const out = { ...peaks };
  for (const [d, b] of Object.entries(step)) out[d] = Math.max(out[d] ?? 0, b);
  return out;
}

/** A plan as re-plan records compare them. */
const brief = (layout: StageLayout[], spec: RunSpec, cachedRanks: string[] | null): PlanBrief => ({
  stages: layout,
  microBatches: spec.microBatches ?? 0,
  cachedRanks,
});

/** The run trains from the activation cache (its workers are loaded over their shards). */
const inCachedPhase = (c: RunContext): boolean => c.cached !== null && c.epoch > 1 && usesCache(c.spec);

/** Any effect's failure ends the run with its message. */
const failRun = {
  target: '#run.failed',
  actions: { type: 'recordError', params: ({ event }: { event: { error: unknown } }) => ({ error: event.error }) },
} as const;
/** A retryable failure (a device stopped answering) waits for liveness to say whether a device is lost. */
const failOrStall = [{ guard: 'retryable', target: '#run.training.stalled', actions: failRun.actions }, failRun] as const;

const run = setup({
  types: { context: {} as RunContext, input: {} as RunInput, events: {} as RunEvent, output: {} as RunOutput },
  actors: {
    profileDevices: notProvided<Profile, ProfileInput>('profileDevices'),
    planRun: notProvided<PlannedRun, PlanInput>('planRun'),
    deployPlan: notProvided<Deployment, DeployInput>('deployPlan'),
    trainStep: notProvided<StepOutput, StepInput>('trainStep'),
    commitStep: notProvided<Committed, CommitInput>('commitStep'),
    redistribute: notProvided<Redistributed, RedistributeInput>('redistribute'),
    abortWork: notProvided<void, AbortInput>('abortWork'),
    reloadCached: notProvided<void, ReloadInput>('reloadCached'),
    finishRun: notProvided<RunSummary, FinishInput>('finishRun'),
  },
  delays: {
    gatherTimeout: ({ context }) => context.input.gatherTimeoutMs,
    stallTimeout: ({ context }) => context.input.stallTimeoutMs ?? 10_000,
    debounce: ({ context }) => context.input.debounceMs ?? ELASTIC_DEBOUNCE_MS,
    stepDeadline: ({ context: c }) =>
      stepDeadlineMs({ simulatedStepMs: c.simulatedStepMs, attempt: c.stepAttempt, fixedMs: c.input.stepDeadlineMs }),
  },
  guards: {
    allGathered: ({ context, event }) => {
      assertEvent(event, 'DEVICE_JOINED');
      const have = new Set([...context.devices, event.device]);
      return context.input.expectedDevices.every((d) => have.has(d));
    },
    runComplete: ({ context }) => context.epoch > context.spec.epochs,
    /** Epoch 1 is over and the run trains the rest from PAC's activation cache (without one, every epoch is a pipeline epoch). */
    pipelineEpochDone: ({ context }) => context.epoch > 1 && usesCache(context.spec),
    retryable: ({ event }) => isRetryable((event as { error?: unknown }).error),
    recoveryDue: ({ context }) => context.recoveryDue,
    rebalanceDue: ({ context }) => rebalanceDue(context),
    joinersQueued: ({ context }) => context.joining.length > 0,
    /** A device neither of the run nor already queued: a re-registration of one of the run's devices (after a reconnect) is not. */
    newJoiner: ({ context: c, event }) => {
      assertEvent(event, 'DEVICE_JOINED');
      return !c.devices.includes(event.device) && !c.joining.some((j) => j.device === event.device);
    },
    noDebounce: ({ context }) => context.input.debounceMs === 0,
    /** A leaver handing its cache over went away: the hand-off must be planned without it. */
    departingLost: ({ context, event }) => {
      assertEvent(event, 'DEVICE_LOST');
      return context.departing.includes(event.device);
    },
    stepAttemptsLeft: ({ context }) => context.stepAttempt + 1 < MAX_STEP_ATTEMPTS,
    /** The run trains from the activation cache: its workers hold the whole side network, no stage. */
    cachedPhase: ({ context }) => inCachedPhase(context),
    /** A device this run no longer counts on (lost before, or a restarted process under its name). */
    notInRun: ({ context, event }) => {
      assertEvent(event, 'DEVICE_LOST');
      return !context.devices.includes(event.device);
    },
    lastDevice: ({ context, event }) => {
      assertEvent(event, 'DEVICE_LOST');
      return context.devices.every((d) => d === event.device);
    },
    /** The device holds no stage of the plan. */
    outsidePlan: ({ context, event }) => {
      assertEvent(event, 'DEVICE_LOST');
      return !context.layout.some((s) => s.devices.includes(event.device));
    },
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
        return `device ${event.device} lost before training${event.reason ? ` (${event.reason})` : ''}: no device is left`;
      },
    }),
    /** The device is gone for this run; what it was doing is recorded for the summary. */
    noteFault: assign(({ context: c, event }, p: { during: string; recover: boolean }) => {
      assertEvent(event, 'DEVICE_LOST');
      const fault: FaultRecord = {
        device: event.device,
        reason: event.reason ?? 'lost',
        during: p.during,
        epoch: c.epoch,
        step: c.step + 1,
        lostAt: event.at ?? null,
        recoveredAt: null,
      };
      return {
        devices: c.devices.filter((d) => d !== event.device),
        lost: [...c.lost, event.device],
        faults: [...c.faults, fault],
        recoveryDue: c.recoveryDue || p.recover,
      };
    }),
    noteNoSurvivor: assign({
      error: ({ context, event }) => {
        assertEvent(event, 'DEVICE_LOST');
        return `device ${event.device} lost${event.reason ? ` (${event.reason})` : ''}: no device is left to train on (lost: ${context.lost.join(', ')})`;
      },
    }),
    queueJoin: assign(({ context, event }) => {
      assertEvent(event, 'DEVICE_JOINED');
      return queueJoin(context, event.device, event.at ?? null);
    }),
    queueLeave: assign(({ context, event }) => {
      assertEvent(event, 'DEVICE_LEAVING');
      return queueLeave(context, event.device, event.reason, event.at ?? null);
    }),
    forget: assign(({ context, event }) => {
      assertEvent(event, 'DEVICE_LOST');
      return forget(context, event.device);
    }),
    /** The leavers' work is handed over: they may go (the binding tells them to drain). */
    dismiss: (_, _params: { devices: string[] }) => {},
    dismissed: assign({ departing: [] }),
    beginStep: assign({
      ledger: ({ context: c }) => {
        const ledger = Ledger.fromJSON(c.ledger);
        ledger.begin(c.epoch, c.step + 1, nextSampleIds(c, c.spec));
        return ledger.toJSON();
      },
    }),
    applyDeployment: assign(({ context: c }, d: Deployment) => ({
      fingerprint: d.fingerprint,
      heldWeights: d.heldWeights,
      side: d.side,
      // The re-plan this deployment carried out learns which stages stayed where they were.
      replans: c.replans.map((r) => (r.generation === c.generation ? { ...r, kept: d.kept, redeployed: d.redeployed } : r)),
    })),
    /** The plan over the survivors and joiners, without the leavers, becomes the run's, under the next generation. */
    adoptReplan: assign(({ context: c }, p: PlannedRun) => {
      const generation = c.generation + 1;
      const cached = c.epoch > 1;
      const { joined, left, ...membership } = adoptMembership(c, { plannedAt: p.plannedAt, generation });
      const record: ReplanRecord = {
        generation,
        lost: c.faults.slice(c.answeredFaults).map((f) => f.device),
        joined,
        left,
        devices: membership.devices,
        at: p.plannedAt,
        from: brief(c.layout, c.spec, c.cached?.ranks ?? null),
        to: brief(p.layout, p.spec, cached ? membership.devices : null),
        kept: null,
        redeployed: null,
      };
      return {
        ...membership,
        answeredFaults: c.faults.length,
        generation,
        plan: p.plan,
        layout: p.layout,
        spec: p.spec,
        simulatedStepMs: p.simulatedStepMs,
        replans: [...c.replans, record],
      };
    }),
    /** The same plan under the next generation: a replay is recorded as a re-plan that changes nothing. */
    adoptReplay: assign(({ context: c }) => {
      const generation = c.generation + 1;
      const same = brief(c.layout, c.spec, c.cached?.ranks ?? null);
      const record: ReplanRecord = {
        generation,
        lost: [],
        joined: [],
        left: [],
        devices: c.devices,
        at: Date.now(),
        from: same,
        to: same,
        kept: null,
        redeployed: null,
      };
      return { answeredFaults: c.faults.length, generation, replans: [...c.replans, record] };
    }),
    /** The cached phase loads no stage: a replay there keeps and reloads none. */
    noStagesDeployed: assign({
      replans: ({ context: c }) => c.replans.map((r) => (r.generation === c.generation ? { ...r, kept: [], redeployed: [] } : r)),
    }),
    recordError: assign((_, p: { error: unknown }) => ({ error: message(p.error) })),
    noteStepExpired: assign({ stepAttempt: ({ context }) => context.stepAttempt + 1 }),
    noteStepGivenUp: assign({
      error: ({ context: c }) => `step ${c.step + 1} (epoch ${c.epoch}) did not complete in ${MAX_STEP_ATTEMPTS} attempts`,
    }),
  },
});

/**
 * What DEVICE_LOST does in a training state: nothing for a device the run no longer counts on;
 * the run fails when no device is left; in epoch 1 a device outside the plan is only recorded
 * (it holds no stage, and any cache entries it had are recomputed before redistribution);
 * otherwise the run recovers, or (`defer`: a step is committing) recovers once the commit is done.
 */
function onLoss(during: string, o: { pipeline?: boolean; defer?: boolean } = {}) {
  const note = (recover: boolean) => ({ type: 'noteFault', params: { during, recover } }) as const;
  return [
    ...(o.defer ? [] : ([{ guard: 'departingLost', target: '#run.training.recovering', reenter: true, actions: 'forget' }] as const)),
    { guard: 'notInRun', actions: 'forget' },
    { guard: 'lastDevice', target: '#run.failed', actions: [note(false), 'noteNoSurvivor'] },
    ...(o.pipeline ? ([{ guard: 'outsidePlan', actions: note(false) }] as const) : []),
    o.defer ? { actions: note(true) } : { target: '#run.training.recovering', reenter: true, actions: note(true) },
  ] as const;
}

/** A loss before training starts: profile and plan again over who is left (nothing is deployed yet). */
function beforeTraining(during: string) {
  return [
    { guard: 'notInRun', actions: 'forget' },
    { guard: 'lastDevice', target: '#run.failed', actions: 'noteDeviceLost' },
    { target: '#run.profiling', reenter: true, actions: { type: 'noteFault', params: { during, recover: false } } },
  ] as const;
}

/** The step in flight is given up and replayed on the same devices, or the run fails after too many attempts. */
const replayStep = [
  { guard: 'stepAttemptsLeft', target: '#run.training.replaying', reenter: true, actions: 'noteStepExpired' },
  { target: '#run.failed', actions: 'noteStepGivenUp' },
] as const;

/** Steps of one phase until the run or (pipeline) its only epoch is over. */
function stepLoop(phase: Phase) {
  const pipeline = phase === 'pipeline';
  return run.createStateConfig({
    initial: 'step',
    states: {
      step: {
        entry: 'beginStep',
        on: { DEVICE_LOST: onLoss(`${phase} step`, { pipeline }), BUS_RECONNECTED: replayStep },
        after: { stepDeadline: replayStep },
        invoke: {
          src: 'trainStep',
          input: ({ context: c }) => ({
            runId: c.input.runId,
            phase,
            epoch: c.epoch,
            step: c.step + 1,
            sampleIds: nextSampleIds(c, c.spec),
            spec: c.spec,
            groups: pipeline ? c.layout.map((s) => s.devices) : [c.cached!.ranks],
            shares: pipeline ? c.layout.map((s) => s.shares) : [c.cached!.ranks.map(() => 1)],
            side: c.side,
          }),
          onDone: {
            target: 'commit',
            actions: assign(({ context: c, event }) => {
              const { side, ...result } = event.output;
              return { side, lastResult: result, bytes: { ...c.bytes, [phase]: c.bytes[phase] + result.bytes } };
            }),
          },
          onError: failOrStall,
        },
      },
      commit: {
        on: { DEVICE_LOST: onLoss('committing', { pipeline, defer: true }) },
        invoke: {
          src: 'commitStep',
          input: ({ context: c }) => ({
            runId: c.input.runId,
            phase,
            result: c.lastResult!,
            state: { ...afterCommit(c, c.spec, c.lastResult!), history: historyAtCommit(c, Date.now()) },
            spec: c.spec,
            fingerprint: c.fingerprint,
            side: c.side!,
          }),
          onDone: {
            target: 'committed',
            actions: assign(({ context: c, event }) => ({
              ...afterCommit(c, c.spec, c.lastResult!),
              checkpointRef: event.output.checkpointRef,
              stepAttempt: 0,
              peakBytes: maxPeaks(c.peakBytes, c.lastResult!.peakBytes),
              faults: recoveredBy(c, event.output.committedAt),
            })),
          },
          onError: failRun,
        },
      },
      committed: {
        always: [
          { guard: 'runComplete', target: '#run.finishing' },
          { guard: 'recoveryDue', target: '#run.training.recovering' },
          { guard: 'rebalanceDue', target: '#run.training.recovering' },
          ...(pipeline ? ([{ guard: 'pipelineEpochDone', target: '#run.training.redistributing' }] as const) : []),
          { target: 'step' },
        ],
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
    ...noElastic,
    ...restoredHistory(input),
    generation: input.firstGeneration ?? 0,
    lost: [],
    recoveryDue: false,
    stepAttempt: 0,
    error: null,
    summary: null,
  }),
  initial: 'gathering',
  on: { DEVICE_JOINED: { actions: 'queueJoin' }, DEVICE_LEAVING: { actions: 'queueLeave' } },
  states: {
    gathering: {
      on: {
        DEVICE_JOINED: [{ guard: 'allGathered', target: 'profiling', actions: 'addDevice' }, { actions: 'addDevice' }],
        DEVICE_LOST: { actions: 'dropDevice' },
      },
      after: {
        gatherTimeout: {
          target: 'failed',
          actions: assign({
            error: ({ context }) =>
              `gathering timed out: waiting for ${context.input.expectedDevices.filter((d) => !context.devices.includes(d)).join(', ')}`,
          }),
        },
      },
    },
    profiling: {
      on: { DEVICE_LOST: beforeTraining('profiling') },
      invoke: {
        src: 'profileDevices',
        input: ({ context }) => ({ devices: context.devices, spec: context.spec }),
        onDone: { target: 'planning', actions: assign({ profile: ({ event }) => event.output }) },
        onError: failRun,
      },
    },
    planning: {
      on: { DEVICE_LOST: beforeTraining('planning') },
      invoke: {
        src: 'planRun',
        input: ({ context }) => ({ devices: context.devices, profile: context.profile!, spec: context.spec }),
        onDone: {
          target: 'training',
          actions: assign(({ context, event }) => ({
            answeredFaults: context.faults.length,
            plan: event.output.plan,
            layout: event.output.layout,
            spec: event.output.spec,
            simulatedStepMs: event.output.simulatedStepMs,
          })),
        },
        onError: failRun,
      },
    },
    training: {
      initial: 'deploying',
      states: {
        deploying: {
          on: { DEVICE_LOST: onLoss('deploying') },
          invoke: {
            src: 'deployPlan',
            // The devices start numbering at the step after the last committed one.
            input: ({ context: c }) => ({
              spec: c.spec,
              layout: c.layout,
              devices: [...c.devices, ...c.departing.filter((d) => !c.devices.includes(d))],
              generation: c.generation,
              side: c.side,
              checkpointRef: c.checkpointRef,
              epoch: c.epoch,
              firstStep: c.step + 1,
            }),
            onDone: [
              {
                // Resumed after its last commit (the summary was never written): only finish.
                guard: 'runComplete',
                target: '#run.finishing',
                actions: { type: 'applyDeployment', params: ({ event }) => event.output },
              },
              {
                guard: 'pipelineEpochDone',
                target: 'redistributing',
                actions: { type: 'applyDeployment', params: ({ event }) => event.output },
              },
              {
                target: 'pipelineEpoch',
                // Epoch 1's caches are refilled at its end: nothing of the leavers' is waited for.
                actions: [
                  { type: 'applyDeployment', params: ({ event }) => event.output },
                  { type: 'dismiss', params: ({ context }) => ({ devices: context.departing }) },
                  'dismissed',
                ],
              },
            ],
            onError: failOrStall,
          },
        },
        pipelineEpoch: stepLoop('pipeline'),
        redistributing: {
          on: { DEVICE_LOST: onLoss('redistribution') },
          invoke: {
            src: 'redistribute',
            input: ({ context: c }) => ({
              spec: c.spec,
              layout: c.layout,
              devices: c.devices,
              sources: c.departing,
              previous: c.cached,
              generation: c.generation,
              fingerprint: c.fingerprint,
              side: c.side!,
              firstStep: c.step + 1,
            }),
            onDone: {
              target: 'cachedEpochs',
              actions: [
                assign(({ context: c, event }) => ({
                  cached: event.output.cached,
                  redistribution: event.output.redistribution,
                  bytes: { ...c.bytes, redistribution: c.bytes.redistribution + event.output.bytes },
                  cacheEntries: {
                    recomputed: c.cacheEntries.recomputed + event.output.entries.recomputed,
                    fromReplica: c.cacheEntries.fromReplica + event.output.entries.fromReplica,
                  },
                })),
                { type: 'dismiss', params: ({ context }) => ({ devices: context.departing }) },
                'dismissed',
              ],
            },
            onError: failOrStall,
          },
        },
        cachedEpochs: stepLoop('cached'),
        /** A device stopped answering: liveness reports it lost within its deadline, or the run fails with the error. */
        stalled: {
          on: { DEVICE_LOST: onLoss('stalled') },
          after: { stallTimeout: '#run.failed' },
        },
        /**
         * A step given up with no device lost: nothing is re-planned. The same devices end what
         * they have in flight and take the committed side network under the next generation: in
         * a pipeline epoch every stage stays loaded (the deployment keeps them all), in a cached
         * epoch the workers are loaded again over the shards they had (no cache moves). A loss
         * meanwhile takes the full recovery.
         */
        replaying: {
          entry: assign({ error: null }),
          on: { DEVICE_LOST: onLoss('replay') },
          initial: 'aborting',
          states: {
            aborting: {
              invoke: {
                src: 'abortWork',
                input: ({ context: c }) => ({ devices: c.devices, release: inCachedPhase(c) ? c.devices : [], lost: [] }),
                onDone: [
                  { guard: 'cachedPhase', target: 'reloading', actions: 'adoptReplay' },
                  { target: '#run.training.deploying', actions: 'adoptReplay' },
                ],
                onError: failOrStall,
              },
            },
            reloading: {
              invoke: {
                src: 'reloadCached',
                input: ({ context: c }) => ({ cached: c.cached!, generation: c.generation, firstStep: c.step + 1, side: c.side! }),
                onDone: { target: '#run.training.cachedEpochs', actions: 'noStagesDeployed' },
                onError: failOrStall,
              },
            },
          },
        },
        recovering: {
          entry: assign({ recoveryDue: false, error: null }),
          on: { DEVICE_LOST: onLoss('recovery') },
          initial: 'settling',
          states: {
            /** Losses, joins and leaves arriving together make one re-plan (a loss re-enters `recovering`). */
            settling: { always: { guard: 'noDebounce', target: 'aborting' }, after: { debounce: 'aborting' } },
            /**
             * A device joining before the re-plan (a lost device that speaks again, late under
             * load) may still hold the stage it had: the abort starts over with it included, as
             * does a join while the joiners are profiled.
             */
            aborting: {
              on: { DEVICE_JOINED: { guard: 'newJoiner', target: 'aborting', reenter: true, actions: 'queueJoin' } },
              invoke: {
                src: 'abortWork',
                input: ({ context: c }) => ({
                  devices: resetDevices(c),
                  release: releasedAtAbort(c, !(c.epoch > 1 && usesCache(c.spec))),
                  lost: c.faults.slice(c.answeredFaults).map((f) => f.device),
                }),
                // Joiners are profiled with what they reported; the others keep the profile they had.
                onDone: [{ guard: 'joinersQueued', target: 'profiling' }, { target: 'replanning' }],
                onError: failOrStall,
              },
            },
            profiling: {
              on: { DEVICE_JOINED: { guard: 'newJoiner', target: 'aborting', actions: 'queueJoin' } },
              invoke: {
                src: 'profileDevices',
                input: ({ context: c }) => ({ devices: plannedDevices(c), spec: c.spec }),
                onDone: { target: 'replanning', actions: assign({ profile: ({ event }) => event.output }) },
                onError: failRun,
              },
            },
            replanning: {
              invoke: {
                src: 'planRun',
                // The topology's micro-batch count, or the planner's choice for these devices.
                input: ({ context: c }) => ({
                  devices: plannedDevices(c),
                  profile: survivorsProfile(c.profile!, plannedDevices(c)),
                  spec: c.input.spec,
                }),
                onDone: { target: '#run.training.deploying', actions: { type: 'adoptReplan', params: ({ event }) => event.output } },
                onError: {
                  target: '#run.failed',
                  actions: assign({
                    error: ({ context, event }) =>
                      `re-planning over ${plannedDevices(context).join(', ')} after losing ${context.lost.join(', ')}: ${message(event.error)}`,
                  }),
                },
              },
            },
          },
        },
      },
    },
    finishing: {
      invoke: {
        src: 'finishRun',
        input: ({ context: c }) => ({
          runId: c.input.runId,
          state: persistedRun(c),
          spec: c.spec,
          plan: c.plan!,
          layout: c.layout,
          simulatedStepMs: c.simulatedStepMs,
          heldWeights: c.heldWeights,
          peakBytes: c.peakBytes,
          bytes: c.bytes,
          redistribution: c.redistribution,
          cacheEntries: c.cacheEntries,
          resumedFromStep: c.input.resume?.step ?? null,
          faults: c.faults,
          replans: c.replans,
          joins: c.joins,
          leaves: c.leaves,
          coordinators: c.coordinators,
          joinedLate: c.joining.map((j) => j.device),
          leaving: [...c.departing, ...c.leaving.map((l) => l.device)],
        }),
        onDone: { target: 'done', actions: assign({ summary: ({ event }) => event.output }) },
        onError: failRun,
      },
    },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
  output: ({ context }): RunOutput =>
    context.summary ? { status: 'done', summary: context.summary } : { status: 'failed', error: context.error ?? 'run failed' },
});

/** What a run started from a commit already went through (empty for a new run), and this coordinator. */
function restoredHistory(
  input: RunInput,
): Pick<RunContext, 'faults' | 'answeredFaults' | 'replans' | 'joins' | 'leaves' | 'coordinators' | 'cacheEntries'> {
  const h = input.resume?.history;
  return {
    faults: h?.faults ?? [],
    answeredFaults: h?.faults.length ?? 0,
    replans: h?.replans ?? [],
    joins: h?.joins ?? [],
    leaves: h?.leaves ?? [],
    coordinators: [...(h?.coordinators ?? []), ...(input.coordinatorProcess ? [input.coordinatorProcess] : [])],
    cacheEntries: h?.cacheEntries ?? { recomputed: 0, fromReplica: 0 },
  };
}

/** The faults once a step commits at `at`: those a re-plan answered are recovered (a loss during the commit is not). */
function recoveredBy(c: RunContext, at: number): FaultRecord[] {
  return c.faults.map((f) => (f.recoveredAt === null && !c.recoveryDue ? { ...f, recoveredAt: at } : f));
}

/** The history persisted with a commit at `now`: the faults this commit answers count as recovered by it. */
function historyAtCommit(c: RunContext, now: number): RunHistory {
  return {
    faults: recoveredBy(c, now),
    replans: c.replans,
    joins: c.joins,
    leaves: c.leaves,
    coordinators: c.coordinators,
    cacheEntries: c.cacheEntries,
  };
}
