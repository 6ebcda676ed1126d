/**
 * The fault schedule: a topology's chaos: section or a --faults file, resolved to triggers and
 * checked against the topology; every bad entry is one `file:line: field: reason`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTopology, parseTopology, TopologyError } from '../src/topology/load.ts';
import { loadSchedule } from '../src/chaos/schedule.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-chaos-schedule-'));
const base = `run: c
model: { preset: tiny }
method: { kind: parallel }
data: { markov: { sequences: 24, seqLen: 16 } }
training: { epochs: 3, batch: 4 }
devices:
  - { name: a, memoryMb: 1024 }
  - { name: b, memoryMb: 1024 }
`;

function write(name: string, text: string): string {
  const f = join(tmp, name);
  writeFileSync(f, text);
  return f;
}

function firstError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof TopologyError) return err.firstLine;
    throw err;
  }
  throw new Error('expected a TopologyError');
}

test('chaos schedule: a topology chaos: section resolves every form of at to a step or a time', () => {
  const file = write(
    't.yaml',
    `${base}chaos:
  - { at: { step: 5 }, kind: kill, device: a }
  - { at: { seconds: 3.5 }, kind: stop, device: b, durationMs: 800 }
  - { at: { epoch: 2, step: 1 }, kind: drop, subject: "stage.*.*.fwd", durationMs: 500, probability: 0.5 }
  - { at: { epoch: 3, step: 6 }, kind: nats-restart }
  - { at: { step: 2 }, kind: delay, subject: "grad.>", durationMs: 1000, delayMs: 100 }
  - { at: { step: 3 }, kind: join, device: extra }
`,
  );
  const s = loadSchedule(loadTopology(file), file);
  assert.is(s.totalSteps, 18);
  assert.equal(
    s.faults.map((f) => f.trigger),
    [{ step: 5 }, { seconds: 3.5 }, { step: 7 }, { step: 18 }, { step: 2 }, { step: 3 }],
  );
  assert.equal(
    s.faults.map((f) => f.source),
    [10, 11, 12, 13, 14, 15].map((l) => `${file}:${l}`),
  );
});

test('chaos schedule: --faults FILE is a YAML list and wins over the section', () => {
  const topo = write('t2.yaml', `${base}chaos:\n  - { at: { step: 1 }, kind: coordinator-kill }\n`);
  const faults = write(
    'f.yaml',
    `# two faults\n- at: { step: 2 }\n  kind: duplicate\n  subject: "dev.*.ctl"\n  durationMs: 1000\n- { at: { step: 4 }, kind: term, device: b }\n`,
  );
  const s = loadSchedule(loadTopology(topo), topo, faults);
  assert.equal(
    s.faults.map((f) => [f.kind, f.trigger, f.source]),
    [
      ['duplicate', { step: 2 }, `${faults}:2`],
      ['term', { step: 4 }, `${faults}:6`],
    ],
  );
});

test('chaos schedule: bad entries name file, line, field and reason', () => {
  const topo = write('t3.yaml', base);
  const t = loadTopology(topo);
  const bad = (name: string, text: string) => firstError(() => loadSchedule(t, topo, write(name, text)));
  assert.is(
    bad('b1.yaml', `- { at: { step: 2 }, kind: kill, device: zz }\n`),
    `${tmp}/b1.yaml:1: [0].device: no device "zz" in the topology (devices: a, b)`,
  );
  assert.is(
    bad('b2.yaml', `- { at: { step: 2 }, kind: drop, durationMs: 5 }\n`),
    `${tmp}/b2.yaml:1: [0].subject: is required for kind drop`,
  );
  assert.is(
    bad('b3.yaml', `- at: { step: 2 }\n  kind: kill\n  device: a\n  durationMs: 100\n`),
    `${tmp}/b3.yaml:4: [0].durationMs: is not used by kind kill: remove it`,
  );
  assert.is(bad('b4.yaml', `- { at: { step: 99 }, kind: nats-restart }\n`), `${tmp}/b4.yaml:1: [0].at.step: the run has 18 step(s)`);
  assert.is(
    bad('b5.yaml', `- { at: { step: 1, seconds: 2 }, kind: nats-restart }\n`),
    `${tmp}/b5.yaml:1: [0].at: give exactly one of { step: N }, { seconds: S } or { epoch: E, step: N }`,
  );
  assert.match(bad('b6.yaml', `- { at: { step: 1 }, kind: explode }\n`), `${tmp}/b6.yaml:1: [0].kind: must be "kill" |`);
  assert.is(
    bad('b7.yaml', `- { at: { step: 1 }, kind: drop, subject: "a.>.b", durationMs: 5 }\n`),
    `${tmp}/b7.yaml:1: [0].subject: must be a subject pattern relative to charon.<run>. (tokens, * or a final >), got "a.>.b"`,
  );
  assert.is(
    bad('b8.yaml', `- { at: { epoch: 2, step: 7 }, kind: nats-restart }\n`),
    `${tmp}/b8.yaml:1: [0].at.step: epoch 2 has 6 step(s)`,
  );
  assert.is(bad('b9.yaml', `at: 1\n`), `${tmp}/b9.yaml:1: (root): must be a list of faults`);
  assert.is(
    firstError(() => loadSchedule(t, topo, join(tmp, 'none.yaml'))),
    `${tmp}/none.yaml: (file): no such file`,
  );
  assert.is(
    firstError(() => loadSchedule(t, topo)),
    `${topo}:1: chaos: no fault schedule: add a chaos: section or pass --faults FILE`,
  );
  // In a topology, the section is checked with the rest of the file.
  assert.is(
    firstError(() => parseTopology(`${base}chaos:\n  - { at: { step: 1 }, kind: stop, device: a }\n`, 'x.yaml')),
    'x.yaml:10: chaos[0].durationMs: is required for kind stop',
  );
});

test('chaos schedule: topologies/chaos.yaml holds at least 20 faults of mixed kinds', () => {
  const file = join(root, 'topologies', 'chaos.yaml');
  const s = loadSchedule(loadTopology(file), file);
  assert.ok(s.faults.length >= 20, `${s.faults.length} faults`);
  assert.ok(new Set(s.faults.map((f) => f.kind)).size >= 6);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
