import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadTopology, parseTopology, TopologyError } from '../src/topology/load.ts';
import { tempDir } from './fixtures/temp.ts';

const root = new URL('..', import.meta.url).pathname;
const good = `run: r1
model: { preset: tiny }
method: { kind: lora, rank: 4 }
data: { file: data.jsonl }
devices:
  - { name: a, memoryMb: 1024 }
  - { name: b, memoryMb: 2048, local: false, slowdown: 2, bandwidthMbps: 100 }
`;

function errorOf(text: string): TopologyError {
  try {
    parseTopology(text, 't.yaml');
  } catch (err) {
    if (err instanceof TopologyError) return err;
    throw err;
  }
  throw new Error('expected a TopologyError');
}

test('topology: every ready topology file loads', () => {
  const files = readdirSync(join(root, 'topologies')).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 4);
  for (const f of files) assert.ok(loadTopology(join(root, 'topologies', f)).devices.length >= 1, f);
  const lab = loadTopology(join(root, 'topologies/lab-4.yaml'));
  assert.equal(new Set(lab.devices.map((d) => d.slowdown)).size, 4, 'lab-4 devices differ');
  const nano = loadTopology(join(root, 'topologies/jetson-nano-8.yaml'));
  assert.equal(nano.devices.length, 8);
  assert.ok(nano.devices.every((d) => !d.local && d.memoryMb === 4096 && d.bandwidthMbps === 1000));
});

test('topology: defaults fill in and relative paths resolve against the file', () => {
  const dir = tempDir('charon-topo-');
  writeFileSync(join(dir, 't.yaml'), good);
  const t = loadTopology(join(dir, 't.yaml'));
  assert.equal(t.data.file, join(dir, 'data.jsonl'));
  assert.equal(t.method, { kind: 'lora', rank: 4, alpha: 16, targets: ['query', 'value'] });
  assert.equal(t.bus, { embedded: true });
  assert.equal(t.training.cache.dtype, 'f32');
  assert.equal(t.devices[0], { name: 'a', memoryMb: 1024, local: true, backend: 'wasm', slowdown: 1, optional: false });
  assert.equal(t.elastic, { allowUnlisted: false });
});

test('topology: errors name file, line, field and reason', () => {
  assert.equal(
    errorOf(good.replace('name: b', 'name: b.x')).firstLine,
    't.yaml:7: devices[1].name: must be letters, digits, "-" or "_" (it becomes part of NATS subject names), got "b.x"',
  );
  assert.equal(errorOf(good.replace('name: b', 'name: a')).firstLine, 't.yaml:7: devices[1].name: duplicate device name "a"');
  assert.equal(
    errorOf(good.replace('kind: lora', 'kind: lora2')).firstLine,
    't.yaml:3: method.kind: must be "parallel" | "lora" | "serial" | "full", got "lora2"',
  );
  assert.equal(errorOf(good.replace('rank: 4', 'rank: 4.5')).firstLine, 't.yaml:3: method.rank: expected an integer, got 4.5');
  assert.equal(errorOf(good.replace('slowdown: 2', 'slowdown: 0.5')).firstLine, 't.yaml:7: devices[1].slowdown: must be >= 1, got 0.5');
  assert.equal(errorOf(good.replace('memoryMb: 1024', 'memory: 1024')).firstLine, 't.yaml:6: devices[0].memory: unknown field');
  assert.equal(errorOf(good.replace('data: { file: data.jsonl }\n', '')).firstLine, 't.yaml:1: data: is required');
  assert.equal(
    errorOf(good.replace('{ preset: tiny }', '{ preset: tiny, dir: m }')).firstLine,
    't.yaml:2: model: give exactly one of "preset" or "dir"',
  );
  assert.equal(errorOf('run: r\n  x: [\n').issues[0]!.field, '(yaml)');
  assert.equal(
    errorOf(good.replace('local: false,', 'local: false, optional: maybe,')).firstLine,
    't.yaml:7: devices[1].optional: expected boolean, got "maybe"',
  );
  assert.equal(errorOf(`${good}elastic: { allowUnlisted: 1 }\n`).firstLine, 't.yaml:8: elastic.allowUnlisted: expected boolean, got 1');
  assert.equal(errorOf(`${good}elastic: { allowUnlited: true }\n`).firstLine, 't.yaml:8: elastic.allowUnlited: unknown field');
  assert.equal(
    errorOf(good.replace('memoryMb: 1024 }', 'memoryMb: 1024, optional: true }').replace('local: false,', 'local: false, optional: true,'))
      .firstLine,
    't.yaml:6: devices: at least one device must not be optional (the run starts with those)',
  );
});

test('topology: training.cache.replicas is 1 or 2, and 2 needs two devices', () => {
  const pac = good.replace('kind: lora, rank: 4', 'kind: parallel, k: 8');
  const withReplicas = (n: string, text = pac) => `${text}training:\n  cache: { budgetMb: 8, replicas: ${n} }\n`;
  assert.is(parseTopology(pac, 't.yaml').training.cache.replicas, 1);
  assert.is(parseTopology(withReplicas('2'), 't.yaml').training.cache.replicas, 2);
  assert.equal(
    errorOf(withReplicas('3')).firstLine,
    't.yaml:9: training.cache.replicas: must be 1 (one copy) or 2 (every entry on two devices); more copies are not supported',
  );
  const single = pac.replace(/ {2}- \{ name: b.*\n/, '');
  assert.equal(
    errorOf(withReplicas('2', single)).firstLine,
    't.yaml:8: training.cache.replicas: 2 copies need at least 2 devices to hold them; the topology lists 1',
  );
  // An unlisted device may join and hold the second copy.
  assert.is(parseTopology(`${withReplicas('2', single)}elastic: { allowUnlisted: true }\n`, 't.yaml').training.cache.replicas, 2);
});

test('topology: launch prints one clear error line and exits non-zero', async () => {
  const dir = tempDir('charon-topo-');
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, good.replace('memoryMb: 2048', 'memoryMb: -5'));
  const { code, stderr } = await new Promise<{ code: number; stderr: string }>((res) => {
    execFile(process.execPath, [join(root, 'tools/charon.js'), 'launch', file], { cwd: root }, (err, _out, stderr) =>
      res({ code: err ? (err.code as number) : 0, stderr }),
    );
  });
  assert.ok(code !== 0);
  assert.equal(stderr.trim(), `charon launch: ${file}:7: devices[1].memoryMb: must be > 0, got -5`);
});

test.run();
