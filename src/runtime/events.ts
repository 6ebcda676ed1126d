/**
 * Run events: what happened, published on the run's `events` subject (kind 'event') for the CLI,
 * dashboards and chaos checkers. Publishing never throws: an event that cannot be sent is lost,
 * the actor goes on.
 */
import type { Bus } from '../bus/index.ts';
import type { Clock } from './clock.ts';
import { systemClock } from './clock.ts';
import type { RunEvent } from './messages.ts';

export class RunEvents {
  constructor(
    private readonly bus: Bus,
    readonly source: string,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Publishes `{ type, at, source, ...fields }` and returns it. `type` is UPPER_SNAKE. */
  emit(type: string, fields: Record<string, unknown> = {}): RunEvent {
    const event: RunEvent = { ...fields, type, at: this.clock.now(), source: this.source };
    if (!this.bus.isClosed) {
      try {
        this.bus.publish(this.bus.subjects.events(), 'event', event);
      } catch {
        /* best effort: see module doc */
      }
    }
    return event;
  }
}
