/**
 * `charon chaos TOPOLOGY`: runs the topology's job while injecting a fault schedule, then the
 * same job fault-free, and checks the invariants (src/chaos). Exits 1 when one fails.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, flag, num, onePositional, parseCommandArgs, str } from '../args.ts';
import { readingTopology, topologyArg } from '../topology-args.ts';
import { loadSchedule } from '../../src/chaos/schedule.ts';
import { formatReport, runChaos } from '../../src/chaos/chaos.ts';

export const summary = 'run a topology under injected faults, then fault-free, and check the invariants';

const usage = `usage: charon chaos TOPOLOGY [--faults FILE] [--seed N] [--run-dir DIR] [--profile FILE] [--json]

Runs TOPOLOGY's job with the faults of a schedule (--faults FILE: a YAML list of faults; default:
the topology's chaos: section), then the same job fault-free, and checks: the run completes; every
sample is in exactly one committed step per epoch and no step is committed twice; the final side
network equals the fault-free run's within 1e-5 (relative); no process, server connection,
subscription or temporary file is left behind.

  --faults FILE     the fault schedule (see README, "Chaos")
  --seed N          seeds which messages a message fault with probability < 1 hits (default 1)
  --run-dir DIR     run directory (default runs/<run>-chaos-<time>); the reference run goes in DIR/reference
  --profile FILE    plan both runs with this profile (charon plan --write-profile)
  --json            print the report as one JSON document (it is also written to DIR/chaos.json)`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      faults: { type: 'string' },
      seed: { type: 'string' },
      'run-dir': { type: 'string' },
      profile: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const file = onePositional(args, 'TOPOLOGY');
  const seed = num(args, 'seed', 1, { integer: true, min: 0 });
  const profile = str(args, 'profile');
  if (profile !== undefined && !existsSync(profile)) throw new CliError(`${profile}: no such file`);
  const topology = topologyArg(file);
  const schedule = readingTopology(() => loadSchedule(topology, file, str(args, 'faults')));
  if (topology.bus.url !== undefined)
    throw new CliError(`${file}: bus.url: chaos runs its own nats-server (it restarts it); use bus: { embedded: true }`);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const runDir = resolve(str(args, 'run-dir') ?? join('runs', `${topology.run}-chaos-${stamp}`));
  const json = flag(args, 'json');
  const started = Date.now();
  const report = await runChaos({
    topologyFile: resolve(file),
    topology,
    schedule,
    seed,
    runDir,
    profile: profile === undefined ? undefined : resolve(profile),
    log: (line) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`),
  });
  process.stdout.write(json ? JSON.stringify(report) + '\n' : formatReport(report) + '\n');
  return report.ok ? 0 : 1;
}
