import { log } from '../log.js';

// One timeline for one pod start, across stage0 and stage1. Each process
// marks the end of a phase; with --debug every mark is a line
//
//   rkt: debug: phase image-lookup +141.3 ms (37.0 ms)
//   stage1: debug: phase network +402.9 ms (12.4 ms)
//
// where "+141.3 ms" is when the phase ended, counted from the one origin of
// the pod start (stage0's process start), and "(37.0 ms)" is how long it
// took: the time since the previous mark of the timeline, whichever process
// made it. stage0 hands the origin and its last mark to the stage1
// entrypoint in two environment variables, so the entrypoint's marks
// continue stage0's timeline across the process boundary (and across a
// second Node.js start-up, which its first mark measures). The entrypoint's
// marks do not come back: stage0's first mark after the hand-over has no
// duration, only its place on the timeline. bench/phase-trace.sh
// summarises the marks of many pods.

/** Milliseconds since the Unix epoch at which the timeline began (stage0's process start). */
export const TRACE_ORIGIN_ENV = 'RKT_TRACE_ORIGIN';
/** Milliseconds since the origin of the last mark before the hand-over. */
export const TRACE_LAST_ENV = 'RKT_TRACE_LAST';

export interface PhaseMark {
  phase: string;
  /** Milliseconds since the origin at which the phase ended. */
  at: number;
  /** Milliseconds since the previous mark; unknown for the first mark after a hand-over to another process. */
  took?: number;
}

/** Wall-clock milliseconds with sub-millisecond resolution; performance.timeOrigin is this process's start. */
function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A finite, non-negative number of milliseconds, or undefined. */
function millis(text: string | undefined): number | undefined {
  if (text === undefined || !/^[0-9]+(\.[0-9]+)?$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

export class PhaseTrace {
  private readonly marks: PhaseMark[] = [];

  constructor(
    readonly origin: number,
    private last: number | undefined,
    private readonly now: () => number = wallNow,
  ) {}

  /** The timeline handed over in `env` (stage0 → stage1), else one that starts at this process's start. */
  static fromEnv(env: NodeJS.ProcessEnv, now: () => number = wallNow): PhaseTrace {
    const origin = millis(env[TRACE_ORIGIN_ENV]);
    // a handed-over origin later than now is not stage0's: start afresh
    if (origin !== undefined && origin <= now()) return new PhaseTrace(origin, millis(env[TRACE_LAST_ENV]) ?? 0, now);
    return new PhaseTrace(performance.timeOrigin, 0, now);
  }

  /** Milliseconds since the origin. */
  elapsed(): number {
    return this.now() - this.origin;
  }

  /** A phase has ended now: remember it and, with --debug, say so. */
  mark(phase: string): PhaseMark {
    const at = this.elapsed();
    const m: PhaseMark = { phase, at, ...(this.last !== undefined && { took: at - this.last }) };
    this.last = at;
    this.marks.push(m);
    log().debug(formatMark(m));
    return m;
  }

  /** The marks made in this process, in order. */
  list(): readonly PhaseMark[] {
    return this.marks;
  }

  /** Hand the timeline over: the environment that continues it in a child process. */
  env(): Record<string, string> {
    const last = this.last ?? this.elapsed();
    // what the child marks is not seen here, so the next mark's duration is unknown
    this.last = undefined;
    return { [TRACE_ORIGIN_ENV]: this.origin.toFixed(3), [TRACE_LAST_ENV]: last.toFixed(3) };
  }
}

export function formatMark(m: PhaseMark): string {
  return `phase ${m.phase} +${m.at.toFixed(1)} ms${m.took === undefined ? '' : ` (${m.took.toFixed(1)} ms)`}`;
}

/** A mark as a `rkt: debug: …` or `stage1: debug: …` line shows it, or undefined for any other line. */
export function parseMarkLine(line: string): (PhaseMark & { program: string }) | undefined {
  const m = /^(\w+): debug: phase ([a-z0-9-]+) \+(-?[0-9.]+) ms(?: \((-?[0-9.]+) ms\))?$/.exec(line);
  if (m === null) return undefined;
  return { program: m[1]!, phase: m[2]!, at: Number(m[3]), ...(m[4] !== undefined && { took: Number(m[4]) }) };
}

let current: PhaseTrace | undefined;

/**
 * This process's timeline. The hand-over variables are taken out of the
 * environment once read: nothing this process starts (apps, helpers) should
 * inherit them by accident.
 */
export function phaseTrace(): PhaseTrace {
  if (current === undefined) {
    current = PhaseTrace.fromEnv(process.env);
    delete process.env[TRACE_ORIGIN_ENV];
    delete process.env[TRACE_LAST_ENV];
  }
  return current;
}

/** Mark the end of a phase of the pod start on this process's timeline. */
export function phase(name: string): void {
  phaseTrace().mark(name);
}
