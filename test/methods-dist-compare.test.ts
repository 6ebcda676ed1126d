/**
 * `charon bench compare` on topologies/local-2.yaml (tiny preset, a few sequences): each baseline
 * is a real launch with the asked-for method and plan shape, and the JSON has the documented shape.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

test('bench compare: standalone, EDDL-style, Eco-FL-style and PAC runs with their figures and ratios', () => {
  const only = 'standalone-full,eddl-lora,ecofl-lora,pac';
  const r = spawnSync(
    process.execPath,
    [
      join(root, 'tools/charon.js'),
      'bench',
      'compare',
      'topologies/local-2.yaml',
      '--sequences',
      '8',
      '--epochs',
      '2',
      '--only',
      only,
      '--json',
    ],
    { cwd: root, encoding: 'utf8' },
  );
  assert.is(r.status, 0, r.stderr.slice(-3000));
  const out = JSON.parse(r.stdout) as {
    runs: {
      name: string;
      method: string;
      plan: string[];
      epochSeconds: number[];
      totalSeconds: number;
      peakBytes: number;
      cachedPeakBytes?: number;
      bytesMoved: number;
      lastEpochLoss: number;
    }[];
    ratios: Record<string, number | null>;
  };
  assert.equal(
    out.runs.map((x) => x.name),
    only.split(','),
  );
  const by = new Map(out.runs.map((x) => [x.name, x]));
  for (const x of out.runs) {
    assert.is(x.epochSeconds.length, 2, x.name);
    assert.ok(x.totalSeconds > 0 && x.peakBytes > 0 && Number.isFinite(x.lastEpochLoss), `${x.name}: ${JSON.stringify(x)}`);
  }
  assert.equal(by.get('standalone-full')!.plan, ['layers 1-2 on dev0'], 'standalone: the fastest device alone');
  assert.is(by.get('standalone-full')!.bytesMoved, 0);
  // The ranks' order follows the speeds measured at registration; the group is what counts.
  const eddl = by.get('eddl-lora')!.plan;
  assert.is(eddl.length, 1, 'EDDL: one stage');
  assert.match(eddl[0]!, /^layers 1-2 on (dev0\+dev1|dev1\+dev0)$/, 'EDDL: one stage over every device');
  // Eco-FL: one device per stage, fastest first by the speeds measured at registration.
  const ecofl = by.get('ecofl-lora')!.plan;
  assert.is(ecofl.length, 2, ecofl.join('; '));
  assert.match(ecofl[0]!, /^layers 1-1 on dev[01]$/);
  assert.match(ecofl[1]!, /^layers 2-2 on dev[01]$/);
  assert.is.not(ecofl[0]!.slice(-4), ecofl[1]!.slice(-4));
  assert.ok(by.get('pac')!.cachedPeakBytes! > 0, 'PAC reports its cached-epoch peak');
  for (const k of ['pacTimeOverEddlLora', 'pacEpoch1ThroughputOverEcoflLora', 'pacCachedPeakOverStandaloneFull'])
    assert.ok(typeof out.ratios[k] === 'number' && out.ratios[k]! > 0, `${k}: ${out.ratios[k]}`);
  assert.is(out.ratios.pacTimeOverStandaloneSerial, null, 'a run left out gives no ratio');
  process.stderr.write(`${JSON.stringify(out.ratios)}\n`);
});

test.run();
