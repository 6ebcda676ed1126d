import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { oneFOneB } from '../src/plan/schedule.ts';

test('schedule: every micro-batch runs F once then B once, at most S - s in flight', () => {
  for (let S = 1; S <= 6; S++)
    for (let M = 1; M <= 10; M++)
      for (let s = 0; s < S; s++) {
        const ops = oneFOneB(s, S, M);
        assert.is(ops.length, 2 * M);
        const fAt = new Map<number, number>(),
          bAt = new Map<number, number>();
        let inFlight = 0,
          peak = 0;
        ops.forEach((o, i) => {
          const seen = o.op === 'F' ? fAt : bAt;
          assert.not.ok(seen.has(o.mb), `S=${S} M=${M} s=${s}: ${o.op}${o.mb} twice`);
          seen.set(o.mb, i);
          inFlight += o.op === 'F' ? 1 : -1;
          peak = Math.max(peak, inFlight);
        });
        for (let mb = 0; mb < M; mb++) assert.ok(fAt.get(mb)! < bAt.get(mb)!, `S=${S} M=${M} s=${s}: B${mb} before F${mb}`);
        assert.ok(peak <= S - s, `S=${S} M=${M} s=${s}: ${peak} in flight`);
        assert.is(peak, Math.min(S - s, M), 'the pipeline fills as far as it may');
      }
});

test('schedule: warm-up, steady alternation, drain', () => {
  const fmt = (s: number, S: number, M: number) =>
    oneFOneB(s, S, M)
      .map((o) => `${o.op}${o.mb}`)
      .join(' ');
  assert.is(fmt(0, 3, 4), 'F0 F1 F2 B0 F3 B1 B2 B3');
  assert.is(fmt(2, 3, 4), 'F0 B0 F1 B1 F2 B2 F3 B3');
  assert.is(fmt(0, 4, 2), 'F0 F1 B0 B1');
});

test('schedule: bad arguments are rejected by name', () => {
  assert.throws(() => oneFOneB(3, 3, 4), /stage must be in 0..2/);
  assert.throws(() => oneFOneB(0, 0, 4), /numStages/);
  assert.throws(() => oneFOneB(0, 2, 0), /numMicroBatches/);
});
test.run();
