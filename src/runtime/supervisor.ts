/**
 * Supervision: run a child, restart it when it fails, wait longer after each failure in a row
 * (exponential backoff), give up after `maxRestarts`. The child is a named promise actor: it
 * resolves when the child ends by itself (no restart) and rejects when it fails. Stopping the
 * supervisor aborts the running child through its AbortSignal.
 */
import { assign, setup } from 'xstate';
import { namedPromise } from './named.ts';

/** How a supervisor restarts its child. */
export interface BackoffPolicy {
  /** Wait before the first restart. */
  initialMs: number;
  /** Each further failure in a row multiplies the wait by this. */
  factor: number;
  /** The wait never exceeds this. */
  maxMs: number;
  /** Failures in a row tolerated; the next one gives up (state `failed`). */
  maxRestarts: number;
  /** A child that ran this long without failing clears the failure streak. */
  stableMs: number;
}

export const defaultBackoff: BackoffPolicy = { initialMs: 250, factor: 2, maxMs: 8_000, maxRestarts: 5, stableMs: 30_000 };

/** Wait before restart number `restart` (1-based) under `policy`. */
export function backoffDelay(policy: BackoffPolicy, restart: number): number {
  return Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, restart - 1));
}

export interface SupervisorContext {
  policy: BackoffPolicy;
  /** Failures in a row so far. */
  restarts: number;
  /** Every start, including the first. */
  starts: number;
  lastError?: string;
}

/** Input of the `child` actor: which start this is (0 = first). */
export interface ChildInput {
  start: number;
}

export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    input: {} as { policy: BackoffPolicy },
    events: {} as { type: 'STOP' },
  },
  actors: { child: namedPromise<void, ChildInput>('child') },
  actions: {
    /** Told when a restart is scheduled: (error, restart number, delay). */
    reportRestart: (_, _params: { error: string; restart: number; delayMs: number }) => {},
    /** Told when the supervisor gives up. */
    reportGiveUp: (_, _params: { error: string; restarts: number }) => {},
  },
  guards: {
    restartsLeft: ({ context }) => context.restarts < context.policy.maxRestarts,
  },
  delays: {
    backoff: ({ context }) => backoffDelay(context.policy, context.restarts),
    stable: ({ context }) => context.policy.stableMs,
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input }) => ({ policy: input.policy, restarts: 0, starts: 0 }),
  initial: 'running',
  on: { STOP: '.stopped' },
  states: {
    running: {
      entry: assign({ starts: ({ context }) => context.starts + 1 }),
      invoke: {
        src: 'child',
        input: ({ context }) => ({ start: context.starts - 1 }),
        onDone: 'stopped',
        onError: [
          {
            guard: 'restartsLeft',
            target: 'backoff',
            actions: [
              assign({ restarts: ({ context }) => context.restarts + 1, lastError: ({ event }) => errorText(event.error) }),
              {
                type: 'reportRestart',
                params: ({ context }) => ({
                  error: context.lastError ?? '',
                  restart: context.restarts,
                  delayMs: backoffDelay(context.policy, context.restarts),
                }),
              },
            ],
          },
          {
            target: 'failed',
            actions: [
              assign({ lastError: ({ event }) => errorText(event.error) }),
              { type: 'reportGiveUp', params: ({ context }) => ({ error: context.lastError ?? '', restarts: context.restarts }) },
            ],
          },
        ],
      },
      after: { stable: { actions: assign({ restarts: 0 }) } },
    },
    backoff: { after: { backoff: 'running' } },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
});

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
