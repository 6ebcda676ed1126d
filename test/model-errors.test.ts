import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '../src/model/backend.ts';
import { configFromHf } from '../src/model/config.ts';
import { ModelLoadError } from '../src/model/errors.ts';
import { loadBackbone } from '../src/model/load.ts';
import { openSafetensors } from '../src/model/safetensors.ts';
import { makeHfModel, tempDir } from './fixtures/hf-model.ts';

await initBackend();

/** Asserts the load fails with one ModelLoadError whose message contains every fragment. */
async function failsWith(load: () => Promise<unknown>, file: string | RegExp, ...fragments: (string | RegExp)[]): Promise<ModelLoadError> {
  try {
    await load();
  } catch (e) {
    assert.instance(e, ModelLoadError, String(e));
    const err = e as ModelLoadError;
    assert.ok(typeof file === 'string' ? err.file.endsWith(file) : file.test(err.file), `file ${err.file}`);
    assert.not.match(err.message, /\n/, 'one line');
    for (const f of fragments) assert.match(err.message, f);
    return err;
  }
  assert.unreachable('the load succeeded');
  throw new Error('unreachable');
}

test('model-errors: missing model directory', async () => {
  await failsWith(() => loadBackbone({ dir: '/nonexistent/model' }), '/nonexistent/model', 'model directory not found');
});

test('model-errors: a file given as the model directory', async () => {
  const f = makeHfModel({ preset: 'tiny' });
  await failsWith(() => loadBackbone({ dir: join(f.dir, 'config.json') }), 'config.json', 'not a directory');
});

test('model-errors: directory without config.json', async () => {
  await failsWith(() => loadBackbone({ dir: tempDir() }), 'config.json', 'missing');
});

test('model-errors: directory without weights', async () => {
  const f = makeHfModel({ preset: 'tiny' });
  rmSync(join(f.dir, 'model.safetensors'));
  await failsWith(() => loadBackbone({ dir: f.dir }), f.dir, 'model.safetensors.index.json');
});

test('model-errors: a missing config field is named', async () => {
  const f = makeHfModel({ preset: 'tiny', configOverrides: { n_embd: undefined } });
  const err = await failsWith(() => loadBackbone({ dir: f.dir }), 'config.json', 'n_embd', 'missing required field');
  assert.is(err.field, 'n_embd');
});

test('model-errors: a config field of the wrong type is named', async () => {
  const f = makeHfModel({ preset: 'tiny-llama', configOverrides: { num_hidden_layers: '2' } });
  await failsWith(() => loadBackbone({ dir: f.dir }), 'config.json', 'num_hidden_layers', 'positive integer');
});

test('model-errors: unknown model_type', async () => {
  const f = makeHfModel({ preset: 'tiny', configOverrides: { model_type: 't5' } });
  await failsWith(() => loadBackbone({ dir: f.dir }), 'config.json', 'model_type', /unknown model_type "t5"/, /gpt2, llama/);
});

test('model-errors: a tensor shape that disagrees with the config names tensor, expected and actual', async () => {
  const f = makeHfModel({ preset: 'tiny', configOverrides: { vocab_size: 300 } });
  await failsWith(() => loadBackbone({ dir: f.dir }), 'model.safetensors', 'transformer.wte.weight', /\[256,64\]/, /expected \[300,64\]/);
  const g = makeHfModel({ preset: 'tiny-llama', configOverrides: { num_key_value_heads: 4 } });
  await failsWith(() => loadBackbone({ dir: g.dir }), 'model.safetensors', 'model.layers.0.self_attn.k_proj.weight', /expected \[64,64\]/);
});

test('model-errors: a missing tensor is named', async () => {
  const f = makeHfModel({ preset: 'tiny-llama', overrides: { qkvBias: false }, configOverrides: { model_type: 'qwen2' } });
  await failsWith(() => loadBackbone({ dir: f.dir }), 'model.safetensors', 'model.layers.0.self_attn.q_proj.bias', 'tensor missing');
});

test('model-errors: corrupt safetensors headers', async () => {
  const f = makeHfModel({ preset: 'tiny' });
  const file = join(f.dir, 'model.safetensors');
  const good = readFileSync(file);
  const bad = Buffer.from(good);
  bad.writeBigUInt64LE(BigInt(good.length * 2), 0);
  writeFileSync(file, bad);
  await failsWith(() => loadBackbone({ dir: f.dir }), 'model.safetensors', 'corrupt safetensors header', 'does not fit');
  const garbled = Buffer.from(good);
  garbled.write('#', 9);
  writeFileSync(file, garbled);
  await failsWith(() => loadBackbone({ dir: f.dir }), 'model.safetensors', 'not valid JSON');
  writeFileSync(file, good.subarray(0, good.length - 100));
  await failsWith(() => loadBackbone({ dir: f.dir }), 'model.safetensors', 'data_offsets');
  writeFileSync(file, Buffer.alloc(4));
  await failsWith(async () => openSafetensors(file), 'model.safetensors', 'not a safetensors file');
});

test('model-errors: an index pointing at a shard that lacks the tensor', async () => {
  const f = makeHfModel({ preset: 'tiny', shards: 2 });
  const indexFile = join(f.dir, 'model.safetensors.index.json');
  const index = JSON.parse(readFileSync(indexFile, 'utf8'));
  index.weight_map['transformer.wte.weight'] = 'model-00002-of-00002.safetensors';
  writeFileSync(indexFile, JSON.stringify(index));
  await failsWith(
    () => loadBackbone({ dir: f.dir }),
    'model-00002-of-00002.safetensors',
    'transformer.wte.weight',
    /missing from the shard/,
  );
});

test('model-errors: config mapping of the Llama family', () => {
  const base = {
    vocab_size: 100,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 64,
    max_position_embeddings: 64,
  };
  const qwen = configFromHf({ ...base, model_type: 'qwen2', num_key_value_heads: 2, tie_word_embeddings: true, rope_theta: 1e6 });
  assert.equal([qwen.family, qwen.qkvBias, qwen.nKvHeads, qwen.tiedHead, qwen.ropeTheta, qwen.headDim], ['llama', true, 2, true, 1e6, 8]);
  const llama = configFromHf({ ...base, model_type: 'llama' });
  assert.equal([llama.qkvBias, llama.nKvHeads, llama.tiedHead, llama.ropeTheta], [false, 4, false, 10000]);
  assert.is(configFromHf({ ...base, model_type: 'mistral', sliding_window: 4096 }).family, 'llama');
  assert.throws(() => configFromHf({ ...base, model_type: 'mistral', sliding_window: 16 }), /sliding_window/);
  assert.throws(() => configFromHf({ ...base, model_type: 'llama', num_key_value_heads: 3 }), /num_key_value_heads/);
  assert.throws(() => configFromHf({ ...base, model_type: 'llama', rope_scaling: { type: 'linear', factor: 2 } }), /rope_scaling/);
  assert.throws(() => configFromHf({ ...base }), /model_type: missing required field/);
});

test.run();
