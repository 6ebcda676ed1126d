/**
 * Integration: `charon launch` against a real nats-server (started here, so its monitoring
 * endpoint can count connections and subscriptions) with real device processes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, execFile } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Bus, COORDINATOR, startNatsServer, type NatsServer } from '../src/bus/index.ts';
import { alive } from './fixtures/processes.ts';
import { tempDir } from './fixtures/temp.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = tempDir('charon-launch-');
let server: NatsServer;
/** The server's own (system account) subscriptions, present with no client connected. */
let baselineSubs = 0;

type Ev = Record<string, unknown> & { type: string };

/** A running `charon launch --json`: its events as they come, and a way to wait for one. */
function launch(args: string[]) {
  const child = spawn(process.execPath, [join(root, 'tools/charon.js'), 'launch', ...args, '--json'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Ev[] = [];
  const waiters: { pred: (e: Ev) => boolean; resolve: (e: Ev) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const e = JSON.parse(line) as Ev;
    (e as Ev & { seenAt: number }).seenAt = Date.now();
    events.push(e);
    for (const w of [...waiters])
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
  });
  const exit = new Promise<number>((res) => child.once('exit', (code) => res(code ?? -1)));
  const next = (pred: (e: Ev) => boolean, what: string, ms = 30_000) => {
    const seen = events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Ev>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms; stderr: ${stderr.slice(-2000)}`)), ms);
      waiters.push({
        pred,
        resolve: (e) => {
          clearTimeout(t);
          resolve(e);
        },
      });
    });
  };
  return { child, events, next, exit, stderr: () => stderr };
}

async function monitor(path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}${path}`);
  return (await res.json()) as Record<string, unknown>;
}

/** Pids the launch reported: itself, its devices (and the nats-server it started, if any). */
function pidsOf(events: Ev[]): number[] {
  return events
    .flatMap((e) => [e.type === 'LAUNCHED' ? [e.pid, e.natsPid] : [], e.type === 'DEVICE_SPAWNED' ? [e.pid] : []].flat())
    .filter((p): p is number => typeof p === 'number');
}

/** Waits (on events, with a deadline) until the server has no client left. */
async function serverEmpty(ms = 10_000): Promise<{ conns: number; subs: number }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const conns = (await monitor('/connz')).num_connections as number;
    const subs = (await monitor('/subsz')).num_subscriptions as number;
    if ((conns === 0 && subs === baselineSubs) || Date.now() > deadline) return { conns, subs: subs - baselineSubs };
    await new Promise((r) => setTimeout(r, 100));
  }
}

test.before(async () => {
  server = await startNatsServer({ runDir: join(tmp, 'server'), monitoring: true, jetstream: false });
  baselineSubs = (await monitor('/subsz')).num_subscriptions as number;
});
test.after(async () => {
  await server.stop();
});

test('launch: devices register and heartbeat, a SIGKILLed device is lost within 2 s, bad messages are counted, SIGINT leaves nothing', async () => {
  const run = launch([
    join(root, 'topologies/local-2.yaml'),
    '--nats',
    server.url,
    '--run-dir',
    join(tmp, 'run1'),
    '--until',
    'interrupted',
  ]);
  try {
    // Device processes start (compile, wasm and native runtimes) while other test files load the
    // same two cores: registration and profiling get a generous deadline, not a speed claim.
    await run.next((e) => e.type === 'ASSEMBLED', 'ASSEMBLED', 120_000);
    await run.next((e) => e.type === 'DEVICE_PROFILED' && e.device === 'dev1', 'dev1 profile', 120_000);
    await run.next((e) => e.type === 'DEVICE_PROFILED' && e.device === 'dev0', 'dev0 profile', 120_000);

    // This server has no credentials, so the probe can take the coordinator's identity and send control.
    const probe = await Bus.connect({ servers: server.url, name: 'probe', identity: COORDINATOR, run: 'local-2' });
    try {
      // Heartbeats arrive from both devices.
      const beats = new Map<string, number>();
      const sawBoth = new Promise<void>((res) => {
        probe.subscribe(probe.subjects.devHbAll(), (env) => {
          const dev = (env.body as { device: string }).device;
          beats.set(dev, (beats.get(dev) ?? 0) + 1);
          if ((beats.get('dev0') ?? 0) >= 2 && (beats.get('dev1') ?? 0) >= 2) res();
        });
      });
      await sawBoth;

      // Status over the bus, through the CLI.
      const status = await new Promise<string>((res, rej) =>
        execFile(
          process.execPath,
          [join(root, 'tools/charon.js'), 'status', '--nats', server.url, '--run', 'local-2', '--json'],
          { cwd: root },
          (err, out) => (err ? rej(err) : res(out)),
        ),
      );
      const doc = JSON.parse(status) as {
        state: string;
        devices: { name: string; alive: boolean; heartbeatAgeMs: number; memoryBytes: number; matmulGflops: number }[];
      };
      assert.equal(doc.state, 'assembled');
      assert.equal(doc.devices.map((d) => d.name).sort(), ['dev0', 'dev1']);
      for (const d of doc.devices) {
        assert.ok(d.alive && d.heartbeatAgeMs < 1500 && d.memoryBytes > 0 && d.matmulGflops > 0, JSON.stringify(d));
      }

      // Malformed traffic on a device subject: raw garbage, a wrong-version envelope and an invalid body.
      const rejected: Ev[] = [];
      probe.subscribe(
        probe.subjects.eventsAll(),
        (env) => {
          rejected.push({ type: env.kind, ...(env.body as object) });
        },
        { kinds: ['event', 'rejected'] },
      );
      probe.publishBytes(probe.subjects.devCtl('dev0'), new Uint8Array([0xc1, 0xff, 0x00]));
      const bad = await probe.request(probe.subjects.devCtl('dev0'), 'ctl', { kind: 42 }, { timeoutMs: 3000 });
      assert.equal((bad.body as { ok: boolean }).ok, false);
      const unknown = await probe.request(probe.subjects.devCtl('dev0'), 'ctl', { kind: 'teleport' }, { timeoutMs: 3000 });
      assert.match((unknown.body as { error: { message: string } }).error.message, /unknown ctl kind 'teleport'/);
      const pong = await probe.request(probe.subjects.devCtl('dev0'), 'ctl', { kind: 'ping' }, { timeoutMs: 3000 });
      assert.equal(
        (pong.body as { ok: boolean; result: { state: string } }).result.state,
        'idle',
        'the device still works after bad input',
      );
      await probe.flush();
      const deadline = Date.now() + 5000;
      while (rejected.filter((e) => e.subject === probe.subjects.devCtl('dev0')).length < 2 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      const reasons = rejected
        .filter((e) => e.subject === probe.subjects.devCtl('dev0'))
        .map((e) => String(e.reason))
        .sort();
      assert.equal(reasons.length, 2, reasons.join());
      assert.equal(reasons[0], 'body');
      assert.ok(['malformed', 'truncated'].includes(reasons[1]!), reasons[1]);

      // SIGKILL a device: reported lost within 2 s.
      const spawned = run.events.find((e) => e.type === 'DEVICE_SPAWNED' && e.device === 'dev0')!;
      const killedAt = Date.now();
      process.kill(spawned.pid as number, 'SIGKILL');
      const lost = (await run.next((e) => e.type === 'DEVICE_LOST' && e.device === 'dev0', 'DEVICE_LOST', 5000)) as Ev & { seenAt: number };
      const latency = lost.seenAt - killedAt;
      assert.ok(latency <= 2000, `lost after ${latency} ms`);
      // The supervisor restarts it and it joins again.
      await run.next((e) => e.type === 'DEVICE_JOINED' && e.device === 'dev0' && e.rejoin === true, 'rejoin');
    } finally {
      await probe.close();
    }
  } finally {
    run.child.kill('SIGINT');
  }
  assert.equal(await run.exit, 0, run.stderr());
  const stopped = run.events.at(-1)!;
  assert.equal(stopped.type, 'STOPPED');
  assert.equal(stopped.reason, 'SIGINT');
  for (const pid of pidsOf(run.events)) assert.not.ok(alive(pid), `pid ${pid} still alive`);
  assert.equal(await serverEmpty(), { conns: 0, subs: 0 });
});

test('launch: a device that cannot start fails the launch, which still leaves nothing behind', async () => {
  const file = join(tmp, 'broken.yaml');
  const text = readFileSync(join(root, 'topologies/local-2.yaml'), 'utf8').replace(
    /name: dev1\n(\s+)local: true\n\s+backend: wasm/,
    'name: dev1\n$1local: true\n$1backend: tensorflow',
  );
  assert.match(text, /backend: tensorflow/);
  writeFileSync(file, text);
  const run = launch([file, '--nats', server.url, '--run-dir', join(tmp, 'run2'), '--until', 'registered']);
  const code = await run.exit;
  assert.equal(code, 1);
  const stopped = run.events.at(-1)!;
  assert.equal(stopped.type, 'STOPPED');
  assert.match(String(stopped.error), /device dev1: gave up after 3 restarts/);
  assert.ok(run.events.filter((e) => e.type === 'DEVICE_RESTARTING').length === 3);
  for (const pid of pidsOf(run.events)) assert.not.ok(alive(pid), `pid ${pid} still alive`);
  assert.equal(await serverEmpty(), { conns: 0, subs: 0 });
});

test('launch: its own nats-server and devices are gone after --until registered', async () => {
  const run = launch([join(root, 'topologies/single.yaml'), '--run-dir', join(tmp, 'run3'), '--until', 'registered']);
  assert.equal(await run.exit, 0, run.stderr());
  const launched = run.events.find((e) => e.type === 'LAUNCHED')!;
  assert.ok(typeof launched.natsPid === 'number');
  for (const pid of pidsOf(run.events)) assert.not.ok(alive(pid), `pid ${pid} still alive`);
});

test("launch: the topology's bus.url is the bus used (no private server); bus.auth is refused by line and field", async () => {
  const file = join(tmp, 'url.yaml');
  const text = readFileSync(join(root, 'topologies/single.yaml'), 'utf8').replace(
    /bus:\s*\n\s+embedded: true/,
    `bus:\n  url: ${server.url}`,
  );
  assert.match(text, new RegExp(`url: ${server.url}`));
  writeFileSync(file, text);
  const run = launch([file, '--run-dir', join(tmp, 'run4'), '--until', 'registered']);
  assert.equal(await run.exit, 0, run.stderr());
  const launched = run.events.find((e) => e.type === 'LAUNCHED')!;
  assert.is(launched.nats, server.url);
  assert.is(launched.natsPid, undefined, 'no private server was started');
  assert.equal(await serverEmpty(), { conns: 0, subs: 0 });

  const authFile = join(tmp, 'auth.yaml');
  writeFileSync(authFile, text.replace(`url: ${server.url}`, `url: ${server.url}\n  auth: { user: a, password: b }`));
  const refused = launch([authFile, '--run-dir', join(tmp, 'run5'), '--until', 'registered']);
  assert.equal(await refused.exit, 2);
  assert.match(refused.stderr(), /auth\.yaml:\d+: bus\.auth: credentials for an external server are not supported/);
});

test.run();
