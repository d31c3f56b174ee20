import fs from 'node:fs';
import { createRequire } from 'node:module';
import { LockBusyError, isErrno } from '../errors.js';

// Advisory flock(2) locks: the kernel releases them when the last descriptor
// closes, including when the holder is killed, so a crash never leaves a
// stale lock behind. Node has no flock, hence the small fs-ext binding.
const require = createRequire(import.meta.url);
const fsExt = require('fs-ext') as { flockSync(fd: number, flags: 'sh' | 'ex' | 'shnb' | 'exnb' | 'un'): void };

export type LockMode = 'shared' | 'exclusive';

export class FileLock {
  private released = false;
  private constructor(readonly path: string, readonly fd: number) {}

  /** Open (creating a regular file if needed) and lock. A directory is locked as itself. */
  static acquire(path: string, mode: LockMode, opts: { wait?: boolean; create?: boolean; what?: string } = {}): FileLock {
    const wait = opts.wait ?? true;
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (err) {
      if (!(opts.create ?? true) || !isErrno(err, 'ENOENT')) throw err;
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_CREAT, 0o644);
    }
    const flag = mode === 'shared' ? 'sh' : 'ex';
    try {
      fsExt.flockSync(fd, wait ? flag : (`${flag}nb` as 'shnb' | 'exnb'));
    } catch (err) {
      fs.closeSync(fd);
      if (isErrno(err, 'EWOULDBLOCK') || isErrno(err, 'EAGAIN')) {
        throw new LockBusyError(`${opts.what ?? path} is locked by another process; try again when it has finished`);
      }
      throw err;
    }
    return new FileLock(path, fd);
  }

  /** Non-blocking probe: is an exclusive lock held by someone else right now? */
  static isHeld(path: string): boolean {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return false;
      throw err;
    }
    try {
      fsExt.flockSync(fd, 'shnb');
      return false;
    } catch (err) {
      if (isErrno(err, 'EWOULDBLOCK') || isErrno(err, 'EAGAIN')) return true;
      throw err;
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Change the mode of a held lock (flock conversion is not atomic, as in rkt). */
  convert(mode: LockMode, wait = true): void {
    const flag = mode === 'shared' ? 'sh' : 'ex';
    fsExt.flockSync(this.fd, wait ? flag : (`${flag}nb` as 'shnb' | 'exnb'));
  }

  /** Idempotent: a second release must not close a descriptor that has since been reused. */
  release(): void {
    if (this.released) return;
    this.released = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed: nothing to release
    }
  }
}

/** Run fn while holding the lock; release it however fn ends. */
export async function withLock<T>(path: string, mode: LockMode, fn: () => Promise<T> | T, what?: string): Promise<T> {
  const lock = FileLock.acquire(path, mode, { what });
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
