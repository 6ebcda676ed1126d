/**
 * What a distributed run reads from its topology's data: text is tokenised with the model's own
 * tokenizer (as `charon train` does), and labelled data carries its class names to every device.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeHfModel, tempDir } from './fixtures/hf-model.ts';
import { parseTopology } from '../src/topology/load.ts';
import { loadRunData, specFromTopology } from '../src/train/run-spec.ts';
import { DataError } from '../src/train/data.ts';

const tokenizerJson = {
  version: '1.0',
  truncation: null,
  padding: null,
  normalizer: null,
  post_processor: null,
  added_tokens: [],
  pre_tokenizer: { type: 'Whitespace' },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: {
    type: 'WordPiece',
    unk_token: '[UNK]',
    continuing_subword_prefix: '##',
    max_input_chars_per_word: 100,
    vocab: { '[UNK]': 0, my: 1, notes: 2, are: 3, private: 4 },
  },
};

function topology(modelDir: string, dataFile: string) {
  return parseTopology(
    [
      'run: spec',
      `model: { dir: ${JSON.stringify(modelDir)} }`,
      'method: { kind: parallel, k: 8 }',
      `data: { file: ${JSON.stringify(dataFile)} }`,
      'training: { epochs: 1, batch: 2 }',
      'devices: [ { name: a, memoryMb: 512 } ]',
      '',
    ].join('\n'),
    't.yaml',
  );
}

test('run spec: "text" data is tokenised with the model\'s tokenizer.json', () => {
  const { dir } = makeHfModel({ preset: 'tiny' });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  const data = join(tempDir(), 'notes.jsonl');
  writeFileSync(data, '{"text": "my notes are private"}\n{"text": "private notes"}\n');
  const spec = specFromTopology(topology(dir, data));
  assert.is(spec.samples, 2);
  const ds = loadRunData(spec);
  assert.equal([...ds.samples[0]!.ids], [1, 2, 3, 4]);
  assert.equal([...ds.samples[1]!.ids], [4, 2]);
});

test('run spec: labelled data names its classes; a device whose copy differs is refused by file', () => {
  const { dir } = makeHfModel({ preset: 'tiny' });
  const data = join(tempDir(), 'mail.jsonl');
  writeFileSync(data, '{"ids": [1, 2, 3], "label": "spam"}\n{"ids": [4, 5], "label": "ham"}\n');
  const spec = specFromTopology(topology(dir, data));
  assert.equal(spec.labelNames, ['ham', 'spam']);
  assert.equal(
    loadRunData(spec).samples.map((s) => s.label),
    [1, 0],
  );
  writeFileSync(data, '{"ids": [1, 2, 3], "label": "spam"}\n{"ids": [4, 5], "label": "eggs"}\n');
  assert.throws(
    () => loadRunData(spec),
    (e: unknown) =>
      e instanceof DataError &&
      e.message.startsWith(data) &&
      /labelled eggs, spam, the run's has 2 samples labelled ham, spam/.test(e.message),
  );
});

test.run();
