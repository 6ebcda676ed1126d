/**
 * A compute thread terminated in the middle of a native engine run: the run is let finish and the
 * process carries on. Terminated inside the run, the onnxruntime addon throws into the torn-down
 * thread and the whole process aborts (what a device did on the launcher's Ctrl-C).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./fixtures/native-terminate.ts', import.meta.url));

function run(afterMs: number): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, String(afterMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.once('close', (code, signal) => resolve({ code, signal, out, err }));
  });
}

test('terminating a compute thread inside native runs leaves its process alive', async () => {
  // Several at different moments: each lands inside a run almost surely (the thread does little else).
  const results = await Promise.all([700, 900, 1100].map(run));
  for (const r of results) {
    assert.is(r.signal, null, `process aborted: ${r.err.slice(-500)}`);
    assert.is(r.code, 0, r.err.slice(-500));
    assert.is(r.out.trim(), 'stopped', 'the call in flight was rejected');
  }
});

test.run();
