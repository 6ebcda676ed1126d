import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { countPieces, tokenizerConfigJson, tokenizerJson, trainBpe } from '../src/model/bpe.ts';
import { initBackend } from '../src/model/backend.ts';
import { loadBackbone } from '../src/model/load.ts';
import { backboneHidden } from '../src/model/methods/method.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { mailbox, seededSplit } from '../tools/corpora.ts';
import { prepareDemoData } from '../tools/demo-data.ts';
import { tempDir } from './fixtures/hf-model.ts';

const shipped = join(import.meta.dirname, '..', 'models', 'charon-mini');
const texts = [
  'The state of the Union is strong, and the Congress of the United States has met.',
  "Mr. Speaker, we've got 20 million new jobs -- the lowest unemployment in 30 years!",
  'Ünïcödé, 日本語 and emoji 🚀 go through bytes;\ttabs\n\nand blank lines too .',
  'spaces before punctuation stay : " . , ! ?" and so do   runs of spaces ',
];

test('pretrain-demo: the BPE trainer writes a tokenizer.json the project loader round-trips', () => {
  const bpe = trainBpe(countPieces(texts.concat(texts)), { vocabSize: 300, specialTokens: ['<|endoftext|>'] });
  assert.ok(bpe.tokens.length <= 300 && bpe.tokens.length > 257, `${bpe.tokens.length} tokens`);
  assert.is(new Set(bpe.tokens).size, bpe.tokens.length, 'every token string is unique');
  assert.is(bpe.special.get('<|endoftext|>'), bpe.tokens.length - 1);
  const again = trainBpe(countPieces([...texts].reverse().concat(texts)), { vocabSize: 300, specialTokens: ['<|endoftext|>'] });
  assert.equal(again.merges, bpe.merges, 'merges depend on the counts only, not on the input order');
  const dir = tempDir();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(bpe)));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfigJson(bpe, 64)));
  const tok = loadTokenizer(dir);
  for (const t of texts) {
    const ids = tok.encode(t);
    assert.ok(ids.length < Buffer.byteLength(t), 'merges shorten the byte sequence');
    assert.is(tok.decode(ids), t);
  }
  assert.equal(tok.encode('<|endoftext|>'), [bpe.tokens.length - 1]);
});

test('pretrain-demo: the shipped model loads, fits the size budget and its tokenizer round-trips text', async () => {
  await initBackend('cpu');
  const bytes = ['config.json', 'model.safetensors', 'tokenizer.json'].reduce((a, f) => a + statSync(join(shipped, f)).size, 0);
  assert.ok(bytes <= 12 * 2 ** 20, `${bytes} bytes on disk`);
  const backbone = await loadBackbone({ dir: shipped });
  const tok = loadTokenizer(shipped);
  assert.is(backbone.config.family, 'gpt2');
  for (const t of [...texts, mailbox()[0]!.body]) assert.is(tok.decode(tok.encode(t)), t);
  const ids = tok.encode('The Congress of the United States');
  assert.ok(Math.max(...ids) < backbone.config.vocabSize);
  const logits = tf.tidy(() => backbone.head(backboneHidden(backbone, tf.tensor2d([ids], [1, ids.length], 'int32'))));
  assert.equal(logits.shape, [ids.length, backbone.config.vocabSize]);
  assert.ok((logits.dataSync() as Float32Array).every(Number.isFinite));
  logits.dispose();
  // What the model's README states comes from training.json: it must beat the unigram baseline.
  const run = JSON.parse(readFileSync(join(shipped, 'training.json'), 'utf8'));
  assert.ok(run.heldOut.perplexity < run.unigram.perplexity, `held-out ${run.heldOut.perplexity} vs unigram ${run.unigram.perplexity}`);
});

test('pretrain-demo: demo data is the same for the same seed, disjoint between train and held-out', () => {
  const tok = loadTokenizer(shipped);
  const o = { tokens: 32, styleTrain: 12, styleHeldOut: 6, spamTrain: 5, spamHeldOut: 3 };
  const read = (dir: string, seed: number) => {
    const d = prepareDemoData(dir, tok, { seed, ...o });
    return Object.fromEntries(Object.entries(d.files).map(([k, f]) => [k, readFileSync(f, 'utf8')]));
  };
  const a = read(tempDir(), 7),
    b = read(tempDir(), 7),
    c = read(tempDir(), 8);
  assert.equal(a, b);
  assert.is.not(a.styleTrain, c.styleTrain);
  const rows = (s: string) =>
    s
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { text: string; label?: string });
  assert.is(rows(a.styleTrain!).length, 12);
  assert.is(rows(a.styleHeldOut!).length, 6);
  const spam = rows(a.spamTrain!);
  assert.is(spam.length, 10);
  assert.is(spam.filter((r) => r.label === 'spam').length, 5);
  for (const r of spam) assert.ok(tok.encode(r.text).length <= 32 + 4);
  const names = (x: { name: string }[]) => new Set(x.map((m) => m.name));
  const split = seededSplit(mailbox(), 0.2, 7);
  const train = names(split.train);
  for (const n of names(split.heldOut)) assert.not.ok(train.has(n));
});

test.run();
