import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Bus,
  BusTimeout,
  ConnectFailed,
  ConnectionClosed,
  NoResponders,
  freePort,
  CHUNK_HEADER,
  startNatsServer,
  type NatsServer,
  type BusEvents,
} from '../src/bus/index.ts';
import {
  DTYPES,
  WireTensor,
  typedArrayCtor,
  packValue,
  encodeEnvelope,
  formatChunkHeader,
  splitChunks,
  PROTOCOL_VERSION,
  type DType,
  type Envelope,
} from '../src/tensor/index.ts';

const MAX_PAYLOAD = 1024 * 1024; // small, so that tensors over max_payload stay cheap to test
const runDir = mkdtempSync(join(tmpdir(), 'charon-bus-'));
let server: NatsServer;
let a: Bus;
let b: Bus;
let seed = 99;

/** Resolves with the first `n` values pushed, or rejects after `ms` (a Lock, as in nats.js tests). */
function collector<T>(n: number, ms = 10_000) {
  const got: T[] = [];
  let done!: (v: T[]) => void;
  const promise = new Promise<T[]>((res, rej) => {
    done = res;
    setTimeout(() => rej(new Error(`collected ${got.length} of ${n} within ${ms} ms`)), ms).unref();
  });
  return {
    push(v: T) {
      got.push(v);
      if (got.length === n) done(got);
    },
    promise,
    got,
  };
}

function randomTensor(dtype: DType, shape: number[]): WireTensor {
  const Ctor = typedArrayCtor(dtype);
  const data = new Ctor(shape.reduce((x, y) => x * y, 1));
  const bytes = new Uint8Array(data.buffer);
  for (let i = 0; i < bytes.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    bytes[i] = dtype === 'bool' ? (seed >>> 16) & 1 : (seed >>> 16) & 0xff;
  }
  return new WireTensor(dtype, shape, data);
}

function sameBits(x: WireTensor, y: WireTensor): boolean {
  return x.dtype === y.dtype && x.shape.join() === y.shape.join() && Buffer.from(x.bytes()).equals(Buffer.from(y.bytes()));
}

test.before(async () => {
  server = await startNatsServer({ runDir, maxPayload: MAX_PAYLOAD });
  a = await Bus.connect({ servers: server.url, name: 'dev-a', run: 'r1' });
  b = await Bus.connect({ servers: server.url, name: 'dev-b', run: 'r1', reassembly: { maxMessageBytes: 8 * MAX_PAYLOAD } });
});

test.after(async () => {
  await a.close();
  await b.close();
  await server.stop();
  rmSync(runDir, { recursive: true, force: true });
});

test('bus: tensors of every dtype and shape round-trip bit-exactly, including ones over max_payload', async () => {
  assert.is(a.maxPayload, MAX_PAYLOAD);
  const shapes = [[], [0], [1], [3, 5], [2, 0, 3], [2, 3, 4, 5]];
  const sent: WireTensor[] = [];
  for (const dtype of DTYPES) for (const shape of shapes) sent.push(randomTensor(dtype, shape));
  sent.push(
    randomTensor('float32', [3, 1024, 256]),
    randomTensor('uint8', [MAX_PAYLOAD * 2 + 3]),
    randomTensor('float64', [MAX_PAYLOAD / 8 - 2]),
  );
  const subject = a.subjects.stageFwd('dev-b', 1, 0);
  const got = collector<Envelope<{ t: WireTensor; i: number }>>(sent.length);
  const sub = b.subscribe<{ t: WireTensor; i: number }>(subject, (env) => got.push(env), { kinds: ['fwd'] });
  await b.flush();
  sent.forEach((t, i) => a.publish(subject, 'fwd', { t, i }, { step: 4, mb: i }));
  const envs = await got.promise;
  sub.unsubscribe();
  for (const env of envs) {
    assert.ok(sameBits(sent[env.body.i]!, env.body.t), `tensor ${env.body.i} (${sent[env.body.i]!.dtype}) differs`);
    assert.is(env.mb, env.body.i);
    assert.is(env.step, 4);
    assert.is(env.from, 'dev-a');
  }
  assert.equal(
    envs.map((e) => e.body.i),
    sent.map((_, i) => i),
    'delivered in order',
  );
  assert.is(b.reassembly.pendingBytes, 0);
});

test('bus: malformed, truncated, oversized, wrong-version, wrong-run and corrupt messages are rejected and counted; the next good one arrives', async () => {
  const subject = a.subjects.devCtl('dev-b');
  const good = collector<number>(1);
  const rejected: BusEvents['rejected'][] = [];
  const off = b.on('rejected', (r) => rejected.push(r));
  const reports = collector<Envelope>(9);
  const eventsSub = b.subscribe(b.subjects.eventsAll(), (env) => reports.push(env), { kinds: ['rejected'] });
  b.subscribe<{ n: number }>(subject, (env) => good.push(env.body.n), { kinds: ['ctl'] });
  await b.flush();
  const before = b.rejected;
  const valid = encodeEnvelope({
    v: PROTOCOL_VERSION,
    run: 'r1',
    from: 'x',
    gen: 0,
    step: 0,
    mb: 0,
    id: 'x-1',
    kind: 'ctl',
    body: { t: randomTensor('float32', [100]) },
  });

  a.publishBytes(subject, new Uint8Array([0xa1, 0x41])); // malformed: not a map
  a.publishBytes(subject, valid.subarray(0, valid.length - 30)); // truncated
  a.publishBytes(subject, packValue({ v: 1, run: 'r1', from: 'x', step: 0, mb: 0, id: 'i', kind: 'ctl', body: 1 })); // version (1 had no generation)
  a.publishBytes(
    subject,
    packValue({ v: PROTOCOL_VERSION, run: 'r1', from: 'x', gen: 0, step: 'one', mb: 0, id: 'i', kind: 'ctl', body: 1 }),
  ); // field type
  const other = await Bus.connect({ servers: server.url, name: 'intruder', run: 'r2' });
  other.publish(subject, 'ctl', { n: -1 }); // run
  await other.close();
  a.publish(subject, 'hb', { n: -2 }); // kind
  a.publish(subject, 'ctl', { n: -3, t: randomTensor('uint8', [9 * MAX_PAYLOAD]) }); // oversized for b (limit 8 x max_payload)
  const chunks = splitChunks(new Uint8Array(MAX_PAYLOAD + 10), MAX_PAYLOAD / 2);
  const corrupt = new Uint8Array(chunks[0]!.bytes);
  corrupt[0]! ^= 0xff;
  a.publishBytes(subject, corrupt, { [CHUNK_HEADER]: formatChunkHeader(chunks[0]!.header) }); // checksum
  a.publishBytes(subject, chunks[1]!.bytes, { [CHUNK_HEADER]: 'zz 9 2 10 0 0' }); // chunk header
  a.publish(subject, 'ctl', { n: 42 });
  assert.equal(await good.promise, [42]);
  await reports.promise;
  off();
  eventsSub.unsubscribe();
  const after = b.rejected;
  const delta = (r: keyof typeof after) => after[r] - before[r];
  assert.equal(
    {
      malformed: delta('malformed'),
      truncated: delta('truncated'),
      version: delta('version'),
      run: delta('run'),
      kind: delta('kind'),
      oversized: delta('oversized'),
      checksum: delta('checksum'),
      chunk: delta('chunk'),
    },
    { malformed: 2, truncated: 1, version: 1, run: 1, kind: 1, oversized: 1, checksum: 1, chunk: 1 },
  );
  assert.is(rejected.length, 9);
  assert.ok(
    reports.got.every((e) => e.from === 'dev-b' && typeof (e.body as { reason: string }).reason === 'string'),
    'each rejection reported on the events subject',
  );
});

test('bus: a handler that throws is reported and delivery continues', async () => {
  const subject = a.subjects.devHb();
  const errors = collector<BusEvents['error']>(1);
  const off = b.on('error', (e) => errors.push(e));
  const seen = collector<number>(2);
  const sub = b.subscribe<{ n: number }>(subject, (env) => {
    seen.push(env.body.n);
    if (env.body.n === 1) throw new Error('boom');
  });
  await b.flush();
  a.publish(subject, 'hb', { n: 1 });
  a.publish(subject, 'hb', { n: 2 });
  assert.equal(await seen.promise, [1, 2]);
  assert.match(String((await errors.promise)[0]!.error), /boom/);
  off();
  sub.unsubscribe();
});

test('bus: request/reply, with a chunked reply', async () => {
  const subject = a.subjects.cachePut('dev-b');
  const big = randomTensor('float32', [MAX_PAYLOAD / 2]); // 2 MB: two max_payloads
  const sub = b.subscribe<{ key: string }>(
    subject,
    (env, msg) => b.reply(msg, 'entry', { key: env.body.key, t: big }, { step: env.step }),
    { kinds: ['get'] },
  );
  await b.flush();
  const reply = await a.request<{ key: string }, { key: string; t: WireTensor }>(
    subject,
    'get',
    { key: 's7' },
    { timeoutMs: 5000, meta: { step: 7 }, kinds: ['entry'] },
  );
  assert.is(reply.body.key, 's7');
  assert.is(reply.step, 7);
  assert.ok(sameBits(big, reply.body.t));
  sub.unsubscribe();
});

test('bus: a request past its deadline fails with a retryable BusTimeout; nobody listening gives NoResponders', async () => {
  const subject = a.subjects.devCtl('silent');
  const sub = b.subscribe(subject, () => {
    /* never replies */
  });
  await b.flush();
  const t0 = Date.now();
  const err = await a.request(subject, 'ctl', {}, { timeoutMs: 300 }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.instance(err, BusTimeout);
  assert.is((err as BusTimeout).retryable, true);
  assert.ok(Date.now() - t0 >= 290);
  sub.unsubscribe();
  await b.flush();
  const none = await a.request(a.subjects.devCtl('nobody'), 'ctl', {}, { timeoutMs: 5000 }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.instance(none, NoResponders);
  assert.is((none as NoResponders).retryable, true);
});

test("bus: a request ends with its signal's reason when the signal aborts, before or while it waits", async () => {
  const subject = a.subjects.devCtl('silent');
  const sub = b.subscribe(subject, () => {
    /* never replies */
  });
  await b.flush();
  const stop = new AbortController();
  const reason = new Error('run interrupted');
  const waiting = a.request(subject, 'ctl', {}, { timeoutMs: 600_000, signal: stop.signal }).then(
    () => null,
    (e: unknown) => e,
  );
  await a.flush();
  stop.abort(reason);
  assert.is(await waiting, reason);
  assert.is(
    await a.request(subject, 'ctl', {}, { timeoutMs: 600_000, signal: stop.signal }).then(
      () => null,
      (e: unknown) => e,
    ),
    reason,
  );
  sub.unsubscribe();
});

test('bus: bad run names, bad bus names and unreachable servers fail clearly', async () => {
  const failure = (p: Promise<unknown>) =>
    p.then(
      () => 'connected',
      (e: unknown) => String(e),
    );
  assert.match(await failure(Bus.connect({ servers: server.url, name: 'x', run: 'a.b' })), /invalid run 'a.b'/);
  assert.match(await failure(Bus.connect({ servers: server.url, name: '', run: 'r1' })), /bus name/);
  const err = await Bus.connect({
    servers: `nats://127.0.0.1:${await freePort()}`,
    name: 'x',
    run: 'r1',
    timeoutMs: 1000,
    maxReconnectAttempts: 0,
  }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.instance(err, ConnectFailed);
  assert.is((err as ConnectFailed).retryable, true);
});

test('bus: close() with the server gone closes the connection and fails pending requests at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'charon-bus-gone-'));
  const s = await startNatsServer({ runDir: dir, jetstream: false });
  const c = await Bus.connect({ servers: s.url, name: 'dev-c', run: 'r1', reconnectWaitMs: 100 });
  const d = await Bus.connect({ servers: s.url, name: 'dev-d', run: 'r1' });
  d.subscribe(c.subjects.devCtl('silent'), () => {
    /* never replies */
  });
  await d.flush();
  const pending = c.request(c.subjects.devCtl('silent'), 'ctl', {}, { timeoutMs: 600_000 }).then(
    () => null,
    (e: unknown) => e,
  );
  await c.flush();
  await s.stop();
  const t0 = Date.now();
  await Promise.all([c.close(), d.close()]);
  assert.ok(c.isClosed && d.isClosed, 'a connection to a vanished server is still open (reconnecting)');
  assert.instance(await pending, ConnectionClosed);
  assert.ok(Date.now() - t0 < 5000);
  rmSync(dir, { recursive: true, force: true });
});

test('bus: a dropped server is reported as disconnect, then reconnect when it returns', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'charon-bus-re-'));
  let s = await startNatsServer({ runDir: dir, jetstream: false });
  const c = await Bus.connect({ servers: s.url, name: 'dev-c', run: 'r1', reconnectWaitMs: 100 });
  const down = collector<string>(1);
  const up = collector<string>(1);
  c.on('disconnect', (d) => down.push(d.server));
  c.on('reconnect', (d) => up.push(d.server));
  await s.stop();
  await down.promise;
  s = await startNatsServer({ runDir: dir, jetstream: false, port: s.port });
  await up.promise;
  const echo = collector<number>(1);
  c.subscribe<{ n: number }>(c.subjects.events(), (env) => echo.push(env.body.n));
  await c.flush();
  c.publish(c.subjects.events(), 'ping', { n: 5 });
  assert.equal(await echo.promise, [5]);
  await c.close();
  assert.throws(
    () => c.publish(c.subjects.events(), 'ping', { n: 6 }),
    (e: Error) => e instanceof ConnectionClosed && !e.retryable,
  );
  await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

test.run();
