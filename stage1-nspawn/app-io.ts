import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tty from 'node:tty';
import { spawnSync } from 'node:child_process';
import { execa } from 'execa';
import { isAttachable, type AppStreams } from '../src/appc/app-streams.js';
import { RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import type { PodPaths } from '../src/stage1/contract.js';
import type { AppSpec } from '../src/stage1-common/app-spec.js';
import { ensureDirInRoot, ensureMountTarget, resolveInRoot } from '../src/stage1-common/rootfs.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { PinnedFile } from '../src/util/pinned-file.js';
import { AppSession } from './app-io-session.js';
import { Backlog } from './attach-rules.js';
import { STAGE1 } from './pod-units.js';
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
//              FIFOs the relay holds open read-write: the app's open never
//              blocks, its writes never see the reader gone
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

/** What the relay keeps of a stream's output while nobody is attached to it. */
export const BACKLOG_BYTES = 64 * 1024;

/** The pod directory's relay sockets, per app. */
export const HOST_IO_DIR = 'iottymux';

export function attachSocket(podDir: string, app: string): string {
  return path.join(podDir, HOST_IO_DIR, app, 'attach.sock');
}

/** The container-side directory of an app's streams, as the container sees it. */
export function appIoDir(app: string): string {
  return `${STAGE1.iottymux}/${app}`;
}

// Linux's O_PATH; Node does not export it.
const O_PATH = 0o10000000;

/**
 * The app's directory in the container root, made and then held by an
 * O_PATH descriptor: every file is created through /proc/self/fd/N, so a
 * running container that swaps a name for a symlink cannot lead the host
 * elsewhere.
 */
function pinIoDir(rootfs: string, app: string): number {
  const host = ensureDirInRoot(rootfs, appIoDir(app));
  const fd = fs.openSync(host, O_PATH | fs.constants.O_NOFOLLOW | fs.constants.O_DIRECTORY);
  const real = fs.readlinkSync(`/proc/self/fd/${fd}`);
  const root = fs.realpathSync(rootfs);
  if (!real.startsWith(`${root}/`)) {
    fs.closeSync(fd);
    throw new RktError(`app ${app}: its stream directory leads to ${real}, outside the pod's stage1 root; refusing to use it`);
  }
  fs.chmodSync(`/proc/self/fd/${fd}`, 0o700);
  return fd;
}

function mkfifoIn(dirFd: number, names: string[]): void {
  // mkfifo gets the pinned directory as its fd 3
  const r = spawnSync('mkfifo', ['-m', '600', ...names.map((n) => `/proc/self/fd/3/${n}`)], { stdio: ['ignore', 'ignore', 'pipe', dirFd], encoding: 'utf8' });
  if (r.status !== 0) throw new RktError(`cannot make the FIFOs of an app's streams: ${r.stderr?.trim() || r.error?.message || `exit status ${r.status}`}`);
}

/** One app's streams and the sessions attached to them. */
export class AppIo {
  private dirFd: number | undefined;
  private stdinServer: net.Server | undefined;
  private attachServer: net.Server | undefined;
  /** The app's stdin: the first connection to the stdin socket. */
  private appIn: net.Socket | undefined;
  private pendingIn: Buffer[] = [];
  private inputEnded = false;
  private readonly outputs = new Map<'stdout' | 'stderr', net.Socket | tty.ReadStream>();
  private readonly backlogs = new Map<'stdout' | 'stderr', Backlog>();
  private pty: Pty | undefined;
  private ptyStream: tty.ReadStream | undefined;
  private session: AppSession | undefined;
  private closed = false;

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
    const fifos = (['stdout', 'stderr'] as const).filter((n) => s[n] === 'stream');
    if (fifos.length > 0) mkfifoIn(this.dirFd, [...fifos]);
    for (const n of fifos) this.openOutput(n);
    await this.listenAttach();
    log().debug(`app ${name}: streams ${s.stdin}/${s.stdout}/${s.stderr} relayed at ${attachSocket(this.paths.dir, name)}`);
  }

  private async openTty(): Promise<void> {
    this.pty = openPty();
    const target = ensureMountTarget(this.paths.stage1Rootfs, `${appIoDir(this.spec.name)}/tty`, 'file');
    const r = await execa('mount', ['--bind', this.pty.path, target], { reject: false, stdin: 'ignore' });
    if (r.exitCode !== 0) throw new RktError(`app ${this.spec.name}: cannot give it a terminal: ${String(r.stderr).trim()}`);
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
    this.stdinServer = server;
    return listen(server, this.at('stdin'));
  }

  private openOutput(n: 'stdout' | 'stderr'): void {
    const pinned = PinnedFile.open(this.at(n), 'fifo');
    let fd: number;
    try {
      fd = pinned.reopen(fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    } finally {
      pinned.close();
    }
    const reader = new net.Socket({ fd, readable: true, writable: false });
    reader.on('error', () => undefined);
    reader.on('data', (d: Buffer) => this.output(n, d, reader));
    this.outputs.set(n, reader);
    this.backlogs.set(n, new Backlog(BACKLOG_BYTES));
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
  }

  private detached(s: AppSession): void {
    if (this.session !== s) return;
    this.session = undefined;
    // whatever was paused for the session's sake flows again, into the backlogs
    for (const r of [...this.outputs.values(), this.ptyStream]) r?.resume();
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
    this.stdinServer?.close();
    this.appIn?.destroy();
    for (const r of this.outputs.values()) r.destroy();
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
      resolve();
    });
  });
}

/**
 * The files of an app's streams, gone: its directories in the pod and in
 * the container root. The container-side one is removed by name without
 * following a symlink put in its place.
 */
export async function removeAppIoFiles(paths: PodPaths, app: string): Promise<void> {
  fs.rmSync(path.join(paths.dir, HOST_IO_DIR, app), { recursive: true, force: true });
  // symlinks the container may have put on the way are followed inside its root only
  let dir;
  try {
    dir = resolveInRoot(paths.stage1Rootfs, appIoDir(app), false);
  } catch {
    return;
  }
  if (!dir.exists || !fs.lstatSync(dir.host).isDirectory()) return;
  // the terminal is bound there: never remove through a mount
  const left = await unmountAllUnder(dir.host);
  if (left.length > 0) throw new RktError(`cannot unmount ${left.join(', ')} of app ${app}`);
  fs.rmSync(dir.host, { recursive: true, force: true });
}

/** The relays of a pod's apps, as the run entrypoint keeps them. */
export class PodIo {
  private readonly apps = new Map<string, AppIo>();

  constructor(private readonly paths: PodPaths) {}

  /** Relay the streams of an app that has any to relay; before the app starts. */
  async add(spec: Pick<AppSpec, 'name'> & { streams: AppStreams }): Promise<void> {
    if (!isAttachable(spec.streams)) return;
    await this.remove(spec.name);
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

  async closeAll(): Promise<void> {
    await Promise.all([...this.apps.keys()].map((a) => this.remove(a)));
    fs.rmSync(path.join(this.paths.dir, HOST_IO_DIR), { recursive: true, force: true });
  }
}

/** Written once an app's relay is listening: app/add waits for it. */
export function readyMark(paths: PodPaths, app: string): string {
  return path.join(paths.dir, HOST_IO_DIR, app, 'ready');
}

/** Written instead when the relay of an added app could not be set up: why, in one line. */
export function failedMark(paths: PodPaths, app: string): string {
  return path.join(paths.dir, HOST_IO_DIR, `${app}.failed`);
}

/**
 * app/add: wait until the run entrypoint relays the added app's streams
 * (it sees the app in the pod manifest within moments), so that the app
 * never starts before its ends exist.
 */
export async function waitForRelay(paths: PodPaths, app: string, timeoutMs: number, running: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (fs.existsSync(readyMark(paths, app))) return;
    let failed: string | undefined;
    try {
      failed = fs.readFileSync(failedMark(paths, app), 'utf8').trim();
    } catch {
      // not failed (yet)
    }
    if (failed !== undefined) throw new RktError(`cannot relay the streams of app ${app}: ${failed}`);
    if (!running()) throw new RktError(`the pod's run entrypoint ended before it relayed the streams of app ${app}`);
    if (Date.now() > deadline) throw new RktError(`the pod did not relay the streams of app ${app} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
