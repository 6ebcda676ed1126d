/**
 * The bus fault layer against a real nats-server: inert without chaos mode; in chaos mode the
 * rules sent on the run's chaos subject drop, delay or duplicate received messages on matching
 * subjects for their duration, and report what they did; a duplicated envelope never reaches a
 * handler twice (rejected as 'duplicate' and counted).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, FaultLayer, startNatsServer, subjectMatches, type FaultReport, type FaultRule, type NatsServer } from '../src/bus/index.ts';

const runDir = mkdtempSync(join(tmpdir(), 'charon-chaos-bus-'));
let server: NatsServer;
const buses: Bus[] = [];
const connect = async (name: string, chaos: boolean) => {
  const b = await Bus.connect({ servers: server.url, name, run: 'cb', chaos });
  buses.push(b);
  return b;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends `n` messages on `subject` from `from`; resolves with the values `to`'s handler saw (after the stream settles). */
async function exchange(from: Bus, to: Bus, subject: string, n: number, settleMs = 400): Promise<number[]> {
  const seen: number[] = [];
  const sub = to.subscribe<number>(subject, (e) => {
    seen.push(e.body);
  });
  await to.flush();
  for (let i = 0; i < n; i++) from.publish(subject, 'n', i);
  await from.flush();
  await sleep(settleMs);
  sub.unsubscribe();
  return seen;
}

async function arm(runner: Bus, rule: Partial<FaultRule> & Pick<FaultRule, 'id' | 'action' | 'subject'>): Promise<void> {
  runner.publish(runner.subjects.chaos('rule'), 'chaos-rule', { durationMs: 1000, delayMs: 0, probability: 1, seed: 1, ...rule });
  await runner.flush();
  await sleep(100);
}

test.before(async () => {
  server = await startNatsServer({ runDir, jetstream: false });
});

test('chaos bus: subject patterns match as NATS wildcards', () => {
  assert.ok(subjectMatches('charon.r.stage.*.*.fwd', 'charon.r.stage.0.1.fwd'));
  assert.not.ok(subjectMatches('charon.r.stage.*.*.fwd', 'charon.r.stage.0.1.bwd'));
  assert.ok(subjectMatches('charon.r.grad.>', 'charon.r.grad.0.12'));
  assert.not.ok(subjectMatches('charon.r.grad.>', 'charon.r.grad'));
  assert.not.ok(subjectMatches('charon.r.dev.*', 'charon.r.dev.a.ctl'));
});

test('chaos bus: a rule matches with or without the sender and receiver part of a subject', () => {
  const layer = new FaultLayer('p', 'charon.r.', () => {});
  layer.arm({ id: '0', action: 'drop', subject: 'grad.>', durationMs: 60_000, delayMs: 0, probability: 1, seed: 1 });
  layer.arm({ id: '1', action: 'drop', subject: 'from.a.>', durationMs: 60_000, delayMs: 0, probability: 1, seed: 1 });
  const delivered: string[] = [];
  for (const s of [
    'charon.r.from.b.to.c.grad.0.3',
    'charon.r.from.b.to.c.fwd.0.1',
    'charon.r.from.a.to.c.fwd.0.1',
    'charon.q.from.b.to.c.grad.0.3',
  ])
    layer.deliver(s, () => delivered.push(s));
  assert.equal(delivered, ['charon.r.from.b.to.c.fwd.0.1', 'charon.q.from.b.to.c.grad.0.3']);
  layer.close();
});

test('chaos bus: without chaos mode a rule changes nothing', async () => {
  const [runner, a, b] = [await connect('runner', false), await connect('a', false), await connect('b', false)];
  await arm(runner, { id: '0', action: 'drop', subject: 'x.>' });
  assert.equal(await exchange(a, b, 'charon.cb.x.1', 5), [0, 1, 2, 3, 4]);
});

test('chaos bus: drop, delay and duplicate act on matching subjects only, for their duration, and report', async () => {
  const runner = await connect('runner', false);
  const a = await connect('a', true);
  const b = await connect('b', true);
  const reports: FaultReport[] = [];
  runner.subscribe<FaultReport>(runner.subjects.chaos('report'), (e) => {
    reports.push(e.body);
  });

  await arm(runner, { id: '1', action: 'drop', subject: 'x.*', durationMs: 800 });
  assert.equal(await exchange(a, b, 'charon.cb.x.1', 5, 100), [], 'dropped');
  assert.equal(await exchange(a, b, 'charon.cb.y.1', 3, 100), [0, 1, 2], 'another subject untouched');
  await sleep(800);
  assert.equal(await exchange(a, b, 'charon.cb.x.1', 3, 100), [0, 1, 2], 'the rule expired');
  assert.ok(
    reports.some((r) => r.rule === '1' && r.process === 'b' && r.hit === 5),
    JSON.stringify(reports),
  );

  await arm(runner, { id: '2', action: 'delay', subject: 'x.*', delayMs: 300 });
  const seen: number[] = [];
  const sub = b.subscribe<number>('charon.cb.x.2', (e) => {
    seen.push(e.body);
  });
  await b.flush();
  a.publish('charon.cb.x.2', 'n', 7);
  await a.flush();
  await sleep(150);
  assert.equal(seen, [], 'held');
  await sleep(300);
  assert.equal(seen, [7], 'delivered late');
  sub.unsubscribe();

  // A half-probability drop hits some of many messages, not all, and the same ones for the same seed.
  await arm(runner, { id: '3', action: 'drop', subject: 'p.*', probability: 0.5, seed: 7 });
  const some = await exchange(a, b, 'charon.cb.p.1', 40, 200);
  assert.ok(some.length > 5 && some.length < 35, `${some.length} of 40 through`);

  const rejected: string[] = [];
  b.on('rejected', (r) => rejected.push(r.reason));
  await arm(runner, { id: '4', action: 'duplicate', subject: 'd.*' });
  assert.equal(await exchange(a, b, 'charon.cb.d.3', 4), [0, 1, 2, 3], 'each envelope handed on once');
  assert.equal(rejected, ['duplicate', 'duplicate', 'duplicate', 'duplicate']);
  assert.is(b.rejected.duplicate, 4);
});

test('chaos bus: a request survives duplicated requests and replies (one answer, one handling)', async () => {
  const runner = await connect('runner', false);
  const client = await connect('client', true);
  const server2 = await connect('server', true);
  let handled = 0;
  server2.subscribe<number>('charon.cb.svc', (e, m) => {
    handled++;
    server2.reply(m, 'answer', e.body * 2);
  });
  await server2.flush();
  await arm(runner, { id: '5', action: 'duplicate', subject: '>', durationMs: 2000 });
  const r = await client.request<number, number>('charon.cb.svc', 'q', 21, { timeoutMs: 2000 });
  assert.is(r.body, 42);
  await sleep(200);
  assert.is(handled, 1);
});

test.after(async () => {
  for (const b of buses) await b.close();
  await server.stop();
  rmSync(runDir, { recursive: true, force: true });
});
test.run();
