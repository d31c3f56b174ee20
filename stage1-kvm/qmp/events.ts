// Delivery of QMP events: to listeners, to one-shot waits, and into a short
// backlog. The backlog exists because qemu sends the event a command causes
// before the command's response; a caller that only starts waiting after the
// response can still find the event by passing a mark taken beforehand.

import { QmpTimeoutError, formatMs } from './errors.js';
import { Listeners } from './listeners.js';
import type { QmpEvent } from './types.js';

export interface QmpWaitOptions<E> {
  /** Infinity waits until the event, the connection closing, or the signal. */
  timeoutMs: number;
  /** A value of eventMark() taken earlier: events received since then also count. */
  since?: number;
  /** Only events for which this returns true satisfy the wait. */
  filter?: (event: E) => boolean;
  signal?: AbortSignal;
}

// How far back eventMark()/since can reach. Events are rare (run-state
// changes), so this covers far more than the span of one command.
const BACKLOG = 256;

interface Waiter {
  label: string;
  offer: (event: QmpEvent) => void;
  fail: (err: unknown) => void;
}

export class EventHub {
  readonly listeners = new Listeners();
  private readonly backlog: Array<{ seq: number; event: QmpEvent }> = [];
  private readonly waiters = new Set<Waiter>();
  private count = 0;

  constructor(private readonly socketPath: string) {}

  /** Sequence number the next event will get. */
  get mark(): number {
    return this.count;
  }

  get waiting(): number {
    return this.waiters.size;
  }

  deliver(event: QmpEvent): void {
    this.backlog.push({ seq: this.count++, event });
    if (this.backlog.length > BACKLOG) this.backlog.shift();
    this.listeners.emit('event', event);
    this.listeners.emit(event.event, event);
    for (const waiter of [...this.waiters]) waiter.offer(event);
  }

  /**
   * @param closed set when the connection is already gone: builds the error
   *   for a wait that can then only be satisfied from the backlog.
   */
  wait(names: readonly string[], opts: QmpWaitOptions<QmpEvent>, closed: ((label: string) => Error) | undefined): Promise<QmpEvent> {
    const wanted = new Set(names);
    const label = `event ${names.join(' or ')}`;
    const matches = (e: QmpEvent): boolean => wanted.has(e.event) && (opts.filter === undefined || opts.filter(e));
    try {
      const since = opts.since;
      const found = since === undefined ? undefined : this.backlog.find((b) => b.seq >= since && matches(b.event));
      if (found) return Promise.resolve(found.event);
    } catch (err) {
      return Promise.reject(err); // a throwing filter
    }
    if (closed) return Promise.reject(closed(label));
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);

    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => waiter.fail(opts.signal?.reason);
      const cleanup = (): void => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        label,
        offer: (event) => {
          try {
            if (!matches(event)) return;
          } catch (err) {
            return waiter.fail(err);
          }
          cleanup();
          resolve(event);
        },
        fail: (err) => {
          cleanup();
          reject(err);
        },
      };
      this.waiters.add(waiter);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      // setTimeout(Infinity) would fire at once, hence the check.
      if (Number.isFinite(opts.timeoutMs)) {
        timer = setTimeout(() => {
          const msg = `qemu sent no ${names.join('/')} event on ${this.socketPath} within ${formatMs(opts.timeoutMs)}; the VM did not get there (guest hung, or ignoring the request?)`;
          waiter.fail(new QmpTimeoutError(this.socketPath, label, opts.timeoutMs, msg));
        }, opts.timeoutMs);
      }
    });
  }

  /** Rejects every outstanding wait; the connection has ended. */
  failWaiters(errorFor: (label: string) => Error): void {
    for (const waiter of [...this.waiters]) waiter.fail(errorFor(waiter.label));
  }
}
