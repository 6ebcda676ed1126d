/**
 * Runs a topology under a fault schedule. The runner owns the nats-server (so that it can restart
 * it on the same port) and starts `charon launch --json` against it with `CHARON_CHAOS=1` (the
 * bus fault layer of every process of the run listens on the run's chaos subject) and `TMPDIR`
 * pointed into the run directory (whatever temporary files the run makes are seen there). It
 * reads the launch's events to fire each fault at its point (a step about to run, or seconds into
 * training) and keeps every event with its time: the invariants and recovery figures come from
 * them. Processes the runner starts itself (extra joining devices, the server) are stopped at the
 * end, whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Bus, CHAOS_ENV, startNatsServer, type FaultReport, type FaultRule, type MessageFault, type NatsServer } from '../bus/index.ts';
import type { Topology } from '../topology/schema.ts';
import type { Schedule, ScheduledFault } from './schedule.ts';
import { charonBin, deviceKnobArgs } from '../../actors/coordinator/device-args.ts';

export type RunEventLine = Record<string, unknown> & { type: string; at?: number };

/** One fault as it was fired. */
export interface FiredFault {
  fault: ScheduledFault;
  /** ms since the epoch; null when the run ended before its point came. */
  firedAt: number | null;
  /** The pid it acted on (kill, stop, term, join, coordinator-kill). */
  pid?: number;
  /** Message faults: what the processes reported (matched and hit messages). */
  reports: FaultReport[];
  /** Why it could not act (e.g. the device had no process), if so. */
  error?: string;
}

export interface LaunchRecord {
  code: number;
  events: RunEventLine[];
  stderrTail: string;
  /** Every pid the run had: launch, its coordinator processes, device processes (each start), joined devices, nats-server(s). */
  pids: number[];
}

/** The rule a message fault (drop, delay, duplicate) asks every process of the run to apply; `seed` + its index seeds its draws. */
export function faultRule(k: ScheduledFault & { kind: MessageFault }, seed: number): FaultRule {
  return {
    id: String(k.index),
    action: k.kind,
    subject: k.subject!,
    durationMs: k.durationMs!,
    delayMs: k.delayMs ?? 0,
    probability: k.probability ?? 1,
    seed: seed + k.index,
  };
}

/**
 * The command line of the device process a `join` fault starts as `name`: the topology's device
 * of that name as launch would start it (the first device's settings for a name it does not list).
 */
export function joinArgs(topology: Topology, name: string, natsUrl: string, runDir: string): string[] {
  const spec = topology.devices.find((d) => d.name === name) ?? topology.devices[0]!;
  return [
    charonBin,
    'device',
    '--nats',
    natsUrl,
    '--run',
    topology.run,
    '--name',
    name,
    ...deviceKnobArgs(spec, topology),
    '--cache-dir',
    join(runDir, topology.training.cache.dir, `${name}-joined`),
  ];
}

export interface ChaosRunOptions {
  topologyFile: string;
  topology: Topology;
  schedule: Schedule;
  /** Seeds the message faults' draws (fault i uses seed + i). */
  seed: number;
  runDir: string;
  /** `--profile FILE` for launch (pins the plan). */
  profile?: string;
  log?: (line: string) => void;
}

export interface ChaosRun {
  launch: LaunchRecord;
  fired: FiredFault[];
  /** nats-server connections still open before the server stopped, the runner's own left out. */
  leftoverConnections: { name: string; subscriptions: number }[];
}

/** `charon launch TOPOLOGY --json ...` as a child; `onEvent` sees each event as it arrives. */
export function startLaunch(args: string[], env: NodeJS.ProcessEnv, onEvent: (e: RunEventLine) => void) {
  const child = spawn(process.execPath, [charonBin, 'launch', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const events: RunEventLine[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr = (stderr + d).slice(-8000);
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let e: RunEventLine;
    try {
      e = JSON.parse(line) as RunEventLine;
    } catch {
      return;
    }
    events.push(e);
    onEvent(e);
  });
  const done = new Promise<{ code: number; events: RunEventLine[]; stderrTail: string }>((res) =>
    child.once('close', (code, sig) => res({ code: code ?? (sig ? 128 : -1), events, stderrTail: stderr })),
  );
  return { child, done };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the job of `o.topology` with the schedule's faults; resolves once every process of it is gone. */
export async function runWithFaults(o: ChaosRunOptions): Promise<ChaosRun> {
  const log = o.log ?? (() => {});
  const tmp = join(o.runDir, 'tmp');
  mkdirSync(join(o.runDir, 'logs'), { recursive: true });
  mkdirSync(tmp, { recursive: true });
  let server: NatsServer = await startNatsServer({ runDir: o.runDir, monitoring: true, jetstream: false });
  const port = server.port;
  const pids = new Set<number>([server.pid]);
  const bus = await Bus.connect({ servers: server.url, name: 'chaos', run: o.topology.run, chaos: false });
  const env = { ...process.env, [CHAOS_ENV]: '1', TMPDIR: tmp };
  const fired: FiredFault[] = o.schedule.faults.map((fault) => ({ fault, firedAt: null, reports: [] }));
  bus.subscribe<FaultReport>(
    bus.subjects.chaos('report'),
    (e) => {
      const f = fired[Number(e.body.rule)];
      if (f) f.reports.push(e.body);
    },
    { kinds: ['chaos-report'] },
  );
  const devicePids = new Map<string, number>();
  const joined: ChildProcess[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const stopped = new Set<number>();
  let launchChild: ChildProcess | undefined;
  let coordinatorPid: number | undefined;
  let t0: number | null = null;
  let lastStep = 0;
  let restarting: Promise<void> = Promise.resolve();

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  const signal = (f: FiredFault, pid: number | undefined, sig: NodeJS.Signals): boolean => {
    if (pid === undefined) {
      f.error = `no process for device ${f.fault.device}`;
      return false;
    }
    f.pid = pid;
    try {
      process.kill(pid, sig);
      return true;
    } catch (err) {
      f.error = `${sig} to ${pid}: ${(err as Error).message}`;
      return false;
    }
  };

  const fire = (f: FiredFault) => {
    if (f.firedAt !== null) return;
    const k = f.fault;
    f.firedAt = Date.now();
    log(`fault ${k.index} (${k.source}): ${k.kind}${k.device ? ` ${k.device}` : ''}${k.subject ? ` on ${k.subject}` : ''}`);
    switch (k.kind) {
      case 'kill':
        signal(f, devicePids.get(k.device!), 'SIGKILL');
        break;
      case 'term':
        signal(f, devicePids.get(k.device!), 'SIGTERM');
        break;
      case 'stop': {
        const pid = devicePids.get(k.device!);
        if (signal(f, pid, 'SIGSTOP')) {
          stopped.add(pid!);
          later(k.durationMs!, () => {
            stopped.delete(pid!);
            try {
              process.kill(pid!, 'SIGCONT');
            } catch {
              /* it died meanwhile */
            }
          });
        }
        break;
      }
      case 'coordinator-kill':
        // The coordinator process launch supervises; launch itself (server, devices) stays up.
        signal(f, coordinatorPid ?? launchChild?.pid, 'SIGKILL');
        break;
      case 'join':
        f.pid = joinDevice(k.device!);
        break;
      case 'nats-restart':
        restarting = restarting.then(async () => {
          await server.stop();
          await sleep(k.durationMs ?? 0);
          server = await startNatsServer({ runDir: o.runDir, port, monitoring: true, jetstream: false });
          pids.add(server.pid);
          log(`nats-server back on port ${port} (pid ${server.pid})`);
        });
        break;
      default:
        bus.publish(bus.subjects.chaos('rule'), 'chaos-rule', faultRule({ ...k, kind: k.kind }, o.seed));
    }
  };

  /** A device process the topology's launch did not start: `charon device` under the given name. */
  const joinDevice = (name: string): number | undefined => {
    const logFd = openSync(join(o.runDir, 'logs', `${name}-joined.log`), 'a');
    const child = spawn(process.execPath, joinArgs(o.topology, name, server.url, o.runDir), { stdio: ['ignore', 'ignore', logFd], env });
    closeSync(logFd);
    joined.push(child);
    if (child.pid) pids.add(child.pid);
    return child.pid;
  };

  const onEvent = (e: RunEventLine) => {
    if (e.type === 'DEVICE_SPAWNED' && typeof e.pid === 'number') {
      devicePids.set(e.device as string, e.pid);
      pids.add(e.pid);
    }
    if (e.type === 'COORDINATOR_SPAWNED' && typeof e.pid === 'number') pids.add(e.pid);
    // The coordinator at work (a standby says so once it takes over).
    if (e.type === 'COORDINATOR_STARTED' && typeof e.pid === 'number') coordinatorPid = e.pid;
    if (e.type === 'RUN_DEPLOYED' && t0 === null) {
      t0 = Date.now();
      for (const f of fired) if ('seconds' in f.fault.trigger) later(f.fault.trigger.seconds * 1000, () => fire(f));
      due(1);
    }
    // Any later step's event also fires what is due, should an event have been missed.
    if (e.type === 'STEP_DONE' && typeof e.step === 'number') due(Math.max(lastStep, e.step) + 1);
  };
  const due = (step: number) => {
    lastStep = Math.max(lastStep, step - 1);
    for (const f of fired) if ('step' in f.fault.trigger && f.fault.trigger.step <= step) fire(f);
  };

  const args = [o.topologyFile, '--nats', server.url, '--run-dir', o.runDir, ...(o.profile ? ['--profile', o.profile] : [])];
  const launch = startLaunch(args, env, onEvent);
  launchChild = launch.child;
  if (launch.child.pid) pids.add(launch.child.pid);
  let result: Awaited<typeof launch.done>;
  try {
    result = await launch.done;
    writeFileSync(join(o.runDir, 'events.jsonl'), result.events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  } finally {
    for (const t of timers) clearTimeout(t);
    for (const pid of stopped)
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    await restarting.catch(() => {});
    await Promise.all(joined.map((c) => stopChild(c)));
  }
  // Fault reports of rules that ended with the run arrive as their processes close.
  await sleep(300);
  const leftoverConnections = await openConnections(server, 'chaos');
  await bus.close();
  await server.stop();
  return { launch: { ...result, pids: [...pids] }, fired, leftoverConnections };
}

/** SIGTERM, then SIGKILL after a grace; resolves once the process is gone. */
function stopChild(c: ChildProcess, graceMs = 5000): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
    c.once('exit', () => {
      clearTimeout(t);
      res();
    });
    c.kill('SIGTERM');
  });
}

/**
 * The server's client connections other than `own`, with their subscriptions (its monitoring
 * endpoint). A process that has just exited may still be listed for a moment: asked until
 * none is left or 3 s have passed.
 */
async function openConnections(server: NatsServer, own: string): Promise<{ name: string; subscriptions: number }[]> {
  let left: { name: string; subscriptions: number }[] = [];
  for (let i = 0; i < 15; i++) {
    const r = await fetch(`http://127.0.0.1:${server.httpPort}/connz?subs=1`);
    const body = (await r.json()) as { connections?: { name?: string; num_subscriptions?: number }[] };
    left = (body.connections ?? [])
      .filter((c) => c.name !== own)
      .map((c) => ({ name: c.name ?? '(unnamed)', subscriptions: c.num_subscriptions ?? 0 }));
    if (left.length === 0) return left;
    await sleep(200);
  }
  return left;
}
