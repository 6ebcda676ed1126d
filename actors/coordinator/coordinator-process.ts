/**
 * The launcher's side of a coordinator that runs as its own process (`charon coordinator`): the
 * nats-server and the device processes stay children of the launcher, so killing the
 * coordinator (SIGKILL, a crash) leaves them up. A coordinator that dies is started again at
 * once with `--resume` (when a step was committed): it takes the live devices over and continues
 * from the last committed step. One that exits 0 has trained the run; one that reports the run
 * failed (or refuses its arguments) is not restarted, a successor would fail the same way.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClientTls } from '../../src/security/certs.ts';
import type { RunEvents } from '../../src/runtime/events.ts';
import { INTERRUPTED_EXIT, RUN_FAILED_EXIT } from './takeover.ts';

const charonBin = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tools', 'charon.js');

/** Coordinator deaths a run survives before launch gives up (each one costs a takeover). */
export const COORDINATOR_MAX_RESTARTS = 5;
const RESTART_DELAY_MS = 200;

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
  /** Stops the coordinator (no restart from now on). */
  stop(): void;
}

export function superviseCoordinator(deps: CoordinatorProcessDeps): CoordinatorProcess {
  let current: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;
  let settle!: { resolve: () => void; reject: (err: Error) => void };
  const done = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  done.catch(() => {});
  const log = join(deps.runDir, 'logs', 'coordinator.log');

  const start = () => {
    // A successor continues from the last committed step; before any, it starts the run afresh.
    const resume = deps.resume || (restarts > 0 && existsSync(join(deps.runDir, 'state.json')));
    const args = [
      charonBin,
      'coordinator',
      deps.topologyFile,
      '--nats',
      deps.natsUrl,
      '--run-dir',
      deps.runDir,
      ...(resume ? ['--resume'] : []),
      ...(deps.profileFile ? ['--profile', deps.profileFile] : []),
      ...(deps.creds ? ['--creds', deps.creds] : []),
      ...(deps.tls ? ['--tls-ca', deps.tls.caFile] : []),
      ...(deps.tls?.certFile && deps.tls.keyFile ? ['--tls-cert', deps.tls.certFile, '--tls-key', deps.tls.keyFile] : []),
    ];
    const logFd = openSync(log, 'a', 0o600);
    // stdin is a pipe the coordinator watches: the launcher's death ends it too.
    const child = spawn(process.execPath, args, { stdio: ['pipe', 'ignore', logFd] });
    closeSync(logFd);
    current = child;
    deps.children.add(child);
    deps.events.emit('COORDINATOR_SPAWNED', { pid: child.pid, restart: restarts, resume });
    child.once('error', (err) => {
      deps.children.delete(child);
      if (!stopping) settle.reject(new Error(`coordinator process: ${err.message}`));
    });
    child.once('exit', (code, sig) => {
      deps.children.delete(child);
      if (stopping) return;
      if (code === 0) return settle.resolve();
      const how = sig ?? `code ${code}`;
      if (code === RUN_FAILED_EXIT || code === 2)
        return settle.reject(new Error(`the coordinator ended the run (exit ${how}; log: ${log})`));
      // It was told to stop (the terminal's Ctrl-C reaches it too): the run stops, it is not replaced.
      if (code === INTERRUPTED_EXIT) return settle.reject(new Error('the coordinator was interrupted'));
      deps.events.emit('COORDINATOR_LOST', { pid: child.pid, reason: `process ${child.pid} exited with ${how}`, restart: restarts + 1 });
      if (++restarts > COORDINATOR_MAX_RESTARTS)
        return settle.reject(
          new Error(`coordinator: gave up after ${COORDINATOR_MAX_RESTARTS} restarts (last: exited with ${how}; log: ${log})`),
        );
      setTimeout(() => {
        if (!stopping) start();
      }, RESTART_DELAY_MS);
    });
  };
  start();
  return {
    done,
    stop: () => {
      stopping = true;
      if (current && current.exitCode === null && current.signalCode === null) current.kill(deps.stopSignal());
    },
  };
}
