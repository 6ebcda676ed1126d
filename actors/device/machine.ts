/**
 * The device actor's logic (pure: every effect is only named here; actor.ts provides them).
 *
 *   connecting -> online( registering <-> registerBackoff -> profiling -> idle
 *                         idle  --LOAD-->   loading   -> ready      (a stage, or the cached-phase worker)
 *                         ready --WORK-->   working   -> ready      (a step, a cache fill)
 *                         idle  --WORK-->   working   -> idle       (cache redistribution, no stage held)
 *                         ready --LOAD-->   loading   -> ready      (a re-plan's stage: the same layers are kept)
 *                         ready --UNLOAD--> unloading -> idle )
 *              -> draining -> stopped
 *   online --DISCONNECTED--> reconnecting --RECONNECTED--> online.registering
 *   a drain without a connection (while reconnecting, remembered from work that lost it, or
 *   disconnected while draining) -> stopped
 *   anything unrecoverable -> failed
 *
 * LOAD, WORK and UNLOAD are the coordinator's control requests; each carries its request id, and
 * the effect's output (or error) is kept in `reply` under that id, which is how the binding
 * answers the request. A DRAIN that arrives while loading, working or unloading is remembered and
 * taken once that is done, so a drained device never abandons a step half way. Registration
 * retries with exponential backoff (the coordinator may start after the device, or be restarting).
 */
import { assertEvent, assign, setup, type SnapshotFrom } from 'xstate';
import { namedPromise } from '../../src/runtime/named.ts';
import { backoffDelay, type BackoffPolicy } from '../../src/runtime/supervisor.ts';
import { toWire, type WireError } from '../../src/runtime/errors.ts';
import type { JoinReply } from '../../src/runtime/messages.ts';

/** A control request the machine is serving: what to run and with which arguments. */
export interface DeviceRequest {
  id: number;
  kind: string;
  args: unknown;
}

/** The answer to request `id`. */
export type DeviceReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: WireError };

export interface DeviceContext {
  device: string;
  /** Backoff for registration attempts. */
  policy: BackoffPolicy;
  /** Failed registration attempts in a row. */
  registerFailures: number;
  /** What the device holds for the run, e.g. "stage 1 rank 0" or "cached rank 2"; null when nothing. */
  role: string | null;
  /** Training step of the work in progress or last done (-1 before the first). */
  step: number;
  /** Phase of that work: 'pipeline', 'cached', 'fill', 'redistribute'; null before any. */
  phase: string | null;
  request: DeviceRequest | null;
  reply: DeviceReply | null;
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
  | { type: 'LOAD'; request: DeviceRequest; role: string }
  | { type: 'WORK'; request: DeviceRequest; step: number; phase: string }
  | { type: 'UNLOAD'; request: DeviceRequest };

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
    /** Loads what a LOAD request assigns (stage layers, the cached-phase worker); output is the reply. */
    load: namedPromise<unknown, DeviceRequest>('load'),
    /** Runs one unit of work (a step's share, a cache fill or move); output is the reply. */
    work: namedPromise<unknown, DeviceRequest>('work'),
    /** Frees what the device holds; output is the reply. */
    unload: namedPromise<unknown, DeviceRequest>('unload'),
    /** Finishes in-flight traffic and tells the coordinator the device leaves. */
    drain: namedPromise<void, { reason: string }>('drain'),
  },
  actions: {
    startHeartbeats: () => {},
    stopHeartbeats: () => {},
    /** Something went wrong that the device survives; the binding reports it on `events`. */
    reportError: (_, _params: { what: string; error: string }) => {},
    /** The effect's output is the answer to the request being served. */
    answer: assign({
      reply: ({ context, event }) => ({
        id: context.request?.id ?? 0,
        ok: true as const,
        result: (event as unknown as { output: unknown }).output,
      }),
    }),
    /** The effect's error, as a wire error, is the answer to the request being served. */
    refuse: assign({
      reply: ({ context, event }) => ({
        id: context.request?.id ?? 0,
        ok: false as const,
        error: toWire((event as unknown as { error: unknown }).error),
      }),
    }),
    takeRequest: assign({
      request: ({ event }) => {
        assertEvent(event, ['LOAD', 'WORK', 'UNLOAD']);
        return event.request;
      },
    }),
    takeRole: assign({
      role: ({ event }) => {
        assertEvent(event, 'LOAD');
        return event.role;
      },
    }),
    takeWork: assign(({ event }) => {
      assertEvent(event, 'WORK');
      return { step: event.step, phase: event.phase };
    }),
    dropRole: assign({ role: null }),
    rememberDrain: assign({
      drainRequested: true,
      drainReason: ({ event }) => {
        assertEvent(event, 'DRAIN');
        return event.reason;
      },
    }),
  },
  guards: {
    accepted: (_, reply: JoinReply) => reply.ok,
    registerRetriesLeft: ({ context }) => context.registerFailures < context.policy.maxRestarts,
    drainRequested: ({ context }) => context.drainRequested,
    holdsRole: ({ context }) => context.role !== null,
    /** A pipeline stage assignment (the cached-phase worker is released before it is loaded again). */
    reassign: ({ event }) => event.type === 'LOAD' && event.request.kind === 'assign',
  },
  delays: {
    registerRetry: ({ context }) => backoffDelay(context.policy, context.registerFailures),
  },
}).createMachine({
  id: 'device',
  context: ({ input }) => ({
    device: input.device,
    policy: input.policy,
    registerFailures: 0,
    role: null,
    step: -1,
    phase: null,
    request: null,
    reply: null,
    drainRequested: false,
    drainReason: '',
  }),
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
          on: {
            LOAD: { target: 'loading', actions: ['takeRequest', 'takeRole'] },
            WORK: { target: 'working', actions: ['takeRequest', 'takeWork'] },
            UNLOAD: { target: 'unloading', actions: ['takeRequest'] },
          },
        },
        loading: {
          on: { DRAIN: { actions: 'rememberDrain' } },
          invoke: {
            src: 'load',
            input: ({ context }) => context.request!,
            onDone: [
              { guard: 'drainRequested', target: '#device.draining', actions: 'answer' },
              { target: 'ready', actions: 'answer' },
            ],
            onError: [
              { guard: 'drainRequested', target: '#device.draining', actions: ['refuse', 'dropRole'] },
              {
                target: 'idle',
                actions: [
                  'refuse',
                  'dropRole',
                  { type: 'reportError', params: ({ event }) => ({ what: 'load', error: text(event.error) }) },
                ],
              },
            ],
          },
        },
        ready: {
          on: {
            // A re-plan assigns survivors without releasing them first: the stage keeps what it can.
            LOAD: { guard: 'reassign', target: 'loading', actions: ['takeRequest', 'takeRole'] },
            WORK: { target: 'working', actions: ['takeRequest', 'takeWork'] },
            UNLOAD: { target: 'unloading', actions: ['takeRequest'] },
          },
        },
        working: {
          on: { DRAIN: { actions: 'rememberDrain' } },
          invoke: {
            src: 'work',
            input: ({ context }) => context.request!,
            onDone: [
              { guard: 'drainRequested', target: '#device.draining', actions: 'answer' },
              { guard: 'holdsRole', target: 'ready', actions: 'answer' },
              { target: 'idle', actions: 'answer' },
            ],
            onError: [
              { guard: 'drainRequested', target: '#device.draining', actions: 'refuse' },
              {
                guard: 'holdsRole',
                target: 'ready',
                actions: ['refuse', { type: 'reportError', params: ({ event }) => ({ what: 'work', error: text(event.error) }) }],
              },
              {
                target: 'idle',
                actions: ['refuse', { type: 'reportError', params: ({ event }) => ({ what: 'work', error: text(event.error) }) }],
              },
            ],
          },
        },
        unloading: {
          on: { DRAIN: { actions: 'rememberDrain' } },
          invoke: {
            src: 'unload',
            input: ({ context }) => context.request!,
            onDone: [
              { guard: 'drainRequested', target: '#device.draining', actions: ['answer', 'dropRole'] },
              { target: 'idle', actions: ['answer', 'dropRole'] },
            ],
            onError: [
              { guard: 'drainRequested', target: '#device.draining', actions: ['refuse', 'dropRole'] },
              { target: 'idle', actions: ['refuse', 'dropRole'] },
            ],
          },
        },
      },
    },
    reconnecting: {
      always: { guard: 'drainRequested', target: 'stopped' },
      on: {
        RECONNECTED: 'online.registering',
        DRAIN: { target: 'stopped', actions: assign({ drainReason: ({ event }) => event.reason }) },
      },
    },
    draining: {
      on: { DISCONNECTED: 'stopped' },
      invoke: {
        src: 'drain',
        input: ({ context }) => ({ reason: context.drainReason }),
        onDone: 'stopped',
        onError: {
          target: 'stopped',
          actions: { type: 'reportError', params: ({ event }) => ({ what: 'drain', error: text(event.error) }) },
        },
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
