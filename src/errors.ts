// Every failure a user can meet is a RktError: it carries the exit code and a
// one-line message that says what went wrong and what to do next. Anything
// else that escapes to the CLI is a bug: one line that says so, the stack
// only with --debug.
//
// Exit statuses of rkt (stage0) and of the stage1 entrypoints. rkt 1.x exits
// 254 whenever rkt itself fails, whatever the cause (its cobra usage errors
// included), and scripts written for rkt test for it; we do the same. The
// stderr line says which kind of failure it was:
//
//   code  meaning
//   0     success
//   254   rkt failed: a user error (the line says what to do), wrong flags
//         or arguments (the line names them), a stage1 failure passed on by
//         stage0, or an internal error ("this is a bug")
//   other `rkt run`, `run-prepared` and `enter` exit with the app's status
//         (128+N when a signal N ended it), so an app can exit 254 too
//
// The names below keep the kinds apart in the code, though they share a value.

export const EXIT = {
  ok: 0,
  failure: 254,
  usage: 254,
  internal: 254,
  stage1Failure: 254,
} as const;

export class RktError extends Error {
  readonly exitCode: number;
  constructor(message: string, opts: { exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.exitCode = opts.exitCode ?? EXIT.failure;
  }
}

/** Wrong flags or arguments (exit status 254, as rkt's cobra usage errors). */
export class UsageError extends RktError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { ...opts, exitCode: EXIT.usage });
  }
}

export class NotFoundError extends RktError {}
export class ImageNotFoundError extends NotFoundError {}
export class PodNotFoundError extends NotFoundError {}

/** A manifest (image or pod) broke a rule of the appc spec; names the field and the rule. */
export class ManifestError extends RktError {
  readonly field: string;
  readonly rule: string;
  constructor(field: string, rule: string) {
    // both may carry the image's own text (keys, values)
    const f = printable(field, 300);
    const r = printable(rule, 1000);
    super(`invalid manifest: ${f}: ${r}`);
    this.field = f;
    this.rule = r;
  }
}

/** An image file that is not a well-formed, safe ACI. */
export class ImageFormatError extends RktError {}

/** Signature verification failed or could not be performed. */
export class TrustError extends RktError {}

/** Another process holds a lock we need without waiting. */
export class LockBusyError extends RktError {}

/** A rendered image tree a pod holds: the caller names the pod (the store knows no pods). */
export class TreeInUseError extends RktError {
  constructor(readonly treeId: string, options?: { cause?: unknown }) {
    super(`image tree ${treeId} is in use by a pod; remove the pod first ("rkt gc")`, options);
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/**
 * Why a file could not be read, for a message: "does not exist" for ENOENT,
 * else the system's own words, which name the errno ("EACCES: permission
 * denied, open '/x'"). Pass the error on as the cause too.
 */
export function whyUnreadable(err: unknown): string {
  if (isErrno(err, 'ENOENT')) return 'does not exist';
  return `cannot be read (${err instanceof Error ? err.message : String(err)})`;
}

// Text from images, guests and qemu ends up in messages. Control characters
// (C0, DEL, C1) and bidirectional overrides in it could move the cursor,
// rewrite what the terminal shows, or break a message over lines: they are
// shown escaped, and text longer than `max` is cut.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` made safe to show in a one-line message. */
export function printable(text: string, max = 200): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  return cut.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A value from untrusted input, quoted for a message. */
export function quote(text: string, max = 100): string {
  return `"${printable(text, max)}"`;
}
