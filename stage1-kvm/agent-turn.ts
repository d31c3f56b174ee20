import { isErrno, LockBusyError } from '../src/errors.js';
import { FileLock } from '../src/util/lock.js';

// Host clients of a pod's guest agent take turns, by a lock next to its
// socket. qemu serves one client on the socket at a time and leaves the
// next in the listen backlog, where it cannot tell "waiting for the other
// session to end" from "the guest does not answer". With the turn taken
// first, the first wait is on another host process (it ends when that
// one's session does, or by a signal), and once a client holds the turn,
// qemu accepts it at once: the time until the guest answers is the guest's
// alone, and agent-client.ts bounds it.

const POLL_MS = 100;

export function agentLockPath(socketPath: string): string {
  return `${socketPath}.lock`;
}

export interface TurnOptions {
  /** Stop waiting: resolves undefined. */
  signal?: AbortSignal;
  /** Called once if another client holds the turn. */
  onWait?: () => void;
}

/**
 * The turn to talk to the agent behind socketPath, once no other host
 * client has it; release() it when the session is over (the kernel does
 * if the process dies). Undefined if aborted first.
 */
export async function takeTurn(socketPath: string, opts: TurnOptions = {}): Promise<FileLock | undefined> {
  let waited = false;
  for (;;) {
    if (opts.signal?.aborted) return undefined;
    try {
      return FileLock.acquire(agentLockPath(socketPath), 'exclusive', { wait: false });
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
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
