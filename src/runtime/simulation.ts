/**
 * Simulation knobs of a device (topology `slowdown`, `bandwidthMbps`), applied by the runtime so
 * one machine can stand in for a heterogeneous lab: compute is stretched by a sleep proportional
 * to its measured time, and sends wait for a link of the given rate.
 */
import { sleep, type Clock } from './clock.ts';

export interface SimulationKnobs {
  /** >= 1: compute takes this many times as long. */
  slowdown: number;
  /** Outgoing link rate; null = unlimited. */
  bandwidthMbps: number | null;
}

export class SimulatedDevice {
  /** Clock time at which the simulated outgoing link is next free. */
  private linkFreeAt = 0;

  constructor(
    readonly knobs: SimulationKnobs,
    private readonly clock: Clock,
  ) {
    if (!(knobs.slowdown >= 1)) throw new RangeError(`slowdown must be >= 1, got ${knobs.slowdown}`);
    if (knobs.bandwidthMbps !== null && !(knobs.bandwidthMbps > 0))
      throw new RangeError(`bandwidthMbps must be > 0, got ${knobs.bandwidthMbps}`);
  }

  /** Runs `fn`, then sleeps (slowdown - 1) x its duration. */
  async compute<T>(fn: () => T | Promise<T>): Promise<T> {
    const t0 = this.clock.now();
    const out = await fn();
    const extra = (this.knobs.slowdown - 1) * (this.clock.now() - t0);
    if (extra > 0) await sleep(this.clock, extra);
    return out;
  }

  /** Time `bytes` occupy the simulated link, ms (0 when unlimited). */
  transferMs(bytes: number): number {
    return this.knobs.bandwidthMbps === null ? 0 : ((bytes * 8) / (this.knobs.bandwidthMbps * 1e6)) * 1000;
  }

  /** Waits until `bytes` have crossed the simulated link (sends queue behind each other), then calls `send`. */
  async send<T>(bytes: number, send: () => T): Promise<T> {
    const now = this.clock.now();
    const start = Math.max(now, this.linkFreeAt);
    this.linkFreeAt = start + this.transferMs(bytes);
    const wait = this.linkFreeAt - now;
    if (wait > 0) await sleep(this.clock, wait);
    return send();
  }
}
