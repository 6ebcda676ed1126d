/**
 * Two copies of the activation cache (`training.cache.replicas: 2`), with a real nats-server and
 * real device processes: a device SIGKILLed in a cached epoch loses nothing the run needs. The
 * survivors re-plan, take the lost shard from the copies they hold (no backbone recompute), keep
 * two copies again, replay the step in flight, and end where a fault-free run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLaunch } from './fixtures/launch.ts';
import { checkRun, elasticTopology, eventsOf } from './fixtures/elastic.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-replicas-'));
/** Three local devices, 24 sequences, 3 epochs (1 pipeline, 2 cached), every cache entry on two devices. */
const t = elasticTopology(tmp, 'replicas', { samples: 24, epochs: 3, slowdown: 2, local: 3, cache: { replicas: 2 } });
const DEVICES = ['dev0', 'dev1', 'dev2'];

test('cache replicas: a device SIGKILLed in a cached epoch; its shard is served from the copies, nothing is recomputed', async () => {
  const runDir = join(tmp, 'kill');
  const pids = new Map<string, number>();
  let killedAt = 0;
  const victim = 'dev1';
  const run = await startLaunch([t.file, '--run-dir', runDir, '--profile', t.profile], (e) => {
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!killedAt && e.type === 'STEP_DONE' && e.phase === 'cached') {
      killedAt = Date.now();
      process.kill(pids.get(victim)!, 'SIGKILL');
    }
  }).done;
  const { summary, diff } = await checkRun(t, runDir, run);
  assert.ok(killedAt > 0, `${victim} was killed`);
  assert.is(summary.faults.length, 1, JSON.stringify(summary.faults));
  assert.equal([summary.faults[0]!.device, summary.faults[0]!.epoch > 1], [victim, true]);

  // After epoch 1 every device kept a copy of samples of the others' shards, each sample once.
  const first = eventsOf(run, 'REDISTRIBUTED').find((e) => (e.at as number) < killedAt)!;
  const copies = first.replicas as Record<string, number>;
  assert.equal(Object.keys(copies).sort(), DEVICES);
  assert.is(
    Object.values(copies).reduce((a, b) => a + b, 0),
    t.samples,
  );

  // The re-plan over the survivors took the lost shard from the copies: no refill, nothing recomputed.
  assert.equal(
    eventsOf(run, 'CACHE_REFILLED').filter((e) => (e.at as number) > killedAt),
    [],
    'nothing went through the backbone again',
  );
  assert.is(summary.cache.replicas, 2);
  assert.is(summary.cache.recomputed, 0);
  const lostShard = (first.shards as Record<string, number>)[victim]!;
  assert.ok(lostShard > 0);
  // Each entry b_0..b_L of the lost shard (tiny has 2 layers) came from a copy.
  assert.is(summary.cache.fromReplica, lostShard * 3);
  // Two survivors keep two copies again: each holds the other's shard.
  const again = eventsOf(run, 'REDISTRIBUTED').find((e) => (e.at as number) > killedAt)!;
  const shards = again.shards as Record<string, number>;
  const rejoined = summary.joins.some((j) => j.device === victim);
  if (!rejoined) assert.equal(again.replicas, { dev0: shards.dev2, dev2: shards.dev0 });
  const fault = summary.faults[0]!;
  console.log(
    `  killed ${victim} in epoch ${fault.epoch} step ${fault.step}; next step committed ${fault.recoveredAt! - killedAt} ms after the kill; ` +
      `${summary.cache.fromReplica} entries from copies, ${summary.cache.recomputed} recomputed; relative difference ${diff.toExponential(1)}`,
  );
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
