import { UsageError } from '../errors.js';
import type { Annotation } from './types.js';
import type { AttachAction, AttachEndpoints } from '../stage1/args.js';

// rkt's per-app stream modes (rkt run/prepare --stdin, --stdout, --stderr),
// kept where rkt keeps them: as annotations of the app in the pod manifest,
// which stage0 writes and every stage1 reads.
//   null    the stream is closed (/dev/null)
//   log     output goes to the pod's log: rkt run's own stdout/stderr (and
//           the journal where there is one)
//   stream  a pipe held by the stage1, which `rkt attach` connects to
//   tty     a terminal held by the stage1, which `rkt attach` connects to
// `rkt run --interactive` is none of these: it ties the one app to rkt
// run's own stdin and stdout.

export const STREAMS = ['stdin', 'stdout', 'stderr'] as const;
export type StreamName = (typeof STREAMS)[number];
export type StreamMode = 'null' | 'log' | 'stream' | 'tty';

export const STREAM_ANNOTATION: Record<StreamName, string> = {
  stdin: 'coreos.com/rkt/stage2/stdin',
  stdout: 'coreos.com/rkt/stage2/stdout',
  stderr: 'coreos.com/rkt/stage2/stderr',
};

export type AppStreams = Record<StreamName, StreamMode>;

/** What an app gets without flags: no input, output to the pod's log. */
export const DEFAULT_STREAMS: Readonly<AppStreams> = { stdin: 'null', stdout: 'log', stderr: 'log' };

const ALLOWED: Record<StreamName, readonly StreamMode[]> = {
  stdin: ['null', 'stream', 'tty'],
  stdout: ['null', 'log', 'stream', 'tty'],
  stderr: ['null', 'log', 'stream', 'tty'],
};

/** A mode given on the command line; a usage error names what is allowed. */
export function parseStreamMode(stream: StreamName, value: string): StreamMode {
  const mode = ALLOWED[stream].find((m) => m === value);
  if (mode === undefined) throw new UsageError(`--${stream}=${value}: the mode of ${stream} is one of ${ALLOWED[stream].join(', ')}`);
  return mode;
}

/**
 * One terminal serves an app: its input and output are the same device, so
 * a tty stdin needs a tty stdout and the other way round (rkt refuses the
 * same); stderr may go elsewhere.
 */
export function checkStreams(app: string, s: AppStreams): void {
  if ((s.stdin === 'tty') !== (s.stdout === 'tty')) {
    throw new UsageError(`app "${app}": --stdin=tty and --stdout=tty go together (one terminal is both)`);
  }
  if (s.stderr === 'tty' && s.stdin !== 'tty') throw new UsageError(`app "${app}": --stderr=tty needs --stdin=tty and --stdout=tty`);
}

/** The annotations for an app's modes; none for the default ones. */
export function streamAnnotations(s: AppStreams): Annotation[] {
  return STREAMS.filter((n) => s[n] !== DEFAULT_STREAMS[n]).map((n) => ({ name: STREAM_ANNOTATION[n], value: s[n] }));
}

/** An app's modes as its annotations give them; a value stage0 could not have written is refused. */
export function appStreams(app: string, annotations: readonly Annotation[] | undefined): AppStreams {
  const s: AppStreams = { ...DEFAULT_STREAMS };
  for (const n of STREAMS) {
    const v = annotations?.find((a) => a.name === STREAM_ANNOTATION[n])?.value;
    if (v === undefined) continue;
    const mode = ALLOWED[n].find((m) => m === v);
    if (mode === undefined) throw new UsageError(`app "${app}": annotation ${STREAM_ANNOTATION[n]}="${v}" is not a mode of ${n} (${ALLOWED[n].join(', ')})`);
    s[n] = mode;
  }
  checkStreams(app, s);
  return s;
}

/** Whether `rkt attach` has anything to connect to in this app. */
export function isAttachable(s: AppStreams): boolean {
  return STREAMS.some((n) => s[n] === 'stream' || s[n] === 'tty');
}

const ATTACH_TARGETS = ['tty', 'tty-in', 'tty-out', 'stdin', 'stdout', 'stderr'] as const;

/**
 * rkt attach's --mode as the attach entrypoint's action and endpoints (rkt's
 * stage1 interface, src/stage1/args.ts): list, auto, console (ours: a kvm
 * pod's serial console), or a comma-separated list of tty, tty-in,
 * tty-out, stdin, stdout, stderr.
 */
export function parseAttachMode(mode: string): { action: AttachAction; endpoints?: AttachEndpoints } {
  if (mode === 'list') return { action: 'list' };
  if (mode === 'auto') return { action: 'auto-attach' };
  if (mode === 'console') return { action: 'console' };
  const words = mode.split(',').map((w) => w.trim());
  const bad = words.filter((w) => !(ATTACH_TARGETS as readonly string[]).includes(w));
  if (words.length === 0 || bad.length > 0) {
    throw new UsageError(`--mode=${mode}: one of list, auto, console, or a comma-separated list of ${ATTACH_TARGETS.join(', ')}`);
  }
  const has = (w: string): boolean => words.includes(w);
  const e: AttachEndpoints = { ttyIn: has('tty') || has('tty-in'), ttyOut: has('tty') || has('tty-out'), stdin: has('stdin'), stdout: has('stdout'), stderr: has('stderr') };
  if ((e.ttyIn || e.ttyOut) && (e.stdin || e.stdout || e.stderr)) throw new UsageError(`--mode=${mode}: an app has either a terminal or streams; attach to one kind`);
  return { action: 'custom-attach', endpoints: e };
}

/** For a stage1 that keeps apps' streams as they are by default: refuse any other mode, never drop it. */
export function refuseStreamModes(apps: ReadonlyArray<{ name: string; streams: AppStreams }>, flavor: string): void {
  for (const a of apps) {
    const asked = STREAMS.filter((n) => a.streams[n] !== DEFAULT_STREAMS[n]);
    if (asked.length > 0) {
      throw new UsageError(`app "${a.name}": the ${flavor} stage1 does not support ${asked.map((n) => `--${n}=${a.streams[n]}`).join(' ')}; use the kvm or nspawn stage1 (--stage1-name=kvm or --stage1-name=nspawn) for per-app stream modes and rkt attach`);
    }
  }
}
