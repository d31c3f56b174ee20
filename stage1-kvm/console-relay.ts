import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { log } from '../src/log.js';
import { phase } from '../src/util/phase-trace.js';
import { TextFilter } from '../src/util/untrusted-text.js';
import { BootMarks } from './boot-marks.js';
import { ConsoleLog } from './console-log.js';
import { podFile, socketPath } from './pod-files.js';

// The host end of the guest's serial console, in the run entrypoint. qemu's
// serial chardev is one end of a socket pair the run entrypoint made
// (qemu.ts); this relay reads it for as long as qemu runs, so a guest that
// prints without end fills no file and no buffer:
//
// - everything goes, filtered to printable text, into the capped console
//   log (console-log.ts) and, with --debug, to stderr;
// - the raw bytes go to the one client of console.sock (`rkt attach`,
//   `--interactive`), whose keystrokes go back to the guest. The user asked
//   for a raw terminal there; it is the one place guest bytes reach a
//   terminal unfiltered.
//
// Like qemu's own socket chardev it replaces, console.sock serves one client
// at a time; later ones wait their turn (at most MAX_WAITING of them). When
// qemu exits, its end of the pair closes: the log is finished, the clients
// are disconnected and the socket removed. If the run entrypoint dies, the
// pair dies with it and qemu (killed by its parent-death signal anyway)
// drops what the guest prints.

/** Clients of console.sock that may wait while another is connected. */
const MAX_WAITING = 4;
/** Console text --debug may leave queued on a slow stderr before it skips output instead. */
const DEBUG_BACKLOG_BYTES = 256 * 1024;

export interface ConsoleRelayOptions {
  /** --debug: the filtered console text goes here too. */
  debug?: NodeJS.WritableStream & { writableLength?: number };
}

export class ConsoleRelay {
  private readonly log: ConsoleLog;
  private readonly filter = new TextFilter();
  private readonly boot = new BootMarks();
  /** The console's copy on stderr (--debug) ends mid-line. */
  private midLine = false;
  private readonly server: net.Server;
  private active: net.Socket | undefined;
  private readonly waiting: net.Socket[] = [];
  private skipping = false;
  /** Guest output waits for a slow client. */
  private heldBack = false;
  private finished = false;
  /** Resolves once qemu's end has closed and the log is complete. */
  readonly closed: Promise<void>;

  constructor(
    private readonly podDir: string,
    private readonly guest: Duplex,
    private readonly opts: ConsoleRelayOptions = {},
  ) {
    this.log = ConsoleLog.forPod(podDir);
    fs.rmSync(podFile(podDir, 'console'), { force: true });
    this.server = net.createServer((c) => this.onClient(c));
    this.server.on('error', (err) => log().warn(`console socket: ${err.message}; rkt attach will not reach this pod`));
    this.server.listen(socketPath(podDir, 'console'));
    guest.on('data', (d: Buffer) => this.fromGuest(d));
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.finish();
        resolve();
      };
      guest.once('end', done);
      guest.once('close', done);
      guest.once('error', (err) => {
        log().debug(`console: ${err.message}`);
        done();
      });
    });
  }

  /** Listening on console.sock (for --interactive, which connects at once). */
  listening(): Promise<void> {
    if (this.server.listening) return Promise.resolve();
    return new Promise((resolve) => {
      this.server.once('listening', () => resolve());
      this.server.once('error', () => resolve());
    });
  }

  private fromGuest(d: Buffer): void {
    const text = this.filter.push(d);
    this.log.append(text);
    this.toDebug(text);
    for (const name of this.boot.push(text)) this.markPhase(name);
    const c = this.active;
    if (c !== undefined && !c.write(d) && !this.heldBack) {
      // a slow terminal slows the guest's console, as a real serial line would; never a growing buffer
      this.heldBack = true;
      this.guest.pause();
      const resume = (): void => {
        c.off('drain', resume);
        c.off('close', resume);
        this.heldBack = false;
        this.guest.resume();
      };
      c.on('drain', resume);
      c.on('close', resume);
    }
  }

  private toDebug(text: string): void {
    const d = this.opts.debug;
    if (d === undefined || text === '') return;
    if ((d.writableLength ?? 0) > DEBUG_BACKLOG_BYTES) {
      if (!this.skipping) d.write('\n[stage1: console output skipped: stderr is not keeping up]\n');
      this.skipping = true;
      return;
    }
    this.skipping = false;
    d.write(text);
    this.midLine = !text.endsWith('\n');
  }

  /** A boot phase seen on the console, marked on a line of its own after the console text that showed it. */
  private markPhase(name: string): void {
    if (this.midLine) this.opts.debug?.write('\n');
    this.midLine = false;
    phase(name);
  }

  private onClient(c: net.Socket): void {
    c.on('error', (err) => log().debug(`console client: ${err.message}`));
    if (this.finished) {
      c.destroy();
      return;
    }
    if (this.active === undefined) {
      this.serve(c);
      return;
    }
    if (this.waiting.length >= MAX_WAITING) {
      c.destroy();
      return;
    }
    // not read until its turn, as qemu's listen backlog kept it
    c.pause();
    this.waiting.push(c);
    c.once('close', () => {
      const i = this.waiting.indexOf(c);
      if (i >= 0) this.waiting.splice(i, 1);
    });
  }

  private serve(c: net.Socket): void {
    this.active = c;
    c.on('data', (d: Buffer) => {
      if (this.finished) return;
      if (!this.guest.write(d)) {
        c.pause();
        this.guest.once('drain', () => c.resume());
      }
    });
    c.once('close', () => {
      if (this.active !== c) return;
      this.active = undefined;
      const next = this.waiting.shift();
      if (next !== undefined) {
        this.serve(next);
        next.resume();
      }
    });
    c.resume();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    const rest = this.filter.end();
    this.log.append(rest);
    this.toDebug(rest);
    this.log.close();
    this.server.close();
    const active = this.active;
    if (active !== undefined) {
      // what the guest printed last still reaches the terminal; a client that does not take it is cut off
      active.end();
      setTimeout(() => active.destroy(), 2000).unref();
    }
    for (const c of this.waiting) c.destroy();
    this.active = undefined;
    this.waiting.length = 0;
    fs.rmSync(podFile(this.podDir, 'console'), { force: true });
  }
}
