import fs from 'node:fs';
import net from 'node:net';
import { capLine, sanitizeText } from '../src/util/untrusted-text.js';

// The host end of the pod's output: the apps' stdout and stderr arrive on
// qemu's pipe chardevs (FIFOs in the pod directory) and are copied as they
// are (they are the apps' output, which the user asked for); the logs
// (the console's, qemu's) are read back through lastLines, sanitised.

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

/** How much of the end of a log lastLines reads. */
const TAIL_BYTES = 64 * 1024;

function tailOf(file: string, want: number): { buf: Buffer; whole: boolean } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    // no such log (yet): nothing to show
    return { buf: Buffer.alloc(0), whole: true };
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, want);
    const buf = Buffer.alloc(len);
    const n = fs.readSync(fd, buf, 0, len, size - len);
    return { buf: buf.subarray(0, n), whole: len === size };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The last `n` non-empty lines of a log, or of several read as one (oldest
 * first; missing ones are skipped), as printable text: guest and qemu text
 * goes through the untrusted-text filter, and each line is capped.
 */
export function lastLines(files: string | string[], n: number): string[] {
  const parts: Buffer[] = [];
  let want = TAIL_BYTES;
  let whole = true;
  for (const f of [files].flat().reverse()) {
    const t = tailOf(f, want);
    parts.unshift(t.buf);
    want -= t.buf.length;
    whole = t.whole;
    if (!whole) break;
  }
  let lines = sanitizeText(Buffer.concat(parts)).split('\n');
  // the first line of a log read from its middle is a fragment: shown only if it is all there is
  if (!whole && lines.slice(1).some((l) => l.trim() !== '')) lines = lines.slice(1);
  return lines
    .map((l) => capLine(l.replace(/\t/g, ' ').trimEnd()))
    .filter((l) => l.trim() !== '')
    .slice(-n);
}
