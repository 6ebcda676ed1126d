/**
 * Ctrl-C on `charon launch` running the reference workload (W1 on two local devices) while it
 * trains: in a pipeline step, while caches are redistributed, in a cached step. Every process is
 * gone within 5 s and the run stopped as interrupted. test/fixtures/interrupt.ts says how.
 */
import { test } from 'uvu';
import { rmSync } from 'node:fs';
import { interruptDuring, is, tmp } from './fixtures/interrupt.ts';

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
