import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isErrno, LockBusyError } from '../src/errors.js';
import { FileLock } from '../src/util/lock.js';
import { KvmHostError } from './errors.js';

// The host uid and gid a pod's qemu runs under: a pair of its own for each
// running pod, owned by no user and shared with no other pod, so that a
// guest that takes qemu over holds the rights of ids that own nothing on
// the host but that pod's sockets, FIFOs, console log and taps.
//
// Each running pod holds a block of host ids (a slot): 0x20000 ids from
// 0x70000000 + slot * 0x20000, held by an flock(2) on
// /run/rkt/pod-ids/<slot>.lock that the run entrypoint keeps for the pod's
// life (the kernel drops it however the process ends, so nothing goes
// stale). The first 0x10000 ids of a block are kept for the guest's own ids
// on the host; qemu's uid and gid are the id right after them
// (QEMU_ID_OFFSET), so that it never owns what the guest makes. A pod
// starts its search at a slot given by its UUID, so that pods rarely probe
// the same slots.
//
// The blocks lie in 0x70000000..0x7ffdffff, which systemd leaves unused:
// above useradd's ids and its default subordinate ranges (which end near
// 6*10^8) and systemd-nspawn's private-user ranges, below systemd's
// "foreign" range and below 2^31, from where tools that read ids as signed
// numbers (ps) show them negative. A host that uses them anyway is refused:
// an id in /etc/passwd or /etc/group, or a user's subordinate ids in
// /etc/subuid or /etc/subgid (their containers run as those), inside the
// range. Ids from other name services (LDAP) are not checked.

export const FIRST_ID = 0x70000000;
export const SLOT_IDS = 0x20000;
export const SLOTS = (0x7ffe0000 - FIRST_ID) / SLOT_IDS;
/** qemu's ids within a block: after the 0x10000 kept for the guest's ids. */
export const QEMU_ID_OFFSET = 0x10000;
export const POD_IDS_DIR = '/run/rkt/pod-ids';

export interface PodIds {
  uid: number;
  gid: number;
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
    if (other) throw new KvmHostError(`the subordinate ids of user ${other.name} in ${file} reach into the ids the kvm stage1 runs pods as (${RANGE}); move them below ${FIRST_ID}`);
  }
  for (const [text, file, what] of [
    [files.passwd, '/etc/passwd', 'user'],
    [files.group, '/etc/group', 'group'],
  ] as const) {
    const taken = fileIds(text).find((u) => inside(u.id));
    if (taken) throw new KvmHostError(`${what} ${taken.name} in ${file} has id ${taken.id}, inside the ids the kvm stage1 runs pods as (${RANGE}); give it another id`);
  }
}

/** Where a pod's search for a free slot starts. */
export function firstSlot(uuid: string): number {
  return crypto.createHash('sha256').update(uuid).digest().readUInt32BE(0) % SLOTS;
}

/** qemu's ids in a slot's block. */
export function qemuIds(slot: number): PodIds {
  const id = FIRST_ID + slot * SLOT_IDS + QEMU_ID_OFFSET;
  return { uid: id, gid: id };
}

/** A pod's slot, held until release() or until its process ends. */
export class PodIdLease {
  constructor(
    readonly slot: number,
    private readonly lock: FileLock,
  ) {}

  get qemu(): PodIds {
    return qemuIds(this.slot);
  }

  release(): void {
    this.lock.release();
  }
}

/** Claim a free slot for the pod `uuid`. */
export function claimPodIds(uuid: string, dir = POD_IDS_DIR): PodIdLease {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const start = firstSlot(uuid);
  for (let i = 0; i < SLOTS; i++) {
    const slot = (start + i) % SLOTS;
    try {
      return new PodIdLease(slot, FileLock.acquire(path.join(dir, `${slot}.lock`), 'exclusive', { wait: false, create: true, what: `pod id slot ${slot}` }));
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
    }
  }
  throw new KvmHostError(`all ${SLOTS} blocks of pod ids are in use (${dir}); stop some pods`);
}
