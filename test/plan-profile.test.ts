import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { analyticProfile, devicePresets, modelPresets } from '../src/plan/analytic.ts';
import { fitLinear, profileFromMeasurements } from '../src/plan/measured.ts';
import { planPipeline } from '../src/plan/planner.ts';
import { boundaryBytesPerSample, loadProfile, parseProfile, ProfileError } from '../src/plan/profile.ts';
import { randomProfile } from './plan-fixtures.ts';

const fails = (value: unknown, pattern: RegExp) => {
  try {
    parseProfile(value, 'p.json');
    assert.unreachable('expected ProfileError');
  } catch (e) {
    assert.instance(e, ProfileError);
    assert.match((e as Error).message, pattern);
  }
};

test('profile: errors name the file and the field', () => {
  const good = randomProfile(3, 2, 3);
  parseProfile(good, 'p.json');
  const bad = structuredClone(good);
  bad.devices[1]!.layers[2]!.fwd.perSampleMs = -1;
  fails(bad, /^p\.json: devices\[1\]\.layers\[2\]\.fwd\.perSampleMs: /);
  const short = structuredClone(good);
  short.devices[0]!.layers.pop();
  fails(short, /^p\.json: devices\[0\]\.layers: has 2 entries, model.layers is 3/);
  const link = structuredClone(good);
  link.links.pairs = [{ from: 'd0', to: 'nope', mbps: 10 }];
  fails(link, /links\.pairs\[0\]\.to: unknown device 'nope'/);
  const dup = structuredClone(good);
  dup.devices[1]!.name = 'd0';
  fails(dup, /devices\[1\]\.name: duplicate device name 'd0'/);
  fails({ ...good, extra: 1 }, /^p\.json: \(root\): /);
});

test('profile: loadProfile names the file it cannot read or parse', () => {
  const dir = mkdtempSync(join(tmpdir(), 'plan-profile-'));
  assert.throws(() => loadProfile(join(dir, 'missing.json')), /missing\.json: \(root\): cannot read: ENOENT/);
  writeFileSync(join(dir, 'bad.json'), '{ nope');
  assert.throws(() => loadProfile(join(dir, 'bad.json')), /bad\.json: \(root\): not valid JSON/);
});

test("profile: analytic profiles match the models' parameter counts and the Nano spec", () => {
  const params = { 't5-base': [0.19e9, 0.21e9], 'bart-large': [0.35e9, 0.36e9], 't5-large': [0.7e9, 0.71e9] } as const;
  for (const [name, [lo, hi]] of Object.entries(params)) {
    const p = analyticProfile(modelPresets[name]!, devicePresets['jetson-nano']!, 2);
    const layerParams = p.devices[0]!.layers.reduce((s, l) => s + l.backboneBytes, 0) / 4;
    assert.ok(layerParams > lo && layerParams < hi, `${name}: ${layerParams} backbone layer parameters`);
    assert.is(p.devices[0]!.memoryBytes, 3 * 2 ** 30);
    assert.is(p.links.defaultMbps, 1000);
    parseProfile(p, name);
  }
  const t5 = analyticProfile(modelPresets['t5-base']!, devicePresets['jetson-nano']!, 1);
  assert.ok(
    t5.devices[0]!.layers[12]!.fwd.perSampleMs > t5.devices[0]!.layers[11]!.fwd.perSampleMs,
    'decoder layers cost more (cross-attention)',
  );
  assert.equal(boundaryBytesPerSample(t5.model, 6), { fwd: 128 * (768 + 96) * 4, bwd: 128 * 96 * 4 });
  assert.equal(boundaryBytesPerSample(t5.model, 18), { fwd: 2 * 128 * (768 + 96) * 4, bwd: 2 * 128 * 96 * 4 });
});

test('profile: profileFromMeasurements fits the linear time model and plans', () => {
  assert.equal(
    fitLinear([
      { rows: 1, ms: 3 },
      { rows: 2, ms: 5 },
      { rows: 4, ms: 9 },
    ]),
    { fixedMs: 1, perSampleMs: 2 },
  );
  assert.equal(fitLinear([{ rows: 4, ms: 8 }]), { fixedMs: 0, perSampleMs: 2 });
  const bytes = { backboneBytes: 1e6, sideBytes: 1e5, sideGradBytes: 2e4, activationBytesPerSample: 1e4, workBytesPerSample: 1e4 };
  const timing = (mb: number, k: number) => ({ fwdMs: 0.5 + mb * k, bwdMs: 0.1 + (mb * k) / 4 });
  const devices = ['a', 'b'].map((name, i) => ({
    name,
    memoryBytes: 1e8,
    runs: [1, 2, 4].map((mb) => ({
      microBatch: mb,
      layers: [timing(mb, 3 + i), timing(mb, 3 + i)],
      embed: timing(mb, 0.1),
      head: timing(mb, 1),
    })),
    layerBytes: [bytes, bytes],
    embedBytes: bytes,
    headBytes: bytes,
  }));
  const model = { layers: 2, encoderLayers: 0, dModel: 16, sideWidth: 2, seqLen: 8, bytesPerActivation: 4 };
  const p = profileFromMeasurements(model, devices, { defaultMbps: 1000, latencyMs: 0.1, pairs: [] }, { batchSize: 4, samples: 40 });
  assert.ok(Math.abs(p.devices[1]!.layers[0]!.fwd.perSampleMs - 4) < 1e-9);
  assert.ok(Math.abs(p.devices[1]!.layers[0]!.fwd.fixedMs - 0.5) < 1e-9);
  assert.ok(planPipeline(p).predicted.stepMs > 0);
  const missing = structuredClone(devices);
  missing[0]!.runs[1]!.layers.pop();
  assert.throws(
    () => profileFromMeasurements(model, missing, { defaultMbps: 1000, latencyMs: 0, pairs: [] }),
    /device 'a' has no layer 2 timing at micro-batch 2/,
  );
});
test.run();
