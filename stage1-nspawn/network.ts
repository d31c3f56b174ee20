import fs from 'node:fs';
import { log } from '../src/log.js';
import type { PodDnsFiles } from '../src/net/dns.js';
import { setupPodNetwork, type PodNetworkResult } from '../src/net/pod-network.js';
import type { PodPaths } from '../src/stage1/contract.js';
import type { RunArgs } from '../src/stage1-common/entry.js';
import { podNetRequest } from '../src/stage1-common/pod-net.js';
import type { ExtraMount, PrepareOptions } from '../src/stage1-common/rootfs.js';

// The host side of an nspawn pod's network: a network namespace per pod,
// joined to its CNI networks before the container starts (src/net/), in
// which systemd-nspawn is then started (nspawn-args.ts says why not with
// --network-namespace-path); --net=host keeps the host's. The pod's resolv.conf and hosts are bound read-only on
// each app's /etc, so an app cannot rewrite what the pod was given.
// Teardown is the library's and idempotent: run calls it on every exit it
// lives to see, gc after a kill -9.

export interface NspawnNetwork {
  result: PodNetworkResult;
  /** The namespace the container runs in; absent for --net=host. */
  netnsPath?: string;
}

/** Set up the pod's networks; nothing is left configured on the host if this throws. */
export async function setupNetwork(paths: PodPaths, args: RunArgs, hostname: string): Promise<NspawnNetwork> {
  const { nets, options } = podNetRequest(paths, args, hostname);
  const t0 = performance.now();
  const result = await setupPodNetwork(paths.dir, args.uuid, nets, options);
  log().debug(
    { mode: result.mode, networks: result.networks.map((n) => ({ name: n.name, ifName: n.ifName, ip: n.ip })), ports: result.ports },
    `network set up in ${(performance.now() - t0).toFixed(0)} ms`,
  );
  return { result, ...(result.mode !== 'host' && { netnsPath: result.netnsPath! }) };
}

/** One of the pod's DNS files bound read-only on the app's /etc, when the pod has its own. */
function etcMount(plan: PodDnsFiles['resolvConf'] | PodDnsFiles['hosts'], target: string): ExtraMount | undefined {
  // host files are bound as they are, so that the app sees the host's later edits (rkt's --dns=host)
  const source = plan.source === 'host' ? plan.hostPath : plan.path;
  return source !== undefined && fs.existsSync(source) ? { kind: 'bind', source, target, readOnly: true } : undefined;
}

/**
 * How each app's /etc/resolv.conf and /etc/hosts come to be. An image
 * without its own gets the hosts fallback (localhost and the pod's name);
 * on the host network it also gets a copy of the host's resolv.conf (the
 * host's resolvers are reachable there, and were before pods had networks).
 */
export function rootfsEtcOptions(dns: PodDnsFiles, mode: PodNetworkResult['mode']): PrepareOptions {
  const mounts = [etcMount(dns.resolvConf, '/etc/resolv.conf'), etcMount(dns.hosts, '/etc/hosts')].filter((m): m is ExtraMount => m !== undefined);
  return {
    extraMounts: mounts,
    hosts: dns.hosts.fallback,
    ...(mode === 'host' && dns.resolvConf.source === 'image' && { resolvConf: '/etc/resolv.conf' }),
  };
}
