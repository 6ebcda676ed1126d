/**
 * Ctrl-C on `charon launch` running the reference workload (W1 on two local devices) before
 * training: while the devices profile and while the plan deploys (the group's Ctrl-C, and SIGINT
 * to the launcher alone, where the devices' work takes longest to give up). Every process is gone
 * within 5 s and the run stopped as interrupted. test/fixtures/interrupt.ts says how.
 */
import { test } from 'uvu';
import { rmSync } from 'node:fs';
import { interruptDuring, is, tmp } from './fixtures/interrupt.ts';

test('launch interrupt (W1): Ctrl-C while the devices profile leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'profiling', reached: is('ASSEMBLED'), ends: is('RUN_PLANNED') }, 'profiling');
});

test('launch interrupt (W1): Ctrl-C while the plan deploys leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'deploy', reached: is('RUN_PLANNED'), ends: is('RUN_DEPLOYED') }, 'deploy');
});

test('launch interrupt (W1): SIGINT to the launcher alone while the plan deploys leaves no process behind within 5 s', async () => {
  await interruptDuring({ phase: 'deploy', reached: is('RUN_PLANNED'), ends: is('RUN_DEPLOYED') }, 'deploy-launcher', 'launcher');
});

test.after(() => rmSync(tmp, { recursive: true, force: true }));
test.run();
