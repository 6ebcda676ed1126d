/**
 * The devices of a run as the coordinator knows them: who joined, what they reported, and whether
 * they are alive. Liveness runs on the injected clock: a device silent for `lostAfterMs` (three
 * missed heartbeats) is reported DEVICE_LOST; a lost device that speaks again, or joins again, is
 * reported DEVICE_JOINED with `rejoin: true`. The run machine subscribes to these events and
 * queries `devices()`; it never touches the bus for them.
 */
import type { Clock } from '../../src/runtime/clock.ts';
import { HEARTBEAT_MS, LOST_AFTER_MS } from '../../src/runtime/heartbeat.ts';
import type { DeviceStatus, Heartbeat, JoinReply, JoinRequest, ProfileReport } from '../../src/runtime/messages.ts';

export interface DeviceRecord {
  readonly name: string;
  hello: JoinRequest;
  alive: boolean;
  /** Last state the device reported ('registering' until its first heartbeat). */
  state: string;
  step: number;
  /** What the device holds for the run and the phase of its work, as its heartbeats say. */
  role: string | null;
  phase: string | null;
  memoryBytes: number;
  matmulGflops: number | null;
  backendDetail: string | null;
  /** The run's work as the device timed it, when asked to. */
  timings: ProfileReport['timings'] | null;
  /** Coordinator clock readings. */
  joinedAt: number;
  lastSeen: number;
  /** How many times this name joined (1 for the first). */
  joins: number;
}

/** What the join reply tells every device about the run. */
export type JoinTerms = Pick<Extract<JoinReply, { ok: true }>, 'limits' | 'probe'>;

export type RegistryEvent =
  | { type: 'DEVICE_JOINED'; device: DeviceRecord; rejoin: boolean }
  | { type: 'DEVICE_PROFILED'; device: DeviceRecord }
  | { type: 'DEVICE_LOST'; device: DeviceRecord; silentMs: number; reason?: string }
  | { type: 'DEVICE_LEFT'; device: DeviceRecord; reason: string };

export type RegistryListener = (event: RegistryEvent) => void;

/** A liveness deadline firing later than this says the coordinator's process was stalled, not the device. */
export const STALLED_MS = 400;

export class DeviceRegistry {
  private readonly records = new Map<string, DeviceRecord>();
  private readonly timers = new Map<string, unknown>();
  /** When each armed deadline should fire (clock ms). */
  private readonly due = new Map<string, number>();
  private readonly listeners = new Set<RegistryListener>();
  private suspended = false;

  constructor(
    private readonly clock: Clock,
    readonly lostAfterMs = LOST_AFTER_MS,
    /** Told to every device that joins: the run's message limits (src/plan/message-limits.ts), the work to time. */
    private readonly terms: JoinTerms = {},
  ) {}

  /**
   * Accepts a hello. A name held by a live device in another process is refused; the same
   * process joining again (after a reconnect) or a new process replacing a lost or departed one
   * is accepted.
   */
  join(hello: JoinRequest): JoinReply {
    const now = this.clock.now();
    const prev = this.records.get(hello.device);
    const sameProcess = prev !== undefined && prev.hello.pid === hello.pid && prev.hello.host === hello.host;
    if (prev?.alive && !sameProcess) {
      return { ok: false, reason: `device name '${hello.device}' is in use by pid ${prev.hello.pid} on ${prev.hello.host}` };
    }
    const rec: DeviceRecord =
      prev && sameProcess
        ? { ...prev, hello, alive: true, lastSeen: now, joins: prev.alive ? prev.joins : prev.joins + 1 }
        : {
            name: hello.device,
            hello,
            alive: true,
            state: 'registering',
            step: -1,
            role: null,
            phase: null,
            memoryBytes: 0,
            matmulGflops: null,
            backendDetail: null,
            timings: null,
            joinedAt: now,
            lastSeen: now,
            joins: (prev?.joins ?? 0) + 1,
          };
    this.records.set(rec.name, rec);
    this.arm(rec.name);
    if (!prev?.alive || !sameProcess) this.emit({ type: 'DEVICE_JOINED', device: rec, rejoin: prev !== undefined });
    return {
      ok: true,
      role: 'worker',
      heartbeatMs: HEARTBEAT_MS,
      lostAfterMs: this.lostAfterMs,
      ...this.terms,
    };
  }

  /** Records a device's measured speed; false when the device is unknown or gone. */
  profile(report: ProfileReport): boolean {
    const rec = this.records.get(report.device);
    if (!rec?.alive) return false;
    rec.matmulGflops = report.matmulGflops;
    rec.backendDetail = report.backendDetail;
    rec.timings = report.timings ?? null;
    this.touch(rec);
    this.emit({ type: 'DEVICE_PROFILED', device: rec });
    return true;
  }

  /** Records a heartbeat; false when it comes from a device that never joined or has left. */
  heartbeat(hb: Heartbeat): boolean {
    const rec = this.records.get(hb.device);
    if (!rec || rec.state === 'left') return false;
    rec.state = hb.state;
    rec.step = hb.step;
    rec.role = hb.role;
    rec.phase = hb.phase;
    rec.memoryBytes = hb.memoryBytes;
    const wasLost = !rec.alive;
    this.touch(rec);
    if (wasLost) {
      rec.alive = true;
      rec.joins += 1;
      this.emit({ type: 'DEVICE_JOINED', device: rec, rejoin: true });
    }
    return true;
  }

  /** A device leaving on purpose: not a loss, no DEVICE_LOST follows. */
  leave(name: string, reason: string): boolean {
    const rec = this.records.get(name);
    if (!rec?.alive) return false;
    this.disarm(name);
    rec.alive = false;
    rec.state = 'left';
    this.emit({ type: 'DEVICE_LEFT', device: rec, reason });
    return true;
  }

  /**
   * The process behind `name` is known to have ended (its supervisor saw it exit): lost at once,
   * without waiting out the heartbeat deadline, so that its restart may register under the name.
   * A record of another process (already replaced) is left alone.
   */
  exited(name: string, pid: number, reason: string): boolean {
    const rec = this.records.get(name);
    if (!rec?.alive || rec.hello.pid !== pid) return false;
    this.disarm(name);
    rec.alive = false;
    this.emit({ type: 'DEVICE_LOST', device: rec, silentMs: this.clock.now() - rec.lastSeen, reason });
    return true;
  }

  get(name: string): DeviceRecord | undefined {
    return this.records.get(name);
  }

  /** Every device ever seen in this run, in join order. */
  devices(): DeviceRecord[] {
    return [...this.records.values()];
  }

  /** Names of the devices alive now. */
  alive(): string[] {
    return this.devices()
      .filter((d) => d.alive)
      .map((d) => d.name);
  }

  /** The status row of every device, heartbeat ages on this registry's clock. */
  status(): DeviceStatus[] {
    const now = this.clock.now();
    return this.devices().map((d) => ({
      name: d.name,
      state: d.alive ? d.state : d.state === 'left' ? 'left' : 'lost',
      alive: d.alive,
      backend: d.hello.backend,
      memoryMb: d.hello.memoryMb,
      memoryBytes: d.memoryBytes,
      step: d.step,
      role: d.role,
      phase: d.phase,
      heartbeatAgeMs: Math.max(0, Math.round(now - d.lastSeen)),
      matmulGflops: d.matmulGflops,
      pid: d.hello.pid,
      host: d.hello.host,
      joins: d.joins,
    }));
  }

  /** Calls `listener` for every later event; returns the unsubscribe function. */
  subscribe(listener: RegistryListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * The coordinator lost the bus: silence now says nothing about the devices, so no device is
   * judged until `resumeLiveness()`. Heartbeats that still arrive are recorded.
   */
  suspendLiveness(): void {
    this.suspended = true;
    for (const name of [...this.timers.keys()]) this.disarm(name);
  }

  /** The bus is back: every live device gets a whole deadline from now to be heard again. */
  resumeLiveness(): void {
    this.suspended = false;
    for (const rec of this.records.values()) if (rec.alive) this.touch(rec);
  }

  /** Stops every liveness timer and forgets the listeners. */
  close(): void {
    for (const name of [...this.timers.keys()]) this.disarm(name);
    this.listeners.clear();
  }

  /**
   * `device` was heard from other than by a heartbeat (a chunk of its reply arrived): a live
   * device's deadline starts again. A device already lost stays lost: only a heartbeat or a join
   * brings one back.
   */
  heard(device: string): void {
    const rec = this.records.get(device);
    if (rec?.alive) this.touch(rec);
  }

  private touch(rec: DeviceRecord): void {
    rec.lastSeen = this.clock.now();
    this.arm(rec.name);
  }

  private arm(name: string): void {
    this.disarm(name);
    if (this.suspended) return;
    this.due.set(name, this.clock.now() + this.lostAfterMs);
    this.timers.set(
      name,
      this.clock.setTimeout(() => this.expire(name), this.lostAfterMs),
    );
  }

  private disarm(name: string): void {
    if (this.timers.has(name)) this.clock.clearTimeout(this.timers.get(name));
    this.timers.delete(name);
  }

  private expire(name: string): void {
    this.timers.delete(name);
    const rec = this.records.get(name);
    if (!rec?.alive) return;
    // A deadline that fires this late means this process was not running (starved of CPU, e.g.
    // while another process loads): the silence may be its own, and heartbeats that came
    // meanwhile wait unread behind this timer. The device gets a whole deadline from now.
    if (this.clock.now() - (this.due.get(name) ?? 0) > STALLED_MS) {
      this.arm(name);
      return;
    }
    // Timers run before the socket is read: after this process was busy (decoding and saving a
    // large model state, say) heartbeats that came meanwhile are still unread. The verdict waits
    // until they are read; one of them re-arms the deadline, and the verdict is dropped.
    const due = this.due.get(name);
    const verdict = () => {
      if (!rec.alive || this.suspended || this.timers.has(name) || this.due.get(name) !== due) return;
      rec.alive = false;
      this.emit({ type: 'DEVICE_LOST', device: rec, silentMs: this.clock.now() - rec.lastSeen });
    };
    if (this.clock.afterPendingInput) this.clock.afterPendingInput(verdict);
    else verdict();
  }

  private emit(event: RegistryEvent): void {
    for (const l of [...this.listeners]) l(event);
  }
}
