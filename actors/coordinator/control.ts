/**
 * Control requests from the coordinator to devices (`dev.<device>.ctl`), to one device or to a
 * group at once. Both take the asking effect's AbortSignal: when the run machine leaves the state
 * that asked (a device was lost mid-step), the requests stop waiting at once instead of running
 * into their deadline.
 */
import { NoResponders, type Bus } from '../../src/bus/index.ts';
import { ask } from '../../src/runtime/inbox.ts';
import { ctlReply } from '../../src/runtime/messages.ts';
import { fromWire } from '../../src/runtime/errors.ts';

export const CTL_TIMEOUT_MS = 60_000;
/**
 * After the bus reconnects (a restarted nats-server) a device's subscriptions come back moments
 * after the coordinator's: "no responders" is asked again for this long before it counts.
 */
export const NO_RESPONDERS_GRACE_MS = 3000;

/** The coordinator epoch each connection's control requests carry (takeover.ts numbers coordinator starts). */
const epochs = new WeakMap<Bus, number>();

/** From now on every control request sent on `bus` carries coordinator epoch `epoch`. */
export function setCoordinatorEpoch(bus: Bus, epoch: number): void {
  epochs.set(bus, epoch);
}

/** Who hears that a device is sending a reply on `bus` (the coordinator's liveness). */
const replying = new WeakMap<Bus, (device: string) => void>();

/**
 * From now on each chunk of a device's reply to a control request on `bus` tells `heard` the
 * device is alive: a device streaming a large reply (a full model's gradients and optimiser
 * state) sends its heartbeats behind those bytes on the same connection, and would otherwise look
 * silent while it is doing exactly what it was asked.
 */
export function onReplyProgress(bus: Bus, heard: (device: string) => void): void {
  replying.set(bus, heard);
}

export interface ControlOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Sends control `kind` to `device`; returns the handler's result.
 * @throws the handler's error, rebuilt as its class, its message naming device and kind; the
 * bus's errors (NoResponders when the device is gone; the signal's reason once it aborts).
 */
export async function control<T>(bus: Bus, device: string, kind: string, args: unknown, o: ControlOptions = {}): Promise<T> {
  const until = Date.now() + NO_RESPONDERS_GRACE_MS;
  const epoch = epochs.get(bus);
  const body = epoch === undefined ? { kind, args } : { kind, args, epoch };
  const heard = replying.get(bus);
  const progress = heard && (() => heard(device));
  const once = () => ask(bus, bus.subjects.devCtl(device), 'ctl', body, ctlReply, o.timeoutMs ?? CTL_TIMEOUT_MS, o.signal, progress);
  let r: Awaited<ReturnType<typeof once>> | undefined;
  while (!r) {
    try {
      r = await once();
    } catch (err) {
      if (!(err instanceof NoResponders) || Date.now() > until || o.signal?.aborted) throw err;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  if (!r.ok) throw fromWire(r.error, `device ${device}: ${kind}`);
  return r.result as T;
}

/**
 * Sends control `kind` to every device of `targets` at once (`args` per device); resolves with
 * the results by device. @throws the first failure, without waiting for the other answers.
 */
export async function broadcast<T>(
  bus: Bus,
  targets: string[],
  kind: string,
  args: (device: string) => unknown,
  o: ControlOptions = {},
): Promise<Map<string, T>> {
  const results = await Promise.all(targets.map((d) => control<T>(bus, d, kind, args(d), o)));
  return new Map(targets.map((d, i) => [d, results[i]!]));
}
