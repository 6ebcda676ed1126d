/**
 * `charon chaos TOPOLOGY --faults FILE --json` end to end: a device SIGKILLed in the pipeline
 * epoch, another frozen for a moment in a cached epoch, duplicated all-reduce messages; then the
 * fault-free run. The document says every invariant holds, gives each fault its detection and
 * recovery times, and is the one written to chaos.json; a bad schedule is one file:line error.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chaosJob } from './fixtures/chaos.ts';
import type { ChaosReport } from '../src/chaos/chaos.ts';

const root = new URL('..', import.meta.url).pathname;
const job = chaosJob('chaos-cli');
const chaos = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'tools/charon.js'), 'chaos', job.topology, ...args], { cwd: root, encoding: 'utf8' });

test('chaos cli: a bad schedule is one file:line error and exit 2', () => {
  const bad = join(job.dir, 'bad.yaml');
  writeFileSync(bad, `- { at: { step: 2 }, kind: stop, device: dev1 }\n`);
  const r = chaos('--faults', bad, '--json');
  assert.is(r.status, 2, r.stderr);
  assert.is(r.stderr.trim(), `charon chaos: ${bad}:1: [0].durationMs: is required for kind stop`);
});

test('chaos cli: --json runs faults then the reference and reports every invariant and fault', () => {
  const faults = join(job.dir, 'faults.yaml');
  writeFileSync(
    faults,
    `- { at: { step: 3 }, kind: kill, device: dev2 }
- { at: { epoch: 2, step: 2 }, kind: duplicate, subject: "grad.>", durationMs: 1000 }
- { at: { epoch: 3, step: 2 }, kind: stop, device: dev1, durationMs: 500 }
`,
  );
  const runDir = join(job.dir, 'run');
  const r = chaos('--faults', faults, '--json', '--run-dir', runDir, '--profile', job.profile, '--seed', '3');
  assert.is(r.status, 0, r.stderr.slice(-3000) + r.stdout.slice(0, 3000));
  const doc = JSON.parse(r.stdout) as ChaosReport;
  assert.equal(JSON.parse(readFileSync(join(runDir, 'chaos.json'), 'utf8')), doc);
  assert.equal(Object.keys(doc.invariants).sort(), [
    'completes',
    'faultsFired',
    'nothingLeft',
    'sameWeights',
    'samplesOncePerEpoch',
    'stepsCommittedOnce',
  ]);
  for (const [name, inv] of Object.entries(doc.invariants)) assert.ok(inv.ok, `${name}: ${JSON.stringify(inv.detail)}`);
  assert.is(doc.seed, 3);
  assert.equal(
    doc.faults.map((f) => [f.kind, f.device, f.source]),
    [
      ['kill', 'dev2', `${faults}:1`],
      ['duplicate', null, `${faults}:2`],
      ['stop', 'dev1', `${faults}:3`],
    ],
  );
  const [kill, dup] = doc.faults;
  // The launcher sees the killed process exit, so the loss is noticed before any heartbeat is
  // missed (the 1.5 s deadline is the bound), and the run goes on after a re-plan.
  assert.ok(kill!.detectedSeconds !== null && kill!.detectedSeconds <= 1.5, JSON.stringify(kill));
  assert.ok(kill!.recoverySeconds !== null && kill!.recoverySeconds >= kill!.detectedSeconds!, JSON.stringify(kill));
  assert.ok(dup!.messages!.hit > 0 && (doc.rejected.duplicate ?? 0) > 0, JSON.stringify([dup, doc.rejected]));
  assert.ok(doc.recovery.all!.recovery!.count === 3, JSON.stringify(doc.recovery));
  console.log(`  recovery: ${JSON.stringify(doc.recovery)}`);
});

test.after(() => rmSync(job.dir, { recursive: true, force: true }));
test.run();
