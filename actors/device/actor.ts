/**
 * The device actor's binding: the real effects behind deviceMachine's names. It connects to the
 * run's bus, registers on `coord.join`, has its compute measure the device and reports it,
 * heartbeats on `dev.<name>.hb` (state, role, step, phase, memory), and serves control requests on
 * `dev.<name>.ctl`: training kinds become machine events (LOAD / WORK / UNLOAD) whose effects run
 * in the device's compute (a worker thread in `charon device`), 'ping' and 'drain' are built in.
 * Failures cross back to the coordinator as typed wire errors. A drain (ctl, SIGTERM via
 * `drain()`) finishes the work in progress, leaves the run politely and closes the connection.
 * A leave (`leave()`, SIGTERM) first asks the coordinator (`leaving`): when the run takes the
 * device's work over at its next step boundary, the device keeps serving (finishing its share of
 * the step in flight, handing its cache entries over) until the coordinator sends `drain`.
 */
import { hostname } from 'node:os';
import { fromPromise, waitFor } from 'xstate';
import { Bus, DEFAULT_MESSAGE_LIMITS, MessageRejected, type MessageLimits } from '../../src/bus/index.ts';
import { PRE_JOIN_LIMITS } from '../../src/plan/message-limits.ts';
import type { ClientTls } from '../../src/security/certs.ts';
import { systemClock, type Clock } from '../../src/runtime/clock.ts';
import { RunEvents } from '../../src/runtime/events.ts';
import { startHeartbeats } from '../../src/runtime/heartbeat.ts';
import { ask, Inbox, route } from '../../src/runtime/inbox.ts';
import {
  ctlRequest,
  joinReply,
  linkProbeRequest,
  okReply,
  type CtlReply,
  type JoinReply,
  type JoinRequest,
  type LinkProbeReply,
  type LinkProbeRequest,
  type ProfileReport,
} from '../../src/runtime/messages.ts';
import type { ProbeRequest, ProbeResult } from '../../src/engine/probe.ts';
import { describeRequest, isTrainingKind, TRAINING_KINDS } from '../../src/runtime/ctl.ts';
import { fromWire, toWire, WrongState } from '../../src/runtime/errors.ts';
import { startActor } from '../../src/runtime/actor.ts';
import { defaultBackoff, type BackoffPolicy } from '../../src/runtime/supervisor.ts';
import { deviceMachine, deviceStateName, type DeviceEvent, type DeviceSnapshot } from './machine.ts';

/** What the device computes with (a worker thread in `charon device`; in-process fakes in tests). */
export interface DeviceCompute {
  backend: string;
  backendDetail: string;
  /** Measures the backend's large plain 2-D matmul rate now, GFLOP/s (before the slowdown knob). */
  measureMatmulGflops(): Promise<number>;
  /** Runs a training control request; resolves with its reply body. */
  run(kind: string, args: unknown): Promise<unknown>;
  /** Delivers a request at once without waiting for its answer (abort). */
  signal(kind: string, args: unknown): void;
  /** Bytes in use now. */
  memoryBytes(): number;
  /** Bounds the messages the compute's own connection accepts (the run's limits, told at join). */
  limitMessages?(limits: MessageLimits): Promise<void>;
  /** Times the run's own work (src/engine/probe.ts). */
  probe?(req: ProbeRequest): Promise<ProbeResult>;
  /** Times sends to peers over the data-plane connection (src/runtime/link-probe.ts). */
  measureLinks?(req: LinkProbeRequest): Promise<LinkProbeReply>;
  /** Releases the compute (stops the worker thread). */
  close(): Promise<void>;
}

export interface DeviceOptions {
  nats: string;
  run: string;
  name: string;
  /** The device's NATS user seed, when the bus requires credentials. */
  seed?: string;
  /** The run's CA, when the bus requires TLS: the server must present a certificate it signed. */
  tls?: ClientTls;
  /** The budget offered to the planner; null leaves it to the run's topology. */
  memoryMb: number | null;
  compute: DeviceCompute;
  /** Simulation knobs reported in the hello (the compute applies them). */
  slowdown?: number;
  bandwidthMbps?: number | null;
  clock?: Clock;
  policy?: BackoffPolicy;
  requestTimeoutMs?: number;
  /** How long a leaving device waits for the run to take its work over before it drains anyway (default 60 s). */
  handoffTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface DeviceHandle {
  readonly name: string;
  /** The machine's innermost state name. */
  state(): string;
  snapshot(): DeviceSnapshot;
  /** Asks the device to drain (finish in-flight work, leave, disconnect). */
  drain(reason: string): void;
  /**
   * Asks the run to let the device go: it drains when the coordinator says so (its work handed
   * over), at once when the coordinator has no hand-off for it, or after `handoffTimeoutMs`.
   * Asked again, it drains at once.
   */
  leave(reason: string): void;
  /** Resolves with the final snapshot ('stopped' or 'failed'). */
  done: Promise<DeviceSnapshot>;
  /** Rejected messages so far, per reason. */
  rejected(): Record<string, number>;
}

/** States a device passes through on its own, soon (a request arriving then waits for them to end). */
const PASSING = new Set(['connecting', 'registering', 'registerBackoff', 'profiling', 'reconnecting']);
/** States in which a device runs a request (a signal ends them). */
const BUSY = new Set(['loading', 'working', 'unloading']);
/** How long an abort's answer waits for the work it ends to hand back. */
const ABORT_SETTLE_MS = 30_000;

/** Starts a device actor; it runs until drained or failed. */
export function startDevice(opts: DeviceOptions): DeviceHandle {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? (() => {});
  const timeoutMs = opts.requestTimeoutMs ?? 2000;
  const { compute } = opts;
  let bus: Bus | undefined;
  let events: RunEvents | undefined;
  let inbox: Inbox | undefined;
  let stopBeats: (() => void) | undefined;
  let requests = 0;
  /** The run's work to time while profiling, as the join reply said. */
  let probe: Extract<JoinReply, { ok: true }>['probe'];
  let timed: { key: string; timings: ProfileReport['timings'] } | undefined;
  /** The highest coordinator epoch a control request carried: older ones are refused. */
  let coordinatorEpoch = 0;
  /** What the device last reported of its speed: a coordinator taking the run over asks for it (rollcall). */
  let profiled: Omit<ProfileReport, 'device'> | null = null;
  const need = () => {
    if (!bus) throw new Error('bus not connected');
    return bus;
  };

  const hello = (): JoinRequest => ({
    device: opts.name,
    backend: compute.backend,
    memoryMb: opts.memoryMb,
    pid: process.pid,
    host: hostname(),
    slowdown: opts.slowdown ?? 1,
    bandwidthMbps: opts.bandwidthMbps ?? null,
  });

  /** A training request as a machine event; the machine's `reply` for its id is the answer. */
  const viaMachine = async (kind: keyof typeof TRAINING_KINDS, args: unknown): Promise<unknown> => {
    const request = { id: ++requests, kind, args };
    const d = describeRequest(kind, args);
    const role = TRAINING_KINDS[kind];
    const event: DeviceEvent =
      role === 'load'
        ? { type: 'LOAD', request, role: d.role ?? kind }
        : role === 'work'
          ? { type: 'WORK', request, step: d.step ?? bound.actor.getSnapshot().context.step, phase: d.phase ?? kind }
          : { type: 'UNLOAD', request };
    // The coordinator may act on this device's profile before the device itself has taken the
    // profile's acknowledgement (or a reconnect's registration): wait out such passing states.
    // A release that finds an earlier release still unloading (a recovery that started over) waits
    // for it: both want the device empty.
    const waits = (state: string) => PASSING.has(state) || (event.type === 'UNLOAD' && state === 'unloading');
    const settled = await waitFor(bound.actor, (x) => x.can(event) || !waits(deviceStateName(x)) || x.status !== 'active', {
      timeout: event.type === 'UNLOAD' ? Math.max(timeoutMs, ABORT_SETTLE_MS) : timeoutMs,
    }).catch(() => bound.actor.getSnapshot());
    if (!settled.can(event)) throw new WrongState(deviceStateName(settled), kind);
    bound.actor.send(event);
    const s = await waitFor(bound.actor, (x) => x.context.reply?.id === request.id || x.status !== 'active', { timeout: Infinity });
    const reply = s.context.reply;
    if (!reply || reply.id !== request.id) throw new Error(`${kind}: device ${deviceStateName(s)} before answering`);
    if (!reply.ok) throw fromWire(reply.error);
    return reply.result;
  };

  const serveCtl = async (kind: string, args: unknown): Promise<unknown> => {
    if (kind === 'ping') {
      const c = bound.actor.getSnapshot().context;
      return { state: handle.state(), step: c.step, role: c.role, phase: c.phase };
    }
    if (kind === 'rollcall') {
      // A coordinator taking the run over learns the device as it is, without a new registration.
      return { hello: hello(), profile: profiled, state: handle.state() };
    }
    if (kind === 'drain') {
      handle.drain(typeof args === 'string' ? args : 'ctl drain');
      return { draining: true };
    }
    if (kind === 'links') {
      if (!compute.measureLinks) throw new Error(`device ${opts.name} cannot measure links (its compute has no data-plane connection)`);
      const req = linkProbeRequest.safeParse(args);
      if (!req.success) {
        const issue = req.error.issues[0]!;
        throw new Error(`links: ${issue.path.join('.') || '(args)'}: ${issue.message}`);
      }
      return compute.measureLinks(req.data);
    }
    if (!isTrainingKind(kind))
      throw new Error(`unknown ctl kind '${kind}' (known: ping, rollcall, drain, links, ${Object.keys(TRAINING_KINDS).join(', ')})`);
    const role = TRAINING_KINDS[kind];
    if (role === 'query') return compute.run(kind, args);
    if (role === 'signal') {
      compute.signal(kind, args);
      // Answered once the request it ends has handed back, so that what the coordinator sends
      // next (a release, a new assignment) finds the device idle or ready.
      await waitFor(bound.actor, (x) => !BUSY.has(deviceStateName(x)) || x.status !== 'active', { timeout: ABORT_SETTLE_MS });
      return { state: handle.state() };
    }
    return viaMachine(kind, args);
  };

  const logic = deviceMachine.provide({
    actors: {
      connect: fromPromise(async () => {
        bus = await Bus.connect({
          servers: opts.nats,
          name: opts.name,
          run: opts.run,
          seed: opts.seed,
          tls: opts.tls,
          reassembly: { maxMessageBytes: PRE_JOIN_LIMITS.maxMessageBytes, maxBytes: PRE_JOIN_LIMITS.reassemblyBytes },
        });
        events = new RunEvents(bus, opts.name);
        inbox = new Inbox(bus);
        inbox.serve(bus.subjects.devCtlIn(), {
          ctl: route(ctlRequest, async (req, _env, msg): Promise<CtlReply> => {
            if (req.epoch !== undefined && req.epoch < coordinatorEpoch) {
              const why = `ctl ${req.kind} of coordinator epoch ${req.epoch}: epoch ${coordinatorEpoch} has taken the run over`;
              bus?.reject(msg.subject, new MessageRejected('coordinator', why));
              return { ok: false, error: toWire(new Error(why)) };
            }
            if (req.epoch !== undefined && req.epoch > coordinatorEpoch) {
              if (coordinatorEpoch > 0) log(`coordinator epoch ${req.epoch} took the run over from epoch ${coordinatorEpoch}`);
              coordinatorEpoch = req.epoch;
            }
            try {
              return { ok: true, result: await serveCtl(req.kind, req.args) };
            } catch (err) {
              return { ok: false, error: toWire(err) };
            }
          }),
        });
        log(`connected to ${bus.server}`);
      }),
      register: fromPromise<JoinReply, { attempt: number }>(async () => {
        const b = need();
        const reply = await ask(b, b.subjects.coordJoin(), 'join', hello(), joinReply, timeoutMs);
        if (reply.ok) {
          probe = reply.probe;
          // A coordinator that states no limits gets the bus's defaults.
          const limits = reply.limits ?? DEFAULT_MESSAGE_LIMITS;
          b.limitMessages(limits);
          await compute.limitMessages?.(limits);
        }
        return reply;
      }),
      profile: fromPromise(async () => {
        const b = need();
        const raw = await compute.measureMatmulGflops();
        const matmulGflops = raw / (opts.slowdown ?? 1);
        log(`measured ${matmulGflops.toFixed(1)} GFLOP/s (${compute.backendDetail})`);
        let timings: ProfileReport['timings'];
        // A registration again (after a reconnect) reports the timings it took: re-timing would hold
        // the compute worker for seconds while the run waits to go on.
        if (probe && compute.probe && timed?.key === JSON.stringify(probe)) timings = timed.timings;
        else if (probe && compute.probe) {
          const r = await compute.probe(probe);
          // The slowdown knob simulates a slower device: its work takes that much longer.
          const slow = opts.slowdown ?? 1;
          const scale = (t: { fwdMs: number; bwdMs: number; updateMs: number }) => ({
            fwdMs: t.fwdMs * slow,
            bwdMs: t.bwdMs * slow,
            updateMs: t.updateMs * slow,
          });
          timings = r.runs.map((x) => ({ microBatch: x.microBatch, layer: scale(x.layer), embed: scale(x.embed), head: scale(x.head) }));
          log(
            `timed the run's layer, embedding and head at ${r.runs.map((x) => x.microBatch).join(' and ')} rows in ${(r.tookMs / 1000).toFixed(1)} s`,
          );
          timed = { key: JSON.stringify(probe), timings };
        }
        const reply = await ask(
          b,
          b.subjects.coordJoin(),
          'profile',
          { device: opts.name, matmulGflops, backendDetail: compute.backendDetail, ...(timings ? { timings } : {}) },
          okReply,
          timeoutMs,
        );
        if (!reply.ok) throw new Error(reply.reason ?? 'profile refused');
        profiled = { matmulGflops, backendDetail: compute.backendDetail, ...(timings ? { timings } : {}) };
      }),
      load: fromPromise(({ input }) => compute.run(input.kind, input.args)),
      work: fromPromise(({ input }) => compute.run(input.kind, input.args)),
      unload: fromPromise(({ input }) => compute.run(input.kind, input.args)),
      drain: fromPromise<void, { reason: string }>(async ({ input }) => {
        log(`draining (${input.reason})`);
        stopBeats?.();
        if (!bus || bus.isClosed) return;
        try {
          await ask(bus, bus.subjects.coordJoin(), 'leave', { device: opts.name, reason: input.reason }, okReply, timeoutMs);
        } catch (err) {
          log(`leave not acknowledged: ${(err as Error).message}`);
        }
      }),
    },
    actions: {
      startHeartbeats: () => {
        stopBeats?.();
        const b = need();
        stopBeats = startHeartbeats(
          {
            device: opts.name,
            sample: () => {
              const c = bound.actor.getSnapshot().context;
              return { state: handle.state(), step: c.step, role: c.role, phase: c.phase, memoryBytes: compute.memoryBytes() };
            },
            publish: (hb) => {
              if (!b.isClosed) b.publish(b.subjects.devHb(), 'hb', hb);
            },
          },
          clock,
        );
      },
      stopHeartbeats: () => {
        stopBeats?.();
        stopBeats = undefined;
      },
      reportError: (_, p) => {
        log(`${p.what}: ${p.error}`);
        events?.emit('DEVICE_ERROR', { device: opts.name, what: p.what, error: p.error });
      },
    },
  });

  const bound = startActor(logic, {
    input: { device: opts.name, policy: opts.policy ?? { ...defaultBackoff, maxRestarts: 20, maxMs: 2000, initialMs: 100 } },
    clock,
    bus: () => bus,
    busEvents: {
      disconnect: { type: 'DISCONNECTED' },
      reconnect: { type: 'RECONNECTED' },
      closed: (error) => ({ type: 'CLOSED' as const, error }),
    },
  });
  let leaving = false;
  let handoffTimer: unknown;
  const leave = async (reason: string): Promise<void> => {
    const drain = (why: string) => bound.actor.send({ type: 'DRAIN', reason: why });
    const b = bus;
    const serving = bound.actor.getSnapshot().matches('online') && !PASSING.has(handle.state());
    if (leaving || !b || b.isClosed || !serving) return drain(reason);
    leaving = true;
    try {
      const r = await ask(b, b.subjects.coordJoin(), 'leaving', { device: opts.name, reason }, okReply, Math.min(timeoutMs, 2000));
      if (!r.ok) return drain(reason);
    } catch {
      return drain(reason);
    }
    log(`leaving (${reason}): the run takes this device's work over at its next step boundary`);
    const ms = opts.handoffTimeoutMs ?? 60_000;
    handoffTimer = clock.setTimeout(() => drain(`${reason}; no hand-off within ${ms} ms`), ms);
  };
  const handle: DeviceHandle = {
    name: opts.name,
    state: () => deviceStateName(bound.actor.getSnapshot()),
    snapshot: () => bound.actor.getSnapshot(),
    drain: (reason) => bound.actor.send({ type: 'DRAIN', reason }),
    leave: (reason) => void leave(reason),
    done: bound.done.then(async (snapshot) => {
      if (handoffTimer !== undefined) clock.clearTimeout(handoffTimer);
      stopBeats?.();
      inbox?.close();
      await bus?.close();
      await compute.close();
      return snapshot;
    }),
    rejected: () => inbox?.rejected() ?? {},
  };
  let lastState = '';
  bound.actor.subscribe((s) => {
    const state = deviceStateName(s);
    if (state !== lastState) log(`state ${(lastState = state)}`);
  });
  return handle;
}
