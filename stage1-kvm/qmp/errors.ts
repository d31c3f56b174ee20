// Errors of the QMP client. Each one names the socket, because a host runs one
// qemu per pod and "qemu did not answer" is useless without saying which one,
// and ends with what the user can check next.

import { RktError, printable } from '../../src/errors.js';

/** Human duration for messages: 5000 -> "5s", 1500 -> "1.5s", 200 -> "200ms". */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'forever';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${Number((ms / 1000).toFixed(1))}s`;
}

/** Base class, so callers can catch "anything QMP" in one place. */
export class QmpError extends RktError {
  readonly socketPath: string;
  constructor(message: string, socketPath: string, opts: { cause?: unknown } = {}) {
    super(message, opts);
    this.socketPath = socketPath;
  }
}

/** The socket could not be connected to at all (absent, stale, no permission). */
export class QmpConnectError extends QmpError {
  readonly code: string | undefined;
  constructor(socketPath: string, code: string | undefined, waitedMs: number, cause?: unknown) {
    const why =
      code === 'ENOENT'
        ? 'the socket does not exist'
        : code === 'ECONNREFUSED'
          ? 'nobody is listening (stale socket of a qemu that died?)'
          : code === 'EACCES'
            ? 'permission denied (run as root?)'
            : (code ?? 'unknown error');
    const waited = waitedMs > 0 ? ` after retrying for ${formatMs(waitedMs)}` : '';
    super(`cannot connect to qemu's QMP socket ${socketPath}: ${why}${waited}; is qemu running for this pod?`, socketPath, {
      cause,
    });
    this.code = code;
  }
}

/** qemu answered a command with {"error": {...}}. */
export class QmpCommandError extends QmpError {
  /** QMP error class, e.g. "CommandNotFound", "GenericError", "DeviceNotFound". */
  readonly errorClass: string;
  /** qemu's own human-readable text; the spec says not to parse it. */
  readonly desc: string;
  readonly command: string;
  constructor(socketPath: string, command: string, errorClass: string, desc: string) {
    super(`qemu refused QMP command '${command}': ${oneLine(desc)} [${oneLine(errorClass)}]`, socketPath);
    this.errorClass = errorClass;
    this.desc = desc;
    this.command = command;
  }
}

/** Something qemu should have sent (answer, greeting, event, EOF) did not come in time. */
export class QmpTimeoutError extends QmpError {
  readonly timeoutMs: number;
  /** What was awaited: a command name, "greeting", an event list, or "close". */
  readonly waitingFor: string;
  constructor(socketPath: string, waitingFor: string, timeoutMs: number, message: string) {
    super(message, socketPath);
    this.timeoutMs = timeoutMs;
    this.waitingFor = waitingFor;
  }
}

/** The first characters of a message cut off by the end of the connection, and its length. */
export interface QmpTruncatedMessage {
  chars: number;
  /** At most TRUNCATED_EXCERPT_CHARS characters: qemu's bytes are not kept beyond that. */
  excerpt: string;
}

export const TRUNCATED_EXCERPT_CHARS = 80;

/**
 * The connection ended while something was outstanding. `byPeer` tells apart
 * "qemu went away" (exit, crash, SIGKILL) from "rkt closed it itself".
 */
export class QmpClosedError extends QmpError {
  readonly byPeer: boolean;
  /** Set when qemu's last message was cut off: it died while writing it. */
  readonly truncated: QmpTruncatedMessage | undefined;
  constructor(
    socketPath: string,
    byPeer: boolean,
    pending: string | undefined,
    extra: { cause?: unknown; truncated?: QmpTruncatedMessage } = {},
  ) {
    const what = pending === undefined ? '' : ` while waiting for ${pending}`;
    const cut = extra.truncated;
    // JSON.stringify keeps the excerpt on one line and shows what it really was.
    const mid = cut === undefined ? '' : `, in the middle of a message (${cut.chars} characters without a line end: ${JSON.stringify(cut.excerpt)}${cut.chars > cut.excerpt.length ? '...' : ''})`;
    const message = byPeer
      ? `qemu closed its QMP socket ${socketPath}${what}${mid}; the VM has exited or crashed (see the pod's qemu log)`
      : `the QMP connection to ${socketPath} was closed by rkt${what}`;
    super(message, socketPath, { cause: extra.cause });
    this.byPeer = byPeer;
    this.truncated = cut;
  }
}

/**
 * The peer broke the protocol (not JSON, not an object, no greeting). The
 * connection is closed because the stream cannot be resynchronised reliably.
 */
export class QmpProtocolError extends QmpError {
  constructor(socketPath: string, detail: string, cause?: unknown) {
    super(
      `unexpected data on QMP socket ${socketPath} (${oneLine(detail)}); is this really qemu's -qmp socket and not the serial console?`,
      socketPath,
      { cause },
    );
  }
}

/** Messages must stay on one line, printable: qemu descs and peer data could hold newlines or escape sequences. */
function oneLine(s: string): string {
  return printable(s.replace(/\s+/g, ' ').trim(), 200);
}
