/**
 * The minimal coordinator's binding: serves `coord.join` (kinds join, profile, leaving, leave,
 * status; a join the admission policy refuses is answered with its reason and emitted as
 * JOIN_REFUSED),
 * listens to every device heartbeat, keeps the DeviceRegistry, publishes DEVICE_JOINED /
 * DEVICE_PROFILED / DEVICE_LOST / DEVICE_LEFT / ASSEMBLED on `events`, and drives the coordinator
 * machine. Runs inside `charon launch` on the launcher's bus connection.
 */
import { MessageRejected, type Bus, type BusMsg } from '../../src/bus/index.ts';
import { systemClock, type Clock } from '../../src/runtime/clock.ts';
import { RunEvents } from '../../src/runtime/events.ts';
import { Inbox, route } from '../../src/runtime/inbox.ts';
import {
  heartbeat,
  joinRequest,
  leaveRequest,
  profileReport,
  statusRequest,
  type JoinReply,
  type JoinRequest,
  type OkReply,
  type StatusReply,
} from '../../src/runtime/messages.ts';
import { startActor, type BoundActor } from '../../src/runtime/actor.ts';
import { DeviceRegistry, type JoinTerms, type RegistryEvent } from './registry.ts';
import { coordinatorMachine } from './machine.ts';
import { onReplyProgress } from './control.ts';
import { roomyHeap } from '../../src/runtime/heap.ts';

export interface CoordinatorOptions {
  bus: Bus;
  /** Devices the run waits for before it is `assembled`. */
  expected: string[];
  clock?: Clock;
  lostAfterMs?: number;
  /** Told to every device that joins: the largest message the run can send, the work to time. */
  joinTerms?: JoinTerms;
  /** Why a device may not join this run (null: it may); a refusal is answered and emitted as JOIN_REFUSED. */
  admit?: (hello: JoinRequest) => string | null;
}

/**
 * Told that a device asks to leave (SIGTERM, Ctrl-C): true when the run hands its work over first
 * and then sends it `drain`, false when it may go at once.
 */
export type LeavingHandler = (device: string, reason: string) => boolean;

export interface Coordinator {
  readonly registry: DeviceRegistry;
  /** The clock liveness runs on (the registry's). */
  readonly clock: Clock;
  readonly events: RunEvents;
  readonly machine: BoundActor<typeof coordinatorMachine>;
  /** Resolves when every expected device is alive (at once if they already are). */
  whenAssembled(): Promise<void>;
  status(): StatusReply;
  /** The training run's current phase for status replies (null: no run in progress). */
  setRunPhase(phase: string | null): void;
  /** Devices joining or leaving the run now, for status replies. */
  setElastic(elastic: { joining: string[]; leaving: string[] } | null): void;
  /** Who decides about leaving devices (null: none, they go at once). */
  onLeaving(handler: LeavingHandler | null): void;
  /**
   * The run is over: devices leaving from now on are the shutdown, not an incomplete run. The
   * registry and status requests keep working until stop().
   */
  windDown(): void;
  /** Unsubscribes, stops liveness timers and the machine. The bus stays open (it is the caller's). */
  stop(): void;
}

export function startCoordinator(opts: CoordinatorOptions): Coordinator {
  // Every step brings a reduced gradient and a commit's copy of the side network: see heap.ts.
  roomyHeap();
  const { bus } = opts;
  const clock = opts.clock ?? systemClock;
  const registry = new DeviceRegistry(clock, opts.lostAfterMs, opts.joinTerms);
  onReplyProgress(bus, (device) => registry.heard(device));
  const events = new RunEvents(bus, 'coordinator');
  const inbox = new Inbox(bus);

  const logic = coordinatorMachine.provide({
    actions: {
      reportAssembled: (_, p) => {
        events.emit('ASSEMBLED', { devices: p.devices });
      },
      reportIncomplete: (_, p) => {
        events.emit('INCOMPLETE', { missing: p.missing });
      },
    },
  });
  const machine = startActor(logic, { input: { expected: opts.expected }, clock });

  const stopRegistry = registry.subscribe((e: RegistryEvent) => {
    const d = e.device;
    switch (e.type) {
      case 'DEVICE_JOINED':
        events.emit(e.type, {
          device: d.name,
          rejoin: e.rejoin,
          backend: d.hello.backend,
          memoryMb: d.hello.memoryMb,
          pid: d.hello.pid,
          host: d.hello.host,
        });
        machine.actor.send({ type: 'DEVICE_JOINED', name: d.name });
        break;
      case 'DEVICE_PROFILED':
        events.emit(e.type, { device: d.name, matmulGflops: d.matmulGflops, backendDetail: d.backendDetail });
        break;
      case 'DEVICE_LOST':
        events.emit(e.type, { device: d.name, silentMs: e.silentMs, ...(e.reason ? { reason: e.reason } : {}) });
        machine.actor.send({ type: 'DEVICE_LOST', name: d.name });
        break;
      case 'DEVICE_LEFT':
        events.emit(e.type, { device: d.name, reason: e.reason });
        machine.actor.send({ type: 'DEVICE_LEFT', name: d.name });
        break;
    }
  });

  let runPhase: string | null = null;
  let elastic: { joining: string[]; leaving: string[] } | null = null;
  let leaving: LeavingHandler | null = null;
  const status = (): StatusReply => ({
    run: bus.run,
    state: String(machine.actor.getSnapshot().value),
    runPhase,
    ...(elastic ? { elastic } : {}),
    devices: registry.status(),
    rejected: inbox.rejected(),
  });
  const join = (hello: JoinRequest): JoinReply => {
    const refused = opts.admit?.(hello) ?? null;
    if (refused === null) return registry.join(hello);
    events.emit('JOIN_REFUSED', { device: hello.device, reason: refused, pid: hello.pid, host: hello.host });
    return { ok: false, reason: refused };
  };

  const ok = (value: boolean, reason: string): OkReply => (value ? { ok: true } : { ok: false, reason });
  // A device speaks for itself only: the subject names the sender (and an authenticated bus
  // proves it), so a request or heartbeat naming another device is refused and counted.
  const speaksFor = (msg: BusMsg, device: string, kind: string): boolean => {
    if (msg.sender === device) return true;
    bus.reject(msg.subject, new MessageRejected('peer', `${kind} for device '${device}' sent by '${msg.sender ?? '?'}'`));
    return false;
  };
  const notYours = (device: string, msg: BusMsg) => ({
    ok: false as const,
    reason: `'${msg.sender ?? '?'}' cannot speak for device '${device}'`,
  });
  inbox.serve(bus.subjects.coordJoinIn(), {
    join: route(joinRequest, (hello, _env, msg) => (speaksFor(msg, hello.device, 'join') ? join(hello) : notYours(hello.device, msg))),
    profile: route(profileReport, (p, _env, msg) =>
      speaksFor(msg, p.device, 'profile') ? ok(registry.profile(p), `device '${p.device}' has not joined`) : notYours(p.device, msg),
    ),
    leave: route(leaveRequest, (l, _env, msg) =>
      speaksFor(msg, l.device, 'leave')
        ? ok(registry.leave(l.device, l.reason), `device '${l.device}' is not alive`)
        : notYours(l.device, msg),
    ),
    // ok: the run hands the device's work over and then sends it `drain`; otherwise it goes now.
    leaving: route(leaveRequest, (l, _env, msg) =>
      speaksFor(msg, l.device, 'leaving')
        ? ok(registry.get(l.device)?.alive === true && (leaving?.(l.device, l.reason) ?? false), 'no hand-off: leave now')
        : notYours(l.device, msg),
    ),
  });
  inbox.serve(bus.subjects.coordStatusIn(), { status: route(statusRequest, () => status()) });
  // Devices are judged on time the coordinator itself could hear them (a restarting nats-server).
  const offBus = [bus.on('disconnect', () => registry.suspendLiveness()), bus.on('reconnect', () => registry.resumeLiveness())];
  inbox.on(bus.subjects.devHbAll(), 'hb', heartbeat, (hb, _env, msg) => {
    if (speaksFor(msg, hb.device, 'heartbeat')) registry.heartbeat(hb);
  });

  return {
    registry,
    clock,
    events,
    machine,
    status,
    setRunPhase: (phase) => {
      runPhase = phase;
    },
    setElastic: (e) => {
      elastic = e;
    },
    onLeaving: (handler) => {
      leaving = handler;
    },
    whenAssembled: () =>
      new Promise<void>((resolve) => {
        const check = (s: { value: unknown }) => {
          if (s.value === 'assembled') {
            sub.unsubscribe();
            resolve();
          }
        };
        const sub = machine.actor.subscribe(check);
        check(machine.actor.getSnapshot());
      }),
    windDown: () => {
      machine.actor.send({ type: 'STOP' });
    },
    stop: () => {
      for (const off of offBus) off();
      inbox.close();
      stopRegistry();
      registry.close();
      machine.actor.send({ type: 'STOP' });
    },
  };
}
