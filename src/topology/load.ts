/**
 * Reads a topology file: YAML (node ranges kept so every error names its line) validated against
 * the schema. Errors read `<file>:<line>: <field>: <reason>`, one issue per line, the first
 * (by line) first.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument, isMap, isPair, isScalar, isSeq, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { topologySchema, type Topology } from './schema.ts';

/** One problem in a topology file, located to a line (1-based; 0 when the file could not be read). */
export interface TopologyIssue {
  line: number;
  field: string;
  reason: string;
}

/** A topology file that cannot be used; `message` is the first issue, `issues` all of them. */
export class TopologyError extends Error {
  override name = 'TopologyError';
  constructor(
    readonly file: string,
    readonly issues: TopologyIssue[],
  ) {
    super(issues.map((i) => formatIssue(file, i)).join('\n'));
  }
  /** The first issue as one line, for CLIs that print one clear line. */
  get firstLine(): string {
    return formatIssue(this.file, this.issues[0]!);
  }
}

function formatIssue(file: string, i: TopologyIssue): string {
  return i.line > 0 ? `${file}:${i.line}: ${i.field}: ${i.reason}` : `${file}: ${i.field}: ${i.reason}`;
}

/** Reads and validates `file`; throws TopologyError. Relative model.dir and data.file resolve against the file's folder. */
export function loadTopology(file: string): Topology {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TopologyError(file, [
      { line: 0, field: '(file)', reason: code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? (err as Error).message})` },
    ]);
  }
  const topology = parseTopology(text, file);
  const base = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  if (topology.model.dir !== undefined) topology.model.dir = abs(topology.model.dir);
  if (topology.data.file !== undefined) topology.data.file = abs(topology.data.file);
  return topology;
}

/**
 * Parses and validates topology text; `file` only labels errors. Paths stay as written;
 * training.cache.dir is relative to the run directory.
 */
export function parseTopology(text: string, file: string): Topology {
  return parseYamlWith(topologySchema, text, file, {
    root: 'map',
    reason: 'must be a mapping of run, model, method, data, training, bus, devices',
  });
}

/**
 * Parses YAML `text` and validates it against `schema`; every problem becomes a TopologyIssue
 * with its line (the error class names `file`). `root` is the shape the document must have.
 */
export function parseYamlWith<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
  root: { root: 'map' | 'list'; reason: string },
): z.output<S> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new TopologyError(
      file,
      doc.errors.map((e) => ({
        line: e.linePos?.[0]?.line ?? lines.linePos(e.pos[0]).line,
        field: '(yaml)',
        reason: e.message.split('\n')[0]!,
      })),
    );
  }
  if (root.root === 'map' ? !isMap(doc.contents) : !isSeq(doc.contents)) {
    throw new TopologyError(file, [{ line: 1, field: '(root)', reason: root.reason }]);
  }
  const result = schema.safeParse(doc.toJS());
  if (result.success) return result.data;
  const issues = result.error.issues
    .map((issue) => describe(doc, lines, issue))
    .sort((a, b) => a.line - b.line || unknownFirst(a) - unknownFirst(b));
  throw new TopologyError(file, issues);
}

type Path = (string | number)[];

/** On one line, a misspelt field explains the "required" issue beside it, so it goes first. */
const unknownFirst = (i: TopologyIssue) => (i.reason === 'unknown field' ? 0 : 1);

function describe(doc: Document, lines: LineCounter, issue: z.core.$ZodIssue): TopologyIssue {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    return {
      line: lineOf(keyNode(doc, path, key) ?? deepestNode(doc, path), lines),
      field: fieldName([...path, key]),
      reason: 'unknown field',
    };
  }
  const exists = doc.hasIn(path);
  const value = exists ? doc.getIn(path) : undefined;
  const line = lineOf(deepestNode(doc, path), lines);
  const field = fieldName(path);
  if (!exists && issue.code === 'invalid_type') return { line, field, reason: 'is required' };
  const got = exists && (value === null || typeof value !== 'object') ? `, got ${JSON.stringify(value)}` : '';
  switch (issue.code) {
    case 'invalid_type':
      return { line, field, reason: `expected ${issue.expected === 'int' ? 'an integer' : issue.expected}${got}` };
    case 'invalid_value':
      return { line, field, reason: `must be ${issue.values.map((v) => JSON.stringify(v)).join(' | ')}${got}` };
    case 'invalid_union':
      if ('options' in issue && Array.isArray(issue.options)) {
        return { line, field, reason: `must be ${(issue.options as unknown[]).map((v) => JSON.stringify(v)).join(' | ')}${got}` };
      }
      return { line, field, reason: `${issue.message}${got}` };
    case 'too_small':
      return {
        line,
        field,
        reason:
          issue.origin === 'array'
            ? `needs at least ${issue.minimum} item(s)`
            : `must be ${issue.inclusive ? '>=' : '>'} ${issue.minimum}${got}`,
      };
    case 'too_big':
      return { line, field, reason: `must be ${issue.inclusive ? '<=' : '<'} ${issue.maximum}${got}` };
    case 'custom':
      return { line, field, reason: issue.message };
    default:
      return { line, field, reason: `${issue.message}${got}` };
  }
}

/** `devices[1].name` style. */
function fieldName(path: Path): string {
  if (path.length === 0) return '(root)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

/** The node at `path`, or the nearest ancestor that exists (so a missing field points at its parent). */
function deepestNode(doc: Document, path: Path): YamlNode | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (node && typeof node === 'object' && 'range' in node) return node as YamlNode;
  }
  return undefined;
}

function keyNode(doc: Document, path: Path, key: string): YamlNode | undefined {
  const map = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (!isMap(map)) return undefined;
  for (const item of map.items) {
    if (isPair(item) && isScalar(item.key) && item.key.value === key) return item.key;
  }
  return undefined;
}

function lineOf(node: YamlNode | undefined, lines: LineCounter): number {
  const start = node?.range?.[0];
  return start === undefined ? 1 : Math.max(1, lines.linePos(start).line);
}

/** The line of the value at `path` in YAML `text` (or of its nearest ancestor that exists). */
export function lineAt(text: string, path: Path): number {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  return lineOf(deepestNode(doc, path), lines);
}
