import fs from 'node:fs';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { log } from '../log.js';
import { writeFileAtomic } from '../util/atomic.js';

// A pod's own cgroup, made by hand (cgroupfs), for the flavors that put
// host processes in one: nspawn's container where no systemd-machined makes
// a scope for it, kvm's qemu (always, for its memory limit).
//
// Every pod gets rkt-<uuid> below the caller's cgroup, in every hierarchy
// the caller is in (v1 controllers, name=systemd, the v2 tree), whether the
// host is v1, v2 or hybrid. Below the caller, not at the root: the caller's
// limits (a CI job's memory cgroup, a user slice) keep applying to its pods.
//
// The directories are recorded in a file of the pod directory (one name per
// flavor) before they are made, so that gc can remove them after a crash,
// deepest first once empty.

export interface Hierarchy {
  /** Where the hierarchy is mounted, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup. */
  mount: string;
  /** Our cgroup in it, from /proc/self/cgroup: "/" or "/user.slice/...". */
  path: string;
  version: 1 | 2;
  /** v1: the controllers (or name=...) of the hierarchy. */
  controllers: string[];
}

interface CgroupMount {
  mountPoint: string;
  root: string;
  version: 1 | 2;
  options: string[];
  readOnly: boolean;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function cgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0) continue;
    const fstype = f[sep + 1];
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    out.push({
      mountPoint: unescape(f[4] ?? ''),
      root: unescape(f[3] ?? '/'),
      version: fstype === 'cgroup2' ? 2 : 1,
      options: (f[sep + 3] ?? '').split(','),
      readOnly: (f[5] ?? '').split(',').includes('ro'),
    });
  }
  return out;
}

/** The hierarchies this process is in, each with its writable mount; those without one are left out. */
export function ourHierarchies(procCgroup: string, mountinfo: string): Hierarchy[] {
  const mounts = cgroupMounts(mountinfo).filter((m) => !m.readOnly && m.root === '/');
  const out: Hierarchy[] = [];
  for (const line of procCgroup.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, id, list, p] = m;
    if (id === '0' && list === '') {
      const mount = mounts.find((x) => x.version === 2);
      if (mount) out.push({ mount: mount.mountPoint, path: p!, version: 2, controllers: [] });
      continue;
    }
    const controllers = list!.split(',').filter((c) => c !== '');
    const mount = mounts.find((x) => x.version === 1 && controllers.every((c) => x.options.includes(c)));
    if (mount) out.push({ mount: mount.mountPoint, path: p!, version: 1, controllers });
  }
  return out;
}

export function podCgroupName(uuid: string): string {
  return `rkt-${uuid}`;
}

/** The pod's cgroup directory in each hierarchy. */
export function podCgroupDirs(hierarchies: readonly Hierarchy[], uuid: string): string[] {
  return hierarchies.map((h) => path.join(h.mount, h.path, podCgroupName(uuid)));
}

function copyCpuset(dir: string): void {
  // a v1 cpuset cgroup takes no task until it has cpus and mems
  for (const f of ['cpuset.cpus', 'cpuset.mems']) {
    const parent = path.join(path.dirname(dir), f);
    if (fs.existsSync(parent)) fs.writeFileSync(path.join(dir, f), fs.readFileSync(parent, 'utf8').trim() || '\n');
  }
}

/** v2: let the pod's systemd have the resource controllers, if our cgroup may hand them down. */
function delegateControllers(dir: string): void {
  const parent = path.dirname(dir);
  let available: string[];
  try {
    available = fs.readFileSync(path.join(parent, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
  } catch {
    // nothing to hand down: delegation is best effort, as below
    return;
  }
  const want = ['cpu', 'memory', 'pids'].filter((c) => available.includes(c));
  if (want.length === 0) return;
  try {
    fs.writeFileSync(path.join(parent, 'cgroup.subtree_control'), want.map((c) => `+${c}`).join(' '));
  } catch (err) {
    // the caller's cgroup has processes of its own (v2 allows no controllers below those)
    log().debug(`cannot enable ${want.join(', ')} below ${parent}: ${(err as Error).message}; resource isolators may not apply`);
  }
}

/** The hierarchies the calling process is in. */
export function hostHierarchies(): Hierarchy[] {
  return ourHierarchies(fs.readFileSync('/proc/self/cgroup', 'utf8'), fs.readFileSync('/proc/self/mountinfo', 'utf8'));
}

/**
 * Create the pod's cgroups and return the cgroup.procs files a process
 * writes its pid into to join them all. Records them in `recordFile` of the
 * pod directory first.
 */
export function createPodCgroups(podDir: string, recordFile: string, uuid: string, hierarchies: readonly Hierarchy[]): string[] {
  const dirs = podCgroupDirs(hierarchies, uuid);
  writeFileAtomic(path.join(podDir, recordFile), JSON.stringify(dirs) + '\n');
  hierarchies.forEach((h, i) => {
    const dir = dirs[i]!;
    fs.mkdirSync(dir, { recursive: true });
    if (h.version === 1 && h.controllers.includes('cpuset')) copyCpuset(dir);
    if (h.version === 2) delegateControllers(dir);
  });
  return dirs.map((d) => path.join(d, 'cgroup.procs'));
}

export function recordedCgroups(podDir: string, recordFile: string): string[] {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(path.join(podDir, recordFile), 'utf8'));
    return Array.isArray(v) ? v.filter((d): d is string => typeof d === 'string' && path.isAbsolute(d) && path.basename(d).startsWith('rkt-')) : [];
  } catch {
    // none recorded (the pod never got as far), or unreadable: clean-up then has no cgroup to remove
    return [];
  }
}

function subdirsDeepestFirst(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      // removed meanwhile
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

/** Processes still in a cgroup directory or any below it. */
export function cgroupPids(dir: string): number[] {
  const pids: number[] = [];
  for (const d of subdirsDeepestFirst(dir)) {
    try {
      for (const l of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n')) if (/^\d+$/.test(l)) pids.push(Number(l));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/**
 * Remove the pod's cgroups, children first, and return those that could
 * not go: a cgroup with a process left in it. Nothing is killed here.
 */
export function removeCgroups(dirs: readonly string[]): string[] {
  const left: string[] = [];
  for (const top of dirs) {
    for (const d of subdirsDeepestFirst(top)) {
      try {
        fs.rmdirSync(d);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) left.push(d);
      }
    }
  }
  return left;
}

/**
 * removeCgroups, retried for up to `waitMs`: processes that have just been
 * killed leave their cgroups within moments. Returns what is left.
 */
export async function removeCgroupsWaiting(dirs: readonly string[], waitMs = 1000): Promise<string[]> {
  const end = Date.now() + waitMs;
  for (;;) {
    const left = removeCgroups(dirs);
    if (left.length === 0 || Date.now() >= end) return left;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function writeIfPresent(file: string, value: string): boolean {
  if (!fs.existsSync(file)) return false;
  fs.writeFileSync(file, value);
  return true;
}

/**
 * Limit the memory of a pod's cgroups to `bytes`, swap included: on a v1
 * memory hierarchy memory.limit_in_bytes (and memory.memsw.limit_in_bytes
 * where swap is accounted), on v2 memory.max and memory.swap.max=0 where the
 * memory controller reaches the pod's cgroup (a hybrid host has it on v1
 * only). Returns the files that now hold the limit: none means that the
 * host gave us no memory controller to use.
 */
export function limitMemory(hierarchies: readonly Hierarchy[], dirs: readonly string[], bytes: number): string[] {
  const set: string[] = [];
  hierarchies.forEach((h, i) => {
    const dir = dirs[i]!;
    if (h.version === 1 && h.controllers.includes('memory')) {
      fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(bytes));
      // memsw (memory + swap) may not be below the memory limit: set after it
      writeIfPresent(path.join(dir, 'memory.memsw.limit_in_bytes'), String(bytes));
      set.push(path.join(dir, 'memory.limit_in_bytes'));
    } else if (h.version === 2 && writeIfPresent(path.join(dir, 'memory.max'), String(bytes))) {
      writeIfPresent(path.join(dir, 'memory.swap.max'), '0');
      set.push(path.join(dir, 'memory.max'));
    }
  });
  return set;
}
