/**
 * The run machine's binding: the real effects of one distributed PAC run, driven from the
 * coordinator's process over the bus.
 *
 * - profileDevices: a planner profile of the devices it is given, the links between them measured
 *   over the bus first (run-profiles.ts).
 * - planRun: the planner (1F1B makespan over orders, groups, micro-batch counts) over the
 *   profile it is given (after a loss: the survivors'); a model that fits nowhere fails the run
 *   with the planner's explanation.
 * - deployPlan: `release` to the run's devices the plan leaves out, then `assign` to every stage
 *   rank on dev.<d>.ctl (each loads only its layers; a device that still holds the same layers
 *   from the last plan keeps them and answers `kept`) under the plan's generation, with the side
 *   network the coordinator holds (after a re-plan) or the checkpoint's (a resumed run).
 * - trainStep: train-step.ts.
 * - commitStep: side-network checkpoint (src/train/checkpoint.ts) and state.json, written by the
 *   commit writer thread while the next step runs (commit-writer.ts); at an epoch's end, in place
 *   before EPOCH_DONE.
 * - redistribute: redistribute.ts.
 * - abortWork: `abort` on the survivors of a loss, then `release` on those the machine names.
 * - reloadCached: `cached-load` again over the same shards (a replayed cached step).
 * - finishRun: summary.json, then `finish` on every device.
 * - dismiss: `drain` to leavers whose work is handed over; a device asking to leave (coord.join
 *   `leaving`) is queued for the next step boundary when it is one of the run's devices.
 *
 * Every effect passes its AbortSignal to its control requests, so a machine that leaves a state
 * (a device lost mid-step) stops waiting for that state's answers at once.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createActor, fromPromise, toPromise } from 'xstate';
import type { Bus } from '../../src/bus/index.ts';
import { loadConfig } from '../../src/model/load.ts';
import { planPipeline, planOptionsForRun, InfeasiblePlanError, type StagePlan } from '../../src/plan/planner.ts';
import { simulatePlan } from '../../src/plan/simulator.ts';
import type { Profile } from '../../src/plan/profile.ts';
import type { StageLayout } from '../../src/engine/index.ts';
import type { Topology } from '../../src/topology/schema.ts';
import { checkResumable, loadCheckpoint, type CheckpointMeta } from '../../src/train/checkpoint.ts';
import { specFromTopology, usesCache, type RunSpec } from '../../src/train/run-spec.ts';
import { repackState, type SideState } from '../../src/engine/index.ts';
import type { Coordinator } from './actor.ts';
import { RunProfiles } from './run-profiles.ts';
import { watchRunDevices } from './liveness.ts';
import { broadcast, control, CTL_TIMEOUT_MS } from './control.ts';
import { loadCachedWorkers, redistributeEffect } from './redistribute.ts';
import { saveSide, sideCheckpointIdentity, writeJsonAtomic } from './commit-files.ts';
import { CommitWriter } from './commit-writer.ts';
import { EpochOneSpeeds } from './epoch-speeds.ts';
import { StepShares } from './step-shares.ts';
import { trainStepEffect } from './train-step.ts';
import { watchStepAttempts } from './step-deadline.ts';
import {
  runMachine,
  type AbortInput,
  type CommitInput,
  type Committed,
  type DeployInput,
  type Deployment,
  type FinishInput,
  type CoordinatorRecord,
  type PersistedRun,
  type RunInput,
  type PlanInput,
  type PlannedRun,
  type ProfileInput,
  type ReloadInput,
} from './run-machine.ts';
import { buildSummary, type RunSummary } from './run-summary.ts';
import { TimelineSampler } from './run-record.ts';

export type { RunSummary } from './run-summary.ts';

export interface RunTrainingOptions {
  topology: Topology;
  bus: Bus;
  coordinator: Coordinator;
  runDir: string;
  /** Plan with this profile instead of the measured one (e.g. `--profile FILE`). */
  profile?: Profile;
  /** Devices must have registered and profiled within this time (default 60 s). */
  gatherTimeoutMs?: number;
  /** Deadline of one step's replies (default 10 min). */
  stepTimeoutMs?: number;
  /** Aborting stops the run machine; runTraining rejects. */
  signal?: AbortSignal;
  /**
   * Continue a run from its committed state (state.json of `runDir`, see readResumeState): the
   * side network and optimiser come from the checkpoint it names, the ledger and position from
   * the state; activation caches lost with the old processes are recomputed.
   */
  resume?: PersistedRun;
  /** The first plan generation (a coordinator taking the run over starts above its predecessor's). */
  firstGeneration?: number;
  /** The devices to gather before profiling (default: the topology's non-optional ones; a successor: those it took over). */
  expectedDevices?: string[];
  /** This coordinator process, recorded in summary.json `coordinators` after its predecessors. */
  coordinatorProcess?: CoordinatorRecord;
}

export interface RunOutcome {
  runDir: string;
  summary: RunSummary;
}

/** A stage rank of the plan: its device, stage and rank inside the stage's group. */
function participants(layout: StageLayout[]): { device: string; stage: number; rank: number }[] {
  return layout.flatMap((st, s) => st.devices.map((d, rank) => ({ device: d, stage: s, rank })));
}

/** The side network of a checkpoint, as the coordinator keeps it. */
function sideOfCheckpoint(ref: string): { meta: CheckpointMeta; side: SideState } {
  const { meta, state: ck } = loadCheckpoint(ref);
  return {
    meta,
    side: {
      params: new Map([...ck.parameters].map(([n, p]) => [n, p.data])),
      shapes: new Map([...ck.parameters].map(([n, p]) => [n, p.shape])),
      optimizer: ck.optimizer,
    },
  };
}

/** What the run machine of `o.topology`'s run starts from, `spec` being the topology's run spec. */
export function runInput(o: Omit<RunTrainingOptions, 'bus' | 'coordinator' | 'runDir'>, spec: RunSpec): RunInput {
  return {
    runId: o.topology.run,
    spec,
    expectedDevices: o.expectedDevices ?? o.topology.devices.filter((d) => !d.optional).map((d) => d.name),
    gatherTimeoutMs: o.gatherTimeoutMs ?? 60_000,
    stepDeadlineMs: o.topology.training.stepDeadlineMs,
    ...(o.resume ? { resume: o.resume } : {}),
    ...(o.firstGeneration ? { firstGeneration: o.firstGeneration } : {}),
    ...(o.coordinatorProcess ? { coordinatorProcess: o.coordinatorProcess } : {}),
  };
}

/** Runs the whole training of `topology` on the registered devices; resolves with the run directory and summary. */
export async function runTraining(o: RunTrainingOptions): Promise<RunOutcome> {
  const { bus, coordinator, topology, runDir } = o;
  // Planning fills in the micro-batch count: effects take the spec from their input, not from here.
  const topologySpec = specFromTopology(topology);
  const config = loadConfig(topologySpec.model);
  const events = coordinator.events;
  const emit = (type: string, fields: Record<string, unknown>) => events.emit(type, fields);
  const started = performance.now();
  mkdirSync(join(runDir, 'checkpoints'), { recursive: true });
  const metricsFile = join(runDir, 'metrics.jsonl');
  const timelines = new TimelineSampler(runDir);
  const checkpointDir = join(runDir, 'checkpoints', 'latest');
  const commits = new CommitWriter(runDir, checkpointDir);
  commits.start();
  const names = topology.devices.map((d) => d.name);
  /** Every device that took part: the topology's and those that joined unlisted. */
  const everyone = () => [...new Set([...names, ...coordinator.registry.devices().map((d) => d.name)])];

  const speeds = new EpochOneSpeeds();
  const stepShares = new StepShares();
  const profiles = new RunProfiles({
    bus,
    registry: coordinator.registry,
    topology,
    config,
    emit,
    ...(o.profile ? { profile: o.profile } : {}),
  });

  const dismiss = (devices: string[]) => {
    for (const d of devices) {
      emit('DEVICE_DISMISSED', { device: d });
      void control(bus, d, 'drain', 'handed over').catch(() => {});
    }
  };
  const logic = runMachine.provide({
    actions: { dismiss: (_, p) => dismiss(p.devices) },
    actors: {
      profileDevices: fromPromise<Profile, ProfileInput>(async ({ input: { devices, spec }, signal }) => {
        await profiles.surveyLinks(devices, spec, signal);
        return profiles.profileOf(devices, spec);
      }),
      planRun: fromPromise<PlannedRun, PlanInput>(async ({ input: { devices, profile, spec } }) => {
        let plan: StagePlan;
        try {
          plan = planPipeline(profile, planOptionsForRun(spec));
        } catch (err) {
          if (err instanceof InfeasiblePlanError) throw new Error(`no plan fits on ${devices.join(', ')}: ${err.lines.join('; ')}`);
          throw err;
        }
        const layout = plan.stages.map((s) => ({
          from: s.layers.from,
          to: s.layers.to,
          devices: s.devices.map((d) => d.name),
          shares: s.devices.map((d) => d.rows),
        }));
        const simulatedStepMs = simulatePlan(plan, profile).stepMs;
        emit('RUN_PLANNED', {
          devices,
          stages: layout,
          unused: plan.unusedDevices,
          microBatches: plan.microBatches,
          predictedStepMs: plan.predicted.stepMs,
          simulatedStepMs,
          // Whose figures came from timing the run's own work (the others: matmul rate or --profile).
          timed: devices.filter((d) => !o.profile?.devices.some((p) => p.name === d) && coordinator.registry.get(d)?.timings),
          links: profiles.linksOf(devices),
        });
        return { plan, layout, spec: { ...spec, microBatches: plan.microBatches }, simulatedStepMs, plannedAt: Date.now() };
      }),
      deployPlan: fromPromise<Deployment, DeployInput>(
        async ({ input: { spec, layout, devices, generation, side: committed, checkpointRef, epoch, firstStep }, signal }) => {
          const resumed = !committed && checkpointRef ? sideOfCheckpoint(checkpointRef) : null;
          const side = committed ?? resumed?.side ?? null;
          // In the cached phase the side network goes out with `cached-load` instead.
          const state = side && (epoch === 1 || !usesCache(spec)) ? { state: repackState(side) } : {};
          const ranks = participants(layout);
          // A device the plan leaves out may still hold the stage an earlier plan gave it.
          const unused = devices.filter((d) => !ranks.some((p) => p.device === d));
          await broadcast(bus, unused, 'release', () => ({}), { signal });
          const replies = await broadcast<{ fingerprint: string; weights: string[]; kept?: boolean }>(
            bus,
            ranks.map((p) => p.device),
            'assign',
            (d) => {
              const p = ranks.find((x) => x.device === d)!;
              return { spec, stages: layout, stage: p.stage, rank: p.rank, generation, firstStep, ...state };
            },
            { timeoutMs: 5 * CTL_TIMEOUT_MS, signal },
          );
          const fingerprint = [...replies.values()][0]!.fingerprint;
          if (resumed) checkResumable(resumed.meta, { ...sideCheckpointIdentity(spec), modelFingerprint: fingerprint });
          const stageRank = (p: (typeof ranks)[number]) => ({ ...p, from: layout[p.stage]!.from, to: layout[p.stage]!.to });
          const kept = ranks.filter((p) => replies.get(p.device)?.kept).map(stageRank);
          const redeployed = ranks.filter((p) => !replies.get(p.device)?.kept).map(stageRank);
          emit('RUN_DEPLOYED', {
            generation,
            devices: Object.fromEntries([...replies].map(([d, r]) => [d, r.weights.length])),
            kept: kept.map((p) => p.device),
          });
          return { fingerprint, heldWeights: Object.fromEntries([...replies].map(([d, r]) => [d, r.weights])), side, kept, redeployed };
        },
      ),
      trainStep: trainStepEffect({
        bus,
        emit,
        speeds,
        stepShares,
        timelines,
        metricsFile,
        stepTimeoutMs: o.stepTimeoutMs ?? 600_000,
        ...(o.signal ? { runSignal: o.signal } : {}),
      }),
      commitStep: fromPromise<Committed, CommitInput>(async ({ input }) => {
        const closed =
          input.state.epochs.length > 0 && input.state.epochs.at(-1)!.epoch === input.state.epoch - 1 && input.state.stepInEpoch === 0;
        // An ordinary step is written while the next one runs; an epoch's end is announced with its files in place.
        if (!closed) await commits.write(input);
        else {
          await commits.writeNow(input);
          const e = input.state.epochs.at(-1)!;
          saveSide(join(runDir, 'checkpoints', `epoch-${e.epoch}`), input);
          appendFileSync(metricsFile, JSON.stringify({ type: 'epoch', ...e }) + '\n');
          emit('EPOCH_DONE', { ...e });
        }
        return { checkpointRef: checkpointDir, committedAt: Date.now() };
      }),
      redistribute: redistributeEffect({ bus, config, gflops: (d) => profiles.gflops(d), msPerRow: (d) => speeds.msPerRow(d), emit }),
      abortWork: fromPromise<void, AbortInput>(async ({ input: { devices, release, lost }, signal }) => {
        emit('RECOVERING', { lost, devices });
        await broadcast(bus, devices, 'abort', () => ({}), { signal });
        await broadcast(bus, release, 'release', () => ({}), { signal });
      }),
      reloadCached: fromPromise<void, ReloadInput>(async ({ input, signal }) => {
        await loadCachedWorkers(bus, input, signal);
        emit('RUN_RELOADED', { generation: input.generation, devices: input.cached.ranks });
      }),
      finishRun: fromPromise<RunSummary, FinishInput>(async ({ input }) => {
        await commits.settled();
        const summary = buildSummary(input, {
          runDir,
          checkpoint: checkpointDir,
          devices: profiles.measured(everyone()),
          seconds: (performance.now() - started) / 1000,
        });
        writeJsonAtomic(join(runDir, 'summary.json'), summary);
        await Promise.allSettled(everyone().map((d) => control(bus, d, 'finish', {})));
        dismiss(input.leaving);
        emit('RUN_FINISHED', {
          runDir,
          epochs: summary.epochs.map((e) => ({ epoch: e.epoch, phase: e.phase, loss: e.loss, seconds: e.seconds })),
        });
        return summary;
      }),
    },
  });

  const actor = createActor(logic, { input: runInput(o, topologySpec) });
  const liveness = watchRunDevices({
    registry: coordinator.registry,
    joined: (device) => actor.send({ type: 'DEVICE_JOINED', device, at: Date.now() }),
    lost: (device, reason) => actor.send({ type: 'DEVICE_LOST', device, reason, at: Date.now() }),
  });
  actor.subscribe((snap) => {
    coordinator.setRunPhase(statePath(snap.value));
    const c = snap.context;
    coordinator.setElastic({ joining: c.joining.map((j) => j.device), leaving: [...c.leaving.map((l) => l.device), ...c.departing] });
  });
  // A device of the run that asks to leave is let go once its work is handed over at a step boundary.
  coordinator.onLeaving((device, reason) => {
    const snap = actor.getSnapshot();
    if (snap.status !== 'active' || !snap.matches('training') || !snap.context.devices.includes(device)) return false;
    emit('DEVICE_LEAVING', { device, reason });
    actor.send({ type: 'DEVICE_LEAVING', device, reason, at: Date.now() });
    return true;
  });
  const stopStepWatch = watchStepAttempts(bus, actor, emit);
  const onAbort = () => actor.stop();
  o.signal?.addEventListener('abort', onAbort);
  actor.start();
  if (o.resume) emit('RUN_RESUMED', { step: o.resume.step, epoch: o.resume.epoch, stepInEpoch: o.resume.stepInEpoch });
  for (const d of everyone()) liveness.check(d);
  try {
    // A stopped actor (aborted) completes without output.
    const out = await toPromise(actor).catch((err) => {
      throw o.signal?.aborted ? new Error('run interrupted') : err;
    });
    if (o.signal?.aborted) throw new Error('run interrupted');
    if (out.status === 'failed') {
      emit('RUN_FAILED', { error: out.error });
      throw new Error(out.error);
    }
    return { runDir, summary: out.summary };
  } finally {
    liveness.stop();
    coordinator.onLeaving(null);
    stopStepWatch();
    coordinator.setRunPhase(null);
    coordinator.setElastic(null);
    o.signal?.removeEventListener('abort', onAbort);
    if (actor.getSnapshot().status === 'active') actor.stop();
    await commits.close().catch(() => {});
  }
}

/** A (possibly nested) state value as a dotted path, e.g. 'training.pipelineEpoch.step'. */
function statePath(value: unknown): string {
  const parts: string[] = [];
  while (value && typeof value === 'object') {
    const [key, inner] = Object.entries(value)[0] ?? [];
    if (key === undefined) break;
    parts.push(key);
    value = inner;
  }
  if (typeof value === 'string') parts.push(value);
  return parts.join('.');
}
