import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { PodPaths } from '../src/stage1/contract.js';
import type { AppSpec } from '../src/stage1-common/app-spec.js';
import { POD_ROOT } from '../src/stage1-common/app-reports.js';
import { hostId } from '../src/stage1-common/pod-ids.js';
import { KvmHostError } from './errors.js';
import { guestView, idmapBind } from './guest-ids.js';

// The tree virtiofsd serves as the guest's root, assembled in the pod's
// private mount namespace once the apps' rootfs are ready (guest-ids.ts
// says why the ids are shifted):
//   /                      the stage1 rootfs, id-mapped, read-only: the
//                          guest can change none of it, in particular not
//                          /kvm/*, the entrypoints that stage0 runs as host
//                          root, nor /kernel
//   /rkt                   the stage1 rootfs's own /rkt, writable: owned by
//                          the pod's block (the guest's own bookkeeping of
//                          its apps' exits); the host never reads it: the
//                          apps are reported over the report channel
//   /opt/stage2/<app>/rootfs  each app's rootfs with its volumes (rootfs.ts,
//                          assembled with the pod's ids)
//   /tmp                   <pod>/guest-tmp, owned by the pod's block
// Everything else the guest writes lives in its own tmpfs (/run, mounted
// by its systemd).
//
// virtiofsd, running with the pod's ids, must be able to reach the tree by
// its path (it bind-mounts it on itself before its pivot_root), and the pod
// directory is not searchable by them. So the tree is assembled on a tmpfs
// that only the pod's mount namespace has, at GUEST_ROOT_MOUNT: the host's
// /run/rkt/guest stays an empty directory.

export const GUEST_ROOT_MOUNT = '/run/rkt/guest';
/** The guest's /tmp in the pod directory, owned by the pod's block. */
export const GUEST_TMP = 'guest-tmp';

async function mount(args: string[]): Promise<void> {
  const r = await execa('mount', args, { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new KvmHostError(`cannot assemble the guest's root: mount ${args.join(' ')}: ${String(r.stderr).trim()}`);
}

/** Hand the stage1 rootfs's /rkt and the guest's status bookkeeping to the pod's block. */
function giveRkt(paths: PodPaths, base: number): string {
  const root = hostId({ base }, 0);
  const rkt = path.join(paths.stage1Rootfs, 'rkt');
  const own = path.join(paths.stage1Rootfs, POD_ROOT.status);
  fs.mkdirSync(own, { recursive: true, mode: 0o755 });
  for (const d of [rkt, own]) fs.lchownSync(d, root, root);
  return rkt;
}

/** Assemble the guest's root; returns its path. */
export async function assembleGuestRoot(paths: PodPaths, specs: AppSpec[], base: number, helper: string): Promise<string> {
  fs.mkdirSync(GUEST_ROOT_MOUNT, { recursive: true, mode: 0o755 });
  for (let d = GUEST_ROOT_MOUNT; d !== '/'; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o005) !== 0o005) throw new KvmHostError(`${d} must be readable and searchable by all (chmod o+rx ${d}): virtiofsd reaches the guest's root through it`);
  }
  await mount(['-t', 'tmpfs', '-o', 'mode=0755,size=64k,nosuid,nodev,noexec', 'rkt-guest', GUEST_ROOT_MOUNT]);
  const top = path.join(GUEST_ROOT_MOUNT, 'root');
  fs.mkdirSync(top, { mode: 0o755 });
  await idmapBind(helper, paths.stage1Rootfs, top, guestView(base), true);
  const rkt = giveRkt(paths, base);
  // mount(8) applies the flags of a bind itself (a second mount call in one process)
  await mount(['--bind', '-o', 'nosuid,nodev', rkt, path.join(top, 'rkt')]);
  // the guest's /tmp, where systemd builds each app's private /dev: on the host, so that the
  // guest spends no process of its own mounting a tmpfs there
  const tmp = path.join(paths.dir, GUEST_TMP);
  fs.mkdirSync(tmp, { recursive: true, mode: 0o1777 });
  fs.chmodSync(tmp, 0o1777);
  fs.lchownSync(tmp, hostId({ base }, 0), hostId({ base }, 0));
  await mount(['--bind', '-o', 'nosuid,nodev', tmp, path.join(top, 'tmp')]);
  for (const s of specs) {
    const rel = path.relative(paths.stage1Rootfs, s.rootfs);
    if (rel.startsWith('..')) throw new KvmHostError(`app ${s.name}: its rootfs ${s.rootfs} is outside the stage1 rootfs`);
    await mount(['--rbind', s.rootfs, path.join(top, rel)]);
  }
  return top;
}
