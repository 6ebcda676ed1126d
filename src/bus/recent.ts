/**
 * The envelope ids a subscription delivered lately, to refuse the same message twice. Ids are
 * unique per sender (`<name>-<counter>`), and a repeat (a duplicated or re-sent message) comes
 * within moments of the original, so a bounded window is enough: the oldest ids are forgotten.
 */
export class RecentIds {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity = 4096) {}

  /** Records `id`; false when it is already recorded. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    // A Set iterates in insertion order: the first entry is the oldest.
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value as string);
    return true;
  }
}
