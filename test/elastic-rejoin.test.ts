/**
 * Devices that come back to a run, with a real nats-server and real device processes: a SIGKILLed
 * local device that the launcher's supervisor restarts (its exit is a loss at once, its restart a
 * join, not "replaced -> lost -> give up"), and a SIGSTOPped one resumed (SIGCONT) after it was
 * declared lost, which is reset and joins as a new device. An unlisted device is refused.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCredentials, seedPath } from '../src/security/credentials.ts';
import { startLaunch, type Ev } from './fixtures/launch.ts';
import { checkRun, elasticTopology, eventsOf, joinLatency, startDevice } from './fixtures/elastic.ts';

const tmp = mkdtempSync(join(tmpdir(), 'charon-rejoin-'));
/**
 * Three local devices, slowed down (a sleep, not CPU), and enough steps (24 an epoch) that a
 * restarted process is back before the run ends even on a loaded machine; nobody else may join.
 */
const closed = elasticTopology(tmp, 'rejoin', { samples: 96, epochs: 2, slowdown: 6, local: 3 });

const launch = (runDir: string, onEvent: (e: Ev) => void) =>
  startLaunch([closed.file, '--run-dir', runDir, '--profile', closed.profile], onEvent).done;

test('elastic join: a SIGKILLed local device comes back through its supervisor as a joining device and works again; an unlisted device is refused', async () => {
  const runDir = join(tmp, 'restart');
  const pids = new Map<string, number>();
  let killedAt = 0;
  let stranger: ReturnType<typeof startDevice> | undefined;
  let nats = '';
  // A key of the run's bus without a place in the topology: the join itself must be refused.
  issueCredentials(runDir, 'rejoin', 'stranger', 'device');
  const run = await launch(runDir, (e) => {
    if (e.type === 'LAUNCHED') nats = e.nats as string;
    if (e.type === 'DEVICE_SPAWNED') pids.set(e.device as string, e.pid as number);
    if (!killedAt && e.type === 'STEP_DONE' && e.step === 2) {
      killedAt = Date.now();
      process.kill(pids.get('dev2')!, 'SIGKILL');
      stranger = startDevice(nats, 'rejoin', 'stranger', ['--creds', seedPath(runDir, 'stranger')]);
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
  const run = await launch(runDir, (e) => {
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
