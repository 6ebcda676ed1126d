/**
 * Heartbeats: every actor that others must know is alive publishes one every HEARTBEAT_MS; a
 * peer silent for LOST_AFTER_MS (three missed heartbeats) is reported lost.
 */
import { every, type Clock } from './clock.ts';

export const HEARTBEAT_MS = 500;
export const LOST_AFTER_MS = 3 * HEARTBEAT_MS;

/** What a heartbeat says (**contract** of `dev.<device>.hb`). */
export interface Heartbeat {
  /** Sender's device name. */
  device: string;
  /** The sender's machine state, e.g. 'idle', 'working'. */
  state: string;
  /** Training step the sender is on (-1 before the first). */
  step: number;
  /** Bytes in use: tensors plus caches where known, else the process's resident set. */
  memoryBytes: number;
  /** Increments by one per heartbeat from the same process; a restart starts again at 0. */
  seq: number;
  /** Sender's wall clock, ms since the epoch (for display; liveness uses the receiver's clock). */
  sentAt: number;
}

export interface HeartbeatSource {
  device: string;
  /** Reads the current state, step and memory at each beat. */
  sample(): { state: string; step: number; memoryBytes: number };
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
