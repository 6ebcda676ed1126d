/**
 * How fast each device really computed in epoch 1, for the cached phase's shard sizes. Only
 * steps whose plan had one stage count: every device ran the same layers then, so compute time
 * per row compares the devices directly, over many steps; the speeds measured at profiling are a
 * few seconds' sample of what may have been a busy machine.
 */

/** Rows a device must have computed before its measured speed decides its shard. */
export const MEASURED_ROWS = 8;

export class EpochOneSpeeds {
  private readonly seen = new Map<string, { ms: number; rows: number }>();

  /** One epoch-1 step's replies: compute seconds and rows per device, over `groups` stages. */
  record(groups: number, replies: ReadonlyMap<string, { computeSeconds: number; rows: number }>): void {
    if (groups !== 1) return;
    for (const [d, r] of replies) {
      if (!(r.computeSeconds > 0) || !(r.rows > 0)) continue;
      const m = this.seen.get(d) ?? { ms: 0, rows: 0 };
      this.seen.set(d, { ms: m.ms + r.computeSeconds * 1000, rows: m.rows + r.rows });
    }
  }

  /** Milliseconds per row of each of `devices`, or null unless every one of them has enough rows measured. */
  msPerRow(devices: readonly string[]): Map<string, number> | null {
    const out = new Map<string, number>();
    for (const d of devices) {
      const m = this.seen.get(d);
      if (!m || m.rows < MEASURED_ROWS) return null;
      out.set(d, m.ms / m.rows);
    }
    return out;
  }
}
