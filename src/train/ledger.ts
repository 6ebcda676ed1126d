/**
 * The sample ledger: per epoch, which step consumed which sample ids and whether it committed.
 * Exactly once means: in a finished epoch every sample of the data set belongs to exactly one
 * committed step. Aborted steps stay recorded (for the report) and do not count.
 */

export interface LedgerStep {
  step: number;
  sampleIds: number[];
  committed: boolean;
}

export interface LedgerEpoch {
  epoch: number;
  steps: LedgerStep[];
  finished: boolean;
}

/** JSON form of a ledger. */
export interface LedgerJson {
  samples: number;
  epochs: LedgerEpoch[];
}

export class Ledger {
  private readonly epochs = new Map<number, LedgerEpoch>();

  /** `samples` is the data set size; sample ids are 0..samples-1. */
  constructor(readonly samples: number) {}

  static fromJSON(json: LedgerJson): Ledger {
    const l = new Ledger(json.samples);
    for (const e of json.epochs)
      l.epochs.set(e.epoch, { epoch: e.epoch, finished: e.finished, steps: e.steps.map((s) => ({ ...s, sampleIds: [...s.sampleIds] })) });
    return l;
  }

  private epochOf(epoch: number): LedgerEpoch {
    let e = this.epochs.get(epoch);
    if (!e) {
      e = { epoch, steps: [], finished: false };
      this.epochs.set(epoch, e);
    }
    return e;
  }

  /** Records that `step` of `epoch` started on `sampleIds` (not yet committed). */
  begin(epoch: number, step: number, sampleIds: number[]): void {
    const e = this.epochOf(epoch);
    if (e.finished) throw new Error(`ledger: epoch ${epoch} is already finished`);
    e.steps.push({ step, sampleIds: [...sampleIds], committed: false });
  }

  /** Marks the latest record of `step` in `epoch` committed. */
  commit(epoch: number, step: number): void {
    const rec = this.latest(epoch, step);
    if (rec.committed) throw new Error(`ledger: step ${step} of epoch ${epoch} already committed`);
    rec.committed = true;
  }

  /** Leaves the latest record of `step` uncommitted for good: it will be replayed as a new record. */
  abort(epoch: number, step: number): void {
    const rec = this.latest(epoch, step);
    if (rec.committed) throw new Error(`ledger: step ${step} of epoch ${epoch} is committed and cannot be aborted`);
  }

  private latest(epoch: number, step: number): LedgerStep {
    const steps = this.epochs.get(epoch)?.steps ?? [];
    for (let i = steps.length - 1; i >= 0; i--) if (steps[i]!.step === step) return steps[i]!;
    throw new Error(`ledger: step ${step} of epoch ${epoch} was never begun`);
  }

  /** Marks `epoch` finished after checking exactly-once; throws naming the first violation. */
  finish(epoch: number): void {
    const problems = this.check(epoch);
    if (problems.length) throw new Error(`ledger: epoch ${epoch} is not exactly-once: ${problems[0]}`);
    this.epochOf(epoch).finished = true;
  }

  /** Exactly-once violations of `epoch` (empty when every sample is in exactly one committed step). */
  check(epoch: number): string[] {
    const seen = new Int32Array(this.samples);
    const problems: string[] = [];
    for (const s of this.epochs.get(epoch)?.steps ?? []) {
      if (!s.committed) continue;
      for (const id of s.sampleIds) {
        if (id < 0 || id >= this.samples) problems.push(`step ${s.step} names sample ${id} outside [0, ${this.samples})`);
        else seen[id]! += 1;
      }
    }
    for (let id = 0; id < this.samples; id++) {
      if (seen[id] === 0) problems.push(`sample ${id} is in no committed step`);
      else if (seen[id]! > 1) problems.push(`sample ${id} is in ${seen[id]} committed steps`);
    }
    return problems;
  }

  /** Committed steps of an epoch, in commit-record order. */
  committedSteps(epoch: number): LedgerStep[] {
    return (this.epochs.get(epoch)?.steps ?? []).filter((s) => s.committed);
  }

  isFinished(epoch: number): boolean {
    return this.epochs.get(epoch)?.finished ?? false;
  }

  toJSON(): LedgerJson {
    return { samples: this.samples, epochs: [...this.epochs.values()].sort((a, b) => a.epoch - b.epoch) };
  }
}
