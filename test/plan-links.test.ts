/**
 * Links in the planner's profile: what the devices measured over the bus, per direction, with the
 * topology's caps and the default for the links that were not measured; the survey's rounds.
 */
import { test } from 'uvu';
import { spawnSync } from 'node:child_process';
import * as assert from 'uvu/assert';
import { loadConfig } from '../src/model/load.ts';
import { linkReport, measuredProfile, methodShape, modelShape, type MeasuredLink } from '../src/plan/device-profile.ts';
import { linkCost } from '../src/plan/profile.ts';
import { planPipeline } from '../src/plan/planner.ts';
import { linkProbeSize, linkRounds } from '../actors/coordinator/link-survey.ts';

const shape = modelShape(loadConfig({ preset: 'tiny' }), 16, 8, 'tiny', methodShape('parallel'));
const device = (name: string, bandwidthMbps: number | null = null) => ({ name, matmulGflops: 10, memoryBytes: 2 ** 30, bandwidthMbps });
const training = { batchSize: 8, samples: 64 };
const fast = (from: string, to: string): MeasuredLink => ({ from, to, mbps: 5000, latencyMs: 0.1 });

test('link rounds: every directed pair once, each device sending and receiving at most once per round', () => {
  for (const n of [1, 2, 3, 4, 5]) {
    const names = Array.from({ length: n }, (_, i) => `d${i}`);
    const rounds = linkRounds(names, () => false);
    assert.is(rounds.length, Math.max(0, n - 1));
    const pairs = rounds.flat().map(([a, b]) => `${a}>${b}`);
    assert.is(pairs.length, n * (n - 1));
    assert.is(new Set(pairs).size, pairs.length);
    for (const round of rounds) {
      assert.is(new Set(round.map(([a]) => a)).size, round.length, 'one send per device');
      assert.is(new Set(round.map(([, b]) => b)).size, round.length, 'one receive per device');
      assert.ok(round.every(([a, b]) => a !== b));
    }
  }
});

test('link rounds: a device joining later has only its own links measured', () => {
  const known = new Set(['a>b', 'b>a', 'a>c', 'c>a', 'b>c', 'c>b']);
  const pairs = linkRounds(['a', 'b', 'c', 'j'], (x, y) => known.has(`${x}>${y}`)).flat();
  assert.equal(pairs.map(([x, y]) => `${x}>${y}`).sort(), ['a>j', 'b>j', 'c>j', 'j>a', 'j>b', 'j>c']);
});

test('link probe size: a batch across the widest boundary, within 256 KiB..4 MiB, in at least four messages of at most 1 MiB', () => {
  for (const boundary of [1, 100_000, 3 << 20, 1 << 30]) {
    const s = linkProbeSize(boundary);
    assert.is(s.bytes, Math.min(4 << 20, Math.max(256 << 10, boundary)));
    assert.ok(s.messageBytes <= 1 << 20 && s.messageBytes % 4 === 0);
    assert.ok(s.bytes / s.messageBytes >= 4 - 1e-9, JSON.stringify(s));
    assert.ok(s.timeoutMs >= 5000);
  }
});

test('measured profile: measured links per direction, the caps where not measured, the default between uncapped devices', () => {
  const devices = [device('a'), device('b', 100), device('c')];
  const links: MeasuredLink[] = [
    { from: 'a', to: 'b', mbps: 800, latencyMs: 0.2 },
    { from: 'b', to: 'a', mbps: 90, latencyMs: 0.3 },
  ];
  const p = measuredProfile(shape, devices, training, links);
  const mbps = (from: string, to: string) => 8 / (linkCost(p, from, to).msPerByte * 1e3);
  assert.ok(Math.abs(mbps('a', 'b') - 800) < 1e-9 && Math.abs(mbps('b', 'a') - 90) < 1e-9, 'each direction its own rate');
  assert.ok(Math.abs(linkCost(p, 'b', 'a').latencyMs - 0.3) < 1e-12);
  assert.ok(Math.abs(mbps('b', 'c') - 100) < 1e-9 && Math.abs(mbps('c', 'b') - 100) < 1e-9, "unmeasured: b's cap");
  assert.ok(Math.abs(mbps('a', 'c') - p.links.defaultMbps) < 1e-9, 'unmeasured, uncapped: the default');
  const report = linkReport(devices, links);
  const source = (from: string, to: string) => report.find((l) => l.from === from && l.to === to)?.source;
  assert.equal(
    [source('a', 'b'), source('b', 'a'), source('b', 'c'), source('c', 'b'), source('a', 'c'), source('c', 'a')],
    ['measured', 'measured', 'topology', 'topology', 'default', 'default'],
  );
  assert.is(report.length, 6);
});

test('a link given once stands for both directions; one given per direction is taken per direction', () => {
  const p = measuredProfile(shape, [device('a'), device('b')], training);
  const one = { ...p, links: { ...p.links, pairs: [{ from: 'a', to: 'b', mbps: 10 }] } };
  assert.is(linkCost(one, 'b', 'a').msPerByte, linkCost(one, 'a', 'b').msPerByte);
  const two = { ...p, links: { ...p.links, pairs: [...one.links.pairs, { from: 'b', to: 'a', mbps: 1000 }] } };
  assert.ok(linkCost(two, 'b', 'a').msPerByte < linkCost(two, 'a', 'b').msPerByte / 50);
});

test('planner: a device whose measured links are slow is left out; measured fast, it is used', () => {
  const devices = [device('a'), device('b'), device('c')];
  const all = ['a', 'b', 'c'].flatMap((x) => ['a', 'b', 'c'].filter((y) => y !== x).map((y) => fast(x, y)));
  const quick = planPipeline(measuredProfile(shape, devices, training, all), {});
  assert.equal(quick.unusedDevices, [], 'three equal devices on fast links all work');
  // What c sends crawls at 0.05 Mbit/s: every stage boundary or all-reduce it takes part in costs seconds.
  const slow = all.map((l) => (l.from === 'c' ? { ...l, mbps: 0.05 } : l));
  const plan = planPipeline(measuredProfile(shape, devices, training, slow), {});
  assert.equal(plan.unusedDevices, ['c']);
  assert.ok(plan.predicted.stepMs > quick.predicted.stepMs, 'two devices are slower than three');
  // The same plan without measurements (no caps): the default rate, and c is used.
  const guessed = planPipeline(measuredProfile(shape, devices, training), {});
  assert.equal(guessed.unusedDevices, []);
});

const plan = (...args: string[]) => spawnSync(process.execPath, ['tools/charon.js', 'plan', ...args], { encoding: 'utf8' });

test('charon plan says where each link rate came from: topology caps, the assumed default, the --profile file', () => {
  const lab = plan('topologies/lab-4.yaml');
  assert.is(lab.status, 0, lab.stderr);
  assert.match(lab.stdout, /\n {2}links: 12 directed: 12 from topology bandwidthMbps caps; none measured here/);
  const local = plan('topologies/local-2.yaml', '--json');
  assert.is(local.status, 0, local.stderr);
  const doc = JSON.parse(local.stdout) as { links: { from: string; to: string; mbps: number; source: string }[]; linkSource: string };
  assert.equal(
    doc.links.map((l) => `${l.from}>${l.to} ${l.source}`),
    ['dev0>dev1 default', 'dev1>dev0 default'],
  );
  assert.match(doc.linkSource, /2 at 10000 Mbit\/s assumed/);
  const pinned = plan('topologies/jetson-nano-8.yaml', '--profile', 'topologies/profiles/t5-base-jetson-nano.json');
  assert.is(pinned.status, 0, pinned.stderr);
  assert.match(pinned.stdout, /links: 56 directed: 56 at the file's default 1000 Mbit\/s/);
  assert.match(plan('topologies/single.yaml').stdout, /links: none \(one device\)/);
});

test.run();
