// Host access to files in a tree a pod can write (its stage1 rootfs). Once
// the pod runs, whatever is at a path there may be the pod's: a symlink to
// any host file, a device node, a FIFO that blocks. Opening such a path by
// name acts on that. So a file is pinned once: opened with O_PATH|O_NOFOLLOW,
// which opens nothing (no device's open, no wait on a FIFO), and checked
// with fstat. Every real open then goes through /proc/self/fd/N, which
// reaches the pinned inode whatever the name has become.

import fs from 'node:fs';
import { RktError } from '../errors.js';

// Linux's O_PATH (the same on every architecture Node runs on); Node does not export it.
const O_PATH = 0o10000000;

export type PinnedKind = 'fifo' | 'file';

/** A path that is not the kind of file the host put there: refused rather than opened. */
export class UnexpectedFileError extends RktError {}

export class PinnedFile {
  private fd: number | undefined;

  private constructor(
    fd: number,
    readonly file: string,
  ) {
    this.fd = fd;
  }

  /**
   * Pin `file`, which must be of `kind` (a symlink never is). With `within`,
   * the file must also lie under that directory once every parent symlink is
   * resolved: a parent swapped for a symlink cannot lead elsewhere.
   */
  static open(file: string, kind: PinnedKind, opts: { within?: string } = {}): PinnedFile {
    const fd = fs.openSync(file, O_PATH | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd);
      const ok = kind === 'fifo' ? st.isFIFO() : st.isFile();
      if (!ok) throw new UnexpectedFileError(`${file} is ${describe(st)}, not the ${kind === 'fifo' ? 'FIFO' : 'regular file'} expected there; refusing to open it`);
      if (opts.within !== undefined) {
        const real = fs.readlinkSync(`/proc/self/fd/${fd}`);
        const root = fs.realpathSync(opts.within);
        if (!real.startsWith(root.endsWith('/') ? root : `${root}/`)) {
          throw new UnexpectedFileError(`${file} leads to ${real}, outside ${opts.within}; refusing to open it`);
        }
      }
      return new PinnedFile(fd, file);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** A new open file description of the pinned inode, with open(2) `flags`. */
  reopen(flags: number): number {
    if (this.fd === undefined) throw new Error(`${this.file} is no longer pinned`);
    return fs.openSync(`/proc/self/fd/${this.fd}`, flags);
  }

  close(): void {
    if (this.fd === undefined) return;
    fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/**
 * The content of a small regular file, read without following a symlink to
 * it (or, with `within`, out of that tree), without blocking on a FIFO or
 * opening a device, and refused above `maxBytes`. For files in a tree a pod
 * can write, and for the small files of a pod directory, which `rkt list`
 * reads for every pod: one bad file must not hang or flood it.
 */
export function readPinned(file: string, within: string | undefined, maxBytes: number): string {
  const pinned = PinnedFile.open(file, 'file', within === undefined ? {} : { within });
  try {
    const fd = pinned.reopen(fs.constants.O_RDONLY);
    try {
      // Read to one byte past the limit: the file may grow while it is read. The buffer
      // starts at the file's size (a limit-sized one, zero-filled per file, was most of
      // `rkt list`'s time over many pods) and grows up to that byte.
      let buf = Buffer.allocUnsafe(Math.min(maxBytes + 1, fs.fstatSync(fd).size + 1));
      let n = 0;
      for (;;) {
        if (n === buf.length) {
          if (n > maxBytes) break;
          const bigger = Buffer.allocUnsafe(Math.min(maxBytes + 1, n * 2));
          buf.copy(bigger, 0, 0, n);
          buf = bigger;
        }
        const got = fs.readSync(fd, buf, n, buf.length - n, null);
        if (got === 0) break;
        n += got;
      }
      if (n > maxBytes) throw new UnexpectedFileError(`${file} is larger than the ${maxBytes} bytes expected; refusing to read it`);
      return buf.toString('utf8', 0, n);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    pinned.close();
  }
}

function describe(st: fs.Stats): string {
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device node';
  if (st.isSocket()) return 'a socket';
  return 'a regular file';
}
