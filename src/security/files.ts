/**
 * Private files: what a run writes (credentials, activation caches, checkpoints) is derived from
 * the user's data or grants access to it, so directories are created 0700 and files 0600 whatever
 * the umask, and names taken from a topology or a command line cannot leave their directory.
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve } from 'node:path';

export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;

/** Creates `dir` (and missing parents) with mode 0700; an existing `dir` is set to 0700. Returns `dir`. */
export function privateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  chmodSync(dir, DIR_MODE);
  return dir;
}

/**
 * Writes `file` with mode 0600 (atomically: a temporary file renamed over it), creating its
 * directory 0700. With `exclusive`, fails when `file` exists.
 */
export function writePrivateFile(file: string, data: string | Uint8Array, opts: { exclusive?: boolean } = {}): void {
  privateDir(dirname(file));
  if (opts.exclusive) {
    writeFd(openSync(file, 'wx', FILE_MODE), data);
    return;
  }
  const tmp = `${file}.${process.pid}.tmp`;
  writeFd(openSync(tmp, 'w', FILE_MODE), data);
  chmodSync(tmp, FILE_MODE);
  renameSync(tmp, file);
}

function writeFd(fd: number, data: string | Uint8Array): void {
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** `name` resolved inside `dir`. @throws Error naming `what` when it is absolute or leaves `dir` (`..`). */
export function inside(dir: string, name: string, what: string): string {
  const full = resolve(dir, name);
  const rel = relative(resolve(dir), full);
  if (isAbsolute(name) || rel === '' || rel.startsWith('..') || isAbsolute(rel))
    throw new Error(`${what} '${name}' must name something inside ${dir}`);
  return full;
}
