/**
 * `charon device`: one device process. Joins the run on the given NATS server, registers,
 * profiles, heartbeats, serves control requests; tensor work runs in a worker thread
 * (tools/device-worker.ts). SIGTERM (and Ctrl-C at a terminal) leaves the run gracefully: the run
 * takes the device's work over at its next step boundary, then the device drains; a second signal
 * drains at once. A launcher-spawned device stops its work at once on SIGINT.
 */
import { readdirSync, rmSync } from 'node:fs';
import { privateDir } from '../../src/security/files.ts';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CliError, flag, num, parseCommandArgs, requireStr, str } from '../args.ts';
import { checkDevice, checkToken } from '../../src/bus/index.ts';
import { readSeed } from '../../src/security/credentials.ts';
import { tlsOption } from '../../src/security/certs.ts';
import { startDevice, type DeviceCompute } from '../../actors/device/actor.ts';
import { ComputeWorker } from '../../src/runtime/compute-worker.ts';
import type { DeviceWorkerInfo, DeviceWorkerOptions } from '../device-worker.ts';
import type { BackendChoice } from '../../src/model/backend.ts';
import { threadsFrom } from '../model-args.ts';

/** How long a device told to stop now (the launcher's Ctrl-C) may take to drain before it exits anyway. */
const STOP_NOW_MS = 2500;

export const summary = 'run one device of a run: register, profile, heartbeat, serve control requests';

const usage = `usage: charon device --nats URL --run RUN --name NAME [--creds FILE] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
                     [--backend wasm|cpu|tensorflow] [--threads N]
                     [--memory-mb N] [--slowdown F] [--bandwidth-mbps R] [--cache-dir DIR] [--json]

  --nats URL           NATS server of the run (e.g. nats://host:4222)
  --run RUN            run name (the topology's "run")
  --name NAME          this device's name, unique in the run (letters, digits, '-', '_')
  --creds FILE         this device's credentials (a NATS user seed, mode 0600) for an authenticated
                       bus: <run-dir>/creds/NAME.nk, or from \`charon creds add\` on the launching host
  --tls-ca FILE        the run's CA (<run-dir>/tls/ca.pem, copied from the launching host) for a bus
                       that requires TLS: the connection is encrypted and the server verified
  --tls-cert FILE      with --tls-key: this device's client certificate and key (mode 0600), for a bus
                       with mutual TLS (\`charon certs --client NAME\` on the launching host)
  --backend B          compute backend (default: best available: tensorflow, wasm, cpu)
  --threads N          threads of the native engine (the frozen forward, the head and the side
                       network; default: CHARON_NATIVE_THREADS, else every core of this host)
  --memory-mb N        memory budget offered to the planner (default: the topology's memoryMb for
                       this device, else 2048)
  --slowdown F         simulation: stretch compute F times (>= 1, default 1)
  --bandwidth-mbps R   simulation: cap outgoing traffic at R Mbit/s
  --cache-dir DIR      where this device's activation cache spills to disk (default: a private
                       folder in the OS temp directory); emptied at start, removed at exit
  --keep-cache         leave the cache folder in place at exit
  --json               on exit print {"device","state","error"?,"rejected"} on stdout
SIGTERM or Ctrl-C leaves the run gracefully: the device finishes its share of the step in
progress, hands its cache entries over, and exits 0 once the run has re-planned without it
(a second SIGTERM or Ctrl-C: drain at once). A device started by \`charon launch\` abandons the
work in progress at once on SIGINT.`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      nats: { type: 'string' },
      run: { type: 'string' },
      name: { type: 'string' },
      creds: { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      backend: { type: 'string' },
      threads: { type: 'string' },
      'memory-mb': { type: 'string' },
      slowdown: { type: 'string' },
      'bandwidth-mbps': { type: 'string' },
      'cache-dir': { type: 'string' },
      'keep-cache': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const nats = requireStr(args, 'nats');
  const runName = requireStr(args, 'run');
  const name = requireStr(args, 'name');
  try {
    checkToken('run', runName);
    checkDevice(name);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const credsFile = str(args, 'creds');
  let seed: string | undefined;
  try {
    seed = credsFile === undefined ? undefined : readSeed(resolve(credsFile));
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const tls = (() => {
    try {
      return tlsOption(str(args, 'tls-ca'), str(args, 'tls-cert'), str(args, 'tls-key'));
    } catch (err) {
      throw new CliError((err as Error).message);
    }
  })();
  const backend = str(args, 'backend');
  if (backend !== undefined && !['wasm', 'cpu', 'tensorflow'].includes(backend))
    throw new CliError(`--backend must be wasm, cpu or tensorflow, got '${backend}'`);
  threadsFrom(args);
  // Unset, the budget is the run's to say: the topology's memoryMb for this device (else 2048).
  const memoryMb = str(args, 'memory-mb') === undefined ? null : num(args, 'memory-mb', 0, { min: 1 });
  const slowdown = num(args, 'slowdown', 1, { min: 1 });
  const bw = str(args, 'bandwidth-mbps');
  const bandwidthMbps = bw === undefined ? null : num(args, 'bandwidth-mbps', 0, { min: Number.MIN_VALUE });
  const log = (line: string) => process.stderr.write(`[${name}] ${line}\n`);
  // Activations derive from private data: the cache folder is the device's alone, and what a
  // crashed process left in it is of no use to a new one (its index lived in memory).
  process.umask(0o077);
  const cacheDir = resolve(str(args, 'cache-dir') ?? join(tmpdir(), `charon-cache-${runName}-${name}-${process.pid}`));
  removeOrphanCaches(runName, name);
  rmSync(cacheDir, { recursive: true, force: true });
  privateDir(cacheDir);

  // Tensor work runs in a worker thread with its own data-plane connection, so this thread's
  // heartbeats and control requests never wait for a kernel.
  let worker: ComputeWorker<DeviceWorkerInfo>;
  try {
    worker = await ComputeWorker.start<DeviceWorkerInfo>(new URL('../device-worker.ts', import.meta.url), {
      nats,
      run: runName,
      name,
      seed,
      tls,
      slowdown,
      bandwidthMbps,
      cacheDir,
      ...(backend ? { backend: backend as BackendChoice } : {}),
    } satisfies DeviceWorkerOptions);
  } catch (err) {
    log(`compute worker failed to start: ${(err as Error).message}`);
    return 1;
  }
  let workerLost: string | null = null;
  let stopping = false;
  const compute: DeviceCompute = {
    backend: worker.info.backend,
    backendDetail: worker.info.backendDetail,
    measureMatmulGflops: () => worker.call<number>('measure'),
    run: (kind, args) => worker.call(kind, args),
    signal: (kind, args) => worker.signal(kind, args),
    probe: (req) => worker.call('probe', req),
    measureLinks: (req) => worker.call('links', req),
    limitMessages: async (limits) => {
      await worker.call('limits', limits);
    },
    memoryBytes: () => process.memoryUsage().rss,
    close: async () => {
      if (worker.exited) return;
      await Promise.race([worker.call('close').catch(() => {}), new Promise((r) => setTimeout(r, 2000).unref())]);
      await worker.terminate();
    },
  };
  const device = startDevice({
    nats,
    run: runName,
    name,
    seed,
    tls,
    memoryMb,
    slowdown,
    bandwidthMbps,
    log,
    requestTimeoutMs: 10_000,
    compute,
  });
  worker.onExit((err) => {
    if (stopping || device.snapshot().status !== 'active') return;
    workerLost = err.message;
    device.drain(`compute worker ended: ${err.message}`);
  });
  /** Stop now: abandon the work in progress (the worker is terminated mid-kernel), then leave. */
  const stopNow = (reason: string) => {
    stopping = true;
    void worker.terminate();
    device.drain(reason);
    // The run is stopping as a whole: a drain still waiting on a coordinator that has gone (its
    // requests retry on "no responders") must not outlive the launcher's grace. Unref'd: a device
    // that drained in time exits without waiting for it.
    setTimeout(() => {
      if (!flag(args, 'keep-cache')) rmSync(cacheDir, { recursive: true, force: true });
      log(`stopped (${reason}) before the drain finished`);
      process.exit(1);
    }, STOP_NOW_MS).unref();
  };
  // Spawned by `charon launch` with a pipe on stdin: the launcher's death closes it, and its
  // SIGINT means the whole run stops now.
  const launched = process.env.CHARON_EXIT_WITH_PARENT === '1';
  process.on('SIGINT', () => (launched ? stopNow('SIGINT') : device.leave('SIGINT')));
  process.on('SIGTERM', () => device.leave('SIGTERM'));
  if (launched) {
    process.stdin.on('end', () => stopNow('launcher gone'));
    process.stdin.resume();
  }
  const final = await device.done;
  if (!flag(args, 'keep-cache')) rmSync(cacheDir, { recursive: true, force: true });
  process.stdin.pause();
  const error = final.context.error;
  if (error) log(`failed: ${error}`);
  if (flag(args, 'json'))
    process.stdout.write(
      JSON.stringify({ device: name, state: String(final.value), ...(error ? { error } : {}), rejected: device.rejected() }) + '\n',
    );
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  return final.value === 'stopped' && !workerLost ? 0 : 1;
}

/** Removes default cache folders of this device name and run left by processes that died (SIGKILL, power loss). */
function removeOrphanCaches(runName: string, name: string): void {
  const prefix = `charon-cache-${runName}-${name}-`;
  for (const entry of readdirSync(tmpdir())) {
    const pid = Number(entry.slice(prefix.length));
    if (!entry.startsWith(prefix) || !Number.isInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
    rmSync(join(tmpdir(), entry), { recursive: true, force: true });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
