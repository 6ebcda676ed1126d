/**
 * `charon launch TOPOLOGY`: parses the command line, runs the topology through launchRun
 * (actors/coordinator/launch.ts) and prints progress as text or line-delimited JSON events.
 */
import { join, resolve } from 'node:path';
import { CliError, flag, onePositional, parseCommandArgs, str } from '../args.ts';
import { topologyArg } from '../topology-args.ts';
import { externalServer, launchRun } from '../../actors/coordinator/launch.ts';
import { specFromTopology, type RunSpec } from '../../src/train/run-spec.ts';
import { readResumeState, ResumeError } from '../../actors/coordinator/resume.ts';
import type { PersistedRun } from '../../actors/coordinator/run-machine.ts';
import { loadProfile, ProfileError, type Profile } from '../../src/plan/profile.ts';
import { RunRecorder } from '../../actors/coordinator/run-record.ts';
import { dashboardAddress, DashboardError, startDashboard, withOptionalValue, type Dashboard } from '../../src/report/dashboard.ts';
import { writeReport } from '../../src/report/html.ts';
import { progressMode, RunProgress } from '../progress.ts';

export const summary = 'run a topology: private nats-server, coordinator, one process per local device';

const usage = `usage: charon launch TOPOLOGY [--nats URL] [--run-dir DIR | --resume RUN_DIR] [--profile FILE] [--until registered|interrupted]
                      [--keep-cache] [--monitor] [--dashboard [PORT]] [--json]

  TOPOLOGY          a topology file (see topologies/)
  --nats URL        use this NATS server (default: the topology's bus.url; with bus.embedded,
                    a private nats-server on loopback)
  --run-dir DIR     run directory (default runs/<run>-<time>): nats store, device logs
  --resume RUN_DIR  continue the interrupted run in RUN_DIR from its last committed step (state.json
                    and checkpoints/latest; same topology settings, more epochs allowed); activation
                    caches lost with the old processes are recomputed
  --profile FILE    plan with this profile (src/plan/profile.ts schema; its devices must be the
                    topology's) instead of the one measured from the devices
  --until registered  exit 0 once every device of the topology has registered (no training)
  --until interrupted run (no training) until Ctrl-C (SIGINT) or SIGTERM
  --keep-cache      keep the local devices' activation caches (<run-dir>/<cache dir>) after the run;
                    by default they are deleted when the run ends (and, after a crash, at the next start)
  --monitor         open the embedded nats-server's HTTP monitoring port on loopback (its URL in
                    the LAUNCHED event); closed by default
  --dashboard [PORT] serve a live dashboard of the run on http://127.0.0.1:PORT/ (read-only; PORT
                    omitted or 0: a free port; HOST:PORT with a loopback HOST); its URL is printed
  --json            line-delimited JSON events on stdout instead of progress (one object per event:
                    {"event": "step", "type": "STEP_DONE", "epoch", "step", "loss", "samples", ...})
On a terminal, progress is a bar per epoch (samples, steps/s, loss, ETA) under a line of device
states, with events printed above; otherwise one line per event on stderr.
Without --until, trains once every device has registered (profile, plan, pipeline epoch, cache
redistribution, cached epochs), writes summary.json, metrics.jsonl and checkpoints into the run
directory, and the run report (report.html, report/*.svg; \`charon report RUN_DIR\` rebuilds it), prints its path on stdout (in the final STOPPED event with --json) and exits 0;
the coordinator runs as a process of its own (log: <run-dir>/logs/coordinator.log): when it dies,
a standby coordinator takes the live devices over and continues from the last committed step.
Ctrl-C stops the run and leaves nothing behind. Remote devices join with
  charon device --nats URL --run RUN --name NAME --creds FILE [--tls-ca FILE]`;

/** One progress line for a terminal. */
function describeEvent(e: Record<string, unknown>): string {
  const d = e.device as string | undefined;
  switch (e.type) {
    case 'LAUNCHED':
      return `run ${e.run}: nats ${e.nats}${e.tlsCa ? ` (TLS, CA ${e.tlsCa})` : ''}, run dir ${e.runDir}`;
    case 'DEVICE_SPAWNED':
      return `${d}: process ${e.pid} started`;
    case 'DEVICE_JOINED':
      return `${d}: ${e.rejoin ? 'rejoined' : 'joined'} (${e.backend}, ${e.memoryMb} MB, pid ${e.pid} on ${e.host})`;
    case 'DEVICE_PROFILED':
      return `${d}: ${(e.matmulGflops as number).toFixed(1)} GFLOP/s`;
    case 'DEVICE_LOST':
      return `${d}: LOST (${e.reason ?? `silent ${e.silentMs} ms`})`;
    case 'JOIN_REFUSED':
      return `${d}: join refused: ${e.reason}`;
    case 'DEVICE_LEAVING':
      return `${d}: leaving (${e.reason}); handing its work over at the next step boundary`;
    case 'DEVICE_DISMISSED':
      return `${d}: handed over, told to drain`;
    case 'STEP_EXPIRED':
      return `epoch ${e.epoch} step ${e.step}: not done by its deadline, replaying it (attempt ${(e.attempt as number) + 1})`;
    case 'DEVICE_LEFT':
      return `${d}: left (${e.reason})`;
    case 'DEVICE_RESTARTING':
      return `${d}: restarting in ${e.delayMs} ms (${e.error})`;
    case 'ASSEMBLED':
      return `all devices up: ${(e.devices as string[]).join(', ')}`;
    case 'RUN_PLANNED':
      return `plan: ${(e.stages as { from: number; to: number; devices: string[] }[]).map((s) => `layers ${s.from}..${s.to} on ${s.devices.join('+')}`).join(' | ')}, ${e.microBatches} micro-batches, predicted step ${(e.predictedStepMs as number).toFixed(0)} ms`;
    case 'SHARES_TUNED': {
      const groups = e.groups as string[][],
        rows = e.rows as number[][],
        ms = e.msPerRow as Record<string, number>;
      const each = groups.flatMap((g, s) =>
        g.length > 1 ? [g.map((d, r) => `${d} ${rows[s]![r]} (${ms[d]?.toFixed(1)} ms/row)`).join(', ')] : [],
      );
      return `step ${e.step}: rows re-balanced by measured compute: ${each.join(' | ')}`;
    }
    case 'RUN_DEPLOYED':
      return `plan deployed (generation ${e.generation}) on ${Object.keys(e.devices as object).join(', ')}${(e.kept as string[] | undefined)?.length ? `; kept their loaded layers: ${(e.kept as string[]).join(', ')}` : ''}`;
    case 'RUN_RELOADED':
      return `cached-phase workers reloaded (generation ${e.generation}) on ${(e.devices as string[]).join(', ')}`;
    case 'STEP_DONE':
      return `epoch ${e.epoch} step ${e.step} (${e.phase}): loss ${(e.loss as number).toFixed(4)}, ${(e.seconds as number).toFixed(2)} s`;
    case 'EPOCH_DONE':
      return `epoch ${e.epoch} done (${e.phase}): mean loss ${(e.loss as number).toFixed(4)}${typeof e.accuracy === 'number' ? `, accuracy ${(e.accuracy * 100).toFixed(1)}%` : ''}, ${(e.seconds as number).toFixed(1)} s, ${e.bytes} bytes sent`;
    case 'REDISTRIBUTED':
      return `cache redistributed: ${e.bytes} bytes in ${(e.seconds as number).toFixed(2)} s, shards ${JSON.stringify(e.shards)}`;
    case 'RECOVERING': {
      const lost = e.lost as string[];
      return `${lost.length > 0 ? `recovering: lost ${lost.join(', ')}; aborting the step in flight and ` : 'at a step boundary: '}re-planning over ${(e.devices as string[]).join(', ')}`;
    }
    case 'COORDINATOR_SPAWNED':
      return `coordinator: process ${e.pid} started${e.standby ? ' (standby)' : ''}`;
    case 'COORDINATOR_STARTED':
      return `coordinator epoch ${e.epoch} at work (pid ${e.pid})${e.resumedFromStep !== undefined ? `, continuing after step ${e.resumedFromStep}` : ''}`;
    case 'COORDINATOR_LOST':
      return `coordinator LOST (${e.reason}); a successor takes over`;
    case 'DEVICE_ADOPTED':
      return `${d}: taken over by the new coordinator (pid ${e.pid}, was ${e.was})`;
    case 'DEVICE_EXITED':
      return `${d}: ${e.reason}`;
    case 'RUN_RESUMED':
      return `resumed after step ${e.step} (epoch ${e.epoch}, step ${(e.stepInEpoch as number) + 1} of it next)`;
    case 'CACHE_REFILLED':
      return `cache refilled: ${e.samples} samples recomputed through the backbone in ${(e.seconds as number).toFixed(2)} s`;
    case 'RUN_FINISHED':
      return `run finished: ${e.runDir}`;
    case 'RUN_FAILED':
      return `run FAILED: ${e.error}`;
    case 'DASHBOARD':
      return `live dashboard: ${e.url}`;
    case 'REPORT':
      return `run report: ${e.path}`;
    case 'STOPPED':
      return `stopped (${e.reason})${e.error ? `: ${e.error}` : ''}`;
    default:
      return `${e.type}${d ? ` ${d}` : ''} ${JSON.stringify(e)}`;
  }
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    withOptionalValue(argv, '--dashboard', '0'),
    {
      nats: { type: 'string' },
      'run-dir': { type: 'string' },
      resume: { type: 'string' },
      profile: { type: 'string' },
      until: { type: 'string' },
      json: { type: 'boolean' },
      'keep-cache': { type: 'boolean' },
      monitor: { type: 'boolean' },
      dashboard: { type: 'string' },
    },
    usage,
  );
  if (!args) return 0;
  const file = onePositional(args, 'TOPOLOGY');
  const until = str(args, 'until');
  if (until !== undefined && until !== 'registered' && until !== 'interrupted')
    throw new CliError(`--until must be 'registered' or 'interrupted', got '${until}'`);
  const topology = topologyArg(file);
  let spec: RunSpec | undefined;
  if (until === undefined) {
    try {
      spec = specFromTopology(topology);
    } catch (err) {
      throw new CliError((err as Error).message);
    }
  }
  const resumeDir = str(args, 'resume');
  let resume: PersistedRun | undefined;
  if (resumeDir !== undefined) {
    if (until !== undefined) throw new CliError('--resume continues training; it cannot be combined with --until');
    if (str(args, 'run-dir') !== undefined) throw new CliError('--resume RUN_DIR is the run directory; do not give --run-dir too');
    try {
      resume = readResumeState(resolve(resumeDir), spec!);
    } catch (err) {
      if (err instanceof ResumeError) throw new CliError(err.message);
      throw err;
    }
  }
  const profileFile = str(args, 'profile');
  let profile: Profile | undefined;
  if (profileFile !== undefined) {
    try {
      profile = loadProfile(profileFile);
    } catch (err) {
      if (err instanceof ProfileError) throw new CliError(err.message);
      throw err;
    }
    const want = topology.devices
        .map((d) => d.name)
        .sort()
        .join(', '),
      have = profile.devices
        .map((d) => d.name)
        .sort()
        .join(', ');
    if (want !== have) throw new CliError(`${profileFile}: devices [${have}] are not the topology's [${want}]`);
  }
  const dashboardAt = str(args, 'dashboard');
  let listen: { host: string; port: number } | undefined;
  try {
    listen = dashboardAt === undefined ? undefined : dashboardAddress(dashboardAt);
  } catch (err) {
    if (err instanceof DashboardError) throw new CliError(err.message);
    throw err;
  }
  const json = flag(args, 'json');
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runDir = resolve(resumeDir ?? str(args, 'run-dir') ?? join('runs', `${topology.run}-${stamp}`));
  const progress = new RunProgress({ mode: progressMode(json), describe: describeEvent, runDir, training: spec });
  const print = (e: Record<string, unknown>) => progress.event(e);
  const recorder = new RunRecorder(runDir);
  let dashboard: Dashboard | undefined;
  if (listen) {
    try {
      dashboard = await startDashboard({
        recorder,
        ...listen,
        ...(spec ? { epochs: spec.epochs, stepsPerEpoch: Math.ceil(spec.samples / spec.batch) } : {}),
      });
    } catch (err) {
      if (err instanceof DashboardError) throw new CliError(err.message, 1);
      throw err;
    }
    print({ type: 'DASHBOARD', at: Date.now(), source: 'launch', url: dashboard.url });
  }
  let outcome: { code: number; reason: string; error?: string };
  try {
    outcome = await launchRun(
      topology,
      {
        nats: externalServer(topology, str(args, 'nats')),
        runDir,
        keepCache: flag(args, 'keep-cache'),
        monitor: flag(args, 'monitor'),
        onEvent: (e) => {
          recorder.event(e);
          print(e);
        },
        ...(spec ? { spec } : {}),
        ...(until === undefined
          ? {
              coordinatorProcess: {
                topologyFile: resolve(file),
                profileFile: profileFile && resolve(profileFile),
                resume: resume !== undefined,
              },
            }
          : {}),
      },
      async (ctx) => {
        recorder.watch(ctx.bus);
        // --until runs keep the coordinator in this process; a training run's is a supervised process.
        const goal =
          until === 'registered'
            ? ctx.coordinator!.whenAssembled().then(() => 'registered')
            : until === 'interrupted'
              ? new Promise<string>(() => {})
              : ctx.coordinatorProcess!.done.then(() => 'trained');
        try {
          const reason = await Promise.race([goal, ctx.interrupted, ctx.failure]);
          return { code: 0, reason };
        } catch (err) {
          // A terminal's Ctrl-C signals the devices too, and one may leave, failing the run, before
          // this process has handled its own SIGINT. That signal is pending by then and handled in
          // the same event-loop turn: the run failed on its own only if no interrupt came with it.
          const interruptedBy = await Promise.race([ctx.interrupted, new Promise<null>((res) => setImmediate(res, null))]);
          if (interruptedBy) return { code: 0, reason: interruptedBy };
          throw err;
        } finally {
          goal.catch(() => {});
        }
      },
    );
  } catch (err) {
    outcome = { code: 1, reason: 'error', error: (err as Error).message };
  }
  recorder.stop();
  reportRun(runDir, outcome.reason, print);
  await dashboard?.close();
  print({
    type: 'STOPPED',
    at: Date.now(),
    source: 'launch',
    reason: outcome.reason,
    runDir,
    ...(outcome.error ? { error: outcome.error } : {}),
  });
  progress.close();
  if (outcome.error) process.stderr.write(`charon launch: ${outcome.error}\n`);
  else if (outcome.reason === 'trained' && !json) process.stdout.write(`${runDir}\n`);
  return outcome.code;
}

/** Writes the run report into `runDir` (when the run got far enough to have one) and says where. */
function reportRun(runDir: string, reason: string, print: (e: Record<string, unknown>) => void): void {
  try {
    const path = writeReport(runDir);
    print({ type: 'REPORT', at: Date.now(), source: 'launch', path });
  } catch (err) {
    // An --until run, or one stopped before it wrote anything, has no run to report.
    if (reason === 'trained') process.stderr.write(`charon launch: report: ${(err as Error).message}\n`);
  }
}
