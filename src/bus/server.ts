/**
 * Private nats-server for a run: loopback unless asked otherwise, a free port, max_payload 8 MB,
 * JetStream stored under the run directory, and, when given, an authorization block (per-run
 * credentials, src/security/credentials.ts) in `auth.conf` beside the config, which `charon creds
 * add` rewrites and reloads (SIGHUP) while the server runs; with `tls`, every client must speak
 * TLS (nats-server 2.9 sends its INFO in clear first, then upgrades). nats-server 2.9 has no --max_payload flag, so settings go in a config
 * file written next to the store. The server runs under a small `sh` guard that kills it when its
 * stdin (a pipe from this process) closes, so it dies with this process even on SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { privateDir, writePrivateFile } from '../security/files.ts';
import { createServer, connect as tcpConnect } from 'node:net';
import { delimiter, join, resolve } from 'node:path';

/** The private server's max_payload: larger messages travel in chunks. */
export const DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024;

export const NATS_SERVER_MISSING =
  "nats-server not found on PATH; install the Debian/Ubuntu package 'nats-server' (apt-get install nats-server)";

export interface NatsServerOptions {
  /** run directory; the server's config, pid file, log and JetStream store go in <runDir>/nats */
  runDir: string;
  /** bytes; default 8 MB */ maxPayload?: number;
  /** enable JetStream; default true */ jetstream?: boolean;
  /** also open the HTTP monitoring port on loopback; default false */ monitoring?: boolean;
  /** deadline for the server to accept connections; default 10 s */ startTimeoutMs?: number;
  /** client port; default a free one (a fixed port lets a restarted server take over its clients) */ port?: number;
  /** address to listen on; default 127.0.0.1 (loopback only) */ host?: string;
  /** nats-server `authorization` block; without it the server accepts any client */ authorization?: string;
  /**
   * Require TLS of every client, with this certificate and key (src/security/certs.ts); with
   * `verify`, also a client certificate signed by `caFile`.
   */
  tls?: { certFile: string; keyFile: string; caFile: string; verify?: boolean };
}

export interface NatsServer {
  /** nats://127.0.0.1:<port> */ url: string;
  port: number;
  /** monitoring port when `monitoring` was asked for */ httpPort?: number;
  /** pid of the nats-server process */ pid: number;
  /** Stops the server and resolves once its process has exited. Idempotent. */
  stop(): Promise<void>;
}

export class NatsServerError extends Error {
  override name = 'NatsServerError';
  readonly retryable = false;
}

/** Absolute path of `nats-server` on PATH. @throws NatsServerError(NATS_SERVER_MISSING). */
export function findNatsServer(path = process.env.PATH ?? ''): string {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, 'nats-server');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* not in this directory */
    }
  }
  throw new NatsServerError(NATS_SERVER_MISSING);
}

/** A loopback TCP port that was free a moment ago (the caller retries if it is taken meanwhile). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

/** Starts a private nats-server and waits until it greets a client. */
export async function startNatsServer(opts: NatsServerOptions): Promise<NatsServer> {
  const bin = findNatsServer();
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(bin, opts);
    } catch (err) {
      lastError = err;
      if (opts.port || !/address already in use/i.test(String((err as Error).message))) throw err;
    }
  }
  throw lastError;
}

async function startOnce(bin: string, opts: NatsServerOptions): Promise<NatsServer> {
  const dir = privateDir(resolve(opts.runDir, 'nats'));
  const host = opts.host ?? '127.0.0.1';
  const local = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const port = opts.port ?? (await freePort());
  const httpPort = opts.monitoring ? await freePort() : undefined;
  const confPath = join(dir, 'nats-server.conf');
  const pidPath = join(dir, `nats-server-${port}.pid`);
  const lines = [
    `listen: ${JSON.stringify(`${host.includes(':') ? `[${host}]` : host}:${port}`)}`,
    `max_payload: ${opts.maxPayload ?? DEFAULT_MAX_PAYLOAD}`,
    `pid_file: ${JSON.stringify(pidPath)}`,
    ...(httpPort ? [`http: "127.0.0.1:${httpPort}"`] : []),
    ...(opts.jetstream === false ? [] : [`jetstream {`, `  store_dir: ${JSON.stringify(dir)}`, `}`]),
    ...(opts.authorization ? ['include "auth.conf"'] : []),
    ...(opts.tls
      ? [
          'tls {',
          `  cert_file: ${JSON.stringify(opts.tls.certFile)}`,
          `  key_file: ${JSON.stringify(opts.tls.keyFile)}`,
          `  ca_file: ${JSON.stringify(opts.tls.caFile)}`,
          `  verify: ${opts.tls.verify === true}`,
          '  timeout: 5',
          '}',
        ]
      : []),
  ];
  if (opts.authorization) writePrivateFile(join(dir, AUTH_FILE), opts.authorization);
  writePrivateFile(confPath, lines.join('\n') + '\n');

  // The guard: start the server, then wait for stdin to close (our stop(), or our death).
  const guard = 'trap \'kill $s 2>/dev/null\' TERM INT; "$0" -c "$1" & s=$!; read _ ; kill $s 2>/dev/null; wait $s';
  const child = spawn('sh', ['-c', guard, bin, confPath], { stdio: ['pipe', 'ignore', 'pipe'], detached: false });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  let serverPid = 0;
  const onParentExit = () => {
    if (serverPid)
      try {
        process.kill(serverPid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    child.kill('SIGKILL');
  };
  process.on('exit', onParentExit);

  try {
    await waitForGreeting(local, port, child, exited, () => log, opts.startTimeoutMs ?? 10_000);
    serverPid = Number(readFileSync(pidPath, 'utf8').trim());
  } catch (err) {
    onParentExit();
    await exited;
    process.off('exit', onParentExit);
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    url: `nats://${local.includes(':') ? `[${local}]` : local}:${port}`,
    port,
    httpPort,
    pid: serverPid,
    stop() {
      stopping ??= (async () => {
        child.stdin!.end();
        const timer = setTimeout(onParentExit, 5000);
        await exited;
        clearTimeout(timer);
        await waitGone(serverPid, 5000);
        process.off('exit', onParentExit);
      })();
      return stopping;
    },
  };
}

const AUTH_FILE = 'auth.conf';

/**
 * Replaces the authorization of the run's server in `runDir` and makes a running one reload it
 * (SIGHUP). Returns whether a running server was signalled. nats-server forgets, at a reload, which
 * replies its clients still owe, so a reply in flight at that moment can be refused.
 */
export function reloadAuthorization(runDir: string, authorization: string): boolean {
  const dir = resolve(runDir, 'nats');
  writePrivateFile(join(dir, AUTH_FILE), authorization);
  let signalled = false;
  for (const f of readdirSync(dir).filter((n) => /^nats-server-\d+\.pid$/.test(n))) {
    const pid = Number(readFileSync(join(dir, f), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0 || !isNatsServer(pid)) continue;
    process.kill(pid, 'SIGHUP');
    signalled = true;
  }
  return signalled;
}

/** Whether `pid` is a live nats-server (not a recycled pid of some other program). */
function isNatsServer(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith('nats-server');
  } catch {
    return processAlive(pid);
  }
}

/** Resolves when the server at `port` sends its INFO line; rejects if it exits or the deadline passes. */
async function waitForGreeting(
  host: string,
  port: number,
  child: ChildProcess,
  exited: Promise<void>,
  log: () => string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  while (Date.now() < deadline) {
    if (dead) throw new NatsServerError(`nats-server exited during start (code ${child.exitCode}): ${lastLine(log())}`);
    if (await greets(host, port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new NatsServerError(`nats-server did not accept connections on ${host}:${port} within ${timeoutMs} ms: ${lastLine(log())}`);
}

function greets(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = tcpConnect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      res(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('error', () => done(false));
    s.once('data', (d) => done(d.toString().startsWith('INFO ')));
  });
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Whether process `pid` still exists (one that is gone, or never was, is not). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? '(no output)';
}
