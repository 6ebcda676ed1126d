/**
 * `charon coordinator`: the coordinator of a training run as a process of its own, which
 * `charon launch` starts and supervises (actors/coordinator/coordinator-process.ts). Its death
 * leaves the bus and the devices up: the launcher starts another, which takes the live devices
 * over (actors/coordinator/takeover.ts) and continues from the last committed step.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { CliError, flag, onePositional, parseCommandArgs, requireStr, str } from '../args.ts';
import { topologyArg } from '../topology-args.ts';
import { Bus, COORDINATOR, type BusMsg } from '../../src/bus/index.ts';
import { readSeed } from '../../src/security/credentials.ts';
import { tlsOption, type ClientTls } from '../../src/security/certs.ts';
import type { PersistedRun } from '../../actors/coordinator/run-machine.ts';
import { runJoinTerms, specFromTopology } from '../../src/train/run-spec.ts';
import { loadProfile, type Profile } from '../../src/plan/profile.ts';
import { admission, startRunCoordinator } from '../../actors/coordinator/launch.ts';
import { runTraining } from '../../actors/coordinator/run-actor.ts';
import { readResumeState } from '../../actors/coordinator/resume.ts';
import { setCoordinatorEpoch } from '../../actors/coordinator/control.ts';
import {
  adoptLiveDevices,
  dropUncommittedMetrics,
  firstGeneration,
  nextCoordinatorEpoch,
  INTERRUPTED_EXIT,
  ROLL_CALL_MS,
  RUN_FAILED_EXIT,
} from '../../actors/coordinator/takeover.ts';

export const summary = "(started by charon launch) a run's coordinator as its own process";

const usage = `usage: charon coordinator TOPOLOGY --nats URL --run-dir DIR [--resume] [--takeover | --standby] [--profile FILE]
                          [--creds FILE] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]

Started by \`charon launch\`, not by hand (--takeover: a successor, which continues over the
devices that answer its roll call): trains TOPOLOGY's job over the devices on the bus,
writing into DIR. --resume continues from DIR's last committed step (state.json); devices that
are already running are taken over as they are. --standby loads everything, then waits for\n'go' or 'go resume' on stdin. Exits 0 once trained, 3 when the run failed.`;

export async function run(argv: string[]): Promise<number> {
  try {
    return await coordinate(argv);
  } finally {
    // The pipe from the launcher would keep this process alive after any ending, an error's too.
    process.stdin.destroy();
  }
}

async function coordinate(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      nats: { type: 'string' },
      'run-dir': { type: 'string' },
      resume: { type: 'boolean' },
      standby: { type: 'boolean' },
      takeover: { type: 'boolean' },
      profile: { type: 'string' },
      creds: { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
    },
    usage,
  );
  if (!args) return 0;
  const file = onePositional(args, 'TOPOLOGY');
  const nats = requireStr(args, 'nats');
  const runDir = resolve(requireStr(args, 'run-dir'));
  const topology = topologyArg(file);
  let profile: Profile | undefined;
  const credsFile = str(args, 'creds');
  let seed: string | undefined;
  let tls: ClientTls | undefined;
  let resume: PersistedRun | undefined;
  const spec = specFromTopology(topology);
  try {
    const p = str(args, 'profile');
    profile = p === undefined ? undefined : loadProfile(p);
    seed = credsFile === undefined ? undefined : readSeed(resolve(credsFile));
    tls = tlsOption(str(args, 'tls-ca'), str(args, 'tls-cert'), str(args, 'tls-key'));
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const log = (line: string) => process.stderr.write(`[coordinator] ${line}\n`);
  let resuming = flag(args, 'resume');
  const takeover = flag(args, 'takeover') || flag(args, 'standby');
  if (flag(args, 'standby')) {
    // Loaded and waiting: a successor that is ready at once when the coordinator dies.
    const order = await standbyOrder();
    if (order === null) return INTERRUPTED_EXIT;
    resuming = order === 'go resume';
    log(`standby ${process.pid} taking over (${order})`);
  }
  try {
    resume = resuming && existsSync(join(runDir, 'state.json')) ? readResumeState(runDir, spec) : undefined;
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const epoch = nextCoordinatorEpoch(runDir);
  if (resume) {
    const dropped = dropUncommittedMetrics(runDir, resume.step);
    if (dropped) log(`dropped ${dropped} metrics line(s) of steps after the committed step ${resume.step}`);
  }
  const bus = await Bus.connect({ servers: nats, name: COORDINATOR, run: topology.run, seed, tls });
  const terms = runJoinTerms(topology, spec);
  bus.limitMessages(terms.limits);
  setCoordinatorEpoch(bus, epoch);
  const coordinator = startRunCoordinator(bus, topology, terms);
  const adoption = adoptLiveDevices({ bus, coordinator, admit: admission(topology), log });
  // The launcher sees its device processes exit: a lost device needs no heartbeat deadline.
  const exits = bus.subscribe(
    bus.subjects.eventsAll(),
    (env, msg: BusMsg) => {
      const e = env.body as { type?: string; source?: string; device?: unknown; pid?: unknown; reason?: unknown };
      if (msg.sender !== COORDINATOR || e.source !== 'launch' || e.type !== 'DEVICE_EXITED') return;
      if (typeof e.device === 'string' && typeof e.pid === 'number')
        coordinator.registry.exited(e.device, e.pid, String(e.reason ?? 'process exited'));
    },
    // Rejection reports travel on the same subject: taken, not refused as of an unexpected kind.
    { kinds: ['event', 'rejected'] },
  );
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Started with a pipe on stdin: the launcher's death closes it, and then this run is over too.
  process.stdin.on('end', onSignal);
  process.stdin.resume();
  const startedAt = Date.now();
  coordinator.events.emit('COORDINATOR_STARTED', {
    epoch,
    pid: process.pid,
    ...(resume ? { resumedFromStep: resume.step } : {}),
  });
  let code = 0;
  try {
    // A successor continues over the devices that answer its roll call; a first coordinator waits for the topology's.
    const survivors = takeover ? await adoption.rollCall(ROLL_CALL_MS) : [];
    if (takeover) log(`took over ${survivors.length ? survivors.join(', ') : 'no live device'}`);
    const assembled = survivors.length > 0 ? Promise.resolve() : coordinator.whenAssembled();
    await Promise.race([
      assembled,
      new Promise((_, reject) => stop.signal.addEventListener('abort', () => reject(new Error('run interrupted')))),
    ]);
    await runTraining({
      topology,
      bus,
      coordinator,
      runDir,
      profile,
      resume,
      firstGeneration: firstGeneration(epoch),
      ...(survivors.length > 0 ? { expectedDevices: survivors } : {}),
      coordinatorProcess: { epoch, startedAt, resumedFromStep: resume?.step ?? null, adopted: survivors },
      signal: stop.signal,
    });
  } catch (err) {
    if (!stop.signal.aborted) log(`failed: ${(err as Error).message}`);
    code = stop.signal.aborted ? INTERRUPTED_EXIT : RUN_FAILED_EXIT;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdin.pause();
    adoption.stop();
    exits.unsubscribe();
    coordinator.windDown();
    coordinator.stop();
    await bus.close();
  }
  return code;
}

/** The launcher's order to a standby ('go' or 'go resume', a line on stdin); null when it is told to stop instead. */
function standbyOrder(): Promise<string | null> {
  return new Promise((res) => {
    const lines = createInterface({ input: process.stdin });
    const done = (order: string | null) => {
      process.off('SIGINT', stopped);
      process.off('SIGTERM', stopped);
      lines.removeAllListeners();
      lines.close();
      res(order);
    };
    const stopped = () => done(null);
    process.on('SIGINT', stopped);
    process.on('SIGTERM', stopped);
    lines.on('line', (l) => {
      if (l === 'go' || l === 'go resume') done(l);
    });
    lines.on('close', stopped);
  });
}
