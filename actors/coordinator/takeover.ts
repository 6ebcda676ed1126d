/**
 * A coordinator taking a run over from one that died (SIGKILL, crash) while the devices and the
 * bus lived on. The devices keep heartbeating and keep what they hold (loaded layers, activation
 * caches); the new coordinator
 *
 * - numbers itself: the run directory's `coordinator.json` holds the epoch of the last coordinator
 *   start, flushed before the new one sends anything; every control request carries it, and a
 *   device refuses (and counts, reason 'coordinator') requests of an older epoch;
 * - learns the live devices by roll call: a heartbeat of a device its registry does not know is
 *   answered with `rollcall` (the device's hello and the speed it measured), then `abort` and
 *   `release` (whatever step the old coordinator had in flight is dropped; caches stay), and the
 *   device is registered and profiled as it reported, with no new process and no new measurement;
 * - resumes the run from the last committed step (state.json and checkpoints/latest), after
 *   dropping the metrics lines of steps that never committed.
 */
import { existsSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { MessageRejected, type Bus } from '../../src/bus/index.ts';
import { heartbeat, joinRequest, profileReport, type JoinRequest } from '../../src/runtime/messages.ts';
import { Inbox } from '../../src/runtime/inbox.ts';
import { fsyncPath } from '../../src/train/durable.ts';
import type { Coordinator } from './actor.ts';
import { control } from './control.ts';

/** Plan generations one coordinator may use before its successor's start above them. */
export const GENERATIONS_PER_EPOCH = 10_000;

/** The first plan generation of coordinator epoch `epoch` (1-based): 0 for the first coordinator. */
export const firstGeneration = (epoch: number): number => (epoch - 1) * GENERATIONS_PER_EPOCH;

/** Reads the run's last coordinator epoch, stores the next one durably and returns it (1 for a new run). */
export function nextCoordinatorEpoch(runDir: string): number {
  const file = join(runDir, 'coordinator.json');
  let last = 0;
  if (existsSync(file)) {
    const parsed = z.object({ epoch: z.number().int().nonnegative() }).safeParse(JSON.parse(readFileSync(file, 'utf8')));
    if (!parsed.success) throw new Error(`${file}: field 'epoch' must be a non-negative integer`);
    last = parsed.data.epoch;
  }
  const epoch = last + 1;
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify({ epoch, pid: process.pid, startedAt: new Date().toISOString() }) + '\n');
  fsyncPath(tmp);
  renameSync(tmp, file);
  fsyncPath(dirname(file));
  return epoch;
}

/**
 * metrics.jsonl without the step lines past the committed `step`: a step the dead coordinator ran
 * but never committed is run again, and must be recorded once.
 */
export function dropUncommittedMetrics(runDir: string, step: number): number {
  const file = join(runDir, 'metrics.jsonl');
  if (!existsSync(file)) return 0;
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  const kept = lines.filter((line) => {
    try {
      const m = JSON.parse(line) as { type?: string; step?: number };
      return !(m.type === 'step' && typeof m.step === 'number' && m.step > step);
    } catch {
      return false;
    }
  });
  if (kept.length === lines.length) return 0;
  writeFileSync(file, kept.map((l) => l + '\n').join(''));
  return lines.length - kept.length;
}

const rollcallReply = z.object({
  hello: joinRequest,
  profile: profileReport.omit({ device: true }).nullable(),
  state: z.string(),
});

export interface AdoptOptions {
  bus: Bus;
  coordinator: Coordinator;
  /** Why a device may not join this run (null: it may): the same admission as a registration. */
  admit?: (hello: JoinRequest) => string | null;
  log?: (line: string) => void;
}

/**
 * Adopts every device that heartbeats without being registered with this coordinator (see the
 * module comment). A device that has not measured itself yet is left to register on its own.
 * `rollCall(ms)` resolves, after `ms` of listening and once the adoptions it saw have ended, with
 * the devices adopted so far: the run a successor continues is over these (a device of the
 * topology that left or died before the takeover is not waited for). A device that speaks later
 * (one that was frozen) is adopted then and joins the run at a step boundary.
 */
export function adoptLiveDevices(o: AdoptOptions): { rollCall(ms: number): Promise<string[]>; stop(): void } {
  const { bus, coordinator } = o;
  const inbox = new Inbox(bus);
  const pending = new Set<string>();
  const adopted: string[] = [];
  const inFlight = new Set<Promise<void>>();
  const events = coordinator.events;
  const adopt = async (device: string) => {
    const t0 = performance.now();
    try {
      const r = rollcallReply.parse(await control(bus, device, 'rollcall', {}, { timeoutMs: 10_000 }));
      if (r.hello.device !== device || !r.profile) return;
      const pid = r.hello.pid;
      const refused = o.admit?.(r.hello) ?? null;
      if (refused !== null) {
        events.emit('JOIN_REFUSED', { device, reason: refused, pid, host: r.hello.host });
        return;
      }
      // Whatever the dead coordinator left in flight is dropped before the device counts as ready.
      await control(bus, device, 'abort', {}, { timeoutMs: 60_000 });
      await control(bus, device, 'release', {}, { timeoutMs: 60_000 });
      if (coordinator.registry.get(device)?.alive) return;
      const joined = coordinator.registry.join(r.hello);
      if (!joined.ok) {
        o.log?.(`${device}: not adopted: ${joined.reason}`);
        return;
      }
      coordinator.registry.profile({ device, ...r.profile });
      adopted.push(device);
      events.emit('DEVICE_ADOPTED', { device, pid, host: r.hello.host, was: r.state, seconds: (performance.now() - t0) / 1000 });
    } catch (err) {
      o.log?.(`${device}: roll call failed: ${(err as Error).message}`);
    } finally {
      pending.delete(device);
    }
  };
  inbox.on(bus.subjects.devHbAll(), 'hb', heartbeat, (hb, _env, msg) => {
    if (msg.sender !== hb.device) {
      bus.reject(msg.subject, new MessageRejected('peer', `heartbeat for device '${hb.device}' sent by '${msg.sender ?? '?'}'`));
      return;
    }
    if (pending.has(hb.device) || coordinator.registry.get(hb.device) !== undefined) return;
    pending.add(hb.device);
    const p = adopt(hb.device);
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  });
  return {
    rollCall: async (ms) => {
      await new Promise((r) => setTimeout(r, ms));
      await Promise.allSettled([...inFlight]);
      return [...adopted];
    },
    stop: () => inbox.close(),
  };
}

/** How long a successor listens for heartbeats before it continues over the devices it heard (three beats). */
export const ROLL_CALL_MS = 1500;

/** `charon coordinator`'s exit code when the run failed on its own terms (not restarted: a successor would fail the same way). */
export const RUN_FAILED_EXIT = 3;

/** `charon coordinator`'s exit code after SIGINT / SIGTERM: the run stops, no successor is started. */
export const INTERRUPTED_EXIT = 130;
