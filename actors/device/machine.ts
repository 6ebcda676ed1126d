/**
 * The device actor's logic (pure: every effect is only named here; actor.ts provides them).
 *
 *   connecting -> online( registering <-> registerBackoff -> profiling -> idle
 *                         idle -> loading -> ready -> working -> ready -> idle )
 *              -> draining -> stopped
 *   online --DISCONNECTED--> reconnecting --RECONNECTED--> online.registering
 *   anything unrecoverable -> failed
 *
 * A DRAIN that arrives while working is remembered and taken once the work is done, so a drained
 * device never abandons a step half way. Registration retries with exponential backoff (the
 * coordinator may start after the device, or be restarting).
 */
import { assign, setup, type SnapshotFrom } from 'xstate';
import { namedPromise } from '../../src/runtime/named.ts';
import { backoffDelay, type BackoffPolicy } from '../../src/runtime/supervisor.ts';
import type { JoinReply } from '../../src/runtime/messages.ts';

export interface DeviceContext {
  device: string;
  /** Backoff for registration attempts. */
  policy: BackoffPolicy;
  /** Failed registration attempts in a row. */
  registerFailures: number;
  /** Last training step finished (-1 before the first). */
  step: number;
  drainRequested: boolean;
  drainReason: string;
  /** Why the device failed, when it did. */
  error?: string;
}

export type DeviceEvent =
  | { type: 'DISCONNECTED' }
  | { type: 'RECONNECTED' }
  | { type: 'CLOSED'; error: string }
  | { type: 'DRAIN'; reason: string }
  | { type: 'LOAD'; assignment: unknown }
  | { type: 'UNLOAD' }
  | { type: 'WORK'; work: unknown };

export const deviceMachine = setup({
  types: {
    context: {} as DeviceContext,
    input: {} as { device: string; policy: BackoffPolicy },
    events: {} as DeviceEvent,
  },
  actors: {
    /** Opens the bus connection. */
    connect: namedPromise<void>('connect'),
    /** Sends the hello to the coordinator; rejects when nobody answers (retryable). */
    register: namedPromise<JoinReply, { attempt: number }>('register'),
    /** Measures this device's speed and reports it to the coordinator. */
    profile: namedPromise<void>('profile'),
    /** Loads an assignment (stage layers, cache shard) given by the coordinator. */
    load: namedPromise<void, { assignment: unknown }>('load'),
    /** Runs one unit of work (a training step's share); resolves with the step it finished. */
    work: namedPromise<{ step: number }, { work: unknown }>('work'),
    /** Finishes in-flight traffic and tells the coordinator the device leaves. */
    drain: namedPromise<void, { reason: string }>('drain'),
  },
  actions: {
    startHeartbeats: () => {},
    stopHeartbeats: () => {},
    /** Something went wrong that the device survives; the binding reports it on `events`. */
    reportError: (_, _params: { what: string; error: string }) => {},
  },
  guards: {
    accepted: (_, reply: JoinReply) => reply.ok,
    registerRetriesLeft: ({ context }) => context.registerFailures < context.policy.maxRestarts,
    drainRequested: ({ context }) => context.drainRequested,
  },
  delays: {
    registerRetry: ({ context }) => backoffDelay(context.policy, context.registerFailures),
  },
}).createMachine({
  id: 'device',
  context: ({ input }) => ({ device: input.device, policy: input.policy, registerFailures: 0, step: -1, drainRequested: false, drainReason: '' }),
  initial: 'connecting',
  on: {
    CLOSED: { target: '.failed', actions: assign({ error: ({ event }) => `bus closed: ${event.error}` }) },
  },
  states: {
    connecting: {
      invoke: {
        src: 'connect',
        onDone: 'online',
        onError: { target: 'failed', actions: assign({ error: ({ event }) => `cannot connect: ${text(event.error)}` }) },
      },
      on: { DRAIN: 'stopped' },
    },
    online: {
      initial: 'registering',
      on: {
        DISCONNECTED: 'reconnecting',
        DRAIN: { target: 'draining', actions: assign({ drainReason: ({ event }) => event.reason }) },
      },
      states: {
        registering: {
          invoke: {
            src: 'register',
            input: ({ context }) => ({ attempt: context.registerFailures }),
            onDone: [
              {
                guard: { type: 'accepted', params: ({ event }) => event.output },
                target: 'profiling',
                actions: [assign({ registerFailures: 0 }), 'startHeartbeats'],
              },
              {
                target: '#device.failed',
                actions: assign({ error: ({ event }) => `registration refused: ${event.output.ok ? '' : event.output.reason}` }),
              },
            ],
            onError: [
              {
                guard: 'registerRetriesLeft',
                target: 'registerBackoff',
                actions: [
                  assign({ registerFailures: ({ context }) => context.registerFailures + 1 }),
                  { type: 'reportError', params: ({ event }) => ({ what: 'register', error: text(event.error) }) },
                ],
              },
              { target: '#device.failed', actions: assign({ error: ({ event }) => `cannot register: ${text(event.error)}` }) },
            ],
          },
        },
        registerBackoff: { after: { registerRetry: 'registering' } },
        profiling: {
          invoke: {
            src: 'profile',
            onDone: 'idle',
            onError: { target: '#device.failed', actions: assign({ error: ({ event }) => `profiling failed: ${text(event.error)}` }) },
          },
        },
        idle: {
          on: { LOAD: 'loading' },
        },
        loading: {
          invoke: {
            src: 'load',
            input: ({ event }) => ({ assignment: event.type === 'LOAD' ? event.assignment : undefined }),
            onDone: 'ready',
            onError: { target: 'idle', actions: { type: 'reportError', params: ({ event }) => ({ what: 'load', error: text(event.error) }) } },
          },
        },
        ready: {
          on: { WORK: 'working', UNLOAD: 'idle' },
        },
        working: {
          on: {
            DRAIN: { actions: assign({ drainRequested: true, drainReason: ({ event }) => event.reason }) },
          },
          invoke: {
            src: 'work',
            input: ({ event }) => ({ work: event.type === 'WORK' ? event.work : undefined }),
            onDone: [
              { guard: 'drainRequested', target: '#device.draining', actions: assign({ step: ({ event }) => event.output.step }) },
              { target: 'ready', actions: assign({ step: ({ event }) => event.output.step }) },
            ],
            onError: [
              { guard: 'drainRequested', target: '#device.draining' },
              { target: 'ready', actions: { type: 'reportError', params: ({ event }) => ({ what: 'work', error: text(event.error) }) } },
            ],
          },
        },
      },
    },
    reconnecting: {
      on: {
        RECONNECTED: 'online.registering',
        DRAIN: { target: 'draining', actions: assign({ drainReason: ({ event }) => event.reason }) },
      },
    },
    draining: {
      invoke: {
        src: 'drain',
        input: ({ context }) => ({ reason: context.drainReason }),
        onDone: 'stopped',
        onError: { target: 'stopped', actions: { type: 'reportError', params: ({ event }) => ({ what: 'drain', error: text(event.error) }) } },
      },
    },
    stopped: { type: 'final', entry: 'stopHeartbeats' },
    failed: { type: 'final', entry: 'stopHeartbeats' },
  },
});

export type DeviceSnapshot = SnapshotFrom<typeof deviceMachine>;

/** The innermost state's name ('idle', 'working', 'reconnecting', ...), as heartbeats report it. */
export function deviceStateName(snapshot: DeviceSnapshot): string {
  let value: unknown = snapshot.value;
  while (value && typeof value === 'object') value = Object.values(value)[0];
  return String(value);
}

function text(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
