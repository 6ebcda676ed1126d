/**
 * Making a write survive a crash of the machine, not only of the process: a step counts as
 * committed only once its checkpoint and state are on disk, so a coordinator that takes the run
 * over (or a resume after a power loss) finds the step it was told about. fsync of the file, then
 * of the directory holding the renamed entry.
 */
import { closeSync, fsyncSync, openSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

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
