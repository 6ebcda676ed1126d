/**
 * The demo's data: the SpamAssassin corpus as someone's mailbox, split by a seed into train and
 * held-out messages, written as JSONL the way a user would bring their own data. Two sets:
 *  - style: windows of the prose in the ham messages' bodies (the person's mail), for language modelling;
 *  - spam: subject + start of body of spam and ham messages with "label", for classification,
 *    the same number of each class.
 * Every choice is a seeded permutation, so a seed always gives byte-identical files.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TextTokenizer } from '../src/model/tokenizer.ts';
import { createRng, permutation } from '../src/train/rng.ts';
import { mailbox, seededSplit, type Mail } from './corpora.ts';

export interface DemoDataOptions {
  seed: number;
  /** Tokens per sample (windows of the style set; the cut of a classification sample). */
  tokens: number;
  styleTrain: number;
  styleHeldOut: number;
  /** Samples per class. */
  spamTrain: number;
  spamHeldOut: number;
  /** Fraction of the messages held out (default 0.2). */
  heldOut?: number;
}

export interface DemoData {
  files: { styleTrain: string; styleHeldOut: string; spamTrain: string; spamHeldOut: string };
  counts: { messages: number; trainMessages: number; heldOutMessages: number };
}

/** Text windows of `tokens` tokens of `text`, cut at token boundaries (the last, shorter one kept if it has at least a quarter). */
function textWindows(tok: TextTokenizer, text: string, tokens: number): string[] {
  const ids = tok.encode(text);
  const out: string[] = [];
  for (let i = 0; i < ids.length; i += tokens) {
    const part = ids.slice(i, i + tokens);
    if (part.length >= Math.max(2, tokens / 4)) out.push(tok.decode(part));
  }
  return out;
}

/** `n` items of `items` in a seeded order (the stream `salt` of `seed`). */
function pick<T>(items: T[], n: number, seed: number, salt: number): T[] {
  return permutation(items.length, createRng(seed, salt))
    .slice(0, n)
    .map((i) => items[i]!);
}

/**
 * The lines of a body someone wrote: prose, without links, addresses, mailing-list footers, rules
 * and code (those are what the list software or other people wrote, not the person's style).
 */
export function proseOf(body: string): string {
  return body
    .split('\n')
    .filter((l) => {
      const t = l.trim();
      if (t === '') return true;
      if (/https?:|www\.|@|^_{3,}|^-{3,}|^={3,}|mailing list|unsubscribe|sponsored by/i.test(t)) return false;
      const letters = (t.match(/[A-Za-z ]/g) ?? []).length;
      return letters / t.length >= 0.8 && /[a-z]{2,} [a-z]{2,}/i.test(t);
    })
    .join('\n')
    .replace(/\n\s*\n+/g, '\n\n')
    .trim();
}

function styleSet(tok: TextTokenizer, mails: Mail[], n: number, o: DemoDataOptions, salt: number): { text: string }[] {
  // Windows are drawn from a seeded order of messages until n are found: no need to encode the whole mailbox.
  const out: { text: string }[] = [];
  for (const m of pick(mails, mails.length, o.seed, salt)) {
    for (const text of textWindows(tok, proseOf(m.body), o.tokens)) if (out.length < n) out.push({ text });
    if (out.length >= n) break;
  }
  return out;
}

function spamSet(tok: TextTokenizer, mails: Mail[], perClass: number, o: DemoDataOptions, salt: number): { text: string; label: string }[] {
  const usable = mails.filter((m) => m.body.length > 0 || m.subject.length > 0);
  const sample = (spam: boolean, s: number) =>
    pick(
      usable.filter((m) => m.spam === spam),
      perClass,
      o.seed,
      s,
    ).map((m) => ({ text: tok.decode(tok.encode(`Subject: ${m.subject}\n\n${m.body}`).slice(0, o.tokens)), label: spam ? 'spam' : 'ham' }));
  const rows = [...sample(true, salt), ...sample(false, salt + 1)];
  return pick(rows, rows.length, o.seed, salt + 2);
}

function writeJsonl(file: string, rows: object[]): void {
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

/** Writes the four JSONL files into `dir` and returns their paths. */
export function prepareDemoData(dir: string, tok: TextTokenizer, o: DemoDataOptions): DemoData {
  const all = mailbox();
  const { train, heldOut } = seededSplit(all, o.heldOut ?? 0.2, o.seed);
  mkdirSync(dir, { recursive: true });
  const files = {
    styleTrain: join(dir, 'style-train.jsonl'),
    styleHeldOut: join(dir, 'style-heldout.jsonl'),
    spamTrain: join(dir, 'spam-train.jsonl'),
    spamHeldOut: join(dir, 'spam-heldout.jsonl'),
  };
  const ham = (ms: Mail[]) => ms.filter((m) => !m.spam && m.body.length > 0);
  writeJsonl(files.styleTrain, styleSet(tok, ham(train), o.styleTrain, o, 1));
  writeJsonl(files.styleHeldOut, styleSet(tok, ham(heldOut), o.styleHeldOut, o, 2));
  writeJsonl(files.spamTrain, spamSet(tok, train, o.spamTrain, o, 3));
  writeJsonl(files.spamHeldOut, spamSet(tok, heldOut, o.spamHeldOut, o, 6));
  return { files, counts: { messages: all.length, trainMessages: train.length, heldOutMessages: heldOut.length } };
}
