/**
 * The run machine's contract with its effects and its callers: what it is started with, the
 * events it takes, what each effect gets as `input` and returns as `output`, its context and its
 * output. The machine is run-machine.ts; the real effects are run-actor.ts.
 */
import type { RunSpec } from '../../src/train/run-spec.ts';
import type { Profile } from '../../src/plan/profile.ts';
import type { StagePlan } from '../../src/plan/planner.ts';
import type { SideState, StageLayout } from '../../src/engine/index.ts';
import type { RunSummary } from './run-summary.ts';
import type { CoordinatorRecord, Phase, PersistedRun, RunState, StepResult } from './run-state.ts';
import type { FaultRecord, ReplanRecord, StageRank } from './run-faults.ts';
import type { ElasticState, JoinRecord, LeaveRecord } from './run-elastic.ts';

export interface RunInput {
  runId: string;
  /** What the run trains; planning fills in the micro-batch count when the topology leaves it open. */
  spec: RunSpec;
  /** Devices that must have joined before profiling starts. */
  expectedDevices: string[];
  gatherTimeoutMs: number;
  /** How long a retryable failure waits for liveness to report a lost device (default 10 s). */
  stallTimeoutMs?: number;
  /** How long a re-plan waits for more joins, leaves and losses arriving with the first (default ELASTIC_DEBOUNCE_MS). */
  debounceMs?: number;
  /** Deadline of a step's first attempt (default: derived from the plan, step-deadline.ts). */
  stepDeadlineMs?: number;
  /**
   * The first plan generation (default 0). A coordinator taking a run over starts above every
   * generation its predecessor may have used, so no late message of the old one fits a new link.
   */
  firstGeneration?: number;
  resume?: PersistedRun;
  /** The coordinator process driving this machine, when it runs as one (summary.json `coordinators`). */
  coordinatorProcess?: CoordinatorRecord;
}

/** What planning decided, as the devices and the summary see it. */
export interface PlannedRun {
  plan: StagePlan;
  layout: StageLayout[];
  /** The input spec with the plan's micro-batch count. */
  spec: RunSpec;
  simulatedStepMs: number;
  /** When it was made (ms since the epoch). */
  plannedAt: number;
}

/** What deploying the plan left on the devices and in the coordinator. */
export interface Deployment {
  /** The backbone the devices loaded; checkpoints and caches are keyed by it. */
  fingerprint: string;
  /** Backbone tensors each device loaded for its stage. */
  heldWeights: Record<string, string[]>;
  /** The side network deployed (the committed one, or the checkpoint's); null when the devices initialise it. */
  side: SideState | null;
  /** Stage ranks whose device kept the layers it had loaded, and those loaded anew. */
  kept: StageRank[];
  redeployed: StageRank[];
}

/** The cached phase's one data-parallel group: every device a rank with its shard of sample ids. */
export interface CachedPhase {
  ranks: string[];
  shards: number[][];
  /** `training.cache.replicas: 2`: the samples of other shards each rank keeps a copy of. */
  replicas?: number[][];
}

/** Moving the activation caches to the cached phase's shards. */
export interface Redistribution {
  bytes: number;
  seconds: number;
  shardSizes: Record<string, number>;
  /** Copies each device keeps of other shards (`training.cache.replicas: 2`). */
  replicaSizes?: Record<string, number>;
}

/** Cache entries (sample, layer) the run recomputed through the backbone, and those of lost owners served from a surviving copy. */
export interface CacheEntryCounts {
  recomputed: number;
  fromReplica: number;
}

export interface Redistributed {
  cached: CachedPhase;
  redistribution: Redistribution;
  /** Everything devices sent for it, refilling lost caches included. */
  bytes: number;
  entries: CacheEntryCounts;
}

/** Bytes sent by devices per phase (activations, gradients, all-reduce, cache moves). */
export interface BytesPerPhase {
  pipeline: number;
  redistribution: number;
  cached: number;
}

export interface ProfileInput {
  devices: string[];
  spec: RunSpec;
}
export interface PlanInput {
  devices: string[];
  profile: Profile;
  spec: RunSpec;
}
export interface DeployInput {
  spec: RunSpec;
  layout: StageLayout[];
  /** The run's devices (leavers included): those the plan gives no stage rank are released. */
  devices: string[];
  generation: number;
  /** The committed side network in memory (after a re-plan); when null, the checkpoint's (a resumed run), if any. */
  side: SideState | null;
  checkpointRef: string | null;
  epoch: number;
  firstStep: number;
}
export interface RedistributeInput {
  spec: RunSpec;
  layout: StageLayout[];
  devices: string[];
  /** Devices leaving the run: they take no shard, and hand over the cache entries they hold. */
  sources: string[];
  /** The cached phase before this redistribution (null after epoch 1). */
  previous: CachedPhase | null;
  generation: number;
  fingerprint: string;
  side: SideState;
  firstStep: number;
}
/** The cached phase's workers loaded again over the same shards, under a new generation, from the committed side network. */
export interface ReloadInput {
  cached: CachedPhase;
  generation: number;
  firstStep: number;
  side: SideState;
}
/** End what `devices` have in flight and release what `release` hold for training (caches stay). */
export interface AbortInput {
  devices: string[];
  /** The others keep their stage for the deployment of the next plan, which keeps what it leaves in place. */
  release: string[];
  lost: string[];
}
export interface StepInput {
  runId: string;
  phase: Phase;
  epoch: number;
  step: number;
  sampleIds: number[];
  spec: RunSpec;
  /** Device groups running the step: the plan's stages, or the cached phase's one group. Rank 0 of each answers for its group. */
  groups: string[][];
  /** The plan's row shares of each group's ranks (the cached phase: equal; its shards decide its rows). */
  shares: number[][];
  /** Null until the first step: then rank 0 of every group returns its part of the side network. */
  side: SideState | null;
}
/** A step's figures and the side network after it (the input's reference, updated in place, once there is one). */
export interface StepOutput extends StepResult {
  side: SideState;
}
export interface CommitInput {
  runId: string;
  phase: Phase;
  result: StepResult;
  state: PersistedRun;
  spec: RunSpec;
  fingerprint: string;
  side: SideState;
}
export interface Committed {
  checkpointRef: string /** ms since the epoch */;
  committedAt: number;
}
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
  cacheEntries: CacheEntryCounts;
  /** The committed step this run resumed after (null: trained from the start). */
  resumedFromStep: number | null;
  faults: FaultRecord[];
  replans: ReplanRecord[];
  joins: JoinRecord[];
  leaves: LeaveRecord[];
  coordinators: CoordinatorRecord[];
  /** Devices that (re)joined too late to be put to work. */
  joinedLate: string[];
  /** Devices still waiting to leave (the run ended first): told to drain. */
  leaving: string[];
}

export type RunOutput = { status: 'done'; summary: RunSummary } | { status: 'failed'; error: string };

export type RunEvent =
  | { type: 'DEVICE_JOINED'; device: string /** ms since the epoch */; at?: number }
  | { type: 'DEVICE_LEAVING'; device: string; reason: string /** ms since the epoch */; at?: number }
  | { type: 'DEVICE_LOST'; device: string; reason?: string /** ms since the epoch */; at?: number }
  /** The coordinator's bus connection came back: messages of the step in flight may be lost. */
  | { type: 'BUS_RECONNECTED' };

/**
 * The persisted run (always with the totals of the epoch in progress) plus what lives only in
 * memory. Fields filled by an effect hold their empty value until it has run.
 */
export interface RunContext extends RunState, ElasticState {
  input: RunInput;
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
  /** Summed over every redistribution of this coordinator. */
  cacheEntries: CacheEntryCounts;
  /** Plan generation of the current deployment: grows at every re-plan. */
  generation: number;
  faults: FaultRecord[];
  /** Faults a re-plan has answered (the first ones of `faults`). */
  answeredFaults: number;
  replans: ReplanRecord[];
  /** The coordinator processes that drove the run so far (a successor's predecessors from state.json). */
  coordinators: CoordinatorRecord[];
  /** A device was lost while a step committed: recover once it has. */
  recoveryDue: boolean;
  /** Attempts of the step in flight given up (deadline, bus reconnect); 0 again once it commits. */
  stepAttempt: number;
  error: string | null;
  summary: RunSummary | null;
}
