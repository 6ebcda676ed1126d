/**
 * Ctrl-C on `charon launch` running the reference workload (W1 on two local devices) in each
 * phase of a run: profiling, deploy, a pipeline step, cache redistribution, a cached step. A
 * terminal's Ctrl-C signals its whole foreground process group (the launcher, its device
 * processes, its nats-server), so the launcher leads a group of its own here and the group gets
 * SIGINT; `kill -INT` of the launcher alone is tried where the devices' work takes longest to
 * give up (deploy). Within 5 s of the signal every one of those processes has exited, and the
 * run stopped as interrupted.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parse, stringify } from 'yaml';

const root = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'charon-interrupt-'));
/** The bound: the launcher, its devices and its nats-server are gone this soon after the signal. */
const EXIT_MS = 5000;
/** Reaching a phase takes long on a loaded shared machine; this only bounds a broken run. */
const REACH_MS = 240_000;

type Ev = Record<string, unknown> & { type: string };

/** W1 on local-2, as small as keeps every phase: two pipeline steps, a redistribution, two cached steps. */
function w1Topology(): string {
  const t = parse(readFileSync(join(root, 'topologies', 'local-2.yaml'), 'utf8'));
  t.run = 'w1-interrupt';
  t.model = { preset: 'w1' };
  t.data.markov = { sequences: 4, seqLen: 128, seed: 1 };
  t.training = { ...t.training, epochs: 2, batch: 2 };
  const file = join(tmp, 'w1-local-2.yaml');
  writeFileSync(file, stringify(t));
  return file;
}
const topology = w1Topology();

/** A process that exists and is not a zombie (one whose parent died is reaped by init, if at all). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (!existsSync('/proc')) return true;
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** `charon launch --json` as a terminal's foreground job: the leader of its own process group. */
function launch(runDir: string) {
  const child = spawn(process.execPath, [join(root, 'tools/charon.js'), 'launch', topology, '--run-dir', runDir, '--json'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const events: Ev[] = [];
  const waiters: { pred: (e: Ev) => boolean; resolve: (e: Ev) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const e = JSON.parse(line) as Ev;
    events.push(e);
    for (const w of [...waiters])
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
  });
  const exit = new Promise<number>((res) => child.once('exit', (code) => res(code ?? -1)));
  /** The first event matching `pred`, in the order printed; its handler runs before any later line. */
  const next = (pred: (e: Ev) => boolean, what: string, ms: number) =>
    new Promise<Ev>((resolve, reject) => {
      const seen = events.find(pred);
      if (seen) return resolve(seen);
      const t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms; stderr: ${stderr.slice(-2000)}`)), ms);
      void exit.then(() => {
        clearTimeout(t);
        reject(new Error(`launch exited before ${what}; stderr: ${stderr.slice(-2000)}`));
      });
      waiters.push({
        pred,
        resolve: (e) => {
          clearTimeout(t);
          resolve(e);
        },
      });
    });
  /** The launcher (its pid is the group's id) and the processes it reported starting. */
  const pids = () =>
    events.flatMap((e) => [e.type === 'LAUNCHED' ? [e.pid, e.natsPid] : [], e.type === 'DEVICE_SPAWNED' ? [e.pid] : []].flat()) as number[];
  return { events, next, exit, group: child.pid!, pids, stderr: () => stderr };
}

/** Resolves once none of `pids` is alive, or at `deadline` with those still alive. */
async function gone(pids: number[], deadline: number): Promise<number[]> {
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Moment {
  /** The phase the signal lands in. */
  phase: string;
  /** The event after which the run is in that phase. */
  reached: (e: Ev) => boolean;
  /** The event that ends the phase: not printed before the signal, nor after it. */
  ends: (e: Ev) => boolean;
}

/** SIGINT to the launcher's process group (a terminal's Ctrl-C) or to the launcher alone. */
type Target = 'group' | 'launcher';

async function interruptDuring(m: Moment, dir: string, target: Target = 'group'): Promise<void> {
  const run = launch(join(tmp, dir));
  try {
    await run.next(m.reached, `the ${m.phase} phase`, REACH_MS);
    assert.not.ok(run.events.some(m.ends), `the ${m.phase} phase was over before the signal`);
    const signalled = Date.now();
    process.kill(target === 'group' ? -run.group : run.group, 'SIGINT');
    const pids = run.pids();
    assert.equal([pids.length, pids[0]], [4, run.group], 'the launcher, its nats-server and two devices');
    const left = await gone(pids, signalled + EXIT_MS);
    assert.equal(
      left,
      [],
      `still alive ${EXIT_MS} ms after SIGINT in ${m.phase} (launcher, nats-server, devices: ${pids.join(', ')}); stderr: ${run.stderr().slice(-2000)}`,
    );
    assert.is(await run.exit, 0, run.stderr());
    const stopped = run.events.at(-1)!;
    assert.is(stopped.type, 'STOPPED');
    assert.is(stopped.reason, 'SIGINT');
    assert.not.ok(run.events.some(m.ends), `the ${m.phase} phase ended before the signal took effect`);
  } finally {
    // A failed run leaves nothing behind either.
    if ([run.group, ...run.pids()].some(alive))
      try {
        process.kill(-run.group, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
  }
}

const is = (type: string, phase?: string) => (e: Ev) => e.type === type && (phase === undefined || e.phase === phase);

test('launch interrupt (W1): Ctrl-C while the devices profile leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'profiling', reached: is('ASSEMBLED'), ends: is('RUN_PLANNED') }, 'profiling');
});

test('launch interrupt (W1): Ctrl-C while the plan deploys leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'deploy', reached: is('RUN_PLANNED'), ends: is('RUN_DEPLOYED') }, 'deploy');
});

test('launch interrupt (W1): SIGINT to the launcher alone while the plan deploys leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'deploy', reached: is('RUN_PLANNED'), ends: is('RUN_DEPLOYED') }, 'deploy-launcher', 'launcher');
});

test('launch interrupt (W1): Ctrl-C in a pipeline step leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'pipeline', reached: is('STEP_DONE', 'pipeline'), ends: is('EPOCH_DONE') }, 'pipeline');
});

test('launch interrupt (W1): Ctrl-C while caches are redistributed leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'redistribution', reached: is('EPOCH_DONE', 'pipeline'), ends: is('REDISTRIBUTED') }, 'redistribution');
});

test('launch interrupt (W1): Ctrl-C in a cached step leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'cached', reached: is('STEP_DONE', 'cached'), ends: is('RUN_FINISHED') }, 'cached');
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
