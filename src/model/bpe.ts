/**
 * A byte-level BPE trainer (the GPT-2 scheme) that writes a Hugging Face `tokenizer.json`, so the
 * tokenizer it makes loads through the same loader as any downloaded model (tokenizer.ts).
 *
 * Text is split by GPT-2's pre-tokenizer pattern into pieces; each piece is a sequence of its
 * UTF-8 bytes; merges are learnt from piece frequencies. Ids 0..255 are the bytes, then each new
 * token in the order learnt, then the special tokens.
 */

/** GPT-2's pre-tokenizer pattern, exactly as the Hugging Face ByteLevel pre-tokenizer applies it. */
export const gpt2Pattern = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's byte -> printable character table: printable Latin-1 bytes map to themselves, the rest
 * to code points from 256 upwards (so a space shows as `Ġ`).
 */
export function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(printable(b) ? b : next++));
  return out;
}

export interface BpeVocab {
  /** Token strings in id order (byte-level characters), special tokens last. */
  tokens: string[];
  /** Merges in rank order: ids of the left part, the right part and the result. */
  merges: [number, number, number][];
  /** Special tokens and their ids. */
  special: Map<string, number>;
}

export interface BpeOptions {
  /** Total vocabulary, bytes and special tokens included. */
  vocabSize: number;
  specialTokens?: string[];
  /** A pair seen fewer times than this is never merged (the vocabulary may then come out smaller). */
  minCount?: number;
}

/** Counts the pre-tokenizer pieces of `texts`. */
export function countPieces(texts: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const text of texts) for (const m of text.matchAll(gpt2Pattern)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  return counts;
}

const pairKey = (a: number, b: number) => a * 65536 + b;

/**
 * Learns merges from piece counts. Each round merges the most frequent adjacent pair (ties: the
 * smaller pair key, so the result depends only on the counts), updating only the pieces that
 * contain it.
 */
export function trainBpe(pieces: Map<string, number>, o: BpeOptions): BpeVocab {
  const special = o.specialTokens ?? [];
  const nTokens = o.vocabSize - special.length;
  if (nTokens < 256) throw new Error(`bpe: vocabulary ${o.vocabSize} is smaller than 256 bytes + ${special.length} special tokens`);
  if (o.vocabSize > 65536) throw new Error(`bpe: vocabulary ${o.vocabSize} exceeds 65536`);
  const enc = new TextEncoder();
  const words: number[][] = [];
  const freq: number[] = [];
  // Sorted so the pieces' order (and with it every tie) does not depend on the input order.
  for (const [p, n] of [...pieces].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    words.push([...enc.encode(p)]);
    freq.push(n);
  }
  const pairCount = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  const addPairs = (w: number, sign: number) => {
    const s = words[w]!;
    for (let i = 0; i + 1 < s.length; i++) {
      const k = pairKey(s[i]!, s[i + 1]!);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * freq[w]!);
      if (sign > 0) {
        let set = where.get(k);
        if (!set) where.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1);
  const chars = byteChars();
  const tokens = [...chars];
  const ids = new Map(tokens.map((t, i) => [t, i]));
  const merges: [number, number, number][] = [];
  const minCount = o.minCount ?? 2;
  while (tokens.length < nTokens) {
    let best = -1,
      bestCount = 0;
    for (const [k, c] of pairCount)
      if (c > bestCount || (c === bestCount && c > 0 && k < best)) {
        best = k;
        bestCount = c;
      }
    if (best < 0 || bestCount < minCount) break;
    const a = Math.floor(best / 65536),
      b = best % 65536;
    // Two merge paths can spell the same string ("ab"+"c", "a"+"bc"): one token, two rules.
    const text = tokens[a]! + tokens[b]!;
    let id = ids.get(text);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(text);
      ids.set(text, id);
    }
    merges.push([a, b, id]);
    for (const w of where.get(best) ?? []) {
      addPairs(w, -1);
      const s = words[w]!;
      const merged: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          merged.push(id);
          i++;
        } else merged.push(s[i]!);
      }
      words[w] = merged;
      addPairs(w, 1);
    }
    where.delete(best);
    pairCount.delete(best);
  }
  const specialIds = new Map<string, number>();
  for (const t of special) {
    specialIds.set(t, tokens.length);
    tokens.push(t);
  }
  return { tokens, merges, special: specialIds };
}

/** The Hugging Face `tokenizer.json` of a trained vocabulary (BPE model, ByteLevel pre-tokenizer and decoder). */
export function tokenizerJson(v: BpeVocab): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  v.tokens.forEach((t, id) => {
    vocab[t] = id;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...v.special].map(([content, id]) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: v.merges.map(([a, b]) => `${v.tokens[a]} ${v.tokens[b]}`),
    },
  };
}

/**
 * The matching `tokenizer_config.json`: decoding must not "clean up" spaces before punctuation
 * (the library's default), or text with " ." would not round-trip.
 */
export function tokenizerConfigJson(v: BpeVocab, maxLength: number): Record<string, unknown> {
  const eos = [...v.special.keys()][0];
  return {
    tokenizer_class: 'GPT2Tokenizer',
    clean_up_tokenization_spaces: false,
    add_prefix_space: false,
    model_max_length: maxLength,
    ...(eos !== undefined ? { eos_token: eos, bos_token: eos } : {}),
  };
}
