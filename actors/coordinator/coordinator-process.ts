/**
 * The launcher's side of a coordinator that runs as its own process (`charon coordinator`): the
 * nats-server and the device processes stay children of the launcher, so killing the
 * coordinator (SIGKILL, a crash) leaves them up. A standby coordinator process, loaded and
 * waiting, takes over at once when the coordinator dies (or a new one is started when there is
 * none), resuming when a step was committed: it takes the live devices over and continues from
 * the last committed step. One that exits 0 has trained the run; one that reports the run
 * failed (or refuses its arguments) is not restarted, a successor would fail the same way.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClientTls } from '../../src/security/certs.ts';
import type { RunEvents } from '../../src/runtime/events.ts';
import { INTERRUPTED_EXIT, RUN_FAILED_EXIT } from './takeover.ts';

const charonBin = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tools', 'charon.js');

/**
 * Node's CPU profiler for the processes a launch starts (coordinator, devices), when
 * CHARON_CPU_PROF_DIR names a folder: one .cpuprofile per thread at exit. Node refuses
 * --cpu-prof in NODE_OPTIONS, so it goes on each child's command line.
 */
export function profilerArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dir = env.CHARON_CPU_PROF_DIR;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

/** Coordinator deaths a run survives before launch gives up (each one costs a takeover). */
export const COORDINATOR_MAX_RESTARTS = 5;
/** After a takeover, the next standby waits this long before it loads (it would compete for the CPU). */
const STANDBY_DELAY_MS = 5000;

export interface CoordinatorProcessOptions {
  /** The topology file the launcher loaded (the coordinator loads it again). */
  topologyFile: string;
  /** `--profile FILE` to plan with. */
  profileFile?: string;
  /** The first coordinator continues an interrupted run (`launch --resume`). */
  resume?: boolean;
}

export interface CoordinatorProcessDeps extends CoordinatorProcessOptions {
  natsUrl: string;
  runDir: string;
  /** The coordinator's seed file, when the bus is authenticated. */
  creds?: string;
  tls?: ClientTls;
  events: RunEvents;
  /** The launcher's children, waited for at its end. */
  children: Set<ChildProcess>;
  /** The signal that stops the coordinator when the launcher stops. */
  stopSignal: () => NodeJS.Signals;
}

export interface CoordinatorProcess {
  /** Resolves when the coordinator has trained the run; rejects when the run failed or the coordinator was given up on. */
  done: Promise<void>;
  /** The run is under way: load a standby successor now. */
  ready(): void;
  /** Stops the coordinator and its standby (no restart from now on). */
  stop(): void;
}

export function superviseCoordinator(deps: CoordinatorProcessDeps): CoordinatorProcess {
  /** The coordinator at work. */
  let current: ChildProcess | undefined;
  /** A successor, loaded and waiting for its order on stdin. */
  let standby: ChildProcess | undefined;
  let standbyTimer: NodeJS.Timeout | undefined;
  let stopping = false;
  let restarts = 0;
  let settle!: { resolve: () => void; reject: (err: Error) => void };
  const done = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  done.catch(() => {});
  const log = join(deps.runDir, 'logs', 'coordinator.log');
  // A successor continues from the last committed step; before any, it starts the run afresh.
  const resuming = () => deps.resume === true || (restarts > 0 && existsSync(join(deps.runDir, 'state.json')));

  const spawnCoordinator = (role: 'active' | 'standby'): ChildProcess => {
    const resume = role === 'active' && resuming();
    const args = [
      ...profilerArgs(),
      charonBin,
      'coordinator',
      deps.topologyFile,
      '--nats',
      deps.natsUrl,
      '--run-dir',
      deps.runDir,
      ...(resume ? ['--resume'] : []),
      ...(role === 'standby' ? ['--standby'] : restarts > 0 ? ['--takeover'] : []),
      ...(deps.profileFile ? ['--profile', deps.profileFile] : []),
      ...(deps.creds ? ['--creds', deps.creds] : []),
      ...(deps.tls ? ['--tls-ca', deps.tls.caFile] : []),
      ...(deps.tls?.certFile && deps.tls.keyFile ? ['--tls-cert', deps.tls.certFile, '--tls-key', deps.tls.keyFile] : []),
    ];
    const logFd = openSync(log, 'a', 0o600);
    // stdin is a pipe the coordinator watches: the launcher's death ends it too (and a standby's orders come on it).
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'ignore', logFd] });
    closeSync(logFd);
    deps.children.add(child);
    deps.events.emit('COORDINATOR_SPAWNED', {
      pid: child.pid,
      restart: restarts,
      resume,
      ...(role === 'standby' ? { standby: true } : {}),
    });
    child.once('error', (err) => {
      deps.children.delete(child);
      if (!stopping && child === current) settle.reject(new Error(`coordinator process: ${err.message}`));
    });
    child.once('exit', (code, sig) => {
      deps.children.delete(child);
      if (child === standby) standby = undefined;
      if (stopping || child !== current) return;
      current = undefined;
      ended(child, code, sig);
    });
    return child;
  };

  const ended = (child: ChildProcess, code: number | null, sig: NodeJS.Signals | null) => {
    if (code === 0) return settle.resolve();
    const how = sig ?? `code ${code}`;
    if (code === RUN_FAILED_EXIT || code === 2)
      return settle.reject(new Error(`${failureOf(log) ?? `the coordinator ended the run (exit ${how})`} (coordinator log: ${log})`));
    // It was told to stop (the terminal's Ctrl-C reaches it too): the run stops, it is not replaced.
    if (code === INTERRUPTED_EXIT) return settle.reject(new Error('the coordinator was interrupted'));
    deps.events.emit('COORDINATOR_LOST', { pid: child.pid, reason: `process ${child.pid} exited with ${how}`, restart: restarts + 1 });
    if (++restarts > COORDINATOR_MAX_RESTARTS)
      return settle.reject(
        new Error(`coordinator: gave up after ${COORDINATOR_MAX_RESTARTS} restarts (last: exited with ${how}; log: ${log})`),
      );
    const successor = standby;
    if (successor?.stdin?.writable) {
      standby = undefined;
      current = successor;
      successor.stdin.write(resuming() ? 'go resume\n' : 'go\n');
    } else {
      current = spawnCoordinator('active');
    }
    // The next standby loads once the takeover has had the machine to itself for a moment.
    armStandby(STANDBY_DELAY_MS);
  };

  const armStandby = (ms: number) => {
    if (standbyTimer) clearTimeout(standbyTimer);
    standbyTimer = setTimeout(() => {
      standbyTimer = undefined;
      if (!stopping && !standby) standby = spawnCoordinator('standby');
    }, ms);
  };

  current = spawnCoordinator('active');
  return {
    done,
    ready: () => armStandby(0),
    stop: () => {
      stopping = true;
      if (standbyTimer) clearTimeout(standbyTimer);
      for (const c of [current, standby])
        if (c && c.exitCode === null && c.signalCode === null) c.kill(c === standby ? 'SIGTERM' : deps.stopSignal());
    },
  };
}

/** The reason a coordinator gave for failing the run: the last `failed:` line of its log. */
function failureOf(log: string): string | null {
  try {
    const lines = readFileSync(log, 'utf8').split('\n');
    for (let i = lines.length - 1; i >= 0; i--) {
      const m = /^\[coordinator\] failed: (.*)$/.exec(lines[i]!);
      if (m) return m[1]!;
    }
  } catch {
    /* no log to read: the generic reason stands */
  }
  return null;
}
