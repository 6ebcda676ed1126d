/**
 * Devices joining a run mid-way, with a real nats-server and real device processes: an optional
 * topology device started with `charon device` during the pipeline epoch, an unlisted one during
 * a cached epoch (allowed by `elastic.allowUnlisted`; refused without it), a SIGKILLed local
 * device that its supervisor restarts, and a SIGSTOPped one resumed after it was declared lost.
 * Each joiner works within two step boundaries of its profile, and the run ends as a fault-free
 * run ends.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLaunch, type Ev } from './fixtures/launch.ts';
import { checkRun, elasticTopology, eventsOf, metricSteps, startDevice, stopDevice } from './fixtures/elastic.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-join-'));
/**
 * dev0 and dev1 start the run; dev2 is listed, optional, on "another host"; others may join.
 * The local devices are slowed down (a sleep, not CPU) so that a device process started mid-run,
 * whose start takes seconds on a loaded machine, joins before the phase is over.
 */
const open = elasticTopology(tmp, 'join', {
  samples: 48,
  epochs: 3,
  slowdown: 6,
  extra: [{ name: 'dev2', local: false, optional: true }],
  elastic: { allowUnlisted: true },
});
/** Three local devices; nobody else may join. */
const closed = elasticTopology(tmp, 'rejoin', { samples: 48, epochs: 2, slowdown: 6, local: 3 });

const launch = (t: { file: string; profile: string }, runDir: string, onEvent: (e: Ev) => void) =>
  startLaunch([t.file, '--run-dir', runDir, '--profile', t.profile], onEvent).done;

/** Step boundaries (STEP_DONE events) from `device`'s profile to its first step, and the ms from its registration to that step. */
function joinLatency(run: { events: Ev[] }, runDir: string, device: string, after = 0) {
  const joined = run.events.find((e) => e.type === 'DEVICE_JOINED' && e.device === device && (e.at as number) >= after)!;
  // A stalled device that speaks again is not profiled again: it is ready when it is back.
  const profiled = run.events.find((e) => e.type === 'DEVICE_PROFILED' && e.device === device && (e.at as number) >= after) ?? joined;
  const first = metricSteps(runDir).find(
    (m) => m.devices.includes(device) && (run.events.find((e) => e.type === 'STEP_DONE' && e.step === m.step)!.at as number) > after,
  )!;
  const firstDone = run.events.find((e) => e.type === 'STEP_DONE' && e.step === first.step)!;
  const boundaries = run.events.filter(
    (e) => e.type === 'STEP_DONE' && (e.at as number) > (profiled.at as number) && (e.step as number) < first.step,
  ).length;
  return { first, boundaries, ms: (firstDone.at as number) - (joined.at as number) };
}

test('elastic join: an optional device started during the pipeline epoch and an unlisted one during a cached epoch are put to work at step boundaries', async () => {
  const runDir = join(tmp, 'join');
  let dev2: ReturnType<typeof startDevice> | undefined;
  let guest: ReturnType<typeof startDevice> | undefined;
  let nats = '';
  const run = await launch(open, runDir, (e) => {
    if (e.type === 'LAUNCHED') nats = e.nats as string;
    if (!dev2 && e.type === 'RUN_DEPLOYED') dev2 = startDevice(nats, 'join', 'dev2');
    if (!guest && e.type === 'EPOCH_DONE') guest = startDevice(nats, 'join', 'guest');
  });
  await Promise.all([stopDevice(dev2!), stopDevice(guest!)]);
  if (process.env.DUMP) writeFileSync(process.env.DUMP, run.events.map((e) => JSON.stringify(e)).join('\n'));
  const { summary, diff } = await checkRun(open, runDir, run);

  assert.is(summary.faults.length, 0);
  assert.equal(
    summary.joins.map((j) => [j.device, j.phase, j.rejoin]),
    [
      ['dev2', 'pipeline', false],
      ['guest', 'cached', false],
    ],
  );
  assert.equal(
    summary.replans.map((r) => [r.joined, r.lost, r.left, [...r.devices].sort()]),
    [
      [['dev2'], [], [], ['dev0', 'dev1', 'dev2']],
      [['guest'], [], [], ['dev0', 'dev1', 'dev2', 'guest']],
    ],
  );
  const steps = metricSteps(runDir);
  const lines: string[] = [];
  for (const j of summary.joins) {
    const lat = joinLatency(run, runDir, j.device);
    assert.is(lat.first.step, j.step, `${j.device} works from the step it joined at`);
    assert.is(lat.first.phase, j.phase);
    assert.ok(lat.boundaries <= 2, `${j.device} first worked ${lat.boundaries} step boundaries after its profile`);
    assert.ok(
      steps.filter((m) => m.step >= j.step).every((m) => m.devices.includes(j.device) || m.phase === 'pipeline'),
      `${j.device} takes part in every cached step after it joined`,
    );
    lines.push(
      `${j.device} (${j.phase}): registered -> first step ${lat.first.step} done in ${lat.ms} ms, ${lat.boundaries} boundaries after its profile`,
    );
  }
  // The guest got its shard from the holders' caches.
  assert.ok((summary.redistribution?.shardSizes.guest ?? 0) > 0);
  console.log(`  join: ${lines.join('; ')}; relative difference ${diff.toExponential(1)}`);
});

test('elastic join: a SIGKILLed local device comes back through its supervisor as a joining device and works again; an unlisted device is refused', async () => {
  const runDir = join(tmp, 'restart');
  const pids = new Map<string, number>();
  let killedAt = 0;
  let stranger: ReturnType<typeof startDevice> | undefined;
  let nats = '';
  const run = await launch(closed, runDir, (e) => {
    if (e.type === 'LAUNCHED') nats = e.nats as string;
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!killedAt && e.type === 'STEP_DONE' && e.step === 2) {
      killedAt = Date.now();
      process.kill(pids.get('dev2')!, 'SIGKILL');
      stranger = startDevice(nats, 'rejoin', 'stranger');
    }
  });
  const strangerExit = await stranger!.exited;
  const { summary } = await checkRun(closed, runDir, run);
  // Refused with the reason, in the join reply and as an event.
  assert.is(strangerExit, 1);
  assert.match(stranger!.stderr(), /registration refused: device 'stranger' is not listed in the topology of run 'rejoin'/);
  assert.match(eventsOf(run, 'JOIN_REFUSED', 'stranger')[0]?.reason as string, /allowUnlisted/);

  assert.equal(
    summary.faults.map((f) => f.device),
    ['dev2'],
  );
  const lost = eventsOf(run, 'DEVICE_LOST', 'dev2')[0]!;
  assert.match(lost.reason as string, /exited with SIGKILL/, 'the supervisor reports the exit at once');
  assert.is(eventsOf(run, 'DEVICE_SPAWNED', 'dev2').length, 2, 'restarted once');
  assert.equal(
    summary.joins.map((j) => [j.device, j.rejoin]),
    [['dev2', true]],
  );
  const rejoined = summary.joins[0]!;
  const lat = joinLatency(run, runDir, 'dev2', killedAt);
  assert.is(lat.first.step, rejoined.step);
  assert.ok(lat.boundaries <= 2, `dev2 worked again ${lat.boundaries} step boundaries after its profile`);
  console.log(
    `  restart: dev2 lost ${(lost.at as number) - killedAt} ms after SIGKILL; re-registered -> first step ${lat.first.step} (${lat.first.phase}) in ${lat.ms} ms; ${summary.replans.length} re-plan(s)`,
  );
});

test('elastic join: a device stopped (SIGSTOP) past its deadline and resumed (SIGCONT) rejoins as a new device', async () => {
  const runDir = join(tmp, 'stall');
  const pids = new Map<string, number>();
  let stoppedAt = 0;
  const run = await launch(closed, runDir, (e) => {
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!stoppedAt && e.type === 'STEP_DONE' && e.step === 2) {
      stoppedAt = Date.now();
      process.kill(pids.get('dev1')!, 'SIGSTOP');
    }
    if (e.type === 'DEVICE_LOST' && e.device === 'dev1') setTimeout(() => process.kill(pids.get('dev1')!, 'SIGCONT'), 500);
  });
  const { summary } = await checkRun(closed, runDir, run);
  assert.equal(
    summary.faults.map((f) => [f.device, f.reason.startsWith('silent')]),
    [['dev1', true]],
  );
  assert.is(eventsOf(run, 'DEVICE_SPAWNED', 'dev1').length, 1, 'the same process came back');
  assert.equal(
    summary.joins.map((j) => [j.device, j.rejoin]),
    [['dev1', true]],
  );
  const lat = joinLatency(run, runDir, 'dev1', stoppedAt + 1);
  assert.is(lat.first.step, summary.joins[0]!.step);
  console.log(`  stall: dev1 back (SIGCONT) -> first step ${lat.first.step} (${lat.first.phase}) in ${lat.ms} ms after it spoke again`);
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
