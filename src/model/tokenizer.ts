/**
 * Text <-> token ids through @huggingface/tokenizers, from a model directory's tokenizer.json
 * (and tokenizer_config.json when present). A directory without tokenizer.json, or a preset,
 * still works with token ids: only text input and text output fail, naming the missing file.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from './errors.ts';

export interface TextTokenizer {
  /** False when the model has no tokenizer.json; encode and decode then throw ModelLoadError. */
  readonly available: boolean;
  /** Token ids of `text`, without special tokens added. */
  encode(text: string): number[];
  decode(ids: number[]): string;
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(file, `not valid JSON (${(e as Error).message})`);
  }
}

/** The tokenizer of an HF model directory; `undefined` dir means a preset (no tokenizer). */
export function loadTokenizer(dir?: string): TextTokenizer {
  const file = dir ? join(dir, 'tokenizer.json') : undefined;
  if (!file || !existsSync(file)) {
    const missing = () => {
      throw new ModelLoadError(
        file ?? 'preset',
        file ? 'missing: text needs a tokenizer (pass token ids instead)' : 'presets have no tokenizer (pass token ids instead)',
      );
    };
    return { available: false, encode: missing, decode: missing };
  }
  const configFile = join(dir!, 'tokenizer_config.json');
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(readJson(file), existsSync(configFile) ? readJson(configFile) : {});
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
    throw new ModelLoadError(file, `unusable tokenizer (${(e as Error).message})`);
  }
  return {
    available: true,
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => tok.decode(ids, { skip_special_tokens: true }),
  };
}
