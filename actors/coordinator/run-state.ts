/**
 * The committed state of a run (state.json): position, sample ledger and per-epoch figures, and
 * how committing a step advances it. The run machine keeps it in its context and persists it
 * after every commit; a restarted coordinator starts from it.
 */
import { Ledger, type LedgerJson } from '../../src/train/ledger.ts';
import { epochSteps } from '../../src/train/data.ts';
import { usesCache, type RunSpec } from '../../src/train/run-spec.ts';
import type { FaultRecord, ReplanRecord } from './run-faults.ts';
import type { JoinRecord, LeaveRecord } from './run-elastic.ts';
import type { CacheEntryCounts } from './run-io.ts';

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
  /** What happened to the run up to this commit: a successor's summary tells the whole run. */
  history?: RunHistory;
}

/** The run's record of faults, re-plans, joins, leaves and coordinators (summary.json). */
export interface RunHistory {
  faults: FaultRecord[];
  replans: ReplanRecord[];
  joins: JoinRecord[];
  leaves: LeaveRecord[];
  coordinators: CoordinatorRecord[];
  /** Cache entries recomputed through the backbone and served from surviving copies so far. */
  cacheEntries: CacheEntryCounts;
}

/** A coordinator process that drove the run: the first, and each successor that took it over. */
export interface CoordinatorRecord {
  /** Its coordinator epoch (coordinator.json): 1 for the first, one more for each successor. */
  epoch: number;
  /** When it started (ms since the epoch). */
  startedAt: number;
  /** The committed step it continued after (null: it started the run). */
  resumedFromStep: number | null;
  /** Devices it took over live, without restarting them. */
  adopted: string[];
}

/** Running totals of the committed steps of an epoch in progress. */
export interface EpochTotals {
  steps: number;
  seconds: number;
  lossSum: number;
  bytes: number;
  /** Classification runs: samples the head classified right. */
  correct?: number;
}

/** Per-epoch figures for summary.json. */
export interface EpochRecord {
  epoch: number;
  phase: Phase;
  steps: number;
  seconds: number;
  /** Mean of the committed steps' losses. */
  loss: number;
  /** Classification runs: the share of the epoch's samples the head classified right at their step (before its update). */
  accuracy?: number;
  bytes: number;
}

/** What one step reports back (sums over devices). */
export interface StepResult {
  loss: number;
  /** Classification runs: the step's samples classified right. */
  correct?: number;
  seconds: number;
  bytes: number;
  peakBytes: Record<string, number>;
}

/** A run in memory always carries the totals of the epoch in progress. */
export type RunState = Required<Omit<PersistedRun, 'history'>>;

const noTotals = (): EpochTotals => ({ steps: 0, seconds: 0, lossSum: 0, bytes: 0 });

/** Where a run starts: `resume` if given, else before step 1 with an empty ledger of `samples`. */
export function startState(samples: number, resume?: PersistedRun): RunState {
  return {
    epoch: resume?.epoch ?? 1,
    stepInEpoch: resume?.stepInEpoch ?? 0,
    step: resume?.step ?? 0,
    ledger: resume?.ledger ?? new Ledger(samples).toJSON(),
    checkpointRef: resume?.checkpointRef ?? null,
    epochs: resume?.epochs ?? [],
    current: resume?.current ?? noTotals(),
  };
}

/** The persisted fields of `run` alone (a context carries more). */
export function persistedRun(run: RunState): PersistedRun {
  return {
    epoch: run.epoch,
    stepInEpoch: run.stepInEpoch,
    step: run.step,
    ledger: run.ledger,
    checkpointRef: run.checkpointRef,
    epochs: run.epochs,
    current: run.current,
  };
}

/** The sample ids of the next step: its mini-batch is fixed by (seed, epoch). */
export function nextSampleIds(run: RunState, spec: RunSpec): number[] {
  return epochSteps(spec, run.epoch)[run.stepInEpoch]!;
}

/** The state once the next step commits with `result`: ledger marked, position advanced, an ended epoch recorded. */
export function afterCommit(run: RunState, spec: RunSpec, result: StepResult): RunState {
  const ledger = Ledger.fromJSON(run.ledger);
  ledger.commit(run.epoch, run.step + 1);
  const lastOfEpoch = run.stepInEpoch + 1 >= epochSteps(spec, run.epoch).length;
  if (lastOfEpoch) ledger.finish(run.epoch);
  const c = run.current,
    r = result;
  const totals: EpochTotals = {
    steps: c.steps + 1,
    seconds: c.seconds + r.seconds,
    lossSum: c.lossSum + r.loss,
    bytes: c.bytes + r.bytes,
    ...(r.correct !== undefined ? { correct: (c.correct ?? 0) + r.correct } : {}),
  };
  return {
    epoch: lastOfEpoch ? run.epoch + 1 : run.epoch,
    stepInEpoch: lastOfEpoch ? 0 : run.stepInEpoch + 1,
    step: run.step + 1,
    ledger: ledger.toJSON(),
    checkpointRef: run.checkpointRef,
    epochs: lastOfEpoch
      ? [
          ...run.epochs,
          {
            epoch: run.epoch,
            phase: run.epoch === 1 || !usesCache(spec) ? 'pipeline' : 'cached',
            steps: totals.steps,
            seconds: totals.seconds,
            loss: totals.lossSum / totals.steps,
            ...(totals.correct !== undefined ? { accuracy: totals.correct / spec.samples } : {}),
            bytes: totals.bytes,
          },
        ]
      : run.epochs,
    current: lastOfEpoch ? noTotals() : totals,
  };
}
