import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus, startNatsServer, type NatsServer } from '../src/bus/index.ts';
import { certificateNames, ensureClientCertificate, ensureRunCertificates, tlsFiles } from '../src/security/certs.ts';
import { startLaunch } from './fixtures/launch.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-sec-tls-'));
const runDir = join(tmp, 'run');
const otherRun = join(tmp, 'other');
let server: NatsServer | undefined;

test.after(async () => {
  await server?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const failure = (p: Promise<unknown>) =>
  p.then(
    () => 'connected',
    (e: Error) => `${e.message} ${String((e.cause as Error | undefined)?.message ?? '')}`,
  );

test('tls: charon certs makes a private CA and a server certificate for the given hosts', async () => {
  const r = await new Promise<{ code: number; out: string; err: string }>((res) =>
    execFile(
      process.execPath,
      [join(root, 'tools/charon.js'), 'certs', '--run-dir', runDir, '--host', 'nas.local', '--host', '192.168.7.9'],
      { cwd: root },
      (e, out, err) => res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out: String(out), err: String(err) }),
    ),
  );
  assert.is(r.code, 0, r.err);
  const f = tlsFiles(runDir);
  assert.is(r.out.trim(), f.caFile);
  assert.equal(certificateNames(f.certFile).sort(), ['127.0.0.1', '192.168.7.9', 'localhost', 'nas.local']);
  assert.is(statSync(f.dir).mode & 0o777, 0o700);
  for (const name of readdirSync(f.dir)) assert.is(statSync(join(f.dir, name)).mode & 0o777, 0o600, name);
  // Asked again for fewer names: the certificate that covers them is kept.
  assert.not.ok(ensureRunCertificates(runDir, ['nas.local']).issued);
  // A new name: a new server certificate from the same CA, keeping the old names.
  assert.ok(ensureRunCertificates(runDir, ['box']).issued);
  assert.ok(certificateNames(f.certFile).includes('nas.local'));
});

test('tls: a TLS-only server: the right CA connects and exchanges a message; a wrong CA and plain TCP are refused', async () => {
  const f = ensureRunCertificates(runDir);
  ensureRunCertificates(otherRun);
  server = await startNatsServer({ runDir, jetstream: false, tls: f });

  const a = await Bus.connect({ servers: server.url, name: 'a', run: 'tls', tls: { caFile: f.caFile }, maxReconnectAttempts: 0 });
  const b = await Bus.connect({ servers: server.url, name: 'b', run: 'tls', tls: { caFile: f.caFile }, maxReconnectAttempts: 0 });
  const got = new Promise<unknown>((res) => b.subscribe(b.subjects.eventsAll(), (env) => res(env.body), { kinds: ['event'] }));
  await b.flush();
  a.publish(a.subjects.events(), 'event', { hello: 'over tls' });
  assert.equal(await got, { hello: 'over tls' });
  await a.close();
  await b.close();

  const wrongCa = await failure(
    Bus.connect({
      servers: server.url,
      name: 'c',
      run: 'tls',
      tls: { caFile: tlsFiles(otherRun).caFile },
      maxReconnectAttempts: 0,
      timeoutMs: 3000,
    }),
  );
  assert.match(wrongCa, /certificate/i, 'a server signed by another CA is not trusted');
  const systemCas = await failure(Bus.connect({ servers: server.url, name: 'd', run: 'tls', maxReconnectAttempts: 0, timeoutMs: 3000 }));
  assert.match(systemCas, /certificate/i, "without the run's CA the server is not trusted either");

  // Plain TCP: the server greets in clear (INFO says tls_required), then refuses anything but a
  // TLS handshake: a CONNECT in clear never gets its PONG.
  const plain = await new Promise<string>((res) => {
    let seen = '';
    const s = tcpConnect({ host: '127.0.0.1', port: server!.port });
    const end = () => {
      s.destroy();
      res(seen);
    };
    s.setTimeout(3000, end);
    s.on('data', (d) => {
      seen += d.toString();
      if (seen.includes('INFO ') && !seen.includes('CONNECT-SENT')) {
        seen += 'CONNECT-SENT';
        s.write('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n');
      }
    });
    s.on('close', end);
    s.on('error', end);
  });
  assert.match(plain, /"tls_required":true/);
  assert.not.match(plain, /PONG/, 'a client in clear gets no answer');
  await server.stop();
  server = undefined;
});

test('tls: mutual TLS: a client without a certificate of the run is refused, one with it connects', async () => {
  const f = ensureRunCertificates(runDir);
  server = await startNatsServer({ runDir, jetstream: false, tls: { ...f, verify: true } });
  const anonymous = await failure(
    Bus.connect({ servers: server.url, name: 'e', run: 'tls', tls: { caFile: f.caFile }, maxReconnectAttempts: 0, timeoutMs: 3000 }),
  );
  assert.not.match(anonymous, /^connected/, 'no client certificate: refused');
  const foreign = ensureClientCertificate(otherRun, 'dev0');
  const wrong = await failure(
    Bus.connect({
      servers: server.url,
      name: 'f',
      run: 'tls',
      tls: { caFile: f.caFile, ...foreign },
      maxReconnectAttempts: 0,
      timeoutMs: 3000,
    }),
  );
  assert.not.match(wrong, /^connected/, "a certificate of another run's CA: refused");
  const mine = ensureClientCertificate(runDir, 'dev0');
  for (const file of [mine.certFile, mine.keyFile]) assert.is(statSync(file).mode & 0o777, 0o600);
  const ok = await Bus.connect({ servers: server.url, name: 'g', run: 'tls', tls: { caFile: f.caFile, ...mine }, maxReconnectAttempts: 0 });
  await ok.flush();
  await ok.close();
  await server.stop();
  server = undefined;
});

function topology(tls: string): string {
  const file = join(tmp, `tls-${tls}.yaml`);
  writeFileSync(
    file,
    [
      'run: tlsrun',
      'model: { preset: tiny }',
      'method: { kind: parallel, k: 8 }',
      'data: { markov: { sequences: 8, seqLen: 16, seed: 1 } }',
      'training: { epochs: 1, batch: 8, microBatches: 2, lr: 0.001, seed: 1, cache: { budgetMb: 0, dir: cache, dtype: f32 } }',
      `bus: { embedded: true, tls: ${tls} }`,
      'devices:',
      '  - { name: dev0, local: true, backend: wasm, memoryMb: 2048 }',
      '  - { name: dev1, local: true, backend: wasm, memoryMb: 2048 }',
      '',
    ].join('\n'),
  );
  return file;
}

test('tls: a launched run with bus.tls on trains end to end; devices verify the server', async () => {
  const dir = join(tmp, 'launched');
  const r = await startLaunch([topology('true'), '--run-dir', dir]).done;
  assert.is(r.code, 0, r.stderr);
  const launched = r.events.find((e) => e.type === 'LAUNCHED');
  assert.is(launched?.tlsCa, tlsFiles(dir).caFile);
  assert.ok(
    r.events.some((e) => e.type === 'STEP_DONE'),
    'the run trained',
  );
});

function status(nats: string, dir: string, tls: string[]): Promise<{ code: number; out: string; err: string }> {
  const args = [join(root, 'tools/charon.js'), 'status', '--nats', nats, '--run', 'tlsrun', '--json'];
  args.push('--creds', join(dir, 'creds', 'observer.nk'), ...tls);
  return new Promise((res) =>
    execFile(process.execPath, args, { cwd: root }, (e, out, err) =>
      res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out: String(out), err: String(err) }),
    ),
  );
}

test("tls: a launched run with mutual TLS assembles; charon status needs the run's CA and a client certificate", async () => {
  const dir = join(tmp, 'watched');
  const observer = join(dir, 'tls', 'clients', 'observer');
  let nats = '';
  let checked: Promise<{ code: number; out: string; err: string }[]> | undefined;
  const run = startLaunch([topology('mutual'), '--run-dir', dir, '--until', 'interrupted'], (e, child) => {
    if (e.type === 'LAUNCHED') nats = e.nats as string;
    if (e.type === 'ASSEMBLED' && !checked)
      checked = (async () => {
        const ca = ['--tls-ca', tlsFiles(dir).caFile];
        const out = [
          await status(nats, dir, []),
          await status(nats, dir, ca),
          await status(nats, dir, [...ca, '--tls-cert', `${observer}.pem`, '--tls-key', `${observer}.key`]),
        ];
        child.kill('SIGINT');
        return out;
      })();
  });
  const r = await run.done;
  assert.ok(checked, r.stderr);
  const [plain, noCert, verified] = await checked!;
  assert.is(plain!.code, 1, 'without the CA: refused');
  assert.match(plain!.err, /certificate/i);
  assert.is(noCert!.code, 1, 'without a client certificate: refused');
  assert.is(verified!.code, 0, verified!.err);
  assert.equal((JSON.parse(verified!.out) as { devices: { name: string }[] }).devices.map((d) => d.name).sort(), ['dev0', 'dev1']);
});

test.run();
