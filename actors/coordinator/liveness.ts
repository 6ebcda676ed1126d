/**
 * Which devices a run keeps, from the registry's liveness events. Compute runs off each device's
 * event loop, so a device whose heartbeats stop for the registry's deadline (three missed beats)
 * is not busy but gone or stalled: it is lost to the run at once, as is one that left. The
 * registry only lets a new process take a name once the old one is lost or gone, and a stalled
 * device that speaks again comes back as a join, never as the device the run lost.
 */
import type { DeviceRegistry } from './registry.ts';

export interface RunLivenessOptions {
  registry: DeviceRegistry;
  /** A device is (again) ready for the run: alive and profiled. */
  joined(device: string): void;
  /** The run must do without `device`. */
  lost(device: string, reason: string): void;
}

export interface RunLiveness {
  /** Reports `device` as joined if the registry already knows it alive and profiled. */
  check(device: string): void;
  /** Stops listening. */
  stop(): void;
}

/** Watches the registry for one run; see the module comment for the policy. */
export function watchRunDevices(o: RunLivenessOptions): RunLiveness {
  const lost = new Set<string>();
  const lose = (d: string, reason: string) => {
    if (lost.has(d)) return;
    lost.add(d);
    o.lost(d, reason);
  };
  const check = (d: string) => {
    const r = o.registry.get(d);
    if (!r?.alive || r.matmulGflops === null) return;
    lost.delete(d);
    o.joined(d);
  };
  const unsubscribe = o.registry.subscribe((e) => {
    const d = e.device.name;
    if (e.type === 'DEVICE_PROFILED' || e.type === 'DEVICE_JOINED') check(d);
    else if (e.type === 'DEVICE_LEFT') lose(d, `left: ${e.reason}`);
    else lose(d, e.reason ?? `silent for ${e.silentMs} ms`);
  });
  return { check, stop: unsubscribe };
}
