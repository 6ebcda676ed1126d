/**
 * `charon launch` with three device processes on a real nats-server: at profiling each device
 * times its sends to the others over the bus, the planner plans on those rates (RUN_PLANNED says
 * `measured` for every link), and summary.json records them per device.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { startLaunch } from './fixtures/launch.ts';
import type { RunSummary } from '../actors/coordinator/run-actor.ts';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-launch-links-'));

test.after(() => rmSync(tmp, { recursive: true, force: true }));

type Link = { from: string; to: string; mbps: number; source: string };

test('launch: every link between three devices is measured at profiling and planned with', async () => {
  const t = parse(readFileSync(join(root, 'topologies/local-2.yaml'), 'utf8'));
  t.run = 'links-3';
  t.data.markov = { sequences: 8, seqLen: 16, seed: 1 };
  t.training = { ...t.training, epochs: 1, batch: 4, microBatches: 2 };
  delete t.training.cache;
  // dev2 declares a bandwidth cap: it sends through its simulated link, and the measurement sees it.
  t.devices = ['dev0', 'dev1', 'dev2'].map((name) => ({
    name,
    local: true,
    backend: 'wasm',
    memoryMb: 1024,
    ...(name === 'dev2' ? { bandwidthMbps: 200 } : {}),
  }));
  const file = join(tmp, 'links-3.yaml');
  writeFileSync(file, stringify(t));
  const runDir = join(tmp, 'run');
  const { code, events, stderr } = await startLaunch([file, '--run-dir', runDir]).done;
  assert.is(code, 0, stderr.slice(-3000));
  const names = ['dev0', 'dev1', 'dev2'];
  const pairs = names.flatMap((a) => names.filter((b) => b !== a).map((b) => `${a}>${b}`)).sort();

  const measuredEv = events.find((e) => e.type === 'LINKS_MEASURED');
  assert.ok(measuredEv, 'LINKS_MEASURED');
  assert.equal(measuredEv!.failed, [], JSON.stringify(measuredEv!.failed));
  const measured = measuredEv!.links as { from: string; to: string; mbps: number; latencyMs: number }[];
  assert.equal(measured.map((l) => `${l.from}>${l.to}`).sort(), pairs);
  for (const l of measured) assert.ok(Number.isFinite(l.mbps) && l.mbps > 0 && l.latencyMs >= 0, JSON.stringify(l));
  // Sends wait for dev2's simulated 200 Mbit/s link, and the probe takes off at most half the
  // time it took: dev2's rates cannot reach twice the cap, however the round trips vary.
  for (const l of measured.filter((x) => x.from === 'dev2')) assert.ok(l.mbps < 200 * 2, JSON.stringify(l));

  const planned = events.find((e) => e.type === 'RUN_PLANNED')!;
  const links = planned.links as Link[];
  assert.equal(links.map((l) => `${l.from}>${l.to}`).sort(), pairs);
  for (const l of links) {
    assert.is(l.source, 'measured', JSON.stringify(l));
    assert.is(l.mbps, measured.find((m) => m.from === l.from && m.to === l.to)!.mbps);
  }

  const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  for (const d of summary.devices) {
    assert.is(d.bandwidthSource, 'measured', JSON.stringify(d));
    assert.equal(Object.keys(d.links).sort(), names.filter((n) => n !== d.name).sort());
    assert.is(d.bandwidthMbps, Math.min(...Object.values(d.links).map((l) => l.mbps)));
    assert.is(d.bandwidthCapMbps, d.name === 'dev2' ? 200 : null);
  }
});

test.run();
