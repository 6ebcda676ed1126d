/**
 * What every train/eval/generate entry point does first: open the model (directory or preset),
 * build the fine-tuning method, and apply a trained adapter checkpoint to it.
 */
import * as tf from '@tensorflow/tfjs';
import { loadBackbone, type ModelSource } from '../model/load.ts';
import { loadTokenizer, type TextTokenizer } from '../model/tokenizer.ts';
import { createMethod, methodNames, type FineTuneMethod, type MethodName, type MethodOptions } from '../model/methods/index.ts';
import { ClassificationHead } from '../model/methods/heads.ts';
import type { Backbone } from '../model/types.ts';
import { CheckpointError, loadCheckpoint, type CheckpointMeta } from './checkpoint.ts';

export interface OpenedModel {
  backbone: Backbone;
  tokenizer: TextTokenizer;
  source: ModelSource;
}

/** Loads the whole backbone and its tokenizer (presets have none: token ids only). */
export async function openModel(source: ModelSource): Promise<OpenedModel> {
  const backbone = await loadBackbone(source);
  const tokenizer = loadTokenizer('dir' in source ? source.dir : undefined);
  return { backbone, tokenizer, source };
}

export function parseMethodName(name: string): MethodName {
  if (!(methodNames as readonly string[]).includes(name))
    throw new Error(`unknown method '${name}' (expected one of ${methodNames.join(', ')})`);
  return name as MethodName;
}

export interface AdaptedModel {
  method: FineTuneMethod;
  head?: ClassificationHead;
  meta?: CheckpointMeta;
}

/**
 * The model to evaluate or generate with: with `adapterDir`, the checkpoint's method carrying its
 * trained parameters (and classification head); without, the base model (a fresh LoRA, which
 * equals the base model at step 0).
 */
export function adaptedModel(backbone: Backbone, adapterDir?: string): AdaptedModel {
  if (!adapterDir) return { method: createMethod('lora', backbone, {}, 0) };
  const { meta, state } = loadCheckpoint(adapterDir);
  if (meta.modelFingerprint !== backbone.fingerprint)
    throw new CheckpointError(
      `${adapterDir}: adapter was trained on another model (fingerprint ${meta.modelFingerprint.slice(0, 12)}, this model ${backbone.fingerprint.slice(0, 12)})`,
    );
  const method = createMethod(meta.method, backbone, meta.options, meta.seed);
  const head = meta.labelNames ? new ClassificationHead(backbone.config.dModel, meta.labelNames.length, meta.seed) : undefined;
  const params = new Map([...method.parameters(), ...(head?.parameters() ?? [])]);
  for (const [name, v] of params) {
    const p = state.parameters.get(name);
    if (!p || p.data.length !== v.size) throw new CheckpointError(`${adapterDir}: parameter '${name}' is missing or has the wrong size`);
    v.assign(tf.tensor(p.data, v.shape));
  }
  return { method, head, meta };
}

export type { MethodName, MethodOptions };
