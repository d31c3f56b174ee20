import { UsageError } from '../src/errors.js';
import { log } from '../src/log.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { podNetRequest, teardownNetwork } from '../src/stage1-common/pod-net.js';
import type { RunArgs } from '../src/stage1-common/entry.js';
import { parseNetList } from '../src/net/netlist.js';
import { setupPodNetwork } from '../src/net/pod-network.js';
import { setupKvmTaps, qemuNetArgs, type GuestNetConfig } from './taps.js';
import type { PodDnsFiles } from '../src/net/dns.js';
import type { HostIds } from '../src/stage1-common/pod-ids.js';

// The host side of a kvm pod's network. The pod gets a network namespace
// and its CNI networks exactly as a container pod would (src/net/); then a
// tap per CNI interface, mirrored to it and owned by the pod's ids, which
// qemu — started inside the namespace, unprivileged — opens as the VM's
// virtio-net NIC with the CNI interface's MAC.
// The guest configures that NIC with the CNI result (guest-net.ts), so to
// the host and to other pods the VM simply is the pod. Teardown is the
// library's, idempotent: the run entrypoint calls it on every exit it
// lives to see, the gc entrypoint after a kill -9.

export interface KvmNetwork {
  mode: 'none' | 'contained';
  /** The pod's namespace, where qemu must run to reach its taps. */
  netnsPath?: string;
  /** One entry per NIC, in interface order (eth0, eth1...). */
  guest: GuestNetConfig[];
  dnsFiles: PodDnsFiles;
}

/** The device qemu gives each NIC: microvm has no PCI, only virtio-mmio. */
export const NIC_DEVICE = 'virtio-net-device';

/**
 * Refuse what a VM cannot do before anything is set up: sharing the
 * host's network namespace would give the guest nothing (its kernel has
 * its own network stack), so rkt's kvm flavor refuses it too.
 */
export function checkNetRequest(nets: readonly string[]): void {
  const req = parseNetList(nets.length === 0 ? ['default'] : nets);
  if (req.kind === 'host') {
    throw new UsageError('--net=host cannot be used with the kvm stage1: a VM cannot share the host network namespace; use --net=default, a named network or --net=none');
  }
}

/**
 * Set up the pod's networks (nothing is left on the host if this throws).
 * `none`: a namespace with loopback only and no NIC in the VM.
 */
export async function setupNetwork(paths: PodPaths, args: RunArgs, hostname: string, tapOwner: HostIds): Promise<KvmNetwork> {
  checkNetRequest(args.net);
  const req = podNetRequest(paths, args, hostname);
  const t0 = Date.now();
  const r = await setupPodNetwork(paths.dir, args.uuid, req.nets, { ...req.options, allowHost: false });
  if (r.mode === 'host') throw new UsageError('--net=host cannot be used with the kvm stage1');
  if (r.mode === 'none') {
    log().debug(`network: none (loopback only), set up in ${Date.now() - t0} ms`);
    return { mode: 'none', ...(r.netnsPath !== undefined && { netnsPath: r.netnsPath }), guest: [], dnsFiles: r.dnsFiles };
  }
  let guest: GuestNetConfig[];
  try {
    guest = await setupKvmTaps(paths.dir, { owner: tapOwner });
  } catch (err) {
    await teardownNetwork(paths.dir);
    throw err;
  }
  log().debug({ nics: guest.map((g) => ({ network: g.network, ifName: g.ifName, tap: g.tapName, mac: g.mac, ip: g.ip })) }, `network set up in ${Date.now() - t0} ms`);
  return { mode: 'contained', netnsPath: r.netnsPath!, guest, dnsFiles: r.dnsFiles };
}

/** qemu's NIC arguments for the pod (none for --net=none). */
export function nicArgs(n: KvmNetwork): string[] {
  return qemuNetArgs(n.guest, NIC_DEVICE);
}
