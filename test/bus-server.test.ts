import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, startNatsServer, findNatsServer, NATS_SERVER_MISSING, NatsServerError } from '../src/bus/index.ts';
import { alive } from './fixtures/processes.ts';

const runDir = mkdtempSync(join(tmpdir(), 'charon-srv-'));

/** Resolves when `pid` has exited; rejects after `ms`. */
async function exitOf(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} still running after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function refuses(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = tcpConnect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(false);
    });
    s.once('error', () => res(true));
  });
}

test.after(() => rmSync(runDir, { recursive: true, force: true }));

test('nats-server launcher: loopback server with 8 MB max_payload and JetStream under the run directory; gone after stop()', async () => {
  const server = await startNatsServer({ runDir, monitoring: true });
  assert.match(server.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
  const conf = readFileSync(join(runDir, 'nats', 'nats-server.conf'), 'utf8');
  assert.match(conf, /listen: "127\.0\.0\.1:\d+"/);
  const bus = await Bus.connect({ servers: server.url, name: 'probe', run: 'srv' });
  assert.is(bus.maxPayload, 8 * 1024 * 1024);
  assert.ok(existsSync(join(runDir, 'nats', 'jetstream')), 'JetStream store is in the run directory');
  const health = await fetch(`http://127.0.0.1:${server.httpPort}/healthz`);
  assert.is(health.status, 200);
  await bus.close();
  assert.ok(alive(server.pid));
  await server.stop();
  assert.not.ok(alive(server.pid), 'nats-server process is gone');
  assert.ok(await refuses(server.port), 'port no longer accepts connections');
  await server.stop(); // idempotent
});

test('nats-server launcher: a missing binary is one clear line naming the package', async () => {
  assert.throws(
    () => findNatsServer('/nonexistent-dir'),
    (e: Error) => e instanceof NatsServerError && e.message === NATS_SERVER_MISSING,
  );
  assert.match(NATS_SERVER_MISSING, /apt-get install nats-server/);
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent-dir';
  try {
    const err = await startNatsServer({ runDir }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.is((err as Error).message, NATS_SERVER_MISSING);
  } finally {
    process.env.PATH = saved;
  }
});

test('nats-server launcher: the server dies with its parent, even when the parent is SIGKILLed', async () => {
  const script = `import { startNatsServer } from ${JSON.stringify(new URL('../src/bus/server.ts', import.meta.url).pathname)};
    const s = await startNatsServer({ runDir: ${JSON.stringify(join(runDir, 'child'))}, jetstream: false });
    process.stdout.write(s.pid + '\\n'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = await new Promise<number>((res, rej) => {
    child.stdout!.once('data', (d: Buffer) => res(Number(d.toString().trim())));
    child.once('exit', (code) => rej(new Error(`child exited early (${code})`)));
  });
  assert.ok(alive(pid));
  child.kill('SIGKILL');
  await exitOf(pid, 5000);
});

test.run();
