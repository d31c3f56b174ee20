import fs from 'node:fs';
import path from 'node:path';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseGcArgs } from '../src/stage1-common/entry.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { teardownNetwork } from '../src/stage1-common/pod-net.js';
import { agentPortFile, AGENT_PORTS, killPodHelper, podFile, type PodFile } from './pod-files.js';
import { removeVmCgroup } from './vm-cgroup.js';

// rkt gc for kvm, run on a pod no process holds any more: kill a qemu or
// virtiofsd that somehow survived its run entrypoint (their parent-death
// signal and the pod guardian should have seen to it), and anything else
// left in the pod's cgroup, then remove the cgroup; undo the pod's network
// if run did not live to (kill -9), remove the sockets and FIFOs, and make
// sure nothing is still mounted under the pod directory before stage0
// deletes it. App rootfs mounts live in the run entrypoint's private mount
// namespace and vanished with it; what is found here leaked some other
// way, and is unmounted.

const RUNTIME_FILES: PodFile[] = ['console', 'qmp', 'qmpCtl', 'agent', 'virtiofsSocket', 'migrate'];

export async function gc(argv: string[]): Promise<number> {
  const args = parseGcArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  for (const f of ['qemuPid', 'virtiofsdPid'] as const) {
    if (killPodHelper(paths.dir, f)) log().warn(`pod ${args.uuid}: killed a leftover ${f === 'qemuPid' ? 'qemu' : 'virtiofsd'}`);
  }
  const cgroupsLeft = await removeVmCgroup(paths.dir, args.uuid);
  if (cgroupsLeft.length > 0) log().warn(`pod ${args.uuid}: cannot remove its cgroups ${cgroupsLeft.join(', ')}`);
  // after a kill -9 of run: CNI DEL for each network (leases, masquerading, forwarded ports), the namespace
  const netOk = await teardownNetwork(paths.dir);
  for (const f of RUNTIME_FILES) fs.rmSync(podFile(paths.dir, f), { force: true });
  for (let i = 1; i < AGENT_PORTS; i++) fs.rmSync(path.join(paths.dir, agentPortFile(i)), { force: true });
  for (const f of ['stdout', 'stderr', 'template'] as const) for (const end of ['in', 'out']) fs.rmSync(`${podFile(paths.dir, f)}.${end}`, { force: true });

  const dir = fs.realpathSync(paths.dir);
  const left = await unmountAllUnder(dir);
  if (left.length > 0) {
    log().warn(`pod ${args.uuid}: still mounted: ${left.join(', ')}`);
    return 1;
  }
  return netOk && cgroupsLeft.length === 0 ? 0 : 1;
}

