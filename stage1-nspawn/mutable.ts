import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { setTimeout as sleep } from 'node:timers/promises';
import { isErrno, RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import { readRunOptions, type PodPaths } from '../src/stage1/contract.js';
import { StoreLayout } from '../src/store/layout.js';
import { FileLock } from '../src/util/lock.js';
import type { PrepareOptions } from '../src/stage1-common/rootfs.js';
import { writeFileAtomic } from '../src/util/atomic.js';

// What a mutable nspawn pod (rkt app sandbox) keeps for the app
// entrypoints, which run later, in other processes. The run entrypoint's
// private mount namespace is where the apps' root filesystems are mounted;
// for a mount made there after the container started to reach it, the
// container's root is made a shared mount first: systemd-nspawn copies it
// as a slave, so mounts and unmounts below it propagate into the container
// (and never back). Everything vanishes with the run entrypoint's
// namespace, as the boot-time apps' mounts do.

/** How the apps' /etc/resolv.conf and /etc/hosts are made, as the run entrypoint decided for the pod (flavor-private). */
export const ETC_OPTIONS_FILE = 'nspawn-etc.json';

export async function shareContainerRoot(rootfs: string): Promise<void> {
  await execa('mount', ['--rbind', rootfs, rootfs]);
  await execa('mount', ['--make-rshared', rootfs]);
}

export function saveEtcOptions(paths: PodPaths, opts: PrepareOptions): void {
  writeFileAtomic(path.join(paths.dir, ETC_OPTIONS_FILE), JSON.stringify(opts));
}

export function loadEtcOptions(paths: PodPaths): PrepareOptions {
  try {
    return JSON.parse(fs.readFileSync(path.join(paths.dir, ETC_OPTIONS_FILE), 'utf8')) as PrepareOptions;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return {};
    throw err;
  }
}

/**
 * A sandbox is ready once its systemd has reached the pod target: before
 * that, the app entrypoints could not reach it (a pod with apps is ready
 * once they have all started, which says the same).
 */
export async function waitForPodTarget(init: number, target: string, timeoutMs: number, ended: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ended()) {
    const r = await execa('nsenter', [`--target=${init}`, '--all', '--root', '--wd', '--', '/usr/bin/systemctl', 'is-active', target], { reject: false, stdin: 'ignore' });
    if (String(r.stdout).trim() === 'active') return;
    if (Date.now() >= deadline) throw new RktError(`the sandbox's systemd did not reach ${target} within ${timeoutMs / 1000} s`);
    await sleep(100);
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
