import fs from 'node:fs';
import path from 'node:path';
import { PodNotFoundError, RktError, UsageError, isErrno, whyUnreadable } from '../errors.js';
import { parsePodManifest } from '../appc/pod-manifest.js';
import type { PodManifest } from '../appc/types.js';
import { parseImageManifest } from '../appc/image-manifest.js';
import { EXTENSION_ANNOTATION, PodPaths, hostStatusDir, readAppExitStatuses, rktStatusDir, type StatusDir } from '../stage1/contract.js';
import { fsyncDir } from '../util/atomic.js';
import { FileLock, type LockMode } from '../util/lock.js';
import { readPinned } from '../util/pinned-file.js';
import { POD_STATE_DIRS, podDir, podsDir, type PodStateDir } from './layout.js';

export type PodState = 'embryo' | 'preparing' | 'aborted prepare' | 'prepared' | 'running' | 'exited' | 'exited garbage' | 'garbage' | 'deleting';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A pid file as a stage1 writes it: a positive number, else undefined. */
function readPidFile(file: string): number | undefined {
  try {
    const v = Number(readPinned(file, undefined, 32).trim());
    return Number.isInteger(v) && v > 0 ? v : undefined;
  } catch {
    // not written (yet)
    return undefined;
  }
}

/** One pod directory, wherever in its lifecycle it is. */
export class Pod {
  readonly paths: PodPaths;
  constructor(readonly dataDir: string, readonly uuid: string, public stateDir: PodStateDir) {
    this.paths = new PodPaths(podDir(dataDir, stateDir, uuid));
  }

  get dir(): string {
    return this.paths.dir;
  }

  /** Every pod in the data dir. */
  static listAll(dataDir: string): Pod[] {
    const pods: Pod[] = [];
    const seen = new Set<string>();
    for (const state of POD_STATE_DIRS) {
      let names: string[];
      try {
        names = fs.readdirSync(path.join(podsDir(dataDir), state));
      } catch (err) {
        if (isErrno(err, 'ENOENT')) continue;
        throw err;
      }
      for (const uuid of names) {
        // a pod seen twice was moving while we looked; the later state wins
        if (!UUID_RE.test(uuid) || seen.has(uuid)) continue;
        seen.add(uuid);
        pods.push(new Pod(dataDir, uuid, state));
      }
    }
    return pods;
  }

  /**
   * The rendered trees of every pod that is not on its way out: a prepared
   * or exited pod holds no lock on its trees yet still needs them (to run,
   * to be exported), so image removal must ask here too, as rkt's image gc
   * keeps every tree a pod refers to.
   */
  static treesInUse(dataDir: string): Set<string> {
    const ids = new Set<string>();
    for (const pod of Pod.listAll(dataDir)) {
      if (pod.stateDir === 'garbage' || pod.stateDir === 'exited-garbage') continue;
      for (const id of pod.treeIds()) ids.add(id);
    }
    return ids;
  }

  /** A pod by full UUID or any unique prefix of it. */
  static find(dataDir: string, uuidOrPrefix: string): Pod {
    const want = uuidOrPrefix.trim().toLowerCase();
    if (want === '') throw new UsageError('empty pod UUID');
    if (!/^[0-9a-f-]+$/.test(want)) throw new UsageError(`"${uuidOrPrefix}" is not a pod UUID`);
    for (let attempt = 0; attempt < 3; attempt++) {
      const matches = Pod.listAll(dataDir).filter((p) => p.uuid.startsWith(want));
      if (matches.length === 1) return matches[0]!;
      if (matches.length > 1) throw new UsageError(`UUID prefix ${uuidOrPrefix} is ambiguous (${matches.length} pods match); give more characters`);
    }
    throw new PodNotFoundError(`no pod with UUID ${uuidOrPrefix}; see "rkt list"`);
  }

  /** Read a UUID from a --uuid-file. */
  static readUuidFile(file: string): string {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`UUID file ${file} ${whyUnreadable(err)}`, { cause: err });
    }
    return text.trim();
  }

  lock(mode: LockMode, wait: boolean): FileLock {
    try {
      return FileLock.acquire(this.dir, mode, { wait, create: false, what: `pod ${this.uuid}` });
    } catch (err) {
      // another rkt moved it to another state, or removed it, since we looked
      if (isErrno(err, 'ENOENT')) throw new PodNotFoundError(`pod ${this.uuid} changed state or was removed meanwhile; try again`, { cause: err });
      throw err;
    }
  }

  isLocked(): boolean {
    return FileLock.isHeld(this.dir);
  }

  /** The pod's state: its directory plus whether someone holds its lock. */
  state(): PodState {
    switch (this.stateDir) {
      case 'embryo':
        return 'embryo';
      case 'prepare':
        return this.isLocked() ? 'preparing' : 'aborted prepare';
      case 'prepared':
        return 'prepared';
      case 'run':
        return this.isLocked() ? 'running' : 'exited';
      case 'exited-garbage':
        return this.isLocked() ? 'deleting' : 'exited garbage';
      case 'garbage':
        return this.isLocked() ? 'deleting' : 'garbage';
    }
  }

  /** Move the pod to another state dir; the caller holds its lock. */
  moveTo(state: PodStateDir): void {
    const to = podDir(this.dataDir, state, this.uuid);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.renameSync(this.dir, to);
    fsyncDir(path.dirname(to));
    this.stateDir = state;
    (this as { paths: PodPaths }).paths = new PodPaths(to);
  }

  /** The pod manifest, or undefined before preparation has written it (an embryo, an aborted preparation). */
  manifestIfWritten(): PodManifest | undefined {
    let data: Buffer;
    try {
      data = fs.readFileSync(this.paths.manifest);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw new RktError(`the manifest of pod ${this.uuid} ${whyUnreadable(err)}`, { cause: err });
    }
    return parsePodManifest(data);
  }

  manifest(): PodManifest {
    const m = this.manifestIfWritten();
    if (m === undefined) throw new RktError(`pod ${this.uuid} has no manifest yet (it is ${this.state()})`);
    return m;
  }

  appNames(): string[] {
    return this.manifest().apps.map((a) => a.name);
  }

  private statusWhere: StatusDir | undefined;

  /**
   * Where this pod's stage1 writes the apps' exit statuses: exit-status/ for
   * a stage1 that declares it does (ours: only the host writes there), else
   * where rkt's contract says, in its rootfs. A pod whose stage1 manifest
   * cannot be read has not run; no pod-writable place is read for it.
   */
  /** The directory where this pod's stage1 leaves the apps' exit statuses. */
  appStatusDir(): string {
    return this.statusDir().dir;
  }

  private statusDir(): StatusDir {
    if (this.statusWhere !== undefined) return this.statusWhere;
    let host = true;
    try {
      const m = parseImageManifest(Buffer.from(readPinned(this.paths.stage1Manifest, undefined, 1 << 20)));
      host = m.annotations?.some((a) => a.name === EXTENSION_ANNOTATION.hostExitStatus && a.value === 'true') ?? false;
    } catch {
      // no stage1 yet (or a broken one): nothing has run
    }
    this.statusWhere = host ? hostStatusDir(this.paths) : rktStatusDir(this.paths);
    return this.statusWhere;
  }

  /**
   * Whether stage1 says every app has started: our stage1s touch `ready` in
   * the pod directory; rkt's contract has a stage1 point the symlink
   * stage1/rootfs/rkt/supervisor-status at "ready" (read, never followed).
   */
  isReady(): boolean {
    if (this.statusDir().dir === this.paths.statusDir) return fs.existsSync(this.paths.ready);
    try {
      return fs.readlinkSync(this.paths.rktSupervisorStatus) === 'ready';
    } catch {
      // not (yet) a symlink
      return false;
    }
  }

  /** Exit statuses written by stage1, by app name. */
  appExitStatuses(): Record<string, number> {
    try {
      return readAppExitStatuses(this.paths, this.statusDir());
    } catch (err) {
      throw new RktError(`the exit statuses of pod ${this.uuid} ${whyUnreadable(err)}`, { cause: err });
    }
  }


  /**
   * The pid stage0 gives the enter entrypoint, as rkt's contract has the run
   * entrypoint tell it: `pid` holds it, or `ppid` holds its parent, which
   * must have exactly one child (else there is no pid yet).
   */
  pid(): number | undefined {
    const pid = readPidFile(this.paths.pid);
    if (pid !== undefined) return pid;
    const ppid = readPidFile(this.paths.ppid);
    if (ppid === undefined) return undefined;
    let children: string[];
    try {
      children = fs.readFileSync(`/proc/${ppid}/task/${ppid}/children`, 'utf8').trim().split(/\s+/).filter((c) => c !== '');
    } catch {
      // the parent is gone: there is nothing to enter
      return undefined;
    }
    // not yet started, or a stage1 that broke the rule: no pid to give
    return children.length === 1 ? Number(children[0]) : undefined;
  }

  private mtime(file: string, follow = true): Date | undefined {
    try {
      return (follow ? fs.statSync(file) : fs.lstatSync(file)).mtime;
    } catch {
      // not written (yet): the time is unknown
      return undefined;
    }
  }

  /** When the pod was created: its manifest is written once, at preparation. */
  createdAt(): Date | undefined {
    return this.mtime(this.paths.manifest);
  }

  /** When stage1 started: it writes the pid file first thing. */
  startedAt(): Date | undefined {
    return this.mtime(this.paths.pid) ?? this.mtime(this.paths.ppid);
  }

  /** When the last app's exit status was written. */
  exitedAt(): Date | undefined {
    let last: Date | undefined;
    for (const name of Object.keys(this.appExitStatuses())) {
      const t = this.mtime(path.join(this.statusDir().dir, name), false);
      if (t && (!last || t > last)) last = t;
    }
    return last ?? this.mtime(this.paths.exitCause);
  }

  /** The rendered image trees the pod uses (stage1's and its apps'), as prepare recorded them. */
  treeIds(): string[] {
    let apps: string[] = [];
    try {
      apps = this.manifestIfWritten()?.apps.map((a) => a.name) ?? [];
    } catch (err) {
      if (!(err instanceof RktError)) throw err;
    }
    const ids: string[] = [];
    for (const file of [this.paths.stage1TreeStoreId, ...apps.map((a) => this.paths.appTreeStoreId(a))]) {
      try {
        ids.push(readPinned(file, undefined, 256).trim());
      } catch {
        // not written yet, or removed by gc: the pod holds no tree by it
      }
    }
    return ids;
  }

  exitCause(): string | undefined {
    try {
      // one line, as the host wrote it; control characters never reach a terminal
      const line = readPinned(this.paths.exitCause, undefined, 2048).split('\n')[0]!.replace(/[\x00-\x1f\x7f-\x9f]/g, '?').trim();
      return line || undefined;
    } catch {
      // written only when a pod ends abnormally (and never anything but a regular file)
      return undefined;
    }
  }
}
