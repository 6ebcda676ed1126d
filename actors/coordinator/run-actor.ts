/**
 * The run machine's binding: the real effects of one distributed PAC run, driven from the
 * coordinator's process over the bus.
 *
 * - profileDevices: a planner profile from what each device measured at registration.
 * - planRun: H6's planner (1F1B makespan over orders, groups, micro-batch counts); a model that
 *   fits nowhere fails the run with the planner's explanation.
 * - deployPlan: `assign` to every stage rank on dev.<d>.ctl (each loads only its layers).
 * - trainStep: `step` (pipeline epoch) or `cached-step` to every participant at once; rank 0 of
 *   every stage group (the one rank 0 of the cached phase) returns its side state while the
 *   coordinator has none, afterwards only its group's reduced gradient, on which the coordinator
 *   replays the devices' AdamW update bit for bit (src/engine/side-state.ts replayStep).
 * - commitStep: side-network checkpoint (src/train/checkpoint.ts), state.json, metrics.jsonl.
 * - redistribute: release the stages, ask every cache what it holds, shard by speed keeping
 *   entries where they are (src/plan/cached.ts), move the rest cache-to-cache, load the
 *   whole side network + head on every device.
 * - finishRun: summary.json, then `finish` on every device.
 */
import { appendFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createActor, fromPromise, toPromise } from 'xstate';
import type { Bus } from '../../src/bus/index.ts';
import { ask } from '../../src/runtime/inbox.ts';
import { ctlReply } from '../../src/runtime/messages.ts';
import { fromWire } from '../../src/runtime/errors.ts';
import { loadConfig } from '../../src/model/load.ts';
import { planPipeline, planOptionsForRun, InfeasiblePlanError, type StagePlan } from '../../src/plan/planner.ts';
import { simulatePlan } from '../../src/plan/simulator.ts';
import { planCachedPhase } from '../../src/plan/cached.ts';
import type { Profile } from '../../src/plan/profile.ts';
import type { StageLayout } from '../../src/engine/index.ts';
import type { Topology } from '../../src/topology/schema.ts';
import { epochSteps } from '../../src/train/data.ts';
import { balanceShards } from '../../src/plan/balance.ts';
import { checkResumable, loadCheckpoint, saveCheckpoint, type CheckpointMeta } from '../../src/train/checkpoint.ts';
import { specFromTopology, type RunSpec } from '../../src/train/run-spec.ts';
import { mergeStates, repackState, replayStep, unpackState, type PackedGrads, type PackedState, type SideState } from '../../src/engine/index.ts';
import type { StepReply } from '../../src/runtime/ctl.ts';
import type { Coordinator } from './actor.ts';
import { measuredProfile, modelShape } from '../../src/plan/device-profile.ts';
import { watchRunDevices } from './liveness.ts';
import { runMachine, type CommitInput, type DeployInput, type Deployment, type FinishInput, type PersistedRun, type PlanInput, type PlannedRun, type ProfileInput, type RedistributeInput, type Redistributed, type StepInput, type StepOutput, type StepResult } from './run-machine.ts';
import { buildSummary, type MeasuredDevice, type RunSummary } from './run-summary.ts';

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
}

export interface RunOutcome { runDir: string; summary: RunSummary }

const CTL_TIMEOUT_MS = 60_000;

/** Sends control `kind` to `device`; returns the handler's result. @throws the handler's error, rebuilt as its class, its message naming device and kind. */
export async function control<T>(bus: Bus, device: string, kind: string, args: unknown, timeoutMs = CTL_TIMEOUT_MS): Promise<T> {
  const r = await ask(bus, bus.subjects.devCtl(device), 'ctl', { kind, args }, ctlReply, timeoutMs);
  if (!r.ok) throw fromWire(r.error, `device ${device}: ${kind}`);
  return r.result as T;
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 1) + '\n');
  renameSync(tmp, file);
}

/** What a side-network checkpoint of `spec`'s run says about the run (resume checks it). */
export function sideCheckpointIdentity(spec: RunSpec) {
  return {
    method: 'parallel' as const, options: { reduction: spec.reduction, sideInit: 'random' as const },
    config: { epochs: spec.epochs, batch: spec.batch, seed: spec.seed, seqLen: spec.seqLen, task: 'lm' as const, optimizer: spec.optimizer },
    samples: spec.samples,
  };
}

/** A stage rank of the plan: its device, stage and rank inside the stage's group. */
function participants(layout: StageLayout[]): { device: string; stage: number; rank: number }[] {
  return layout.flatMap((st, s) => st.devices.map((d, rank) => ({ device: d, stage: s, rank })));
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
  const checkpointDir = join(runDir, 'checkpoints', 'latest');
  const names = topology.devices.map((d) => d.name);
  const specOf = new Map(topology.devices.map((d) => [d.name, d]));

  const gflops = (d: string) => coordinator.registry.get(d)?.matmulGflops ?? 0;
  const measured = (): MeasuredDevice[] => names.map((n) => ({
    name: n, matmulGflops: gflops(n), memoryMb: specOf.get(n)!.memoryMb, slowdown: specOf.get(n)!.slowdown, bandwidthMbps: specOf.get(n)!.bandwidthMbps ?? null,
  }));

  const broadcast = async <T>(targets: string[], kind: string, args: (d: string) => unknown, timeoutMs = CTL_TIMEOUT_MS): Promise<Map<string, T>> => {
    const results = await Promise.allSettled(targets.map((d) => control<T>(bus, d, kind, args(d), timeoutMs)));
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    return new Map(targets.map((d, i) => [d, (results[i] as PromiseFulfilledResult<T>).value]));
  };

  const logic = runMachine.provide({
    actors: {
      profileDevices: fromPromise<Profile, ProfileInput>(async ({ input: { spec } }) => o.profile ?? measuredProfile(
        modelShape(config, spec.seqLen, spec.reduction, 'preset' in spec.model ? spec.model.preset : spec.model.dir),
        measured().map((d) => ({ name: d.name, matmulGflops: d.matmulGflops, memoryBytes: d.memoryMb * 2 ** 20, bandwidthMbps: d.bandwidthMbps })),
        { batchSize: spec.batch, samples: spec.samples },
      )),
      planRun: fromPromise<PlannedRun, PlanInput>(async ({ input: { profile, spec } }) => {
        let plan: StagePlan;
        try {
          plan = planPipeline(profile, planOptionsForRun(spec));
        } catch (err) {
          if (err instanceof InfeasiblePlanError) throw new Error(`no plan fits: ${err.lines.join('; ')}`);
          throw err;
        }
        const layout = plan.stages.map((s) => ({ from: s.layers.from, to: s.layers.to, devices: s.devices.map((d) => d.name), shares: s.devices.map((d) => d.rows) }));
        const simulatedStepMs = simulatePlan(plan, profile).stepMs;
        emit('RUN_PLANNED', { stages: layout, unused: plan.unusedDevices, microBatches: plan.microBatches, predictedStepMs: plan.predicted.stepMs, simulatedStepMs });
        return { plan, layout, spec: { ...spec, microBatches: plan.microBatches }, simulatedStepMs };
      }),
      deployPlan: fromPromise<Deployment, DeployInput>(async ({ input: { spec, layout, checkpointRef, epoch, firstStep } }) => {
        let resumedFrom: CheckpointMeta | null = null;
        let side: SideState | null = null;
        if (checkpointRef) {
          const { meta, state: ck } = loadCheckpoint(checkpointRef);
          resumedFrom = meta;
          side = { params: new Map([...ck.parameters].map(([n, p]) => [n, p.data])), shapes: new Map([...ck.parameters].map(([n, p]) => [n, p.shape])), optimizer: ck.optimizer };
        }
        // In the cached phase the side network goes out with `cached-load` instead.
        const state = side && epoch === 1 ? { state: repackState(side) } : {};
        const ranks = participants(layout);
        const replies = await broadcast<{ fingerprint: string; weights: string[] }>(ranks.map((p) => p.device), 'assign', (d) => {
          const p = ranks.find((x) => x.device === d)!;
          return { spec, stages: layout, stage: p.stage, rank: p.rank, firstStep, ...state };
        }, 5 * CTL_TIMEOUT_MS);
        const fingerprint = [...replies.values()][0]!.fingerprint;
        if (resumedFrom) checkResumable(resumedFrom, { ...sideCheckpointIdentity(spec), modelFingerprint: fingerprint });
        emit('RUN_DEPLOYED', { devices: Object.fromEntries([...replies].map(([d, r]) => [d, r.weights.length])) });
        return { fingerprint, heldWeights: Object.fromEntries([...replies].map(([d, r]) => [d, r.weights])), side };
      }),
      trainStep: fromPromise<StepOutput, StepInput>(async ({ input }) => {
        const t0 = performance.now();
        const cached = input.phase === 'cached';
        const who = input.groups.flatMap((g) => g.map((device, rank) => ({ device, rank })));
        const withState = input.side === null;
        const args = (d: string) => ({ step: input.step, sampleIds: input.sampleIds, withState: withState && who.find((p) => p.device === d)!.rank === 0 });
        let replies: Map<string, StepReply & { grads?: PackedGrads }>;
        try {
          replies = await broadcast<StepReply>(who.map((p) => p.device), cached ? 'cached-step' : 'step', args, o.stepTimeoutMs ?? 600_000);
        } catch (err) {
          if (!cached) await Promise.allSettled(who.map((p) => control(bus, p.device, 'abort', { step: input.step }, 5000)));
          throw err;
        }
        const all = [...replies.values()];
        const groups = input.groups.length;
        let side: SideState;
        if (input.side === null) {
          const states = all.filter((r) => r.state).map((r) => unpackState(r.state as PackedState));
          if (states.length !== groups) throw new Error(`step ${input.step}: ${states.length} of ${groups} stage groups returned their side state`);
          side = mergeStates(states);
        } else {
          const grads = all.flatMap((r) => (r.grads ? [r.grads] : []));
          if (grads.length !== groups) throw new Error(`step ${input.step}: ${grads.length} of ${groups} stage groups returned their reduced gradient`);
          side = input.side;
          replayStep(side, input.spec.optimizer, grads);
        }
        const sent = all.reduce((a, r) => a + r.bytesSent, 0);
        const result: StepResult = {
          loss: all.reduce((a, r) => a + r.loss, 0), seconds: (performance.now() - t0) / 1000, bytes: sent,
          peakBytes: Object.fromEntries([...replies].map(([d, r]) => [d, r.peakBytes])),
        };
        appendFileSync(metricsFile, JSON.stringify({ type: 'step', phase: input.phase, epoch: input.epoch, step: input.step, loss: result.loss, seconds: result.seconds, bytes: sent, tokens: all.reduce((a, r) => Math.max(a, r.tokens), 0), devices: Object.fromEntries([...replies].map(([d, r]) => [d, { rows: r.rows, computeSeconds: r.computeSeconds, bytesSent: r.bytesSent, peakBytes: r.peakBytes }])) }) + '\n');
        emit('STEP_DONE', { phase: input.phase, epoch: input.epoch, step: input.step, loss: result.loss, seconds: result.seconds, bytes: sent });
        return { ...result, side };
      }),
      commitStep: fromPromise<{ checkpointRef: string }, CommitInput>(async ({ input }) => {
        saveSide(checkpointDir, input);
        writeJsonAtomic(join(runDir, 'state.json'), input.state);
        const closed = input.state.epochs.length > 0 && input.state.epochs.at(-1)!.epoch === input.state.epoch - 1 && input.state.stepInEpoch === 0;
        if (closed) {
          const e = input.state.epochs.at(-1)!;
          saveSide(join(runDir, 'checkpoints', `epoch-${e.epoch}`), input);
          appendFileSync(metricsFile, JSON.stringify({ type: 'epoch', ...e }) + '\n');
          emit('EPOCH_DONE', { ...e });
        }
        return { checkpointRef: checkpointDir };
      }),
      redistribute: fromPromise<Redistributed, RedistributeInput>(async ({ input }) => {
        const { spec, fingerprint } = input;
        const t0 = performance.now();
        const refilled = await refillCaches(input);
        await broadcast(participants(input.layout).map((p) => p.device), 'release', () => ({}));
        const ranks = names;
        // Every cache exists (and listens for puts) before any device starts sending.
        const reports = await broadcast<{ holdings: number[] }>(ranks, 'cache-report', () => ({ spec, fingerprint }));
        const entryBytes = spec.seqLen * config.dModel * 4;
        const holdings = new Map(Array.from({ length: spec.samples }, (_, j) => [j, ranks
          .map((d) => ({ device: d, bytes: (reports.get(d)!.holdings[j] ?? 0) * entryBytes })).filter((h) => h.bytes > 0)]));
        const cachedPlan = planCachedPhase(ranks.map((d) => ({ name: d, msPerSample: 1 / Math.max(gflops(d), 1e-6) })), [...holdings.keys()], holdings);
        const cachedSteps = Array.from({ length: Math.max(0, spec.epochs - 1) }, (_, e) => epochSteps(spec, e + 2)).flat();
        const shards = cachedSteps.length === 0 ? cachedPlan.shards.map((s) => s.samples)
          : balanceShards(cachedPlan.shards.map((s) => s.samples.length), cachedSteps, (k, j) => (holdings.get(j) ?? []).some((h) => h.device === ranks[k]));
        const moved = await broadcast<{ bytesOut: number }>(ranks, 'redistribute', () => ({ shards, devices: ranks }), 30 * CTL_TIMEOUT_MS);
        const sent = [...moved.values()].reduce((a, r) => a + r.bytesOut, 0);
        const packed = repackState(input.side);
        await broadcast(ranks, 'cached-load', (d) => { const rank = ranks.indexOf(d); return { rank, size: ranks.length, shard: shards[rank]!, firstStep: input.firstStep, state: packed }; });
        const seconds = (performance.now() - t0) / 1000;
        const redistribution = { bytes: sent, seconds, shardSizes: Object.fromEntries(ranks.map((d, i) => [d, shards[i]!.length])) };
        emit('REDISTRIBUTED', { bytes: sent, seconds, shards: redistribution.shardSizes });
        return { cached: { ranks, shards }, redistribution, bytes: refilled + sent };
      }),
      finishRun: fromPromise<RunSummary, FinishInput>(async ({ input }) => {
        const summary = buildSummary(input, { runDir, checkpoint: checkpointDir, devices: measured(), seconds: (performance.now() - started) / 1000 });
        writeJsonAtomic(join(runDir, 'summary.json'), summary);
        await Promise.allSettled(names.map((d) => control(bus, d, 'finish', {})));
        emit('RUN_FINISHED', { runDir, epochs: summary.epochs.map((e) => ({ epoch: e.epoch, phase: e.phase, loss: e.loss, seconds: e.seconds })) });
        return summary;
      }),
    },
  });

  /**
   * The cache is an optimisation, never a source of truth: samples whose activations no stage
   * device holds (computed by the processes of an interrupted run) go forward through the
   * deployed stages again, each rank caching its layers, before redistribution. Resolves with
   * the bytes the devices sent for it.
   */
  async function refillCaches({ spec, layout, fingerprint }: RedistributeInput): Promise<number> {
    const t0 = performance.now();
    const stageDevices = participants(layout).map((p) => p.device);
    const reports = await broadcast<{ holdings: number[] }>(stageDevices, 'cache-report', () => ({ spec, fingerprint }));
    const layers = config.nLayers + 1;
    const missing = Array.from({ length: spec.samples }, (_, j) => j)
      .filter((j) => stageDevices.reduce((n, d) => n + (reports.get(d)!.holdings[j] ?? 0), 0) < layers);
    if (missing.length === 0) return 0;
    const filled = await broadcast<{ bytesSent: number }>(stageDevices, 'fill', () => ({ sampleIds: missing }), 30 * CTL_TIMEOUT_MS);
    const sent = [...filled.values()].reduce((a, r) => a + r.bytesSent, 0);
    emit('CACHE_REFILLED', { samples: missing.length, bytes: sent, seconds: (performance.now() - t0) / 1000 });
    return sent;
  }

  const actor = createActor(logic, { input: { runId: topology.run, spec: topologySpec, expectedDevices: names, gatherTimeoutMs: o.gatherTimeoutMs ?? 60_000, ...(o.resume ? { resume: o.resume } : {}) } });
  const liveness = watchRunDevices({
    registry: coordinator.registry,
    joined: (device) => actor.send({ type: 'DEVICE_JOINED', device }),
    lost: (device, reason) => actor.send({ type: 'DEVICE_LOST', device, reason }),
  });
  actor.subscribe((snap) => coordinator.setRunPhase(leafState(snap.value)));
  const onAbort = () => actor.stop();
  o.signal?.addEventListener('abort', onAbort);
  actor.start();
  if (o.resume) emit('RUN_RESUMED', { step: o.resume.step, epoch: o.resume.epoch, stepInEpoch: o.resume.stepInEpoch });
  for (const d of names) liveness.check(d);
  try {
    // A stopped actor (aborted) completes without output.
    const out = await toPromise(actor).catch((err) => { throw o.signal?.aborted ? new Error('run interrupted') : err; });
    if (o.signal?.aborted) throw new Error('run interrupted');
    if (out.status === 'failed') {
      emit('RUN_FAILED', { error: out.error });
      throw new Error(out.error);
    }
    return { runDir, summary: out.summary };
  } finally {
    liveness.stop();
    coordinator.setRunPhase(null);
    o.signal?.removeEventListener('abort', onAbort);
    if (actor.getSnapshot().status === 'active') actor.stop();
  }
}

/** The trainer-compatible checkpoint of the side network as of the position `commit` persists. */
function saveSide(dir: string, { state: p, side, spec, fingerprint }: CommitInput): void {
  saveCheckpoint(dir, {
    ...sideCheckpointIdentity(spec), modelFingerprint: fingerprint,
    state: {
      epoch: p.epoch - 1, stepInEpoch: p.stepInEpoch, globalStep: p.step, stepLosses: [], epochs: [], ledger: p.ledger,
      parameters: new Map([...side.params].map(([n, x]) => [n, { data: x, shape: side.shapes.get(n)! }])), optimizer: side.optimizer,
    },
  });
}

/** The innermost state name of a (possibly nested) state value, e.g. 'pipelineEpoch'. */
function leafState(value: unknown): string {
  while (value && typeof value === 'object') value = Object.values(value)[0];
  return String(value);
}
