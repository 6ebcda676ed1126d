/**
 * The step deadline: a step that has not returned within its deadline is given up and replayed
 * on the same devices under a new plan generation, so a message lost on the bus (a dropped
 * activation, a reply that went down with a restarting nats-server) costs one replay instead of
 * hanging the run. Late messages of the given-up attempt carry the old generation and are
 * dropped by their receivers.
 *
 * The deadline of a step's first attempt is the plan's simulated step time times a generous
 * factor, never under a floor (a tiny model's predicted milliseconds say nothing of a loaded
 * machine's scheduling), or `training.stepDeadlineMs` when the topology sets it. Each further
 * attempt of the same step doubles it, so a step that is merely slower than predicted still
 * commits; after MAX_STEP_ATTEMPTS expiries the run fails with the step named.
 *
 * The coordinator's own bus reconnecting (the server restarted) gives up the step in flight at
 * once: whatever the server held for it is gone.
 */
import type { Bus } from '../../src/bus/index.ts';

export const STEP_DEADLINE_FACTOR = 10;
export const STEP_DEADLINE_FLOOR_MS = 10_000;
export const MAX_STEP_ATTEMPTS = 5;

/** Milliseconds the attempt `attempt` (0 for the first) of a step may take. */
export function stepDeadlineMs(o: { simulatedStepMs: number; attempt: number; fixedMs?: number }): number {
  const first = o.fixedMs ?? Math.max(STEP_DEADLINE_FLOOR_MS, STEP_DEADLINE_FACTOR * o.simulatedStepMs);
  return first * 2 ** o.attempt;
}

/** What the run machine's context says about the step in flight. */
export interface StepAttempts {
  epoch: number;
  /** Steps committed so far (the step in flight is the next). */
  step: number;
  /** Attempts of the step in flight given up so far. */
  stepAttempt: number;
}

interface Watched {
  send(event: { type: 'BUS_RECONNECTED' }): void;
  subscribe(listener: (snapshot: { context: StepAttempts }) => void): { unsubscribe(): void };
}

/**
 * Wires the bus into the run actor (a reconnect gives up the step in flight) and reports every
 * given-up attempt as a STEP_EXPIRED event. Returns the stop function.
 */
export function watchStepAttempts(bus: Bus, actor: Watched, emit: (type: string, fields: Record<string, unknown>) => void): () => void {
  const off = bus.on('reconnect', () => actor.send({ type: 'BUS_RECONNECTED' }));
  let last = 0;
  const sub = actor.subscribe(({ context: c }) => {
    if (c.stepAttempt > last) emit('STEP_EXPIRED', { epoch: c.epoch, step: c.step + 1, attempt: c.stepAttempt });
    last = c.stepAttempt;
  });
  return () => {
    off();
    sub.unsubscribe();
  };
}
