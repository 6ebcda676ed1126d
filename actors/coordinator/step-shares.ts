/**
 * The rows each rank of a stage group computes in the next pipeline step, from how fast each
 * device computed its rows in the steps before. The plan's shares come from a few seconds of
 * profiling; on one host the devices profile at the same time and share the cores with the
 * coordinator starting up, so two identical devices can measure far apart and the plan then gives
 * one of them most of every step. The ranks of one stage run the same layers, so their compute
 * time per row compares them directly; the step's rows then follow those measurements.
 *
 * Every rank of a step must split its rows the same way: the coordinator sends the shares it
 * chose with the step, and a step without them runs on the plan's.
 */
import { microBatches, splitRows } from '../../src/engine/routing.ts';

/** Weight of the newest step in a device's running compute time per row. */
const SMOOTHING = 0.3;
/** New shares replace the current ones only when they promise a step this much shorter. */
const MIN_GAIN = 0.05;
/** No rank's share falls below this fraction of its group's largest: it keeps being measured. */
const MIN_SHARE = 0.1;

export interface ShareMeasure {
  computeSeconds: number;
  rows: number;
}

/** A step's tuned shares; `changed`: they differ from the previous step's (announce them). */
export interface TunedShares {
  shares: number[][];
  changed: boolean;
}

export class StepShares {
  private key = '';
  private current: number[][] = [];
  /** The shares the previous step ran on, as sent (null: the plan's). */
  private sent: string | null = null;
  /** Each device's running compute milliseconds per row under the current groups. */
  private readonly msPerRow = new Map<string, number>();
  /** Devices whose first step under the current groups has been seen (and left out: warm-up). */
  private readonly warmed = new Set<string>();

  /**
   * The shares of the step about to run over `groups`, the plan's being `planned`: the measured
   * ones once every rank of every group of two or more has been timed and they shorten the step
   * by MIN_GAIN, else the ones in use. Other groups, or a new set of groups, start from the plan.
   */
  shares(groups: readonly string[][], planned: readonly number[][], sampleIds: readonly number[], micro: number): number[][] {
    this.reset(groups, planned);
    const mbs = microBatches(sampleIds, Math.max(1, Math.min(micro, sampleIds.length))).filter((m) => m.length > 0);
    this.current = groups.map((devices, s) => {
      const now = this.current[s]!;
      if (devices.length < 2) return now;
      const ms = devices.map((d) => this.msPerRow.get(d));
      if (ms.some((m) => m === undefined)) return now;
      const speed = (ms as number[]).map((m) => 1 / Math.max(m, 1e-6));
      const top = Math.max(...speed);
      const next = speed.map((v) => Math.max(v, top * MIN_SHARE));
      const cost = (w: number[]) => mbs.reduce((a, m) => a + Math.max(...splitRows(m.length, w).map((n, r) => n * (ms[r] as number))), 0);
      return cost(next) < cost(now) * (1 - MIN_GAIN) ? next : now;
    });
    return this.current.map((w) => [...w]);
  }

  /** The shares to send with the next step (`shares`' choice), or null when they are the plan's. */
  next(groups: readonly string[][], planned: readonly number[][], sampleIds: readonly number[], micro: number): TunedShares | null {
    const shares = this.shares(groups, planned, sampleIds, micro);
    const key = JSON.stringify(shares);
    const previous = this.sent;
    this.sent = key === JSON.stringify(planned) ? null : key;
    return this.sent === null ? null : { shares, changed: key !== previous };
  }

  /** The running compute milliseconds per row of the devices of `groups` timed so far. */
  measured(groups: readonly string[][]): Record<string, number> {
    return Object.fromEntries(groups.flat().flatMap((d) => (this.msPerRow.has(d) ? [[d, this.msPerRow.get(d)!]] : [])));
  }

  /** One pipeline step's replies: each device's compute seconds over the rows it computed. */
  record(groups: readonly string[][], replies: ReadonlyMap<string, ShareMeasure>): void {
    if (this.key !== keyOf(groups)) return;
    for (const [d, r] of replies) {
      if (!(r.computeSeconds > 0) || !(r.rows > 0)) continue;
      if (!this.warmed.has(d)) {
        this.warmed.add(d);
        continue;
      }
      const ms = (r.computeSeconds * 1000) / r.rows;
      const prev = this.msPerRow.get(d);
      this.msPerRow.set(d, prev === undefined ? ms : prev + SMOOTHING * (ms - prev));
    }
  }

  private reset(groups: readonly string[][], planned: readonly number[][]): void {
    const key = keyOf(groups);
    if (key === this.key) return;
    this.key = key;
    this.current = planned.map((w) => [...w]);
    this.msPerRow.clear();
    this.warmed.clear();
  }
}

/** The rows each rank of each group computes in a step over `sampleIds` in `micro` micro-batches under `shares`. */
export function stepRows(sampleIds: readonly number[], micro: number, shares: readonly number[][]): number[][] {
  const mbs = microBatches(sampleIds, Math.max(1, Math.min(micro, sampleIds.length)));
  return shares.map((w) =>
    mbs.reduce(
      (sum, m) => splitRows(m.length, w).map((n, r) => sum[r]! + n),
      w.map(() => 0),
    ),
  );
}

const keyOf = (groups: readonly string[][]) => JSON.stringify(groups);
