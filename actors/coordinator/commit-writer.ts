/**
 * Writes a run's step commits (commit-files.ts) on a thread of their own, so that the next step
 * is sent to the devices while the last one is still being written and synced: the checkpoint of
 * a step is tens of MB (the side network and both AdamW moments) and its fsyncs wait on the disk.
 *
 * A commit is handed over whole: the side network is copied then and there into a buffer shared
 * with the thread, so the next step's update, which changes the parameters and moments in place,
 * cannot reach a write in flight. Two buffers for the whole run, not one per step: the one the
 * thread may be writing and the one holding the newest commit waiting for its turn.
 *
 * Writes start at most one per `minIntervalMs`: a commit handed over sooner after the last write
 * started waits, and a newer commit replaces it. Every write is whole and in order, so state.json
 * and checkpoints/latest always agree; on a machine whose cores the devices keep busy, writing
 * tens of MB and syncing them several times a second takes compute from the devices. What waits
 * is written when its time comes, by `settled()` (a run's end) and by `close()` (an interrupt),
 * and dropped by `writeNow` (an epoch's end), whose commit is newer. A coordinator that dies
 * leaves state.json at an earlier step than the devices reached, at most about `minIntervalMs`
 * and one write behind: its successor runs those steps again, as it would a step in flight on the
 * devices. A failed write fails the next commit handed over after it is known (and `settled`).
 *
 * Without a thread (it could not start) every commit is written on the caller's thread.
 */
import { ComputeWorker } from '../../src/runtime/compute-worker.ts';
import { commitValues, packCommit, writeCommit, type CommitFiles, type PackedCommit } from './commit-files.ts';

/** How often a commit may start writing, by default: what a coordinator lost mid-run costs in steps run again. */
export const COMMIT_INTERVAL_MS = 1000;

export class CommitWriter {
  private worker: Promise<ComputeWorker | null> | null = null;
  /** The thread once it is up. */
  private thread: ComputeWorker | null = null;
  private failure: Error | null = null;
  /** The write on the thread, and the buffer it reads. */
  private inFlight: { done: Promise<void>; buffer: Float32Array } | null = null;
  /** The newest commit handed over and not yet written. */
  private waiting: PackedCommit | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastStart = Number.NEGATIVE_INFINITY;
  private readonly buffers: Float32Array[] = [];
  /** The last write's hand-over, which close() waits for. */
  private handing: Promise<void> = Promise.resolve();
  private closing = false;
  /** Commits handed over, and of them the ones written (the others were replaced by a newer one). */
  readonly counts = { handed: 0, written: 0 };

  constructor(
    private readonly runDir: string,
    private readonly checkpointDir: string,
    private readonly minIntervalMs = COMMIT_INTERVAL_MS,
  ) {}

  /** Starts the thread (idempotent); commits before it is up wait for it. */
  start(): void {
    this.worker ??= ComputeWorker.start(new URL('./commit-worker.ts', import.meta.url), {
      runDir: this.runDir,
      checkpointDir: this.checkpointDir,
    }).catch(() => null);
  }

  /** Resolves once every commit handed over is on disk (writing the one waiting now); throws the first write that failed. */
  async settled(): Promise<void> {
    for (;;) {
      if (!this.inFlight && this.waiting) this.pump(true);
      if (!this.inFlight) break;
      await this.inFlight.done;
    }
    if (this.failure) throw this.failure;
  }

  /**
   * Hands `files` over and resolves as soon as they are copied; they are written in their turn
   * (see the class comment), `settled()` tells when they are on disk.
   */
  write(files: CommitFiles): Promise<void> {
    const handed = this.handOver(files);
    this.handing = handed.catch(() => {});
    return handed;
  }

  private async handOver(files: CommitFiles): Promise<void> {
    if (this.failure) throw this.failure;
    this.counts.handed++;
    if (this.closing) return this.writeHere(files);
    this.start();
    const worker = await this.worker!;
    if (!worker || worker.exited || this.closing) return this.writeHere(files);
    this.thread = worker;
    this.waiting = packCommit(files, this.spare(commitValues(files.side)));
    this.pump(false);
  }

  /** Writes `files` on this thread, after every commit before it: for commits whose files must exist when this returns. */
  async writeNow(files: CommitFiles): Promise<void> {
    this.counts.handed++;
    await this.writeHere(files);
  }

  /** After the write in flight, instead of the one waiting (older than `files`). */
  private async writeHere(files: CommitFiles): Promise<void> {
    this.dropWaiting();
    while (this.inFlight) await this.inFlight.done;
    if (this.failure) throw this.failure;
    this.lastStart = performance.now();
    writeCommit(this.runDir, this.checkpointDir, files);
    this.counts.written++;
  }

  private dropWaiting(): void {
    this.waiting = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A buffer of at least `values` that no write in flight reads. */
  private spare(values: number): Float32Array {
    const free = this.buffers.findIndex((b) => b !== this.inFlight?.buffer);
    if (free >= 0 && this.buffers[free]!.length >= values) return this.buffers[free]!;
    const b = new Float32Array(new SharedArrayBuffer(values * 4));
    if (free >= 0) this.buffers[free] = b;
    else this.buffers.push(b);
    return b;
  }

  /** Starts writing the waiting commit if nothing is in flight and its time has come (`now`: at once). */
  private pump(now: boolean): void {
    if (this.failure) this.dropWaiting();
    if (this.inFlight || !this.waiting || !this.thread) return;
    const wait = this.lastStart + this.minIntervalMs - performance.now();
    if (!now && wait > 0) {
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.pump(false);
      }, wait);
      return;
    }
    const packed = this.waiting;
    this.dropWaiting();
    this.lastStart = performance.now();
    const flight = {
      buffer: this.buffers.find((b) => b.buffer === packed.data.buffer)!,
      done: this.thread
        .call<void>('commit', packed)
        .then(
          () => {
            this.counts.written++;
          },
          (err: Error) => {
            this.failure ??= err;
          },
        )
        .finally(() => {
          if (this.inFlight === flight) this.inFlight = null;
          this.pump(false);
        }),
    };
    this.inFlight = flight;
  }

  /**
   * Waits for the commits handed over or being handed over (an interrupted run's last step is
   * still committed), then stops the thread.
   */
  async close(): Promise<void> {
    this.closing = true;
    try {
      await this.handing;
      await this.settled();
    } finally {
      this.dropWaiting();
      const worker = await this.worker;
      this.worker = null;
      await worker?.terminate();
    }
  }
}
