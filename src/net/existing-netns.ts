import { execInNetns, isNetns } from './netns.js';
import { NetworkSetupError } from './errors.js';
import type { JsonObject } from './config.js';
import type { NetworkState } from './state.js';

// A pod may join a network namespace that someone else made and owns (a CRI
// runtime's, whose CNI set-up already ran): rkt neither adds it to networks
// nor deletes it. Each interface found there (but loopback) is recorded as
// one of the pod's networks, with a CNI-style result built from the
// interface's own addresses and routes, so that what reads the networks
// (DNS files, rkt list, the kvm flavor's taps) works as for rkt's own.

interface IpAddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  scope?: string;
}
interface IpAddr {
  ifname: string;
  address?: string;
  link_type?: string;
  addr_info?: IpAddrInfo[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
}

async function ipJson<T>(netns: string, argv: string[]): Promise<T[]> {
  const out = await execInNetns(netns, ['ip', '-j', ...argv], `cannot read the network namespace ${netns}`);
  return out.trim() === '' ? [] : (JSON.parse(out) as T[]);
}

/** The namespace's interfaces as the pod's networks, already "added" (nothing to run, nothing to undo). */
export async function existingNetworks(netns: string): Promise<NetworkState[]> {
  if (!isNetns(netns)) throw new NetworkSetupError(`${netns} is not a network namespace (any more); the pod cannot join it`);
  const links = (await ipJson<IpAddr>(netns, ['addr', 'show'])).filter((l) => l.link_type !== 'loopback' && l.ifname !== 'lo');
  const routes = [...(await ipJson<IpRoute>(netns, ['-4', 'route', 'show'])), ...(await ipJson<IpRoute>(netns, ['-6', 'route', 'show']))];
  return links.map((l): NetworkState => {
    const addrs = (l.addr_info ?? []).filter((a) => a.scope !== 'link' && (a.family === 'inet' || a.family === 'inet6'));
    const mine = routes.filter((r) => r.dev === l.ifname);
    const gateway = (family: string) => mine.find((r) => r.dst === 'default' && r.gateway !== undefined && r.gateway.includes(':') === (family === 'inet6'))?.gateway;
    const result: JsonObject = {
      cniVersion: '1.0.0',
      interfaces: [{ name: l.ifname, ...(l.address !== undefined && { mac: l.address }), sandbox: netns }],
      ips: addrs.map((a) => ({ address: `${a.local}/${a.prefixlen}`, interface: 0, ...(gateway(a.family) !== undefined && { gateway: gateway(a.family)! }) })),
      routes: mine.filter((r) => r.gateway !== undefined).map((r) => ({ dst: r.dst === 'default' ? (r.gateway!.includes(':') ? '::/0' : '0.0.0.0/0') : r.dst, gw: r.gateway! })),
    };
    return { name: l.ifname, ifName: l.ifname, args: '', file: netns, invocation: { name: l.ifname, cniVersion: undefined, plugins: [] }, phase: 'added', result };
  });
}
