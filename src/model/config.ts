/**
 * Hugging Face `config.json` -> ModelConfig, for model_type gpt2 and the Llama family (llama,
 * mistral, qwen2). Every problem is a ModelLoadError naming config.json and the field.
 */
import { ModelLoadError } from './errors.ts';
import type { ModelConfig } from './types.ts';

type Json = Record<string, unknown>;

/** model_type values this module maps, by family. */
export const supportedModelTypes = { gpt2: ['gpt2'], llama: ['llama', 'mistral', 'qwen2'] } as const;

class Fields {
  constructor(
    private readonly raw: Json,
    private readonly file: string,
  ) {}

  int(name: string, fallback?: number): number {
    const v = this.raw[name] ?? fallback;
    if (v === undefined || v === null) throw new ModelLoadError(this.file, 'missing required field', name);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      throw new ModelLoadError(this.file, `must be a positive integer, got ${JSON.stringify(v)}`, name);
    return v;
  }

  num(name: string, fallback: number): number {
    const v = this.raw[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      throw new ModelLoadError(this.file, `must be a positive number, got ${JSON.stringify(v)}`, name);
    return v;
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw[name] ?? fallback;
    if (typeof v !== 'boolean') throw new ModelLoadError(this.file, `must be true or false, got ${JSON.stringify(v)}`, name);
    return v;
  }

  /** An optional token id; lists (several EOS ids) keep the first. */
  tokenId(name: string): number | undefined {
    const v = this.raw[name];
    const id = Array.isArray(v) ? v[0] : v;
    if (id === undefined || id === null) return undefined;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
      throw new ModelLoadError(this.file, `must be a token id, got ${JSON.stringify(v)}`, name);
    return id;
  }

  string(name: string, fallback: string): string {
    const v = this.raw[name] ?? fallback;
    if (typeof v !== 'string') throw new ModelLoadError(this.file, `must be a string, got ${JSON.stringify(v)}`, name);
    return v;
  }
}

function gpt2(f: Fields, file: string): ModelConfig {
  const dModel = f.int('n_embd');
  const nHeads = f.int('n_head');
  if (dModel % nHeads !== 0) throw new ModelLoadError(file, `n_embd ${dModel} is not divisible by n_head ${nHeads}`, 'n_head');
  const act = f.string('activation_function', 'gelu_new');
  if (act !== 'gelu_new')
    throw new ModelLoadError(file, `unsupported activation ${JSON.stringify(act)} (supported: gelu_new)`, 'activation_function');
  return {
    family: 'gpt2',
    vocabSize: f.int('vocab_size'),
    dModel,
    nLayers: f.int('n_layer'),
    nHeads,
    nKvHeads: nHeads,
    headDim: dModel / nHeads,
    dFF: f.int('n_inner', 4 * dModel),
    maxPositions: f.int('n_positions'),
    normEps: f.num('layer_norm_epsilon', 1e-5),
    tiedHead: f.bool('tie_word_embeddings', true),
    qkvBias: true,
    ropeTheta: 10000,
    activation: 'gelu_new',
    eosTokenId: f.tokenId('eos_token_id'),
  };
}

function llama(f: Fields, raw: Json, file: string, modelType: string): ModelConfig {
  const dModel = f.int('hidden_size');
  const nHeads = f.int('num_attention_heads');
  const nKvHeads = f.int('num_key_value_heads', nHeads);
  if (nHeads % nKvHeads !== 0)
    throw new ModelLoadError(
      file,
      `num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`,
      'num_key_value_heads',
    );
  if (raw.head_dim === undefined && dModel % nHeads !== 0)
    throw new ModelLoadError(file, `hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads}`, 'num_attention_heads');
  const headDim = f.int('head_dim', dModel / nHeads);
  if (headDim % 2 !== 0) throw new ModelLoadError(file, `rotary embeddings need an even head dimension, got ${headDim}`, 'head_dim');
  const act = f.string('hidden_act', 'silu');
  if (act !== 'silu') throw new ModelLoadError(file, `unsupported activation ${JSON.stringify(act)} (supported: silu)`, 'hidden_act');
  if (raw.rope_scaling !== undefined && raw.rope_scaling !== null)
    throw new ModelLoadError(file, 'rope scaling is not supported (only plain rotary embeddings)', 'rope_scaling');
  const maxPositions = f.int('max_position_embeddings');
  const sliding = raw.sliding_window;
  const slidingOn = modelType === 'mistral' ? sliding !== null && sliding !== undefined : raw.use_sliding_window === true;
  if (slidingOn && typeof sliding === 'number' && sliding < maxPositions) {
    throw new ModelLoadError(
      file,
      `sliding-window attention (${sliding} < max_position_embeddings ${maxPositions}) is not supported`,
      'sliding_window',
    );
  }
  return {
    family: 'llama',
    vocabSize: f.int('vocab_size'),
    dModel,
    nLayers: f.int('num_hidden_layers'),
    nHeads,
    nKvHeads,
    headDim,
    dFF: f.int('intermediate_size'),
    maxPositions,
    normEps: f.num('rms_norm_eps', 1e-6),
    tiedHead: f.bool('tie_word_embeddings', false),
    // Qwen2 always has q/k/v bias; Llama and Mistral only with attention_bias.
    qkvBias: modelType === 'qwen2' ? true : f.bool('attention_bias', false),
    ropeTheta: f.num('rope_theta', 10000),
    activation: 'silu',
    eosTokenId: f.tokenId('eos_token_id'),
  };
}

/**
 * Maps a parsed config.json. `file` names it in errors. Unknown or missing model_type is an error
 * listing the supported ones.
 */
export function configFromHf(raw: unknown, file = 'config.json'): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ModelLoadError(file, 'not a JSON object');
  const json = raw as Json;
  const f = new Fields(json, file);
  const modelType = json.model_type;
  const known = [...supportedModelTypes.gpt2, ...supportedModelTypes.llama];
  if (modelType === undefined) throw new ModelLoadError(file, `missing required field (one of ${known.join(', ')})`, 'model_type');
  if ((supportedModelTypes.gpt2 as readonly unknown[]).includes(modelType)) return gpt2(f, file);
  if ((supportedModelTypes.llama as readonly unknown[]).includes(modelType)) return llama(f, json, file, modelType as string);
  throw new ModelLoadError(file, `unknown model_type ${JSON.stringify(modelType)} (supported: ${known.join(', ')})`, 'model_type');
}

/** The inverse mapping, for writing HF-format directories (fixtures, exports). */
export function configToHf(c: ModelConfig): Json {
  if (c.family === 'gpt2') {
    return {
      model_type: 'gpt2',
      architectures: ['GPT2LMHeadModel'],
      vocab_size: c.vocabSize,
      n_embd: c.dModel,
      n_layer: c.nLayers,
      n_head: c.nHeads,
      n_inner: c.dFF,
      n_positions: c.maxPositions,
      n_ctx: c.maxPositions,
      layer_norm_epsilon: c.normEps,
      activation_function: 'gelu_new',
      tie_word_embeddings: c.tiedHead,
      ...(c.eosTokenId !== undefined ? { eos_token_id: c.eosTokenId, bos_token_id: c.eosTokenId } : {}),
    };
  }
  return {
    model_type: c.qkvBias ? 'qwen2' : 'llama',
    architectures: [c.qkvBias ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    vocab_size: c.vocabSize,
    hidden_size: c.dModel,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headDim,
    intermediate_size: c.dFF,
    max_position_embeddings: c.maxPositions,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    hidden_act: 'silu',
    tie_word_embeddings: c.tiedHead,
    ...(c.eosTokenId !== undefined ? { eos_token_id: c.eosTokenId } : {}),
  };
}
