import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { LockBusyError, RktError } from '../errors.js';
import { FileLock } from '../util/lock.js';

// Per-pod blocks of host ids, for the processes of a pod that must not run
// as host root (the kvm flavor's virtiofsd, whose user namespace maps the
// guest's ids 0..65535 into the block; qemu's own id is proposed at
// QEMU_ID_OFFSET). A block is a slot: while the run entrypoint lives it
// holds an flock(2) on /run/rkt/pod-ids/<slot>.lock, so a slot is free as
// soon as its pod's run process is gone, however it ended, and no state can
// go stale. A slot is reused after its pod ended: files a pod left owned by
// its block (in its own pod directory, or in a world-writable host volume)
// then belong to the later pod's ids.
//
// The blocks lie in 0x70000000..0x7FFDFFFF, which systemd leaves unused
// (systemd-nspawn picks its ranges below 0x6FFF0000, the foreign-id range
// and the 16-bit-signed trouble start above), and which /etc/subuid
// conventionally does not reach.

/** Ids the guest can use: 0..65535, as in a user namespace of a container. */
export const GUEST_IDS = 0x10000;
/** Size of one pod's block: the guest's ids, then ids for the pod's own helpers. */
export const SLOT_IDS = 0x20000;
/** Proposed: qemu's uid and gid in the block (after the guest's ids). */
export const QEMU_ID_OFFSET = GUEST_IDS;
export const FIRST_ID = 0x70000000;
export const SLOTS = (0x7ffe0000 - FIRST_ID) / SLOT_IDS;
export const POD_IDS_DIR = '/run/rkt/pod-ids';

export class PodIdsError extends RktError {}

export interface PodIds {
  slot: number;
  /** Host id of the guest's id 0; guest id i (< GUEST_IDS) is host base + i. */
  base: number;
  /** Held while the pod runs. */
  lock: FileLock;
}

/** The host id of guest id `id`. */
export function hostId(ids: { base: number }, id: number): number {
  if (!Number.isInteger(id) || id < 0 || id >= GUEST_IDS) throw new PodIdsError(`id ${id} is outside the guest's ids (0..${GUEST_IDS - 1})`);
  return ids.base + id;
}

/** Where a pod's search for a free slot starts: spread by UUID, so that pods rarely probe the same slots. */
export function firstSlot(uuid: string): number {
  return crypto.createHash('sha256').update(uuid).digest().readUInt32BE(0) % SLOTS;
}

/** Claim a free block for the pod `uuid`; held until `lock.release()` or the process ends. */
export function claimPodIds(uuid: string, dir = POD_IDS_DIR): PodIds {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const start = firstSlot(uuid);
  for (let i = 0; i < SLOTS; i++) {
    const slot = (start + i) % SLOTS;
    try {
      const lock = FileLock.acquire(path.join(dir, `${slot}.lock`), 'exclusive', { wait: false, create: true, what: `pod id slot ${slot}` });
      return { slot, base: FIRST_ID + slot * SLOT_IDS, lock };
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
    }
  }
  throw new PodIdsError(`all ${SLOTS} blocks of pod ids are in use (${dir}); stop some pods`);
}
