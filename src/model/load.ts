/**
 * Loading a backbone from a Hugging Face model directory or a built-in preset. Only the weights
 * of the requested range are read from disk and created; every problem is one ModelLoadError
 * naming the file and the field or tensor.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TransformerBackbone, fullRange } from './backbone.ts';
import { backendName } from './backend.ts';
import { configFromHf } from './config.ts';
import { frozenHeadFactory, frozenLayerFactory } from './engine.ts';
import { ModelLoadError } from './errors.ts';
import { gpt2Mapping } from './gpt2.ts';
import { llamaMapping } from './llama.ts';
import { isPresetName, presetWeights, presets, type PresetName } from './presets.ts';
import { openSafetensors, openSafetensorsIndex, type TensorSource } from './safetensors.ts';
import type { Backbone, BackboneRange, ModelConfig } from './types.ts';
import type { WeightData } from './weights.ts';

/** Where a model comes from: an HF-format directory, or a preset with a seed (default 0). */
export type ModelSource = { dir: string } | { preset: PresetName; seed?: number };

function checkDir(dir: string): void {
  if (!existsSync(dir)) throw new ModelLoadError(dir, 'model directory not found');
  if (!statSync(dir).isDirectory())
    throw new ModelLoadError(dir, 'not a directory (expected a Hugging Face model directory with config.json)');
}

/** Reads and maps `config.json` of a directory, or returns a preset's config. */
export function loadConfig(source: ModelSource): ModelConfig {
  if ('preset' in source) {
    if (!isPresetName(source.preset))
      throw new ModelLoadError(String(source.preset), `unknown preset (known: ${Object.keys(presets).join(', ')})`);
    return { ...presets[source.preset] };
  }
  checkDir(source.dir);
  const file = join(source.dir, 'config.json');
  if (!existsSync(file)) throw new ModelLoadError(file, 'missing (a Hugging Face model directory needs config.json)');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(file, `not valid JSON (${(e as Error).message})`);
  }
  return configFromHf(raw, file);
}

/** Fills a partial range with the full model's defaults and checks it against the config. */
export function resolveRange(c: ModelConfig, range: Partial<BackboneRange> = {}): BackboneRange {
  const r = { ...fullRange(c), ...range };
  if (!Number.isInteger(r.from) || !Number.isInteger(r.to) || r.from < 1 || (r.from <= r.to && r.to > c.nLayers)) {
    throw new Error(`backbone range: layers ${r.from}..${r.to} are outside 1..${c.nLayers}`);
  }
  return r;
}

/** Opens the directory's weights: model.safetensors, else model.safetensors.index.json. */
export function openWeights(dir: string): { src: TensorSource; file: string } {
  const single = join(dir, 'model.safetensors');
  if (existsSync(single)) return { src: openSafetensors(single), file: single };
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) return { src: openSafetensorsIndex(index), file: index };
  throw new ModelLoadError(dir, 'no weights: neither model.safetensors nor model.safetensors.index.json exists');
}

function sha(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/**
 * Reads the weights of `r` one part at a time (the embedding, each layer, the final norm and
 * head), yielding to the event loop between parts: making a whole model's weights at once would
 * block it too long, and a device process must keep sending heartbeats while it loads.
 */
async function readByParts(r: BackboneRange, read: (part: BackboneRange) => Map<string, WeightData>): Promise<Map<string, WeightData>> {
  const parts: BackboneRange[] = [];
  if (r.embed) parts.push({ from: 1, to: 0, embed: true, head: false });
  for (let i = r.from; i <= r.to; i++) parts.push({ from: i, to: i, embed: false, head: false });
  if (r.head) parts.push({ from: 1, to: 0, embed: false, head: true });
  const out = new Map<string, WeightData>();
  for (const part of parts) {
    for (const [name, w] of read(part)) out.set(name, w);
    await new Promise((res) => setImmediate(res));
  }
  return out;
}

/**
 * Loads the backbone layers of `range` (default: everything). The fingerprint depends on the
 * config and the weight files' headers and sizes (or the preset and seed), never on the range,
 * so every stage of one model agrees on it.
 */
export async function loadBackbone(source: ModelSource, range?: Partial<BackboneRange>): Promise<Backbone> {
  const config = loadConfig(source);
  const r = resolveRange(config, range);
  if ('preset' in source) {
    const seed = source.seed ?? 0;
    const weights = () => presetWeights(config, r, seed);
    return new TransformerBackbone(
      config,
      r,
      await readByParts(r, (part) => presetWeights(config, part, seed)),
      sha(`preset:${source.preset}:${seed}:${JSON.stringify(config)}`),
      weights,
      frozenLayerFactory(config, r, backendName()),
      frozenHeadFactory(backendName()),
    );
  }
  const { src, file } = openWeights(source.dir);
  const mapping = config.family === 'gpt2' ? gpt2Mapping : llamaMapping;
  const signature = src.signature;
  const weights = () => {
    const again = openWeights(source.dir);
    if (again.src.signature !== signature)
      throw new Error(`model ${source.dir}: weight files changed since they were loaded; cannot reload released layers`);
    return mapping.read(config, r, again.src, again.file);
  };
  return new TransformerBackbone(
    config,
    r,
    await readByParts(r, (part) => mapping.read(config, part, src, file)),
    sha(`${JSON.stringify(config)}\n${signature}`),
    weights,
    frozenLayerFactory(config, r, backendName()),
    frozenHeadFactory(backendName()),
  );
}
