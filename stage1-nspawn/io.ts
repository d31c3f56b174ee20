import fs from 'node:fs';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { PinnedFile } from '../src/util/pinned-file.js';

// The apps' standard streams, between the pod's units and rkt run. Each app
// unit opens FIFOs in the container's root (StandardOutput=file:/rkt/io/...;
// systemd opens them before it changes root or user); this process reads
// them and copies to its own stdout and stderr, so app output never mixes
// with systemd's or nspawn's messages, and reaches whatever rkt run's
// output is, a terminal, a pipe or a file.
//
// A FIFO reports end of file when its last writer closes, which would end
// the copy before the first app opened it, or between two apps. So we hold
// a write end of our own from the start and close it only when the pod is
// over: then the reader sees end of file as soon as every app's copy of the
// FIFO is gone, which is at once, the container's processes being dead.

/** Copies one FIFO to a stream until the pod is over. */
export class FifoCopy {
  private readonly reader: net.Socket;
  private holdFd: number | undefined;
  readonly done: Promise<void>;

  constructor(file: string, to: Writable) {
    // Both ends are opened through one pinned inode, never twice by name.
    const pinned = PinnedFile.open(file, 'fifo');
    let rfd: number;
    try {
      rfd = pinned.reopen(fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      // opening the write end cannot block: the read end is open
      this.holdFd = pinned.reopen(fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } finally {
      pinned.close();
    }
    this.reader = new net.Socket({ fd: rfd, readable: true, writable: false });
    this.done = new Promise((resolve) => {
      this.reader.once('end', resolve);
      this.reader.once('close', resolve);
      this.reader.once('error', () => resolve());
    });
    this.reader.pipe(to, { end: false });
  }

  /** The pod is over: let the copy end once everything written has been read. */
  finish(): void {
    if (this.holdFd === undefined) return;
    fs.closeSync(this.holdFd);
    this.holdFd = undefined;
  }

  destroy(): void {
    this.finish();
    this.reader.destroy();
  }
}

/**
 * Feeds a stream (rkt run's stdin) into a FIFO the app reads. O_RDWR never
 * blocks on a FIFO, and keeps the FIFO from reporting end of file to the app
 * before we close it. Our end is closed once our input has ended *and* the
 * app has opened the FIFO (it has been started): closed earlier, the pipe
 * and what is buffered in it would be gone, and the app's open would wait
 * for a writer forever.
 *
 * After that, systemd still opens the FIFO for the app unit's exit hook (a
 * unit's Exec* commands all get its StandardInput=), and an open for reading
 * waits for a writer. So a writer is briefly opened and closed now and then
 * until the pod ends: a waiting open goes through and reads end of file at
 * once, and so does a read the app might still make. Those writers are
 * opened through the FIFO pinned at the start, never by its name, which is
 * the pod's to change.
 */
export class FifoFeed {
  private readonly writer: net.Socket;
  /**
   * The FIFO, pinned before the pod starts. The pod can replace the name with
   * a symlink to any host file; the writers opened later must reach this
   * FIFO and nothing else.
   */
  private readonly fifo: PinnedFile;
  private inputEnded = false;
  private readerOpen = false;
  private pulse: NodeJS.Timeout | undefined;
  private destroyed = false;

  constructor(file: string, from: Readable) {
    this.fifo = PinnedFile.open(file, 'fifo');
    let fd: number;
    try {
      fd = this.fifo.reopen(fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    } catch (err) {
      this.fifo.close();
      throw err;
    }
    this.writer = new net.Socket({ fd, readable: false, writable: true });
    this.writer.on('error', () => undefined);
    from.pipe(this.writer, { end: false });
    from.once('end', () => {
      this.inputEnded = true;
      this.maybeEnd();
    });
  }

  /** The app has opened the FIFO: our input's end may now become its end of file. */
  readerStarted(): void {
    this.readerOpen = true;
    this.maybeEnd();
  }

  private maybeEnd(): void {
    if (!this.inputEnded || !this.readerOpen || this.pulse !== undefined || this.destroyed) return;
    // destroy once flushed: closing our descriptor is what the app sees as end of file
    this.writer.end(() => this.writer.destroy());
    this.pulse = setInterval(() => {
      try {
        fs.closeSync(this.fifo.reopen(fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
      } catch {
        // ENXIO: nobody is reading or waiting to
      }
    }, 50);
  }

  destroy(): void {
    this.destroyed = true;
    clearInterval(this.pulse);
    this.writer.destroy();
    this.fifo.close();
  }
}

/** Resolves when the copies have finished, or after `ms`, whichever is first. */
export async function drain(copies: readonly FifoCopy[], ms: number): Promise<void> {
  for (const c of copies) c.finish();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(copies.map((c) => c.done)), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
  for (const c of copies) c.destroy();
}
