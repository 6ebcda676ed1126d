/**
 * Options shared by the commands that open a model (train, eval, generate): `--model DIR` or
 * `--preset NAME` (with `--model-seed`), `--backend`, `--engine` and `--threads`.
 */
import { availableParallelism } from 'node:os';
import { CliError, num, str, type OptionSpec, type ParsedArgs } from './args.ts';
import type { ModelSource } from '../src/model/load.ts';
import { isPresetName, presets } from '../src/model/presets.ts';
import { initBackend, type BackendChoice, type BackendInfo } from '../src/model/backend.ts';
import { parseEngine, setEngine } from '../src/model/engine.ts';
import { nativeThreads } from '../src/native/runtime.ts';

export const modelOptions: Record<string, OptionSpec> = {
  model: { type: 'string' },
  preset: { type: 'string' },
  'model-seed': { type: 'string' },
  backend: { type: 'string' },
  engine: { type: 'string' },
  threads: { type: 'string' },
};

export const engineOptionUsage = `  --engine E           frozen backbone forward: native (onnxruntime-node) | tfjs (default: CHARON_ENGINE, else native when it loads)`;

export const threadsOptionUsage = `  --threads N          threads of the native engine (default: CHARON_NATIVE_THREADS, else every core)`;

export const modelUsage = `  --model DIR          Hugging Face model directory (config.json, model.safetensors, tokenizer.json)
  --preset NAME        built-in model with seeded weights: ${Object.keys(presets).join(', ')}
  --model-seed N       seed of the preset's weights (default 0)
  --backend B          tensorflow | wasm | cpu (default: best available)
${engineOptionUsage}
${threadsOptionUsage}`;

export function modelSource(args: ParsedArgs): ModelSource {
  const dir = str(args, 'model'),
    preset = str(args, 'preset');
  if (dir && preset) throw new CliError('give either --model DIR or --preset NAME, not both');
  if (dir) return { dir };
  if (!preset) throw new CliError('missing --model DIR or --preset NAME');
  if (!isPresetName(preset)) throw new CliError(`unknown preset '${preset}' (known: ${Object.keys(presets).join(', ')})`);
  return { preset, seed: num(args, 'model-seed', 0, { integer: true, min: 0 }) };
}

/** Applies --engine (before the backend is initialised, which resolves the engine). */
export function engineFrom(args: ParsedArgs): void {
  const e = str(args, 'engine');
  if (e === undefined) return;
  try {
    setEngine(parseEngine(e, '--engine'));
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

/**
 * Applies --threads to the native engine's sessions (src/native/runtime.ts reads the variable;
 * compute threads started afterwards inherit it): the option, else CHARON_NATIVE_THREADS, else
 * `fallback` (every core of the host: a command that has the host to itself).
 */
export function threadsFrom(args: ParsedArgs, fallback = availableParallelism()): void {
  if (str(args, 'threads') !== undefined) process.env.CHARON_NATIVE_THREADS = String(num(args, 'threads', 1, { integer: true, min: 1 }));
  else if (!process.env.CHARON_NATIVE_THREADS) process.env.CHARON_NATIVE_THREADS = String(fallback);
  try {
    nativeThreads();
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

export async function backendFrom(args: ParsedArgs): Promise<BackendInfo> {
  engineFrom(args);
  threadsFrom(args);
  const b = str(args, 'backend');
  if (b !== undefined && !['tensorflow', 'wasm', 'cpu'].includes(b))
    throw new CliError(`--backend must be tensorflow, wasm or cpu, got '${b}'`);
  return initBackend(b as BackendChoice | undefined);
}

/** Writes a log line to stderr (stdout carries only results). */
export function log(line: string): void {
  process.stderr.write(line + '\n');
}
