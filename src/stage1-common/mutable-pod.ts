import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { RktError } from '../errors.js';
import { log } from '../log.js';
import { readRunOptions, type PodPaths } from '../stage1/contract.js';
import { StoreLayout } from '../store/layout.js';
import { FileLock } from '../util/lock.js';
import { exitStatusOf } from './status.js';

// What the flavors that run mutable pods (rkt app sandbox: nspawn and kvm)
// share for them: the run entrypoint's mount namespace, which the app
// entrypoints enter to mount an added app's root filesystem where the pod
// sees it; which incarnation of an app the pod manifest has; and the holds
// on the added apps' rendered images.

/**
 * The rootfs is mounted in the run entrypoint's mount namespace: the
 * entrypoint runs itself again there (nsenter --mount), so that every mount
 * it makes is that namespace's and reaches the pod (the container, or
 * virtiofsd serving the VM).
 */
export async function inRunNamespace(paths: PodPaths, nsenter: string, run: number | undefined): Promise<number | undefined> {
  if (run === undefined) throw new RktError("the pod's run entrypoint is not running");
  const ours = fs.readlinkSync('/proc/self/ns/mnt');
  if (fs.readlinkSync(`/proc/${run}/ns/mnt`) === ours) return undefined;
  const argv = [`--mount=/proc/${run}/ns/mnt`, `--wd=${paths.dir}`, '--', process.execPath, ...process.argv.slice(1)];
  log().debug({ argv }, "entering the run entrypoint's mount namespace");
  const child = spawn(nsenter, argv, { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new RktError(`cannot run ${nsenter}: ${err.message}`)));
    child.once('exit', (code, signal) => resolve(exitStatusOf({ code, signal })));
  });
}


/** How long the run entrypoint may take to record an exit its pod has reported: it reads the report channel as reports come. */
const RECORD_WAIT_MS = 10_000;

/**
 * After the pod's systemd has stopped an app (its exit hook has sent the
 * status), wait until the run entrypoint has recorded that status on the
 * host: `rkt app stop` returns then, so that a `rkt app rm` right after it
 * (as containerd does) finds the app exited, not still running.
 */
export async function waitForRecordedExit(paths: PodPaths, app: string): Promise<void> {
  const file = paths.appStatus(app);
  const deadline = Date.now() + RECORD_WAIT_MS;
  while (!fs.existsSync(file)) {
    if (Date.now() >= deadline) throw new RktError(`app ${app} was stopped, but its exit status did not reach the host within ${RECORD_WAIT_MS / 1000} s`);
    await sleep(50);
  }
}

/**
 * Which incarnation of an app this is: an app removed and added again
 * under its name gets a new appsinfo directory, and what was reported
 * about the old one must not count for the new one.
 */
export function appGeneration(paths: PodPaths, app: string): string {
  try {
    const st = fs.statSync(paths.appInfo(app));
    return `${st.ino}:${st.ctimeMs}`;
  } catch {
    return 'none';
  }
}

/** The app's appsinfo directory itself, which a new app of the same name does not share (unlike appGeneration, blind to what is written into it). */
export function appIdentity(paths: PodPaths, app: string): string {
  try {
    return String(fs.statSync(paths.appInfo(app)).ino);
  } catch {
    return 'none';
  }
}

/**
 * The rendered images of a mutable pod's apps, held (shared lock on each
 * tree, as stage0 holds those of a pod's boot-time apps) while the pod uses
 * them, so that "rkt image gc" leaves them alone. stage0 holds an added
 * app's tree until app/add returns; the run entrypoint takes it over once
 * it sees the app in the pod manifest.
 */
export class TreeHolds {
  private readonly held = new Map<string, FileLock>();

  constructor(private readonly paths: PodPaths) {}

  private layout(): StoreLayout | undefined {
    const dataDir = readRunOptions(this.paths)?.dataDir;
    return typeof dataDir === 'string' ? new StoreLayout(dataDir) : undefined;
  }

  /** Hold the trees of `apps` (new ones), release those of `gone`. */
  update(apps: readonly string[], gone: readonly string[]): void {
    for (const app of gone) {
      this.held.get(app)?.release();
      this.held.delete(app);
    }
    const layout = apps.length > 0 ? this.layout() : undefined;
    if (layout === undefined) return;
    for (const app of apps) {
      if (this.held.has(app)) continue;
      // an app whose root is a directory (an OCI bundle's) has no rendered image to hold
      if (fs.existsSync(this.paths.appDirectoryMark(app))) continue;
      try {
        const treeId = fs.readFileSync(this.paths.appTreeStoreId(app), 'utf8').trim();
        if (!/^[a-z0-9-]+$/.test(treeId)) continue;
        this.held.set(app, FileLock.acquire(layout.treeLock(treeId), 'shared', { wait: false, create: false, what: `rendered image ${treeId}` }));
      } catch (err) {
        log().warn(`app ${app}: cannot hold its rendered image against rkt image gc: ${(err as Error).message}`);
      }
    }
  }

  releaseAll(): void {
    this.update([], [...this.held.keys()]);
  }
}
