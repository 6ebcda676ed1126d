/**
 * The actor base: runs a machine (logic already bound with `machine.provide()`) on an injectable
 * clock, turns the bus's connection status into machine events, and resolves `done` when the
 * machine stops (final state, error, or stop()).
 */
import { createActor, type Actor, type AnyStateMachine, type EventFromLogic, type InputFrom, type SnapshotFrom } from 'xstate';
import type { Bus } from '../bus/index.ts';
import type { Clock } from './clock.ts';
import { systemClock } from './clock.ts';

/** Machine events to send when the bus connection drops, comes back, or closes for good. */
export interface BusStatusEvents<E> {
  disconnect?: E;
  reconnect?: E;
  closed?: (error: string) => E;
}

export interface BoundActor<M extends AnyStateMachine> {
  actor: Actor<M>;
  /** Resolves with the last snapshot once the machine is no longer active. Never rejects. */
  done: Promise<SnapshotFrom<M>>;
  /** Stops listening to the bus (the machine's own final state does this too). */
  unbind(): void;
}

/** Starts `logic` with `input` on `clock`; `bus` status changes become `busEvents`. */
export function startActor<M extends AnyStateMachine>(
  logic: M,
  opts: { input: InputFrom<M>; clock?: Clock; bus?: () => Bus | undefined; busEvents?: BusStatusEvents<EventFromLogic<M>> },
): BoundActor<M> {
  const actor = createActor(logic, { input: opts.input, clock: opts.clock ?? systemClock }) as Actor<M>;
  const removers: (() => void)[] = [];
  let busBound = false;
  const unbind = () => {
    for (const r of removers.splice(0)) r();
  };
  const bindBus = () => {
    const bus = opts.bus?.();
    if (busBound || !bus || !opts.busEvents) return;
    busBound = true;
    const ev = opts.busEvents;
    if (ev.disconnect) removers.push(bus.on('disconnect', () => actor.send(ev.disconnect!)));
    if (ev.reconnect) removers.push(bus.on('reconnect', () => actor.send(ev.reconnect!)));
    if (ev.closed)
      removers.push(
        bus.on('closed', ({ error }) => {
          if ((actor.getSnapshot() as { status: string }).status === 'active') actor.send(ev.closed!(error?.message ?? 'closed'));
        }),
      );
  };
  const done = new Promise<SnapshotFrom<M>>((resolve) => {
    actor.subscribe({
      next: (s: SnapshotFrom<M>) => {
        bindBus();
        if ((s as unknown as { status: string }).status !== 'active') {
          unbind();
          resolve(s);
        }
      },
      error: () => {
        unbind();
        resolve(actor.getSnapshot() as SnapshotFrom<M>);
      },
      complete: () => {
        unbind();
        resolve(actor.getSnapshot() as SnapshotFrom<M>);
      },
    });
  });
  actor.start();
  return { actor, done, unbind };
}
