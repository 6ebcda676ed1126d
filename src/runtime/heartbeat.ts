/**
 * Heartbeats: every actor that others must know is alive publishes one every HEARTBEAT_MS; a
 * peer silent for LOST_AFTER_MS (three missed heartbeats) is reported lost.
 */
import { every, type Clock } from './clock.ts';
import type { Heartbeat } from './messages.ts';

export type { Heartbeat };

export const HEARTBEAT_MS = 500;
export const LOST_AFTER_MS = 3 * HEARTBEAT_MS;

export interface HeartbeatSource {
  device: string;
  /** Reads the current state, role, step, phase and memory at each beat. */
  sample(): { state: string; step: number; role: string | null; phase: string | null; memoryBytes: number };
  /** Sends one heartbeat; a failure is the transport's to report, the beat goes on. */
  publish(hb: Heartbeat): void;
}

/** Starts beating (the first beat goes out at once); returns the stop function. */
export function startHeartbeats(source: HeartbeatSource, clock: Clock, intervalMs = HEARTBEAT_MS): () => void {
  let seq = 0;
  const beat = () => source.publish({ device: source.device, ...source.sample(), seq: seq++, sentAt: clock.now() });
  beat();
  return every(clock, intervalMs, beat);
}
