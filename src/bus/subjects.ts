/**
 * Every NATS subject Charon uses, built in one place (DESIGN.md, "Subjects"). All subjects of a
 * run live under `charon.<run>.`; name tokens (run, device, stage, group) are checked so that a
 * name can never add a level or a wildcard to a subject.
 */

/** A name that cannot be a subject token. The message names the bad token and why. */
export class InvalidSubjectToken extends Error {
  override name = 'InvalidSubjectToken';
  readonly retryable = false;
  constructor(
    readonly what: string,
    readonly token: string,
    reason: string,
  ) {
    super(`invalid ${what} '${token}': ${reason}`);
  }
}

const TOKEN = /^[A-Za-z0-9_-]+$/;
const MAX_TOKEN = 64;

/** Returns `token` when it is a valid subject token (letters, digits, '-', '_'; 1..64 chars). */
export function checkToken(what: string, token: string): string {
  if (typeof token !== 'string' || token.length === 0) throw new InvalidSubjectToken(what, String(token), 'must not be empty');
  if (token.length > MAX_TOKEN) throw new InvalidSubjectToken(what, token, `longer than ${MAX_TOKEN} characters`);
  if (!TOKEN.test(token)) {
    const bad = [...token].find((c) => !/[A-Za-z0-9_-]/.test(c))!;
    const label = bad === '.' ? 'a dot' : bad === '*' || bad === '>' ? `the wildcard '${bad}'` : /\s/.test(bad) ? 'whitespace' : `'${bad}'`;
    throw new InvalidSubjectToken(what, token, `contains ${label} (allowed: letters, digits, '-', '_')`);
  }
  return token;
}

function checkIndex(what: string, n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidSubjectToken(what, String(n), 'must be a non-negative integer');
  return String(n);
}

/** Subject names of one run. */
export interface Subjects {
  readonly run: string;
  /** `charon.<run>.` */
  readonly prefix: string;
  /** device -> coordinator (request): hello */
  coordJoin(): string;
  /** device -> all: heartbeat */
  devHb(device: string): string;
  /** every device's heartbeat (subscription wildcard) */
  devHbAll(): string;
  /** coordinator -> device (request): control */
  devCtl(device: string): string;
  /** stage s-1 -> stage s: forward activations for rank `rank` of stage `s` */
  stageFwd(stage: number, rank: number): string;
  /** stage s+1 -> stage s: gradient w.r.t. the side hidden */
  stageBwd(stage: number, rank: number): string;
  /** all-reduce chunks of data-parallel `group` at `step` */
  grad(group: string | number, step: number): string;
  cacheGet(device: string): string;
  cachePut(device: string): string;
  /** run events for observers */
  events(): string;
  /** chaos runner -> fault layers of a chaos run ('rule'), and back ('report') (src/bus/faults.ts) */
  chaos(part: 'rule' | 'report'): string;
}

/** Builds the subjects of run `run`. @throws InvalidSubjectToken when `run` is not a valid token. */
export function subjects(run: string): Subjects {
  const prefix = `charon.${checkToken('run', run)}.`;
  const dev = (d: string) => checkToken('device', d);
  return {
    run,
    prefix,
    coordJoin: () => `${prefix}coord.join`,
    devHb: (d) => `${prefix}dev.${dev(d)}.hb`,
    devHbAll: () => `${prefix}dev.*.hb`,
    devCtl: (d) => `${prefix}dev.${dev(d)}.ctl`,
    stageFwd: (s, r) => `${prefix}stage.${checkIndex('stage', s)}.${checkIndex('rank', r)}.fwd`,
    stageBwd: (s, r) => `${prefix}stage.${checkIndex('stage', s)}.${checkIndex('rank', r)}.bwd`,
    grad: (g, step) =>
      `${prefix}grad.${typeof g === 'number' ? checkIndex('group', g) : checkToken('group', g)}.${checkIndex('step', step)}`,
    cacheGet: (d) => `${prefix}cache.${dev(d)}.get`,
    cachePut: (d) => `${prefix}cache.${dev(d)}.put`,
    events: () => `${prefix}events`,
    chaos: (part) => `${prefix}chaos.${part === 'rule' ? 'rule' : 'report'}`,
  };
}
