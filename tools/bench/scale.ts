/**
 * `charon bench scale`: the same distributed PAC workload with 1 and with 2 device processes,
 * one after the other in one invocation, each through `launchRun` + `runTraining` (private
 * nats-server, separate device processes). Reports epoch-1 and cached-epoch speedups (targets
 * >= 1.6x and >= 1.7x on 2 cores), the planner's and the simulator's step time against the
 * measured one, pipeline bytes per step against the plan, and per phase the engines, matmul
 * FLOPs and GFLOP/s summed over the run's devices against their matmul rate.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';
import { loadTopology } from '../../src/topology/load.ts';
import { isPresetName, presets } from '../../src/model/presets.ts';
import { launchRun } from '../../actors/coordinator/launch.ts';
import { runTraining, type RunSummary } from '../../actors/coordinator/run-actor.ts';
import { epochFlops } from '../../src/model/flops.ts';
import { sideShape } from '../../src/model/methods/side-block.ts';
import { loadConfig } from '../../src/model/load.ts';
import { nativeFamilySupported } from '../../src/native/layers.ts';
import { nativeSideSupported } from '../../src/native/side-graph.ts';
import { mean, phaseFigures, phaseLine, type PhaseFigures } from './phases.ts';
import { detailSaysNative } from '../../src/model/engine.ts';

export const summary = 'distributed PAC with 1 vs 2 device processes: epoch speedups, simulator vs measured, bytes vs plan';

const usage = `usage: charon bench scale [--preset w1|tiny] [--sequences N] [--epochs E] [--batch B] [--micro-batches M] [--keep DIR] [--json]

  --preset P          model preset (default w1: 8 layers, width 512, context 128)
  --sequences N       Markov sequences (default 256, the W1 workload; fewer for a quick run)
  --epochs E          epochs (default 3; >= 2 so that a cached epoch runs)
  --batch B           mini-batch (default 8)
  --micro-batches M   pin the micro-batches per step (default: the planner picks, per device count)
  --keep DIR          keep both run directories under DIR (default: a temp dir, removed)
  --json              one JSON document on stdout`;

interface RunFigures {
  devices: number;
  plan: RunSummary['plan'];
  epochSeconds: number[];
  pipelineStepMs: number;
  cachedStepMs: number | null;
  predictedStepMs: number;
  simulatedStepMs: number;
  simulatorError: number;
  pipelineBytesPerStep: { measured: number; planned: number; ratio: number | null };
  redistribution: RunSummary['redistribution'];
  losses: number[];
  peakBytesPerDevice: Record<string, number>;
  /** Epoch 1's rows per rank as re-balanced from measured compute (SHARES_TUNED), when the plan's split changed. */
  sharesTuned: { step: number; rows: number[][] }[];
  /** epoch1 (the pipeline epoch) and cached (mean of the cached epochs); GFLOP/s summed over the devices. */
  phases: PhaseFigures[];
}

/** What runOnce measured, before the phases are rated against a matmul rate. */
interface Measured {
  figures: Omit<RunFigures, 'phases'>;
  /** Each phase's engines, one epoch's seconds and matmul FLOPs. */
  phases: { phase: PhaseFigures['phase']; engine: string; seconds: number; flops: number }[];
  /** Whether every device ran frozen forwards on the native engine (from its backend detail). */
  native: boolean;
}

/**
 * The engines of a PAC device's parts, from its backend detail (src/model/engine.ts names the
 * frozen-forward engine there) and what has a native graph for this model. Native only when
 * every device is: the phases are rated against one engine's matmul rate.
 */
function pacEngines(s: RunSummary): { epoch1: string; cached: string; native: boolean } {
  const native = s.devices.length > 0 && s.devices.every((d) => detailSaysNative(d.backend));
  const config = loadConfig(s.spec.model);
  const shape = sideShape(config, s.spec.reduction);
  const on = (yes: boolean) => (yes ? 'native' : 'tfjs');
  const sideNative = native && nativeSideSupported(shape);
  const side = `side ${on(sideNative)}${sideNative ? ' (up tfjs)' : ''}`;
  const head = `head ${on(native)}`;
  return { epoch1: `backbone ${on(native && nativeFamilySupported(config))}, ${side}, ${head}`, cached: `${side}, ${head}`, native };
}

function topology(
  preset: string,
  devices: number,
  o: { sequences: number; epochs: number; batch: number; micro: number | undefined },
): Record<string, unknown> {
  const seqLen = presets[preset as keyof typeof presets].maxPositions;
  return {
    run: `scale-${devices}`,
    model: { preset },
    method: { kind: 'parallel', k: 8 },
    data: { markov: { sequences: o.sequences, seqLen, seed: 1 } },
    training: {
      epochs: o.epochs,
      batch: o.batch,
      ...(o.micro !== undefined ? { microBatches: o.micro } : {}),
      lr: 1e-3,
      seed: 1,
      cache: { budgetMb: 4096, dir: 'cache', dtype: 'f32' },
    },
    // One native thread each, whatever the run's size: the bench weighs device processes, one core
    // each, and left to the default one device alone would take every core of the host.
    devices: Array.from({ length: devices }, (_, i) => ({ name: `dev${i}`, memoryMb: 4096, threads: 1 })),
  };
}

const probe = fileURLToPath(new URL('./children/matmul-probe.ts', import.meta.url));

/** Mean matmul GFLOP/s of each of `n` processes running at the same time. */
async function concurrentGflops(n: number, seconds: number, engine: 'wasm' | 'native' = 'wasm'): Promise<number[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<number>((resolve, reject) => {
          const child = spawn(process.execPath, ['--import', 'tsx', probe, String(seconds), engine], {
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          let out = '';
          child.stdout.on('data', (d) => {
            out += d;
          });
          child.once('close', (code) =>
            code === 0 ? resolve((JSON.parse(out) as { gflops: number }).gflops) : reject(new Error(`matmul probe exited with ${code}`)),
          );
        }),
    ),
  );
}

async function runOnce(
  dir: string,
  devices: number,
  o: Parameters<typeof topology>[2] & { preset: string },
  log: (l: string) => void,
): Promise<Measured> {
  const file = join(dir, `scale-${devices}.yaml`);
  writeFileSync(file, stringify(topology(o.preset, devices, o)));
  const topo = loadTopology(file);
  const runDir = join(dir, `run-${devices}`);
  const retuned: RunFigures['sharesTuned'] = [];
  const onEvent = (e: Record<string, unknown>) => {
    if (e.type === 'SHARES_TUNED') retuned.push({ step: e.step as number, rows: e.rows as number[][] });
    if (
      e.type === 'EPOCH_DONE' ||
      e.type === 'RUN_PLANNED' ||
      e.type === 'REDISTRIBUTED' ||
      e.type === 'DEVICE_LOST' ||
      e.type === 'SHARES_TUNED'
    )
      log(`${devices} device(s): ${JSON.stringify(e)}`);
  };
  const s = await launchRun(topo, { runDir, onEvent }, async (ctx) => {
    // Launched without `coordinatorProcess`: the coordinator is in this process.
    const coordinator = ctx.coordinator!;
    await coordinator.whenAssembled();
    const out = await Promise.race([
      runTraining({ topology: topo, bus: ctx.bus, coordinator, runDir }),
      ctx.failure,
      ctx.interrupted.then((sig) => {
        throw new Error(`interrupted (${sig})`);
      }),
    ]);
    return out.summary;
  });
  const pipe = s.epochs.find((e) => e.phase === 'pipeline')!;
  const cached = s.epochs.filter((e) => e.phase === 'cached');
  const pipelineStepMs = (pipe.seconds / pipe.steps) * 1000;
  const config = loadConfig(s.spec.model);
  const engines = pacEngines(s);
  const flops = (c: boolean) =>
    epochFlops(config, 'parallel', { reduction: s.spec.reduction }, { samples: s.spec.samples, seqLen: s.spec.seqLen, cached: c }).total;
  const phases: Measured['phases'] = [{ phase: 'epoch1', engine: engines.epoch1, seconds: pipe.seconds, flops: flops(false) }];
  if (cached.length)
    phases.push({ phase: 'cached', engine: engines.cached, seconds: mean(cached.map((e) => e.seconds)), flops: flops(true) });
  const figures = {
    devices,
    plan: s.plan,
    epochSeconds: s.epochs.map((e) => e.seconds),
    pipelineStepMs,
    cachedStepMs: cached.length ? (cached.reduce((a, e) => a + e.seconds, 0) / cached.reduce((a, e) => a + e.steps, 0)) * 1000 : null,
    predictedStepMs: s.plan.predictedStepMs,
    simulatedStepMs: s.plan.simulatedStepMs,
    simulatorError: (s.plan.simulatedStepMs - pipelineStepMs) / pipelineStepMs,
    pipelineBytesPerStep: {
      ...s.pipelineBytesPerStep,
      ratio: s.pipelineBytesPerStep.planned > 0 ? s.pipelineBytesPerStep.measured / s.pipelineBytesPerStep.planned : null,
    },
    redistribution: s.redistribution,
    losses: s.epochs.map((e) => e.loss),
    peakBytesPerDevice: s.peakBytesPerDevice,
    sharesTuned: retuned,
  };
  return { figures, phases, native: engines.native };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      preset: { type: 'string' },
      sequences: { type: 'string' },
      epochs: { type: 'string' },
      batch: { type: 'string' },
      'micro-batches': { type: 'string' },
      keep: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const preset = str(args, 'preset') ?? 'w1';
  if (!isPresetName(preset)) throw new CliError(`--preset: unknown preset '${preset}'`);
  const o = {
    preset,
    sequences: num(args, 'sequences', 256, { integer: true, min: 2 }),
    epochs: num(args, 'epochs', 3, { integer: true, min: 2 }),
    batch: num(args, 'batch', 8, { integer: true, min: 1 }),
    micro: str(args, 'micro-batches') === undefined ? undefined : num(args, 'micro-batches', 0, { integer: true, min: 1 }),
  };
  if (o.micro !== undefined && o.micro > o.batch) throw new CliError(`--micro-batches ${o.micro} exceeds --batch ${o.batch}`);
  const keep = str(args, 'keep');
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'charon-bench-scale-'));
  mkdirSync(dir, { recursive: true });
  const log = (l: string) => process.stderr.write(`[scale] ${l}\n`);
  try {
    // What the machine gives two concurrent device processes: the ceiling of any speedup here.
    const alone = (await concurrentGflops(1, 4))[0]!;
    const pair = await concurrentGflops(2, 4);
    const machine = { matmulGflopsAlone: alone, matmulGflopsConcurrent: pair, parallelCeiling: (pair[0]! + pair[1]!) / alone };
    log(
      `machine: ${alone.toFixed(1)} GFLOP/s alone, ${pair.map((g) => g.toFixed(1)).join(' + ')} concurrently (ceiling ${machine.parallelCeiling.toFixed(2)}x)`,
    );
    const measured = [await runOnce(dir, 1, o, log), await runOnce(dir, 2, o, log)];
    // Devices on the native engine are rated against its rate: the wasm probe above is not theirs.
    const native = measured.every((m) => m.native);
    const nativeAlone = native ? (await concurrentGflops(1, 4, 'native'))[0]! : null;
    const perDevice = nativeAlone ?? alone;
    const [one, two] = measured.map(
      (m): RunFigures => ({
        ...m.figures,
        phases: m.phases.map((p) => phaseFigures(p.phase, p.engine, p.seconds, p.flops, perDevice * m.figures.devices)),
      }),
    ) as [RunFigures, RunFigures];
    const report = {
      workload: { ...o, seqLen: presets[preset].maxPositions, method: 'parallel (PAC), k = 8' },
      machine: {
        ...machine,
        nativeMatmulGflopsAlone: nativeAlone,
        phasesRatedAgainst: native
          ? 'native onnxruntime-node matmul alone x devices'
          : 'tfjs wasm matmul alone (matmulGflopsAlone) x devices',
      },
      runs: [one, two],
      speedup: {
        epoch1: one.epochSeconds[0]! / two.epochSeconds[0]!,
        cached: one.cachedStepMs && two.cachedStepMs ? one.cachedStepMs / two.cachedStepMs : null,
      },
      targets: { epoch1Speedup: 1.6, cachedSpeedup: 1.7, simulatorWithin: 0.25, bytesWithin: 0.1 },
    };
    if (flag(args, 'json')) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      for (const r of report.runs) {
        process.stdout.write(
          `${r.devices} device(s): epochs ${r.epochSeconds.map((s) => s.toFixed(1)).join(' / ')} s, pipeline step ${r.pipelineStepMs.toFixed(0)} ms (simulated ${r.simulatedStepMs.toFixed(0)} ms), cached step ${r.cachedStepMs?.toFixed(0)} ms, bytes/step ${r.pipelineBytesPerStep.measured} vs plan ${r.pipelineBytesPerStep.planned}\n`,
        );
        for (const t of r.sharesTuned)
          process.stdout.write(`  step ${t.step}: rows re-balanced by measured compute to ${t.rows.map((g) => g.join('+')).join(' | ')}\n`);
        for (const p of r.phases) process.stdout.write(`  ${phaseLine(p)}\n`);
      }
      process.stdout.write(`machine: 2 concurrent processes get ${machine.parallelCeiling.toFixed(2)}x one process's matmul rate\n`);
      process.stdout.write(`phases rated against: ${report.machine.phasesRatedAgainst}\n`);
      process.stdout.write(
        `speedup: epoch 1 ${report.speedup.epoch1.toFixed(2)}x (target 1.6), cached ${report.speedup.cached?.toFixed(2)}x (target 1.7)\n`,
      );
    }
    return 0;
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}
