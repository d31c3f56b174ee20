import fs from 'node:fs';
import { log } from '../src/log.js';
import { executable, which } from '../src/stage1-common/host-tools.js';
import type { Env } from '../src/stage1-common/env-config.js';
import { virtiofsdOverride } from './config.js';
import { guestView, mapArgs } from './guest-ids.js';
import { podFile, socketPath, writePidFile } from './pod-files.js';
import { spawnHelper, type Helper } from './qemu.js';

// virtiofsd for one pod: finding it, its command line, starting it and
// knowing when it listens. It is started like qemu (qemu.ts spawnHelper),
// but as root of the pod's user namespace, whose ids are the pod's block of
// unprivileged host ids (guest-ids.ts), and it keeps its own sandbox (mount,
// pid and net namespaces, pivot_root into the tree, seccomp).

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

export interface VirtiofsdConfig {
  podDir: string;
  /** The tree to serve (guest-root.ts). */
  root: string;
  /** The pod's block of host ids: virtiofsd's user namespace maps 0..65535 onto it. */
  base: number;
  /** rkt-idmap (guest-ids.ts). */
  helper: string;
  /** Host volumes: the host may change files under the guest. */
  coherent: boolean;
  /** The pod's cgroup (v2 directory), joined before virtiofsd starts. */
  cgroup?: string;
}

/** virtiofsd's command line, started by rkt-idmap in the pod's user namespace with its socket on fd 3. */
export function virtiofsdArgv(virtiofsd: string, c: VirtiofsdConfig): string[] {
  const sock = socketPath(c.podDir, 'virtiofsSocket');
  return [
    c.helper,
    'exec',
    ...mapArgs(guestView(c.base)),
    // created by the helper as host root: virtiofsd needs no access to the pod directory
    '--listen',
    sock,
    ...(c.cgroup !== undefined ? ['--cgroup', c.cgroup] : []),
    '--',
    virtiofsd,
    '--fd=3',
    '-o',
    `source=${c.root}`,
    // with host volumes the host may change files under the guest: cache
    // only while they are open; otherwise nobody but the guest writes
    '-o',
    `cache=${c.coherent ? 'auto' : 'always'}`,
    // the app rootfs overlays and volumes are other filesystems: show them as submounts
    '-o',
    'announce_submounts',
    // capabilities in its namespace, which reach only files the pod's ids own:
    // no device nodes, no keeping set-id bits on another's file, no file capabilities
    '-o',
    'modcaps=-mknod:-fsetid:-setfcap',
    // no xattrs either (the default, said here): no security.capability, no ACLs
    '-o',
    'no_xattr',
  ];
}

/**
 * Start virtiofsd serving the guest's root and wait until it listens.
 * Resolves undefined (after killing it) if it does not come up.
 */
export async function startVirtiofsd(virtiofsd: string, c: VirtiofsdConfig, timeoutMs = 5000): Promise<Helper | undefined> {
  fs.rmSync(podFile(c.podDir, 'virtiofsSocket'), { force: true });
  fs.rmSync(podFile(c.podDir, 'virtiofsdLog'), { force: true });
  const h = spawnHelper(c.podDir, virtiofsdArgv(virtiofsd, c), podFile(c.podDir, 'virtiofsdLog'), 'virtiofsd');
  if (h.pid <= 0) return undefined;
  writePidFile(c.podDir, 'virtiofsdPid', h.pid);
  let dead = false;
  void h.exited.then(() => (dead = true));
  const end = Date.now() + timeoutMs;
  // the socket listens before virtiofsd runs, but virtiofsd may still fail
  // to set itself up: its log says when it waits for qemu
  while (Date.now() < end && !dead) {
    if (virtiofsdListening(podFile(c.podDir, 'virtiofsdLog'))) return h;
    await sleep(5);
  }
  h.child.kill('SIGKILL');
  let why = dead ? 'it exited' : `it was not ready after ${timeoutMs} ms`;
  try {
    const tail = fs.readFileSync(podFile(c.podDir, 'virtiofsdLog'), 'utf8').trim().split('\n').slice(-3).join(' | ');
    if (tail) why += `: ${tail}`;
  } catch {
    // no log
  }
  log().warn(`virtiofsd did not start (${why})`);
  return undefined;
}
