import net from 'node:net';
import { execa } from '../util/lazy-execa.js';
import { log } from '../log.js';
import { findPlugin, isJsonObject, type JsonObject, type JsonValue } from './config.js';
import { CniPluginError, oneLine } from './errors.js';

// CNI plugin execution as the CNI SPEC says: the plugin named by "type" is
// found in the plugin directories, run with CNI_COMMAND, CNI_CONTAINERID,
// CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH in its environment and the
// network configuration on stdin; it prints a result (ADD) or an error
// object on stdout. A configuration list runs its plugins in order for ADD,
// each getting the previous result as prevResult, and in reverse for DEL.

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

export interface CniRuntime {
  containerId: string;
  /** Path of the network namespace; "" on DEL when it is gone (plugins then release what they can). */
  netns: string;
  ifName: string;
  /** CNI_ARGS: "K=V;K2=V2". */
  args: string;
  pluginDirs: readonly string[];
  timeoutMs?: number;
}

/** A network as executed: the name and version every plugin is given, the plugin configurations, capability arguments. */
export interface NetworkInvocation {
  name: string;
  cniVersion: string | undefined;
  plugins: JsonObject[];
  /** Capability arguments (e.g. portMappings), handed to the plugins that declare the capability. */
  runtimeConfig?: JsonObject;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** Plugins run iptables and friends by name: make sure the sbin directories are searched even for a user's PATH. */
function pluginPath(): string {
  const dirs = (process.env.PATH ?? '').split(':').filter((d) => d !== '');
  for (const d of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) if (!dirs.includes(d)) dirs.push(d);
  return dirs.join(':');
}

/** Compare dotted versions: is v at least min? (undefined is CNI 0.1.0) */
export function versionAtLeast(v: string | undefined, min: string): boolean {
  const a = (v ?? '0.1.0').split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

function describeFailure(stdout: string, stderr: string): { message: string; code?: number } {
  try {
    const e: unknown = JSON.parse(stdout);
    if (isJsonObject(e) && typeof e.msg === 'string') {
      const details = typeof e.details === 'string' && e.details !== '' ? `; ${e.details}` : '';
      return { message: `${e.msg}${details}`, ...(typeof e.code === 'number' && { code: e.code }) };
    }
  } catch {
    // not a CNI error object: fall back to what it printed
  }
  const text = (stdout.trim() || stderr.trim()).split('\n').slice(-3).join('\n');
  return { message: text === '' ? 'no error message' : text };
}

/** Run one plugin; the parsed stdout for ADD and VERSION, undefined otherwise. */
export async function execPlugin(network: string, command: CniCommand, conf: JsonObject, rt: CniRuntime): Promise<JsonObject | undefined> {
  const type = String(conf.type);
  const exe = findPlugin(type, rt.pluginDirs);
  if (exe === undefined) {
    throw new CniPluginError(network, type, `network "${network}": CNI plugin "${type}" is not installed in ${rt.pluginDirs.join(', ')}`);
  }
  const env: Record<string, string> = {
    PATH: pluginPath(),
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId,
    CNI_NETNS: rt.netns,
    CNI_IFNAME: rt.ifName,
    CNI_ARGS: rt.args,
    CNI_PATH: rt.pluginDirs.join(':'),
  };
  log().debug({ network, plugin: exe, command, ifName: rt.ifName, netns: rt.netns, args: rt.args }, 'executing CNI plugin');
  const r = await execa(exe, [], {
    input: JSON.stringify(conf),
    env,
    extendEnv: false,
    reject: false,
    timeout: rt.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    stripFinalNewline: false,
  });
  const stdout = String(r.stdout ?? '');
  const stderr = String(r.stderr ?? '');
  if (r.timedOut) throw new CniPluginError(network, type, `network "${network}": CNI plugin ${type} did not finish ${command} within ${(rt.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000}s`);
  if (r.failed) {
    const { message, code } = describeFailure(stdout, stderr);
    const codeText = code === undefined ? '' : ` (CNI error ${code})`;
    throw new CniPluginError(network, type, oneLine(`network "${network}": CNI plugin ${type} failed to ${command}: ${message}${codeText}`), code);
  }
  if (command !== 'ADD' && command !== 'VERSION') return undefined;
  let out: unknown;
  try {
    out = JSON.parse(stdout);
  } catch {
    throw new CniPluginError(network, type, oneLine(`network "${network}": CNI plugin ${type} printed no JSON result for ${command}: ${stdout.slice(0, 200)}`));
  }
  if (!isJsonObject(out)) throw new CniPluginError(network, type, `network "${network}": CNI plugin ${type} printed a result that is not a JSON object`);
  return out;
}

/** The configuration a plugin of the network gets on stdin for one command. */
export function pluginConfig(inv: NetworkInvocation, plugin: JsonObject, prevResult: JsonObject | undefined): JsonObject {
  const conf: JsonObject = { ...plugin, name: inv.name };
  if (inv.cniVersion !== undefined) conf.cniVersion = inv.cniVersion;
  else delete conf.cniVersion;
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const caps = plugin.capabilities;
  if (inv.runtimeConfig && isJsonObject(caps)) {
    const rc: JsonObject = {};
    for (const [k, v] of Object.entries(inv.runtimeConfig)) if (caps[k] === true) rc[k] = v;
    if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
  }
  return conf;
}

/** ADD: run the chain; the last plugin's result is the network's result. */
export async function addNetwork(inv: NetworkInvocation, rt: CniRuntime): Promise<JsonObject> {
  let result: JsonObject | undefined;
  for (const plugin of inv.plugins) {
    // prevResult exists from CNI 0.3.0 on; older plugins would not understand it
    const prev = result !== undefined && versionAtLeast(inv.cniVersion, '0.3.0') ? result : undefined;
    result = await execPlugin(inv.name, 'ADD', pluginConfig(inv, plugin, prev), rt);
  }
  return result ?? {};
}

/**
 * DEL: the chain in reverse, each plugin given the ADD result when known
 * (CNI 0.4.0 on). Stops at the first failure, as the SPEC requires; DEL is
 * idempotent, so the caller may simply try again later.
 */
export async function delNetwork(inv: NetworkInvocation, rt: CniRuntime, prevResult: JsonObject | undefined): Promise<void> {
  const prev = prevResult !== undefined && versionAtLeast(inv.cniVersion, '0.4.0') ? prevResult : undefined;
  for (const plugin of [...inv.plugins].reverse()) {
    await execPlugin(inv.name, 'DEL', pluginConfig(inv, plugin, prev), rt);
  }
}

// ---- results ---------------------------------------------------------------

export interface CniInterface {
  name: string;
  mac?: string;
  /** Set for interfaces inside the pod's namespace. */
  sandbox?: string;
}

export interface CniIp {
  version: 4 | 6;
  /** The address without its prefix length. */
  address: string;
  prefixLength: number;
  gateway?: string;
  /** The interface the address is on, when the plugin says. */
  interface?: string;
}

export interface CniRoute {
  dst: string;
  gw?: string;
}

export interface CniDns {
  nameservers: string[];
  domain?: string;
  search: string[];
  options: string[];
}

export interface CniResult {
  interfaces: CniInterface[];
  ips: CniIp[];
  routes: CniRoute[];
  dns: CniDns;
}

function strings(v: JsonValue | undefined): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

function parseCidr(cidr: string): { address: string; prefixLength: number } | undefined {
  const slash = cidr.indexOf('/');
  const address = slash === -1 ? cidr : cidr.slice(0, slash);
  const family = net.isIP(address);
  if (family === 0) return undefined;
  const prefixLength = slash === -1 ? (family === 4 ? 32 : 128) : Number(cidr.slice(slash + 1));
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > (family === 4 ? 32 : 128)) return undefined;
  return { address, prefixLength };
}

function parseRoutes(v: JsonValue | undefined): CniRoute[] {
  if (!Array.isArray(v)) return [];
  return v.filter(isJsonObject).flatMap((r) => (typeof r.dst === 'string' ? [{ dst: r.dst, ...(typeof r.gw === 'string' && { gw: r.gw }) }] : []));
}

/** Read any CNI result version (0.1.0/0.2.0 "ip4"/"ip6", 0.3.0 and later "ips") into one shape. */
export function normalizeResult(raw: JsonObject): CniResult {
  const interfaces: CniInterface[] = Array.isArray(raw.interfaces)
    ? raw.interfaces.filter(isJsonObject).map((i) => ({
        name: String(i.name ?? ''),
        ...(typeof i.mac === 'string' && { mac: i.mac }),
        ...(typeof i.sandbox === 'string' && i.sandbox !== '' && { sandbox: i.sandbox }),
      }))
    : [];
  const ips: CniIp[] = [];
  let routes: CniRoute[] = parseRoutes(raw.routes);
  if (Array.isArray(raw.ips)) {
    for (const ip of raw.ips.filter(isJsonObject)) {
      const c = typeof ip.address === 'string' ? parseCidr(ip.address) : undefined;
      if (!c) continue;
      const idx = typeof ip.interface === 'number' ? ip.interface : undefined;
      const ifName = idx !== undefined ? interfaces[idx]?.name : undefined;
      ips.push({ version: net.isIPv4(c.address) ? 4 : 6, ...c, ...(typeof ip.gateway === 'string' && { gateway: ip.gateway }), ...(ifName && { interface: ifName }) });
    }
  } else {
    for (const key of ['ip4', 'ip6'] as const) {
      const old = raw[key];
      if (!isJsonObject(old) || typeof old.ip !== 'string') continue;
      const c = parseCidr(old.ip);
      if (!c) continue;
      ips.push({ version: key === 'ip4' ? 4 : 6, ...c, ...(typeof old.gateway === 'string' && { gateway: old.gateway }) });
      routes = routes.concat(parseRoutes(old.routes));
    }
  }
  const d = isJsonObject(raw.dns) ? raw.dns : {};
  const dns: CniDns = { nameservers: strings(d.nameservers), search: strings(d.search), options: strings(d.options), ...(typeof d.domain === 'string' && d.domain !== '' && { domain: d.domain }) };
  return { interfaces, ips, routes, dns };
}

export function isDnsEmpty(dns: CniDns): boolean {
  return dns.nameservers.length === 0 && dns.search.length === 0 && dns.options.length === 0 && dns.domain === undefined;
}

/** Dotted netmask of an IPv4 prefix length. */
export function prefixToMask(prefixLength: number): string {
  const bits = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}
