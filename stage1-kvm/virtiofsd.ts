import fs from 'node:fs';
import { log } from '../src/log.js';
import { executable, which } from '../src/stage1-common/host-tools.js';
import type { Env } from '../src/stage1-common/env-config.js';
import { virtiofsdOverride } from './config.js';
import { podFile, socketPath, writePidFile } from './pod-files.js';
import { spawnHelper, type Helper } from './qemu.js';

// virtiofsd for one pod: finding it, its command line, starting it and
// knowing when it listens. It is started like qemu (qemu.ts spawnHelper).

/** virtiofsd: a separate package since qemu 8, shipped with qemu before. */
export function findVirtiofsd(env: Env = process.env): string | undefined {
  const given = virtiofsdOverride(env);
  if (given) return executable(given) ? given : undefined;
  return which('virtiofsd') ?? ['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd'].find(executable);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function virtiofsdListening(logFile: string): boolean {
  try {
    return fs.readFileSync(logFile, 'utf8').includes('Waiting for vhost-user socket connection');
  } catch {
    // no log yet: not listening yet
    return false;
  }
}

/**
 * Start virtiofsd serving `rootfs` and wait until its socket exists.
 * Resolves undefined (after killing it) if it does not come up: the caller
 * then falls back to 9p.
 */
export async function startVirtiofsd(virtiofsd: string, podDir: string, rootfs: string, coherent: boolean, timeoutMs = 5000): Promise<Helper | undefined> {
  if (rootfs.includes(',')) {
    // virtiofsd's -o list has no escape for a comma
    log().debug(`virtiofsd cannot serve ${rootfs}: its path contains a comma`);
    return undefined;
  }
  const sock = socketPath(podDir, 'virtiofsSocket');
  fs.rmSync(podFile(podDir, 'virtiofsSocket'), { force: true });
  const argv = [
    virtiofsd,
    `--socket-path=${sock}`,
    '-o',
    `source=${rootfs}`,
    // with host volumes the host may change files under the guest: cache
    // only while they are open; otherwise nobody but the guest writes
    '-o',
    `cache=${coherent ? 'auto' : 'always'}`,
    // the app rootfs overlays and volumes are other filesystems: show them as submounts
    '-o',
    'announce_submounts',
  ];
  const h = spawnHelper(podDir, argv, podFile(podDir, 'virtiofsdLog'), 'virtiofsd');
  if (h.pid <= 0) return undefined;
  writePidFile(podDir, 'virtiofsdPid', h.pid);
  let dead = false;
  void h.exited.then(() => (dead = true));
  const end = Date.now() + timeoutMs;
  // virtiofsd creates its socket a moment before it listens on it, and it
  // serves one connection only, so it cannot be probed: its log says when
  // it is ready (qemu met "Connection refused" in about 1 boot of 30 otherwise)
  while (Date.now() < end && !dead) {
    if (fs.existsSync(podFile(podDir, 'virtiofsSocket')) && virtiofsdListening(podFile(podDir, 'virtiofsdLog'))) return h;
    await sleep(5);
  }
  h.child.kill('SIGKILL');
  let why = dead ? 'it exited' : `no socket after ${timeoutMs} ms`;
  try {
    const tail = fs.readFileSync(podFile(podDir, 'virtiofsdLog'), 'utf8').trim().split('\n').slice(-3).join(' | ');
    if (tail) why += `: ${tail}`;
  } catch {
    // no log
  }
  log().debug(`virtiofsd did not start (${why})`);
  return undefined;
}
