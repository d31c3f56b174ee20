import net from 'node:net';
import { RktError } from '../src/errors.js';
import { socketPath } from './pod-files.js';

// A terminal connected to the guest's serial console (qemu's console.sock):
// `rkt run --interactive` gives it to the pod's one app, `rkt attach`
// connects to a running pod and detaches on Ctrl-] without stopping it.
// qemu serves one client per socket: a second attach waits until the first
// one detaches.

/** Ctrl-], as telnet and rkt's own attach use it. */
export const DETACH_KEY = 0x1d;

type TtyIn = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

export class ConsoleError extends RktError {}

export interface ConsoleSession {
  /** Resolves when the session ends: "detached" (the user pressed the key), "closed" (qemu went away), or "ended" (input ended). */
  done: Promise<'detached' | 'closed' | 'ended'>;
  close(): void;
}

export interface ConsoleOptions {
  stdin: NodeJS.ReadableStream | null;
  stdout: NodeJS.WritableStream;
  /** A byte that ends the session without touching the guest. */
  detachKey?: number;
  /** How long to keep retrying while the socket does not exist yet. */
  retryMs?: number;
}

function connectOnce(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(path);
    s.once('connect', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function connectRetry(path: string, retryMs: number): Promise<net.Socket> {
  const end = Date.now() + retryMs;
  for (;;) {
    try {
      return await connectOnce(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() >= end) {
        const why = code === 'ENOENT' || code === 'ECONNREFUSED' ? 'the pod is not running (no console socket)' : (err as Error).message;
        throw new ConsoleError(`cannot connect to the pod's console ${path}: ${why}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

export async function connectConsole(podDir: string, opts: ConsoleOptions): Promise<ConsoleSession> {
  const sock = await connectRetry(socketPath(podDir, 'console'), opts.retryMs ?? 0);
  const stdin = opts.stdin as TtyIn | null;
  let settle!: (r: 'detached' | 'closed' | 'ended') => void;
  const done = new Promise<'detached' | 'closed' | 'ended'>((r) => (settle = r));
  const raw = stdin?.isTTY === true && typeof stdin.setRawMode === 'function';
  const onData = (d: Buffer | string): void => {
    const buf = typeof d === 'string' ? Buffer.from(d) : d;
    const k = opts.detachKey === undefined ? -1 : buf.indexOf(opts.detachKey);
    if (k === -1) {
      sock.write(buf);
      return;
    }
    if (k > 0) sock.write(buf.subarray(0, k));
    finish('detached');
  };
  const onEnd = (): void => finish('ended');
  let finished = false;
  function finish(r: 'detached' | 'closed' | 'ended'): void {
    if (finished) return;
    finished = true;
    if (stdin) {
      stdin.removeListener('data', onData);
      stdin.removeListener('end', onEnd);
      if (raw) stdin.setRawMode?.(false);
      stdin.pause();
    }
    sock.unpipe(opts.stdout);
    sock.destroy();
    settle(r);
  }
  // keystrokes (^C, ^D, arrows) go to the guest untranslated
  if (raw) stdin.setRawMode?.(true);
  sock.pipe(opts.stdout, { end: false });
  sock.on('close', () => finish('closed'));
  sock.on('error', () => finish('closed'));
  if (stdin) {
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    stdin.resume();
  }
  return { done, close: () => finish('ended') };
}
