/** Per-step row shares within a stage group, from each device's measured compute per row. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StepShares } from '../actors/coordinator/step-shares.ts';
import { splitRows } from '../src/engine/routing.ts';

const ids = Array.from({ length: 8 }, (_, i) => i);
const replies = (o: Record<string, [number, number]>) =>
  new Map(Object.entries(o).map(([d, [computeSeconds, rows]]) => [d, { computeSeconds, rows }]));

test('step shares: the plan until every rank is timed past its first step, then the measured split', () => {
  const s = new StepShares();
  const groups = [['a', 'b']],
    planned = [[3, 5]];
  assert.equal(s.shares(groups, planned, ids, 1), planned);
  // Equally fast devices that profiled far apart: 3 rows against 5 until measured.
  s.record(groups, replies({ a: [0.3, 3], b: [0.5, 5] }));
  assert.equal(s.shares(groups, planned, ids, 1), planned, 'a first step is warm-up, not a measurement');
  s.record(groups, replies({ a: [0.3, 3], b: [0.5, 5] }));
  const tuned = s.shares(groups, planned, ids, 1);
  assert.equal(splitRows(8, tuned[0]!), [4, 4]);
  assert.equal(s.measured(groups), { a: 100, b: 100 });
});

test('step shares: next() sends nothing while the plan holds, and announces a new split once', () => {
  const s = new StepShares();
  const groups = [['a', 'b']],
    planned = [[3, 5]];
  assert.is(s.next(groups, planned, ids, 1), null);
  for (let i = 0; i < 2; i++) s.record(groups, replies({ a: [0.3, 3], b: [0.5, 5] }));
  const first = s.next(groups, planned, ids, 1)!;
  assert.ok(first.changed);
  assert.equal(splitRows(8, first.shares[0]!), [4, 4]);
  assert.equal(s.next(groups, planned, ids, 1), { shares: first.shares, changed: false });
});

test('step shares: a small difference keeps the split in use; a slower device gets fewer rows', () => {
  const s = new StepShares();
  const groups = [['a', 'b']];
  s.shares(groups, [[1, 1]], ids, 1);
  for (let i = 0; i < 4; i++) s.record(groups, replies({ a: [0.4, 4], b: [0.42, 4] }));
  assert.equal(s.shares(groups, [[1, 1]], ids, 1), [[1, 1]], 'a 5% slower device does not flip rows back and forth');
  for (let i = 0; i < 12; i++) s.record(groups, replies({ a: [0.4, 4], b: [0.8, 4] }));
  const tuned = s.shares(groups, [[1, 1]], ids, 1);
  assert.equal(splitRows(8, tuned[0]!), [5, 3]);
  // and stays there while the measurements agree
  s.record(groups, replies({ a: [0.5, 5], b: [0.6, 3] }));
  assert.equal(s.shares(groups, [[1, 1]], ids, 1), tuned);
});

test('step shares: a much slower rank keeps a share to be measured by; one-rank stages keep theirs', () => {
  const s = new StepShares();
  const groups = [['x'], ['a', 'b']],
    planned = [[1], [1, 1]];
  s.shares(groups, planned, ids, 2);
  for (let i = 0; i < 3; i++) s.record(groups, replies({ x: [1, 8], a: [0.04, 4], b: [4, 4] }));
  const tuned = s.shares(groups, planned, ids, 2);
  assert.equal(tuned[0], [1]);
  assert.ok(tuned[1]![1]! / tuned[1]![0]! >= 0.1 - 1e-12, JSON.stringify(tuned));
  assert.equal(splitRows(4, tuned[1]!), [4, 0]);
});

test('step shares: a new set of groups (a re-plan) starts again from its plan', () => {
  const s = new StepShares();
  s.shares([['a', 'b']], [[1, 1]], ids, 1);
  for (let i = 0; i < 3; i++) s.record([['a', 'b']], replies({ a: [0.4, 4], b: [1.2, 4] }));
  assert.not.equal(s.shares([['a', 'b']], [[1, 1]], ids, 1), [[1, 1]]);
  assert.equal(s.shares([['a', 'c']], [[2, 1]], ids, 1), [[2, 1]]);
  assert.equal(s.measured([['a', 'c']]), {});
  // Replies of the old groups' step, arriving after the re-plan, are not counted.
  s.record([['a', 'b']], replies({ a: [0.4, 4], c: [0.4, 4] }));
  assert.equal(s.measured([['a', 'c']]), {});
});

test.run();
