/**
 * The coordinator's host: starts a private nats-server on loopback (unless a URL is given; TLS
 * when the topology asks or other hosts can reach it), the
 * coordinator in this process, and one supervised OS process per local device. Ctrl-C, SIGTERM
 * or an error stops everything: device processes are stopped (after Ctrl-C at once, otherwise
 * drained; killed if they linger), subscriptions and the connection drained, the server
 * stopped — nothing is left behind.
 *
 * `launchRun(topology, options, body)` owns setup and teardown; `body` is what the run does once
 * everything is up (training, or just waiting).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, rmSync } from 'node:fs';
import { inside, privateDir } from '../../src/security/files.ts';
import { join } from 'node:path';
import { createActor, fromPromise } from 'xstate';
import { Bus, COORDINATOR, DEFAULT_MAX_PAYLOAD, startNatsServer, type NatsServer } from '../../src/bus/index.ts';
import { credsDir, ensureRunCredentials, OBSERVER, readSeed, seedPath } from '../../src/security/credentials.ts';
import { busNeedsTls, listenAddress, type DeviceSpec, type Topology } from '../../src/topology/schema.ts';
import { ensureClientCertificate, ensureRunCertificates, namesFor, type ClientTls } from '../../src/security/certs.ts';
import { RunEvents } from '../../src/runtime/events.ts';
import { supervisorMachine, type BackoffPolicy, type ChildInput } from '../../src/runtime/supervisor.ts';
import { startCoordinator, type Coordinator } from './actor.ts';
import { runJoinTerms, specFromTopology, type RunSpec } from '../../src/train/run-spec.ts';
import type { JoinTerms } from './registry.ts';
import { deviceArgs, localDevices, type DeviceArgsDeps } from './device-args.ts';
import { profilerArgs, superviseCoordinator, type CoordinatorProcess, type CoordinatorProcessOptions } from './coordinator-process.ts';

/** Restart policy for local device processes. */
export const deviceRestartPolicy: BackoffPolicy = { initialMs: 250, factor: 2, maxMs: 2000, maxRestarts: 3, stableMs: 30_000 };

export interface LaunchOptions {
  nats?: string;
  runDir: string;
  /** keep the local devices' activation caches after the run (default: deleted) */
  keepCache?: boolean;
  /** Open the embedded server's monitoring port (loopback only); closed unless asked for. */
  monitor?: boolean;
  /** Receives every run event (and launch's own). */
  onEvent: (event: Record<string, unknown>) => void;
  /**
   * Run the coordinator as a supervised process of its own (coordinator-process.ts) instead of in
   * this one: it trains the run, and its death (SIGKILL, a crash) leaves the server and the
   * devices up for its successor. Without it, the coordinator lives here and only registers devices.
   */
  coordinatorProcess?: CoordinatorProcessOptions;
  /** The topology's run spec, when the caller has it already (deriving it tokenises text data). */
  spec?: RunSpec;
}

/** What `body` gets: everything that is up. */
export interface LaunchContext {
  topology: Topology;
  bus: Bus;
  natsUrl: string;
  /** The coordinator in this process (absent with `coordinatorProcess`). */
  coordinator?: Coordinator;
  /** The supervised coordinator process (with `coordinatorProcess`). */
  coordinatorProcess?: CoordinatorProcess;
  events: RunEvents;
  /** Rejects when launch must stop because of an error (a device given up on). */
  failure: Promise<never>;
  /** Resolves on SIGINT / SIGTERM with the signal's name. */
  interrupted: Promise<string>;
}

/** Starts the run, runs `body`, then tears everything down, also when `body` or setup throws. */
export async function launchRun<T>(topology: Topology, opts: LaunchOptions, body: (ctx: LaunchContext) => Promise<T>): Promise<T> {
  // What a run writes derives from private data or grants access to the bus: nobody else may read
  // it. The mask is inherited by the device processes, so their files are private too.
  process.umask(0o077);
  privateDir(join(privateDir(opts.runDir), 'logs'));
  // Activation caches left by a run that crashed are of no use (their index lived in memory).
  const caches = cachesDir(opts.runDir, topology);
  rmSync(caches, { recursive: true, force: true });
  const children = new Set<ChildProcess>();
  const supervisors: { stop(): void }[] = [];
  let server: NatsServer | undefined;
  let bus: Bus | undefined;
  let coordinator: Coordinator | undefined;
  let coordinatorProcess: CoordinatorProcess | undefined;
  let standbyWait: (() => void) | undefined;
  let fail!: (err: Error) => void;
  const failure = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failure.catch(() => {});
  let interrupt!: (sig: string) => void;
  const interrupted = new Promise<string>((res) => {
    interrupt = res;
  });
  // The devices are stopped with the signal the launcher got: SIGINT to the launcher alone
  // (kill -INT) stops them as a terminal's Ctrl-C does, abandoning the work in progress (a W1
  // stage load outlasts the kill grace), while SIGTERM and the end of a run let them drain.
  let stopDevicesWith: NodeJS.Signals = 'SIGTERM';
  const onSigint = () => {
    stopDevicesWith = 'SIGINT';
    interrupt('SIGINT');
  };
  const onSigterm = () => interrupt('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  try {
    // The private server is authenticated: every identity gets its own key, and may publish only
    // under its own subjects. An external server (--nats, bus.url) is the user's to secure.
    const authorization = opts.nats
      ? undefined
      : ensureRunCredentials(
          opts.runDir,
          topology.run,
          topology.devices.map((d) => d.name),
          DEFAULT_MAX_PAYLOAD,
        );
    const seedOf = (name: string) => (authorization ? readSeed(seedPath(opts.runDir, name)) : undefined);
    const embedded = embeddedServer(topology, opts.nats);
    const listen = embedded?.listen;
    const tlsFiles = embedded?.tls ? ensureRunCertificates(opts.runDir, listen ? namesFor(listen.host) : []) : undefined;
    const mutual = tlsFiles !== undefined && embedded?.mutual === true;
    const tlsOf = (name: string): ClientTls | undefined =>
      tlsFiles && { caFile: tlsFiles.caFile, ...(mutual ? ensureClientCertificate(opts.runDir, name) : {}) };
    const tls = tlsOf(COORDINATOR);
    if (mutual) ensureClientCertificate(opts.runDir, OBSERVER);
    server = opts.nats
      ? undefined
      : await startNatsServer({
          runDir: opts.runDir,
          monitoring: opts.monitor === true,
          authorization,
          tls: tlsFiles && { ...tlsFiles, verify: mutual },
          ...listen,
        });
    const natsUrl = opts.nats ?? server!.url;
    const terms = runJoinTerms(topology, opts.spec ?? specFromTopology(topology));
    bus = await Bus.connect({ servers: natsUrl, name: COORDINATOR, run: topology.run, seed: seedOf(COORDINATOR), tls });
    bus.limitMessages(terms.limits);
    bus.subscribe(bus.subjects.eventsAll(), (env) => opts.onEvent(env.body as Record<string, unknown>), { kinds: ['event', 'rejected'] });
    const events = new RunEvents(bus, 'launch');
    if (!opts.coordinatorProcess) coordinator = startRunCoordinator(bus, topology, terms);
    events.emit('LAUNCHED', {
      run: topology.run,
      nats: natsUrl,
      runDir: opts.runDir,
      pid: process.pid,
      ...(authorization ? { creds: credsDir(opts.runDir) } : {}),
      ...(tls ? { tlsCa: tls.caFile } : {}),
      ...(server ? { natsPid: server.pid } : {}),
      ...(server?.httpPort ? { monitorUrl: `http://127.0.0.1:${server.httpPort}` } : {}),
      devices: topology.devices.map((d) => ({ name: d.name, local: d.local, ...(d.optional ? { optional: true } : {}) })),
    });
    if (opts.coordinatorProcess) {
      const started = nextEvent(bus, 'COORDINATOR_STARTED');
      coordinatorProcess = superviseCoordinator({
        ...opts.coordinatorProcess,
        natsUrl,
        runDir: opts.runDir,
        creds: authorization ? seedPath(opts.runDir, COORDINATOR) : undefined,
        tls,
        events,
        children,
        stopSignal: () => stopDevicesWith,
      });
      coordinatorProcess.done.catch(fail);
      // Devices register with it: it listens before the first of them starts.
      await Promise.race([started.promise, failure, interrupted]).finally(started.cancel);
      // The standby loads once the first plan is deployed: loading beside the devices while they
      // time their work at profiling would skew the speeds the plan is made from. A coordinator
      // lost before then is replaced by a fresh process.
      const deployed = nextEvent(bus, 'RUN_DEPLOYED');
      standbyWait = deployed.cancel;
      const supervised = coordinatorProcess;
      void deployed.promise.then(() => {
        deployed.cancel();
        supervised.ready();
      });
    }
    for (const spec of localDevices(topology)) {
      supervisors.push(
        superviseDevice(spec, {
          natsUrl,
          creds: authorization ? seedPath(opts.runDir, spec.name) : undefined,
          tls: tlsOf(spec.name),
          keepCache: opts.keepCache,
          topology,
          runDir: opts.runDir,
          children,
          events,
          fail,
          stopSignal: () => stopDevicesWith,
          exited: (pid, reason) =>
            coordinator
              ? coordinator.registry.exited(spec.name, pid, reason)
              : events.emit('DEVICE_EXITED', { device: spec.name, pid, reason }),
        }),
      );
    }
    return await body({ topology, bus, natsUrl, coordinator, coordinatorProcess, events, failure, interrupted });
  } finally {
    standbyWait?.();
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    coordinatorProcess?.stop();
    coordinator?.windDown();
    for (const s of supervisors) s.stop();
    await Promise.all([...children].map((c) => exited(c, 5000)));
    coordinator?.stop();
    await bus?.close();
    await server?.stop();
    if (!opts.keepCache) rmSync(caches, { recursive: true, force: true });
  }
}

interface DeviceDeps extends DeviceArgsDeps {
  children: Set<ChildProcess>;
  events: RunEvents;
  fail: (err: Error) => void;
  stopSignal: () => NodeJS.Signals;
  /** The device's process `pid` ended (not by a clean exit): the run needs no heartbeat deadline to know. */
  exited: (pid: number, reason: string) => void;
}

/** The server a launch of `topology` uses instead of starting its own: `nats` (--nats), else the topology's bus.url. */
export const externalServer = (topology: Topology, nats: string | undefined): string | undefined => nats ?? topology.bus.url;

/**
 * The nats-server launch starts for `topology` (none when `nats`, --nats or bus.url, names one):
 * where it listens (default: loopback, a free port) and whether it requires TLS.
 */
export function embeddedServer(
  topology: Topology,
  nats: string | undefined,
): { listen?: { host: string; port: number }; tls: boolean; mutual: boolean } | undefined {
  if (nats) return undefined;
  // Off this host the bus carries training data over the network: encrypted, and devices
  // verify they speak to the run's server (its certificate signed by the run's own CA).
  const tls = busNeedsTls(topology.bus);
  return {
    ...(topology.bus.listen ? { listen: listenAddress(topology.bus.listen) } : {}),
    tls,
    // Mutual TLS: a connection without a certificate of the run ends before it can say anything.
    mutual: tls && topology.bus.tls === 'mutual',
  };
}

/** Where the local devices of a launch of `topology` in `runDir` keep their activation caches, one folder each. */
export const cachesDir = (runDir: string, topology: Topology): string => inside(runDir, topology.training.cache.dir, 'training.cache.dir');

/** Who may join: the topology's devices, and anyone else only when `elastic.allowUnlisted`. */
export function admission(topology: Topology): (hello: { device: string }) => string | null {
  const listed = new Set(topology.devices.map((d) => d.name));
  return ({ device }) =>
    listed.has(device) || topology.elastic.allowUnlisted
      ? null
      : `device '${device}' is not listed in the topology of run '${topology.run}' (listed: ${[...listed].join(', ')}; ` +
        'a topology with "elastic: { allowUnlisted: true }" lets unlisted devices join)';
}

/** The coordinator of `topology`'s run: waits for its required devices, admits its listed ones, tells each `terms` at join. */
export function startRunCoordinator(bus: Bus, topology: Topology, terms: JoinTerms): Coordinator {
  return startCoordinator({
    bus,
    expected: topology.devices.filter((d) => !d.optional).map((d) => d.name),
    admit: admission(topology),
    joinTerms: terms,
  });
}

/** Runs one local device process under a supervisor (restart with backoff; give up = launch error). */
function superviseDevice(spec: DeviceSpec, deps: DeviceDeps): { stop(): void } {
  const args = deviceArgs(spec, deps);
  const logic = supervisorMachine.provide({
    actors: {
      child: fromPromise<void, ChildInput>(
        ({ input, signal }) =>
          new Promise<void>((resolveChild, rejectChild) => {
            const logFd = openSync(join(deps.runDir, 'logs', `${spec.name}.log`), 'a', 0o600);
            const child = spawn(process.execPath, [...profilerArgs(), ...args], {
              stdio: ['pipe', 'ignore', logFd],
              env: { ...process.env, CHARON_EXIT_WITH_PARENT: '1' },
            });
            closeSync(logFd);
            deps.children.add(child);
            deps.events.emit('DEVICE_SPAWNED', { device: spec.name, pid: child.pid, start: input.start });
            child.once('exit', (code, sig) => {
              deps.children.delete(child);
              if (code !== 0 && child.pid !== undefined)
                deps.exited(child.pid, `process ${child.pid} exited with ${sig ?? `code ${code}`}`);
              if (code === 0) resolveChild();
              else
                rejectChild(
                  new Error(
                    `process ${child.pid} exited with ${sig ?? `code ${code}`} (log: ${join(deps.runDir, 'logs', `${spec.name}.log`)})`,
                  ),
                );
            });
            child.once('error', (err) => rejectChild(err));
            signal.addEventListener('abort', () => {
              child.kill(deps.stopSignal());
            });
          }),
      ),
    },
    actions: {
      reportRestart: (_, p) => {
        deps.events.emit('DEVICE_RESTARTING', { device: spec.name, error: p.error, restart: p.restart, delayMs: p.delayMs });
      },
      reportGiveUp: (_, p) => {
        deps.fail(new Error(`device ${spec.name}: gave up after ${p.restarts} restarts: ${p.error}`));
      },
    },
  });
  const actor = createActor(logic, { input: { policy: deviceRestartPolicy } }).start();
  return { stop: () => actor.send({ type: 'STOP' }) };
}

/** Resolves when `child` has exited; SIGKILLs it after `graceMs`. */
function exited(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      res();
    });
  });
}

/** The first run event of `type` on the bus from now on; `cancel` stops listening. */
function nextEvent(bus: Bus, type: string): { promise: Promise<void>; cancel: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((res) => {
    resolve = res;
  });
  const sub = bus.subscribe(
    bus.subjects.eventsAll(),
    (env) => {
      if ((env.body as { type?: unknown }).type === type) resolve();
    },
    { kinds: ['event', 'rejected'] },
  );
  return { promise, cancel: () => sub.unsubscribe() };
}
