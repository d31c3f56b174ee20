import fs from 'node:fs';
import net from 'node:net';

// The host end of the pod's output: the apps' stdout and stderr arrive on
// qemu's pipe chardevs (FIFOs in the pod directory), and the guest console
// is logged by qemu to console.log, which --debug follows on stderr.

/**
 * Copy what the guest writes on FIFO `file` to `dest` until qemu, the only
 * writer, has exited and everything it wrote has been read. Open it only
 * once qemu has opened it (it has when it answers on QMP): a FIFO without
 * a writer reads as end of file.
 */
export function pipeFifo(file: string, dest: NodeJS.WritableStream): Promise<void> {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const sock = new net.Socket({ fd, readable: true, writable: false });
  sock.pipe(dest, { end: false });
  // Whoever reads our output went away (`rkt run ... | head`): keep draining
  // the FIFO, so the guest never blocks on a full port, and drop the rest.
  dest.once('error', () => {
    sock.unpipe(dest);
    sock.resume();
  });
  return new Promise((resolve) => {
    sock.once('end', () => resolve());
    sock.once('close', () => resolve());
    sock.once('error', () => resolve());
  });
}

/** Follows a growing file (qemu's console log) and copies new bytes to `dest`. */
export class FileFollower {
  private pos = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly file: string,
    private readonly dest: NodeJS.WritableStream,
    private readonly intervalMs = 50,
  ) {}

  start(): this {
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    return this;
  }

  /** Copy what is left and stop. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.poll();
  }

  private poll(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.file, 'r');
    } catch {
      // not created yet: the next poll will try again
      return;
    }
    try {
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, this.pos);
        if (n <= 0) break;
        this.pos += n;
        this.dest.write(Buffer.from(buf.subarray(0, n)));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** The last `n` non-empty lines of a text file ("" if it does not exist), without terminal control characters. */
export function lastLines(file: string, n: number): string[] {
  let text: string;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      text = buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return [];
  }
  return text
    .split(/\r?\n|\r/)
    // eslint-disable-next-line no-control-regex
    .map((l) => l.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '').trimEnd())
    .filter((l) => l.trim() !== '')
    .slice(-n);
}
