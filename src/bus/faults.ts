/**
 * The bus fault layer: message faults a chaos run injects into delivery (drop, delay, duplicate)
 * on chosen subjects for a time. It exists only in processes started with `CHARON_CHAOS=1` in
 * their environment (what `charon chaos` gives the run it launches; a topology cannot ask for
 * it): anywhere else `Bus.connect` creates none and delivery is untouched.
 *
 * The chaos runner steers it over the run's `chaos` subject: a `chaos-rule` envelope arms a rule
 * in every chaos-mode process of the run at once, for `durationMs` from its arrival. A rule acts
 * on received messages whose subject matches its pattern (NATS wildcards `*` and `>`, relative
 * to `charon.<run>.`, with or without the `from.<sender>.to.<receiver>.` part, so that `grad.>`
 * means every all-reduce chunk whoever sends it); each matching message is hit with `probability`, drawn from a generator
 * seeded by the rule's seed and the process name. When a rule expires, every process it touched
 * publishes a `chaos-report` with what it did, so the runner can tell a fault that hit nothing.
 */

export const CHAOS_ENV = 'CHARON_CHAOS';

export const MESSAGE_FAULTS = ['drop', 'delay', 'duplicate'] as const;
export type MessageFault = (typeof MESSAGE_FAULTS)[number];

/** A message fault, as the runner sends it. */
export interface FaultRule {
  /** The runner's name for it (its index in the schedule). */
  id: string;
  action: MessageFault;
  /** Subject pattern relative to `charon.<run>.` (NATS wildcards). */
  subject: string;
  durationMs: number;
  /** For 'delay': how long each hit message is held. */
  delayMs: number;
  /** Chance that a matching message is hit, in (0, 1]. */
  probability: number;
  seed: number;
}

/** What one process did under one rule. */
export interface FaultReport {
  rule: string;
  process: string;
  matched: number;
  hit: number;
  action: MessageFault;
}

/** Whether `subject` matches the NATS pattern `pattern` (`*` one token, `>` the rest). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.'),
    s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

/** mulberry32: small, seedable, good enough to spread hits over messages. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hash(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

interface Armed {
  rule: FaultRule;
  pattern: string;
  until: number;
  draw: () => number;
  matched: number;
  hit: number;
  timer: NodeJS.Timeout;
}

/** The faults armed in one process. `deliver` is the only thing delivery calls. */
export class FaultLayer {
  private readonly armed = new Map<string, Armed>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly processName: string,
    private readonly prefix: string,
    private readonly report: (r: FaultReport) => void,
  ) {}

  /** Arms `rule` for its duration from now (a rule with the same id replaces the old one). */
  arm(rule: FaultRule): void {
    this.disarm(rule.id, false);
    const timer = setTimeout(() => this.disarm(rule.id, true), rule.durationMs);
    timer.unref();
    this.armed.set(rule.id, {
      rule,
      pattern: rule.subject,
      until: Date.now() + rule.durationMs,
      draw: random(rule.seed ^ hash(this.processName)),
      matched: 0,
      hit: 0,
      timer,
    });
  }

  private matches(pattern: string, subject: string): boolean {
    if (!subject.startsWith(this.prefix)) return false;
    const full = subject.slice(this.prefix.length);
    if (subjectMatches(pattern, full)) return true;
    const t = full.split('.');
    let i = 0;
    if (t[i] === 'from') i += 2;
    if (t[i] === 'to') i += 2;
    return i > 0 && subjectMatches(pattern, t.slice(i).join('.'));
  }

  /** Rules armed now. */
  get active(): number {
    return this.armed.size;
  }

  /** Hands a received message on (`deliver()`), or drops, holds or repeats it as the first armed rule that hits it says. */
  deliver(subject: string, deliver: () => void): void {
    const now = Date.now();
    for (const a of this.armed.values()) {
      if (now >= a.until || !this.matches(a.pattern, subject)) continue;
      a.matched++;
      if (a.draw() >= a.rule.probability) continue;
      a.hit++;
      if (a.rule.action === 'drop') return;
      if (a.rule.action === 'duplicate') {
        deliver();
        deliver();
        return;
      }
      const t = setTimeout(() => {
        this.timers.delete(t);
        deliver();
      }, a.rule.delayMs);
      this.timers.add(t);
      return;
    }
    deliver();
  }

  /** Reports and forgets every rule, drops every held message (the connection is closing). */
  close(): void {
    for (const id of [...this.armed.keys()]) this.disarm(id, true);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private disarm(id: string, expired: boolean): void {
    const a = this.armed.get(id);
    if (!a) return;
    clearTimeout(a.timer);
    this.armed.delete(id);
    if (expired && a.matched > 0)
      this.report({ rule: id, process: this.processName, matched: a.matched, hit: a.hit, action: a.rule.action });
  }
}

/** A rule from the wire, or an error message naming the bad field. */
export function parseFaultRule(body: unknown): FaultRule | string {
  const b = body as Partial<FaultRule> | null;
  if (!b || typeof b !== 'object') return 'rule: not an object';
  if (typeof b.id !== 'string' || !b.id) return 'rule.id: not a string';
  if (!MESSAGE_FAULTS.includes(b.action as MessageFault)) return `rule.action: not one of ${MESSAGE_FAULTS.join(', ')}`;
  if (typeof b.subject !== 'string' || !/^[A-Za-z0-9_*>-]+(\.[A-Za-z0-9_*>-]+)*$/.test(b.subject))
    return 'rule.subject: not a subject pattern';
  for (const k of ['durationMs', 'delayMs', 'seed'] as const)
    if (typeof b[k] !== 'number' || !Number.isFinite(b[k]) || b[k] < 0) return `rule.${k}: not a number >= 0`;
  if (typeof b.probability !== 'number' || !(b.probability > 0 && b.probability <= 1)) return 'rule.probability: not in (0, 1]';
  return b as FaultRule;
}
