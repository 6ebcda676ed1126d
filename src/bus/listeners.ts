/** Listeners of a connection's local events, one set an event; a listener's failure is its own. */
export type Listener<E, K extends keyof E> = (detail: E[K]) => void;

export class Listeners<E> {
  private readonly sets = new Map<keyof E, Set<(d: never) => void>>();

  /** Adds a listener; returns its remover. */
  on<K extends keyof E>(event: K, listener: Listener<E, K>): () => void {
    let set = this.sets.get(event);
    if (!set) this.sets.set(event, (set = new Set()));
    set.add(listener as (d: never) => void);
    return () => set!.delete(listener as (d: never) => void);
  }

  emit<K extends keyof E>(event: K, detail: E[K]): void {
    for (const l of this.sets.get(event) ?? []) {
      try {
        (l as Listener<E, K>)(detail);
      } catch {
        /* a listener's failure is its own */
      }
    }
  }
}
