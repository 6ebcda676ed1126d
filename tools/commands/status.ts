/**
 * `charon status`: asks a run's coordinator for its devices: state, heartbeat age, memory, speed.
 */
import { resolve } from 'node:path';
import { CliError, flag, num, parseCommandArgs, requireStr, str } from '../args.ts';
import { OBSERVER, readSeed } from '../../src/security/credentials.ts';
import { tlsOption } from '../../src/security/certs.ts';
import { Bus } from '../../src/bus/index.ts';
import { ask } from '../../src/runtime/inbox.ts';
import { statusReply, type StatusReply } from '../../src/runtime/messages.ts';

export const summary = "show a run's phase and its devices: state (joining, leaving), role, step, phase, heartbeat age, memory, speed";

const usage = `usage: charon status --nats URL --run RUN [--creds FILE] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
                     [--timeout-ms N] [--json]

  --nats URL        NATS server of the run
  --run RUN         run name
  --creds FILE      read-only credentials of an authenticated bus (<run-dir>/creds/observer.nk)
  --tls-ca FILE     the run's CA (<run-dir>/tls/ca.pem) when its bus requires TLS
  --tls-cert FILE   with --tls-key: a client certificate of the run for mutual TLS
                    (<run-dir>/tls/clients/observer.pem and .key)
  --timeout-ms N    how long to wait for the coordinator (default 3000)
  --json            print the coordinator's status document`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      nats: { type: 'string' },
      run: { type: 'string' },
      creds: { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'timeout-ms': { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const nats = requireStr(args, 'nats');
  const runName = requireStr(args, 'run');
  const timeoutMs = num(args, 'timeout-ms', 3000, { integer: true, min: 1 });
  const creds = str(args, 'creds');
  const tls = (() => {
    try {
      return tlsOption(str(args, 'tls-ca'), str(args, 'tls-cert'), str(args, 'tls-key'));
    } catch (err) {
      throw new CliError((err as Error).message);
    }
  })();
  let bus: Bus;
  try {
    const seed = creds === undefined ? undefined : readSeed(resolve(creds));
    bus = await Bus.connect({
      servers: nats,
      name: `status-${process.pid}`,
      identity: OBSERVER,
      run: runName,
      seed,
      tls,
      timeoutMs,
      maxReconnectAttempts: 0,
    });
  } catch (err) {
    throw new CliError((err as Error).message, 1);
  }
  let status: StatusReply;
  try {
    status = await ask(bus, bus.subjects.coordStatus(), 'status', {}, statusReply, timeoutMs);
  } catch (err) {
    throw new CliError(`run '${runName}' on ${nats}: no coordinator answered (${(err as Error).message})`, 1);
  } finally {
    await bus.close();
  }
  if (flag(args, 'json')) {
    process.stdout.write(JSON.stringify(status) + '\n');
    return 0;
  }
  const rows = [['device', 'state', 'role', 'step', 'phase', 'alive', 'heartbeat', 'memory', 'budget', 'GFLOP/s', 'backend', 'pid@host']];
  const joining = new Set(status.elastic?.joining ?? []),
    leaving = new Set(status.elastic?.leaving ?? []);
  for (const d of status.devices) {
    rows.push([
      d.name,
      joining.has(d.name) ? `${d.state} (joining)` : leaving.has(d.name) ? `${d.state} (leaving)` : d.state,
      d.role ?? '-',
      d.step < 0 ? '-' : String(d.step),
      d.phase ?? '-',
      d.alive ? 'yes' : 'no',
      `${(d.heartbeatAgeMs / 1000).toFixed(1)} s ago`,
      `${(d.memoryBytes / 2 ** 20).toFixed(0)} MB`,
      d.memoryMb === null ? 'topology' : `${d.memoryMb} MB`,
      d.matmulGflops === null ? '-' : d.matmulGflops.toFixed(1),
      d.backend,
      `${d.pid}@${d.host}`,
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write(
    `run ${status.run}: ${status.state}${status.runPhase ? ` (training: ${status.runPhase})` : ''}, ${status.devices.filter((d) => d.alive).length}/${status.devices.length} devices alive\n`,
  );
  for (const r of rows)
    process.stdout.write(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd() + '\n',
    );
  if (joining.size) process.stdout.write(`joining at the next step boundary: ${[...joining].join(', ')}\n`);
  if (leaving.size) process.stdout.write(`leaving once their work is handed over: ${[...leaving].join(', ')}\n`);
  const rejected = Object.entries(status.rejected).filter(([, n]) => n > 0);
  if (rejected.length) process.stdout.write(`rejected messages: ${rejected.map(([r, n]) => `${r} ${n}`).join(', ')}\n`);
  return 0;
}
