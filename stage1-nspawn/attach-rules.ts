import type { AppStreams } from '../src/appc/app-streams.js';
import { isAttachable, STREAMS } from '../src/appc/app-streams.js';
import type { AttachRequest } from '../stage1-kvm/agent-protocol.js';

// The parts of the nspawn relay (app-io.ts) that decide rather than move
// bytes: which attach requests an app takes, and what is kept of its
// output while nobody is attached. They speak and answer as the kvm guest
// agent does (guest/agent/PROTOCOL.md, "An attach session"), so that
// `rkt attach` reads the same on both flavors.

/**
 * Why an attach request is refused, in the agent's words, or undefined if
 * it is taken. `busy`: another session is attached to the app.
 */
export function attachRefusal(app: string, streams: AppStreams, req: AttachRequest, busy: boolean): string | undefined {
  if (req.app !== app || !isAttachable(streams)) {
    return `app "${req.app}" has no attachable streams (run it with --stdin, --stdout or --stderr set to tty or stream)`;
  }
  const tty = streams.stdin === 'tty';
  for (const n of STREAMS) {
    if (!req[n]) continue;
    // a terminal is one device: its output is stdout, whatever stderr's mode
    const ok = tty ? n !== 'stderr' || streams.stderr === 'tty' : streams[n] === 'stream';
    if (!ok) return `the ${n} of app "${app}" is not attachable (its mode is neither tty nor stream)`;
  }
  if (busy) return `app "${app}" is attached to by another session; one at a time`;
  return undefined;
}

/**
 * The most recent output of one stream, kept while nobody is attached to
 * it and given to the next session that is: at most `max` bytes, the
 * oldest dropped first. The relay keeps reading the app's output whether
 * or not anyone is attached, so an app never blocks on a stream nobody
 * reads (as rkt's iottymux, which drops it); a session that attaches later
 * sees the tail of what it missed.
 */
export class Backlog {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = 0;

  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`a backlog of ${max} bytes`);
  }

  push(data: Buffer): void {
    if (data.length === 0) return;
    const d = data.length > this.max ? data.subarray(data.length - this.max) : data;
    this.dropped += data.length - d.length;
    this.chunks.push(Buffer.from(d));
    this.size += d.length;
    while (this.size > this.max) {
      const first = this.chunks[0]!;
      const over = this.size - this.max;
      if (first.length <= over) {
        this.chunks.shift();
        this.size -= first.length;
        this.dropped += first.length;
      } else {
        this.chunks[0] = first.subarray(over);
        this.size -= over;
        this.dropped += over;
      }
    }
  }

  /** Everything kept, emptied. */
  take(): Buffer {
    const all = Buffer.concat(this.chunks);
    this.chunks = [];
    this.size = 0;
    return all;
  }

  get length(): number {
    return this.size;
  }

  /** Bytes dropped so far (for --debug). */
  get droppedBytes(): number {
    return this.dropped;
  }
}
