/**
 * Per-run bus credentials: one NATS user key (nkey) per identity, and the server authorization
 * that lets each identity publish only under its own subject prefix and subscribe only to what
 * its role needs (subjects.ts). Seeds live in `<runDir>/creds/<name>.nk` (directory 0700, files
 * 0600) and reach a device process as that file's path, never as an argument value; the identity
 * list (public keys and roles) is `<runDir>/creds/identities.json`.
 *
 * Roles: the coordinator commands devices and reads what is addressed to it; a device speaks for
 * itself and reads what is addressed to it; an observer (`charon status`) may only ask the
 * coordinator for the status and read run events and heartbeats.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { COORDINATOR, checkDevice, checkToken, newUserKey, publicKeyOf } from '../bus/index.ts';
import { MAX_MESSAGE_BYTES } from '../tensor/index.ts';
import { privateDir, writePrivateFile } from './files.ts';

export const ROLES = ['coordinator', 'device', 'observer'] as const;
export type Role = (typeof ROLES)[number];
/** The observer identity that `charon status` and run watchers share. */
export const OBSERVER = 'observer';

const identity = z.strictObject({ name: z.string(), role: z.enum(ROLES), publicKey: z.string().regex(/^U[A-Z2-7]{55}$/) });
const identities = z.strictObject({ run: z.string(), identities: z.array(identity) });
export type Identity = z.output<typeof identity>;
export type RunIdentities = z.output<typeof identities>;

export class CredentialsError extends Error {
  override name = 'CredentialsError';
  readonly retryable = false;
}

export const credsDir = (runDir: string) => join(runDir, 'creds');
export const seedPath = (runDir: string, name: string) => join(credsDir(runDir), `${name}.nk`);
const listPath = (runDir: string) => join(credsDir(runDir), 'identities.json');

/** The identities issued for the run in `runDir`, or null when none were. */
export function readIdentities(runDir: string): RunIdentities | null {
  const file = listPath(runDir);
  if (!existsSync(file)) return null;
  const parsed = identities.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new CredentialsError(`${file}: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

/**
 * Issues a key for `name` with `role` in the run of `runDir` and returns its seed file.
 * @throws CredentialsError when `name` already has one (a second holder of a name could lock out the first).
 */
export function issueCredentials(runDir: string, run: string, name: string, role: Role): string {
  checkToken('run', run);
  if (role === 'device') checkDevice(name);
  else checkToken('identity', name);
  privateDir(credsDir(runDir));
  const list = readIdentities(runDir) ?? { run, identities: [] };
  if (list.run !== run) throw new CredentialsError(`${listPath(runDir)}: credentials of run '${list.run}', not '${run}'`);
  if (list.identities.some((i) => i.name === name)) throw new CredentialsError(`'${name}' already has credentials in ${credsDir(runDir)}`);
  const key = newUserKey();
  const file = seedPath(runDir, name);
  writePrivateFile(file, `${key.seed}\n`, { exclusive: true });
  list.identities.push({ name, role, publicKey: key.publicKey });
  writePrivateFile(listPath(runDir), `${JSON.stringify(list, null, 2)}\n`);
  return file;
}

/**
 * Reads a seed file. Like ssh with its keys, refuses one that other users can read or write.
 * @throws CredentialsError naming the file and what is wrong.
 */
export function readSeed(file: string): string {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (err) {
    throw new CredentialsError(`${file}: cannot read credentials (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if ((mode & 0o077) !== 0)
    throw new CredentialsError(
      `${file}: credentials are accessible to other users (mode ${(mode & 0o777).toString(8)}): chmod 600 ${file}`,
    );
  const seed = readFileSync(file, 'utf8').trim();
  try {
    publicKeyOf(seed);
  } catch {
    throw new CredentialsError(`${file}: not a NATS user seed (SU...)`);
  }
  return seed;
}

/** What `identity` may publish and subscribe to (subjects.ts shapes); replies only to requests it received. */
export function permissions(run: string, id: Pick<Identity, 'name' | 'role'>, maxResponses: number) {
  const p = `charon.${run}.`;
  const responses = { max: maxResponses, expires: '1h' };
  const inbox = `${p}inbox.${id.name}.>`;
  switch (id.role) {
    case 'coordinator':
      return {
        publish: { allow: [`${p}from.${COORDINATOR}.>`] },
        subscribe: { allow: [`${p}from.*.to.${COORDINATOR}.>`, `${p}from.*.hb`, `${p}from.*.events`, inbox] },
        allow_responses: responses,
      };
    case 'device':
      return {
        publish: { allow: [`${p}from.${id.name}.>`] },
        subscribe: { allow: [`${p}from.*.to.${id.name}.>`, inbox] },
        allow_responses: responses,
      };
    case 'observer':
      return {
        publish: { allow: [`${p}from.${id.name}.to.${COORDINATOR}.status`, `${p}from.${id.name}.events`] },
        subscribe: { allow: [`${p}from.*.hb`, `${p}from.*.events`, inbox] },
      };
  }
}

/**
 * The nats-server `authorization` block for the run's identities. `maxResponses` bounds the
 * messages of one reply (a reply over max_payload goes in chunks).
 */
export function authorizationConfig(list: RunIdentities, maxResponses: number): string {
  const users = list.identities.map((i) => ({ nkey: i.publicKey, permissions: permissions(list.run, i, maxResponses) }));
  return `authorization ${JSON.stringify({ users }, null, 2)}\n`;
}

/** Messages one reply may take: the largest message the bus sends, in max_payload chunks. */
export function maxReplyMessages(maxPayload: number): number {
  return Math.ceil(MAX_MESSAGE_BYTES / (maxPayload - 1024)) + 1;
}

/**
 * The credentials a launched run needs, issued where missing (a resumed run keeps its keys): its
 * coordinator, the observer and every device of the topology. Returns the server's authorization.
 */
export function ensureRunCredentials(runDir: string, run: string, devices: readonly string[], maxPayload: number): string {
  const have = new Set(readIdentities(runDir)?.identities.map((i) => i.name));
  const wanted: [string, Role][] = [
    [COORDINATOR, 'coordinator'],
    [OBSERVER, 'observer'],
    ...devices.map((d): [string, Role] => [d, 'device']),
  ];
  for (const [name, role] of wanted) if (!have.has(name)) issueCredentials(runDir, run, name, role);
  return authorizationConfig(readIdentities(runDir)!, maxReplyMessages(maxPayload));
}
