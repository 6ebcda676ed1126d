#!/usr/bin/env node
/**
 * Runs every test/**\/*.test.ts file in its own Node process (tfjs backends and nats-servers are
 * per-process state), three at a time, and ends with one line "N passed, N failed" for the suite.
 * Longest files start first (their durations of a past run are in tools/test-durations.json;
 * CHARON_TEST_RECORD=1 rewrites it after a whole-suite run): a long file started last would
 * leave the other slots idle while it finishes alone.
 * Usage: node tools/run-tests.mjs [filter-substring ...]
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);
// Three files at a time on two cores: most integration files wait on processes, heartbeats and
// simulated slow devices more than they compute, so a third file fills the idle CPU.
const concurrency = Number(process.env.CHARON_TEST_JOBS ?? 3);
// A guard against a hung file, not a speed claim: a loaded machine runs a launch file several
// times slower than an idle one.
const perFileTimeoutMs = Number(process.env.CHARON_TEST_TIMEOUT_MS ?? 480_000);
const durationsFile = join(root, 'tools', 'test-durations.json');
const recorded = existsSync(durationsFile) ? JSON.parse(readFileSync(durationsFile, 'utf8')) : {};
/** A file never timed (new) is assumed long, so it is not the one that finishes alone. */
const expected = (rel) => recorded[rel] ?? 60;
const durations = {};

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = walk(join(root, 'test'))
  .sort()
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort((a, b) => expected(relative(root, b)) - expected(relative(root, a)));
let passed = 0,
  failed = 0;
const failures = [];

function runFile(file) {
  return new Promise((resolve) => {
    const rel = relative(root, file);
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      // onnxruntime's telemetry off, as tools/charon.js does for every charon process.
      env: { ...process.env, FORCE_COLOR: '0', ORT_DISABLE_TELEMETRY: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const timer = setTimeout(() => {
      out += `\n[runner] ${rel} exceeded ${perFileTimeoutMs} ms, killed\n`;
      child.kill('SIGKILL');
    }, perFileTimeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      const total = /Total:\s+(\d+)/.exec(out);
      const ok = /Passed:\s+(\d+)/.exec(out);
      const p = ok ? Number(ok[1]) : 0;
      let f = total ? Number(total[1]) - p : 0;
      const skipped = /Skipped:\s+(\d+)/.exec(out);
      if (skipped) f -= Number(skipped[1]);
      if (code !== 0 && f === 0) f = 1; // a crash or a non-zero exit counts as a failure
      passed += p;
      failed += f;
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      durations[rel] = Number(secs);
      process.stdout.write(`${f ? 'FAIL' : 'ok  '} ${rel} (${p} passed, ${f} failed, ${secs}s)\n`);
      if (f) failures.push({ rel, out });
      resolve();
    });
  });
}

const queue = [...files];
await Promise.all(
  Array.from({ length: Math.max(1, concurrency) }, async () => {
    while (queue.length) await runFile(queue.shift());
  }),
);
for (const { rel, out } of failures) process.stdout.write(`\n----- ${rel} -----\n${out.trim().split('\n').slice(-60).join('\n')}\n`);
if (process.env.CHARON_TEST_RECORD === '1' && filters.length === 0) {
  const sorted = Object.fromEntries(Object.entries(durations).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(durationsFile, `${JSON.stringify(sorted, null, 2)}\n`);
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exitCode = failed || files.length === 0 ? 1 : 0;
