import util from 'node:util';
import { pino, type DestinationStream, type Logger } from 'pino';
import { EXIT, RktError } from './errors.js';

// Everything this process writes to stderr is for a person, one format:
//
//   rkt: <error message>                      (stage0's failures)
//   rkt: warning: <message>                   (log().warn)
//   rkt: debug: <message> key=value ...       (log().debug, with --debug)
//
// and "stage1:" instead of "rkt:" from the stage1 entrypoints. pino keeps
// the levels and the merging of objects; its JSON lines are turned back into
// that format before they leave, so no JSON reaches a terminal. Machine
// output (--format=json) is stdout's alone. Quiet by default: only warnings
// and worse; --debug shows every step.

let program = 'rkt';
let debugging = false;
let logger: Logger | undefined;

/** Name the program in front of every stderr line: "rkt" (the default) in stage0, "stage1" in the entrypoints. */
export function setProgram(name: string): void {
  program = name;
}

/** One line (or more) to stderr as `<program>: <text>`. */
export function say(text: string): void {
  process.stderr.write(prefixLines(program, text));
}

const LEVEL_WORDS: Record<string, string> = { trace: 'trace', debug: 'debug', info: 'info', warn: 'warning', error: 'error', fatal: 'fatal' };

/** Continuation lines get the prefix too, indented, so that no stderr line is anonymous. */
function prefixLines(prefix: string, text: string): string {
  return (
    text
      .replace(/\n+$/, '')
      .split('\n')
      .map((line, i) => (i === 0 ? `${prefix}: ${line}` : `${prefix}:   ${line}`))
      .join('\n') + '\n'
  );
}

/** An Error as pino's serializer leaves it: its stack is for --debug failures, not log lines. */
function errorMessage(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const e = v as Record<string, unknown>;
  return typeof e.type === 'string' && typeof e.message === 'string' && typeof e.stack === 'string' ? e.message : undefined;
}

/** A field value as it reads best on one line: bare words bare, anything else as compact JSON. */
function renderValue(v: unknown): string {
  const message = errorMessage(v);
  if (message !== undefined) return renderValue(message);
  if (typeof v === 'string') return /^[^\s"'=\\]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'object' && v !== null) return JSON.stringify(v);
  return String(v);
}

/** One pino record (as parsed from its JSON line) as a human stderr line. Exported for the tests. */
export function formatRecord(prefix: string, record: Record<string, unknown>): string {
  const { level, msg, ...fields } = record;
  const word = LEVEL_WORDS[String(level)] ?? String(level);
  const text = msg === undefined || msg === '' ? undefined : String(msg);
  const parts = [text];
  for (const [k, v] of Object.entries(fields)) {
    // log().warn(err) makes the error's message the line's message already
    if (errorMessage(v) !== undefined && errorMessage(v) === text) continue;
    parts.push(`${k}=${renderValue(v)}`);
  }
  return prefixLines(prefix, `${word}: ${parts.filter((p) => p !== undefined).join(' ')}`);
}

const toStderr: DestinationStream = {
  write(line: string): void {
    process.stderr.write(formatRecord(program, JSON.parse(line) as Record<string, unknown>));
  },
};

function make(level: string): Logger {
  return pino({ level, base: undefined, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, toStderr);
}

/** --debug: every step logged, and stacks printed with failures. */
export function setDebug(on: boolean): void {
  debugging = on;
  logger = make(on ? 'debug' : 'warn');
}

export function isDebug(): boolean {
  return debugging;
}

export function log(): Logger {
  if (logger === undefined) setDebug(process.env.RKT_DEBUG === '1');
  return logger!;
}

/**
 * Report a failure that ends the program and return its exit status. A
 * RktError is its message, which says what to do. Anything else is a bug in
 * rkt: the first line of its message and a hint, or under --debug its stack
 * and causes.
 */
export function reportFailure(err: unknown, opts: { debug?: boolean } = {}): number {
  const debug = opts.debug ?? debugging;
  if (err instanceof RktError) {
    say(err.message);
    if (debug) process.stderr.write(`${util.inspect(err)}\n`);
    return err.exitCode;
  }
  say(`internal error: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`);
  if (debug) process.stderr.write(`${util.inspect(err)}\n`);
  else say('this is a bug in rkt; run with --debug for the stack');
  return EXIT.internal;
}
