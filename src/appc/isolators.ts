// The isolator registry (spec/ace.md "Isolators"). An isolator name this
// module does not know is accepted untouched: the spec lets executors ignore
// isolators they do not understand, and images from newer tools carry them.
// A known name with a malformed value is an error, at parse time, so a bad
// limit is reported when the image is fetched, not when the pod boots.

import { quote } from '../errors.js';
import type { Isolator } from './types.js';
import {
  checkUnique,
  expectACIdentifier,
  expectArray,
  expectBool,
  expectInt,
  expectNonEmptyString,
  expectObject,
  expectString,
  expectStringMap,
  fail,
  present,
  sub,
} from './check.js';
import { compareQuantities, isNegativeQuantity, parseCpuMillis, parseMemoryBytes, parseQuantityCeil, QuantityError } from './quantity.js';
import { normalizeCapability } from './capabilities.js';

export const ISOLATOR = {
  cpu: 'resource/cpu',
  memory: 'resource/memory',
  blockBandwidth: 'resource/block-bandwidth',
  blockIops: 'resource/block-iops',
  networkBandwidth: 'resource/network-bandwidth',
  capabilitiesRetain: 'os/linux/capabilities-retain-set',
  capabilitiesRemove: 'os/linux/capabilities-remove-set',
  noNewPrivileges: 'os/linux/no-new-privileges',
  seccompRetain: 'os/linux/seccomp-retain-set',
  seccompRemove: 'os/linux/seccomp-remove-set',
  oomScoreAdj: 'os/linux/oom-score-adj',
  cpuShares: 'os/linux/cpu-shares',
  selinuxContext: 'os/linux/selinux-context',
  sysctl: 'os/unix/sysctl',
} as const;

interface Rule {
  check(value: unknown, field: string): void;
  /** At most one isolator of this name per list. */
  single?: boolean;
  /** Names that may not appear in the same list. */
  conflicts?: readonly string[];
}

function checkQuantity(v: unknown, field: string): void {
  if (typeof v !== 'string' && typeof v !== 'number') fail(field, 'must be a quantity such as "500m", "2" or "1Gi"');
  try {
    if (isNegativeQuantity(v)) fail(field, 'must not be negative');
  } catch (err) {
    if (err instanceof QuantityError) fail(field, err.message);
    throw err;
  }
}

/** resource/cpu and resource/memory: request and/or limit; "default" is reserved for device-wide limits. */
function checkRequestLimit(value: unknown, field: string): void {
  const o = expectObject(value, field);
  if (present(o.default) && expectBool(o.default, sub(field, 'default'))) fail(sub(field, 'default'), 'must be false (or absent) for this resource');
  if (!present(o.request) && !present(o.limit)) fail(field, 'must set "request", "limit" or both');
  if (present(o.request)) checkQuantity(o.request, sub(field, 'request'));
  if (present(o.limit)) checkQuantity(o.limit, sub(field, 'limit'));
  if (present(o.request) && present(o.limit) && compareQuantities(o.request as string, o.limit as string) > 0) {
    fail(sub(field, 'request'), 'must not exceed the limit');
  }
}

/** Bandwidth and IOPS: a limit that applies to every device ("default": true is the only mode the spec defines). */
function checkDeviceLimit(value: unknown, field: string): void {
  const o = expectObject(value, field);
  if (expectBool(o.default, sub(field, 'default')) !== true) fail(sub(field, 'default'), 'must be true');
  if (present(o.request)) fail(sub(field, 'request'), 'is not supported by this resource; set only "limit"');
  if (!present(o.limit)) fail(sub(field, 'limit'), 'is required');
  checkQuantity(o.limit, sub(field, 'limit'));
}

function checkCapabilitySet(value: unknown, field: string): void {
  const o = expectObject(value, field);
  const set = expectArray(o.set, sub(field, 'set'));
  if (set.length === 0) fail(sub(field, 'set'), 'must not be empty');
  set.forEach((c, i) => {
    const name = expectNonEmptyString(c, sub(sub(field, 'set'), i));
    if (normalizeCapability(name) === undefined) fail(sub(sub(field, 'set'), i), `unknown Linux capability ${quote(name)}`);
  });
}

const SYSCALL = /^[a-z0-9_]+$/;
// "@appc.io/all", "@rkt/default-blacklist": a scope, a slash and a name.
const SYSCALL_GROUP = /^@[a-z0-9._-]+\/[a-z0-9._-]+$/;
const ERRNO = /^[A-Z][A-Z0-9]*$/;

function checkSeccompSet(value: unknown, field: string): void {
  const o = expectObject(value, field);
  const set = expectArray(o.set, sub(field, 'set'));
  if (set.length === 0) fail(sub(field, 'set'), 'must not be empty');
  set.forEach((c, i) => {
    const name = expectNonEmptyString(c, sub(sub(field, 'set'), i));
    if (!SYSCALL.test(name) && !SYSCALL_GROUP.test(name)) {
      fail(sub(sub(field, 'set'), i), `${quote(name)} is neither a syscall name nor a "@scope/group" wildcard`);
    }
  });
  if (present(o.errno)) {
    const errno = expectString(o.errno, sub(field, 'errno'));
    if (errno !== '' && !ERRNO.test(errno)) fail(sub(field, 'errno'), `${quote(errno)} is not an errno name such as EPERM or ENOSYS`);
  }
}

function checkSelinuxContext(value: unknown, field: string): void {
  const o = expectObject(value, field);
  for (const part of ['user', 'role', 'type'] as const) {
    const s = expectNonEmptyString(o[part], sub(field, part));
    if (s.includes(':')) fail(sub(field, part), 'must not contain ":"');
  }
  expectNonEmptyString(o.level, sub(field, 'level'));
}

// Dotted or slashed sysctl paths: net.ipv4.conf.eth0/1.rp_filter is legal.
const SYSCTL_KEY = /^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*$/;

function checkSysctl(value: unknown, field: string): void {
  const map = expectStringMap(value, field);
  for (const key of Object.keys(map)) if (!SYSCTL_KEY.test(key)) fail(sub(field, key), 'is not a sysctl name');
}

const RULES: Readonly<Record<string, Rule>> = {
  [ISOLATOR.cpu]: { check: checkRequestLimit },
  [ISOLATOR.memory]: { check: checkRequestLimit },
  [ISOLATOR.blockBandwidth]: { check: checkDeviceLimit },
  [ISOLATOR.blockIops]: { check: checkDeviceLimit },
  [ISOLATOR.networkBandwidth]: { check: checkDeviceLimit },
  // The spec says a retain set cannot be used together with a remove set.
  [ISOLATOR.capabilitiesRetain]: { check: checkCapabilitySet, conflicts: [ISOLATOR.capabilitiesRemove] },
  [ISOLATOR.capabilitiesRemove]: { check: checkCapabilitySet, conflicts: [ISOLATOR.capabilitiesRetain] },
  [ISOLATOR.noNewPrivileges]: { check: (v, f) => void expectBool(v, f) },
  [ISOLATOR.seccompRetain]: { check: checkSeccompSet, single: true, conflicts: [ISOLATOR.seccompRemove] },
  [ISOLATOR.seccompRemove]: { check: checkSeccompSet, single: true, conflicts: [ISOLATOR.seccompRetain] },
  [ISOLATOR.oomScoreAdj]: { check: (v, f) => void expectInt(v, f, -1000, 1000), single: true },
  [ISOLATOR.cpuShares]: { check: (v, f) => void expectInt(v, f, 2, 262144), single: true },
  [ISOLATOR.selinuxContext]: { check: checkSelinuxContext, single: true },
  [ISOLATOR.sysctl]: { check: checkSysctl, single: true },
};

/** Names whose values this module checks and interprets. */
export const KNOWN_ISOLATORS: readonly string[] = Object.keys(RULES);

export function isKnownIsolator(name: string): boolean {
  return Object.hasOwn(RULES, name);
}

/** The rule for a known isolator name; never one of Object.prototype's members. */
function ruleOf(name: string): Rule | undefined {
  return isKnownIsolator(name) ? RULES[name] : undefined;
}

/** Check one isolator value; unknown names pass. Throws ManifestError naming `field`. */
export function checkIsolatorValue(name: string, value: unknown, field: string): void {
  ruleOf(name)?.check(value, field);
}

/** Parse and validate a list of isolators, including the rules that span the list. */
export function parseIsolators(v: unknown, field: string): Isolator[] {
  const list = expectArray(v, field).map((item, i): Isolator => {
    const f = sub(field, i);
    const o = expectObject(item, f);
    const name = expectACIdentifier(o.name, sub(f, 'name'));
    if (o.value === undefined) fail(sub(f, 'value'), 'is required');
    checkIsolatorValue(name, o.value, sub(f, 'value'));
    return { name, value: o.value };
  });
  checkUnique(
    list.filter((iso) => ruleOf(iso.name)?.single === true),
    (iso) => iso.name,
    field,
    'name',
    'isolator (only one allowed)',
  );
  list.forEach((iso, i) => {
    for (const other of ruleOf(iso.name)?.conflicts ?? []) {
      if (list.some((o) => o.name === other)) fail(sub(sub(field, i), 'name'), `${quote(iso.name)} cannot be combined with ${quote(other)}`);
    }
  });
  return list;
}

// ---- typed accessors for the stages that apply isolators ----
// They take lists the parsers produced; each value is re-checked so a list
// built by hand cannot smuggle a malformed value through.

function values(isolators: readonly Isolator[] | undefined, name: string): unknown[] {
  return (isolators ?? [])
    .filter((iso) => iso.name === name)
    .map((iso) => {
      checkIsolatorValue(name, iso.value, sub(sub('isolators', name), 'value'));
      return iso.value;
    });
}

/** The last isolator of a name wins, as in the reference implementation. */
function last(isolators: readonly Isolator[] | undefined, name: string): unknown {
  return values(isolators, name).at(-1);
}

interface RequestLimit {
  request?: string | number;
  limit?: string | number;
}

function requestLimit(isolators: readonly Isolator[] | undefined, name: string): RequestLimit | undefined {
  return last(isolators, name) as RequestLimit | undefined;
}

/** Memory limit in bytes, if any. */
export function memoryLimit(isolators: readonly Isolator[] | undefined): number | undefined {
  const v = requestLimit(isolators, ISOLATOR.memory)?.limit;
  return present(v) ? parseMemoryBytes(v!) : undefined;
}

/** Memory request in bytes; the spec makes a missing request default to the limit. */
export function memoryRequest(isolators: readonly Isolator[] | undefined): number | undefined {
  const rl = requestLimit(isolators, ISOLATOR.memory);
  const v = present(rl?.request) ? rl!.request : rl?.limit;
  return present(v) ? parseMemoryBytes(v!) : undefined;
}

/** CPU limit in millicores, if any. */
export function cpuLimitMillis(isolators: readonly Isolator[] | undefined): number | undefined {
  const v = requestLimit(isolators, ISOLATOR.cpu)?.limit;
  return present(v) ? parseCpuMillis(v!) : undefined;
}

/** CPU request in millicores, defaulting to the limit. */
export function cpuRequestMillis(isolators: readonly Isolator[] | undefined): number | undefined {
  const rl = requestLimit(isolators, ISOLATOR.cpu);
  const v = present(rl?.request) ? rl!.request : rl?.limit;
  return present(v) ? parseCpuMillis(v!) : undefined;
}

function deviceLimit(isolators: readonly Isolator[] | undefined, name: string): number | undefined {
  const v = requestLimit(isolators, name)?.limit;
  return present(v) ? parseQuantityCeil(v!) : undefined;
}

/** Read+write bytes per second on every block device. */
export function blockBandwidthLimit(isolators: readonly Isolator[] | undefined): number | undefined {
  return deviceLimit(isolators, ISOLATOR.blockBandwidth);
}

/** Read+write operations per second on every block device. */
export function blockIopsLimit(isolators: readonly Isolator[] | undefined): number | undefined {
  return deviceLimit(isolators, ISOLATOR.blockIops);
}

/** Bytes per second on every interface but loopback. */
export function networkBandwidthLimit(isolators: readonly Isolator[] | undefined): number | undefined {
  return deviceLimit(isolators, ISOLATOR.networkBandwidth);
}

function capabilitySet(isolators: readonly Isolator[] | undefined, name: string): string[] | undefined {
  const sets = values(isolators, name) as { set: string[] }[];
  if (sets.length === 0) return undefined;
  // Several isolators of one kind add up, as rkt applied them.
  return [...new Set(sets.flatMap((s) => s.set.map((c) => normalizeCapability(c)!)))];
}

/** Canonical names (CAP_...) to keep in the bounding set; undefined when there is no retain isolator. */
export function capabilitiesRetainSet(isolators: readonly Isolator[] | undefined): string[] | undefined {
  return capabilitySet(isolators, ISOLATOR.capabilitiesRetain);
}

/** Canonical names to drop from the default set; undefined when there is no remove isolator. */
export function capabilitiesRemoveSet(isolators: readonly Isolator[] | undefined): string[] | undefined {
  return capabilitySet(isolators, ISOLATOR.capabilitiesRemove);
}

export function noNewPrivileges(isolators: readonly Isolator[] | undefined): boolean {
  return (last(isolators, ISOLATOR.noNewPrivileges) as boolean | undefined) ?? false;
}

export interface SeccompFilter {
  /** retain: only `set` is allowed; remove: `set` is blocked. */
  mode: 'retain' | 'remove';
  set: string[];
  /** Blocked calls fail with this errno; absent means the process is killed by SIGSYS. */
  errno?: string;
}

export function seccompFilter(isolators: readonly Isolator[] | undefined): SeccompFilter | undefined {
  for (const mode of ['retain', 'remove'] as const) {
    const v = last(isolators, mode === 'retain' ? ISOLATOR.seccompRetain : ISOLATOR.seccompRemove) as
      | { set: string[]; errno?: string }
      | undefined;
    if (v === undefined) continue;
    const filter: SeccompFilter = { mode, set: [...v.set] };
    if (typeof v.errno === 'string' && v.errno !== '') filter.errno = v.errno;
    return filter;
  }
  return undefined;
}

export function oomScoreAdj(isolators: readonly Isolator[] | undefined): number | undefined {
  return last(isolators, ISOLATOR.oomScoreAdj) as number | undefined;
}

export function cpuShares(isolators: readonly Isolator[] | undefined): number | undefined {
  return last(isolators, ISOLATOR.cpuShares) as number | undefined;
}

export interface SelinuxContext {
  user: string;
  role: string;
  type: string;
  level: string;
}

export function selinuxContext(isolators: readonly Isolator[] | undefined): SelinuxContext | undefined {
  const v = last(isolators, ISOLATOR.selinuxContext) as SelinuxContext | undefined;
  return v === undefined ? undefined : { user: v.user, role: v.role, type: v.type, level: v.level };
}

/** sysctl keys and values to set in the pod (os/unix/sysctl). */
export function sysctls(isolators: readonly Isolator[] | undefined): Record<string, string> | undefined {
  const v = last(isolators, ISOLATOR.sysctl) as Record<string, string> | undefined;
  return v === undefined ? undefined : { ...v };
}
