import type { PodManifest } from '../appc/types.js';
import type { DnsOptions } from '../net/dns.js';
import { checkHostOnlyNetList } from '../net/netlist.js';
import { checkNetworkRequest } from '../net/pod-network.js';
import { resolvePortMappings } from '../net/ports.js';
import { checkHostSource } from '../stage1-common/rootfs.js';
import { FLAVORS } from '../stage1/select.js';

// What stage1 would refuse once the pod exists, refused by stage0 before
// it does: a failed `rkt run` then leaves no exited pod without app
// statuses in `rkt list`. stage1 checks the same things again (a pod may
// be run by another stage0), with the same code. The rules that differ by
// flavor (kvm cannot join the host network, fly has only that one) are
// told apart by the stage1 image's name.

export interface StartRequest {
  /** --net as given; empty means the default network. */
  net: readonly string[];
  dns?: DnsOptions;
  hostsEntries?: readonly string[];
  localConfig?: string;
  systemConfig?: string;
}

/** Throw what the stage1 named by `stage1Name` would throw for this manifest and these flags. */
export function checkPodCanStart(manifest: PodManifest, stage1Name: string, req: StartRequest): void {
  for (const v of manifest.volumes ?? []) {
    if (v.kind === 'host' && v.source !== undefined) checkHostSource(v.source, v.name);
  }
  if (stage1Name === FLAVORS.fly.name) {
    checkHostOnlyNetList(req.net, 'fly');
    return;
  }
  const ports = resolvePortMappings(manifest.ports ?? [], manifest.apps.map((a) => ({ app: a.name, ports: a.app?.ports ?? [] })));
  checkNetworkRequest(req.net.length === 0 ? ['default'] : req.net, {
    ...(req.localConfig !== undefined && { localConfig: req.localConfig }),
    ...(req.systemConfig !== undefined && { systemConfig: req.systemConfig }),
    ...(req.dns !== undefined && { dns: req.dns }),
    hostsEntries: req.hostsEntries ?? [],
    ports,
    // a VM has its own network stack: it cannot join the host's
    allowHost: stage1Name !== FLAVORS.kvm.name,
  });
}
