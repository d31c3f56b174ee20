// Host side of `rkt enter` for the kvm stage1: run one command in a pod VM
// through the guest agent (guest/agent/, protocol in guest/agent/PROTOCOL.md).
//
// qemu exposes the guest's virtio-serial port "rkt.agent" as a unix socket:
//   -chardev socket,id=agent,path=<pod>/agent.sock,server=on,wait=off
//   -device virtserialport,chardev=agent,name=rkt.agent
// qemu serves one connection at a time, and so does the agent: host
// clients take turns (agent-turn.ts). Disconnecting ends the session: the
// agent kills the command.
//
// Whatever holds the port in the guest is untrusted: a root app can kill
// the agent, and one that has taken the guest over can open the port and
// answer in its place. So every byte from it is decoded with limits
// (agent-protocol.ts), its output reaches the caller only as fast as the
// caller takes it, and no wait on it is unbounded: the answer to EXEC and
// the rest of a frame begun each have a deadline, and signals end the
// session (the first is passed on to the command, a second one more than a
// second later disconnects).
//
// agent-cli.ts is a small CLI on top of it, for tests and debugging.

import crypto from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { RktError } from '../src/errors.js';
import type { FileLock } from '../src/util/lock.js';
import {
  AgentExecError,
  AgentProtocolError,
  FrameDecoder,
  FrameType,
  STDIN_CHUNK_BYTES,
  decodeGuestFrame,
  encodeExec,
  encodeFrame,
  encodeResize,
  findSessionStart,
  type ExecRequest,
  type GuestMessage,
} from './agent-protocol.js';
import { isMissing, takeTurn } from './agent-turn.js';
import { KVM_TIMEOUTS } from './config.js';

export * from './agent-protocol.js';

/** Where the session's stdio comes from and goes to (process.stdin/stdout/stderr for `rkt enter`). */
export interface AgentStdio {
  /** null: the command gets an immediate end of input. */
  stdin: NodeJS.ReadableStream | null;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface RunInGuestOptions {
  /**
   * Host signals that end the session: the first is passed on to the
   * command's process group (e.g. SIGINT without a tty), a second one more
   * than a second later disconnects; before the command has started, the
   * first disconnects. Rejects with AgentInterruptedError.
   */
  forwardSignals?: NodeJS.Signals[];
  /** Aborting disconnects, which makes the agent kill the command. */
  signal?: AbortSignal;
  /** Called once if another host client is talking to the agent and this one waits for its turn. */
  onWait?: () => void;
  /** How long the guest may take to answer the EXEC (default KVM_TIMEOUTS.agentAnswerMs). */
  answerTimeoutMs?: number;
  /** How long a frame the guest has begun may stay incomplete while we read (default KVM_TIMEOUTS.agentFrameMs). */
  frameTimeoutMs?: number;
}

/** The agent socket is missing or refused, the guest did not answer in time, or the connection broke before the command's exit status arrived. */
export class AgentConnectionError extends RktError {}

/** A signal ended the session; exitCode is 128 + its number. */
export class AgentInterruptedError extends AgentConnectionError {}

type TtyReadStream = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
type TtyWriteStream = NodeJS.WritableStream & { isTTY?: boolean; rows?: number; columns?: number };

/** A second signal within this of the first is the same one delivered twice (terminal and stage0 both send it). */
const SECOND_SIGNAL_MS = 1000;
/** After EXIT, how long the connection may take to close before it is dropped. */
const CLOSE_MS = 2000;

/** A decoding failure as the user reads it: who broke the rules, then how. */
function brokeProtocol(err: unknown): Error {
  if (!(err instanceof AgentProtocolError)) return err as Error;
  return new AgentProtocolError(`rkt enter: the pod's guest agent broke the protocol: ${err.message}`, { cause: err });
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/**
 * Run req in the guest and resolve with its exit status (128 + signal number
 * if a signal killed it). Rejects with AgentExecError if the command could
 * not be started (its exitCode says why), AgentConnectionError if the pod's
 * agent cannot be reached, does not answer in time or goes away,
 * AgentInterruptedError if a signal ended the session, AgentProtocolError
 * on garbage.
 */
export function runInGuest(socketPath: string, req: ExecRequest, stdio: AgentStdio, opts: RunInGuestOptions = {}): Promise<number> {
  const stdin = stdio.stdin as TtyReadStream | null;
  const stdout = stdio.stdout as TtyWriteStream;
  const tty = req.tty === true;
  const request: ExecRequest = { ...req };
  if (tty && stdout.isTTY === true) {
    request.rows ??= stdout.rows;
    request.cols ??= stdout.columns;
  }
  const session = crypto.randomBytes(4).readUInt32BE(0);
  const execPayload = encodeExec(request, session); // throws RangeError before connecting
  const answerMs = opts.answerTimeoutMs ?? KVM_TIMEOUTS.agentAnswerMs;
  const frameMs = opts.frameTimeoutMs ?? KVM_TIMEOUTS.agentFrameMs;

  return new Promise<number>((resolve, reject) => {
    const decoder = new FrameDecoder();
    // bytes before our SESSION frame are a previous session's (PROTOCOL.md)
    let preamble: Buffer | null = Buffer.alloc(0);
    const cleanups: Array<() => void> = [];
    const stopWaiting = new AbortController(); // ends the wait for the turn
    let sock: net.Socket | undefined;
    let turn: FileLock | undefined;
    let finished = false;
    let gotExit = false;
    let firstSignalAt: number | undefined;
    let answerTimer: NodeJS.Timeout | undefined;
    let frameTimer: NodeJS.Timeout | undefined;
    const blocked = new Set<NodeJS.WritableStream>(); // outputs we wait to drain

    const finish = (err: Error | null, status = 0): void => {
      if (finished) return;
      finished = true;
      stopWaiting.abort();
      clearTimeout(answerTimer);
      clearTimeout(frameTimer);
      for (const c of cleanups.reverse()) c();
      if (err !== null) {
        sock?.destroy();
        turn?.release();
        reject(err);
        return;
      }
      // an orderly end; the connection gets a moment to close, not more
      const s = sock!;
      const drop = setTimeout(() => s.destroy(), CLOSE_MS);
      s.once('close', () => clearTimeout(drop));
      s.end();
      turn?.release();
      resolve(status);
    };
    const send = (frame: Buffer): boolean => (sock === undefined || sock.destroyed || finished ? true : sock.write(frame));

    if (opts.signal !== undefined) {
      const onAbort = (): void => finish(new AgentConnectionError('rkt enter: aborted; the command in the pod is killed'));
      if (opts.signal.aborted) {
        onAbort();
        return;
      }
      opts.signal.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => opts.signal?.removeEventListener('abort', onAbort));
    }
    handleSignals();

    takeTurn(socketPath, { signal: stopWaiting.signal, ...(opts.onWait && { onWait: opts.onWait }) }).then(
      (lock) => {
        if (lock === undefined) return; // finished while waiting
        if (finished) {
          lock.release();
          return;
        }
        turn = lock;
        connect();
      },
      (err: unknown) => {
        const why = isMissing(err) ? `no guest agent socket at ${socketPath} (is the pod running?)` : `cannot take the turn to talk to the guest agent: ${(err as Error).message}`;
        finish(new AgentConnectionError(`rkt enter: ${why}`, { cause: err }));
      },
    );

    function connect(): void {
      const s = net.createConnection(socketPath);
      sock = s;
      answerTimer = setTimeout(
        () => finish(new AgentConnectionError(`rkt enter: the pod's guest agent did not answer within ${seconds(answerMs)}; it is not running (an app may have killed it) or the VM is stuck`)),
        answerMs,
      );
      s.on('connect', () => {
        send(encodeFrame(FrameType.Exec, execPayload));
        pumpStdin();
        watchTerminal();
      });
      s.on('data', onData);
      s.on('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? `no guest agent socket at ${socketPath} (is the pod running?)`
            : `connection to the guest agent failed: ${err.message}`;
        finish(new AgentConnectionError(`rkt enter: ${why}`, { cause: err }));
      });
      s.on('close', () => {
        if (!gotExit) finish(new AgentConnectionError('rkt enter: the pod closed the connection before the command exited (pod stopped?)'));
      });
    }

    function onData(data: Buffer): void {
      let chunk = data;
      if (preamble !== null) {
        preamble = Buffer.concat([preamble, chunk]);
        const start = findSessionStart(preamble, session);
        if (start < 0) {
          preamble = preamble.subarray(Math.max(0, preamble.length - 8)); // a marker may straddle chunks
          return;
        }
        clearTimeout(answerTimer);
        chunk = preamble.subarray(start);
        preamble = null;
      }
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        finish(brokeProtocol(err));
        return;
      }
      for (const f of frames) {
        if (finished) return;
        let m: GuestMessage;
        try {
          m = decodeGuestFrame(f);
        } catch (err) {
          finish(brokeProtocol(err));
          return;
        }
        switch (m.type) {
          case 'SESSION':
            break; // only ours can follow our SESSION frame
          case 'STDOUT':
            output(stdio.stdout, m.data);
            break;
          case 'STDERR':
            output(stdio.stderr, m.data);
            break;
          case 'EXIT':
            gotExit = true;
            finish(null, m.status);
            break;
          case 'ERROR':
            finish(new AgentExecError(`rkt enter: ${m.message}`, { exitCode: m.status }));
            break;
        }
      }
      watchFrame();
    }

    // Back-pressure: the guest's output is read no faster than the caller takes it.
    function output(stream: NodeJS.WritableStream, data: Buffer): void {
      if (stream.write(data) || blocked.has(stream)) return;
      blocked.add(stream);
      sock?.pause();
      const onDrain = (): void => {
        blocked.delete(stream);
        if (blocked.size > 0 || finished) return;
        sock?.resume();
        watchFrame();
      };
      stream.once('drain', onDrain);
      cleanups.push(() => stream.removeListener('drain', onDrain));
    }

    // A frame begun must be completed in time while we are reading; a guest
    // that stops mid-frame would otherwise hold the session forever.
    function watchFrame(): void {
      clearTimeout(frameTimer);
      if (finished || preamble !== null || decoder.buffered === 0 || blocked.size > 0) return;
      frameTimer = setTimeout(
        () => finish(new AgentConnectionError(`rkt enter: the pod's guest agent sent part of a frame and nothing for ${seconds(frameMs)}; giving up`)),
        frameMs,
      );
    }

    function pumpStdin(): void {
      if (stdin === null) {
        send(encodeFrame(FrameType.StdinEof));
        return;
      }
      const onData = (data: Buffer | string): void => {
        const buf = typeof data === 'string' ? Buffer.from(data) : data;
        let ok = true;
        for (let off = 0; off < buf.length; off += STDIN_CHUNK_BYTES) {
          ok = send(encodeFrame(FrameType.Stdin, buf.subarray(off, off + STDIN_CHUNK_BYTES))) && ok;
        }
        // back-pressure: the guest's pipe is full, or qemu is slow
        if (!ok) {
          stdin.pause();
          sock?.once('drain', () => {
            if (!finished) stdin.resume();
          });
        }
      };
      const onEnd = (): void => {
        send(encodeFrame(FrameType.StdinEof));
      };
      if (tty && stdin.isTTY === true && typeof stdin.setRawMode === 'function') {
        // keystrokes (^C, ^D, arrows) go to the guest's terminal untranslated
        stdin.setRawMode(true);
        cleanups.push(() => stdin.setRawMode?.(false));
      }
      // an unreadable input (EIO on a hung-up terminal) ends it, it does not fail the session
      const onError = onEnd;
      stdin.on('data', onData);
      stdin.on('end', onEnd);
      stdin.on('error', onError);
      stdin.resume();
      cleanups.push(() => {
        stdin.removeListener('data', onData);
        stdin.removeListener('end', onEnd);
        stdin.removeListener('error', onError);
        // let node exit: a paused stdin no longer holds the event loop
        stdin.pause();
      });
    }

    function watchTerminal(): void {
      if (!tty || stdout.isTTY !== true) return;
      const onResize = (): void => {
        if (stdout.rows !== undefined && stdout.columns !== undefined) send(encodeFrame(FrameType.Resize, encodeResize(stdout.rows, stdout.columns)));
      };
      stdout.on('resize', onResize);
      cleanups.push(() => stdout.removeListener('resize', onResize));
    }

    function handleSignals(): void {
      for (const name of opts.forwardSignals ?? []) {
        const signo = os.constants.signals[name];
        const handler = (): void => {
          const now = Date.now();
          const started = preamble === null;
          if (started && (firstSignalAt === undefined || now - firstSignalAt < SECOND_SIGNAL_MS)) {
            firstSignalAt ??= now;
            send(encodeFrame(FrameType.Signal, Buffer.from([signo])));
            return;
          }
          const what = started ? `${name} again: disconnected; the agent kills the command` : `${name} before the command started: gave up`;
          finish(new AgentInterruptedError(`rkt enter: ${what}`, { exitCode: 128 + signo }));
        };
        process.on(name, handler);
        cleanups.push(() => process.removeListener(name, handler));
      }
    }
  });
}
