/**
 * Making a write survive a crash of the machine, not only of the process: a step counts as
 * committed only once its checkpoint and state are on disk, so a coordinator that takes the run
 * over (or a resume after a power loss) finds the step it was told about. fsync of the file, then
 * of the directory holding the renamed entry.
 */
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Flushes `path` (a file, or a directory's entries) to disk. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Flushes every file directly in `dir`, then `dir` itself. */
export function fsyncTree(dir: string): void {
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry);
    if (statSync(p).isFile()) fsyncPath(p);
  }
  fsyncPath(dir);
}

/**
 * A checkpoint and the state file that names it commit together: the checkpoint is written
 * whole to `<latest>.next`, then the state file is written (the commit), then `promoteCheckpoint` puts the staged checkpoint in place of `latest`. A crash between any two of these
 * leaves what `settleCheckpoint` repairs.
 */
export function promoteCheckpoint(latest: string): void {
  const next = `${latest}.next`,
    old = `${latest}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(latest)) renameSync(latest, old);
  renameSync(next, latest);
  fsyncPath(dirname(latest));
  rmSync(old, { recursive: true, force: true });
}

/**
 * After a crash: makes `latest` the checkpoint of the committed `step` (the state file's). A
 * staged checkpoint of that step was committed but not yet put in place: it is promoted; one of
 * another step never was committed: it is dropped. `stepOf` reads a checkpoint's step (throws
 * when it is not a whole checkpoint).
 */
export function settleCheckpoint(latest: string, step: number, stepOf: (dir: string) => number): void {
  const next = `${latest}.next`,
    old = `${latest}.old`;
  if (existsSync(next)) {
    let staged = -1;
    try {
      staged = stepOf(next);
    } catch {
      /* written in part: never committed */
    }
    if (staged === step) promoteCheckpoint(latest);
    else rmSync(next, { recursive: true, force: true });
  }
  if (!existsSync(latest) && existsSync(old)) renameSync(old, latest);
}
