/**
 * Training data: JSONL files, the seeded Markov-chain set used by tests and benches, the
 * deterministic per-epoch order and fixed-length batches. A sample's id is its 0-based line
 * index among the data lines of its file: the ledger and the activation cache key on it.
 */
import { readFileSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createRng, permutation } from './rng.ts';

export interface Sample {
  id: number;
  ids: Int32Array;
  /** Class index, for classification data. */
  label?: number;
}

export interface Dataset {
  samples: Sample[];
  /** Class names in index order when the data is labelled (labels given as strings or integers). */
  labelNames?: string[];
}

/** A data problem at file:line; the message is one line a user can act on. */
export class DataError extends Error {
  override name = 'DataError';
}

export interface LoadOptions {
  /** Ids must be in [0, vocabSize). */
  vocabSize: number;
  /** Turns `"text"` into ids; without it a `"text"` line is an error. */
  encode?: (text: string) => number[];
}

/**
 * Reads a JSONL file of `{"text": ...}` or `{"ids": [...]}` objects, each optionally with a
 * `"label"` (string or integer). Either every line has a label or none has. Throws DataError
 * naming file:line for malformed JSON, missing fields, empty sequences and ids outside the vocabulary.
 */
export function loadJsonl(file: string, opts: LoadOptions): Dataset {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new DataError(`${file}: cannot read data file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const raw: { ids: Int32Array; label?: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const where = `${file}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new DataError(`${where}: malformed JSON (${(err as Error).message})`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
      throw new DataError(`${where}: expected a JSON object with "text" or "ids"`);
    const o = obj as Record<string, unknown>;
    const ids = sampleIds(o, where, opts);
    const label = o.label;
    if (label !== undefined && typeof label !== 'string' && !(typeof label === 'number' && Number.isInteger(label) && label >= 0)) {
      throw new DataError(`${where}: "label" must be a string or a non-negative integer`);
    }
    if (raw.length > 0 && (label === undefined) !== (raw[0]!.label === undefined))
      throw new DataError(`${where}: "label" must be on every line or on none`);
    raw.push({ ids, label: label === undefined ? undefined : String(label) });
  }
  if (raw.length === 0) throw new DataError(`${file}: no samples (the file has no data lines)`);
  if (raw[0]!.label === undefined) return { samples: raw.map((r, id) => ({ id, ids: r.ids })) };
  const labelNames = [...new Set(raw.map((r) => r.label!))].sort(labelOrder);
  const index = new Map(labelNames.map((n, i) => [n, i]));
  return { samples: raw.map((r, id) => ({ id, ids: r.ids, label: index.get(r.label!)! })), labelNames };
}

function sampleIds(o: Record<string, unknown>, where: string, opts: LoadOptions): Int32Array {
  let ids: number[];
  if (o.ids !== undefined) {
    if (!Array.isArray(o.ids)) throw new DataError(`${where}: "ids" must be an array of integers`);
    ids = o.ids as number[];
    for (let k = 0; k < ids.length; k++) {
      const v = ids[k];
      if (typeof v !== 'number' || !Number.isInteger(v)) throw new DataError(`${where}: "ids"[${k}] is not an integer`);
    }
  } else if (typeof o.text === 'string') {
    if (!opts.encode) throw new DataError(`${where}: "text" needs a tokenizer (the model has no tokenizer.json); give "ids" instead`);
    ids = opts.encode(o.text);
  } else {
    throw new DataError(`${where}: expected a "text" string or an "ids" array`);
  }
  if (ids.length === 0) throw new DataError(`${where}: empty sequence`);
  for (let k = 0; k < ids.length; k++) {
    if (ids[k]! < 0 || ids[k]! >= opts.vocabSize)
      throw new DataError(`${where}: token id ${ids[k]} at position ${k} is outside the vocabulary [0, ${opts.vocabSize})`);
  }
  return Int32Array.from(ids);
}

/** Integer-looking labels sort numerically, the rest lexically. */
function labelOrder(a: string, b: string): number {
  const na = Number(a),
    nb = Number(b);
  if (Number.isInteger(na) && Number.isInteger(nb)) return na - nb;
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface MarkovOptions {
  vocab: number;
  sequences: number;
  length: number;
  seed: number;
}

/**
 * The synthetic language of the W1 workload: each token has exactly 4 distinct possible
 * successors (fixed by the seed), each equally likely; the first token is uniform. A model can
 * learn it down to ln 4 nats per predicted token.
 */
export function markovDataset(o: MarkovOptions): Dataset & { successors: Int32Array } {
  if (o.vocab < 5) throw new DataError(`markov data needs a vocabulary of at least 5 tokens, got ${o.vocab}`);
  const rng = createRng(o.seed, 0x4d41524b);
  const successors = new Int32Array(o.vocab * 4);
  for (let t = 0; t < o.vocab; t++) {
    const chosen = new Set<number>();
    while (chosen.size < 4) chosen.add(rng.int(o.vocab));
    successors.set([...chosen], t * 4);
  }
  const samples: Sample[] = [];
  for (let s = 0; s < o.sequences; s++) {
    const ids = new Int32Array(o.length);
    ids[0] = rng.int(o.vocab);
    for (let t = 1; t < o.length; t++) ids[t] = successors[ids[t - 1]! * 4 + rng.int(4)]!;
    samples.push({ id: s, ids });
  }
  return { samples, successors };
}

/** Writes samples as `{"ids": [...]}` lines (plus "label" when present) atomically. */
export function writeJsonl(file: string, data: Dataset): void {
  const lines = data.samples.map((s) =>
    JSON.stringify(
      s.label === undefined ? { ids: Array.from(s.ids) } : { ids: Array.from(s.ids), label: data.labelNames?.[s.label] ?? s.label },
    ),
  );
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, lines.join('\n') + '\n');
  renameSync(tmp, file);
}

/** The order of sample indices 0..n-1 for `epoch` (0-based): a pure function of (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  return permutation(n, createRng(seed, 0x45504f43, epoch));
}

/** Splits an order into mini-batches of `batch` sample indices; the last one may be shorter. */
export function miniBatches(order: number[], batch: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < order.length; i += batch) out.push(order.slice(i, i + batch));
  return out;
}

/** The mini-batches of a 1-based epoch: a pure function of (samples, seed, epoch, batch). */
export function epochSteps(run: { samples: number; seed: number; batch: number }, epoch: number): number[][] {
  return miniBatches(epochOrder(run.samples, run.seed, epoch - 1), run.batch);
}

/** A fixed-length batch: (B, T) ids padded with `padId`, a 0/1 mask, and labels when present. */
export interface Batch {
  sampleIds: number[];
  batch: number;
  seqLen: number;
  ids: Int32Array;
  mask: Float32Array;
  labels?: Int32Array;
}

/** Truncates or pads each sample to `seqLen` tokens. */
export function makeBatch(samples: Sample[], seqLen: number, padId = 0): Batch {
  const B = samples.length;
  const ids = new Int32Array(B * seqLen).fill(padId),
    mask = new Float32Array(B * seqLen);
  samples.forEach((s, b) => {
    const n = Math.min(seqLen, s.ids.length);
    ids.set(s.ids.subarray(0, n), b * seqLen);
    mask.fill(1, b * seqLen, b * seqLen + n);
  });
  const labelled = samples.every((s) => s.label !== undefined);
  return {
    sampleIds: samples.map((s) => s.id),
    batch: B,
    seqLen,
    ids,
    mask,
    labels: labelled ? Int32Array.from(samples.map((s) => s.label!)) : undefined,
  };
}

/** Real tokens of each of `rows` rows of a (rows, T) 0/1 mask, at least 1 (what the classification head pools over). */
export function sequenceLengths(mask: Float32Array, rows: number, seqLen: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < rows; b++) {
    let n = 0;
    for (let t = 0; t < seqLen; t++) n += mask[b * seqLen + t]!;
    out.push(Math.max(1, n));
  }
  return out;
}

/** The sequence length a data set needs: its longest sample, capped by the model's context. */
export function sequenceLength(data: Dataset, maxPositions: number): number {
  let longest = 1;
  for (const s of data.samples) longest = Math.max(longest, s.ids.length);
  return Math.min(longest, maxPositions);
}
