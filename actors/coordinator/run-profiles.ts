/**
 * What the run knows of its devices for planning and for summary.json: each device's own report
 * (registration hello, profiling timings) over the topology's defaults, the links between them
 * measured over the bus (link-survey.ts; each link once per run) and a `--profile` file's entries
 * for the devices it lists.
 */
import type { Bus } from '../../src/bus/index.ts';
import type { ModelConfig } from '../../src/model/types.ts';
import { linkCost, type Profile } from '../../src/plan/profile.ts';
import { messageSizes } from '../../src/plan/message-limits.ts';
import { linkReport, measuredProfile, methodShape, modelShape, withTimings } from '../../src/plan/device-profile.ts';
import type { Topology } from '../../src/topology/schema.ts';
import type { RunSpec } from '../../src/train/run-spec.ts';
import { LinkSurvey, linkProbeSize } from './link-survey.ts';
import type { DeviceRegistry } from './registry.ts';
import { survivorsProfile } from './run-faults.ts';
import type { MeasuredDevice } from './run-summary.ts';

/** A device that offers no budget and that the topology does not list gets this much (MiB), as `charon device` once defaulted to. */
const DEFAULT_DEVICE_MEMORY_MB = 2048;

export interface RunProfilesDeps {
  bus: Bus;
  registry: DeviceRegistry;
  topology: Topology;
  config: ModelConfig;
  /** Plan with this profile for the devices it lists (`--profile FILE`). */
  profile?: Profile;
  emit(type: string, fields: Record<string, unknown>): void;
}

export class RunProfiles {
  /** The links between the run's devices, measured over the bus when first profiled (the same sizes for the whole run). */
  private survey: LinkSurvey | undefined;
  private readonly specOf: Map<string, Topology['devices'][number]>;

  constructor(private readonly deps: RunProfilesDeps) {
    this.specOf = new Map(deps.topology.devices.map((d) => [d.name, d]));
  }

  /** A device's matmul rate as it measured it at registration (GFLOP/s; 0 when unknown). */
  gflops(device: string): number {
    return this.deps.registry.get(device)?.matmulGflops ?? 0;
  }

  /** Whether the `--profile` file lists `device`. */
  pinned(device: string): boolean {
    return this.deps.profile?.devices.some((p) => p.name === device) ?? false;
  }

  /** Measures the links among `devices` not measured yet; those between two devices the `--profile` file lists are the file's. */
  async surveyLinks(devices: string[], spec: RunSpec, signal: AbortSignal): Promise<void> {
    const { config, bus, emit } = this.deps;
    const shape = modelShape(config, spec.seqLen, spec.reduction, 'links', methodShape(spec.method, spec.methodOptions));
    this.survey ??= new LinkSurvey(bus, linkProbeSize(messageSizes(shape, spec.batch).boundary), emit);
    await this.survey.measure(devices, signal, (a, b) => this.pinned(a) && this.pinned(b));
  }

  /**
   * What each device measured and offers. What a device reported of itself (its --memory-mb, its
   * knobs) wins over the topology's defaults: a remote device knows its own budget; local ones
   * were started with the topology's.
   */
  measured(devices: string[]): MeasuredDevice[] {
    const { registry } = this.deps;
    return devices.flatMap((n) => {
      const hello = registry.get(n)?.hello,
        t = this.specOf.get(n);
      if (!hello && !t) return [];
      const cap = hello ? hello.bandwidthMbps : (t!.bandwidthMbps ?? null);
      const out = this.survey ? this.survey.links(devices).filter((l) => l.from === n) : [];
      const slowest = out.length ? Math.min(...out.map((l) => l.mbps)) : null;
      return [
        {
          name: n,
          matmulGflops: this.gflops(n),
          memoryMb: hello?.memoryMb ?? t?.memoryMb ?? DEFAULT_DEVICE_MEMORY_MB,
          slowdown: hello?.slowdown ?? t!.slowdown,
          bandwidthMbps: slowest ?? cap,
          bandwidthSource: slowest !== null ? 'measured' : cap !== null ? 'cap' : null,
          bandwidthCapMbps: cap,
          links: Object.fromEntries(out.map((l) => [l.to, { mbps: l.mbps, latencyMs: l.latencyMs }])),
          backend: registry.get(n)?.backendDetail ?? null,
        },
      ];
    });
  }

  /** Each directed link among `devices`: the rate planned with and where it came from. */
  linksOf(devices: string[]) {
    const { profile } = this.deps;
    return linkReport(
      this.measured(devices).map((d) => ({ name: d.name, bandwidthMbps: d.bandwidthCapMbps })),
      this.survey?.links(devices) ?? [],
      profile?.links.defaultMbps,
    ).map((l) =>
      this.pinned(l.from) && this.pinned(l.to)
        ? { from: l.from, to: l.to, mbps: 8 / (linkCost(profile!, l.from, l.to).msPerByte * 1e3), source: 'profile' as const }
        : l,
    );
  }

  /** The `--profile` file's entries for the devices it lists, measured ones for the others (a device that joined unlisted). */
  profileOf(devices: string[], spec: RunSpec): Profile {
    const { profile } = this.deps;
    if (!profile) return this.measuredFor(devices, spec);
    const known = new Set(profile.devices.map((d) => d.name));
    const listed = survivorsProfile(profile, devices);
    const others = devices.filter((d) => !known.has(d));
    if (others.length === 0) return listed;
    const extra = this.measuredFor(others, spec);
    // Links between a listed device and another are not in the file: measured ones count.
    const unlisted = new Set(others);
    const across = (this.survey?.links(devices) ?? []).filter((l) => unlisted.has(l.from) !== unlisted.has(l.to));
    return {
      ...listed,
      devices: [...listed.devices, ...extra.devices],
      links: { ...listed.links, pairs: [...listed.links.pairs, ...extra.links.pairs, ...across] },
    };
  }

  /** Devices that timed the run's own work are planned by those times, the others by their matmul rate. */
  private measuredFor(devices: string[], spec: RunSpec): Profile {
    const { config, registry } = this.deps;
    return withTimings(
      measuredProfile(
        modelShape(
          config,
          spec.seqLen,
          spec.reduction,
          'preset' in spec.model ? spec.model.preset : spec.model.dir,
          methodShape(spec.method, spec.methodOptions),
        ),
        this.measured(devices).map((d) => ({
          name: d.name,
          matmulGflops: d.matmulGflops,
          memoryBytes: d.memoryMb * 2 ** 20,
          bandwidthMbps: d.bandwidthCapMbps,
        })),
        { batchSize: spec.batch, samples: spec.samples },
        this.survey?.links(devices) ?? [],
      ),
      new Map(
        devices.flatMap((d) => {
          const t = registry.get(d)?.timings;
          return t ? [[d, t] as const] : [];
        }),
      ),
    );
  }
}
