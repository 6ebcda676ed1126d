import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Bus,
  COORDINATOR,
  ConnectFailed,
  DEFAULT_MAX_PAYLOAD,
  newUserKey,
  startNatsServer,
  type BusEvents,
  type NatsServer,
} from '../src/bus/index.ts';
import { CredentialsError, ensureRunCredentials, issueCredentials, OBSERVER, readSeed, seedPath } from '../src/security/credentials.ts';
import { WireTensor } from '../src/tensor/index.ts';

const RUN = 'sec';
let server: NatsServer, dir: string;
const buses: Bus[] = [];

const connect = async (name: string, seed?: string, identity = name) => {
  const b = await Bus.connect({ servers: server.url, name, identity, run: RUN, seed, maxReconnectAttempts: 0, timeoutMs: 3000 });
  buses.push(b);
  return b;
};
const as = (name: string) => connect(name, readSeed(seedPath(dir, name)));

/** Resolves with the first `denied` event of `bus` for `subject`, or rejects after `ms`. */
function deniedOn(bus: Bus, subject: string, ms = 5000): Promise<BusEvents['denied']> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no permission violation for ${subject} within ${ms} ms`)), ms);
    const off = bus.on('denied', (d) => {
      if (d.subject !== subject) return;
      clearTimeout(t);
      off();
      resolve(d);
    });
  });
}

/** Envelopes `bus` receives on `subject`, in order. */
function received(bus: Bus, subject: string): { n: number }[] {
  const got: { n: number }[] = [];
  bus.subscribe<{ n: number }>(subject, (env) => {
    got.push(env.body);
  });
  return got;
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'charon-sec-bus-'));
  const authorization = ensureRunCredentials(dir, RUN, ['d0', 'd1', 'd2'], DEFAULT_MAX_PAYLOAD);
  server = await startNatsServer({ runDir: dir, jetstream: false, authorization });
});
test.after(async () => {
  for (const b of buses) await b.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('security: credentials are private files; a group- or world-readable seed is refused by name', () => {
  assert.is(statSync(join(dir, 'creds')).mode & 0o777, 0o700);
  for (const n of [COORDINATOR, OBSERVER, 'd0', 'identities.json'])
    assert.is(statSync(n.endsWith('.json') ? join(dir, 'creds', n) : seedPath(dir, n)).mode & 0o777, 0o600, n);
  assert.is(statSync(join(dir, 'nats', 'auth.conf')).mode & 0o777, 0o600);
  const loose = issueCredentials(dir, RUN, 'loose', 'device');
  chmodSync(loose, 0o644);
  assert.throws(
    () => readSeed(loose),
    (e: Error) => e instanceof CredentialsError && e.message.includes(loose) && /chmod 600/.test(e.message),
  );
  assert.throws(() => issueCredentials(dir, RUN, 'd0', 'device'), /'d0' already has credentials/);
});

test('security: a client without credentials, or with a key the run did not issue, is refused', async () => {
  for (const seed of [undefined, newUserKey().seed]) {
    const err = await connect('intruder', seed).then(
      () => null,
      (e: unknown) => e,
    );
    assert.instance(err, ConnectFailed);
    assert.match(String((err as Error).message), /authorization violation/i);
  }
});

test('security: a device cannot publish under another device, subscribe to its tensors or send control', async () => {
  const coord = await as(COORDINATOR),
    d0 = await as('d0'),
    d1 = await as('d1'),
    d2 = await as('d2');
  const joins = received(coord, coord.subjects.coordJoinIn());
  const ctl = received(d1, d1.subjects.devCtlIn());
  const fwd = received(d1, d1.subjects.stageFwdIn(1, 0));
  for (const b of [coord, d1]) await b.flush();

  // Under d1's name: refused by the server, never delivered.
  const spoof = 'charon.sec.from.d1.to.coordinator.join';
  const refusedSpoof = deniedOn(d0, spoof);
  d0.publish(spoof, 'join', { n: -1 });
  assert.is((await refusedSpoof).operation, 'publish');
  // Control to d1 in the coordinator's name: refused.
  const forgedCtl = coord.subjects.devCtl('d1');
  const refusedCtl = deniedOn(d0, forgedCtl);
  d0.publish(forgedCtl, 'ctl', { n: -2 });
  await refusedCtl;
  // d2's activations for d1, and everything of the run: d0 cannot listen.
  const tapped = d2.subjects.stageFwd('d1', 1, 0);
  const refusedTap = deniedOn(d0, tapped);
  d0.subscribe(tapped, () => assert.unreachable('d0 read a tensor meant for d1'));
  assert.is((await refusedTap).operation, 'subscription');
  const refusedAll = deniedOn(d0, 'charon.sec.>');
  d0.subscribe('charon.sec.>', () => assert.unreachable('d0 read the whole run'));
  await refusedAll;
  // Forged replies into the coordinator's inbox: refused (devices may only answer requests they got).
  const forgedReply = `${coord.subjects.inbox()}.x.0`;
  const refusedReply = deniedOn(d0, forgedReply);
  d0.publishBytes(forgedReply, new Uint8Array([1]));
  await refusedReply;

  // What each role may do still works, in order after the refused attempts.
  d0.publish(d0.subjects.coordJoin(), 'join', { n: 1 });
  d2.publish(d2.subjects.stageFwd('d1', 1, 0), 'fwd', { n: 2, t: new WireTensor('float32', [4], new Float32Array(4)) });
  coord.publish(coord.subjects.devCtl('d1'), 'ctl', { n: 3 });
  await until(() => joins.length === 1 && fwd.length === 1 && ctl.length === 1, 'the permitted messages');
  assert.equal([joins[0]!.n, fwd[0]!.n, ctl[0]!.n], [1, 2, 3]);
});

test('security: a device answers the requests it gets, also in chunks over max_payload; an observer only asks for status', async () => {
  const coord = await as(COORDINATOR),
    d1 = await as('d1'),
    obs = await as(OBSERVER);
  const big = new Float32Array(DEFAULT_MAX_PAYLOAD / 4 + 1000).fill(0.5); // > max_payload: several reply messages
  d1.subscribe(d1.subjects.devCtlIn(), (_env, msg) => d1.reply(msg, 'reply', { t: new WireTensor('float32', [big.length], big) }));
  coord.subscribe(coord.subjects.coordStatusIn(), (_env, msg) => coord.reply(msg, 'reply', { state: 'assembled' }));
  for (const b of [coord, d1]) await b.flush();
  const r = await coord.request<unknown, { t: WireTensor }>(coord.subjects.devCtl('d1'), 'ctl', {}, { timeoutMs: 10_000 });
  assert.is(r.body.t.size, big.length);
  const s = await obs.request<unknown, { state: string }>(obs.subjects.coordStatus(), 'status', {}, { timeoutMs: 5000 });
  assert.is(s.body.state, 'assembled');
  const join = obs.subjects.coordJoin();
  const refused = deniedOn(obs, join);
  obs.publish(join, 'join', {});
  await refused;
});

test('security: a reply made of hundreds of tensors (a model state) arrives whole within the messages a reply may take', async () => {
  const coord = await as(COORDINATOR),
    d2 = await as('d2');
  const limits = { maxMessageBytes: 256 << 20, reassemblyBytes: 512 << 20 };
  for (const b of [coord, d2]) b.limitMessages(limits);
  // Large tensors between small ones: each piece of the encoded message is small, the whole is
  // several max_payloads; sent one message per piece it would pass the server's allow_responses.
  const state: Record<string, WireTensor> = {};
  for (let i = 0; i < 600; i++)
    state[`p${i}`] = new WireTensor('float32', [i % 2 ? 20_000 : 16], new Float32Array(i % 2 ? 20_000 : 16).fill(i));
  d2.subscribe(d2.subjects.devCtlIn(), (_env, msg) => d2.reply(msg, 'reply', { params: state, m: state, v: state }));
  for (const b of [coord, d2]) await b.flush();
  const r = await coord.request<unknown, { params: Record<string, WireTensor>; v: Record<string, WireTensor> }>(
    coord.subjects.devCtl('d2'),
    'ctl',
    {},
    {
      timeoutMs: 15_000,
    },
  );
  assert.is(Object.keys(r.body.v).length, 600);
  assert.is(r.body.v.p599!.size, 20_000);
  assert.is((r.body.params.p7!.data as Float32Array)[19_999], 7);
});

test('security: charon creds add issues a key the running server accepts at once; a name is issued once', async () => {
  const cli = join(new URL('..', import.meta.url).pathname, 'tools/charon.js');
  const creds = (name: string) =>
    new Promise<{ code: number; out: string; err: string }>((res) =>
      execFile(process.execPath, [cli, 'creds', 'add', '--run-dir', dir, '--name', name], (e, out, err) =>
        res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out: String(out), err: String(err) }),
      ),
    );
  const added = await creds('jetson-9');
  assert.is(added.code, 0, added.err);
  assert.is(added.out.trim(), seedPath(dir, 'jetson-9'));
  assert.match(added.err, /accepted by the running server/);
  assert.is(statSync(seedPath(dir, 'jetson-9')).mode & 0o777, 0o600);
  const late = await as('jetson-9');
  const refused = deniedOn(late, 'charon.sec.from.d0.hb');
  late.publish('charon.sec.from.d0.hb', 'hb', {});
  await refused;
  const again = await creds('jetson-9');
  assert.is(again.code, 1);
  assert.match(again.err, /'jetson-9' already has credentials/);
});

test.run();
