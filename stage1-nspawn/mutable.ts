import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { setTimeout as sleep } from 'node:timers/promises';
import { isErrno, RktError } from '../src/errors.js';
import type { PodPaths } from '../src/stage1/contract.js';
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
