/**
 * The clock every actor schedules with, injected so that tests run machines on XState's
 * `SimulatedClock` (advance time by hand, no waiting) and production on the system clock.
 * `SimulatedClock` from xstate satisfies this interface as it is.
 */
export interface Clock {
  /** Milliseconds; only differences between two readings are meaningful. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  /**
   * Runs `fn` once the messages that have arrived meanwhile were read (the host's setImmediate:
   * after the event loop's poll phase). Absent on a simulated clock, where nothing waits unread.
   */
  afterPendingInput?(fn: () => void): void;
}

/** The real clock: Date.now and the host's timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as ReturnType<typeof setTimeout>),
  afterPendingInput: (fn) => setImmediate(fn),
};

/** Resolves after `ms` on `clock` (on a simulated clock: once the test advances it that far). */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => {
    clock.setTimeout(resolve, ms);
  });
}

/**
 * Calls `fn` every `intervalMs` on `clock` until the returned stop function is called. Each tick
 * is scheduled after the previous one ran, so a blocked event loop delays ticks instead of
 * bunching them.
 */
export function every(clock: Clock, intervalMs: number, fn: () => void): () => void {
  let stopped = false;
  let id: unknown;
  const tick = () => {
    if (stopped) return;
    fn();
    if (!stopped) id = clock.setTimeout(tick, intervalMs);
  };
  id = clock.setTimeout(tick, intervalMs);
  return () => {
    stopped = true;
    clock.clearTimeout(id);
  };
}
