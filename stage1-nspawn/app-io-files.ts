import fs from 'node:fs';
import path from 'node:path';
import { RktError } from '../src/errors.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { ensureDirInRoot, resolveInRoot } from '../src/stage1-common/rootfs.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { STAGE1 } from './pod-units.js';

// Where the nspawn relay (app-io.ts) keeps an app's streams, and what the
// app entrypoints do with those places: the container side, made and
// removed without following what the running container may have put in
// the way, and the pod directory side, where rkt attach connects and
// app/add learns that the relay is ready.

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
export function pinIoDir(rootfs: string, app: string): number {
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
