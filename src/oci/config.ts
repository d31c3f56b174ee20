import crypto from 'node:crypto';
import path from 'node:path';
import { LINUX_CAPABILITIES } from '../appc/capabilities.js';
import { ISOLATOR } from '../appc/isolators.js';
import { parseRlimits, rlimitsAnnotation } from '../appc/rlimits.js';
import type { Annotation, Isolator, Mount, RuntimeApp } from '../appc/types.js';
import { OciError } from './errors.js';

// An OCI bundle's config.json (runtime-spec config.md) as this runtime runs
// it. A CRI sandbox becomes a mutable pod (rkt app sandbox) in the network
// namespace the config names; a CRI container becomes an app added to its
// sandbox's pod, whose root is the bundle's root directory; a config without
// CRI annotations (ctr run) becomes a pod with one such app. Every field is
// either mapped, accepted for a stated reason (docs/oci-runtime.md), or
// refused with an error naming it: nothing is silently dropped.

export const CRI_TYPE = 'io.kubernetes.cri.container-type';
export const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
export const CRI_NAME = 'io.kubernetes.cri.container-name';

export type Role = 'sandbox' | 'container' | 'standalone';

/** The process's environment, directory and user (an exec runs with its own, through the enter entrypoint's options). */
export interface ProcessIdentity {
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
}

export interface OciPlan {
  role: Role;
  /** container: the sandbox's container id. */
  sandboxId?: string;
  hostname?: string;
  /** sandbox, standalone: the network namespace to join (absent: rkt makes the pod its own, --net=default). */
  netns?: string;
  rootfs: string;
  terminal: boolean;
  /** container, standalone: the app. */
  app?: RuntimeApp;
  identity: ProcessIdentity;
  annotations: Record<string, string>;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, field: string): Obj {
  if (!isObj(v)) throw new OciError(`${field} must be an object`);
  return v;
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string') throw new OciError(`${field} must be a string`);
  return v;
}

function uint32(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 4294967294) throw new OciError(`${field} must be an integer from 0 to 4294967294`);
  return v;
}

function strings(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) throw new OciError(`${field} must be a list of strings`);
  return v.map((x, i) => str(x, `${field}[${i}]`));
}

function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || v === '' || v === false || (Array.isArray(v) && v.length === 0) || (isObj(v) && Object.keys(v).length === 0);
}

/** Refuse every key of `o` not in `known` that carries a value. */
function onlyKnown(o: Obj, field: string, known: readonly string[]): void {
  for (const [k, v] of Object.entries(o)) {
    if (!known.includes(k) && !isEmpty(v)) throw new OciError(`${field}.${k} is not supported by this runtime; remove it from the config`);
  }
}

/** An app name (AC name) from a container's name or id. */
export function appNameFor(id: string, annotations: Record<string, string>): string {
  const base = (annotations[CRI_NAME] ?? id).toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  const name = base === '' ? 'app' : base;
  // CRI names are unique among a pod's live containers only; the id keeps a re-created one apart
  const suffix = annotations[CRI_NAME] !== undefined ? `-${id.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 12)}` : '';
  return (name.slice(0, 200) + suffix).replace(/^[^a-z0-9]+/, 'a');
}

function annotationsOf(config: Obj): Record<string, string> {
  if (config.annotations === undefined) return {};
  const a = obj(config.annotations, 'annotations');
  return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, str(v, `annotations["${k}"]`)]));
}

function roleOf(annotations: Record<string, string>): { role: Role; sandboxId?: string } {
  const type = annotations[CRI_TYPE];
  if (type === undefined) return { role: 'standalone' };
  if (type === 'sandbox') return { role: 'sandbox' };
  if (type === 'container') {
    const sandboxId = annotations[CRI_SANDBOX_ID];
    if (sandboxId === undefined || sandboxId === '') throw new OciError(`annotations["${CRI_SANDBOX_ID}"] is missing: a CRI container needs its sandbox`);
    return { role: 'container', sandboxId };
  }
  throw new OciError(`annotations["${CRI_TYPE}"] is "${type}"; this runtime knows sandbox and container`);
}

const CAP_SETS = ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const;

function capabilities(v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  const c = obj(v, 'process.capabilities');
  onlyKnown(c, 'process.capabilities', CAP_SETS);
  const sets = Object.fromEntries(CAP_SETS.map((k) => [k, c[k] === undefined ? [] : strings(c[k], `process.capabilities.${k}`)])) as Record<(typeof CAP_SETS)[number], string[]>;
  for (const k of CAP_SETS) {
    for (const cap of sets[k]) if (!(LINUX_CAPABILITIES as readonly string[]).includes(cap)) throw new OciError(`process.capabilities.${k}: "${cap}" is not a Linux capability`);
  }
  if (sets.ambient.length > 0) throw new OciError('process.capabilities.ambient is not supported by this runtime (an app holds its bounding set; a non-root app gets no capability but an explicit retain set)');
  const bounding = new Set(sets.bounding);
  for (const k of ['effective', 'permitted', 'inheritable'] as const) {
    const extra = sets[k].filter((x) => !bounding.has(x));
    if (extra.length > 0) throw new OciError(`process.capabilities.${k} holds ${extra.join(', ')}, outside the bounding set; this runtime gives an app its bounding set`);
  }
  return [...bounding];
}

interface ProcessMapping {
  exec: string[];
  identity: ProcessIdentity;
  terminal: boolean;
  isolators: Isolator[];
  annotations: Annotation[];
}

const PROCESS_FIELDS = ['terminal', 'consoleSize', 'user', 'args', 'env', 'cwd', 'capabilities', 'rlimits', 'noNewPrivileges', 'oomScoreAdj'];

export function mapProcess(v: unknown, where = 'process'): ProcessMapping {
  const p = obj(v, where);
  onlyKnown(p, where, PROCESS_FIELDS);
  if (p.consoleSize !== undefined) obj(p.consoleSize, `${where}.consoleSize`);
  const args = strings(p.args ?? [], `${where}.args`);
  if (args.length === 0) throw new OciError(`${where}.args is empty: say what to run`);
  const env = strings(p.env ?? [], `${where}.env`);
  env.forEach((e, i) => {
    if (e.indexOf('=') <= 0) throw new OciError(`${where}.env[${i}] "${e}" is not NAME=VALUE`);
  });
  const cwd = str(p.cwd ?? '/', `${where}.cwd`);
  if (!cwd.startsWith('/')) throw new OciError(`${where}.cwd "${cwd}" must be an absolute path`);
  const user = obj(p.user ?? {}, `${where}.user`);
  onlyKnown(user, `${where}.user`, ['uid', 'gid', 'additionalGids']);
  if (user.additionalGids !== undefined && !Array.isArray(user.additionalGids)) throw new OciError(`${where}.user.additionalGids must be a list`);
  const identity: ProcessIdentity = {
    env,
    cwd,
    uid: uint32(user.uid ?? 0, `${where}.user.uid`),
    gid: uint32(user.gid ?? 0, `${where}.user.gid`),
    additionalGids: (user.additionalGids === undefined ? [] : (user.additionalGids as unknown[])).map((g, i) => uint32(g, `${where}.user.additionalGids[${i}]`)),
  };
  const terminal = p.terminal === undefined ? false : p.terminal === true ? true : p.terminal === false ? false : (() => { throw new OciError(`${where}.terminal must be true or false`); })();
  const isolators: Isolator[] = [];
  const caps = capabilities(p.capabilities);
  if (caps !== undefined) isolators.push({ name: ISOLATOR.capabilitiesRetain, value: { set: caps } });
  if (p.noNewPrivileges !== undefined) {
    if (typeof p.noNewPrivileges !== 'boolean') throw new OciError(`${where}.noNewPrivileges must be true or false`);
    if (p.noNewPrivileges) isolators.push({ name: ISOLATOR.noNewPrivileges, value: true });
  }
  if (p.oomScoreAdj !== undefined) {
    const n = p.oomScoreAdj;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < -1000 || n > 1000) throw new OciError(`${where}.oomScoreAdj must be an integer from -1000 to 1000`);
    isolators.push({ name: ISOLATOR.oomScoreAdj, value: n });
  }
  const annotations: Annotation[] = [];
  if (p.rlimits !== undefined) {
    let limits;
    try {
      limits = parseRlimits(p.rlimits, `${where}.rlimits`);
    } catch (err) {
      throw new OciError((err as Error).message);
    }
    if (limits.length > 0) annotations.push(rlimitsAnnotation(limits));
  }
  return { exec: args, identity, terminal, isolators, annotations };
}

// What the runc shim and CRI put in every config: the kernel file systems
// and /dev, which the pod's systemd gives every app (and /dev/shm, /run, the
// pod's). Accepted whatever their options, as the app gets them anyway.
const STANDARD_DESTINATIONS = new Set(['/proc', '/dev', '/dev/pts', '/dev/shm', '/dev/mqueue', '/sys', '/sys/fs/cgroup', '/run']);
const STANDARD_TYPES = new Set(['proc', 'tmpfs', 'devpts', 'mqueue', 'sysfs', 'cgroup', 'cgroup2', 'shm', 'bind']);
const BIND_OPTIONS = new Set(['bind', 'rbind', 'ro', 'rw', 'private', 'rprivate', 'slave', 'rslave', 'shared', 'rshared', 'unbindable', 'runbindable']);

export function mapMounts(v: unknown, bundle: string): Mount[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new OciError('mounts must be a list');
  const out: Mount[] = [];
  v.forEach((m: unknown, i) => {
    const at = `mounts[${i}]`;
    const o = obj(m, at);
    onlyKnown(o, at, ['destination', 'type', 'source', 'options']);
    const dest = path.posix.normalize(str(o.destination, `${at}.destination`));
    if (!dest.startsWith('/')) throw new OciError(`${at}.destination "${dest}" must be an absolute path`);
    const type = o.type === undefined ? '' : str(o.type, `${at}.type`);
    const options = o.options === undefined ? [] : strings(o.options, `${at}.options`);
    const isBind = type === 'bind' || options.includes('bind') || options.includes('rbind');
    if (STANDARD_DESTINATIONS.has(dest) && (STANDARD_TYPES.has(type) || isBind)) return;
    if (!isBind) throw new OciError(`${at}: a ${type || 'typeless'} mount on ${dest} is not supported by this runtime; bind mounts and the standard /proc, /dev, /sys, /run entries are`);
    const bad = options.filter((x) => !BIND_OPTIONS.has(x));
    if (bad.length > 0) throw new OciError(`${at}.options: "${bad[0]}" is not supported on a bind mount by this runtime (it takes bind, rbind, ro, rw and propagation options)`);
    let source = str(o.source, `${at}.source`);
    if (!path.isAbsolute(source)) source = path.resolve(bundle, source);
    const name = `oci-mount-${i}`;
    out.push({
      volume: name,
      path: dest,
      appVolume: { name, kind: 'host', source, readOnly: options.includes('ro'), recursive: options.includes('rbind') },
    });
  });
  return out;
}

function cpuMillis(cpu: Obj): number | undefined {
  if (cpu.quota === undefined || cpu.quota === null || cpu.quota === -1 || cpu.quota === 0) return undefined;
  const quota = cpu.quota;
  const period = cpu.period ?? 100000;
  if (typeof quota !== 'number' || !Number.isInteger(quota) || quota < 0) throw new OciError('linux.resources.cpu.quota must be a positive integer or -1');
  if (typeof period !== 'number' || !Number.isInteger(period) || period <= 0) throw new OciError('linux.resources.cpu.period must be a positive integer');
  return Math.max(1, Math.ceil((quota * 1000) / period));
}

export function mapResources(v: unknown): Isolator[] {
  if (v === undefined || v === null) return [];
  const r = obj(v, 'linux.resources');
  onlyKnown(r, 'linux.resources', ['memory', 'cpu', 'devices', 'hugepageLimits']);
  const out: Isolator[] = [];
  if (r.memory !== undefined) {
    const m = obj(r.memory, 'linux.resources.memory');
    onlyKnown(m, 'linux.resources.memory', ['limit']);
    const limit = m.limit;
    if (limit !== undefined && limit !== null && limit !== -1 && limit !== 0) {
      if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0) throw new OciError('linux.resources.memory.limit must be a positive integer (bytes) or -1');
      out.push({ name: ISOLATOR.memory, value: { limit: String(limit) } });
    }
  }
  if (r.cpu !== undefined) {
    const c = obj(r.cpu, 'linux.resources.cpu');
    onlyKnown(c, 'linux.resources.cpu', ['quota', 'period', 'shares']);
    const millis = cpuMillis(c);
    if (millis !== undefined) out.push({ name: ISOLATOR.cpu, value: { limit: `${millis}m` } });
    if (c.shares !== undefined && c.shares !== null && c.shares !== 0) {
      const s = c.shares;
      if (typeof s !== 'number' || !Number.isInteger(s) || s < 2 || s > 262144) throw new OciError('linux.resources.cpu.shares must be an integer from 2 to 262144');
      out.push({ name: ISOLATOR.cpuShares, value: s });
    }
  }
  if (r.devices !== undefined) {
    if (!Array.isArray(r.devices)) throw new OciError('linux.resources.devices must be a list');
    // an app gets the pod's device policy, which allows what a container's default rules allow; any rule
    // must begin by denying everything, so that nothing beyond that policy is asked for
    const first = r.devices[0] as Obj | undefined;
    if (r.devices.length > 0 && !(isObj(first) && first.allow === false && (first.type === undefined || first.type === 'a') && first.major === undefined && first.minor === undefined)) {
      throw new OciError('linux.resources.devices must start by denying every device ({"allow": false, "access": "rwm"}); this runtime gives an app the pod\'s device policy');
    }
  }
  if (r.hugepageLimits !== undefined && !isEmpty(r.hugepageLimits)) {
    if (!Array.isArray(r.hugepageLimits)) throw new OciError('linux.resources.hugepageLimits must be a list');
    r.hugepageLimits.forEach((h: unknown, i) => {
      if (!isObj(h) || (h.limit !== 0 && h.limit !== undefined)) throw new OciError(`linux.resources.hugepageLimits[${i}]: huge page limits are not supported by this runtime`);
    });
  }
  return out;
}

const NAMESPACE_TYPES = new Set(['pid', 'network', 'mount', 'ipc', 'uts', 'cgroup']);

/** linux.namespaces: the network one's path, if any. A user namespace or an unknown type is refused. */
function mapNamespaces(v: unknown, role: Role): string | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new OciError('linux.namespaces must be a list');
  let netns: string | undefined;
  v.forEach((n: unknown, i) => {
    const o = obj(n, `linux.namespaces[${i}]`);
    onlyKnown(o, `linux.namespaces[${i}]`, ['type', 'path']);
    const type = str(o.type, `linux.namespaces[${i}].type`);
    if (!NAMESPACE_TYPES.has(type)) throw new OciError(`linux.namespaces[${i}].type "${type}" is not supported by this runtime`);
    const p = o.path === undefined ? undefined : str(o.path, `linux.namespaces[${i}].path`);
    if (p !== undefined && !path.isAbsolute(p)) throw new OciError(`linux.namespaces[${i}].path must be absolute`);
    // a container's namespace paths are its sandbox's, which it joins by being in the pod
    if (type === 'network' && p !== undefined && role !== 'container') netns = p;
  });
  return netns;
}

// anything else (seccomp, sysctl, devices, id mappings, hooks...) is refused when it has a value
const LINUX_FIELDS = ['namespaces', 'resources', 'cgroupsPath', 'maskedPaths', 'readonlyPaths'];
const TOP_FIELDS = ['ociVersion', 'process', 'root', 'hostname', 'mounts', 'annotations', 'linux'];

/**
 * Map a config.json (parsed) of a bundle to what this runtime runs.
 * `id` is the container's id. Throws OciError naming the first field it
 * cannot honour.
 */
export function mapConfig(id: string, config: unknown, bundle: string): OciPlan {
  const c = obj(config, 'config.json');
  onlyKnown(c, 'config.json', TOP_FIELDS);
  const version = str(c.ociVersion, 'ociVersion');
  if (!/^1\.\d+\.\d+/.test(version)) throw new OciError(`ociVersion "${version}" is not 1.x; this runtime runs runtime-spec 1.x bundles`);
  const annotations = annotationsOf(c);
  const { role, sandboxId } = roleOf(annotations);
  const root = obj(c.root, 'root');
  onlyKnown(root, 'root', ['path', 'readonly']);
  const rootfs = path.resolve(bundle, str(root.path, 'root.path'));
  if (root.readonly !== undefined && typeof root.readonly !== 'boolean') throw new OciError('root.readonly must be true or false');
  const linux = obj(c.linux ?? {}, 'linux');
  onlyKnown(linux, 'linux', LINUX_FIELDS);
  const netns = mapNamespaces(linux.namespaces, role);
  // cgroupsPath: the app lives in its pod's cgroup; masked and read-only paths: the app gets the pod's (docs)
  if (linux.cgroupsPath !== undefined) str(linux.cgroupsPath, 'linux.cgroupsPath');
  for (const k of ['maskedPaths', 'readonlyPaths']) if (linux[k] !== undefined) strings(linux[k], `linux.${k}`);
  const hostname = c.hostname === undefined || c.hostname === '' ? undefined : str(c.hostname, 'hostname');
  const process = mapProcess(c.process ?? {});
  const resources = mapResources(linux.resources);
  const mounts = mapMounts(c.mounts, bundle);
  const plan: OciPlan = {
    role,
    ...(sandboxId !== undefined && { sandboxId }),
    ...(hostname !== undefined && { hostname }),
    ...(netns !== undefined && { netns }),
    rootfs,
    terminal: process.terminal,
    identity: process.identity,
    annotations,
  };
  if (role === 'sandbox') return plan;
  const name = appNameFor(id, annotations);
  const env = process.identity.env.map((e) => ({ name: e.slice(0, e.indexOf('=')), value: e.slice(e.indexOf('=') + 1) }));
  plan.app = {
    name,
    image: { name: `oci-bundle/${name}`, id: `sha512-${crypto.createHash('sha512').update(rootfs).digest('hex')}` },
    app: {
      exec: process.exec,
      user: String(process.identity.uid),
      group: String(process.identity.gid),
      ...(process.identity.additionalGids.length > 0 && { supplementaryGIDs: process.identity.additionalGids }),
      environment: env,
      workingDirectory: process.identity.cwd,
      isolators: [...process.isolators, ...resources],
    },
    ...(root.readonly === true && { readOnlyRootFS: true }),
    ...(mounts.length > 0 && { mounts }),
    ...(process.annotations.length > 0 && { annotations: process.annotations }),
  };
  return plan;
}
