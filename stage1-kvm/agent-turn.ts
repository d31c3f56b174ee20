import { isErrno, LockBusyError } from '../src/errors.js';
import { FileLock } from '../src/util/lock.js';

// Host clients of a pod's guest agent share its ports, by a lock next to
// each port's socket. The agent serves a session on every port at once, but
// qemu serves one client per socket and leaves the next in the listen
// backlog, where it cannot tell "waiting for the other session to end" from
// "the guest does not answer". So a client takes a free port's lock first,
// and waits only when every port is in use: that wait is on other host
// processes (it ends when one of their sessions does, or by a signal), and
// once a client holds a port, qemu accepts it at once: the time until the
// guest answers is the guest's alone, and agent-session.ts bounds it.

const POLL_MS = 100;

export function agentLockPath(socketPath: string): string {
  return `${socketPath}.lock`;
}

export interface TurnOptions {
  /** Stop waiting: resolves undefined. */
  signal?: AbortSignal;
  /** Called once if other clients hold every port. */
  onWait?: () => void;
}

export interface Turn {
  lock: FileLock;
  /** The socket of the port this client may use. */
  socketPath: string;
}

/**
 * One of the agent's ports (socketPaths, tried in order) that no other
 * host client is using; release() its lock when the session is over (the
 * kernel does if the process dies). Undefined if aborted first.
 */
export async function takeTurn(socketPaths: readonly string[], opts: TurnOptions = {}): Promise<Turn | undefined> {
  let waited = false;
  for (;;) {
    if (opts.signal?.aborted) return undefined;
    for (const socketPath of socketPaths) {
      try {
        return { lock: FileLock.acquire(agentLockPath(socketPath), 'exclusive', { wait: false }), socketPath };
      } catch (err) {
        if (!(err instanceof LockBusyError)) throw err;
      }
    }
    if (!waited) {
      waited = true;
      opts.onWait?.();
    }
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, POLL_MS);
      opts.signal?.addEventListener('abort', done, { once: true });
    });
  }
}

/** Whether err says the socket's directory is gone (the pod was removed). */
export function isMissing(err: unknown): boolean {
  return isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR');
}
