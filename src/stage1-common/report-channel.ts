import fs from 'node:fs';
import net from 'node:net';
import { log } from '../log.js';
import { phase } from '../util/phase-trace.js';
import type { AppExit, AppReports } from './app-reports.js';

// The host end of the report channel: the pod's init tells the host that an
// app started or exited (and whether the OOM killer ended it), and the kvm
// guest that it could not configure its network, one line per message, on
// a stream the host owns (a virtio-serial port in the VM; a FIFO the host
// opened before the container started in nspawn). The other end is hostile:
// every line is bounded, parsed against a fixed grammar and checked against
// the pod's apps, and a stream that keeps sending garbage is ignored. A
// guest can still lie about its own apps; it cannot make the host read a
// file, wait forever, or keep more than a few bytes per app.
//
// Grammar (ASCII, one message per line):
//   started APP
//   pre-start APP                  the app's pre-start handler is running (the pod is up)
//   exited APP STATUS oom|-|pre-start   STATUS 0..255; "pre-start": the app's
//                                  pre-start handler failed with STATUS, the app never ran
//   net-error TEXT                 printable ASCII, cut to NET_ERROR_MAX

/** Longer lines are dropped whole: no message of the grammar comes close. */
export const REPORT_LINE_MAX = 512;
export const NET_ERROR_MAX = 240;
/** After this many bad lines the channel is taken for hostile and ignored. */
export const REPORT_BAD_LINES_MAX = 64;

export type Report = { kind: 'started'; app: string } | { kind: 'pre-start'; app: string } | { kind: 'exited'; app: string; status: number; oom: boolean; preStart: boolean } | { kind: 'net-error'; text: string };

/** One line (without its newline), or undefined when it is not a message of the grammar about one of `apps`. */
export function parseReportLine(line: string, apps: ReadonlySet<string>): Report | undefined {
  if (line.length > REPORT_LINE_MAX) return undefined;
  const sp = line.indexOf(' ');
  const verb = sp === -1 ? line : line.slice(0, sp);
  const rest = sp === -1 ? '' : line.slice(sp + 1);
  if (verb === 'net-error') {
    const text = rest.replace(/[^\x20-\x7e]/g, '?').trim().slice(0, NET_ERROR_MAX);
    return { kind: 'net-error', text: text === '' ? 'the guest reported no reason' : text };
  }
  const words = rest.split(' ');
  const app = words[0] ?? '';
  if (!apps.has(app)) return undefined;
  if (verb === 'started' && words.length === 1) return { kind: 'started', app };
  if (verb === 'pre-start' && words.length === 1) return { kind: 'pre-start', app };
  if (verb === 'exited' && words.length === 3 && /^(0|[1-9][0-9]{0,2})$/.test(words[1]!) && ['oom', '-', 'pre-start'].includes(words[2]!)) {
    const status = Number(words[1]);
    if (status > 255) return undefined;
    return { kind: 'exited', app, status, oom: words[2] === 'oom', preStart: words[2] === 'pre-start' };
  }
  return undefined;
}

/** The pod's reports as they arrive on the channel, kept in memory (a few bytes per app). */
export class ChannelReports implements AppReports {
  private readonly apps: ReadonlySet<string>;
  private readonly startedApps = new Set<string>();
  private readonly exitList: AppExit[] = [];
  private readonly oom = new Set<string>();
  private readonly preStart = new Set<string>();
  private readonly preStartingApps = new Set<string>();
  private netErrorText: string | undefined;
  private partial = '';
  private discarding = false;
  private bad = 0;
  /** The phase marks already made: every app started, every app exited. */
  private readonly marked = new Set<'app-start' | 'app-exit'>();
  private socket: net.Socket | undefined;
  private holdFd: number | undefined;
  /** Resolves when the channel has ended (its writer is gone) or was closed. */
  readonly ended: Promise<void>;
  private resolveEnded!: () => void;

  constructor(apps: Iterable<string>) {
    this.apps = new Set(apps);
    this.ended = new Promise((r) => (this.resolveEnded = r));
  }

  started(): Set<string> {
    return new Set([...this.startedApps, ...this.exitList.map((e) => e.app)]);
  }

  exits(): AppExit[] {
    return [...this.exitList];
  }

  oomKilled(): Set<string> {
    return new Set(this.oom);
  }

  preStarting(): Set<string> {
    return new Set(this.preStartingApps);
  }

  preStartFailed(): Set<string> {
    return new Set(this.preStart);
  }

  /** What the guest said when it could not configure the pod's network. */
  netError(): string | undefined {
    return this.netErrorText;
  }

  /** Feed bytes from the channel. */
  push(chunk: Buffer | string): void {
    if (this.bad >= REPORT_BAD_LINES_MAX) return;
    const text = typeof chunk === 'string' ? chunk : chunk.toString('latin1');
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl === -1) break;
      const piece = text.slice(start, nl);
      start = nl + 1;
      if (this.discarding) {
        this.discarding = false;
        this.partial = '';
        this.onBad('a line longer than the limit');
        continue;
      }
      const line = this.partial + piece;
      this.partial = '';
      this.onLine(line);
    }
    if (!this.discarding) {
      this.partial += text.slice(start);
      if (this.partial.length > REPORT_LINE_MAX) {
        this.partial = '';
        this.discarding = true;
      }
    }
  }

  private onLine(line: string): void {
    const r = parseReportLine(line, this.apps);
    if (r === undefined) {
      this.onBad('a malformed message');
      return;
    }
    if (r.kind === 'started') this.startedApps.add(r.app);
    else if (r.kind === 'pre-start') this.preStartingApps.add(r.app);
    else if (r.kind === 'net-error') this.netErrorText ??= r.text;
    else if (!this.exitList.some((e) => e.app === r.app)) {
      // the first word on an app is final: a later one cannot rewrite it
      this.exitList.push({ app: r.app, status: r.status });
      if (r.oom) this.oom.add(r.app);
      if (r.preStart) this.preStart.add(r.app);
    }
    this.markPhases();
  }

  private markPhases(): void {
    const ends: ['app-start' | 'app-exit', number][] = [['app-start', this.started().size], ['app-exit', this.exitList.length]];
    for (const [name, count] of ends) {
      if (count < this.apps.size || this.marked.has(name)) continue;
      this.marked.add(name);
      phase(name);
    }
  }

  private onBad(what: string): void {
    this.bad++;
    log().debug(`report channel: dropped ${what}`);
    if (this.bad === REPORT_BAD_LINES_MAX) {
      log().warn(`the pod sent ${REPORT_BAD_LINES_MAX} malformed reports; ignoring its report channel from now on`);
      this.socket?.destroy();
    }
  }

  /**
   * Read the channel from a FIFO the host owns. `hold` keeps a write end
   * open too, so that the FIFO never reads as ended while the pod's writers
   * come and go (nspawn); without it, the end of the last writer (qemu)
   * ends the channel.
   */
  attachFifo(file: string, opts: { hold: boolean }): void {
    const rfd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
    if (!fs.fstatSync(rfd).isFIFO()) {
      fs.closeSync(rfd);
      throw new Error(`${file} is not a FIFO`);
    }
    if (opts.hold) this.holdFd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
    const sock = new net.Socket({ fd: rfd, readable: true, writable: false });
    this.socket = sock;
    sock.on('data', (c: Buffer) => this.push(c));
    sock.once('end', () => this.resolveEnded());
    sock.once('close', () => this.resolveEnded());
    sock.once('error', (err) => {
      log().debug(`report channel: ${err.message}`);
      this.resolveEnded();
    });
  }

  /** Stop reading; what was reported stays. */
  close(): void {
    if (this.holdFd !== undefined) {
      fs.closeSync(this.holdFd);
      this.holdFd = undefined;
    }
    this.socket?.destroy();
    this.resolveEnded();
  }

  /** Wait up to `ms` for what is still in flight (the writer has gone), then close. */
  async drain(ms: number): Promise<void> {
    if (this.holdFd !== undefined) {
      fs.closeSync(this.holdFd);
      this.holdFd = undefined;
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.ended, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
    this.close();
  }
}
