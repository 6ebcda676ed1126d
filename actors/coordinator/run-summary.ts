/**
 * summary.json: what a finished distributed run reports, from the run machine's data at the end
 * (`FinishInput`) and what only the coordinator's process knows (the devices' measurements,
 * where the run lives, how long it took).
 */
import type { StageLayout } from '../../src/engine/index.ts';
import type { StagePlan } from '../../src/plan/planner.ts';
import { Ledger } from '../../src/train/ledger.ts';
import type { RunSpec } from '../../src/train/run-spec.ts';
import type { BytesPerPhase, CacheEntryCounts, FinishInput, Redistribution } from './run-machine.ts';
import type { CoordinatorRecord, EpochRecord } from './run-state.ts';
import type { FaultRecord, ReplanRecord } from './run-faults.ts';
import type { JoinRecord, LeaveRecord } from './run-elastic.ts';

export interface MeasuredDevice {
  name: string;
  matmulGflops: number;
  memoryMb: number;
  slowdown: number;
  /**
   * What the device sends at, Mbit/s: its slowest link measured over the bus; else its bandwidth
   * cap (topology or `--bandwidth-mbps`); null when neither exists.
   */
  bandwidthMbps: number | null;
  /** Where `bandwidthMbps` came from. */
  bandwidthSource: 'measured' | 'cap' | null;
  /** The simulated cap on what it sends (topology `bandwidthMbps` or `--bandwidth-mbps`); null: uncapped. */
  bandwidthCapMbps: number | null;
  /** Its links as measured at profiling, by receiving peer. */
  links: Record<string, { mbps: number; latencyMs: number }>;
  /** The device's compute as it reported it: tfjs backend and the engine of frozen forwards. */
  backend: string | null;
}

/** What summary.json holds. */
export interface RunSummary {
  run: string;
  runDir: string;
  spec: RunSpec;
  /** What the run trained: next-token prediction, or a classification head on labelled data (epochs then carry `accuracy`). */
  task: 'lm' | 'classification';
  devices: MeasuredDevice[];
  /** Backbone tensors each device loaded for its stage of the last pipeline deployed (only its own layers). */
  heldWeights: Record<string, string[]>;
  /** The last plan (after re-plans: the survivors'; `replans` has every change). */
  plan: {
    stages: StageLayout[];
    unusedDevices: string[];
    microBatches: number;
    ordering: string;
    predictedStepMs: number;
    simulatedStepMs: number;
    bytesPerStep: StagePlan['bytesPerStep'];
  };
  epochs: (EpochRecord & { meanStepSeconds: number })[];
  stepsPerEpoch: number;
  measuredPipelineStepMs: number;
  /** Bytes sent by devices per phase (activations, gradients, all-reduce, cache moves). */
  bytesPerPhase: BytesPerPhase;
  pipelineBytesPerStep: { measured: number; planned: number };
  redistribution: Redistribution | null;
  /**
   * The activation cache's copies per entry in the cached epochs, the entries (sample, layer)
   * recomputed through the backbone, and those of lost owners' shards served from what the
   * survivors hold (the second copy, or with one copy the layers epoch 1 left on other devices).
   */
  cache: CacheEntryCounts & { replicas: number };
  peakBytesPerDevice: Record<string, number>;
  ledger: { epochs: number; problems: string[] };
  /** The committed step this run resumed after (null: trained from the start). */
  resumedFromStep: number | null;
  /** Devices lost during training, and when training went on without them. */
  faults: FaultRecord[];
  replans: ReplanRecord[];
  /** Devices put to work mid-run (optional, unlisted, restarted, or back from a stall). */
  joins: JoinRecord[];
  /** Devices that left on purpose (no fault, no step replayed). */
  leaves: LeaveRecord[];
  /** The coordinator processes that drove the run: the first, then each successor that took it over. */
  coordinators: CoordinatorRecord[];
  /** Devices that (re)joined too late in the run to be put to work. */
  joinedLate: string[];
  checkpoint: string;
  finalLoss: number;
  /** Classification runs: the last epoch's accuracy. */
  finalAccuracy?: number;
  seconds: number;
}

/** Where the run lives and what the coordinator measured, beside the machine's data. */
export interface SummaryFacts {
  runDir: string;
  checkpoint: string;
  devices: MeasuredDevice[];
  seconds: number;
}

export function buildSummary(f: FinishInput, facts: SummaryFacts): RunSummary {
  const s = f.state;
  const ledger = Ledger.fromJSON(s.ledger);
  const problems = s.epochs.flatMap((e) => ledger.check(e.epoch).map((p) => `epoch ${e.epoch}: ${p}`));
  const pipe = s.epochs.find((e) => e.phase === 'pipeline');
  return {
    run: f.runId,
    runDir: facts.runDir,
    spec: f.spec,
    task: f.spec.labelNames ? 'classification' : 'lm',
    devices: facts.devices,
    heldWeights: f.heldWeights,
    plan: {
      stages: f.layout,
      unusedDevices: f.plan.unusedDevices,
      microBatches: f.plan.microBatches,
      ordering: f.plan.ordering,
      predictedStepMs: f.plan.predicted.stepMs,
      simulatedStepMs: f.simulatedStepMs,
      bytesPerStep: f.plan.bytesPerStep,
    },
    epochs: s.epochs.map((e) => ({ ...e, meanStepSeconds: e.seconds / e.steps })),
    stepsPerEpoch: Math.ceil(f.spec.samples / f.spec.batch),
    measuredPipelineStepMs: pipe ? (pipe.seconds / pipe.steps) * 1000 : 0,
    bytesPerPhase: { ...f.bytes },
    pipelineBytesPerStep: { measured: pipe ? pipe.bytes / pipe.steps : 0, planned: f.plan.bytesPerStep.total },
    redistribution: f.redistribution,
    cache: { replicas: f.spec.cache.replicas ?? 1, ...f.cacheEntries },
    peakBytesPerDevice: f.peakBytes,
    ledger: { epochs: s.epochs.length, problems },
    resumedFromStep: f.resumedFromStep,
    faults: f.faults,
    replans: f.replans,
    joins: f.joins,
    leaves: f.leaves,
    coordinators: f.coordinators,
    joinedLate: f.joinedLate,
    checkpoint: facts.checkpoint,
    finalLoss: s.epochs.at(-1)?.loss ?? NaN,
    ...(s.epochs.at(-1)?.accuracy !== undefined ? { finalAccuracy: s.epochs.at(-1)!.accuracy } : {}),
    seconds: facts.seconds,
  };
}
