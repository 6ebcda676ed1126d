/**
 * A device's compute thread. The device process keeps its bus connection, heartbeats and machine
 * on the main thread and runs tensor work in a worker_thread, so a heartbeat never waits for a
 * matmul and a step in flight can be abandoned at once (`terminate()` stops the thread even in
 * the middle of a wasm kernel).
 *
 * Protocol: the main thread sends `{id, kind, args}` calls; the worker answers each with
 * `{id, ok: true, result}` or `{id, ok: false, error}` (a WireError, rebuilt as its class here);
 * `signal(kind, args)` sends a call whose answer nobody waits for (e.g. abort). The worker first
 * posts `{ready: info}` once its entry has set up (backend loaded), or `{failed: error}`.
 * Structured cloning drops classes, so WireTensors (side-network state, gradients) are marked on
 * the way out and rebuilt on the way in; their bytes are copied, never transferred, because the
 * sender may still hold them (an optimiser's moments).
 */
import { Worker, parentPort, type TransferListItem } from 'node:worker_threads';
import { WireTensor } from '../tensor/index.ts';
import { fromWire, toWire, WorkerExited, type WireError } from './errors.ts';
import { disableNativeTelemetry } from '../native/runtime.ts';
import { roomyHeap } from './heap.ts';

/** How long terminate() waits for a native engine run to return (one run is one layer or one chunk of a step). */
const NATIVE_RUN_GRACE_MS = 5000;

type Answer = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: WireError };
type Boot = { ready: unknown } | { failed: WireError };

export class ComputeWorker<Info = unknown> {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; kind: string }>();
  private exitError: Error | null = null;
  private readonly exitListeners: ((err: Error) => void)[] = [];

  private constructor(
    private readonly worker: Worker,
    readonly info: Info,
    /** Shared with the thread's native engine: see runFlags in src/native/runtime.ts. */
    private readonly nativeRunFlags: Int32Array,
  ) {
    worker.on('message', (m: Answer) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(revive(m.result));
      else p.reject(fromWire(m.error));
    });
    const onEnd = (err: Error) => {
      if (this.exitError) return;
      this.exitError = err;
      for (const p of this.pending.values())
        p.reject(new WorkerExited(`compute worker ended during '${p.kind}': ${err.message}`, { cause: err }));
      this.pending.clear();
      for (const l of this.exitListeners) l(err);
    };
    worker.on('error', (err) => onEnd(err));
    worker.on('exit', (code) => onEnd(new WorkerExited(`compute worker exited with code ${code}`)));
  }

  /**
   * Starts `entry` (a module that calls serveCompute) in a worker thread with `data` as its
   * workerData.options; resolves once it is ready, with what it reported (e.g. its backend).
   */
  static start<Info>(entry: URL, data: unknown): Promise<ComputeWorker<Info>> {
    disableNativeTelemetry();
    roomyHeap();
    const nativeRunFlags = new Int32Array(new SharedArrayBuffer(8));
    const worker = new Worker(new URL('./worker-boot.mjs', import.meta.url), {
      workerData: { entry: entry.href, options: data, nativeRunFlags },
    });
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        worker.off('message', onBoot);
        reject(err);
      };
      const onBoot = (m: Boot) => {
        worker.off('message', onBoot);
        worker.off('error', fail);
        if ('failed' in m) {
          void worker.terminate();
          reject(fromWire(m.failed));
        } else resolve(new ComputeWorker<Info>(worker, m.ready as Info, nativeRunFlags));
      };
      worker.on('message', onBoot);
      worker.once('error', fail);
      worker.once('exit', (code) => fail(new WorkerExited(`compute worker exited with code ${code} while starting`)));
    });
  }

  /** Runs `kind` in the worker; rejects with the worker's error, rebuilt as its class. */
  call<T>(kind: string, args?: unknown, transfer?: TransferListItem[]): Promise<T> {
    if (this.exitError) return Promise.reject(new WorkerExited(`compute worker is gone: ${this.exitError.message}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, kind });
      this.worker.postMessage({ id, kind, args: mark(args) }, transfer);
    });
  }

  /** Sends `kind` without waiting for its answer (the worker runs it as soon as its loop is free). */
  signal(kind: string, args?: unknown): void {
    if (!this.exitError) this.worker.postMessage({ id: 0, kind, args: mark(args) });
  }

  /** Calls made and not yet answered. */
  get busy(): number {
    return this.pending.size;
  }

  get exited(): boolean {
    return this.exitError !== null;
  }

  onExit(listener: (err: Error) => void): void {
    this.exitListeners.push(listener);
  }

  /**
   * Stops the thread now, whatever it is computing (a wasm kernel included); pending calls reject
   * with WorkerExited. A native engine run in progress is let finish first, up to a grace: a thread
   * stopped inside one would abort the process.
   */
  async terminate(): Promise<void> {
    if (this.exitError) return;
    Atomics.store(this.nativeRunFlags, 1, 1);
    const until = performance.now() + NATIVE_RUN_GRACE_MS;
    while (Atomics.load(this.nativeRunFlags, 0) === 1 && !this.exitError && performance.now() < until)
      await new Promise((r) => setTimeout(r, 2));
    if (!this.exitError) await this.worker.terminate();
  }
}

export type ComputeHandler = (args: unknown) => unknown | Promise<unknown>;

/**
 * The worker side: answers calls with `handlers`. `setup` runs first (load the backend, connect);
 * its result is posted as the ready report, its failure as the boot failure.
 */
export async function serveCompute(setup: () => Promise<{ info: unknown; handlers: Record<string, ComputeHandler> }>): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('serveCompute runs inside a worker thread');
  let handlers: Record<string, ComputeHandler>;
  try {
    const s = await setup();
    handlers = s.handlers;
    port.postMessage({ ready: s.info });
  } catch (err) {
    port.postMessage({ failed: toWire(err) });
    return;
  }
  port.on('message', async (m: { id: number; kind: string; args: unknown }) => {
    const h = handlers[m.kind];
    try {
      if (!h) throw new Error(`compute worker: unknown call '${m.kind}' (known: ${Object.keys(handlers).join(', ')})`);
      const result = await h(revive(m.args));
      if (m.id) port.postMessage({ id: m.id, ok: true, result: mark(result) });
    } catch (err) {
      if (m.id) port.postMessage({ id: m.id, ok: false, error: toWire(err) });
    }
  });
}

const TAG = '__wireTensor';

/** `v` with every WireTensor inside plain objects and arrays replaced by a tagged plain record. */
function mark(v: unknown): unknown {
  if (v instanceof WireTensor) return { [TAG]: true, dtype: v.dtype, shape: [...v.shape], data: v.data };
  if (Array.isArray(v)) return v.map(mark);
  if (isRecord(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mark(x)]));
  return v;
}

/** The inverse of mark(). */
function revive(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(revive);
  if (!isRecord(v)) return v;
  if (v[TAG] === true) return new WireTensor(v.dtype as never, v.shape as number[], v.data as never);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}
