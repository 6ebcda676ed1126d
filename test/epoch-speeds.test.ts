/** Epoch-1 compute per row, which sizes the cached phase's shards when every device has enough of it. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EpochOneSpeeds, MEASURED_ROWS } from '../actors/coordinator/epoch-speeds.ts';

const reply = (computeSeconds: number, rows: number) => ({ computeSeconds, rows });

test('epoch speeds: ms per row over one-stage steps; null until every device has enough rows', () => {
  const s = new EpochOneSpeeds();
  // A device that profiled fast but ran slow: 3 rows in 0.3 s against 5 rows in 0.25 s.
  assert.ok(2 * 3 < MEASURED_ROWS && 4 * 3 >= MEASURED_ROWS);
  for (let i = 0; i < 2; i++)
    s.record(
      1,
      new Map([
        ['a', reply(0.3, 3)],
        ['b', reply(0.25, 5)],
      ]),
    );
  assert.is(s.msPerRow(['a', 'b']), null, 'a has fewer rows than needed');
  for (let i = 0; i < 2; i++)
    s.record(
      1,
      new Map([
        ['a', reply(0.3, 3)],
        ['b', reply(0.25, 5)],
      ]),
    );
  const ms = s.msPerRow(['a', 'b'])!;
  assert.ok(Math.abs(ms.get('a')! - 100) < 1e-9 && Math.abs(ms.get('b')! - 50) < 1e-9, JSON.stringify([...ms]));
  assert.is(s.msPerRow(['a', 'b', 'joiner']), null, 'a device never measured: nobody is sized by measurement');
});

test('epoch speeds: steps of a multi-stage plan, and empty replies, do not count', () => {
  const s = new EpochOneSpeeds();
  for (let i = 0; i < 2 * MEASURED_ROWS; i++) {
    s.record(2, new Map([['a', reply(1, 4)]]));
    s.record(1, new Map([['b', reply(0, 0)]]));
  }
  assert.is(s.msPerRow(['a']), null);
  assert.is(s.msPerRow(['b']), null);
});

test.run();
