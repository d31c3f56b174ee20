import fs from 'node:fs';
import path from 'node:path';
import { log } from '../src/log.js';
import { cgroupPids, createPodCgroups, hostHierarchies, limitMemory, podCgroupName, recordedCgroups, removeCgroups, removeCgroupsWaiting } from '../src/stage1-common/cgroups.js';
import type { Accel } from './config.js';
import { KvmHostError } from './errors.js';
import { TCG_TB_MIB } from './qemu.js';

// The pod's cgroup on the host: qemu (its jail's launcher joins it before
// qemu starts, jail.ts) and the pod's other host helpers, rkt-<uuid> below
// the run entrypoint's cgroup in every hierarchy (src/stage1-common/cgroups.ts),
// with a memory limit: the guest's RAM plus qemu's own overhead. The guest
// cannot use more RAM than it was given; the limit is for a qemu the guest
// has taken over, which could otherwise allocate without end.

export const KVM_CGROUPS_FILE = 'kvm-cgroups.json';

/**
 * What qemu and the pod's other host helpers may use beyond the guest's RAM,
 * in MiB: 256, about five times what they were measured to use. The guest's
 * RAM is charged to the cgroup as the guest touches it (shared memory, for
 * virtiofsd); besides it, qemu 7.2 used 25 MiB of its own (heap, thread
 * stacks, device state) in an idle one-app pod, virtiofsd uses about 20 MiB,
 * and what they read (the kernel, the pod's files) is charged as page
 * cache, which the kernel reclaims at the limit rather than failing. tcg
 * adds its translation cache, capped at TCG_TB_MIB (qemu.ts), of which such
 * a pod used 53 MiB. Too small a limit kills the VM; too large one only
 * lets a qemu that the guest took over use a little more.
 */
export const QEMU_OVERHEAD_MIB: Record<Accel, number> = { kvm: 256, tcg: 256 + TCG_TB_MIB };

export function vmMemoryLimitBytes(guestMiB: number, accel: Accel): number {
  return (guestMiB + QEMU_OVERHEAD_MIB[accel]) * 1024 * 1024;
}

export interface VmCgroup {
  /** cgroup.procs files to join. */
  procs: string[];
  /** Where the limit is set (memory.limit_in_bytes or memory.max). */
  limitFiles: string[];
}

/** Create the pod's cgroups with their memory limit; refuses a host that gives us no memory controller. */
export function createVmCgroup(podDir: string, uuid: string, limitBytes: number): VmCgroup {
  const hierarchies = hostHierarchies();
  const procs = createPodCgroups(podDir, KVM_CGROUPS_FILE, uuid, hierarchies);
  const limitFiles = limitMemory(
    hierarchies,
    procs.map((p) => path.dirname(p)),
    limitBytes,
  );
  if (limitFiles.length === 0) {
    removeCgroups(procs.map((p) => path.dirname(p)));
    throw new KvmHostError(
      'the kvm stage1 cannot limit the memory of the pod\'s qemu: no writable cgroup hierarchy with the memory controller reaches the cgroup rkt runs in (on cgroup v2, run rkt in a cgroup that delegates it, e.g. systemd-run --scope -p Delegate=yes rkt run ...)',
    );
  }
  log().debug(`pod cgroups ${procs.map((p) => path.dirname(p)).join(', ')}: memory limit ${limitBytes} bytes`);
  return { procs, limitFiles };
}

/**
 * Remove the pod's cgroups, killing whatever is still in them first:
 * anything in a pod's own cgroup is that pod's (its qemu, its jail's
 * launcher, its virtiofsd), since only root can move a process into it.
 * Returns the cgroups that are left.
 */
export async function removeVmCgroup(podDir: string, uuid: string): Promise<string[]> {
  const dirs = recordedCgroups(podDir, KVM_CGROUPS_FILE).filter((d) => path.basename(d) === podCgroupName(uuid) && fs.existsSync(d));
  if (dirs.length === 0) return [];
  for (const pid of new Set(dirs.flatMap(cgroupPids))) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
  const left = await removeCgroupsWaiting(dirs, 2000);
  if (left.length === 0) fs.rmSync(path.join(podDir, KVM_CGROUPS_FILE), { force: true });
  return left;
}
