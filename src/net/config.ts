import fs from 'node:fs';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { log } from '../log.js';
import { NetworkConfigError } from './errors.js';
import { NET_DEFAULT, NET_DEFAULT_RESTRICTED, NETWORK_NAME_RE, type NetRequest } from './netlist.js';

// Network configurations: CNI network configs (".conf", one plugin) and
// config lists (".conflist", a chain) in <localConfig>/net.d and
// <systemConfig>/net.d, plus rkt's two built-in networks. Following rkt, a
// user config named "default" or "default-restricted" replaces the built-in
// one; following rkt's config layering, a network defined in the local
// config replaces a system one of the same name. Two files of one directory
// defining the same name is an error: which one wins would be an accident.

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Where CNI plugins are looked for: rkt's directories first, then the Debian package's and the upstream default. */
export function pluginDirs(localConfig?: string): string[] {
  return [...(localConfig ? [path.join(localConfig, 'net.d')] : []), '/usr/lib/rkt/plugins/net', '/usr/lib/cni', '/opt/cni/bin'];
}

/** Absolute path of an executable plugin in the first directory that has it. */
export function findPlugin(type: string, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    const p = path.join(dir, type);
    try {
      const st = fs.statSync(p);
      if (st.isFile() && (st.mode & 0o111) !== 0) return p;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** The CNI spec version pinned by the built-in networks: understood by plugin releases from 0.8 to 1.x. */
export const BUILTIN_CNI_VERSION = '0.4.0';

/** rkt's default network: a veth to the host, NAT to the outside, reachable from the host. */
export const DEFAULT_SUBNET = '172.16.28.0/24';
/**
 * rkt's default-restricted network: host-only, no route out, no masquerade.
 * rkt 1.x moved it from 172.16.28.0/24 (clashing with default) to 172.17/16
 * (clashing with Docker) to 172.31.0.0/16 (rkt PR #3718); we use the last.
 */
export const DEFAULT_RESTRICTED_SUBNET = '172.31.0.0/16';

export interface NetworkConfig {
  name: string;
  /** As written; undefined means CNI 0.1.0 to the plugins. */
  cniVersion: string | undefined;
  /** The file it came from, or "built-in". */
  file: string;
  /** True for a configuration list (a chain of plugins). */
  list: boolean;
  /** The plugin configurations in execution order (one for a plain config). */
  plugins: JsonObject[];
  /** The document as loaded. */
  raw: JsonObject;
  /** Some plugin of the network masquerades (rkt forwards ports through the first such network). */
  ipMasq: boolean;
}

function builtin(name: string, subnet: string, masq: boolean): NetworkConfig {
  const raw: JsonObject = {
    cniVersion: BUILTIN_CNI_VERSION,
    name,
    type: 'ptp',
    ipMasq: masq,
    ipam: { type: 'host-local', subnet, ...(masq ? { routes: [{ dst: '0.0.0.0/0' }] } : {}) },
  };
  return { name, cniVersion: BUILTIN_CNI_VERSION, file: 'built-in', list: false, plugins: [raw], raw, ipMasq: masq };
}

export function builtinNetworks(): NetworkConfig[] {
  return [builtin(NET_DEFAULT, DEFAULT_SUBNET, true), builtin(NET_DEFAULT_RESTRICTED, DEFAULT_RESTRICTED_SUBNET, false)];
}

function checkPluginConf(conf: JsonObject, file: string, where: string): void {
  const type = conf.type;
  if (typeof type !== 'string' || type === '') throw new NetworkConfigError(`network config ${file}: ${where}"type" must name a CNI plugin`);
  if (type.includes('/') || type === '.' || type === '..') throw new NetworkConfigError(`network config ${file}: ${where}"type" must be a plugin name, not a path ("${type}")`);
  if (conf.ipam !== undefined) {
    if (!isJsonObject(conf.ipam) || typeof conf.ipam.type !== 'string' || conf.ipam.type === '' || conf.ipam.type.includes('/')) {
      throw new NetworkConfigError(`network config ${file}: ${where}"ipam" must be an object whose "type" names an IPAM plugin`);
    }
  }
}

/** Parse and validate one configuration document; every error names the file. */
export function parseNetworkConfig(text: string, file: string): NetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new NetworkConfigError(`network config ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isJsonObject(doc)) throw new NetworkConfigError(`network config ${file} must hold a JSON object`);
  const name = doc.name;
  if (typeof name !== 'string' || !NETWORK_NAME_RE.test(name)) {
    throw new NetworkConfigError(`network config ${file}: "name" must be a network name (letters, digits, "_", "." and "-", starting with a letter or digit)`);
  }
  const cniVersion = doc.cniVersion;
  if (cniVersion !== undefined && (typeof cniVersion !== 'string' || !/^\d+\.\d+\.\d+$/.test(cniVersion))) {
    throw new NetworkConfigError(`network config ${file}: "cniVersion" must be a version such as "0.4.0"`);
  }
  const isList = doc.plugins !== undefined;
  let plugins: JsonObject[];
  if (isList) {
    if (!Array.isArray(doc.plugins) || doc.plugins.length === 0) throw new NetworkConfigError(`network config ${file}: "plugins" must be a non-empty list`);
    plugins = doc.plugins.map((p, i) => {
      if (!isJsonObject(p)) throw new NetworkConfigError(`network config ${file}: plugins[${i}] must be an object`);
      checkPluginConf(p, file, `plugins[${i}].`);
      return p;
    });
  } else {
    checkPluginConf(doc, file, '');
    plugins = [doc];
  }
  return { name, cniVersion, file, list: isList, plugins, raw: doc, ipMasq: plugins.some((p) => p.ipMasq === true) };
}

function readDir(dir: string): NetworkConfig[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return [];
    throw new NetworkConfigError(`cannot read network configs in ${dir}: ${(err as Error).message}`);
  }
  const out: NetworkConfig[] = [];
  const byName = new Map<string, string>();
  for (const base of names.filter((n) => n.endsWith('.conf') || n.endsWith('.conflist')).sort()) {
    const file = path.join(dir, base);
    let text: string;
    try {
      if (!fs.statSync(file).isFile()) continue;
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new NetworkConfigError(`cannot read network config ${file}: ${(err as Error).message}`);
    }
    const conf = parseNetworkConfig(text, file);
    const other = byName.get(conf.name);
    if (other !== undefined) {
      throw new NetworkConfigError(`network "${conf.name}" is defined twice, in ${other} and in ${file}; remove or rename one of them`);
    }
    byName.set(conf.name, file);
    out.push(conf);
  }
  return out;
}

/** Plain byte order, as rkt sorts file names (not the locale's). Stable sort keeps local before system. */
function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface ConfigDirs {
  localConfig?: string;
  systemConfig?: string;
}

/**
 * Every configured network, in the order rkt sets them up: user configs by
 * file name, then the built-in ones not overridden. A broken file fails the
 * whole load, as in rkt: it may be the definition of the network asked for.
 */
export function loadNetworkConfigs(dirs: ConfigDirs): NetworkConfig[] {
  const local = dirs.localConfig ? readDir(path.join(dirs.localConfig, 'net.d')) : [];
  const system = dirs.systemConfig ? readDir(path.join(dirs.systemConfig, 'net.d')) : [];
  const localNames = new Set(local.map((c) => c.name));
  for (const c of system.filter((s) => localNames.has(s.name))) log().debug({ network: c.name, file: c.file }, 'network overridden by the local config');
  const user = [...local, ...system.filter((s) => !localNames.has(s.name))].sort((a, b) => byteOrder(path.basename(a.file), path.basename(b.file)));
  const userNames = new Set(user.map((c) => c.name));
  for (const b of builtinNetworks().filter((x) => userNames.has(x.name))) log().debug({ network: b.name }, 'built-in network overridden by a user config');
  return [...user, ...builtinNetworks().filter((b) => !userNames.has(b.name))];
}

export interface SelectedNetwork {
  config: NetworkConfig;
  /** CNI_ARGS for this network. */
  args: string;
  /** Interface name inside the pod: eth0, eth1... in set-up order. */
  ifName: string;
}

/**
 * The networks a pod joins, as rkt chooses them: the named ones (or all
 * with --net=all) in configuration order; and unless "default" or
 * "default-restricted" is among them, "default" when asked for by name or
 * by "all", otherwise "default-restricted" (so the pod can always reach the
 * host, e.g. for the metadata service).
 */
export function selectNetworks(req: NetRequest, configs: readonly NetworkConfig[]): SelectedNetwork[] {
  if (req.kind !== 'contained') return [];
  const wanted = new Map(req.entries.map((e) => [e.name, e.args]));
  const isDefault = (n: string) => n === NET_DEFAULT || n === NET_DEFAULT_RESTRICTED;
  const chosen = configs.filter((c) => wanted.has(c.name) || (req.all && c.file !== 'built-in'));
  if (!chosen.some((c) => isDefault(c.name))) {
    const implicit = req.all || wanted.has(NET_DEFAULT) ? NET_DEFAULT : NET_DEFAULT_RESTRICTED;
    const conf = configs.find((c) => c.name === implicit);
    if (conf) chosen.push(conf);
  }
  const missing = [...wanted.keys()].filter((n) => !chosen.some((c) => c.name === n));
  if (missing.length > 0) {
    const known = configs.map((c) => c.name).join(', ');
    throw new NetworkConfigError(`network${missing.length > 1 ? 's' : ''} not found: ${missing.join(', ')} (configured networks: ${known}); add a config to the net.d directory of the local or system config`);
  }
  return chosen.map((config, i) => ({ config, args: wanted.get(config.name) ?? '', ifName: `eth${i}` }));
}

/** Every plugin a network needs (its chain and their IPAM plugins), checked before anything is set up. */
export function requiredPlugins(conf: NetworkConfig): string[] {
  const types: string[] = [];
  for (const p of conf.plugins) {
    types.push(p.type as string);
    if (isJsonObject(p.ipam) && typeof p.ipam.type === 'string') types.push(p.ipam.type);
  }
  return [...new Set(types)];
}

export function checkPluginsInstalled(conf: NetworkConfig, dirs: readonly string[]): void {
  for (const type of requiredPlugins(conf)) {
    if (findPlugin(type, dirs) === undefined) {
      throw new NetworkConfigError(
        `network "${conf.name}" (${conf.file}) needs the CNI plugin "${type}", which is not installed in ${dirs.join(', ')}; install it (Debian: containernetworking-plugins)`,
      );
    }
  }
}
