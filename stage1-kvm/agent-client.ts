// Host side of `rkt enter` for the kvm stage1: run one command in a pod VM
// through the guest agent (guest/agent/, protocol in guest/agent/PROTOCOL.md).
//
// qemu exposes the guest's virtio-serial port "rkt.agent" as a unix socket:
//   -chardev socket,id=agent,path=<pod>/agent.sock,server=on,wait=off
//   -device virtserialport,chardev=agent,name=rkt.agent
// qemu serves one connection at a time, and so does the agent: a second
// `rkt enter` waits in the socket's backlog until the first one is done.
// Disconnecting ends the session: the agent kills the command.
//
// Run directly, this file is a small CLI for tests and debugging:
//   node dist/stage1-kvm/agent-client.js SOCKET APP [--tty] [--uid N] [--gid N]
//     [--groups G,G] [--cwd DIR] [--env NAME=VALUE]... -- COMMAND [ARG]...

import crypto from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RktError } from '../src/errors.js';
import {
  AgentExecError,
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

export * from './agent-protocol.js';

/** Where the session's stdio comes from and goes to (process.stdin/stdout/stderr for `rkt enter`). */
export interface AgentStdio {
  /** null: the command gets an immediate end of input. */
  stdin: NodeJS.ReadableStream | null;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface RunInGuestOptions {
  /** Host signals to pass on to the command's process group (e.g. SIGINT without a tty). */
  forwardSignals?: NodeJS.Signals[];
  /** Aborting disconnects, which makes the agent kill the command. */
  signal?: AbortSignal;
}

/** The agent socket is missing or refused, or the connection broke before the command's exit status arrived. */
export class AgentConnectionError extends RktError {}

type TtyReadStream = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
type TtyWriteStream = NodeJS.WritableStream & { isTTY?: boolean; rows?: number; columns?: number };

/**
 * Run req in the guest and resolve with its exit status (128 + signal number
 * if a signal killed it). Rejects with AgentExecError if the command could
 * not be started (its exitCode says why), AgentConnectionError if the pod's
 * agent cannot be reached or goes away, AgentProtocolError on garbage.
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

  return new Promise<number>((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    const decoder = new FrameDecoder();
    // bytes before our SESSION frame are a previous session's (PROTOCOL.md)
    let preamble: Buffer | null = Buffer.alloc(0);
    const cleanups: Array<() => void> = [];
    let finished = false;
    let gotExit = false;

    const finish = (err: Error | null, status = 0): void => {
      if (finished) return;
      finished = true;
      for (const c of cleanups.reverse()) c();
      if (err !== null) {
        sock.destroy();
        reject(err);
        return;
      }
      // let the frames written to stdout/stderr reach their destination first
      sock.end();
      resolve(status);
    };
    const send = (frame: Buffer): boolean => (sock.destroyed || finished ? true : sock.write(frame));

    if (opts.signal !== undefined) {
      const onAbort = (): void => finish(new AgentConnectionError('rkt enter: aborted; the command in the pod is killed'));
      if (opts.signal.aborted) {
        onAbort();
        return;
      }
      opts.signal.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => opts.signal?.removeEventListener('abort', onAbort));
    }

    sock.on('connect', () => {
      send(encodeFrame(FrameType.Exec, execPayload));
      pumpStdin();
      watchTerminal();
      forwardSignals();
    });

    sock.on('data', (data: Buffer) => {
      let chunk = data;
      if (preamble !== null) {
        preamble = Buffer.concat([preamble, chunk]);
        const start = findSessionStart(preamble, session);
        if (start < 0) {
          preamble = preamble.subarray(Math.max(0, preamble.length - 8)); // a marker may straddle chunks
          return;
        }
        chunk = preamble.subarray(start);
        preamble = null;
      }
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        finish(err as Error);
        return;
      }
      for (const f of frames) {
        if (finished) return;
        let m: GuestMessage;
        try {
          m = decodeGuestFrame(f);
        } catch (err) {
          finish(err as Error);
          return;
        }
        switch (m.type) {
          case 'SESSION':
            break; // only ours can follow our SESSION frame
          case 'STDOUT':
            stdio.stdout.write(m.data);
            break;
          case 'STDERR':
            stdio.stderr.write(m.data);
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
    });

    sock.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? `no guest agent socket at ${socketPath} (is the pod running?)`
          : `connection to the guest agent failed: ${err.message}`;
      finish(new AgentConnectionError(`rkt enter: ${why}`, { cause: err }));
    });
    sock.on('close', () => {
      if (!gotExit) finish(new AgentConnectionError('rkt enter: the pod closed the connection before the command exited (pod stopped?)'));
    });

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
          sock.once('drain', () => {
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

    function forwardSignals(): void {
      for (const name of opts.forwardSignals ?? []) {
        const signo = os.constants.signals[name];
        const handler = (): void => {
          send(encodeFrame(FrameType.Signal, Buffer.from([signo])));
        };
        process.on(name, handler);
        cleanups.push(() => process.removeListener(name, handler));
      }
    }
  });
}

// --- CLI --------------------------------------------------------------------------

function parseCli(args: string[]): { socketPath: string; req: ExecRequest } {
  const usage = 'usage: agent-client SOCKET APP [--tty] [--uid N] [--gid N] [--groups G,G] [--cwd DIR] [--env NAME=VALUE]... -- COMMAND [ARG]...';
  const dash = args.indexOf('--');
  if (dash < 2 || dash === args.length - 1) throw new RktError(usage, { exitCode: 2 });
  const [socketPath, app, ...flags] = args.slice(0, dash);
  const req: ExecRequest = { app, argv: args.slice(dash + 1), env: [] };
  const num = (v: string | undefined): number => {
    if (v === undefined || !/^\d+$/.test(v)) throw new RktError(usage, { exitCode: 2 });
    return Number(v);
  };
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i];
    if (f === '--tty') req.tty = true;
    else if (f === '--uid') req.uid = num(flags[++i]);
    else if (f === '--gid') req.gid = num(flags[++i]);
    else if (f === '--groups') req.supplementaryGids = (flags[++i] ?? '').split(',').filter(Boolean).map(num);
    else if (f === '--cwd') req.cwd = flags[++i];
    else if (f === '--env') req.env?.push(flags[++i] ?? '');
    else throw new RktError(`${usage}\nunknown option ${f}`, { exitCode: 2 });
  }
  if (!req.env?.some((e) => e.startsWith('PATH='))) req.env?.push('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  return { socketPath, req };
}

async function main(): Promise<void> {
  // ^C goes to the command (through the terminal with --tty, as SIGNAL
  // otherwise); SIGTERM and SIGHUP end the session: disconnecting makes the
  // agent kill the command, and a stuck guest cannot keep us alive.
  const abort = new AbortController();
  let endedBy: NodeJS.Signals | undefined;
  for (const sig of ['SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      endedBy = sig;
      abort.abort();
    });
  }
  try {
    const { socketPath, req } = parseCli(process.argv.slice(2));
    const status = await runInGuest(socketPath, req, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, {
      forwardSignals: req.tty === true ? [] : ['SIGINT'],
      signal: abort.signal,
    });
    process.exitCode = status;
  } catch (err) {
    if (!(err instanceof RktError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exitCode = endedBy === undefined ? err.exitCode : 128 + os.constants.signals[endedBy];
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) void main();
