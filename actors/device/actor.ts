/**
 * The device actor's binding: the real effects behind deviceMachine's names. It connects to the
 * run's bus, registers on `coord.join`, measures and reports its speed, heartbeats on
 * `dev.<name>.hb`, and serves control requests on `dev.<name>.ctl` (dispatch by `kind`; 'ping'
 * and 'drain' built in, more passed in `ctl`). A drain (ctl, SIGTERM via `drain()`) leaves the
 * run politely and closes the connection.
 */
import { hostname } from 'node:os';
import { fromPromise } from 'xstate';
import { Bus } from '../../src/bus/index.ts';
import { systemClock, type Clock } from '../../src/runtime/clock.ts';
import { RunEvents } from '../../src/runtime/events.ts';
import { startHeartbeats } from '../../src/runtime/heartbeat.ts';
import { ask, Inbox, route } from '../../src/runtime/inbox.ts';
import { ctlRequest, joinReply, okReply, type CtlReply, type JoinReply, type JoinRequest } from '../../src/runtime/messages.ts';
import { SimulatedDevice } from '../../src/runtime/simulation.ts';
import type { CtlDevice, CtlHandler } from '../../src/runtime/ctl.ts';
import { startActor } from '../../src/runtime/actor.ts';
import { defaultBackoff, type BackoffPolicy } from '../../src/runtime/supervisor.ts';
import { deviceMachine, deviceStateName, type DeviceSnapshot } from './machine.ts';

/** What the device computes with; prepared before the actor starts (loading a backend blocks). */
export interface DeviceCompute {
  backend: string;
  backendDetail: string;
  /** Large plain 2-D matmul rate, GFLOP/s, measured now. */
  measureMatmulGflops(): number;
  /** Bytes in use now (tensors where known). */
  memoryBytes(): number;
}

export interface DeviceOptions {
  nats: string;
  run: string;
  name: string;
  memoryMb: number;
  compute: DeviceCompute;
  slowdown?: number;
  bandwidthMbps?: number | null;
  clock?: Clock;
  policy?: BackoffPolicy;
  /** Extra control kinds (issue #4: assign, load, step ...). */
  ctl?: Record<string, CtlHandler>;
  requestTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface DeviceHandle extends CtlDevice {
  /** The machine's innermost state name. */
  state(): string;
  /** Asks the device to drain (finish in-flight work, leave, disconnect). */
  drain(reason: string): void;
  /** Resolves with the final snapshot ('stopped' or 'failed'). */
  done: Promise<DeviceSnapshot>;
  /** Rejected messages so far, per reason. */
  rejected(): Record<string, number>;
}

/** Starts a device actor; it runs until drained or failed. */
export function startDevice(opts: DeviceOptions): DeviceHandle {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? (() => {});
  const sim = new SimulatedDevice({ slowdown: opts.slowdown ?? 1, bandwidthMbps: opts.bandwidthMbps ?? null }, clock);
  const timeoutMs = opts.requestTimeoutMs ?? 2000;
  let bus: Bus | undefined;
  let events: RunEvents | undefined;
  let inbox: Inbox | undefined;
  let stopBeats: (() => void) | undefined;
  const need = () => { if (!bus) throw new Error('bus not connected'); return bus; };

  const hello = (): JoinRequest => ({
    device: opts.name, backend: opts.compute.backend, memoryMb: opts.memoryMb, pid: process.pid, host: hostname(),
    slowdown: sim.knobs.slowdown, bandwidthMbps: sim.knobs.bandwidthMbps,
  });

  const handle: DeviceHandle = {
    name: opts.name,
    state: () => deviceStateName(bound.actor.getSnapshot()),
    drain: (reason) => bound.actor.send({ type: 'DRAIN', reason }),
    done: undefined as unknown as Promise<DeviceSnapshot>,
    rejected: () => inbox?.rejected() ?? {},
    sim,
    bus: need,
  };

  const builtinCtl: Record<string, CtlHandler> = {
    ping: () => ({ state: handle.state(), step: bound.actor.getSnapshot().context.step }),
    drain: (args) => { handle.drain(typeof args === 'string' ? args : 'ctl drain'); return { draining: true }; },
  };
  const ctl = { ...builtinCtl, ...opts.ctl };

  const logic = deviceMachine.provide({
    actors: {
      connect: fromPromise(async () => {
        bus = await Bus.connect({ servers: opts.nats, name: opts.name, run: opts.run });
        events = new RunEvents(bus, opts.name);
        inbox = new Inbox(bus);
        inbox.serve(bus.subjects.devCtl(opts.name), {
          ctl: route(ctlRequest, async (req): Promise<CtlReply> => {
            const h = ctl[req.kind];
            if (!h) return { ok: false, reason: `unknown ctl kind '${req.kind}' (known: ${Object.keys(ctl).join(', ')})` };
            return { ok: true, result: await h(req.args, handle) };
          }),
        });
        log(`connected to ${bus.server}`);
      }),
      register: fromPromise<JoinReply, { attempt: number }>(async () => {
        const b = need();
        return ask(b, b.subjects.coordJoin(), 'join', hello(), joinReply, timeoutMs);
      }),
      profile: fromPromise(async () => {
        const b = need();
        const raw = opts.compute.measureMatmulGflops();
        const matmulGflops = raw / sim.knobs.slowdown;
        log(`measured ${matmulGflops.toFixed(1)} GFLOP/s (${opts.compute.backendDetail})`);
        const reply = await ask(b, b.subjects.coordJoin(), 'profile', { device: opts.name, matmulGflops, backendDetail: opts.compute.backendDetail }, okReply, timeoutMs);
        if (!reply.ok) throw new Error(reply.reason ?? 'profile refused');
      }),
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
        stopBeats = startHeartbeats({
          device: opts.name,
          sample: () => ({ state: handle.state(), step: bound.actor.getSnapshot().context.step, memoryBytes: opts.compute.memoryBytes() }),
          publish: (hb) => { if (!b.isClosed) b.publish(b.subjects.devHb(opts.name), 'hb', hb); },
        }, clock);
      },
      stopHeartbeats: () => { stopBeats?.(); stopBeats = undefined; },
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
    busEvents: { disconnect: { type: 'DISCONNECTED' }, reconnect: { type: 'RECONNECTED' }, closed: (error) => ({ type: 'CLOSED' as const, error }) },
  });
  let lastState = '';
  bound.actor.subscribe((s) => {
    const state = deviceStateName(s);
    if (state !== lastState) log(`state ${(lastState = state)}`);
  });
  handle.done = bound.done.then(async (snapshot) => {
    stopBeats?.();
    inbox?.close();
    await bus?.close();
    return snapshot;
  });
  return handle;
}
