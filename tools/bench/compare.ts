/**
 * `charon bench compare TOPOLOGY`: PAC against the paper's baselines as real runs of the runtime,
 * one after another on the same devices, model and data: each a `charon launch` of a copy of the
 * topology with the method, plan shape, cache and devices of the baseline. Standalone runs use
 * the topology's fastest device (the lowest `slowdown`, then the most memory, then the first).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { CliError, flag, num, parseCommandArgs, str } from '../args.ts';
import { loadTopology, TopologyError } from '../../src/topology/load.ts';
import { isPresetName, presets } from '../../src/model/presets.ts';
import type { RunSummary } from '../../actors/coordinator/run-actor.ts';

export const summary =
  'PAC vs standalone, EDDL-style and Eco-FL-style baselines as real runs one after another (times, memory, bytes, loss)';

const usage = `usage: charon bench compare TOPOLOGY [--preset P] [--epochs E] [--sequences N] [--only NAMES] [--keep DIR] [--json]

Runs, one after another on the topology's devices, model and data (each a real 'charon launch'):
  standalone-full, standalone-lora, standalone-serial   the fastest device alone
  eddl-full, eddl-lora                                  data parallel over every device (training.plan: data-parallel)
  ecofl-full, ecofl-lora                                one device per stage (training.plan: pipeline)
  pac-nocache                                           parallel adapters, the planner's plan, no activation cache
  pac                                                   parallel adapters with the activation cache

  --preset P      model preset instead of the topology's (w1: also 256 Markov sequences of 128 tokens)
  --epochs E      epochs (default: the topology's)
  --sequences N   Markov sequences (default: the topology's, or 256 with --preset w1)
  --only NAMES    comma-separated subset of the runs above
  --keep DIR      keep the run directories under DIR (default: a temp dir, removed)
  --json          one JSON document: {"runs": [...], "ratios": {...}}`;

type Shape = {
  name: string;
  method: 'full' | 'lora' | 'serial' | 'parallel';
  plan: 'auto' | 'data-parallel' | 'pipeline';
  alone: boolean;
  cache: boolean;
};

const RUNS: Shape[] = [
  { name: 'standalone-full', method: 'full', plan: 'auto', alone: true, cache: false },
  { name: 'standalone-lora', method: 'lora', plan: 'auto', alone: true, cache: false },
  { name: 'standalone-serial', method: 'serial', plan: 'auto', alone: true, cache: false },
  { name: 'eddl-full', method: 'full', plan: 'data-parallel', alone: false, cache: false },
  { name: 'eddl-lora', method: 'lora', plan: 'data-parallel', alone: false, cache: false },
  { name: 'ecofl-full', method: 'full', plan: 'pipeline', alone: false, cache: false },
  { name: 'ecofl-lora', method: 'lora', plan: 'pipeline', alone: false, cache: false },
  { name: 'pac-nocache', method: 'parallel', plan: 'auto', alone: false, cache: false },
  { name: 'pac', method: 'parallel', plan: 'auto', alone: false, cache: true },
];

export interface CompareRun {
  name: string;
  method: string;
  /** Stages as "layers from-to on devices". */
  plan: string[];
  epochSeconds: number[];
  totalSeconds: number;
  /** Max over devices and steps of the step memory (src/model/memory.ts stepMemory). */
  peakBytes: number;
  /** PAC with the cache: the same over the cached epochs only. */
  cachedPeakBytes?: number;
  bytesMoved: number;
  lastEpochLoss: number;
  /** Labelled data: the last epoch's accuracy. */
  accuracy?: number;
}

const charon = fileURLToPath(new URL('../charon.js', import.meta.url));

/** `charon launch FILE --run-dir DIR`; rejects with its last stderr lines when it fails. */
function launch(file: string, runDir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [charon, 'launch', file, '--run-dir', runDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => {
      err = (err + d).slice(-4000);
    });
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`launch ${file} exited with ${code}: ${err.trim().split('\n').at(-1)}`)),
    );
  });
}

/** What one finished run directory says. */
function figures(shape: Shape, runDir: string): CompareRun {
  const s = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  const steps = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; phase?: string; devices?: Record<string, { peakBytes: number }> })
    .filter((m) => m.type === 'step');
  const peak = (phase?: string) =>
    Math.max(0, ...steps.filter((m) => !phase || m.phase === phase).flatMap((m) => Object.values(m.devices ?? {}).map((d) => d.peakBytes)));
  const epochSeconds = s.epochs.map((e) => e.seconds);
  return {
    name: shape.name,
    method: shape.method,
    plan: s.plan.stages.map((st) => `layers ${st.from}-${st.to} on ${st.devices.join('+')}`),
    epochSeconds,
    totalSeconds: epochSeconds.reduce((a, x) => a + x, 0),
    peakBytes: peak(),
    ...(shape.method === 'parallel' && shape.cache ? { cachedPeakBytes: peak('cached') } : {}),
    bytesMoved: s.bytesPerPhase.pipeline + s.bytesPerPhase.redistribution + s.bytesPerPhase.cached,
    lastEpochLoss: s.epochs.at(-1)!.loss,
    ...(s.finalAccuracy !== undefined ? { accuracy: s.finalAccuracy } : {}),
  };
}

/** The topology of one run: the base with its method, shape, cache and devices. */
function variant(base: Record<string, unknown>, shape: Shape, o: { base: string; preset?: string; epochs?: number; sequences?: number }) {
  const t = structuredClone(base) as {
    run: string;
    model: Record<string, unknown>;
    method: Record<string, unknown>;
    data: { markov?: Record<string, unknown>; file?: string };
    training?: Record<string, unknown>;
    devices: { name: string; slowdown?: number; memoryMb: number }[];
  };
  t.run = `${t.run}-${shape.name}`;
  // The copy lives elsewhere: relative paths keep their meaning next to the original.
  if (typeof t.model.dir === 'string') t.model.dir = resolve(o.base, t.model.dir);
  if (t.data.file) t.data.file = resolve(o.base, t.data.file);
  if (o.preset) t.model = { preset: o.preset };
  if (o.sequences !== undefined || o.preset === 'w1') {
    if (!t.data.markov) throw new CliError('--preset w1 and --sequences need a topology with markov data');
    t.data.markov = {
      ...t.data.markov,
      sequences: o.sequences ?? 256,
      ...(o.preset ? { seqLen: presets[o.preset as keyof typeof presets].maxPositions } : {}),
    };
  }
  const training = { ...(t.training ?? {}) };
  if (o.epochs !== undefined) training.epochs = o.epochs;
  training.plan = shape.plan;
  if (shape.method !== 'parallel' || !shape.cache) training.cache = 'off';
  else if (training.cache === 'off') delete training.cache;
  t.training = training;
  const k = t.method.kind === 'parallel' ? t.method.k : undefined;
  t.method = shape.method === 'parallel' ? { kind: 'parallel', ...(k !== undefined ? { k } : {}) } : { kind: shape.method };
  if (shape.alone) {
    const fastest = [...t.devices].sort((a, b) => (a.slowdown ?? 1) - (b.slowdown ?? 1) || b.memoryMb - a.memoryMb)[0]!;
    t.devices = [fastest];
  }
  return t;
}

/** Ratios the issue's targets are stated in (null where a run is missing). */
function ratios(runs: CompareRun[]) {
  const by = new Map(runs.map((r) => [r.name, r]));
  const pac = by.get('pac');
  const div = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : null);
  return {
    pacTimeOverStandaloneSerial: div(pac?.totalSeconds, by.get('standalone-serial')?.totalSeconds),
    pacTimeOverEddlLora: div(pac?.totalSeconds, by.get('eddl-lora')?.totalSeconds),
    pacEpoch1ThroughputOverEcoflLora: div(by.get('ecofl-lora')?.epochSeconds[0], pac?.epochSeconds[0]),
    pacCachedPeakOverStandaloneFull: div(pac?.cachedPeakBytes, by.get('standalone-full')?.peakBytes),
    pacLossOverLora: div(pac?.lastEpochLoss, by.get('standalone-lora')?.lastEpochLoss),
    pacTimeOverNocache: div(pac?.totalSeconds, by.get('pac-nocache')?.totalSeconds),
  };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCommandArgs(
    argv,
    {
      preset: { type: 'string' },
      epochs: { type: 'string' },
      sequences: { type: 'string' },
      only: { type: 'string' },
      keep: { type: 'string' },
      json: { type: 'boolean' },
    },
    usage,
  );
  if (!args) return 0;
  const [file, ...extra] = args.positionals;
  if (!file) throw new CliError('give a TOPOLOGY file (see --help)');
  if (extra.length > 0) throw new CliError(`unexpected argument '${extra[0]}' (see --help)`);
  try {
    loadTopology(file);
  } catch (err) {
    if (err instanceof TopologyError) throw new CliError(err.message);
    throw err;
  }
  const preset = str(args, 'preset');
  if (preset !== undefined && !isPresetName(preset)) throw new CliError(`--preset: unknown preset '${preset}'`);
  const o = {
    ...(preset ? { preset } : {}),
    ...(str(args, 'epochs') !== undefined ? { epochs: num(args, 'epochs', 3, { integer: true, min: 1 }) } : {}),
    ...(str(args, 'sequences') !== undefined ? { sequences: num(args, 'sequences', 256, { integer: true, min: 2 }) } : {}),
  };
  const only = str(args, 'only')?.split(',');
  const unknown = only?.find((n) => !RUNS.some((r) => r.name === n));
  if (unknown) throw new CliError(`--only: unknown run '${unknown}' (known: ${RUNS.map((r) => r.name).join(', ')})`);
  const shapes = RUNS.filter((r) => !only || only.includes(r.name));
  const base = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const keep = str(args, 'keep');
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'charon-bench-compare-'));
  mkdirSync(dir, { recursive: true });
  const log = (l: string) => process.stderr.write(`[compare] ${l}\n`);
  try {
    const runs: CompareRun[] = [];
    for (const shape of shapes) {
      const t = variant(base, shape, { ...o, base: dirname(resolve(file)) });
      const copy = join(dir, `${shape.name}.yaml`);
      writeFileSync(copy, stringify(t));
      loadTopology(copy);
      const runDir = join(dir, shape.name);
      log(`${shape.name}: launching`);
      await launch(copy, runDir);
      const r = figures(shape, runDir);
      log(
        `${shape.name}: ${r.totalSeconds.toFixed(1)} s, peak ${(r.peakBytes / 2 ** 20).toFixed(1)} MiB, last loss ${r.lastEpochLoss.toFixed(4)}`,
      );
      runs.push(r);
    }
    const report = { runs, ratios: ratios(runs) };
    if (flag(args, 'json')) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      for (const r of runs)
        process.stdout.write(
          `${r.name.padEnd(18)} epochs ${r.epochSeconds.map((s) => s.toFixed(1)).join(' / ')} s  total ${r.totalSeconds.toFixed(1)} s  peak ${(r.peakBytes / 2 ** 20).toFixed(1)} MiB${r.cachedPeakBytes !== undefined ? ` (cached ${(r.cachedPeakBytes / 2 ** 20).toFixed(1)} MiB)` : ''}  moved ${(r.bytesMoved / 2 ** 20).toFixed(1)} MiB  loss ${r.lastEpochLoss.toFixed(4)}\n`,
        );
      for (const [k, v] of Object.entries(report.ratios)) process.stdout.write(`${k}: ${v === null ? 'n/a' : v.toFixed(3)}\n`);
    }
    return 0;
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}
