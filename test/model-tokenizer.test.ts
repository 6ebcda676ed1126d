import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../src/model/errors.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { tempDir } from './fixtures/hf-model.ts';

const tokenizerJson = {
  version: '1.0',
  truncation: null,
  padding: null,
  normalizer: null,
  post_processor: null,
  added_tokens: [{ id: 5, content: '<eos>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
  pre_tokenizer: { type: 'Whitespace' },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: {
    type: 'WordPiece',
    unk_token: '[UNK]',
    continuing_subword_prefix: '##',
    max_input_chars_per_word: 100,
    vocab: { '[UNK]': 0, hello: 1, world: 2, wor: 3, '##ld': 4, '<eos>': 5 },
  },
};

test('model-tokenizer: encodes and decodes through tokenizer.json', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<eos>' }));
  const tok = loadTokenizer(dir);
  assert.ok(tok.available);
  assert.equal(tok.encode('hello world <eos>'), [1, 2, 5]);
  assert.equal(tok.encode('hello xyz'), [1, 0]);
  assert.is(tok.decode([1, 3, 4, 5]), 'hello world');
});

test('model-tokenizer: without tokenizer.json text fails naming the file, ids still work', () => {
  const dir = tempDir();
  const tok = loadTokenizer(dir);
  assert.not.ok(tok.available);
  assert.throws(
    () => tok.encode('hi'),
    (e: unknown) => e instanceof ModelLoadError && e.file === join(dir, 'tokenizer.json') && /pass token ids/.test(e.message),
  );
  assert.throws(() => loadTokenizer().decode([1]), /presets have no tokenizer/);
});

test('model-tokenizer: a malformed tokenizer.json is one clear error', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
  assert.throws(
    () => loadTokenizer(dir),
    (e: unknown) => e instanceof ModelLoadError && /tokenizer\.json: not valid JSON/.test(e.message),
  );
});

test.run();
