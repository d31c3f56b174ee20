import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isErrno, LockBusyError, RktError } from '../errors.js';
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

/** A uid and gid on the host. */
export interface HostIds {
  uid: number;
  gid: number;
}

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

/** qemu's ids in a pod's block: the first past the guest's, so that no guest id is qemu's. */
export function qemuIds(ids: { base: number }): HostIds {
  const id = ids.base + QEMU_ID_OFFSET;
  return { uid: id, gid: id };
}

interface SubIdEntry {
  name: string;
  start: number;
  count: number;
}

/** Entries of /etc/subuid or /etc/subgid ("name:start:count"); other lines are skipped, as shadow-utils does. */
export function parseSubIds(text: string): SubIdEntry[] {
  const out: SubIdEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^([^:#\s][^:]*):(\d+):(\d+)$/.exec(line.trim());
    if (m) out.push({ name: m[1]!, start: Number(m[2]), count: Number(m[3]) });
  }
  return out;
}

/** The names and ids (third field) of /etc/passwd or /etc/group. */
function fileIds(text: string): { name: string; id: number }[] {
  return text
    .split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[2]!))
    .map((f) => ({ name: f[0]!, id: Number(f[2]) }));
}

export interface IdFiles {
  subuid: string;
  subgid: string;
  passwd: string;
  group: string;
}

export function readIdFiles(etc = '/etc'): IdFiles {
  const read = (f: string): string => {
    try {
      return fs.readFileSync(path.join(etc, f), 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return '';
      throw err;
    }
  };
  return { subuid: read('subuid'), subgid: read('subgid'), passwd: read('passwd'), group: read('group') };
}

const RANGE_END = FIRST_ID + SLOTS * SLOT_IDS;
const RANGE = `${FIRST_ID}-${RANGE_END - 1} (0x${FIRST_ID.toString(16)}-0x${(RANGE_END - 1).toString(16)})`;

/** Refuse a host whose users, groups or subordinate ids reach into the pods' ids. */
export function checkIdRange(files: IdFiles): void {
  const inside = (id: number): boolean => id >= FIRST_ID && id < RANGE_END;
  for (const [text, file] of [
    [files.subuid, '/etc/subuid'],
    [files.subgid, '/etc/subgid'],
  ] as const) {
    const other = parseSubIds(text).find((e) => e.start < RANGE_END && FIRST_ID < e.start + e.count);
    if (other) throw new PodIdsError(`the subordinate ids of user ${other.name} in ${file} reach into the ids the kvm stage1 runs pods as (${RANGE}); move them below ${FIRST_ID}`);
  }
  for (const [text, file, what] of [
    [files.passwd, '/etc/passwd', 'user'],
    [files.group, '/etc/group', 'group'],
  ] as const) {
    const taken = fileIds(text).find((u) => inside(u.id));
    if (taken) throw new PodIdsError(`${what} ${taken.name} in ${file} has id ${taken.id}, inside the ids the kvm stage1 runs pods as (${RANGE}); give it another id`);
  }
}
