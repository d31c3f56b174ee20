// A minimal listener registry for QmpClient. Not node:events' EventEmitter:
// that one throws when an 'error' event has no listener and types everything
// as any; here names are QMP event names plus 'event' and 'close'.

export type AnyListener = (arg: never) => void;

export class Listeners {
  private readonly byName = new Map<string, Array<{ fn: AnyListener; once: boolean }>>();

  add(name: string, fn: AnyListener, once: boolean): void {
    const list = this.byName.get(name) ?? [];
    list.push({ fn, once });
    this.byName.set(name, list);
  }

  remove(name: string, fn: AnyListener): void {
    const list = this.byName.get(name)?.filter((l) => l.fn !== fn);
    if (list === undefined || list.length === 0) this.byName.delete(name);
    else this.byName.set(name, list);
  }

  count(name?: string): number {
    if (name !== undefined) return this.byName.get(name)?.length ?? 0;
    let n = 0;
    for (const list of this.byName.values()) n += list.length;
    return n;
  }

  clear(): void {
    this.byName.clear();
  }

  emit(name: string, arg: unknown): void {
    const list = this.byName.get(name);
    if (!list) return;
    // Iterate over a copy: a listener may add or remove listeners.
    for (const entry of [...list]) {
      if (entry.once) this.remove(name, entry.fn);
      try {
        (entry.fn as (a: unknown) => void)(arg);
      } catch (err) {
        // A faulty listener must not derail parsing of the rest of the chunk;
        // surface it the way an EventEmitter listener error would.
        process.nextTick(() => {
          throw err;
        });
      }
    }
  }
}
