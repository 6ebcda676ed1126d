/**
 * Writes a run's step commits (commit-files.ts) on a thread of their own, so that the next step
 * is sent to the devices while the last one is still being written and synced: the checkpoint of
 * a step is tens of MB (the side network and both AdamW moments) and its fsyncs wait on the disk.
 *
 * A commit is handed over whole: the side network is copied then and there into a buffer shared
 * with the thread, so the next step's update, which changes the parameters and moments in place,
 * cannot reach a write in flight; the buffer is only filled again once that write is done. One
 * buffer for the whole run, not one per step: tens of MB a step would keep the collector busy.
 * Commits are written one at a time and in order; a new one waits for the one before it, and a
 * failed write fails the next commit (and `settled`). A coordinator that dies with a
 * write in flight leaves state.json at the step before: its successor runs that step again, as
 * it would for a step that was in flight on the devices.
 *
 * Without a thread (it could not start) every commit is written on the caller's thread.
 */
import { ComputeWorker } from '../../src/runtime/compute-worker.ts';
import { commitValues, packCommit, writeCommit, type CommitFiles } from './commit-files.ts';

export class CommitWriter {
  private worker: Promise<ComputeWorker | null> | null = null;
  private pending: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private shared: Float32Array | null = null;
  /** The last write's hand-over, which close() waits for. */
  private handing: Promise<void> = Promise.resolve();
  private closing = false;

  constructor(
    private readonly runDir: string,
    private readonly checkpointDir: string,
  ) {}

  /** Starts the thread (idempotent); commits before it is up wait for it. */
  start(): void {
    this.worker ??= ComputeWorker.start(new URL('./commit-worker.ts', import.meta.url), {
      runDir: this.runDir,
      checkpointDir: this.checkpointDir,
    }).catch(() => null);
  }

  /** Resolves once every commit handed over is on disk; throws the first write that failed. */
  async settled(): Promise<void> {
    await this.pending;
    if (this.failure) throw this.failure;
  }

  /**
   * Hands `files` to the writer thread once the commit before it is written, and resolves as soon
   * as they are handed over (copied); `settled()` tells when they are on disk.
   */
  write(files: CommitFiles): Promise<void> {
    const handed = this.handOver(files);
    this.handing = handed.catch(() => {});
    return handed;
  }

  private async handOver(files: CommitFiles): Promise<void> {
    await this.settled();
    if (this.closing) {
      // A run interrupted between a step's result and its hand-over still commits that step.
      writeCommit(this.runDir, this.checkpointDir, files);
      return;
    }
    this.start();
    const worker = await this.worker!;
    if (!worker || worker.exited) {
      writeCommit(this.runDir, this.checkpointDir, files);
      return;
    }
    const values = commitValues(files.side);
    if (!this.shared || this.shared.length < values) this.shared = new Float32Array(new SharedArrayBuffer(values * 4));
    const packed = packCommit(files, this.shared);
    this.pending = worker.call<void>('commit', packed).then(
      () => undefined,
      (err: Error) => {
        this.failure ??= err;
      },
    );
  }

  /** Writes `files` on this thread, after every commit before it: for commits whose files must exist when this returns. */
  async writeNow(files: CommitFiles): Promise<void> {
    await this.settled();
    writeCommit(this.runDir, this.checkpointDir, files);
  }

  /**
   * Waits for the commits handed over or being handed over (an interrupted run's last step is
   * still committed), then stops the thread.
   */
  async close(): Promise<void> {
    this.closing = true;
    try {
      await this.handing;
      await this.pending;
    } finally {
      const worker = await this.worker;
      this.worker = null;
      await worker?.terminate();
    }
  }
}
