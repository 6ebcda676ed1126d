/**
 * The compute thread of `charon device` (src/runtime/compute-worker.ts): loads the tensor backend,
 * opens its own bus connection for the data plane (stage activations and gradients, all-reduce
 * chunks, cache entries), and serves the training control kinds with the stage handlers and the
 * device's cache actor. The main thread keeps the control plane: registration, heartbeats, the
 * device machine, control requests.
 */
import { workerData } from 'node:worker_threads';
import { Bus, type MessageLimits } from '../src/bus/index.ts';
import { PRE_JOIN_LIMITS } from '../src/plan/message-limits.ts';
import type { ClientTls } from '../src/security/certs.ts';
import { systemClock } from '../src/runtime/clock.ts';
import { serveCompute, type ComputeHandler } from '../src/runtime/compute-worker.ts';
import { SimulatedDevice } from '../src/runtime/simulation.ts';
import type { CtlDevice } from '../src/runtime/ctl.ts';
import { initBackend, measureMatmulGflops, type BackendChoice } from '../src/model/backend.ts';
import { tensorBytes } from '../src/engine/index.ts';
import { probeWork, type ProbeRequest } from '../src/engine/probe.ts';
import { measureLinks, serveLinkProbe } from '../src/runtime/link-probe.ts';
import type { LinkProbeRequest } from '../src/runtime/messages.ts';
import { trainingCtl } from '../actors/stage/actor.ts';
import { CacheActor } from '../actors/cache/actor.ts';

/** What the main thread hands the worker (workerData.options). */
export interface DeviceWorkerOptions {
  nats: string;
  run: string;
  name: string;
  /** The device's NATS user seed (handed over in memory, never on a command line). */
  seed?: string;
  /** The run's CA, when the bus requires TLS. */
  tls?: ClientTls;
  backend?: BackendChoice;
  slowdown: number;
  bandwidthMbps: number | null;
  /** The device's activation cache folder (spill tier). */
  cacheDir: string;
}

/** What the worker reports once ready. */
export interface DeviceWorkerInfo {
  backend: string;
  backendDetail: string;
}

const o = (workerData as { options: DeviceWorkerOptions }).options;
const log = (line: string) => process.stderr.write(`[${o.name}] ${line}\n`);

await serveCompute(async () => {
  const info = await initBackend(o.backend);
  log(`backend ${info.detail}`);
  const bus = await Bus.connect({
    servers: o.nats,
    name: `${o.name}-compute`,
    identity: o.name,
    run: o.run,
    seed: o.seed,
    tls: o.tls,
    reassembly: { maxMessageBytes: PRE_JOIN_LIMITS.maxMessageBytes, maxBytes: PRE_JOIN_LIMITS.reassemblyBytes },
  });
  const device: CtlDevice = {
    name: o.name,
    sim: new SimulatedDevice({ slowdown: o.slowdown, bandwidthMbps: o.bandwidthMbps }, systemClock),
    bus: () => bus,
  };
  const ctl = trainingCtl({
    log,
    cacheDir: o.cacheDir,
    // The stage handlers' activation cache is this device's cache actor (serves cache.<name>.put).
    openCache: (d, c) => new CacheActor({ ...c, bus: d.bus(), device: d.name, throttle: (bytes, send) => d.sim.send(bytes, send) }),
  });
  const handlers: Record<string, ComputeHandler> = Object.fromEntries(
    Object.entries(ctl).map(([kind, h]) => [kind, (args: unknown) => h(args, device)]),
  );
  handlers.measure = () => measureMatmulGflops(512, 3);
  handlers.memory = () => tensorBytes();
  handlers.probe = (req: unknown) => probeWork(req as ProbeRequest);
  handlers.limits = (limits: unknown) => bus.limitMessages(limits as MessageLimits);
  // Link rates are measured on this connection, through the simulated link, as tensors travel.
  serveLinkProbe(bus);
  handlers.links = (req: unknown) => measureLinks(bus, req as LinkProbeRequest, (bytes, send) => device.sim.send(bytes, send));
  handlers.close = async () => {
    await ctl.finish?.({}, device);
    await bus.close();
  };
  const result: DeviceWorkerInfo = { backend: info.name, backendDetail: info.detail };
  return { info: result, handlers };
});
