/**
 * A step's timeline on one device: start and end of each forward, backward, send, all-reduce and
 * update, on the device's wall clock (ms since the epoch, sub-millisecond), so the coordinator can
 * lay the devices' 1F1B schedules side by side (a Gantt chart in the run report). Devices on one
 * host share the clock; across hosts the chart is as aligned as their clocks are.
 */
export type SpanKind = 'forward' | 'backward' | 'send' | 'allreduce' | 'update';

export interface Span {
  kind: SpanKind;
  /** Micro-batch index (forward, backward, send); absent for the step-wide operations. */
  mb?: number;
  start: number;
  end: number;
  /** Bytes sent (send, all-reduce). */
  bytes?: number;
}

/** Wall clock in ms with the monotonic clock's resolution. */
export const wallMs = (): number => performance.timeOrigin + performance.now();

/** Collects the spans of one step; `timed` wraps an operation, `add` records one measured elsewhere. */
export class StepTimeline {
  readonly spans: Span[] = [];
  /** Spans beyond this are dropped: a record for a chart, never a memory risk. */
  constructor(private readonly max = 4096) {}

  add(span: Span): void {
    if (this.spans.length < this.max) this.spans.push(span);
  }

  async timed<T>(kind: SpanKind, mb: number | undefined, op: () => Promise<T>, bytes?: number): Promise<T> {
    const start = wallMs();
    try {
      return await op();
    } finally {
      this.add({ kind, ...(mb === undefined ? {} : { mb }), start, end: wallMs(), ...(bytes === undefined ? {} : { bytes }) });
    }
  }
}

/** Runs `op`, timed into `timeline` when there is one. */
export function traced<T>(
  timeline: StepTimeline | undefined,
  kind: SpanKind,
  mb: number | undefined,
  op: () => Promise<T>,
  bytes?: number,
): Promise<T> {
  return timeline ? timeline.timed(kind, mb, op, bytes) : op();
}
