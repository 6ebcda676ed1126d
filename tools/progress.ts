/**
 * What `charon launch` shows while a run goes, fed by the run's events (read-only).
 *
 * - json: one JSON object per event on stdout: the event as the coordinator emitted it (its
 *   `type` and fields) plus `event`, a short lower-case name ('step', 'epoch', 'device', 'plan',
 *   'replan', 'done', ...), and what the run's progress adds (`samples` done in the epoch and
 *   `samplesTotal` on steps; `state` on device events; `checkpoint` on epochs).
 * - text: one line per event on stderr (pipes, CI, tests).
 * - tty: cli-progress on stderr: a line of device states, a bar for the epoch in progress
 *   (samples done / total, steps/s, loss, ETA), and every event as a line above them.
 */
import { join } from 'node:path';
import cliProgress from 'cli-progress';

export type RunEvent = Record<string, unknown>;
export type ProgressMode = 'json' | 'text' | 'tty';

export interface TrainingShape {
  samples: number;
  batch: number;
  epochs: number;
}

export interface ProgressOptions {
  mode: ProgressMode;
  /** One line for an event (text and tty modes). */
  describe: (e: RunEvent) => string;
  runDir: string;
  /** The run's size; absent when launch does not train (--until). */
  training?: TrainingShape;
  /** Where text and bars go (default stderr). */
  stream?: NodeJS.WriteStream;
}

/** json with --json, else bars when stderr is a terminal, else lines. */
export function progressMode(json: boolean, stream: NodeJS.WriteStream = process.stderr): ProgressMode {
  return json ? 'json' : stream.isTTY ? 'tty' : 'text';
}

const deviceStates: Record<string, string> = {
  DEVICE_SPAWNED: 'starting',
  DEVICE_JOINED: 'up',
  DEVICE_PROFILED: 'up',
  DEVICE_RESTARTING: 'restarting',
  DEVICE_LOST: 'lost',
  JOIN_REFUSED: 'refused',
  DEVICE_LEAVING: 'leaving',
  DEVICE_DISMISSED: 'draining',
  DEVICE_LEFT: 'left',
};

const eventNames: Record<string, string> = {
  STEP_DONE: 'step',
  EPOCH_DONE: 'epoch',
  RUN_PLANNED: 'plan',
  RECOVERING: 'replan',
  STOPPED: 'done',
};

/** A message some process of the run dropped (the bus's rejection report has no `type`). */
function isRejection(e: RunEvent): boolean {
  return e.type === undefined && typeof e.reason === 'string' && typeof e.subject === 'string';
}

/** The `event` name of a run event in --json output. */
export function eventName(e: RunEvent): string {
  const type = e.type;
  if (typeof type !== 'string') return isRejection(e) ? 'rejected' : 'unknown';
  if (type in deviceStates) return 'device';
  return eventNames[type] ?? type.toLowerCase().replace(/_/g, '-');
}

/** Epoch progress and device states as the events tell them. */
export class RunTracker {
  readonly devices = new Map<string, string>();
  epoch = 0;
  phase = '';
  loss: number | undefined;
  /** Samples of each step of the current epoch (a replayed step counts once). */
  private stepSamples = new Map<number, number>();
  private resumedSamples = 0;
  epochStartedAt = Date.now();

  constructor(readonly training: TrainingShape | undefined) {}

  get stepsPerEpoch(): number {
    return this.training ? Math.ceil(this.training.samples / this.training.batch) : 0;
  }

  get samplesDone(): number {
    let n = this.resumedSamples;
    for (const s of this.stepSamples.values()) n += s;
    return n;
  }

  /** Samples done in this process (a resumed epoch's earlier steps left out). */
  get samplesDoneHere(): number {
    return this.samplesDone - this.resumedSamples;
  }

  get stepsDone(): number {
    return this.stepSamples.size;
  }

  private startEpoch(epoch: number, resumedSamples = 0): void {
    this.epoch = epoch;
    this.stepSamples.clear();
    this.resumedSamples = resumedSamples;
    this.loss = undefined;
    this.phase = '';
    this.epochStartedAt = Date.now();
  }

  /** Samples in global step `step` (1-based) of `epoch`: a full batch, or what the last step has left. */
  private samplesOf(step: number, epoch: number): number {
    const t = this.training!;
    const per = this.stepsPerEpoch;
    const inEpoch = step - 1 - (epoch - 1) * per;
    const i = inEpoch >= 0 && inEpoch < per ? inEpoch : (step - 1) % per;
    return Math.min(t.batch, t.samples - i * t.batch);
  }

  /** Updates the state with `e`; returns what the --json line adds to it. */
  apply(e: RunEvent, runDir: string): RunEvent {
    const type = e.type as string;
    const device = e.device as string | undefined;
    const state = deviceStates[type];
    if (state && device) {
      this.devices.set(device, state);
      return { state };
    }
    switch (type) {
      case 'RUN_PLANNED': {
        for (const s of e.stages as { from: number; to: number; devices: string[] }[])
          for (const d of s.devices) this.devices.set(d, `layers ${s.from}..${s.to}`);
        for (const d of (e.unused as string[] | undefined) ?? []) this.devices.set(d, 'idle');
        return {};
      }
      case 'RUN_DEPLOYED':
        if (this.epoch === 0) this.startEpoch(1);
        return {};
      case 'RUN_RESUMED': {
        const inEpoch = e.stepInEpoch as number;
        this.startEpoch(e.epoch as number, this.training ? Math.min(inEpoch * this.training.batch, this.training.samples) : 0);
        return {};
      }
      case 'STEP_DONE': {
        if (!this.training) return {};
        const epoch = e.epoch as number;
        if (epoch !== this.epoch) this.startEpoch(epoch);
        this.phase = e.phase as string;
        this.loss = e.loss as number;
        this.stepSamples.set(e.step as number, this.samplesOf(e.step as number, epoch));
        return { samples: this.samplesDone, samplesTotal: this.training.samples };
      }
      case 'EPOCH_DONE': {
        const epoch = e.epoch as number;
        this.startEpoch(epoch + 1);
        return { checkpoint: join(runDir, 'checkpoints', `epoch-${epoch}`) };
      }
      case 'RUN_FINISHED':
        for (const d of this.devices.keys()) if (this.devices.get(d)!.startsWith('layers')) this.devices.set(d, 'done');
        return {};
      default:
        return {};
    }
  }

  /** `dev0 layers 1..2 · dev1 lost` */
  describeDevices(): string {
    if (this.devices.size === 0) return 'devices: none yet';
    return `devices: ${[...this.devices].map(([d, s]) => `${d} ${s}`).join(' · ')}`;
  }
}

/** `42s`, `3m05s`, `1h02m`. */
export function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Prints a run's events in the chosen mode; `close()` once the run is over (before anything else goes to the terminal). */
export class RunProgress {
  private readonly tracker: RunTracker;
  private readonly stream: NodeJS.WriteStream;
  private readonly started = Date.now();
  private bars: cliProgress.MultiBar | undefined;
  private devicesLine: cliProgress.SingleBar | undefined;
  private epochBar: cliProgress.SingleBar | undefined;
  private barEpoch = 0;

  constructor(private readonly o: ProgressOptions) {
    this.tracker = new RunTracker(o.training);
    this.stream = o.stream ?? process.stderr;
    if (o.mode === 'tty') {
      this.bars = new cliProgress.MultiBar({
        stream: this.stream,
        fps: 5,
        hideCursor: true,
        autopadding: true,
        barsize: 24,
        etaBuffer: 20,
        barCompleteChar: '█',
        barIncompleteChar: '░',
        format: '{line}',
      });
      this.devicesLine = this.bars.create(1, 0, { line: this.tracker.describeDevices() });
      // An exit that skips close() (an uncaught error) must not leave the terminal without its cursor.
      process.once('exit', this.restoreCursor);
    }
  }

  event(e: RunEvent): void {
    // An event of an unexpected shape is shown as it is; it must not stop the ones after it.
    let extra: RunEvent = {};
    try {
      extra = this.tracker.apply(e, this.o.runDir);
    } catch {}
    if (this.o.mode === 'json') {
      process.stdout.write(`${JSON.stringify({ event: eventName(e), ...e, ...extra })}\n`);
      return;
    }
    let text: string;
    try {
      text = isRejection(e) ? `message on ${e.subject} dropped (${e.reason}): ${e.message}` : this.o.describe(e);
    } catch {
      text = JSON.stringify(e);
    }
    const line = `[${((Date.now() - this.started) / 1000).toFixed(1)}s] ${text}`;
    if (!this.bars) {
      this.stream.write(`${line}\n`);
      return;
    }
    // Steps move the bar; everything else is worth a line above it.
    if (e.type !== 'STEP_DONE') this.bars.log(`${line}\n`);
    this.render();
  }

  private render(): void {
    const t = this.tracker;
    const width = this.stream.columns || 100;
    this.devicesLine!.update(0, { line: t.describeDevices().slice(0, Math.max(20, width - 1)) });
    if (!this.o.training || t.epoch === 0 || t.epoch > this.o.training.epochs) return;
    if (this.barEpoch !== t.epoch) {
      if (this.epochBar) {
        // The epoch's last state is drawn before its bar goes (frames are throttled).
        this.bars!.update();
        this.bars!.remove(this.epochBar);
      }
      this.barEpoch = t.epoch;
      this.epochBar = this.bars!.create(this.o.training.samples, t.samplesDone, this.payload(), {
        format: `epoch {epoch}/{epochs}{phase} {bar} {value}/{total} samples | {rate} steps/s | loss {loss} | ETA {remaining}`,
      });
    }
    this.epochBar!.update(t.samplesDone, this.payload());
  }

  private payload(): Record<string, string | number> {
    const t = this.tracker;
    const seconds = (Date.now() - t.epochStartedAt) / 1000;
    const total = this.o.training?.samples ?? 0;
    const perSecond = seconds > 0 ? t.samplesDoneHere / seconds : 0;
    return {
      remaining: perSecond > 0 ? duration((total - t.samplesDone) / perSecond) : '-',
      epoch: t.epoch,
      epochs: this.o.training?.epochs ?? 0,
      phase: t.phase ? ` (${t.phase})` : '',
      rate: seconds > 0 && t.stepsDone > 0 ? (t.stepsDone / seconds).toFixed(2) : '-',
      loss: t.loss === undefined ? '-' : t.loss.toFixed(4),
    };
  }

  private readonly restoreCursor = () => {
    if (this.bars) this.stream.write('\u001b[?25h');
  };

  /** Draws the last state, flushes the lines above it and gives the terminal back. */
  close(): void {
    if (!this.bars) return;
    this.render();
    this.bars.update();
    this.bars.stop();
    this.bars = undefined;
    process.removeListener('exit', this.restoreCursor);
  }
}
