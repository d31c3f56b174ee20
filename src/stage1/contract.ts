import fs from 'node:fs';
import path from 'node:path';
import { RktError, isErrno, whyUnreadable } from '../errors.js';
import { readPinned, UnexpectedFileError } from '../util/pinned-file.js';

// The stage0/stage1 contract (rkt's stage1 implementor's guide). stage0
// prepares a pod directory and executes the stage1's entrypoints, found by
// annotation in the stage1 image manifest, with the pod directory as the
// working directory. Both sides import the names and paths from here.

export const ANNOTATION = {
  run: 'coreos.com/rkt/stage1/run',
  enter: 'coreos.com/rkt/stage1/enter',
  gc: 'coreos.com/rkt/stage1/gc',
  stop: 'coreos.com/rkt/stage1/stop',
  appAdd: 'coreos.com/rkt/stage1/app/add',
  appStart: 'coreos.com/rkt/stage1/app/start',
  appStop: 'coreos.com/rkt/stage1/app/stop',
  appRm: 'coreos.com/rkt/stage1/app/rm',
  attach: 'coreos.com/rkt/stage1/attach',
  interfaceVersion: 'coreos.com/rkt/stage1/interface-version',
} as const;

export type Entrypoint = Exclude<keyof typeof ANNOTATION, 'interfaceVersion'>;

/**
 * This implementation's own stage1 annotations, extensions to rkt's contract.
 * `hostExitStatus`: the stage1's host side writes the apps' exit statuses to
 * `exit-status/` in the pod directory, out of the pod's reach; without it
 * stage0 reads them where rkt's contract puts them, stage1/rootfs/rkt/status/.
 */
export const EXTENSION_ANNOTATION = {
  hostExitStatus: 'rkt-ts/stage1/host-exit-status',
} as const;

/** Environment variable naming the inherited, locked pod directory descriptor. */
export const LOCK_FD_ENV = 'RKT_LOCK_FD';

/**
 * What a crossing entrypoint (attach, app/*) gets in its environment to reach
 * into the pod: the enter entrypoint's absolute path, the pid stage0 gives
 * enter, and (for some) the app.
 */
export const CROSSING_ENV = {
  enterCmd: 'RKT_STAGE1_ENTERCMD',
  enterPid: 'RKT_STAGE1_ENTERPID',
  enterApp: 'RKT_STAGE1_ENTERAPP',
} as const;

/** Paths inside one pod directory, relative to which every entrypoint runs. */
export class PodPaths {
  constructor(readonly dir: string) {}
  /** The pod manifest. */
  get manifest(): string {
    return path.join(this.dir, 'pod');
  }
  get stage1(): string {
    return path.join(this.dir, 'stage1');
  }
  get stage1Manifest(): string {
    return path.join(this.dir, 'stage1', 'manifest');
  }
  get stage1Rootfs(): string {
    return path.join(this.dir, 'stage1', 'rootfs');
  }
  /** resolv.conf stage0 wrote for --dns-conf-mode=resolv=stage0 (rkt's path). */
  get stage0ResolvConf(): string {
    return path.join(this.stage1Rootfs, 'etc', 'rkt-resolv.conf');
  }
  /** hosts stage0 wrote for --dns-conf-mode=hosts=stage0 (rkt's path). */
  get stage0Hosts(): string {
    return path.join(this.stage1Rootfs, 'etc', 'rkt-hosts');
  }
  get stage1TreeStoreId(): string {
    return path.join(this.dir, 'stage1TreeStoreID');
  }
  /** pid of the process whose namespaces `rkt enter` joins, written by the run entrypoint. */
  get pid(): string {
    return path.join(this.dir, 'pid');
  }
  get ppid(): string {
    return path.join(this.dir, 'ppid');
  }
  appInfo(app: string): string {
    return path.join(this.dir, 'appsinfo', app);
  }
  appImageManifest(app: string): string {
    return path.join(this.appInfo(app), 'manifest');
  }
  appTreeStoreId(app: string): string {
    return path.join(this.appInfo(app), 'treeStoreID');
  }
  /** Absolute path of the rendered image rootfs in the tree store (this implementation's addition). */
  appTreeRootfs(app: string): string {
    return path.join(this.appInfo(app), 'treeRootfs');
  }
  /** Present when the app's root filesystem is a host directory bound as it is (treeRootfs names it), not an image. */
  appDirectoryMark(app: string): string {
    return path.join(this.appInfo(app), 'rootfsDirectory');
  }
  /** Where the app's root filesystem is assembled: stage1/rootfs/opt/stage2/<app>/rootfs. */
  appRootfs(app: string): string {
    return path.join(this.stage1Rootfs, 'opt', 'stage2', app, 'rootfs');
  }
  /** Writable layer of an app's overlay rootfs. */
  appOverlayUpper(app: string): string {
    return path.join(this.dir, 'overlay', app, 'upper');
  }
  appOverlayWork(app: string): string {
    return path.join(this.dir, 'overlay', app, 'work');
  }
  /**
   * Exit status of each app, written by the host side of stage1: exit-status/<app>.
   * rkt kept them in stage1/rootfs/rkt/status, inside what a kvm guest or a
   * container can write; here the pod's init reports them over a channel the
   * host owns, and only the host writes this directory.
   */
  get statusDir(): string {
    return path.join(this.dir, 'exit-status');
  }
  appStatus(app: string): string {
    return path.join(this.statusDir, app);
  }
  /** rkt's readiness mark: a symlink to "ready" once the pod's supervisor is (inside the stage1 rootfs). */
  get rktSupervisorStatus(): string {
    return path.join(this.stage1Rootfs, 'rkt', 'supervisor-status');
  }
  /** Where rkt's contract has a stage1 write the apps' exit statuses (inside its rootfs). */
  get rktStatusDir(): string {
    return path.join(this.stage1Rootfs, 'rkt', 'status');
  }
  /** Set by stage1 once every app has been started (rkt status --wait-ready). */
  get ready(): string {
    return path.join(this.dir, 'ready');
  }
  /** Why the pod ended, when not all apps exited by themselves (kvm: "qemu killed", "guest panic"). */
  get exitCause(): string {
    return path.join(this.dir, 'exit-cause');
  }
  /**
   * stage0's record of how the pod was prepared and run (for run-prepared),
   * and the channel of this implementation's extensions to rkt's contract:
   * a stage1 reads from it only what no flag of rkt's carries.
   */
  get runOptions(): string {
    return path.join(this.dir, 'run-options.json');
  }
  /** Volumes of kind empty live here, one directory each. */
  emptyVolume(name: string): string {
    return path.join(this.dir, 'volumes', name);
  }
}

/**
 * What stage0 records in run-options.json. Stage1s read only the extensions
 * (`systemConfig`, `ipc`); the rest is stage0's own memory of the command
 * line for `rkt run-prepared`, and reaches stage1 as rkt's flags.
 */
export interface RunOptions {
  uuid: string;
  net: string[];
  debug: boolean;
  interactive: boolean;
  hostname?: string;
  /** Absolute data dir, so that stage1 gc and enter can find the store. */
  dataDir: string;
  localConfig: string;
  systemConfig?: string;
  insecureOptions: string[];
  /** --dns, --dns-search, --dns-opt, --dns-domain as given to stage0. */
  dns?: { dns: string[]; dnsSearch: string[]; dnsOpt: string[]; dnsDomain?: string };
  /** --hosts-entry values (IP=HOSTNAME, or "host"). */
  hostsEntries?: string[];
  /** --private-users ("" for an automatic range, or UIDBASE[:COUNT]); flavors without user namespaces ignore it. */
  privateUsers?: string;
  /** --ipc: auto, private or parent. */
  ipc?: string;
  /**
   * rkt app sandbox --net-namespace: an existing network namespace (not
   * rkt's) the pod joins instead of making its own; its interfaces are the
   * pod's networks. Never deleted by rkt.
   */
  netns?: string;
  /**
   * Set when the pod is registered with the metadata service (--mds-register):
   * its secret token and the TCP port the apps reach the service on. This is
   * today's channel for rkt's --mds-token; stage1 reads it through
   * metadataServiceOf() in src/stage1-common/metadata.ts.
   */
  metadataService?: { token: string; port: number };
}

/**
 * run-options.json as some stage0 wrote it, untrusted (older ones wrote other
 * shapes: check each field where it is used), or undefined when there is
 * none: a pod prepared by another rkt, or run by hand. A file that is there
 * but unreadable is an error: running the pod without the options it was
 * prepared with would run another pod.
 */
export function readRunOptions(paths: PodPaths): Record<string, unknown> | undefined {
  const file = paths.runOptions;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new RktError(`the pod's options ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new RktError(`the pod's options ${file} are not valid JSON (${(err as Error).message}); the pod directory is damaged: remove the pod and run it again`, { cause: err });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RktError(`the pod's options ${file} are not a JSON object; the pod directory is damaged: remove the pod and run it again`);
  return v as Record<string, unknown>;
}

/** A directory of exit status files, one per app; `within`: a tree no link in it may leave. */
export interface StatusDir {
  dir: string;
  within?: string;
}

export function hostStatusDir(paths: PodPaths): StatusDir {
  return { dir: paths.statusDir };
}

/** The pod's stage1 rootfs's rkt/status/, read without leaving the rootfs: the pod can write there. */
export function rktStatusDir(paths: PodPaths): StatusDir {
  return { dir: paths.rktStatusDir, within: paths.stage1Rootfs };
}

/** An exit status file holds a number of at most three digits. */
const STATUS_MAX_BYTES = 64;

/**
 * Exit statuses of the apps that have one, by app name; apps still running
 * (or never started) are absent. The one reader of exit-status/, for stage0
 * and stage1 alike: only the host writes it, as regular files, so anything
 * else there (a link, a FIFO, a file too large) is skipped, never opened.
 * Other read errors are thrown.
 */
export function readAppExitStatuses(paths: PodPaths, where: StatusDir = hostStatusDir(paths)): Record<string, number> {
  let names: string[];
  try {
    names = fs.readdirSync(where.dir);
  } catch (err) {
    // no status dir: stage1 has not run (or the pod is being removed); no app has a status
    if (isErrno(err, 'ENOENT')) return {};
    throw err;
  }
  const out: Record<string, number> = {};
  for (const name of names) {
    // temporaries of writeFileAtomic start with a dot
    if (name.startsWith('.')) continue;
    let text: string;
    try {
      text = readPinned(path.join(where.dir, name), where.within, STATUS_MAX_BYTES).trim();
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ELOOP') || err instanceof UnexpectedFileError) continue;
      throw err;
    }
    if (/^\d{1,3}$/.test(text)) out[name] = Number(text);
  }
  return out;
}
