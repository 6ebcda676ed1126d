import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { paperBench, paperRuns } from '../src/plan/paper.ts';

test('bench paper: every run of every case, PAC with the cache ahead of without, speed-up growing with the Nanos', () => {
  const { cases, testbed } = paperBench({ models: ['t5-base', 't5-large'], deviceCounts: [2, 4, 8] });
  assert.is(testbed.mbps, 1000);
  assert.is(cases.length, 6);
  for (const c of cases) {
    const where = `${c.model} on ${c.devices}`;
    assert.equal(
      c.runs.map((r) => r.name),
      paperRuns.map((r) => r.name),
      where,
    );
    for (const r of c.runs) {
      assert.is(r.epochSeconds.length, 3, `${where} ${r.name}`);
      assert.ok(r.totalSeconds > 0 && r.peakBytes > 0 && r.throughput > 0, `${where} ${r.name}`);
      const used = r.groups.split('-').reduce((s, g) => s + Number(g), 0);
      assert.ok(used <= (r.name.startsWith('standalone') ? 1 : c.devices), `${where} ${r.name}: ${r.groups}`);
      // The simulator's replay and the planner's 1F1B estimate agree closely on identical devices.
      assert.ok(Math.abs(r.stepMs / r.plannedStepMs - 1) < 0.1, `${where} ${r.name}: simulated ${r.stepMs} vs ${r.plannedStepMs}`);
    }
    const run = (n: string) => c.runs.find((r) => r.name === n)!;
    const pac = run('pac');
    const nocache = run('pac-nocache');
    assert.ok(pac.fits && pac.exact, `${where}: PAC fits and its plan is the exact search's`);
    assert.is(pac.groups, nocache.groups);
    assert.is(pac.epochSeconds[0], nocache.epochSeconds[0]);
    assert.ok(pac.epochSeconds[1]! < nocache.epochSeconds[1]!, `${where}: a cached epoch is shorter`);
    assert.ok(pac.totalSeconds < nocache.totalSeconds, `${where}: the cache pays over 3 epochs, redistribution included`);
    assert.ok(pac.cachedPeakBytes! < pac.peakBytes, `${where}: the cached epochs need less memory`);
    // Standalone runs the same on one device whatever the count: the whole batch at once.
    assert.is(run('standalone-serial').microBatches, 1);
    assert.ok(c.ratios.speedupOverStandaloneSerial > 1 && c.ratios.speedupOverEddlLora > 1, where);
  }
  for (const model of ['t5-base', 't5-large']) {
    const s = cases.filter((c) => c.model === model).map((c) => c.ratios.speedupOverStandaloneSerial);
    assert.ok(s[0]! < s[1]! && s[1]! < s[2]!, `${model}: speed-up grows with devices (${s.join(', ')})`);
  }
  // Pure data parallelism moves almost no cache: every device already holds every layer of its
  // rows; only the last, partial batch (3668 = 229 x 16 + 4) leaves the shards uneven.
  const dp = cases.find((c) => c.model === 't5-base' && c.devices === 2)!.runs.find((r) => r.name === 'pac')!;
  const split = cases.find((c) => c.model === 't5-large' && c.devices === 4)!.runs.find((r) => r.name === 'pac')!;
  assert.is(dp.groups, '2');
  assert.ok(dp.redistributeSeconds! < 1, `${dp.redistributeSeconds}`);
  assert.ok(split.groups.includes('-') && split.redistributeSeconds! > 10 * dp.redistributeSeconds!, `${split.redistributeSeconds}`);
});

test('bench paper --json: the documented document, published figures and notes beside', () => {
  const r = spawnSync(process.execPath, ['tools/charon.js', 'bench', 'paper', '--models', 't5-base', '--devices', '2,8', '--json'], {
    encoding: 'utf8',
  });
  assert.is(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.is(doc.bench, 'paper');
  assert.is(doc.cases.length, 2);
  assert.is(doc.cases[1].devices, 8);
  assert.is(doc.cases[1].publishedGroups, '8');
  assert.is(doc.published.speedup.ratio, 8.64);
  assert.ok(doc.notes.some((n: string) => n.includes('8.64x')));
  for (const key of [
    'speedupOverStandaloneSerial',
    'speedupOverEddlLora',
    'throughputOverEcoFlLora',
    'cacheEpochCut',
    'memoryReductionVsStandaloneFull',
  ])
    assert.type(doc.cases[0].ratios[key], 'number', key);
  const bad = spawnSync(process.execPath, ['tools/charon.js', 'bench', 'paper', '--devices', '1'], { encoding: 'utf8' });
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /--devices: '1'/);
});

test.run();
