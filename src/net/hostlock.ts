import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LockBusyError } from '../errors.js';
import { FileLock } from '../util/lock.js';
import { NetworkSetupError } from './errors.js';

// One host-wide lock around everything that touches state shared between
// pods: CNI ADD/DEL (the portmap plugin's shared chains), the sweep of
// leftover rules and the removal of shared chains and empty IPAM
// directories. Without it, a pod tearing down could delete a chain another
// pod's portmap has just made and is about to fill. flock(2) is released by
// the kernel if the holder dies. Polled without blocking, so a waiting
// process keeps its event loop; serialised within the process first,
// because a second flock from the same process would wait on itself.

export const NET_LOCK_PATH = '/run/rkt/net.lock';
const POLL_MS = 25;
const GIVE_UP_MS = 120_000;

let queue: Promise<unknown> = Promise.resolve();

async function acquire(lockPath: string): Promise<FileLock> {
  fs.mkdirSync(path.dirname(lockPath), { recursive: true, mode: 0o755 });
  const started = Date.now();
  for (;;) {
    try {
      return FileLock.acquire(lockPath, 'exclusive', { wait: false, what: 'the host network lock' });
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
      if (Date.now() - started > GIVE_UP_MS) {
        throw new NetworkSetupError(`another process has held ${lockPath} for over ${GIVE_UP_MS / 1000}s; is a CNI plugin stuck? (see the processes holding it with: fuser ${lockPath})`);
      }
      await sleep(POLL_MS);
    }
  }
}

/** Run fn holding the host network lock. */
export function withNetLock<T>(fn: () => Promise<T>, lockPath = NET_LOCK_PATH): Promise<T> {
  const run = queue.then(async () => {
    const lock = await acquire(lockPath);
    try {
      return await fn();
    } finally {
      lock.release();
    }
  });
  queue = run.catch(() => undefined);
  return run;
}
