/**
 * Every field a ready topology sets reaches the code that uses it: each file's raw YAML is walked
 * leaf by leaf, and each leaf must match an entry of `wiring`, whose check finds the file's value
 * in what the runtime derives from the loaded topology with its own functions (the run spec the
 * devices get, the run machine's input, launch's device command lines and bus, admission, the
 * chaos schedule and its bus rules, `charon plan`'s profile). A field added to a topology without
 * an entry here fails, naming the file and the field.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { makeHfModel } from './fixtures/hf-model.ts';
import { parse } from 'yaml';
import { loadTopology, parseTopology, TopologyError } from '../src/topology/load.ts';
import type { Topology } from '../src/topology/schema.ts';
import { loadRunData, runJoinTerms, specFromTopology, stageSpec, usesCache, type RunSpec } from '../src/train/run-spec.ts';
import type { StageSpec } from '../src/engine/stage-setup.ts';
import { planOptionsForRun, type PlanOptions } from '../src/plan/planner.ts';
import { linkCost, type Profile } from '../src/plan/profile.ts';
import { presets, isPresetName } from '../src/model/presets.ts';
import { loadSchedule, type Schedule } from '../src/chaos/schedule.ts';
import { faultRule, joinArgs } from '../src/chaos/runner.ts';
import { MESSAGE_FAULTS, type MessageFault } from '../src/bus/index.ts';
import { admission, cachesDir, embeddedServer, externalServer } from '../actors/coordinator/launch.ts';
import { deviceArgs, localDevices } from '../actors/coordinator/device-args.ts';
import { runInput } from '../actors/coordinator/run-actor.ts';
import type { RunInput } from '../actors/coordinator/run-machine.ts';
import { stepDeadlineMs } from '../actors/coordinator/step-deadline.ts';
import { applyTopology, profileFromTopology } from '../tools/commands/plan.ts';
import { tempDir } from './fixtures/temp.ts';

const root = new URL('..', import.meta.url).pathname;
const MiB = 2 ** 20;
const runDir = '/runs/r';

/** What the runtime derives from one topology file. */
interface Derived {
  file: string;
  /** The raw YAML, for checks that need a sibling of their field. */
  raw: Record<string, unknown>;
  topology: Topology;
  spec: RunSpec;
  stage: StageSpec;
  terms: ReturnType<typeof runJoinTerms>;
  /** What the run machine starts from. */
  input: RunInput;
  /** What the planner is asked for. */
  plan: PlanOptions;
  /** Local device processes' command lines, by device name. */
  spawned: Map<string, string[]>;
  /** The server launch starts (without --nats). */
  server: ReturnType<typeof embeddedServer>;
  /**
   * `charon plan TOPOLOGY --profile FILE`'s profile, the file listing every device with ample
   * memory and fast links (made analytically: for a preset model).
   */
  listed?: Profile;
  /** `charon plan TOPOLOGY`'s analytic profile, when the topology allows one (local devices, a preset). */
  analytic?: Profile;
  schedule?: Schedule;
}

function derive(file: string): Derived {
  const text = readFileSync(file, 'utf8');
  const topology = loadTopology(file);
  const spec = specFromTopology(topology);
  const spawned = new Map(
    localDevices(topology).map((d) => [d.name, deviceArgs(d, { natsUrl: 'nats://127.0.0.1:4222', topology, runDir })] as const),
  );
  // Every device made a plain local one, so the analytic profile exists; the topology's caps come back with applyTopology.
  const plain: Topology = {
    ...topology,
    devices: topology.devices.map((d) => ({
      name: d.name,
      local: true,
      backend: 'wasm' as const,
      memoryMb: 1,
      slowdown: 1,
      optional: false,
    })),
  };
  const preset = topology.model.preset !== undefined;
  const base = preset ? profileFromTopology(plain, file).profile : undefined;
  const listed = base && applyTopology({ ...base, devices: base.devices.map((d) => ({ ...d, memoryBytes: 2 ** 50 })) }, topology);
  const analytic = preset && topology.devices.every((d) => d.local) ? profileFromTopology(topology, file).profile : undefined;
  return {
    file,
    raw: parse(text) as Record<string, unknown>,
    topology,
    spec,
    stage: stageSpec(spec),
    terms: runJoinTerms(topology, spec),
    input: runInput({ topology }, spec),
    plan: planOptionsForRun(spec),
    spawned,
    server: embeddedServer(topology, externalServer(topology, undefined)),
    ...(listed ? { listed } : {}),
    ...(analytic ? { analytic } : {}),
    ...(topology.chaos ? { schedule: loadSchedule(topology, file) } : {}),
  };
}

/** Every leaf a YAML value sets, as `devices[1].slowdown` paths with their values. */
function leaves(value: unknown, path = ''): [string, unknown][] {
  if (Array.isArray(value)) return value.flatMap((v, i) => leaves(v, `${path}[${i}]`));
  if (value !== null && typeof value === 'object')
    return Object.entries(value).flatMap(([k, v]) => leaves(v, path === '' ? k : `${path}.${k}`));
  return [[path, value]];
}

/** The value of `--flag` in a command line. */
function flagOf(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i < 0 ? undefined : args[i + 1];
}

const eq = (actual: unknown, expected: unknown, what: string) => assert.equal(actual, expected, what);

/** The device at index `i` of the file, by its name as the file writes it. */
const deviceName = (d: Derived, i: number) => (d.raw.devices as { name: string }[])[i]!.name;
const deviceOf = (p: Profile, name: string) => {
  const found = p.devices.find((x) => x.name === name);
  assert.ok(found, `profile has device ${name}`);
  return found!;
};
const rate = (p: Profile, a: string, b: string) => 8 / (linkCost(p, a, b).msPerByte * 1e3);

/** What a chaos `join` of the listed device `name` starts. */
const joined = (d: Derived, name: string) => joinArgs(d.topology, name, 'nats://127.0.0.1:4222', runDir);

const fault = (d: Derived, i: number) => {
  assert.ok(d.schedule, 'the schedule loads');
  return d.schedule!.faults[i]!;
};
const isMessageFault = (k: string): k is MessageFault => (MESSAGE_FAULTS as readonly string[]).includes(k);
const ruleOf = (d: Derived, i: number) => {
  const f = fault(d, i);
  assert.ok(isMessageFault(f.kind), `chaos[${i}] is a message fault`);
  return faultRule({ ...f, kind: f.kind as MessageFault }, 7);
};

/** Where a fault fires, global step; `epoch` and `step` as the file writes them (steps per epoch from the schedule). */
function triggerStep(d: Derived, i: number, epoch: unknown, step: unknown) {
  const f = fault(d, i);
  const perEpoch = d.schedule!.totalSteps / d.spec.epochs;
  eq(f.trigger, { step: epoch === undefined ? step : ((epoch as number) - 1) * perEpoch + (step as number) }, `chaos[${i}] fires at`);
}

type Check = (d: Derived, value: unknown, index: number) => void;

/** Field path pattern (`[i]`: any index, passed to the check) -> where its value must show up. */
const wiring: [string, Check][] = [
  [
    'run',
    (d, v) => {
      eq(d.input.runId, v, 'run machine runId');
      for (const [name, args] of d.spawned) eq(flagOf(args, '--run'), v, `${name} --run`);
    },
  ],
  [
    'model.preset',
    (d, v) => {
      eq(d.spec.model, { preset: v }, 'spec.model');
      eq(d.terms.probe.model, { preset: v }, 'the probe devices time');
      assert.ok(typeof v === 'string' && isPresetName(v), `preset ${v} exists`);
      eq(d.terms.probe.layers, presets[v as keyof typeof presets].nLayers, 'probe layers');
    },
  ],
  ['model.dir', (d, v) => eq(d.spec.model, { dir: resolve(dirname(d.file), v as string) }, 'spec.model')],
  [
    'method.kind',
    (d, v) => {
      eq(d.spec.method, v, 'spec.method');
      eq(d.stage.method, v, 'stage method');
    },
  ],
  [
    'method.k',
    (d, v) => {
      eq(d.stage.reduction, v, 'stage reduction');
      eq(d.stage.methodOptions, { reduction: v }, 'stage method options');
    },
  ],
  ['method.rank', (d, v) => eq((d.stage.methodOptions as { rank?: number }).rank, v, 'lora rank')],
  ['method.alpha', (d, v) => eq((d.stage.methodOptions as { alpha?: number }).alpha, v, 'lora alpha')],
  ['method.targets[i]', (d, v, i) => eq((d.stage.methodOptions as { targets?: string[] }).targets?.[i], v, `lora target ${i}`)],
  ['method.bottleneck', (d, v) => eq((d.stage.methodOptions as { bottleneck?: number }).bottleneck, v, 'serial bottleneck')],
  [
    'data.markov.sequences',
    (d, v) => {
      eq(d.spec.samples, v, 'spec.samples');
      eq(d.plan.samples, v, 'planner samples');
      eq(loadRunData(d.spec).samples.length, v, 'data set size');
    },
  ],
  [
    'data.markov.seqLen',
    (d, v) => {
      eq(d.stage.seqLen, v, 'stage seqLen');
      eq(loadRunData(d.spec).samples[0]!.ids.length, v, 'sample length');
    },
  ],
  ['data.markov.seed', (d, v) => eq('markov' in d.spec.data ? d.spec.data.markov.seed : undefined, v, 'spec data seed')],
  ['data.file', (d, v) => eq(d.spec.data, { file: resolve(dirname(d.file), v as string) }, 'spec data file')],
  ['training.epochs', (d, v) => eq(d.spec.epochs, v, 'spec.epochs')],
  [
    'training.batch',
    (d, v) => {
      eq(d.spec.batch, v, 'spec.batch');
      eq(d.plan.batchSize, v, 'planner batch');
    },
  ],
  [
    'training.microBatches',
    (d, v) => {
      eq(d.spec.microBatches, v, 'spec.microBatches');
      eq(d.plan.microBatchOptions, [v], 'planner micro-batch options');
    },
  ],
  ['training.lr', (d, v) => eq(d.stage.optimizer.lr, v, 'stage optimizer lr')],
  ['training.weightDecay', (d, v) => eq(d.stage.optimizer.weightDecay, v, 'stage optimizer weightDecay')],
  ['training.maxGradNorm', (d, v) => eq(d.stage.optimizer.maxGradNorm, v, 'stage optimizer maxGradNorm')],
  ['training.warmupSteps', (d, v) => eq(d.stage.optimizer.warmupSteps, v, 'stage optimizer warmupSteps')],
  ['training.schedule', (d, v) => eq(d.stage.optimizer.schedule, v, 'stage optimizer schedule')],
  [
    'training.seed',
    (d, v) => {
      eq(d.spec.seed, v, 'spec.seed');
      eq(d.stage.seed, v, 'stage seed');
    },
  ],
  ['training.plan', (d, v) => eq(d.plan.shape, v === 'auto' ? undefined : v, 'planner shape')],
  [
    'training.stepDeadlineMs',
    (d, v) => eq(stepDeadlineMs({ simulatedStepMs: 1, attempt: 0, fixedMs: d.input.stepDeadlineMs }), v, 'first attempt deadline'),
  ],
  [
    'training.cache',
    (d, v) => {
      eq(v, 'off', 'the one value of cache that is not a mapping');
      eq(usesCache(d.spec), false, 'cache: off turns the cache off');
    },
  ],
  ['training.cache.budgetMb', (d, v) => eq(d.spec.cache.budgetMb, v, 'spec cache budget')],
  ['training.cache.dtype', (d, v) => eq(d.spec.cache.dtype, v, 'spec cache dtype')],
  ['training.cache.replicas', (d, v) => eq(d.spec.cache.replicas, v, 'spec cache replicas')],
  [
    'training.cache.dir',
    (d, v) => {
      eq(cachesDir(runDir, d.topology), join(runDir, v as string), 'launch cache folder');
      for (const [name, args] of d.spawned) eq(flagOf(args, '--cache-dir'), join(runDir, v as string, name), `${name} --cache-dir`);
    },
  ],
  ['bus.embedded', (d, v) => eq(d.server !== undefined, v, 'launch starts its own server')],
  [
    'bus.url',
    (d, v) => {
      eq(externalServer(d.topology, undefined), v, 'launch connects to');
      eq(d.server, undefined, 'launch starts no server');
    },
  ],
  [
    'bus.listen',
    (d, v) => {
      const l = d.server?.listen;
      eq(l && `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`, v, 'embedded server listens on');
    },
  ],
  [
    'bus.tls',
    (d, v) => {
      eq(d.server?.tls, v !== false, 'embedded server TLS');
      eq(d.server?.mutual, v === 'mutual', 'embedded server mutual TLS');
    },
  ],
  [
    'devices[i].name',
    (d, v, i) => {
      eq(admission(d.topology)({ device: v as string }), null, 'admitted');
      if (d.listed) deviceOf(d.listed, v as string);
      if (d.topology.devices[i]!.local) eq(flagOf(d.spawned.get(v as string) ?? [], '--name'), v, 'spawned --name');
    },
  ],
  ['devices[i].local', (d, v, i) => eq(d.spawned.has(deviceName(d, i)), v, 'launch spawns it')],
  ['devices[i].optional', (d, v, i) => eq(d.input.expectedDevices.includes(deviceName(d, i)), !v, 'the run waits for it before planning')],
  [
    'devices[i].backend',
    (d, v, i) => {
      const name = deviceName(d, i);
      // A device that is not local picks its own backend (charon device --backend); only a chaos join starts it from the topology.
      eq(flagOf(d.spawned.get(name) ?? joined(d, name), '--backend'), v, `${name} --backend`);
    },
  ],
  [
    'devices[i].memoryMb',
    (d, v, i) => {
      const name = deviceName(d, i);
      eq(flagOf(d.spawned.get(name) ?? joined(d, name), '--memory-mb'), String(v), `${name} --memory-mb`);
      if (d.listed) eq(deviceOf(d.listed, name).memoryBytes, (v as number) * MiB, `${name} budget under --profile`);
      if (d.analytic) eq(deviceOf(d.analytic, name).memoryBytes, (v as number) * MiB, `${name} analytic budget`);
    },
  ],
  [
    'devices[i].slowdown',
    (d, v, i) => {
      const name = deviceName(d, i);
      eq(flagOf(d.spawned.get(name) ?? joined(d, name), '--slowdown'), String(v), `${name} --slowdown`);
      if (d.analytic) {
        // The same device at slowdown 1 is v times faster per sample.
        const plain = { ...d.topology, devices: d.topology.devices.map((x) => ({ ...x, slowdown: 1 })) };
        const fast = deviceOf(profileFromTopology(plain, d.file).profile, name).layers[0]!.fwd.perSampleMs;
        const slow = deviceOf(d.analytic, name).layers[0]!.fwd.perSampleMs;
        assert.ok(Math.abs(slow / fast - (v as number)) < 1e-9, `${name}: analytic time ${slow / fast}x, slowdown ${v}`);
      }
    },
  ],
  [
    'devices[i].threads',
    (d, v, i) => {
      const name = deviceName(d, i);
      eq(flagOf(d.spawned.get(name) ?? joined(d, name), '--threads'), String(v), `${name} --threads`);
    },
  ],
  [
    'devices[i].bandwidthMbps',
    (d, v, i) => {
      const name = deviceName(d, i);
      eq(flagOf(d.spawned.get(name) ?? joined(d, name), '--bandwidth-mbps'), String(v), `${name} --bandwidth-mbps`);
      // A link is as fast as the slower cap of its two ends.
      const listed = d.listed;
      if (listed)
        for (const other of d.topology.devices.filter((x) => x.name !== name)) {
          const expected = Math.min(v as number, other.bandwidthMbps ?? Infinity, listed.links.defaultMbps);
          assert.ok(Math.abs(rate(listed, name, other.name) - expected) < 1e-6, `${name} -> ${other.name} at ${expected} Mbit/s`);
        }
    },
  ],
  [
    'elastic.allowUnlisted',
    (d, v) => eq(admission(d.topology)({ device: 'not-in-the-topology' }) === null, v, 'an unlisted device is admitted'),
  ],
  [
    'chaos[i].kind',
    (d, v, i) => {
      eq(fault(d, i).kind, v, `chaos[${i}] kind`);
      if (isMessageFault(v as string)) eq(ruleOf(d, i).action, v, `chaos[${i}] bus rule action`);
    },
  ],
  ['chaos[i].at.epoch', (d, v, i) => triggerStep(d, i, v, (d.raw.chaos as { at: { step: number } }[])[i]!.at.step)],
  ['chaos[i].at.step', (d, v, i) => triggerStep(d, i, (d.raw.chaos as { at: { epoch?: number } }[])[i]!.at.epoch, v)],
  ['chaos[i].at.seconds', (d, v, i) => eq(fault(d, i).trigger, { seconds: v }, `chaos[${i}] fires at`)],
  [
    'chaos[i].device',
    (d, v, i) => {
      eq(fault(d, i).device, v, `chaos[${i}] device`);
      if (fault(d, i).kind === 'join') eq(flagOf(joined(d, v as string), '--name'), v, `chaos[${i}] joins as`);
    },
  ],
  ['chaos[i].subject', (d, v, i) => eq(ruleOf(d, i).subject, v, `chaos[${i}] rule subject`)],
  [
    'chaos[i].durationMs',
    (d, v, i) => eq(isMessageFault(fault(d, i).kind) ? ruleOf(d, i).durationMs : fault(d, i).durationMs, v, `chaos[${i}] duration`),
  ],
  ['chaos[i].delayMs', (d, v, i) => eq(ruleOf(d, i).delayMs, v, `chaos[${i}] rule delay`)],
  ['chaos[i].probability', (d, v, i) => eq(ruleOf(d, i).probability, v, `chaos[${i}] rule probability`)],
];

const patterns = wiring.map(([pattern, check]) => ({
  pattern,
  regex: new RegExp(`^${pattern.replace(/[.]/g, '\\.').replace(/\[i\]/g, '\\[(\\d+)\\]')}$`),
  check,
}));

/** The entry of `wiring` for a leaf path, with the index it matched. */
function entryOf(path: string): { check: Check; index: number } | undefined {
  for (const p of patterns) {
    const m = p.regex.exec(path);
    if (m) return { check: p.check, index: m[1] === undefined ? -1 : Number(m[1]) };
  }
  return undefined;
}

/** A value of the same kind that the file does not set. */
function other(v: unknown): unknown {
  if (typeof v === 'number') return v + 1;
  if (typeof v === 'boolean') return !v;
  return `${String(v)}-other`;
}

/** Whether `check` fails its assertion (uvu's assert.throws passes an Assertion through). */
function rejects(check: () => void): boolean {
  try {
    check();
    return false;
  } catch (err) {
    if (err instanceof assert.Assertion) return true;
    throw err;
  }
}

const files = readdirSync(join(root, 'topologies'))
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => join(root, 'topologies', f));

test('topology fields: every field of every ready topology reaches the code that uses it', () => {
  assert.ok(files.length >= 5, `topologies found: ${files.length}`);
  const unmapped: string[] = [];
  const failed: string[] = [];
  for (const file of files) {
    const d = derive(file);
    for (const [path, value] of leaves(d.raw)) {
      const entry = entryOf(path);
      if (!entry) {
        unmapped.push(`${file.slice(root.length)}: ${path}`);
        continue;
      }
      try {
        entry.check(d, value, entry.index);
      } catch (err) {
        failed.push(`${file.slice(root.length)}: ${path} = ${JSON.stringify(value)}: ${(err as Error).message}`);
      }
    }
  }
  assert.equal(unmapped, [], `fields no check covers (add an entry to wiring):\n${unmapped.join('\n')}`);
  assert.equal(failed, [], `fields that do not reach their code:\n${failed.join('\n')}`);
});

test('topology fields: each check fails for a value the file does not set', () => {
  const passed: string[] = [];
  for (const file of files) {
    const d = derive(file);
    for (const [path, value] of leaves(d.raw)) {
      const entry = entryOf(path);
      if (entry && !rejects(() => entry.check(d, other(value), entry.index)))
        passed.push(`${file.slice(root.length)}: ${path} = ${JSON.stringify(other(value))}`);
    }
  }
  assert.equal(passed, [], `checks that accept a value the file does not set:\n${passed.join('\n')}`);
});

const everyField = `run: every-field
model: { preset: tiny }
method: { kind: parallel, k: 4 }
data: { markov: { sequences: 12, seqLen: 16, seed: 3 } }
training:
  epochs: 2
  batch: 6
  microBatches: 3
  lr: 0.002
  weightDecay: 0.01
  maxGradNorm: 0.5
  warmupSteps: 2
  schedule: cosine
  seed: 5
  plan: pipeline
  stepDeadlineMs: 4500
  cache: { budgetMb: 32, dir: spill/here, dtype: f16, replicas: 2 }
bus: { embedded: true, listen: "0.0.0.0:4333", tls: mutual }
devices:
  - { name: a, memoryMb: 512, backend: cpu, slowdown: 2, bandwidthMbps: 50, threads: 3 }
  - { name: b, local: false, optional: true, memoryMb: 768 }
elastic: { allowUnlisted: true }
chaos:
  - { at: { seconds: 1.5 }, kind: delay, subject: "act.*", durationMs: 900, delayMs: 40, probability: 0.25 }
  - { at: { step: 2 }, kind: kill, device: a }
`;

test('topology fields: the fields no ready topology sets reach their code too', () => {
  const dir = tempDir('charon-fields-');
  const model = makeHfModel({ preset: 'tiny' });
  writeFileSync(join(dir, 'data.jsonl'), '{"ids": [1, 2, 3]}\n{"ids": [4, 5]}\n');
  const variants = {
    every: everyField,
    lora: everyField
      .replace('kind: parallel, k: 4', 'kind: lora, rank: 4, alpha: 8, targets: [key, mlp_up]')
      .replace(/ {2}cache: .*\n/, ''),
    serial: everyField.replace('kind: parallel, k: 4', 'kind: serial, bottleneck: 16').replace(/ {2}cache: .*\n/, ''),
    uncached: everyField.replace(/ {2}cache: .*\n/, '  cache: off\n'),
    files: everyField
      .replace('{ preset: tiny }', `{ dir: ${JSON.stringify(relative(dir, model.dir))} }`)
      .replace(/data: .*\n/, 'data: { file: data.jsonl }\n')
      .replace('microBatches: 3', 'microBatches: 1')
      .replace('batch: 6', 'batch: 2')
      // Without a preset `charon plan` has no profile to find b in: admission is then what knows its name.
      .replace('allowUnlisted: true', 'allowUnlisted: false'),
    url: everyField.replace(/bus: .*\n/, 'bus: { url: "nats://nats.example:4222" }\n'),
  };
  for (const [name, text] of Object.entries(variants)) {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, text);
    const d = derive(file);
    for (const [path, value] of leaves(d.raw)) {
      const entry = entryOf(path);
      assert.ok(entry, `${name}: ${path} has an entry in wiring`);
      entry!.check(d, value, entry!.index);
      assert.ok(
        rejects(() => entry!.check(d, other(value), entry!.index)),
        `${name}: ${path} accepts ${JSON.stringify(other(value))}`,
      );
    }
  }
});

/** The first line of the loader's refusal of `text`. */
function refusal(text: string): string {
  try {
    parseTopology(text, 't.yaml');
  } catch (err) {
    if (err instanceof TopologyError) return err.firstLine;
    throw err;
  }
  throw new Error('expected a TopologyError');
}

test('topology fields: a misspelt field nested in training.cache or in a chaos entry is refused with its line', () => {
  const text = `run: r
model: { preset: tiny }
method: { kind: parallel }
data: { markov: {} }
training:
  cache:
    budgetMb: 8
devices: [ { name: a, memoryMb: 512 } ]
chaos:
  - { at: { epoch: 1, step: 2 }, kind: nats-restart }
`;
  assert.not.throws(() => parseTopology(text, 't.yaml'));
  assert.is(refusal(text.replace('budgetMb: 8', 'budgetMb: 8\n    budgetMB: 16')), 't.yaml:8: training.cache.budgetMB: unknown field');
  assert.is(refusal(text.replace('step: 2', 'setp: 2')), 't.yaml:10: chaos[0].at.setp: unknown field');
  assert.match(
    refusal(text.replace('memoryMb: 512 }', 'memoryMb: 512, local: false, threads: 4 }')),
    /^t\.yaml:8: devices\[0\]\.threads: only a local device's threads/,
  );
});

test.run();
