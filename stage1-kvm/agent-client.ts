// Host side of `rkt enter` and `rkt attach` for the kvm stage1: run one
// command in a pod VM, or connect to an app's own streams, through the guest
// agent. The requests are built here; the session that carries them, with
// its limits, deadlines and signals, is agent-session.ts.
//
// agent-cli.ts is a small CLI on top of it, for tests and debugging.

import crypto from 'node:crypto';
import { FrameType, encodeAttach, encodeExec, encodeFrame, type AttachRequest, type ExecRequest } from './agent-protocol.js';
import { runSession, type AgentStdio, type AttachEnd, type AttachOptions, type RunInGuestOptions, type TtyWriteStream } from './agent-session.js';

export * from './agent-protocol.js';
export { AgentConnectionError, AgentInterruptedError, type AgentStdio, type AttachEnd, type AttachOptions, type RunInGuestOptions } from './agent-session.js';

/** A new session's id, and the request with the caller's terminal size when it gives the session a terminal. */
function sessionOf<R extends { rows?: number; cols?: number }>(req: R, tty: boolean, stdout: NodeJS.WritableStream): { request: R; session: number } {
  const out = stdout as TtyWriteStream;
  const request: R = { ...req };
  if (tty && out.isTTY === true) {
    request.rows ??= out.rows;
    request.cols ??= out.columns;
  }
  return { request, session: crypto.randomBytes(4).readUInt32BE(0) };
}

/**
 * Run req in the guest and resolve with its exit status (128 + signal number
 * if a signal killed it). Rejects with AgentExecError if the command could
 * not be started (its exitCode says why), AgentConnectionError if the pod's
 * agent cannot be reached, does not answer in time or goes away,
 * AgentInterruptedError if a signal ended the session, AgentProtocolError
 * on garbage.
 */
export function runInGuest(sockets: string | readonly string[], req: ExecRequest, stdio: AgentStdio, opts: RunInGuestOptions = {}): Promise<number> {
  const { request, session } = sessionOf(req, req.tty === true, stdio.stdout);
  const first = encodeFrame(FrameType.Exec, encodeExec(request, session)); // throws RangeError before connecting
  return runSession(sockets, first, session, req.tty === true, stdio, opts, 'exec').then((end) => end.status);
}

/**
 * Connect stdio to an app's own streams (its --stdin/--stdout/--stderr in
 * stream or tty mode) until the user detaches or the pod goes away; the app
 * keeps running either way. `tty`: the app's streams are a terminal (raw
 * input, resizes passed on). Rejects as runInGuest does; AgentExecError
 * when the app has no such streams or another session holds them.
 */
export function attachToApp(sockets: string | readonly string[], req: AttachRequest, tty: boolean, stdio: AgentStdio, opts: AttachOptions = {}): Promise<AttachEnd> {
  const { request, session } = sessionOf(req, tty, stdio.stdout);
  const first = encodeFrame(FrameType.Attach, encodeAttach(request, session));
  return runSession(sockets, first, session, tty, stdio, opts, 'attach').then((end) => end.how);
}
