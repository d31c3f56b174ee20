import fs from 'node:fs';
import path from 'node:path';
import { execa } from '../util/lazy-execa.js';
import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { addNetwork, delNetwork, normalizeResult, prefixToMask, versionAtLeast, type CniDns, type CniIp, type CniRoute, type NetworkInvocation } from './cni.js';
import { checkPluginsInstalled, findPlugin, isJsonObject, loadNetworkConfigs, pluginDirs as defaultPluginDirs, selectNetworks, type SelectedNetwork } from './config.js';
import { parseHostsEntries, planHosts, planResolvConf, validateDnsOptions, writePodDnsFiles, type DnsOptions, type PodDnsFiles } from './dns.js';
import { NetworkConfigError, NetworkSetupError } from './errors.js';
import { withNetLock } from './hostlock.js';
import { pruneSharedPortmapChains, removeTaggedRules } from './iptables.js';
import { parseNetList } from './netlist.js';
import { existingNetworks } from './existing-netns.js';
import { createNetns, deleteNetns, inNetns, isLiveNetns, isNetns, netnsName, netnsPathOf } from './netns.js';
import { checkHostPortsFree, portmapPluginConf, portmapRuntimeConfig } from './ports.js';
import { STATE_VERSION, readState, writeState, type NetworkState, type PodNetState, type PortMapping, type TapState } from './state.js';

// A pod's networking from start to end: the network namespace, one CNI ADD
// per network (eth0, eth1...), port forwarding, DNS files; and the exact
// reverse. Every step is recorded in <pod>/netinfo/netinfo.json before it is
// taken, so teardown can undo a set-up that was interrupted anywhere,
// including by kill -9. A set-up that fails undoes itself before throwing.

export interface PodNetworkOptions {
  localConfig?: string;
  systemConfig?: string;
  /** Forwarded ports, from resolvePortMappings(). */
  ports?: readonly PortMapping[];
  dns?: DnsOptions;
  /** --hosts-entry values. */
  hostsEntries?: readonly string[];
  hostname?: string;
  /** CNI plugin directories; default: <localConfig>/net.d, /usr/lib/rkt/plugins/net, /usr/lib/cni, /opt/cni/bin. */
  pluginDirs?: readonly string[];
  /** False for flavors that cannot share the host's namespace (kvm). */
  allowHost?: boolean;
  /** Join this existing namespace (not ours) with the interfaces it has, instead of making one (src/net/existing-netns.ts). */
  existingNetns?: string;
}

export interface PodNetwork {
  name: string;
  /** Interface inside the pod namespace. */
  ifName: string;
  /** The interface's first address (IPv4 preferred), when the network assigns one. */
  ip?: string;
  prefixLength?: number;
  /** Dotted netmask, IPv4 only. */
  mask?: string;
  gateway?: string;
  routes: CniRoute[];
  dns: CniDns;
  ips: CniIp[];
  mac?: string;
  /** The host end (veth) when the plugin reports one. */
  hostIfName?: string;
}

export interface PodNetworkResult {
  mode: 'host' | 'none' | 'contained';
  /** The pod's network namespace; absent for --net=host. */
  netnsPath?: string;
  networks: PodNetwork[];
  ports: PortMapping[];
  dnsFiles: PodDnsFiles;
}

const HOST_LOCAL_DIR = '/var/lib/cni/networks';

export function describeNetwork(n: NetworkState): PodNetwork {
  const r = normalizeResult(n.result ?? {});
  const mine = r.ips.filter((x) => x.interface === undefined || x.interface === n.ifName);
  const main = mine.find((x) => x.version === 4) ?? mine[0];
  const inside = r.interfaces.find((i) => i.name === n.ifName && i.sandbox !== undefined);
  const hostSide = r.interfaces.find((i) => i.sandbox === undefined);
  return {
    name: n.name,
    ifName: n.ifName,
    ...(main && { ip: main.address, prefixLength: main.prefixLength, ...(main.version === 4 && { mask: prefixToMask(main.prefixLength) }) }),
    ...(main?.gateway !== undefined && { gateway: main.gateway }),
    // a route without "gw" goes through the interface's gateway (CNI SPEC)
    routes: r.routes.map((x) => (x.gw === undefined && main?.gateway !== undefined && main.version === (x.dst.includes(':') ? 6 : 4) ? { ...x, gw: main.gateway } : x)),
    dns: r.dns,
    ips: r.ips,
    ...(inside?.mac !== undefined && { mac: inside.mac }),
    ...(hostSide && { hostIfName: hostSide.name }),
  };
}

/** Build what each network runs; the port network (rkt: first masquerading one, else the last) gets portmap. */
function invocations(selected: SelectedNetwork[], ports: readonly PortMapping[]): NetworkState[] {
  const masq = selected.findIndex((s) => s.config.ipMasq);
  const portIdx = ports.length === 0 ? -1 : masq !== -1 ? masq : selected.length - 1;
  return selected.map((s, i) => {
    const c = s.config;
    const inv: NetworkInvocation = { name: c.name, cniVersion: c.cniVersion, plugins: c.plugins.map((p) => ({ ...p })) };
    if (i === portIdx) {
      if (!versionAtLeast(c.cniVersion, '0.3.0')) {
        throw new NetworkConfigError(`ports are forwarded through network "${c.name}" (${c.file}), whose cniVersion ${c.cniVersion ?? '0.1.0'} cannot chain the portmap plugin; set "cniVersion" to "0.3.1" or later`);
      }
      const hasPortmap = inv.plugins.some((p) => isJsonObject(p.capabilities) && p.capabilities.portMappings === true);
      if (!hasPortmap) inv.plugins.push(portmapPluginConf());
      inv.runtimeConfig = portmapRuntimeConfig(ports);
    }
    const ipam = c.plugins.map((p) => p.ipam).find((x) => isJsonObject(x) && x.type === 'host-local');
    const dataDir = isJsonObject(ipam) && typeof ipam.dataDir === 'string' ? ipam.dataDir : HOST_LOCAL_DIR;
    return { name: c.name, ifName: s.ifName, args: s.args, file: c.file, invocation: inv, phase: 'pending', ...(ipam !== undefined && { ipamDataDir: path.join(dataDir, c.name) }) };
  });
}

/** Remove a host-local data directory once it holds no lease, only its lock and last-reserved files. */
function pruneIpamDir(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    // gone already (or unreadable): tidying it is best effort
    return;
  }
  if (names.every((n) => n === 'lock' || n.startsWith('last_reserved_ip'))) fs.rmSync(dir, { recursive: true, force: true });
}

async function undo(podDir: string, st: PodNetState): Promise<void> {
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<void> | void) => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  const netns = st.netnsPath;
  const live = netns !== undefined && (st.external ? isNetns(netns) : isLiveNetns(netns));
  if (live) for (const t of st.taps) await attempt(`tap ${t.name}`, () => removeTap(netns, t));
  for (const n of [...st.networks].reverse()) {
    if (n.phase === 'pending' || st.external) continue;
    const rt = { containerId: st.podUuid, netns: live ? netns : '', ifName: n.ifName, args: n.args, pluginDirs: st.pluginDirs };
    await attempt(`network "${n.name}"`, () => delNetwork(n.invocation, rt, n.result));
    await attempt(`rules of network "${n.name}"`, async () => void (await removeTaggedRules(n.name, st.podUuid)));
    if (n.ipamDataDir) pruneIpamDir(n.ipamDataDir);
  }
  if (st.ports.length > 0) await attempt('port forwarding chains', () => pruneSharedPortmapChains());
  if (netns !== undefined && !st.external) await attempt('network namespace', () => deleteNetns(netns));
  if (errors.length > 0) {
    writeState(podDir, st);
    throw new NetworkSetupError(`cannot tear down the network of pod ${st.podUuid}: ${errors.join('; ')}`);
  }
  st.taps = [];
  st.tornDown = true;
  writeState(podDir, st);
}

/**
 * Set up a pod's networks. `nets` is the --net list as given. Throws, with
 * nothing left configured on the host, if any step fails.
 */
/**
 * Everything setupPodNetwork would refuse that can be known without
 * touching the host: the --net list, host networking where the flavor
 * cannot have it, --port, DNS and hosts options, the named networks and
 * their plugins. stage0 calls it before the pod exists, so bad flags
 * leave no pod behind.
 */
export function checkNetworkRequest(nets: readonly string[], opts: PodNetworkOptions = {}): { req: ReturnType<typeof parseNetList>; selected: SelectedNetwork[]; dirs: string[]; hosts: ReturnType<typeof parseHostsEntries> } {
  const req = parseNetList(nets);
  const ports = opts.ports ?? [];
  if (req.kind === 'host' && opts.allowHost === false) {
    throw new NetworkConfigError('--net=host cannot be used with this stage1: a virtual machine has its own network stack; use --net=default, named networks or --net=none');
  }
  if (ports.length > 0 && req.kind !== 'contained') throw new UsageError(`--port needs a contained network; it cannot be used with --net=${req.kind}`);
  if (opts.dns) validateDnsOptions(opts.dns);
  const hosts = parseHostsEntries(opts.hostsEntries ?? []);
  const dirs = [...(opts.pluginDirs ?? defaultPluginDirs(opts.localConfig))];
  const selected = req.kind === 'contained' ? selectNetworks(req, loadNetworkConfigs(opts)) : [];
  for (const s of selected) checkPluginsInstalled(s.config, dirs);
  if (ports.length > 0 && findPlugin('portmap', dirs) === undefined) {
    throw new NetworkConfigError(`--port needs the CNI plugin "portmap", which is not installed in ${dirs.join(', ')}; install it (Debian: containernetworking-plugins)`);
  }
  return { req, selected, dirs, hosts };
}

export async function setupPodNetwork(podDir: string, podUuid: string, nets: readonly string[], opts: PodNetworkOptions = {}): Promise<PodNetworkResult> {
  if (opts.existingNetns !== undefined) return joinPodNetwork(podDir, podUuid, opts.existingNetns, opts);
  const { req, selected, dirs, hosts } = checkNetworkRequest(nets, opts);
  const ports = [...(opts.ports ?? [])];
  const prev = readState(podDir);
  if (prev && !prev.tornDown) throw new NetworkSetupError(`the network of pod ${podUuid} is already set up; tear it down first`);
  const networks: NetworkState[] = req.kind === 'contained' ? invocations(selected, ports) : [];
  const st: PodNetState = {
    version: STATE_VERSION,
    podUuid,
    mode: req.kind,
    ...(req.kind !== 'host' && { netnsPath: netnsPathOf(netnsName(podUuid)) }),
    pluginDirs: dirs,
    networks,
    ports,
    taps: [],
    tornDown: false,
  };
  if (req.kind === 'host') {
    writeState(podDir, st);
    const dnsFiles = writePodDnsFiles(podDir, planResolvConf(opts.dns ?? {}, []), planHosts(hosts, { ...(opts.hostname !== undefined && { hostname: opts.hostname }) }));
    return { mode: 'host', networks: [], ports: [], dnsFiles };
  }
  return withNetLock(async () => {
    await checkHostPortsFree(ports);
    // checked before the state names it: undoing this set-up must never delete a namespace it did not create
    if (isLiveNetns(st.netnsPath!)) throw new NetworkSetupError(`network namespace ${st.netnsPath} already exists; is pod ${podUuid} already running?`);
    writeState(podDir, st);
    try {
      await createNetns(netnsName(podUuid));
      for (const n of st.networks) {
        n.phase = 'adding';
        writeState(podDir, st);
        log().debug({ network: n.name, ifName: n.ifName, file: n.file }, 'adding the pod to a network');
        n.result = await addNetwork(n.invocation, { containerId: podUuid, netns: st.netnsPath!, ifName: n.ifName, args: n.args, pluginDirs: dirs });
        n.phase = 'added';
        writeState(podDir, st);
      }
      const described = st.networks.map(describeNetwork);
      const podIP = described.find((d) => d.ip !== undefined)?.ip;
      const dnsFiles = writePodDnsFiles(
        podDir,
        planResolvConf(opts.dns ?? {}, described),
        planHosts(hosts, { ...(opts.hostname !== undefined && { hostname: opts.hostname }), ...(podIP !== undefined && { podIP }) }),
      );
      return { mode: req.kind, netnsPath: st.netnsPath!, networks: described, ports, dnsFiles };
    } catch (err) {
      try {
        await undo(podDir, st);
      } catch (undoErr) {
        log().warn({ err: (undoErr as Error).message }, 'undoing a failed network set-up failed too');
        throw new NetworkSetupError(`${(err as Error).message}; and undoing the set-up failed: ${(undoErr as Error).message}`, { cause: err });
      }
      throw err;
    }
  });
}

/** The pod's network is a namespace someone else made: recorded (as not ours) and read, nothing created. */
async function joinPodNetwork(podDir: string, podUuid: string, netnsPath: string, opts: PodNetworkOptions): Promise<PodNetworkResult> {
  const prev = readState(podDir);
  if (prev && !prev.tornDown) throw new NetworkSetupError(`the network of pod ${podUuid} is already set up; tear it down first`);
  if ((opts.ports ?? []).length > 0) throw new UsageError('ports cannot be forwarded into a network namespace the pod did not make');
  const hosts = parseHostsEntries(opts.hostsEntries ?? []);
  if (opts.dns) validateDnsOptions(opts.dns);
  const networks = await existingNetworks(netnsPath);
  const st: PodNetState = { version: STATE_VERSION, podUuid, mode: 'contained', netnsPath, external: true, pluginDirs: [], networks, ports: [], taps: [], tornDown: false };
  writeState(podDir, st);
  const described = networks.map(describeNetwork);
  const podIP = described.find((d) => d.ip !== undefined)?.ip;
  const dnsFiles = writePodDnsFiles(podDir, planResolvConf(opts.dns ?? {}, described), planHosts(hosts, { ...(opts.hostname !== undefined && { hostname: opts.hostname }), ...(podIP !== undefined && { podIP }) }));
  return { mode: 'contained', netnsPath, networks: described, ports: [], dnsFiles };
}

/**
 * Undo everything setupPodNetwork did for the pod: taps, CNI DEL for each
 * network in reverse order (releasing IPAM leases, forwarded ports and
 * masquerading), leftover tagged rules, the namespace. Idempotent: safe on
 * stop, on exit and from gc, after a crash, and when nothing was set up.
 */
export async function teardownPodNetwork(podDir: string): Promise<void> {
  const st = readState(podDir);
  if (!st || st.tornDown) return;
  if (st.mode === 'host') {
    st.tornDown = true;
    writeState(podDir, st);
    return;
  }
  await withNetLock(async () => {
    // re-read under the lock: another teardown may have finished meanwhile
    const cur = readState(podDir);
    if (cur && !cur.tornDown) await undo(podDir, cur);
  });
}

export interface PodNetworkSummary {
  mode: 'host' | 'none' | 'contained';
  /** False once torn down (the pod has exited). */
  active: boolean;
  netnsPath?: string;
  /** Per network, the fields rkt's `list --format=json` shows (netName, ifName, ip, mask, args, netConf). */
  networks: { name: string; ifName: string; ip?: string; ip4?: string; mask?: string; args: string; file: string }[];
}

/** What `rkt list` and `rkt status` show; undefined when the pod never had its network set up. */
export function readPodNetworks(podDir: string): PodNetworkSummary | undefined {
  const st = readState(podDir);
  if (!st) return undefined;
  return {
    mode: st.mode,
    active: !st.tornDown,
    ...(st.netnsPath !== undefined && { netnsPath: st.netnsPath }),
    networks: st.networks
      .filter((n) => n.phase === 'added')
      .map((n) => {
        const d = describeNetwork(n);
        const ip4 = d.ips.find((x) => x.version === 4 && (x.interface === undefined || x.interface === n.ifName))?.address;
        return { name: n.name, ifName: n.ifName, ...(d.ip !== undefined && { ip: d.ip }), ...(ip4 !== undefined && { ip4 }), ...(d.mask !== undefined && { mask: d.mask }), args: n.args, file: n.file };
      }),
  };
}

/** rkt list's NETWORKS column: "default:ip4=172.16.28.2,net1:ip4=10.1.0.5". */
export function formatPodNetworks(s: PodNetworkSummary | undefined): string {
  if (!s) return '';
  return s.networks.map((n) => (n.ip4 !== undefined ? `${n.name}:ip4=${n.ip4}` : n.name)).join(',');
}

// The kvm flavor adds taps to the pod's namespace (stage1-kvm/taps.ts); the
// state records them so that any teardown, the flavor's or gc's, removes them.
/** Remove a tap and the redirect on its CNI interface; quietly does nothing for what is already gone. */
export async function removeTap(netnsPath: string, tap: TapState): Promise<void> {
  if (!isLiveNetns(netnsPath)) return;
  for (const argv of [
    ['tc', 'qdisc', 'del', 'dev', tap.ifName, 'ingress'],
    ['ip', 'link', 'del', 'dev', tap.name],
  ]) {
    const [cmd, ...args] = inNetns(netnsPath, argv);
    await execa(cmd!, args, { reject: false });
  }
}
