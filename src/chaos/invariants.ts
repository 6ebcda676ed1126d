/**
 * What a chaos run must still have done, checked from what it left: the launch's events, its
 * run directory (summary.json, metrics.jsonl, checkpoints/latest) and a fault-free reference run
 * of the same job. Also the recovery figures: per fault, the time to the first sign the run
 * noticed (a device lost, a step given up, recovery begun) and to the next step done after it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive } from '../bus/index.ts';
import { loadCheckpoint } from '../train/checkpoint.ts';
import type { FiredFault, LaunchRecord, RunEventLine } from './runner.ts';

export interface Invariant {
  ok: boolean;
  detail: unknown;
}

/** Relative L2 difference ||a - b|| / ||a|| over parameters of the same names; Infinity when the names differ. */
export function relativeDifference(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  if ([...a.keys()].sort().join() !== [...b.keys()].sort().join()) return Infinity;
  let num = 0,
    den = 0;
  for (const [n, x] of a) {
    const y = b.get(n)!;
    for (let i = 0; i < x.length; i++) {
      num += (x[i]! - y[i]!) ** 2;
      den += x[i]! ** 2;
    }
  }
  return Math.sqrt(num / den);
}

/** The launch ended with the run trained. */
export function completed(l: LaunchRecord): Invariant {
  const stopped = [...l.events].reverse().find((e) => e.type === 'STOPPED');
  const ok = l.code === 0 && stopped?.reason === 'trained';
  return {
    ok,
    detail: ok ? 'trained' : { exitCode: l.code, stopped: stopped?.reason ?? null, error: stopped?.error ?? l.stderrTail.slice(-400) },
  };
}

/** Every sample in exactly one committed step per epoch (the ledger), every step committed once (metrics.jsonl). */
export function samplesAndSteps(runDir: string, totalSteps: number, epochs: number): { samples: Invariant; steps: Invariant } {
  const summaryFile = join(runDir, 'summary.json');
  if (!existsSync(summaryFile)) {
    const missing = { ok: false, detail: 'no summary.json: the run did not finish' };
    return { samples: missing, steps: missing };
  }
  const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as { ledger: { epochs: number; problems: string[] } };
  const samples = {
    ok: summary.ledger.problems.length === 0 && summary.ledger.epochs === epochs,
    detail: { epochs: summary.ledger.epochs, problems: summary.ledger.problems },
  };
  const counts = new Map<number, number>();
  for (const line of readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const m = JSON.parse(line) as { type: string; step?: number };
    if (m.type === 'step') counts.set(m.step!, (counts.get(m.step!) ?? 0) + 1);
  }
  const twice = [...counts].filter(([, n]) => n > 1).map(([s]) => s);
  const missing = Array.from({ length: totalSteps }, (_, i) => i + 1).filter((s) => !counts.has(s));
  return {
    samples,
    steps: { ok: twice.length === 0 && missing.length === 0 && counts.size === totalSteps, detail: { steps: counts.size, twice, missing } },
  };
}

/** Final side-network weights of the two runs agree within `tolerance` (relative L2). */
export function sameWeights(runDir: string, referenceDir: string, tolerance = 1e-5): Invariant {
  const params = (dir: string) =>
    new Map([...loadCheckpoint(join(dir, 'checkpoints', 'latest')).state.parameters].map(([n, p]) => [n, p.data]));
  try {
    const diff = relativeDifference(params(referenceDir), params(runDir));
    return { ok: diff <= tolerance, detail: { relativeDifference: diff, tolerance } };
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}

/** No process of the run alive, no connection left on the server, nothing left in the run's TMPDIR. */
export function nothingLeft(pids: number[], connections: { name: string; subscriptions: number }[], tmpDirs: string[]): Invariant {
  const alive = pids.filter(processAlive);
  // tsx-<uid> is the TypeScript loader's compile cache, kept on purpose between runs.
  const files = tmpDirs.flatMap((d) =>
    existsSync(d)
      ? readdirSync(d)
          .filter((f) => !/^tsx-\d+$/.test(f))
          .map((f) => join(d, f))
      : [],
  );
  return {
    ok: alive.length === 0 && connections.length === 0 && files.length === 0,
    detail: { processes: pids.length, alive, connections, temporaryFiles: files },
  };
}

/** Every fault of the schedule was fired and acted. */
export function faultsFired(fired: FiredFault[]): Invariant {
  const notFired = fired.filter((f) => f.firedAt === null).map((f) => f.fault.source);
  const failed = fired.filter((f) => f.error).map((f) => `${f.fault.source}: ${f.error}`);
  return { ok: notFired.length === 0 && failed.length === 0, detail: { fired: fired.length - notFired.length, notFired, failed } };
}

const NOTICED = new Set(['DEVICE_LOST', 'DEVICE_LEFT', 'STEP_EXPIRED', 'RECOVERING', 'COORDINATOR_LOST']);

export interface FaultFigure {
  kind: string;
  at: unknown;
  source: string;
  device: string | null;
  subject: string | null;
  /** Seconds from the start of training. */
  firedSeconds: number | null;
  /** Fault -> first DEVICE_LOST / DEVICE_LEFT / STEP_EXPIRED / RECOVERING / COORDINATOR_LOST (null: the run never had to notice). */
  detectedSeconds: number | null;
  /** Fault -> the next step done. */
  recoverySeconds: number | null;
  /** Message faults: matching and hit messages, summed over the processes. */
  messages?: { matched: number; hit: number };
}

/** Per-fault times, from the launch's events. */
export function faultFigures(fired: FiredFault[], events: RunEventLine[]): FaultFigure[] {
  const start = events.find((e) => e.type === 'RUN_DEPLOYED')?.at ?? null;
  const after = (t: number, pred: (e: RunEventLine) => boolean) => events.find((e) => (e.at ?? 0) >= t && pred(e))?.at ?? null;
  const secs = (from: number, to: number | null) => (to === null ? null : Math.round(to - from) / 1000);
  const times = fired.flatMap((f) => (f.firedAt === null ? [] : [f.firedAt])).sort((a, b) => a - b);
  // Devices leave when the run is over: that is no sign of a fault.
  const end = events.find((e) => e.type === 'RUN_FINISHED' || e.type === 'RUN_FAILED')?.at ?? Infinity;
  return fired.map(({ fault: f, firedAt, reports }) => {
    // A sign of trouble is this fault's only until the next fault fires.
    const next = firedAt === null ? Infinity : Math.min(end, times.find((t) => t > firedAt) ?? Infinity);
    const noticed =
      firedAt === null
        ? null
        : after(firedAt, (e) => (e.at ?? 0) < next && NOTICED.has(e.type) && (!e.device || !f.device || e.device === f.device));
    return {
      kind: f.kind,
      at: f.at,
      source: f.source,
      device: f.device ?? null,
      subject: f.subject ?? null,
      firedSeconds: firedAt === null || start === null ? null : secs(start, firedAt),
      detectedSeconds: firedAt === null ? null : secs(firedAt, noticed),
      recoverySeconds:
        firedAt === null
          ? null
          : secs(
              firedAt,
              after(firedAt, (e) => e.type === 'STEP_DONE'),
            ),
      ...(reports.length > 0 || f.subject
        ? { messages: { matched: reports.reduce((a, r) => a + r.matched, 0), hit: reports.reduce((a, r) => a + r.hit, 0) } }
        : {}),
    };
  });
}

/** Median and max of detection and recovery per fault kind. */
export function recoveryByKind(figures: FaultFigure[]) {
  const stats = (xs: (number | null)[]) => {
    const v = xs.filter((x): x is number => x !== null).sort((a, b) => a - b);
    if (v.length === 0) return null;
    const mid = Math.floor(v.length / 2);
    return { median: v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2, max: v.at(-1)!, count: v.length };
  };
  const kinds = [...new Set(figures.map((f) => f.kind)), 'all'];
  return Object.fromEntries(
    kinds.map((k) => {
      const of = figures.filter((f) => k === 'all' || f.kind === k);
      return [k, { detected: stats(of.map((f) => f.detectedSeconds)), recovery: stats(of.map((f) => f.recoverySeconds)) }];
    }),
  );
}

/** Rejected messages the run reported, per reason (duplicates, late generations, ...). */
export function rejectedByReason(events: RunEventLine[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of events)
    if (e.type === undefined && typeof e.reason === 'string' && typeof e.subject === 'string') out[e.reason] = (out[e.reason] ?? 0) + 1;
  return out;
}
