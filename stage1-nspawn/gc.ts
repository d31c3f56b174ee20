import fs from 'node:fs';
import path from 'node:path';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseGcArgs } from '../src/stage1-common/entry.js';
import { resolveInRoot } from '../src/stage1-common/rootfs.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { cgroupPids, recordedCgroups, removeCgroupsWaiting } from '../src/stage1-common/cgroups.js';
import { CGROUPS_FILE } from './config.js';
import { teardownNetwork } from '../src/stage1-common/pod-net.js';
import { machineName } from './nspawn-args.js';
import { alive, runningPodInit } from './pod-process.js';
import { STAGE1 } from './pod-units.js';

// rkt gc for nspawn, run on a pod no process holds any more. After a crash
// (the run entrypoint killed, the guardian killed too), what may be left:
// the container's init (if nothing killed it), the pod's cgroups, mounts
// that leaked into the host's mount namespace, nspawn's per-machine state,
// the output FIFOs, the pod's network (namespace, CNI attachments). Each is removed; the pod directory itself is stage0's.

const NSPAWN_STATE = ['/run/systemd/nspawn/propagate', '/run/systemd/nspawn/unix-export'];

async function killLeftoverInit(paths: PodPaths, uuid: string): Promise<void> {
  const pid = runningPodInit(paths, uuid);
  if (pid === undefined) return;
  log().warn(`pod ${uuid}: its container (init pid ${pid}) outlived the run entrypoint; killing it`);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // exited meanwhile
    return;
  }
  for (let i = 0; i < 250 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
}

async function removeLeftoverCgroups(podDir: string, uuid: string): Promise<boolean> {
  const dirs = recordedCgroups(podDir, CGROUPS_FILE).filter((d) => fs.existsSync(d));
  if (dirs.length === 0) return true;
  if ((await removeCgroupsWaiting(dirs)).length === 0) return true;
  const pids = dirs.flatMap(cgroupPids);
  log().warn(`pod ${uuid}: cannot remove its cgroups ${dirs.join(', ')}${pids.length > 0 ? `: processes ${pids.join(', ')} are still in them` : ''}`);
  return false;
}

async function unmountAll(dir: string, uuid: string): Promise<boolean> {
  const left = await unmountAllUnder(dir);
  if (left.length > 0) log().warn(`pod ${uuid}: still mounted: ${left.join(', ')}`);
  return left.length === 0;
}

/**
 * Remove a file the pod's rootfs holds. The pod may have made a directory
 * on the way a symlink to the host: it is followed inside the rootfs only,
 * so nothing outside is removed.
 */
function removeFromRootfs(rootfs: string, file: string, uuid: string): void {
  try {
    const r = resolveInRoot(rootfs, file, false);
    if (r.exists) fs.rmSync(r.host, { force: true });
  } catch (err) {
    log().warn(`pod ${uuid}: cannot remove ${file} from its rootfs: ${(err as Error).message}`);
  }
}

export async function gc(argv: string[]): Promise<number> {
  const args = parseGcArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  await killLeftoverInit(paths, args.uuid);
  const cgroupsGone = await removeLeftoverCgroups(paths.dir, args.uuid);
  // after a kill -9 of run: CNI DEL for each network (leases, masquerading, forwarded ports), the namespace
  const netGone = await teardownNetwork(paths.dir);
  for (const d of NSPAWN_STATE) fs.rmSync(path.join(d, machineName(args.uuid)), { recursive: true, force: true });
  for (const f of [STAGE1.stdout, STAGE1.stderr, STAGE1.stdin]) removeFromRootfs(paths.stage1Rootfs, f, args.uuid);
  const unmounted = await unmountAll(fs.realpathSync(paths.dir), args.uuid);
  return cgroupsGone && unmounted && netGone ? 0 : 1;
}

