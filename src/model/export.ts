/**
 * Writes a model as a Hugging Face directory (config.json + model.safetensors, or shards with
 * model.safetensors.index.json), in either family's naming and layout. Used to turn presets into
 * HF checkpoints (test fixtures, round-trip checks, sharing a preset with PyTorch).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configToHf } from './config.ts';
import { gpt2Mapping } from './gpt2.ts';
import { llamaMapping } from './llama.ts';
import { writeSafetensors, type SafetensorsDtype } from './safetensors.ts';
import type { ModelConfig } from './types.ts';
import type { WeightData } from './weights.ts';

export interface HfExportOptions {
  /** Stored dtype of every tensor (default F32). */
  dtype?: SafetensorsDtype;
  /** Number of shard files; above 1 an index is written instead of model.safetensors. */
  shards?: number;
  /** GPT-2 only: bare names (`h.0...`, GPT2Model) instead of `transformer.h.0...`. */
  bareNames?: boolean;
  /** Extra or overriding config.json fields (e.g. to write a deliberately broken fixture). */
  configOverrides?: Record<string, unknown>;
}

/**
 * Writes `weights` (canonical names, every layer, embedding and head) for `config` into `dir`
 * (created if needed). Returns the files written.
 */
export function writeHfModel(dir: string, config: ModelConfig, weights: Map<string, WeightData>, options: HfExportOptions = {}): string[] {
  mkdirSync(dir, { recursive: true });
  const mapping = config.family === 'gpt2' ? gpt2Mapping : llamaMapping;
  const hf = mapping.write(config, weights, { bareNames: options.bareNames });
  const files: string[] = [];
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify({ ...configToHf(config), ...options.configOverrides }, null, 2) + '\n');
  files.push(configFile);
  const dtype = options.dtype ?? 'F32';
  const shards = Math.max(1, Math.min(options.shards ?? 1, hf.size));
  const metadata = { format: 'pt' };
  if (shards === 1) {
    const file = join(dir, 'model.safetensors');
    writeSafetensors(file, hf, { dtype, metadata });
    files.push(file);
    return files;
  }
  const names = [...hf.keys()];
  const per = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let s = 0; s < shards; s++) {
    const shardName = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = new Map(names.slice(s * per, (s + 1) * per).map((n) => [n, hf.get(n)!]));
    for (const [n, t] of part) {
      weightMap[n] = shardName;
      totalSize += t.data.length * (dtype === 'F32' ? 4 : 2);
    }
    const file = join(dir, shardName);
    writeSafetensors(file, part, { dtype, metadata });
    files.push(file);
  }
  const index = join(dir, 'model.safetensors.index.json');
  writeFileSync(index, JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n');
  files.push(index);
  return files;
}
