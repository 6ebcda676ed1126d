import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTopology } from '../src/topology/load.ts';
import { busNeedsTls } from '../src/topology/schema.ts';
import { inside } from '../src/security/files.ts';

const dir = mkdtempSync(join(tmpdir(), 'charon-sec-topo-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function topology(bus: string, device = 'd0'): string {
  const file = join(dir, 't.yaml');
  writeFileSync(
    file,
    [
      'run: t',
      'model: { preset: tiny }',
      'method: { kind: parallel }',
      'data: { markov: { sequences: 8 } }',
      `bus: ${bus}`,
      `devices: [ { name: ${device}, memoryMb: 64 } ]`,
      '',
    ].join('\n'),
  );
  return file;
}

const refusal = (file: string) => {
  try {
    loadTopology(file);
  } catch (err) {
    return (err as Error).message;
  }
  return 'accepted';
};

test('security topology: where the embedded server listens; listen, auth and the coordinator name refused where they cannot hold', () => {
  assert.is(loadTopology(topology('{ embedded: true, listen: "0.0.0.0:4222" }')).bus.listen, '0.0.0.0:4222');
  assert.match(refusal(topology('{ embedded: true, listen: "0.0.0.0" }')), /t\.yaml:\d+: bus\.listen: must be host:port/);
  assert.match(refusal(topology('{ embedded: true, listen: "host:70000" }')), /bus\.listen: port must be 1\.\.65535/);
  assert.match(refusal(topology('{ url: "nats://h:4222", listen: "0.0.0.0:4222" }')), /bus\.listen: only for the embedded server/);
  assert.match(
    refusal(topology('{ url: "nats://h:4222", auth: { token: x } }')),
    /bus\.auth: credentials for an external server are not supported/,
  );
  assert.match(refusal(topology('{ embedded: true }', 'coordinator')), /devices\[0\]\.name: "coordinator" is reserved/);
});

test('security topology: bus.tls: on by itself off loopback, refused where it cannot hold', () => {
  const tlsOf = (bus: string) => busNeedsTls(loadTopology(topology(bus)).bus);
  assert.is(tlsOf('{ embedded: true }'), false);
  assert.is(tlsOf('{ embedded: true, tls: true }'), true);
  assert.is(tlsOf('{ embedded: true, listen: "0.0.0.0:4222" }'), true, 'other hosts can connect: TLS');
  assert.is(tlsOf('{ embedded: true, listen: "127.0.0.1:4222" }'), false);
  assert.is(tlsOf('{ embedded: true, listen: "[::1]:4222", tls: false }'), false);
  assert.is(tlsOf('{ embedded: true, tls: mutual }'), true);
  assert.match(refusal(topology('{ embedded: true, tls: yes }')), /t\.yaml:\d+: bus\.tls: must be true, false or "mutual"/);
  assert.match(refusal(topology('{ embedded: true, listen: "192.168.1.2:4222", tls: false }')), /t\.yaml:\d+: bus\.tls: cannot be false/);
  assert.match(refusal(topology('{ url: "nats://h:4222", tls: true }')), /bus\.tls: only for the embedded server/);
});

test('security files: names cannot leave their directory', () => {
  assert.is(inside('/runs/r', 'cache/d0', 'cache'), '/runs/r/cache/d0');
  for (const bad of ['../x', '/etc', 'a/../../x', '.', ''])
    assert.throws(
      () => inside('/runs/r', bad, 'cache'),
      (e: Error) => e.message.includes(`'${bad}'`) && /inside \/runs\/r/.test(e.message),
    );
});

test.run();
