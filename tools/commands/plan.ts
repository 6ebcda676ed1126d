/**
 * `charon plan`: shows the epoch-1 plan (stages, groups, shares, predicted step and epoch time,
 * peak memory, bytes per step) for a topology and/or a profile, optionally replayed by the
 * discrete-event simulator; `--derive` writes an analytic profile for hardware you do not have.
 */
import { writeFileSync } from 'node:fs';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';
import { analyticProfile, devicePresets, modelPresets, type DeviceSpec, type ModelShape } from '../../src/plan/analytic.ts';
import { InfeasiblePlanError, planOptionsForRun, planPipeline, type PlanOptions, type StagePlan } from '../../src/plan/planner.ts';
import { linkCost, loadProfile, parseProfile, ProfileError, selectDevices, type Profile } from '../../src/plan/profile.ts';
import { simulatePlan, type SimulationResult } from '../../src/plan/simulator.ts';
import { loadTopology, TopologyError } from '../../src/topology/load.ts';
import { specFromTopology } from '../../src/train/run-spec.ts';
import { methodShape } from '../../src/plan/device-profile.ts';
import type { Topology } from '../../src/topology/schema.ts';
import { presets, isPresetName } from '../../src/model/presets.ts';

export const summary = 'show the epoch-1 plan (stages, groups, predicted times, memory) for a topology or a profile';

const usage = `usage: charon plan [TOPOLOGY] [--profile FILE] [--devices N] [--batch B] [--samples N]
                   [--micro-batches M] [--simulate] [--json]
       charon plan --derive MODEL --device-spec SPEC --count N [--batch B] [--samples N] --write FILE

Plans epoch 1 (pipeline + data parallel, 1F1B) and prints which profile it used, per stage its
layer range and device group with each device's share of a micro-batch, then the predicted step
and epoch time, peak memory per device and bytes sent per step.

  TOPOLOGY          a topology YAML; its devices, memory budgets, bandwidth caps, batch size,
                    micro-batch count (training.microBatches) and data size are used as
                    'charon launch' uses them
  --profile FILE    per-layer costs (JSON, schema in src/plan/profile.ts); with a topology, its
                    devices are looked up by name and budgets are the smaller of the two.
                    Without --profile the topology's devices must be local and its model a
                    preset: costs are then derived analytically (src/plan/analytic.ts) from the
                    backend's speed (wasm 15 GFLOP/s, cpu 0.5 GFLOP/s, divided by 'slowdown'),
                    'memoryMb' and 'bandwidthMbps' (10000 if unset: loopback)
  --devices N       plan on the first N devices of the profile only
  --batch B         samples per step (default: topology, else profile)
  --samples N       samples per epoch (default: topology's data set, else profile)
  --micro-batches M only consider M micro-batches per step (default: the topology's
                    training.microBatches, else every divisor of the batch)
  --simulate        also replay the plan in the discrete-event simulator
  --json            one JSON document: {plan, simulation?}
  --write-profile FILE  also write the profile this plan used (JSON), e.g. to pin a run's plan
                    with 'charon launch TOPOLOGY --profile FILE'
  --derive MODEL    write an analytic profile: MODEL ${Object.keys(modelPresets).join(' | ')},
                    --device-spec ${Object.keys(devicePresets).join(' | ')}, --count devices`;

const options = {
  profile: { type: 'string' },
  devices: { type: 'string' },
  batch: { type: 'string' },
  samples: { type: 'string' },
  'micro-batches': { type: 'string' },
  simulate: { type: 'boolean' },
  json: { type: 'boolean' },
  derive: { type: 'string' },
  'device-spec': { type: 'string' },
  count: { type: 'string' },
  write: { type: 'string' },
  'write-profile': { type: 'string' },
} as const;

const MiB = 2 ** 20;

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(argv, options, usage);
  if (!args) return 0;
  if (str(args, 'derive') !== undefined) return derive(args);
  const [topologyFile, ...extra] = args.positionals;
  if (extra.length > 0) throw new CliError(`unexpected argument '${extra[0]}' (see --help)`);
  const profileFile = str(args, 'profile');
  if (!topologyFile && !profileFile) throw new CliError('give a TOPOLOGY file, --profile FILE, or both (see --help)');
  let profile: Profile;
  let source: string;
  let topology: Topology | undefined;
  let listed: Profile | undefined;
  try {
    topology = topologyFile ? loadTopology(topologyFile) : undefined;
    if (profileFile) ({ profile, source } = { profile: (listed = loadProfile(profileFile)), source: `from --profile ${profileFile}` });
    else ({ profile, source } = profileFromTopology(topology!, topologyFile!));
    if (topology && profileFile)
      profile = applyTopology(selectDevices(profile, { names: topology.devices.map((d) => d.name) }, profileFile), topology);
    const count = str(args, 'devices') === undefined ? undefined : num(args, 'devices', 0, { integer: true, min: 1 });
    if (count !== undefined) profile = selectDevices(profile, { count }, profileFile ?? topologyFile!);
  } catch (err) {
    if (err instanceof ProfileError || err instanceof TopologyError) throw new CliError(err.message);
    throw err;
  }
  // What `charon launch` would plan with, then the command line on top.
  let run: PlanOptions = {};
  if (topology) {
    try {
      run = planOptionsForRun(specFromTopology(topology));
    } catch (err) {
      throw new CliError(`${topologyFile}: ${(err as Error).message}`);
    }
  }
  const batchSize =
    str(args, 'batch') !== undefined ? num(args, 'batch', 0, { integer: true, min: 1 }) : (run.batchSize ?? profile.training?.batchSize);
  if (batchSize === undefined) throw new CliError('batch size unknown: give --batch (the profile has no training.batchSize)');
  const samples =
    str(args, 'samples') !== undefined ? num(args, 'samples', 0, { integer: true, min: 1 }) : (run.samples ?? profile.training?.samples);
  const mb = str(args, 'micro-batches');
  const microBatchOptions = mb === undefined ? run.microBatchOptions : [num(args, 'micro-batches', 0, { integer: true, min: 1 })];
  if (microBatchOptions && batchSize % microBatchOptions[0]! !== 0) {
    throw new CliError(
      `${mb === undefined ? `${topologyFile}: training.microBatches` : '--micro-batches'} ${microBatchOptions[0]} does not divide the batch size ${batchSize}${mb === undefined ? ' (give --micro-batches)' : ''}`,
    );
  }
  let plan: StagePlan;
  try {
    plan = planPipeline(profile, {
      ...(run.shape ? { shape: run.shape } : {}),
      batchSize,
      ...(samples !== undefined ? { samples } : {}),
      ...(microBatchOptions ? { microBatchOptions } : {}),
    });
  } catch (err) {
    if (err instanceof InfeasiblePlanError) throw new CliError(`infeasible: ${err.lines.join('; ')}`, 1);
    throw err;
  }
  const writeProfile = str(args, 'write-profile');
  if (writeProfile) writeFileSync(writeProfile, JSON.stringify(profile, null, 2) + '\n');
  const simulation = flag(args, 'simulate') ? simulatePlan(plan, profile) : undefined;
  const links = describeLinks(profile, listed, topology);
  if (flag(args, 'json'))
    process.stdout.write(
      JSON.stringify({ plan, ...(simulation ? { simulation } : {}), profileSource: source, links: links.links, linkSource: links.line }) +
        '\n',
    );
  else
    process.stdout.write(
      render(
        plan,
        simulation,
        profile.model.name ?? topologyFile ?? profileFile!,
        source,
        links.line,
        topology && methodLine(topology, profile, samples),
      ),
    );
  return 0;
}

/** The method line of the plan: what trains, and whether epochs >= 2 run from the activation cache (and how much of it each device keeps). */
function methodLine(t: Topology, profile: Profile, samples: number | undefined): string {
  const c = t.training.cache;
  const m = profile.model;
  // Entries b_0..b_L per sample; with two copies each device keeps about twice its shard.
  const perDevice =
    samples === undefined
      ? null
      : (c.replicas * samples * (m.layers + 1) * m.seqLen * m.dModel * (c.dtype === 'f16' ? 2 : 4)) / profile.devices.length;
  const size =
    perDevice === null
      ? ''
      : `; ${c.replicas === 2 ? 'two copies of every entry, ' : ''}about ${(perDevice / MiB).toFixed(1)} MiB per device ` +
        `(${c.budgetMb} MiB of it in memory, the rest on disk)`;
  const cache = c.use
    ? `activation cache on: epochs >= 2 train data-parallel from it${size}`
    : 'no activation cache: every epoch runs this plan';
  return `${t.method.kind} (${t.method.kind === 'parallel' ? 'side network only' : 'backward through the backbone stages'}); ${cache}`;
}

/** Device budgets are the smaller of profile and topology; a device's bandwidth cap limits every link it sends on. */
export function applyTopology(profile: Profile, topology: Topology): Profile {
  const spec = new Map(topology.devices.map((d) => [d.name, d]));
  const devices = profile.devices.map((d) => ({ ...d, memoryBytes: Math.min(d.memoryBytes, spec.get(d.name)!.memoryMb * MiB) }));
  const pairs = [...profile.links.pairs];
  for (const a of topology.devices)
    for (const b of topology.devices) {
      const cap = Math.min(a.bandwidthMbps ?? Infinity, b.bandwidthMbps ?? Infinity);
      if (a.name >= b.name || !Number.isFinite(cap)) continue;
      const existing = pairs.find((l) => (l.from === a.name && l.to === b.name) || (l.from === b.name && l.to === a.name));
      if (existing) existing.mbps = Math.min(existing.mbps, cap);
      else if (cap < profile.links.defaultMbps) pairs.push({ from: a.name, to: b.name, mbps: cap });
    }
  return { ...profile, devices, links: { ...profile.links, pairs } };
}

/**
 * Each directed link the plan was priced with and where its rate came from: the --profile file
 * (`listed`), a topology bandwidth cap, or the default; and a line saying so. `charon plan` runs
 * no device, so nothing here is measured: `charon launch` measures every link over the bus.
 */
function describeLinks(profile: Profile, listed: Profile | undefined, topology: Topology | undefined) {
  const capped = new Set(topology?.devices.filter((d) => d.bandwidthMbps !== undefined).map((d) => d.name) ?? []);
  const rate = (p: Profile, a: string, b: string) => 8 / (linkCost(p, a, b).msPerByte * 1e3);
  const inFile = (a: string, b: string) => listed?.links.pairs.some((l) => (l.from === a && l.to === b) || (l.from === b && l.to === a));
  const names = profile.devices.map((d) => d.name);
  const links = names.flatMap((a) =>
    names
      .filter((b) => b !== a)
      .map((b) => {
        const mbps = rate(profile, a, b);
        const cap = capped.has(a) || capped.has(b);
        // A cap counts where it lowered the rate the file gives (or the default it leaves).
        const source = !listed
          ? cap
            ? 'topology'
            : 'default'
          : cap && mbps < rate(listed, a, b)
            ? 'topology'
            : inFile(a, b)
              ? 'profile'
              : 'profile default';
        return { from: a, to: b, mbps, source };
      }),
  );
  const count = (s: string) => links.filter((l) => l.source === s).length;
  const parts = [
    count('profile') ? `${count('profile')} from the --profile file` : '',
    count('topology') ? `${count('topology')} from topology bandwidthMbps caps` : '',
    count('profile default') ? `${count('profile default')} at the file's default ${profile.links.defaultMbps} Mbit/s` : '',
    count('default') ? `${count('default')} at ${profile.links.defaultMbps} Mbit/s assumed (loopback)` : '',
  ].filter(Boolean);
  const line =
    links.length === 0
      ? 'none (one device)'
      : `${links.length} directed: ${parts.join(', ')}; none measured here (charon launch measures each link over the bus)`;
  return { links, line };
}

const backendGflops: Record<string, number> = { wasm: 15, cpu: 0.5 };

/** The analytic profile of a topology whose devices are local and whose model is a preset, and how it was made. */
export function profileFromTopology(topology: Topology, file: string): { profile: Profile; source: string } {
  const remote = topology.devices.find((d) => !d.local);
  if (remote) throw new CliError(`${file}: device '${remote.name}' is not local, so its speed is unknown here: give --profile FILE`);
  const preset = topology.model.preset;
  if (!preset || !isPresetName(preset)) throw new CliError(`${file}: model.dir has no analytic shape here: give --profile FILE`);
  const c = presets[preset];
  const run = specFromTopology(topology);
  const seqLen = topology.data.markov?.seqLen ?? c.maxPositions;
  const shape: ModelShape = {
    name: preset,
    encoderLayers: 0,
    decoderLayers: c.nLayers,
    dModel: c.dModel,
    dFF: c.dFF,
    heads: c.nHeads,
    vocab: c.vocabSize,
    seqLen,
    headTokens: seqLen,
    sideReduction: run.reduction,
    bytesPerValue: 4,
    method: methodShape(run.method, run.methodOptions),
  };
  const devices = topology.devices.map((d) => {
    const gflops = backendGflops[d.backend];
    if (gflops === undefined)
      throw new CliError(`${file}: device '${d.name}': backend '${d.backend}' has no known speed: give --profile FILE`);
    const spec: DeviceSpec = {
      name: d.name,
      tflops: gflops / 1e3 / d.slowdown,
      memoryBytes: d.memoryMb * MiB,
      reserveBytes: 0,
      mbps: d.bandwidthMbps ?? 10000,
      latencyMs: 0.2,
      efficiency: 1,
      sideEfficiency: 0.3,
      fixedMsPerBlock: 0.1,
    };
    return { spec, device: { ...analyticProfile(shape, spec, 1).devices[0]!, name: d.name } };
  });
  const base = analyticProfile(shape, devices[0]!.spec, 1);
  const pairs = [];
  for (const a of devices)
    for (const b of devices) {
      if (a.spec.name < b.spec.name) pairs.push({ from: a.spec.name, to: b.spec.name, mbps: Math.min(a.spec.mbps, b.spec.mbps) });
    }
  const speeds = new Map<number, string[]>();
  for (const { spec } of devices) speeds.set(spec.tflops * 1e3, [...(speeds.get(spec.tflops * 1e3) ?? []), spec.name]);
  const at = [...speeds].map(
    ([gflops, names]) => `${Number(gflops.toPrecision(3))} GFLOP/s${speeds.size > 1 ? ` (${names.join(', ')})` : ''}`,
  );
  const profile = parseProfile(
    { ...base, devices: devices.map((d) => d.device), links: { defaultMbps: 10000, latencyMs: 0.2, pairs } },
    file,
  );
  return { profile, source: `analytic estimate at ${at.join(', ')} (charon launch measures the devices)` };
}

function derive(args: NonNullable<ReturnType<typeof parseCommandArgs>>): number {
  const name = str(args, 'derive')!;
  const model = modelPresets[name];
  if (!model) throw new CliError(`--derive: unknown model '${name}' (known: ${Object.keys(modelPresets).join(', ')})`);
  const specName = str(args, 'device-spec');
  const spec = specName === undefined ? undefined : devicePresets[specName];
  if (!spec) throw new CliError(`--device-spec: give one of ${Object.keys(devicePresets).join(', ')}`);
  const count = num(args, 'count', 1, { integer: true, min: 1 });
  const batchSize = num(args, 'batch', 16, { integer: true, min: 1 });
  const samples = num(args, 'samples', 3668, { integer: true, min: 1 });
  const profile = analyticProfile(model, spec, count, { batchSize, samples });
  const out = str(args, 'write');
  const text = JSON.stringify(profile, null, 1) + '\n';
  if (out) writeFileSync(out, text);
  else process.stdout.write(text);
  return 0;
}

const ms = (v: number) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${v.toFixed(1)} ms`);
const bytes = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`);
const duration = (v: number) =>
  v >= 3_600_000 ? `${(v / 3_600_000).toFixed(2)} h` : v >= 60_000 ? `${(v / 60_000).toFixed(1)} min` : ms(v);

function render(plan: StagePlan, sim: SimulationResult | undefined, title: string, source: string, links: string, method?: string): string {
  const lines: string[] = [];
  const groups = plan.stages.map((s) => s.devices.length).join('-');
  lines.push(
    `plan for ${title}: ${plan.stages.length} stage${plan.stages.length === 1 ? '' : 's'} [${groups}], ${plan.microBatches} micro-batch${plan.microBatches === 1 ? '' : 'es'} of ${plan.microBatchSize} (batch ${plan.batchSize})`,
  );
  lines.push(`  profile: ${source}`);
  lines.push(`  links: ${links}`);
  if (method) lines.push(`  method: ${method}`);
  for (const s of plan.stages) {
    lines.push(
      `  stage ${s.index}  layers ${s.layers.from}-${s.layers.to}  cycle ${ms(s.cycleMs)}  all-reduce ${ms(s.allReduceMs)}  in flight ${s.inFlight}`,
    );
    for (const d of s.devices)
      lines.push(
        `    ${d.name.padEnd(14)} rows ${String(d.rows).padStart(3)}  fwd ${ms(d.fwdMs).padStart(10)}  bwd ${ms(d.bwdMs).padStart(10)}  peak ${bytes(d.peakBytes)}`,
      );
  }
  if (plan.unusedDevices.length) lines.push(`  unused: ${plan.unusedDevices.join(', ')} (using them does not pay, or they fit nowhere)`);
  const p = plan.predicted;
  lines.push(
    `predicted step ${ms(p.stepMs)} (warm-up ${ms(p.parts.warmupMs)}, steady ${ms(p.parts.steadyMs)}, drain ${ms(p.parts.drainMs)}, all-reduce and update tail ${ms(p.parts.allReduceTailMs)})`,
  );
  if (p.epochMs !== null) lines.push(`predicted epoch 1: ${p.stepsPerEpoch} steps, ${duration(p.epochMs)}`);
  if (sim)
    lines.push(
      `simulated step ${ms(sim.stepMs)}${sim.epochMs !== null ? `, epoch 1 ${duration(sim.epochMs)}` : ''} (planner estimate ${ms(p.stepMs)}, ${(((sim.stepMs - p.stepMs) / p.stepMs) * 100).toFixed(1)}%)`,
    );
  lines.push(
    `bytes per step: activations ${bytes(plan.bytesPerStep.activations)}, all-reduce ${bytes(plan.bytesPerStep.allReduce)}, total ${bytes(plan.bytesPerStep.total)}`,
  );
  const how = plan.shape
    ? `the ${plan.shape} shape asked for (training.plan), its split and micro-batch count the cheapest`
    : plan.ordering !== 'searched'
      ? `the ${plan.ordering} device order`
      : plan.search.exact
        ? 'the best over every device subset and order'
        : 'a local search over device subsets and orders (too many distinct devices to search them all)';
  lines.push(
    `planned in ${plan.search.ms.toFixed(0)} ms: ${how}; ${plan.search.labels} labels, micro-batch counts ${plan.search.microBatchOptions.join(',')}`,
  );
  return lines.join('\n') + '\n';
}
