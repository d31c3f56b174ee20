import { log } from '../src/log.js';
import { normalizeResult, prefixToMask, type CniDns } from '../src/net/cni.js';
import { NetworkSetupError } from '../src/net/errors.js';
import { execInNetns, isLiveNetns } from '../src/net/netns.js';
import { removeTap } from '../src/net/pod-network.js';
import { readState, writeState, type TapState } from '../src/net/state.js';

// The VM flavor reuses the CNI set-up unchanged: the plugins configure a
// veth (eth0...) in the pod's namespace as for any pod; then, inside that
// namespace, a tap device is created for qemu and tied to the CNI interface
// with tc: everything arriving on eth0 is redirected out of the tap and
// everything qemu writes to the tap out of eth0 (the "tc mirred" scheme of
// VM runtimes that reuse CNI). The guest takes eth0's MAC address, its
// addresses and its routes, so to the host and to other pods the VM simply
// is the pod. qemu runs inside the namespace (nsenter --net=...) and opens
// the tap by name; the tap belongs to the pod's own uid and gid, so that an
// unprivileged qemu may attach to it (and to no other).

export interface GuestRoute {
  /** CIDR, or "default". */
  dst: string;
  gw?: string;
  /** "link" for on-link routes (no gateway), which must be added before routes through them. */
  scope?: string;
}

export interface GuestAddress {
  version: 4 | 6;
  address: string;
  prefixLength: number;
}

/** Everything needed to configure one guest interface, taken from the pod namespace as CNI left it. */
export interface GuestNetConfig {
  network: string;
  /** The CNI interface in the pod namespace. */
  ifName: string;
  /** The tap qemu opens: -netdev tap,ifname=<tapName>,script=no,downscript=no */
  tapName: string;
  /** The guest NIC must use this MAC (the CNI interface's): frames for the pod are addressed to it. */
  mac: string;
  mtu: number;
  addresses: GuestAddress[];
  /** The first IPv4 address, its prefix length and netmask, for simple guest configuration. */
  ip?: string;
  prefixLength?: number;
  mask?: string;
  gateway?: string;
  routes: GuestRoute[];
  dns: CniDns;
}

interface IpLink {
  address?: string;
  mtu?: number;
}
interface IpAddr {
  addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  scope?: string;
  protocol?: string;
}

async function json<T>(netns: string, argv: string[], what: string): Promise<T> {
  const out = await execInNetns(netns, ['ip', '-j', ...argv], what);
  return JSON.parse(out === '' ? '[]' : out) as T;
}

async function tcOrIp(netns: string, argv: string[], what: string): Promise<void> {
  await execInNetns(netns, argv, what);
}

/** Addresses and routes of the CNI interface, as the guest must have them. */
async function readInterface(netns: string, ifName: string): Promise<Pick<GuestNetConfig, 'mac' | 'mtu' | 'addresses' | 'routes'>> {
  const [link] = await json<IpLink[]>(netns, ['link', 'show', 'dev', ifName], `cannot read interface ${ifName}`);
  const [addr] = await json<IpAddr[]>(netns, ['addr', 'show', 'dev', ifName], `cannot read the addresses of ${ifName}`);
  const addresses: GuestAddress[] = (addr?.addr_info ?? [])
    .filter((a) => a.scope === 'global' && (a.family === 'inet' || a.family === 'inet6'))
    .map((a) => ({ version: a.family === 'inet' ? 4 : 6, address: a.local, prefixLength: a.prefixlen }));
  const routes: GuestRoute[] = [];
  for (const fam of ['-4', '-6']) {
    const rs = await json<IpRoute[]>(netns, [fam, 'route', 'show', 'dev', ifName], `cannot read the routes of ${ifName}`);
    // kernel routes come back by themselves when the guest configures its address
    for (const r of rs.filter((x) => x.protocol !== 'kernel' && !x.dst.startsWith('fe80:') && x.dst !== 'multicast')) {
      routes.push({ dst: r.dst, ...(r.gateway !== undefined && { gw: r.gateway }), ...(r.scope !== undefined && r.scope !== 'global' && { scope: r.scope }) });
    }
  }
  // on-link routes first: a route "via" a gateway needs the route to the gateway
  routes.sort((a, b) => Number(a.gw !== undefined) - Number(b.gw !== undefined));
  if (!link?.address) throw new NetworkSetupError(`interface ${ifName} in the pod namespace has no MAC address`);
  return { mac: link.address, mtu: link.mtu ?? 1500, addresses, routes };
}


/**
 * Create one tap per CNI network of a pod set up by setupPodNetwork, and
 * return the guest configuration of each, in interface order. Recorded in
 * the pod's network state, so teardownPodNetwork removes them too.
 */
export async function setupKvmTaps(podDir: string, opts: { multiQueue?: boolean; owner?: { uid: number; gid: number } } = {}): Promise<GuestNetConfig[]> {
  const st = readState(podDir);
  if (!st || st.tornDown) throw new NetworkSetupError(`the network of pod ${podDir} is not set up; call setupPodNetwork first`);
  if (st.mode === 'host') throw new NetworkSetupError('--net=host cannot be used with a VM: the guest has its own network stack; use --net=default or a named network');
  const netns = st.netnsPath;
  if (!netns || !isLiveNetns(netns)) throw new NetworkSetupError(`the network namespace of pod ${st.podUuid} is gone`);
  const out: GuestNetConfig[] = [];
  const added = st.networks.filter((n) => n.phase === 'added');
  try {
    for (const [i, n] of added.entries()) {
      const tap: TapState = { name: `tap${i}`, ifName: n.ifName };
      if (!st.taps.some((t) => t.name === tap.name)) st.taps.push(tap);
      writeState(podDir, st);
      const iface = await readInterface(netns, n.ifName);
      const what = `cannot connect ${tap.name} to ${n.ifName} for network "${n.name}"`;
      const owner = opts.owner ? ['user', String(opts.owner.uid), 'group', String(opts.owner.gid)] : [];
      await tcOrIp(netns, ['ip', 'tuntap', 'add', 'dev', tap.name, 'mode', 'tap', ...owner, ...(opts.multiQueue ? ['multi_queue'] : [])], what);
      await tcOrIp(netns, ['ip', 'link', 'set', 'dev', tap.name, 'mtu', String(iface.mtu), 'up'], what);
      for (const [from, to] of [
        [n.ifName, tap.name],
        [tap.name, n.ifName],
      ] as const) {
        await tcOrIp(netns, ['tc', 'qdisc', 'add', 'dev', from, 'ingress'], what);
        // u32 matching everything: available where the matchall classifier is not built
        await tcOrIp(netns, ['tc', 'filter', 'add', 'dev', from, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to], what);
      }
      const result = normalizeResult(n.result ?? {});
      const v4 = iface.addresses.find((a) => a.version === 4);
      const gateway = result.ips.find((x) => x.address === v4?.address)?.gateway ?? result.ips.find((x) => x.gateway !== undefined)?.gateway;
      out.push({
        network: n.name,
        ifName: n.ifName,
        tapName: tap.name,
        ...iface,
        ...(v4 && { ip: v4.address, prefixLength: v4.prefixLength, mask: prefixToMask(v4.prefixLength) }),
        ...(gateway !== undefined && { gateway }),
        dns: result.dns,
      });
      log().debug({ tap: tap.name, ifName: n.ifName, netns }, 'tap connected to the CNI interface');
    }
  } catch (err) {
    await teardownKvmTaps(podDir);
    throw err;
  }
  return out;
}

/** Remove the pod's taps (also part of teardownPodNetwork). */
export async function teardownKvmTaps(podDir: string): Promise<void> {
  const st = readState(podDir);
  if (!st || st.taps.length === 0) return;
  if (st.netnsPath) for (const t of st.taps) await removeTap(st.netnsPath, t);
  st.taps = [];
  writeState(podDir, st);
}

/** qemu arguments attaching each tap as a virtio-net NIC with the pod's MAC. */
export function qemuNetArgs(cfgs: readonly GuestNetConfig[], device = 'virtio-net-pci'): string[] {
  return cfgs.flatMap((c, i) => ['-netdev', `tap,id=net${i},ifname=${c.tapName},script=no,downscript=no`, '-device', `${device},netdev=net${i},mac=${c.mac}`]);
}

