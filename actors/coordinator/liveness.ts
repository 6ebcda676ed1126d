/**
 * Which devices a run keeps, from the registry's liveness events. A device busy in one long
 * compute burst misses heartbeats and is reported lost by the registry, then speaks again from
 * the same process: the run keeps it. Only a device still silent `graceMs` after it was reported
 * lost, one replaced by a new process, or one that left, is lost to the run.
 */
import type { Clock } from '../../src/runtime/clock.ts';
import type { DeviceRegistry } from './registry.ts';

export interface RunLivenessOptions {
  registry: DeviceRegistry;
  clock: Clock;
  graceMs: number;
  /** A device is (again) ready for the run: alive and profiled. */
  joined(device: string): void;
  /** The run must do without `device`. */
  lost(device: string, reason: string): void;
  /** A device reported lost spoke again from the same process within the grace. */
  recovered(device: string): void;
}

export interface RunLiveness {
  /** Reports `device` as joined if the registry already knows it alive and profiled. */
  check(device: string): void;
  /** Stops listening and cancels every pending grace. */
  stop(): void;
}

/** Watches the registry for one run; see the module comment for the policy. */
export function watchRunDevices(o: RunLivenessOptions): RunLiveness {
  const pids = new Map<string, number>();
  const grace = new Map<string, unknown>();
  const cancel = (d: string) => { if (grace.has(d)) o.clock.clearTimeout(grace.get(d)); grace.delete(d); };
  const lost = (d: string, reason: string) => { cancel(d); o.lost(d, reason); };
  const check = (d: string) => {
    const r = o.registry.get(d);
    if (!r?.alive || r.matmulGflops === null) return;
    const pid = pids.get(d);
    if (pid !== undefined && pid !== r.hello.pid) return lost(d, `replaced by process ${r.hello.pid}`);
    if (grace.has(d)) { cancel(d); o.recovered(d); return; }
    pids.set(d, r.hello.pid);
    o.joined(d);
  };
  const unsubscribe = o.registry.subscribe((e) => {
    const d = e.device.name;
    if (e.type === 'DEVICE_PROFILED' || e.type === 'DEVICE_JOINED') check(d);
    else if (e.type === 'DEVICE_LEFT') lost(d, `left: ${e.reason}`);
    else if (!grace.has(d)) grace.set(d, o.clock.setTimeout(() => { grace.delete(d); o.lost(d, `silent for ${e.silentMs + o.graceMs} ms`); }, o.graceMs));
  });
  return {
    check,
    stop: () => { unsubscribe(); for (const d of [...grace.keys()]) cancel(d); },
  };
}
