/**
 * How a topology's device becomes a `charon device` process on this host: the command line
 * launch gives each local device (and a chaos `join` its extra device), with the device's
 * backend, native threads, budget and simulation knobs.
 */
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeThreads } from '../../src/native/runtime.ts';
import type { ClientTls } from '../../src/security/certs.ts';
import type { DeviceSpec, Topology } from '../../src/topology/schema.ts';

export const charonBin = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tools', 'charon.js');

/** What a local device's command line needs of its launch. */
export interface DeviceArgsDeps {
  natsUrl: string;
  /** the device's seed file, when the bus is authenticated */
  creds?: string;
  /** the run's CA (and the device's client certificate with mutual TLS), when the bus requires TLS */
  tls?: ClientTls;
  keepCache?: boolean;
  topology: Topology;
  runDir: string;
}

/** The devices launch spawns as processes of its own; the others join with `charon device`. */
export const localDevices = (topology: Topology): DeviceSpec[] => topology.devices.filter((d) => d.local);

/**
 * Native engine threads of the topology's device `spec` started on this host: its `threads`, else
 * CHARON_NATIVE_THREADS, else the host's cores shared evenly among the topology's local devices
 * (more native threads than cores on one host only make its devices wait for each other).
 */
export function deviceThreads(spec: DeviceSpec, topology: Topology): number {
  if (spec.threads !== undefined) return spec.threads;
  if (process.env.CHARON_NATIVE_THREADS) return nativeThreads();
  return Math.max(1, Math.floor(availableParallelism() / Math.max(1, localDevices(topology).length)));
}

/** The `charon device` options that make a process the topology's device `spec` (its backend, threads, budget and simulation knobs). */
export function deviceKnobArgs(spec: DeviceSpec, topology: Topology): string[] {
  return [
    '--backend',
    spec.backend,
    '--threads',
    String(deviceThreads(spec, topology)),
    '--memory-mb',
    String(spec.memoryMb),
    '--slowdown',
    String(spec.slowdown),
    ...(spec.bandwidthMbps !== undefined ? ['--bandwidth-mbps', String(spec.bandwidthMbps)] : []),
  ];
}

/** The command line of the local device process `spec`. */
export function deviceArgs(spec: DeviceSpec, deps: DeviceArgsDeps): string[] {
  return [
    charonBin,
    'device',
    '--nats',
    deps.natsUrl,
    '--run',
    deps.topology.run,
    '--name',
    spec.name,
    ...(deps.creds ? ['--creds', deps.creds] : []),
    ...(deps.tls ? ['--tls-ca', deps.tls.caFile] : []),
    ...(deps.tls?.certFile && deps.tls.keyFile ? ['--tls-cert', deps.tls.certFile, '--tls-key', deps.tls.keyFile] : []),
    ...deviceKnobArgs(spec, deps.topology),
    '--cache-dir',
    join(deps.runDir, deps.topology.training.cache.dir, spec.name),
    ...(deps.keepCache ? ['--keep-cache'] : []),
  ];
}
