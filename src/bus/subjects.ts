/**
 * Every NATS subject Charon uses, built in one place (DESIGN.md, "Subjects"). All subjects of a
 * run live under `charon.<run>.`; name tokens (run, device, stage, group) are checked so that a
 * name can never add a level or a wildcard to a subject.
 *
 * Identity by subject: whatever a process sends goes out under its own prefix
 * `charon.<run>.from.<me>.`, and whatever is meant for one receiver also names it
 * (`from.<me>.to.<receiver>.<what>`). The bus server's permissions then prove the sender (each
 * identity may publish only under its own `from.<me>.`) and keep a receiver's traffic from
 * everybody else (each identity may subscribe only to `from.*.to.<me>.>`), however often
 * re-planning moves stage roles between devices. Receivers read the sender from the subject
 * (`senderOf`), never from the envelope, whose `from` is whatever the sender wrote.
 *
 *   from.<me>.to.coordinator.join          join / profile / leave requests of a device
 *   from.<me>.to.coordinator.status        status requests of observers (and devices)
 *   from.<me>.hb                           heartbeats (the coordinator reads from.*.hb)
 *   from.coordinator.to.<device>.ctl       device control: only the coordinator can send it
 *   from.<me>.to.<device>.fwd.<s>.<r>      activations for rank r of stage s
 *   from.<me>.to.<device>.bwd.<s>.<r>      gradients w.r.t. the side hidden
 *   from.<me>.to.<device>.grad.<g>.<step>  all-reduce chunks of group g
 *   from.<me>.to.<device>.cache.put        activation-cache entries (redistribution)
 *   from.<me>.to.<device>.link             link-rate probe bytes and their acknowledgement (profiling)
 *   from.<me>.events                       run events and rejection reports (observers read from.*.events)
 *   inbox.<me>.<nuid>.<token>              replies to <me>'s requests
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

/** The identity of the coordinator on the bus; no device may carry this name. */
export const COORDINATOR = 'coordinator';

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

/** Returns `name` when it is a valid device name: a token that is not the coordinator's identity. */
export function checkDevice(name: string): string {
  checkToken('device', name);
  if (name === COORDINATOR) throw new InvalidSubjectToken('device', name, 'is reserved for the coordinator');
  return name;
}

function checkIndex(what: string, n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidSubjectToken(what, String(n), 'must be a non-negative integer');
  return String(n);
}

const group = (g: string | number) => (typeof g === 'number' ? checkIndex('group', g) : checkToken('group', g));

/** Subject names of one run, as identity `me` sends and receives them. */
export interface Subjects {
  readonly run: string;
  /** `charon.<run>.` */
  readonly prefix: string;
  /** the identity these subjects speak for (a device name, `coordinator`, an observer) */
  readonly me: string;
  /** `charon.<run>.from.<me>.`: everything `me` may publish */
  readonly own: string;
  /** me -> coordinator (request): join, profile, leave */
  coordJoin(): string;
  /** coordinator: every join request */
  coordJoinIn(): string;
  /** me -> coordinator (request): status */
  coordStatus(): string;
  /** coordinator: every status request */
  coordStatusIn(): string;
  /** me -> all: heartbeat */
  devHb(): string;
  /** every heartbeat (subscription wildcard) */
  devHbAll(): string;
  /** coordinator -> device (request): control */
  devCtl(device: string): string;
  /** device: the coordinator's control requests to me (nobody else's) */
  devCtlIn(): string;
  /** me -> `device`, rank `rank` of stage `stage`: forward activations */
  stageFwd(device: string, stage: number, rank: number): string;
  /** forward activations for my rank `rank` of stage `stage`, from any sender */
  stageFwdIn(stage: number, rank: number): string;
  /** me -> `device`, rank `rank` of stage `stage`: gradient w.r.t. the side hidden */
  stageBwd(device: string, stage: number, rank: number): string;
  stageBwdIn(stage: number, rank: number): string;
  /** me -> `device`: all-reduce chunks of data-parallel `group` at `step` */
  grad(device: string, group: string | number, step: number): string;
  gradIn(group: string | number, step: number): string;
  /** me -> `device` (request): activation-cache entries */
  cachePut(device: string): string;
  cachePutIn(): string;
  /** me -> `device`: link-rate probe (bytes, then a request for how many arrived) */
  link(device: string): string;
  linkIn(): string;
  /** run events and rejection reports that `me` publishes */
  events(): string;
  /** chaos runner -> fault layers of a chaos run ('rule'), and back ('report') (src/bus/faults.ts) */
  chaos(part: 'rule' | 'report'): string;
  /** everybody's run events (observers) */
  eventsAll(): string;
  /** the prefix of my request inboxes (replies to me) */
  inbox(): string;
  /** The identity that sent a message on `subject`: the token after `from.`, or undefined when the subject is not of this run. */
  senderOf(subject: string): string | undefined;
}

/**
 * Builds the subjects of run `run` for identity `me`.
 * @throws InvalidSubjectToken when `run` or `me` is not a valid token.
 */
export function subjects(run: string, me: string): Subjects {
  const prefix = `charon.${checkToken('run', run)}.`;
  checkToken('identity', me);
  const own = `${prefix}from.${me}.`;
  const to = (d: string, what: string) => `${own}to.${checkToken('device', d)}.${what}`;
  const toMe = (what: string) => `${prefix}from.*.to.${me}.${what}`;
  const at = (s: number, r: number) => `${checkIndex('stage', s)}.${checkIndex('rank', r)}`;
  return {
    run,
    prefix,
    me,
    own,
    coordJoin: () => to(COORDINATOR, 'join'),
    coordJoinIn: () => `${prefix}from.*.to.${COORDINATOR}.join`,
    coordStatus: () => to(COORDINATOR, 'status'),
    coordStatusIn: () => `${prefix}from.*.to.${COORDINATOR}.status`,
    devHb: () => `${own}hb`,
    devHbAll: () => `${prefix}from.*.hb`,
    devCtl: (d) => to(d, 'ctl'),
    devCtlIn: () => `${prefix}from.${COORDINATOR}.to.${me}.ctl`,
    stageFwd: (d, s, r) => to(d, `fwd.${at(s, r)}`),
    stageFwdIn: (s, r) => toMe(`fwd.${at(s, r)}`),
    stageBwd: (d, s, r) => to(d, `bwd.${at(s, r)}`),
    stageBwdIn: (s, r) => toMe(`bwd.${at(s, r)}`),
    grad: (d, g, step) => to(d, `grad.${group(g)}.${checkIndex('step', step)}`),
    gradIn: (g, step) => toMe(`grad.${group(g)}.${checkIndex('step', step)}`),
    cachePut: (d) => to(d, 'cache.put'),
    cachePutIn: () => toMe('cache.put'),
    link: (d) => to(d, 'link'),
    linkIn: () => toMe('link'),
    events: () => `${own}events`,
    eventsAll: () => `${prefix}from.*.events`,
    inbox: () => `${prefix}inbox.${me}`,
    senderOf: (subject) => {
      if (!subject.startsWith(`${prefix}from.`)) return undefined;
      const token = subject.slice(prefix.length + 5).split('.', 1)[0];
      return token && TOKEN.test(token) ? token : undefined;
    },
    chaos: (part) => `${prefix}chaos.${part === 'rule' ? 'rule' : 'report'}`,
  };
}
