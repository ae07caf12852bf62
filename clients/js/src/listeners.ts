// A small typed listener set: what each helper emits (views, statuses, changes).

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listeners<L> = { [E in keyof L]: (...args: any[]) => void };

export class Emitter<L extends Listeners<L>> {
  private readonly listeners = new Map<keyof L, Set<L[keyof L]>>();

  /** Call `listener` on each `event`; returns a function that stops it. */
  on<E extends keyof L>(event: E, listener: L[E]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => void set.delete(listener);
  }

  protected emit<E extends keyof L>(event: E, ...args: Parameters<L[E]>): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) listener(...args);
  }

  protected clearListeners(): void {
    this.listeners.clear();
  }
}

/** Exact order of two non-negative decimal strings ("95850.10" < "95851"), without floating point. */
export function compareDecimal(a: string, b: string): number {
  const [ai = "", af = ""] = a.split(".");
  const [bi = "", bf = ""] = b.split(".");
  const aw = ai.replace(/^0+/, "");
  const bw = bi.replace(/^0+/, "");
  if (aw.length !== bw.length) return aw.length - bw.length;
  if (aw !== bw) return aw < bw ? -1 : 1;
  const width = Math.max(af.length, bf.length);
  const ax = af.padEnd(width, "0");
  const bx = bf.padEnd(width, "0");
  return ax === bx ? 0 : ax < bx ? -1 : 1;
}
