/**
 * A run directory read back for the run report and the live dashboard: summary.json (once the
 * run finished), metrics.jsonl (steps and epochs), timeline.jsonl (sampled steps' spans per
 * device), memory.jsonl (heartbeats' memory) and events.jsonl (run events). Files still being
 * written are read as far as they go; a line that does not parse is skipped and counted.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { RunSummary } from '../../actors/coordinator/run-summary.ts';
import type { MemorySample, TimelineRecord } from '../../actors/coordinator/run-record.ts';

export class ReportError extends Error {
  override name = 'ReportError';
}

export interface StepRow {
  /** When it finished (ms since the epoch); absent in runs recorded before steps carried it. */
  at?: number;
  phase: string;
  epoch: number;
  step: number;
  loss: number;
  seconds: number;
  bytes: number;
  devices: Record<string, { rows: number; computeSeconds: number; bytesSent: number; peakBytes: number }>;
}

export interface EpochRow {
  epoch: number;
  phase: string;
  steps: number;
  seconds: number;
  loss: number;
  bytes: number;
}

export type RunEventRow = Record<string, unknown> & { type: string; at?: number };

export interface RunRecord {
  runDir: string;
  summary: RunSummary | null;
  steps: StepRow[];
  epochs: EpochRow[];
  timelines: TimelineRecord[];
  memory: MemorySample[];
  events: RunEventRow[];
  /** Lines skipped per file (did not parse). */
  skipped: Record<string, number>;
}

function readLines(file: string, skipped: Record<string, number>, name: string): Record<string, unknown>[] {
  if (!existsSync(file)) return [];
  const out: Record<string, unknown>[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const v = JSON.parse(line) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        out.push(v as Record<string, unknown>);
        continue;
      }
    } catch {
      /* counted below */
    }
    skipped[name] = (skipped[name] ?? 0) + 1;
  }
  return out;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Reads `runDir`. @throws ReportError when it is not a directory or holds none of a run's files. */
export function loadRunRecord(runDir: string): RunRecord {
  if (!existsSync(runDir)) throw new ReportError(`${runDir}: no such run directory`);
  if (!statSync(runDir).isDirectory()) throw new ReportError(`${runDir}: not a directory`);
  const files = ['summary.json', 'metrics.jsonl', 'events.jsonl'];
  if (!files.some((f) => existsSync(join(runDir, f))))
    throw new ReportError(`${runDir}: not a run directory (none of ${files.join(', ')} in it)`);
  const skipped: Record<string, number> = {};
  let summary: RunSummary | null = null;
  if (existsSync(join(runDir, 'summary.json'))) {
    try {
      summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
    } catch (err) {
      throw new ReportError(`${join(runDir, 'summary.json')}: not JSON: ${(err as Error).message}`);
    }
  }
  const metrics = readLines(join(runDir, 'metrics.jsonl'), skipped, 'metrics.jsonl');
  const steps = metrics.filter((m) => m.type === 'step' && isNum(m.step) && isNum(m.loss)) as unknown as StepRow[];
  const epochs = metrics.filter((m) => m.type === 'epoch' && isNum(m.epoch) && isNum(m.seconds)) as unknown as EpochRow[];
  const timelines = readLines(join(runDir, 'timeline.jsonl'), skipped, 'timeline.jsonl').filter(
    (t) => t.type === 'timeline' && t.devices && typeof t.devices === 'object',
  ) as unknown as TimelineRecord[];
  const memory = readLines(join(runDir, 'memory.jsonl'), skipped, 'memory.jsonl').filter(
    (m) => typeof m.device === 'string' && isNum(m.at) && isNum(m.memoryBytes),
  ) as unknown as MemorySample[];
  const events = readLines(join(runDir, 'events.jsonl'), skipped, 'events.jsonl').filter(
    (e) => typeof e.type === 'string',
  ) as RunEventRow[];
  // A resumed run appends to metrics.jsonl: a step or epoch recorded twice keeps its last line.
  const lastBy = <T>(rows: T[], key: (r: T) => string) => [...new Map(rows.map((r) => [key(r), r])).values()];
  return {
    runDir,
    summary,
    steps: lastBy(steps, (s) => String(s.step)).sort((a, b) => a.step - b.step),
    epochs: lastBy(epochs, (e) => String(e.epoch)).sort((a, b) => a.epoch - b.epoch),
    timelines,
    memory,
    events,
    skipped,
  };
}
