import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ringAllReduce } from '../src/engine/index.ts';
import { BusStageLinks } from '../src/engine/index.ts';
import { WireTensor } from '../src/tensor/index.ts';
import { serverForFile } from './fixtures/bus.ts';

const nats = serverForFile('charon-dist-bus-', 'dist');
const connect = (name: string, identity = name) => nats.connect(name, { identity });

const widths = { b: 4, a: 2 };

test('bus links: ring all-reduce over grad subjects sums 3 ranks (vector larger than max_payload is chunked)', async () => {
  const size = 3,
    n = 3 * 1024 * 1024; // 12 MB per rank > 8 MB max_payload
  const links = await Promise.all(
    [0, 1, 2].map(
      async (rank) =>
        new BusStageLinks(await connect(`r${rank}`), {
          stage: 0,
          rank,
          group: 'g0',
          peers: { group: ['r0', 'r1', 'r2'], prev: [], next: [] },
          widths,
          generation: 0,
          firstStep: 1,
        }),
    ),
  );
  const inputs = [0, 1, 2].map((r) => Float32Array.from({ length: n }, (_, i) => (i % 97) * (r + 1)));
  const outs = await Promise.all(links.map((l, r) => ringAllReduce(inputs[r]!, r, size, l.ring(1))));
  for (const i of [0, 1, 96, n - 1]) for (const o of outs) assert.is(o[i], (i % 97) * 6);
  for (const l of links) l.close();
});

test('bus links: rows cross stages with their sample ids; a malformed message is dropped and counted', async () => {
  const sender = new BusStageLinks(await connect('s0'), {
    stage: 0,
    rank: 0,
    group: 's0',
    peers: { group: ['s0'], prev: [], next: ['s1'] },
    widths,
    generation: 0,
    firstStep: 1,
  });
  const recvBus = await connect('s1');
  const receiver = new BusStageLinks(recvBus, {
    stage: 1,
    rank: 0,
    group: 's1',
    peers: { group: ['s1'], prev: ['s0'], next: [] },
    widths,
    generation: 0,
    firstStep: 1,
  });
  await recvBus.flush();
  // wrong row width: 2 rows need 8 values of b
  const evil = await connect('evil');
  evil.publish(
    evil.subjects.stageFwd('s1', 1, 0),
    'fwd',
    {
      rank: 0,
      ids: [1, 2],
      b: new (await import('../src/tensor/index.ts')).WireTensor('float32', [3], new Float32Array(3)),
      a: new (await import('../src/tensor/index.ts')).WireTensor('float32', [4], new Float32Array(4)),
    },
    { step: 5, mb: 0 },
  );
  await evil.flush(); // the server has it before the valid message below
  sender.sendFwd(5, 0, 0, { ids: [7, 9], b: Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), a: Float32Array.from([1, 2, 3, 4]) });
  const got = await receiver.recvFwd(5, 0, 0);
  assert.equal(got.ids, [7, 9]);
  assert.equal(Array.from(got.b), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.is(receiver.dropped.get('shape'), 1);
  // A well-formed row from a device the plan does not put before stage 1 is refused by name.
  evil.publish(
    evil.subjects.stageFwd('s1', 1, 0),
    'fwd',
    { rank: 0, ids: [3], b: new WireTensor('float32', [4], new Float32Array(4)), a: new WireTensor('float32', [2], new Float32Array(2)) },
    { step: 6, mb: 0 },
  );
  await evil.flush();
  while (!receiver.dropped.get('peer')) await new Promise((r) => setTimeout(r, 10));
  assert.is(recvBus.rejected.peer, 1);
  receiver.sendBwd(5, 0, 0, { ids: [9], g: Float32Array.from([0.5, -0.5]) });
  const back = await sender.recvBwd(5, 0, 0);
  assert.equal(back.ids, [9]);
  assert.equal(Array.from(back.g), [0.5, -0.5]);
  sender.close();
  receiver.close();
});

test("bus links: after a re-plan, late messages of the aborted generation are dropped, counted and reported; the replay's arrive", async () => {
  const g0 = { group: 's0', peers: { group: ['a', 'b'], prev: [], next: ['c'] }, widths, firstStep: 3 };
  const g1 = { ...g0, group: 's1', peers: { group: ['c'], prev: ['a', 'b'], next: [] } };
  // Generation 0 is the attempt a lost device aborted; generation 1 replays step 3 on the same devices, ranks and subjects.
  const late = await connect('late', 'a'),
    lateC = await connect('late', 'c');
  const stale = [
    new BusStageLinks(late, { stage: 0, rank: 0, ...g0, generation: 0 }),
    new BusStageLinks(lateC, { stage: 1, rank: 0, ...g1, generation: 0 }),
  ];
  const busA = await connect('a'),
    busB = await connect('b'),
    busC = await connect('c');
  const a = new BusStageLinks(busA, { stage: 0, rank: 0, ...g0, generation: 1 });
  const b = new BusStageLinks(busB, { stage: 0, rank: 1, ...g0, generation: 1 });
  const c = new BusStageLinks(busC, { stage: 1, rank: 0, ...g1, generation: 1 });
  const reports: string[] = [];
  const watcher = await connect('watcher');
  // The stale ranks reject the replay's messages in turn; only the replay's ranks are watched here.
  watcher.subscribe<{ reason: string; message: string }>(
    watcher.subjects.eventsAll(),
    (env) => {
      if (env.from !== 'late' && env.body.reason === 'generation') reports.push(env.body.message);
    },
    { kinds: ['rejected'] },
  );
  for (const x of [busA, busB, busC, watcher]) await x.flush();

  const row = (v: number) => ({ ids: [5], b: new Float32Array(4).fill(v), a: new Float32Array(2).fill(v) });
  stale[0]!.sendFwd(3, 0, 0, row(-1));
  stale[1]!.sendBwd(3, 0, 0, { ids: [5], g: Float32Array.from([-1, -1]) });
  stale[0]!.ring(3).send(1, { phase: 'reduce', round: 0, chunk: 0 }, Float32Array.from([-1]));
  await late.flush();
  await lateC.flush();
  a.sendFwd(3, 0, 0, row(1));
  c.sendBwd(3, 0, 0, { ids: [5], g: Float32Array.from([1, 1]) });
  a.ring(3).send(1, { phase: 'reduce', round: 0, chunk: 0 }, Float32Array.from([1]));

  assert.equal(Array.from((await c.recvFwd(3, 0, 0)).b), [1, 1, 1, 1]);
  assert.equal(Array.from((await a.recvBwd(3, 0, 0)).g), [1, 1]);
  assert.equal(Array.from(await b.ring(3).receive(0, { phase: 'reduce', round: 0, chunk: 0 })), [1]);
  assert.equal([c.dropped.get('generation'), a.dropped.get('generation'), b.dropped.get('generation')], [1, 1, 1]);
  assert.equal([busA.rejected.generation, busB.rejected.generation, busC.rejected.generation], [1, 1, 1]);
  while (reports.length < 3) await new Promise((r) => setTimeout(r, 10));
  assert.ok(
    reports.every((m) => /of generation 0 from late \(step 3\), expected generation 1/.test(m)),
    reports.join('; '),
  );
  for (const l of [...stale, a, b, c]) l.close();
});

test.run();
