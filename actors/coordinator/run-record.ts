/**
 * What a run directory keeps for the run report beyond summary.json and metrics.jsonl:
 *
 * - timeline.jsonl: the devices' spans (forward, backward, send, all-reduce, update) of sampled
 *   steps: the first step of every epoch and the first after the groups changed (a re-plan), so
 *   the record stays small however long the run is.
 * - memory.jsonl: each device's memory in use over time, from its heartbeats (one sample per
 *   device per second at most), with its state, role and step.
 * - events.jsonl: every run event (joins, losses, re-plans, steps, epochs) as launch received it.
 *
 * The launcher's process owns a RunRecorder; the run actor hands it the step timelines. Writing
 * is best effort: a full disk costs the report, never the run.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Bus } from '../../src/bus/index.ts';
import type { Span } from '../../src/engine/index.ts';
import { heartbeat } from '../../src/runtime/messages.ts';

/** One line of timeline.jsonl. */
export interface TimelineRecord {
  type: 'timeline';
  phase: string;
  epoch: number;
  step: number;
  /** When the coordinator sent the step and when the last reply arrived (ms since the epoch). */
  sentAt: number;
  doneAt: number;
  groups: string[][];
  devices: Record<string, Span[]>;
}

/** One line of memory.jsonl. */
export interface MemorySample {
  at: number;
  device: string;
  memoryBytes: number;
  state: string;
  role: string | null;
  step: number;
  phase: string | null;
}

/** At most this many step timelines per run. */
const MAX_TIMELINES = 64;
const MEMORY_EVERY_MS = 1000;

function append(file: string, value: unknown): boolean {
  try {
    appendFileSync(file, JSON.stringify(value) + '\n', { mode: 0o600 });
    return true;
  } catch {
    return false;
  }
}

/** Decides which steps' timelines to keep and appends them to timeline.jsonl. */
export class TimelineSampler {
  private lastEpoch = -1;
  private lastGroups = '';
  private count = 0;
  constructor(private readonly runDir: string) {}

  /** Whether a step of `epoch` over `groups` is one to keep (the first of its epoch or of its plan). */
  wants(epoch: number, groups: string[][]): boolean {
    return this.count < MAX_TIMELINES && (epoch !== this.lastEpoch || JSON.stringify(groups) !== this.lastGroups);
  }

  record(r: Omit<TimelineRecord, 'type'>): void {
    if (!this.wants(r.epoch, r.groups)) return;
    this.lastEpoch = r.epoch;
    this.lastGroups = JSON.stringify(r.groups);
    if (append(join(this.runDir, 'timeline.jsonl'), { type: 'timeline', ...r })) this.count++;
  }
}

/** Live view of the devices (for the dashboard) plus the memory and event files of the run. */
export class RunRecorder {
  /** The latest heartbeat of each device. */
  readonly devices = new Map<string, MemorySample>();
  private readonly lastWritten = new Map<string, number>();
  private readonly listeners = new Set<() => void>();
  private unsubscribe: (() => void) | null = null;

  constructor(readonly runDir: string) {}

  /** Records a run event (launch's `onEvent`). */
  event(e: Record<string, unknown>): void {
    append(join(this.runDir, 'events.jsonl'), e);
    this.changed();
  }

  /** Starts sampling the devices' heartbeats on `bus`. */
  watch(bus: Bus): void {
    const sub = bus.subscribe(
      bus.subjects.devHbAll(),
      (env, info) => {
        const hb = heartbeat.safeParse(env.body);
        // Only a device's own heartbeat counts (the subject names the sender).
        if (!hb.success || hb.data.device !== info.sender) return;
        const { device, memoryBytes, state, role, step, phase } = hb.data;
        const sample: MemorySample = { at: Date.now(), device, memoryBytes, state, role, step, phase };
        this.devices.set(device, sample);
        if (sample.at - (this.lastWritten.get(device) ?? 0) >= MEMORY_EVERY_MS) {
          this.lastWritten.set(device, sample.at);
          append(join(this.runDir, 'memory.jsonl'), sample);
        }
        this.changed();
      },
      { kinds: ['hb'] },
    );
    this.unsubscribe = () => sub.unsubscribe();
  }

  /** Stops sampling (also after the bus has closed). */
  stop(): void {
    try {
      this.unsubscribe?.();
    } catch {
      /* the connection is gone, and the subscription with it */
    }
    this.unsubscribe = null;
  }

  /** `listener` runs after every event and heartbeat; returns the function that removes it. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }
}
