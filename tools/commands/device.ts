/**
 * `charon device`: one device process. Joins the run on the given NATS server, registers,
 * profiles, heartbeats, serves control requests; SIGTERM/SIGINT drain it gracefully.
 */
import { CliError, flag, num, parseCommandArgs, requireStr, str } from '../args.ts';
import { checkToken } from '../../src/bus/index.ts';
import { startDevice } from '../../actors/device/actor.ts';
import { trainingCtl } from '../../actors/stage/actor.ts';
import { CacheActor } from '../../actors/cache/actor.ts';

export const summary = 'run one device of a run: register, profile, heartbeat, serve control requests';

const usage = `usage: charon device --nats URL --run RUN --name NAME [--backend wasm|cpu|tensorflow] [--memory-mb N]
                     [--slowdown F] [--bandwidth-mbps R] [--json]

  --nats URL           NATS server of the run (e.g. nats://host:4222)
  --run RUN            run name (the topology's "run")
  --name NAME          this device's name, unique in the run (letters, digits, '-', '_')
  --backend B          compute backend (default: best available: tensorflow, wasm, cpu)
  --memory-mb N        memory budget offered to the planner (default 2048)
  --slowdown F         simulation: stretch compute F times (>= 1, default 1)
  --bandwidth-mbps R   simulation: cap outgoing traffic at R Mbit/s
  --json               on exit print {"device","state","error"?,"rejected"} on stdout
SIGTERM or SIGINT drains the device (finishes work, leaves the run) and exits 0.`;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(argv, {
    nats: { type: 'string' }, run: { type: 'string' }, name: { type: 'string' }, backend: { type: 'string' },
    'memory-mb': { type: 'string' }, slowdown: { type: 'string' }, 'bandwidth-mbps': { type: 'string' }, json: { type: 'boolean' },
  }, usage);
  if (!args) return 0;
  const nats = requireStr(args, 'nats');
  const runName = requireStr(args, 'run');
  const name = requireStr(args, 'name');
  try {
    checkToken('run', runName);
    checkToken('device', name);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const backend = str(args, 'backend');
  if (backend !== undefined && !['wasm', 'cpu', 'tensorflow'].includes(backend)) throw new CliError(`--backend must be wasm, cpu or tensorflow, got '${backend}'`);
  const memoryMb = num(args, 'memory-mb', 2048, { min: 1 });
  const slowdown = num(args, 'slowdown', 1, { min: 1 });
  const bw = str(args, 'bandwidth-mbps');
  const bandwidthMbps = bw === undefined ? null : num(args, 'bandwidth-mbps', 0, { min: Number.MIN_VALUE });
  const log = (line: string) => process.stderr.write(`[${name}] ${line}\n`);

  // Loading the backend blocks the event loop for a while, so it happens before the device
  // registers and its heartbeats start.
  const { initBackend, measureMatmulGflops } = await import('../../src/model/backend.ts');
  const info = await initBackend(backend as 'wasm' | 'cpu' | 'tensorflow' | undefined);
  log(`backend ${info.detail}`);

  const device = startDevice({
    nats, run: runName, name, memoryMb, slowdown, bandwidthMbps, log,
    // The stage handlers' activation cache is this device's cache actor (serves cache.<name>.put).
    ctl: trainingCtl({
      log,
      openCache: (d, o) => new CacheActor({ ...o, bus: d.bus(), device: d.name, throttle: (bytes, send) => d.sim.send(bytes, send) }),
    }),
    requestTimeoutMs: 10_000,
    compute: {
      backend: info.name,
      backendDetail: info.detail,
      measureMatmulGflops: () => measureMatmulGflops(512, 3),
      memoryBytes: () => process.memoryUsage().rss,
    },
  });
  const onSignal = (sig: string) => () => device.drain(sig);
  process.on('SIGTERM', onSignal('SIGTERM'));
  process.on('SIGINT', onSignal('SIGINT'));
  // Spawned by `charon launch` with a pipe on stdin: the launcher's death closes it.
  if (process.env.CHARON_EXIT_WITH_PARENT === '1') {
    process.stdin.on('end', () => device.drain('launcher gone'));
    process.stdin.resume();
  }
  const final = await device.done;
  process.stdin.pause();
  const error = final.context.error;
  if (error) log(`failed: ${error}`);
  if (flag(args, 'json')) process.stdout.write(JSON.stringify({ device: name, state: String(final.value), ...(error ? { error } : {}), rejected: device.rejected() }) + '\n');
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  return final.value === 'stopped' ? 0 : 1;
}
