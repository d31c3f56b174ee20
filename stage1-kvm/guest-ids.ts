import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { log } from '../src/log.js';
import type { AppSpec, VolumeMount } from '../src/stage1-common/app-spec.js';
import { GUEST_IDS, hostId } from '../src/stage1-common/pod-ids.js';
import { RootfsError, type IdShift } from '../src/stage1-common/rootfs.js';
import { mountOf } from '../src/util/mounts.js';
import { overlayLayersAt, OverlayOptionsError } from '../src/util/overlay-layers.js';
import { KvmHostError } from './errors.js';

// Guest ids are not host ids (kvm over virtio-fs). virtiofsd runs in a user
// namespace whose ids 0..65535 are the pod's block of host ids (base..;
// src/stage1-common/pod-ids.ts), so whatever the guest creates on the share
// is owned on the host by that block: never by host root, and mknod fails
// (no CAP_MKNOD outside the namespace). What the guest must see as its own
// is shown to it through id-mapped mounts (rkt-idmap bind):
//   - the stage1 rootfs and the apps' image trees: host 0..65535 shown as
//     the block, read-only (the apps' writes go to their overlay's upper
//     layer, which the block owns on disk);
//   - a host volume owned by an unprivileged host user: that owner (and
//     group) shown as the app's uid (gid), so the app writes there as the
//     volume's owner. Host root's ids are never mapped: a write through an
//     id-mapped mount lands on disk as the mapped-back owner, and it must
//     never be root. A volume owned by root is bound as it is: the guest
//     sees root's files as nobody's, and writes only where "other" may,
//     as the block's ids.

/** One range of an id map: disk ids ns..ns+count-1 are shown as host..host+count-1. */
export interface IdRange {
  ns: number;
  host: number;
  count: number;
}

export interface IdMaps {
  uid: IdRange[];
  gid: IdRange[];
}

/** The guest's view of host-owned trees: host id i (< 65536) as the block's i. */
export function guestView(base: number): IdMaps {
  const r = [{ ns: 0, host: base, count: GUEST_IDS }];
  return { uid: r, gid: r };
}

/**
 * The map for a host volume owned by `owner` (uid, gid) bound for an app
 * running as `app` (uid, gid), or undefined when it is bound without one
 * (owned by root). A group of 0 is not mapped: the app's group is then its
 * own block id on disk.
 */
export function hostVolumeMaps(base: number, owner: { uid: number; gid: number }, app: { uid: number; gid: number }): IdMaps | undefined {
  if (owner.uid === 0) return undefined;
  const appUid = hostId({ base }, app.uid);
  const appGid = hostId({ base }, app.gid);
  return {
    uid: [{ ns: owner.uid, host: appUid, count: 1 }],
    gid: [{ ns: owner.gid === 0 ? appGid : owner.gid, host: appGid, count: 1 }],
  };
}

/** rkt-idmap's map options. */
export function mapArgs(m: IdMaps): string[] {
  const one = (flag: string, r: IdRange): string[] => [flag, `${r.ns}:${r.host}:${r.count}`];
  return [...m.uid.flatMap((r) => one('--uid', r)), ...m.gid.flatMap((r) => one('--gid', r))];
}

/** The helper, shipped in the stage1 image (stage1-kvm/native/rkt-idmap.c). */
export function idmapHelper(stage1Rootfs: string): string {
  return path.join(stage1Rootfs, 'kvm', 'bin', 'rkt-idmap');
}

export async function idmapBind(helper: string, source: string, target: string, maps: IdMaps, readOnly: boolean): Promise<void> {
  const argv = ['bind', ...(readOnly ? ['--ro'] : []), ...mapArgs(maps), source, target];
  log().debug({ argv: [helper, ...argv] }, 'id-mapped bind');
  const r = await execa(helper, argv, { reject: false, stdin: 'ignore' });
  if (r.exitCode === 0) return;
  const why = String(r.stderr).trim() || (r.message ?? 'failed');
  if (!why.includes('mount_setattr')) throw new KvmHostError(`cannot share ${source} with the guest: ${why}`);
  const fsType = mountOf(fs.realpathSync(source))?.fsType ?? 'unknown';
  throw new KvmHostError(`cannot share ${source} with the guest: its filesystem (${fsType}) does not support id-mapped mounts (${why}); use a directory on one that does, such as ext4, xfs or btrfs, or an overlay of such directories`);
}

/**
 * An app's tree shown read-only with the pod's ids, as the lower layers
 * of its overlay. An overlay mount (containerd's snapshot, an OCI bundle's
 * root) cannot be id-mapped itself, so each of its layers is, in its
 * order, below `target`; the guest's writes go to the app's own upper
 * layer as for any tree.
 */
async function mountTree(helper: string, base: number, tree: string, target: string): Promise<string[]> {
  const real = fs.realpathSync(tree);
  let overlay: ReturnType<typeof overlayLayersAt>;
  try {
    overlay = overlayLayersAt(real);
  } catch (err) {
    if (err instanceof OverlayOptionsError) throw new KvmHostError(`cannot share ${tree} with the guest: ${err.message}`);
    throw err;
  }
  if (overlay === undefined) {
    await idmapBind(helper, real, target, guestView(base), true);
    return [target];
  }
  const lowers: string[] = [];
  for (const [i, layer] of overlay.layers.entries()) {
    const at = path.join(target, String(i));
    fs.mkdirSync(at, { mode: 0o755 });
    await idmapBind(helper, layer, at, guestView(base), true);
    lowers.push(at);
  }
  log().debug({ tree, layers: overlay.layers }, 'an overlay tree shared layer by layer');
  return lowers;
}

async function plainBind(source: string, target: string, readOnly: boolean): Promise<void> {
  const opts = `bind,nosuid,nodev${readOnly ? ',ro' : ''}`;
  let r = await execa('mount', ['--bind', source, target], { reject: false, stdin: 'ignore' });
  // a bind takes its flags from a remount
  if (r.exitCode === 0) r = await execa('mount', ['-o', `remount,${opts}`, target], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new KvmHostError(`cannot share ${source} with the guest: ${String(r.stderr).trim()}`);
}

/** The app rootfs assembly's view of the pod's ids (src/stage1-common/rootfs.ts). */
export function guestIdShift(base: number, helper: string): IdShift {
  return {
    hostId: (id) => hostId({ base }, id),
    mountLower: (tree, target) => mountTree(helper, base, tree, target),
    async bindHostVolume(spec: AppSpec, m: VolumeMount, target: string) {
      if (m.recursive) throw new RootfsError(`volume "${m.volume}": a recursive host volume cannot be shared with the kvm guest over virtio-fs (its submounts would keep host ids); set recursive=false`);
      const st = fs.statSync(m.source);
      const maps = hostVolumeMaps(base, st, spec);
      if (!maps) {
        if (!m.readOnly && (st.mode & 0o002) === 0) {
          log().warn(`volume "${m.volume}": ${m.source} is owned by root, and the kvm guest's ids are not host ids: the app cannot write there; chown it to an unprivileged user, whose files the app then owns`);
        }
        await plainBind(m.source, target, m.readOnly);
        return;
      }
      await idmapBind(helper, m.source, target, maps, m.readOnly);
    },
  };
}
