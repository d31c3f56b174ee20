import fs from 'node:fs';

// Reading the small files a pod directory holds (exit statuses, pids, the
// exit cause) the careful way: never through a symlink, never blocking on a
// FIFO or a device, never more than a few bytes. These files are written by
// the host, but a pod directory is a place a hostile pod once had a hand in,
// and `rkt list` reads every pod's: one bad file must not hang or flood it.

export class NotARegularFileError extends Error {
  constructor(file: string) {
    super(`${file} is not a regular file`);
  }
}

/** The first `max` bytes of a regular file, as text; throws ENOENT like readFileSync, ELOOP for a symlink. */
export function readSmallFile(file: string, max = 4096): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    if (!fs.fstatSync(fd).isFile()) throw new NotARegularFileError(file);
    const buf = Buffer.alloc(max);
    const n = fs.readSync(fd, buf, 0, max, 0);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}
