import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tty from 'node:tty';
import { spawnSync } from 'node:child_process';
import { isAttachable, type AppStreams } from '../src/appc/app-streams.js';
import { RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import type { PodPaths } from '../src/stage1/contract.js';
import type { AppSpec } from '../src/stage1-common/app-spec.js';
import { AppSession } from './app-io-session.js';
import { Backlog } from './attach-rules.js';
import { attachSocket, failedMark, HOST_IO_DIR, pinIoDir, readyMark, removeAppIoFiles } from './app-io-files.js';
import { openPty, resizePty, type Pty } from './pty.js';

// The apps' own streams on nspawn (rkt's --stdin/--stdout/--stderr stream
// and tty modes, and `rkt attach`): the relay rkt calls iottymux, here part
// of the run entrypoint, which lives as long as the pod on the host, in
// the pod's mount namespace. Per app with such streams:
//
//   in the container root, /rkt/iottymux/<app>/ (0700, root's), which the
//   app's unit names (pod-units.ts):
//     stdin    a unix socket the relay listens on; the app's stdin is its
//              first connection (the unit's hooks, which systemd gives the
//              same stdin, get an immediate end of file)
//     stdout, stderr
//              unix sockets too, which systemd connects the app's (and its
//              hooks') output to; the relay reads every connection
//     tty      a pseudo-terminal of the host, bound over an empty file; the
//              relay keeps its master
//   in the pod directory, iottymux/<app>/attach.sock (0700 directory,
//   0600 socket, root's): where the attach entrypoint connects, with the
//   kvm guest agent's ATTACH framing (app-io-session.ts).
//
// Nothing of the host reaches the app but the ends of its own streams: the
// attach socket is outside the container, and an app sees only its own
// directory (its root is its rootfs). Everything is removed when the app is
// removed (PodIo.remove) or the pod ends (PodIo.closeAll); the mounts and
// listeners die with this process anyway.

/**
 * Once an app has exited, how long its last output has to reach the relay
 * before the sessions attached to it are ended (what is in the FIFOs is
 * there already; this is the relay's own reading of it).
 */
export const EXIT_FLUSH_MS = 300;

/** What the relay keeps of a stream's output while nobody is attached to it. */
export const BACKLOG_BYTES = 64 * 1024;

/** One app's streams and the sessions attached to them. */
export class AppIo {
  private dirFd: number | undefined;
  private attachServer: net.Server | undefined;
  /** The app's stdin: the first connection to the stdin socket. */
  private appIn: net.Socket | undefined;
  private pendingIn: Buffer[] = [];
  private inputEnded = false;
  /** The connections the app's output comes on. */
  private readonly outputs = new Set<net.Socket>();
  private readonly servers: net.Server[] = [];
  private readonly backlogs = new Map<'stdout' | 'stderr', Backlog>();
  private pty: Pty | undefined;
  private ptyStream: tty.ReadStream | undefined;
  private session: AppSession | undefined;
  private closed = false;
  private exited = false;

  constructor(
    readonly spec: Pick<AppSpec, 'name'> & { streams: AppStreams },
    private readonly paths: PodPaths,
  ) {}

  get streams(): AppStreams {
    return this.spec.streams;
  }

  private at(name: string): string {
    return `/proc/self/fd/${this.dirFd}/${name}`;
  }

  async open(): Promise<void> {
    const s = this.streams;
    const { name } = this.spec;
    this.dirFd = pinIoDir(this.paths.stage1Rootfs, name);
    for (const f of fs.readdirSync(this.at(''))) fs.rmSync(this.at(f), { force: true });
    if (s.stdin === 'tty') await this.openTty();
    if (s.stdin === 'stream') await this.openStdin();
    for (const n of ['stdout', 'stderr'] as const) if (s[n] === 'stream') await this.openOutput(n);
    await this.listenAttach();
    log().debug(`app ${name}: streams ${s.stdin}/${s.stdout}/${s.stderr} relayed at ${attachSocket(this.paths.dir, name)}`);
  }

  private async openTty(): Promise<void> {
    this.pty = openPty();
    // the mount point is made, and mounted on, through the pinned directory: mount gets it as its
    // fd 3, and takes the path as given (no canonicalization, which would resolve it by name)
    fs.closeSync(fs.openSync(this.at('tty'), fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW, 0o600));
    const r = spawnSync('mount', ['--no-canonicalize', '--bind', this.pty.path, '/proc/self/fd/3/tty'], { stdio: ['ignore', 'ignore', 'pipe', this.dirFd!], encoding: 'utf8' });
    if (r.status !== 0) throw new RktError(`app ${this.spec.name}: cannot give it a terminal: ${r.stderr?.trim() || r.error?.message || `exit status ${r.status}`}`);
    const stream = new tty.ReadStream(this.pty.master);
    this.ptyStream = stream;
    this.backlogs.set('stdout', new Backlog(BACKLOG_BYTES));
    stream.on('data', (d: Buffer) => this.output('stdout', d, stream));
    // EIO once the app and its terminal are gone; the relay ends with the app
    stream.on('error', () => undefined);
  }

  private openStdin(): Promise<void> {
    // systemd shuts down the write side of a socket it gives as stdin: that end is not the end of the app's input
    const server = net.createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      if (this.appIn !== undefined || this.closed) {
        c.end();
        return;
      }
      this.appIn = c;
      c.on('data', () => undefined); // the app writes nothing to its stdin; whatever it is, it is dropped
      for (const b of this.pendingIn) c.write(b);
      this.pendingIn = [];
      if (this.inputEnded) c.end();
    });
    this.servers.push(server);
    return listen(server, this.at('stdin'));
  }

  /**
   * stdout or stderr: a socket too, not a FIFO (a FIFO's reader can be held
   * up by whoever else has it open in the container). systemd connects
   * once per command of the unit (the app, its hooks), each connection is
   * read; an app's children share its connection.
   */
  private openOutput(n: 'stdout' | 'stderr'): Promise<void> {
    this.backlogs.set(n, new Backlog(BACKLOG_BYTES));
    const server = net.createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      if (this.closed) {
        c.destroy();
        return;
      }
      this.outputs.add(c);
      c.on('close', () => this.outputs.delete(c));
      c.on('data', (d: Buffer) => this.output(n, d, c));
    });
    this.servers.push(server);
    return listen(server, this.at(n));
  }

  private async listenAttach(): Promise<void> {
    const sock = attachSocket(this.paths.dir, this.spec.name);
    fs.mkdirSync(path.dirname(path.dirname(sock)), { recursive: true, mode: 0o700 });
    fs.rmSync(path.dirname(sock), { recursive: true, force: true });
    fs.mkdirSync(path.dirname(sock), { mode: 0o700 });
    const server = net.createServer((c) => this.accept(c));
    this.attachServer = server;
    await listen(server, sock);
    fs.chmodSync(sock, 0o600);
  }

  private accept(c: net.Socket): void {
    c.on('error', () => undefined);
    if (this.closed) {
      c.destroy();
      return;
    }
    const session = new AppSession(c, this.spec.name, this.streams, {
      busy: () => this.session !== undefined,
      attached: (s) => this.attached(s),
      detached: (s) => this.detached(s),
      input: (data) => this.input(data),
      inputDrain: (cb) => this.inputDrain(cb),
      inputEnd: () => this.endInput(),
      resize: (cols, rows) => this.pty !== undefined && resizePty(this.pty.master, cols, rows),
    });
    session.start();
  }

  private attached(s: AppSession): void {
    this.session = s;
    for (const n of ['stdout', 'stderr'] as const) {
      if (!s.wants(n)) continue;
      const kept = this.backlogs.get(n)?.take();
      if (kept !== undefined && kept.length > 0) s.send(n, kept);
    }
    if (this.exited) s.end();
  }

  /**
   * The app has exited (the pod's report): the session attached to it gets
   * the rest of its output and ends, as does any later one, after the tail
   * kept for it. The streams stay until the app is removed or the pod ends.
   */
  appExited(): void {
    if (this.exited || this.closed) return;
    this.exited = true;
    setTimeout(() => this.session?.end(), EXIT_FLUSH_MS);
  }

  private detached(s: AppSession): void {
    if (this.session !== s) return;
    this.session = undefined;
    // whatever was paused for the session's sake flows again, into the backlogs
    for (const r of [...this.outputs, this.ptyStream]) r?.resume();
  }

  /** Output of the app: to the session that wants it (at its pace), else into the backlog. */
  private output(n: 'stdout' | 'stderr', data: Buffer, from: net.Socket | tty.ReadStream): void {
    const s = this.session;
    if (s !== undefined && s.wants(n)) {
      if (!s.send(n, data)) {
        from.pause();
        s.onDrain(() => from.resume());
      }
      return;
    }
    this.backlogs.get(n)?.push(data);
  }

  private input(data: Buffer): boolean {
    if (this.ptyStream !== undefined) return this.ptyStream.write(data);
    if (this.inputEnded) return true;
    if (this.appIn === undefined) {
      this.pendingIn.push(data);
      return true;
    }
    return this.appIn.write(data);
  }

  private endInput(): void {
    // a terminal's end of input is its EOF character
    if (this.ptyStream !== undefined) {
      this.ptyStream.write(Buffer.from([4]));
      return;
    }
    if (this.inputEnded) return;
    this.inputEnded = true;
    this.appIn?.end();
  }

  /** Wait until the app's input has taken what was written (for back-pressure on a session). */
  inputDrain(cb: () => void): void {
    const w = this.ptyStream ?? this.appIn;
    if (w === undefined || !w.writableNeedDrain) cb();
    else w.once('drain', cb);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.session?.end();
    this.attachServer?.close();
    for (const server of this.servers) server.close();
    this.appIn?.destroy();
    for (const c of this.outputs) c.destroy();
    this.ptyStream?.destroy();
    if (this.pty !== undefined) {
      for (const fd of [this.pty.slave]) {
        try {
          fs.closeSync(fd);
        } catch {
          // already closed with the stream
        }
      }
    }
    if (this.dirFd !== undefined) {
      fs.closeSync(this.dirFd);
      this.dirFd = undefined;
    }
    await removeAppIoFiles(this.paths, this.spec.name);
  }
}

function listen(server: net.Server, at: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at, () => {
      server.removeListener('error', reject);
      // a failing accept costs that connection, never the run entrypoint
      server.on('error', (err) => log().debug(`relay socket ${at}: ${err.message}`));
      resolve();
    });
  });
}

/** The relays of a pod's apps, as the run entrypoint keeps them. */
export class PodIo {
  private readonly apps = new Map<string, AppIo>();
  private readonly identities = new Map<string, string>();

  constructor(private readonly paths: PodPaths) {}

  /**
   * Relay the streams of an app that has any to relay; before the app
   * starts. `identity` tells an app from a later one of the same name: the
   * relay of the same app is kept as it is.
   */
  async add(spec: Pick<AppSpec, 'name'> & { streams: AppStreams }, identity = ''): Promise<void> {
    if (!isAttachable(spec.streams)) return;
    if (this.apps.has(spec.name) && this.identities.get(spec.name) === identity) return;
    await this.remove(spec.name);
    this.identities.set(spec.name, identity);
    fs.rmSync(failedMark(this.paths, spec.name), { force: true });
    const io = new AppIo(spec, this.paths);
    this.apps.set(spec.name, io);
    try {
      await io.open();
    } catch (err) {
      await this.remove(spec.name);
      throw err;
    }
    fs.writeFileSync(readyMark(this.paths, spec.name), '', { mode: 0o600 });
  }

  /** The relay of an added app could not be set up: app/add reports why. */
  markFailed(app: string, why: string): void {
    fs.mkdirSync(path.join(this.paths.dir, HOST_IO_DIR), { recursive: true, mode: 0o700 });
    fs.writeFileSync(failedMark(this.paths, app), `${why}\n`, { mode: 0o600 });
  }

  async remove(app: string): Promise<void> {
    const io = this.apps.get(app);
    if (io === undefined) return;
    this.apps.delete(app);
    await io.close();
  }

  /** The apps the pod reported as exited. */
  appsExited(apps: Iterable<string>): void {
    for (const a of apps) this.apps.get(a)?.appExited();
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.apps.keys()].map((a) => this.remove(a)));
    fs.rmSync(path.join(this.paths.dir, HOST_IO_DIR), { recursive: true, force: true });
  }
}

