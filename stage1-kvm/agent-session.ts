// A session with the kvm stage1's guest agent (guest/agent/, protocol in
// guest/agent/PROTOCOL.md): one connection to one of its ports, the first
// frame (EXEC, ATTACH or APP), then the guest's frames until the command
// exits, the attach ends or the caller gives up. agent-client.ts builds the
// requests of `rkt enter` and `rkt attach` on it; agent-app.ts a mutable
// pod's APP requests.
//
// qemu exposes the guest's virtio-serial port "rkt.agent" as a unix socket:
//   -chardev socket,id=agent,path=<pod>/agent.sock,server=on,wait=off
//   -device virtserialport,chardev=agent,name=rkt.agent
// and further ports rkt.agent.N as agent.N.sock. qemu serves one connection
// per socket, and the agent one session per port, all ports at once: host
// clients take a free port (agent-turn.ts). Disconnecting ends the session:
// the agent kills the command.
//
// Whatever holds the port in the guest is untrusted: a root app can kill
// the agent, and one that has taken the guest over can open the port and
// answer in its place. So every byte from it is decoded with limits
// (agent-protocol.ts), its output reaches the caller only as fast as the
// caller takes it, and no wait on it is unbounded: the answer to the first
// frame and the rest of a frame begun each have a deadline, and signals end
// the session (the first is passed on to the command, a second one more
// than a second later disconnects).

import net from 'node:net';
import os from 'node:os';
import { RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import type { FileLock } from '../src/util/lock.js';
import { AgentExecError, AgentProtocolError, FrameType, STDIN_CHUNK_BYTES, decodeGuestFrame, encodeFrame, encodeResize, findSessionStart, type GuestMessage } from './agent-protocol.js';
import { FrameDecoder } from './frame-decoder.js';
import { isMissing, takeTurn } from './agent-turn.js';
import { KVM_TIMEOUTS } from './config.js';

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
  /** How errors begin: the command the user ran (default "rkt enter"). */
  who?: string;
}

export interface AttachOptions extends Omit<RunInGuestOptions, 'forwardSignals'> {
  /** A byte of input that detaches (Ctrl-] for a terminal); the app keeps running. */
  detachKey?: number;
  /** The socket's server takes any number of clients (the nspawn relay), so no port is taken in turn. */
  anyClients?: boolean;
}

/** How an attach session ended: the user detached (key or abort), or the pod went away. */
export type AttachEnd = 'detached' | 'closed';

/** The agent socket is missing or refused, the guest did not answer in time, or the connection broke before the command's exit status arrived. */
export class AgentConnectionError extends RktError {}

/** A signal ended the session; exitCode is 128 + its number. */
export class AgentInterruptedError extends AgentConnectionError {}

type TtyReadStream = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
export type TtyWriteStream = NodeJS.WritableStream & { isTTY?: boolean; rows?: number; columns?: number };

/** A second signal within this of the first is the same one delivered twice (terminal and stage0 both send it). */
const SECOND_SIGNAL_MS = 1000;
/** After EXIT, how long the connection may take to close before it is dropped. */
const CLOSE_MS = 2000;

/** A decoding failure as the user reads it: who broke the rules, then how. */
function brokeProtocol(err: unknown, who: string): Error {
  if (!(err instanceof AgentProtocolError)) return err as Error;
  return new AgentProtocolError(`${who}: the pod's guest agent broke the protocol: ${err.message}`, { cause: err });
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

/** How a session ended: the command's exit status (exec), or how an attach ended. */
export interface SessionEnd {
  status: number;
  how: AttachEnd;
}

/**
 * Open a session on a free port of the agent (or on the one socket of a
 * server that takes any number of clients: opts.anyClients), send
 * `firstFrame`, whose session id is `session`, and relay stdio until it
 * ends. `kind` says what ends it: an exec session ends with the command's
 * EXIT, an attach session when the user detaches or the pod goes away.
 */
export function runSession(
  sockets: string | readonly string[],
  firstFrame: Buffer,
  session: number,
  tty: boolean,
  stdio: AgentStdio,
  opts: RunInGuestOptions & AttachOptions,
  kind: 'exec' | 'attach',
): Promise<SessionEnd> {
  const stdin = stdio.stdin as TtyReadStream | null;
  const stdout = stdio.stdout as TtyWriteStream;
  const socketPaths = typeof sockets === 'string' ? [sockets] : sockets;
  const answerMs = opts.answerTimeoutMs ?? KVM_TIMEOUTS.agentAnswerMs;
  const frameMs = opts.frameTimeoutMs ?? KVM_TIMEOUTS.agentFrameMs;
  const who = opts.who ?? 'rkt enter';

  return new Promise<SessionEnd>((resolve, reject) => {
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

    const finish = (err: Error | null, status = 0, how: AttachEnd = 'closed'): void => {
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
      const s = sock;
      if (s !== undefined) {
        const drop = setTimeout(() => s.destroy(), CLOSE_MS);
        s.once('close', () => clearTimeout(drop));
        s.end();
      }
      turn?.release();
      resolve({ status, how });
    };
    const send = (frame: Buffer): boolean => (sock === undefined || sock.destroyed || finished ? true : sock.write(frame));

    if (opts.signal !== undefined) {
      // an attach session lets go of the app; an enter session's command is killed
      const onAbort = (): void =>
        kind === 'attach' ? finish(null, 0, 'detached') : finish(new AgentConnectionError(`${who}: aborted; the command in the pod is killed`));
      if (opts.signal.aborted) {
        onAbort();
        return;
      }
      opts.signal.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => opts.signal?.removeEventListener('abort', onAbort));
    }
    handleSignals();

    const turnTaken = opts.anyClients
      ? Promise.resolve({ lock: undefined, socketPath: socketPaths[0]! })
      : takeTurn(socketPaths, { signal: stopWaiting.signal, ...(opts.onWait && { onWait: opts.onWait }) });
    turnTaken.then(
      (taken) => {
        if (taken === undefined) return; // finished while waiting
        if (finished) {
          taken.lock?.release();
          return;
        }
        turn = taken.lock;
        connect(taken.socketPath);
      },
      (err: unknown) => {
        const why = isMissing(err) ? `no guest agent socket at ${socketPaths[0]} (is the pod running?)` : `cannot take a port of the guest agent: ${(err as Error).message}`;
        finish(new AgentConnectionError(`${who}: ${why}`, { cause: err }));
      },
    );

    function connect(socketPath: string): void {
      log().debug(`${who}: talking to the guest agent on ${socketPath}`);
      const s = net.createConnection(socketPath);
      sock = s;
      answerTimer = setTimeout(
        () => finish(new AgentConnectionError(`${who}: the pod's guest agent did not answer within ${seconds(answerMs)}; it is not running (an app may have killed it) or the VM is stuck`)),
        answerMs,
      );
      s.on('connect', () => {
        send(firstFrame);
        pumpStdin();
        watchTerminal();
      });
      s.on('data', onData);
      s.on('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? `no guest agent socket at ${socketPath} (is the pod running?)`
            : `connection to the guest agent failed: ${err.message}`;
        finish(new AgentConnectionError(`${who}: ${why}`, { cause: err }));
      });
      s.on('close', () => {
        // an attach session ends with the pod; a command's ends with its EXIT
        if (kind === 'attach' && preamble === null) finish(null, 0, 'closed');
        else if (!gotExit) finish(new AgentConnectionError(`${who}: the pod closed the connection before the command exited (pod stopped?)`));
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
        finish(brokeProtocol(err, who));
        return;
      }
      for (const f of frames) {
        if (finished) return;
        let m: GuestMessage;
        try {
          m = decodeGuestFrame(f);
        } catch (err) {
          finish(brokeProtocol(err, who));
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
            finish(new AgentExecError(`${who}: ${m.message}`, { exitCode: m.status }));
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
        () => finish(new AgentConnectionError(`${who}: the pod's guest agent sent part of a frame and nothing for ${seconds(frameMs)}; giving up`)),
        frameMs,
      );
    }

    function pumpStdin(): void {
      if (stdin === null) {
        // an attach without stdin leaves the app's input alone
        if (kind === 'exec') send(encodeFrame(FrameType.StdinEof));
        return;
      }
      const onData = (data: Buffer | string): void => {
        let buf = typeof data === 'string' ? Buffer.from(data) : data;
        const cut = opts.detachKey === undefined ? -1 : buf.indexOf(opts.detachKey);
        if (cut >= 0) buf = buf.subarray(0, cut);
        let ok = true;
        for (let off = 0; off < buf.length; off += STDIN_CHUNK_BYTES) {
          ok = send(encodeFrame(FrameType.Stdin, buf.subarray(off, off + STDIN_CHUNK_BYTES))) && ok;
        }
        if (cut >= 0) {
          finish(null, 0, 'detached');
          return;
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
          finish(new AgentInterruptedError(`${who}: ${what}`, { exitCode: 128 + signo }));
        };
        process.on(name, handler);
        cleanups.push(() => process.removeListener(name, handler));
      }
    }
  });
}
