// Every failure a user can meet is a RktError: it carries the exit code and a
// one-line message that says what went wrong and what to do next. Anything
// else that escapes to the CLI is a bug and is reported with its stack.

export class RktError extends Error {
  readonly exitCode: number;
  constructor(message: string, opts: { exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.exitCode = opts.exitCode ?? 1;
  }
}

/** Wrong flags or arguments: exit status 2 like most CLIs (and rkt's cobra usage errors). */
export class UsageError extends RktError {
  constructor(message: string) {
    super(message, { exitCode: 2 });
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
    super(`invalid manifest: ${field}: ${rule}`);
    this.field = field;
    this.rule = rule;
  }
}

/** An image file that is not a well-formed, safe ACI. */
export class ImageFormatError extends RktError {}

/** Signature verification failed or could not be performed. */
export class TrustError extends RktError {}

/** Another process holds a lock we need without waiting. */
export class LockBusyError extends RktError {}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
