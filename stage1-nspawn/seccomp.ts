import os from 'node:os';
import { seccompFilter, type SeccompFilter } from '../src/appc/isolators.js';
import type { Isolator } from '../src/appc/types.js';
import { NspawnConfigError } from './errors.js';

// The os/linux/seccomp-{retain,remove}-set isolators as systemd's
// SystemCallFilter= lines, which the pod's systemd turns into the app's
// seccomp filter. rkt's vocabulary is kept: plain syscall names, the appc
// wildcards @appc.io/all and @appc.io/empty, rkt's and docker's default
// lists, and @systemd/<group> for systemd's own groups. With no seccomp
// isolator an app gets the default filter, an allow list, as in rkt.
//
// Names are checked against the table of the systemd in the stage1 image
// (systemd-analyze syscall-filter, recorded at build time): systemd itself
// only logs and skips a name it does not know, which would turn a typo into
// a filter quietly weaker or stronger than asked.

/** System calls and groups the stage1's systemd knows (group names without "@"). */
export interface SyscallTable {
  known: ReadonlySet<string>;
  groups: ReadonlySet<string>;
}

/**
 * The default allow list: systemd's curated set for ordinary services plus
 * chroot (apps keep CAP_SYS_CHROOT by default)...
 */
export const DEFAULT_ALLOW: readonly string[] = ['@system-service', 'chroot'];

/**
 * ...minus what reaches beyond the app: other namespaces, other processes'
 * memory, the kernel keyring, NUMA policy of the host, io_uring (a large
 * kernel surface, off in today's container defaults), handle-based opens.
 */
export const DEFAULT_ALLOW_EXCEPT: readonly string[] = [
  '@keyring',
  'setns',
  'unshare',
  'process_vm_readv',
  'process_vm_writev',
  'process_madvise',
  'kcmp',
  'userfaultfd',
  'io_uring_setup',
  'io_uring_enter',
  'io_uring_register',
  'mbind',
  'migrate_pages',
  'move_pages',
  'set_mempolicy',
  'set_mempolicy_home_node',
  'get_mempolicy',
  'name_to_handle_at',
];

/** The default deny list (@rkt/default-blacklist): what changes the host or escapes a container. */
export const DEFAULT_DENY: readonly string[] = [
  '@clock',
  '@cpu-emulation',
  '@debug',
  '@keyring',
  '@module',
  '@mount',
  '@obsolete',
  '@raw-io',
  '@reboot',
  '@swap',
  'acct',
  'bpf',
  'kcmp',
  'kexec_file_load',
  'kexec_load',
  'lookup_dcookie',
  'name_to_handle_at',
  'open_by_handle_at',
  'quotactl',
  'setns',
  'unshare',
  'userfaultfd',
];

/** rkt's names for systemd's groups that differ from systemd's own. */
const SYSTEMD_ALIASES: Readonly<Record<string, string>> = { 'default-whitelist': 'default' };

/** What to write in the app's unit. */
export interface SeccompUnitPlan {
  /** SystemCallFilter= values, in order: the first decides allow or deny list. */
  filters: string[];
  /** SystemCallErrorNumber=, when blocked calls should fail instead of killing the app. */
  errno?: string;
  /** Why there is no filter, for the user (insecure option or @appc.io/all). */
  disabledBecause?: string;
}

function unknownName(app: string, name: string): NspawnConfigError {
  return new NspawnConfigError(
    `app "${app}": seccomp isolator names "${name}", which is not a system call this stage1's systemd knows; check the spelling (names are lower case, e.g. "mkdir")`,
  );
}

interface Expanded {
  names: string[];
  /** A default list was used: the default allow list's exceptions apply. */
  usedDefaultAllow: boolean;
  all: boolean;
  empty: boolean;
}

function expand(app: string, filter: SeccompFilter, table: SyscallTable): Expanded {
  const out: Expanded = { names: [], usedDefaultAllow: false, all: false, empty: false };
  const retain = filter.mode === 'retain';
  for (const item of filter.set) {
    if (!item.startsWith('@')) {
      if (!table.known.has(item)) throw unknownName(app, item);
      out.names.push(item);
      continue;
    }
    const slash = item.indexOf('/');
    const scope = item.slice(0, slash);
    const name = item.slice(slash + 1);
    const wildcard = `${scope}/${name}`;
    if (scope === '@appc.io' && name === 'all') out.all = true;
    else if (scope === '@appc.io' && name === 'empty') out.empty = true;
    else if ((scope === '@rkt' || scope === '@docker') && (name === 'default-whitelist' || name === 'default-blacklist')) {
      const allowList = name === 'default-whitelist';
      if (allowList !== retain) {
        throw new NspawnConfigError(
          `app "${app}": ${wildcard} is ${allowList ? 'an allow' : 'a deny'} list and cannot be used in a seccomp ${filter.mode} set; use it in os/linux/seccomp-${allowList ? 'retain' : 'remove'}-set`,
        );
      }
      if (allowList) {
        out.names.push(...DEFAULT_ALLOW);
        out.usedDefaultAllow = true;
      } else {
        out.names.push(...DEFAULT_DENY);
      }
    } else if (scope === '@systemd') {
      const group = SYSTEMD_ALIASES[name] ?? name;
      if (!table.groups.has(group)) {
        throw new NspawnConfigError(`app "${app}": seccomp isolator names ${wildcard}, but this stage1's systemd has no group @${name}`);
      }
      out.names.push(`@${group}`);
    } else {
      throw new NspawnConfigError(
        `app "${app}": unknown seccomp wildcard ${wildcard}; use a syscall name, @appc.io/{all,empty}, @rkt/default-{whitelist,blacklist}, @docker/default-{whitelist,blacklist} or @systemd/<group>`,
      );
    }
  }
  return out;
}

function uniq(list: readonly string[]): string[] {
  return [...new Set(list)];
}

/** The default filter: an allow list with its exceptions, minus names the app explicitly allowed. */
function defaultFilters(explicit: readonly string[] = []): string[] {
  const except = DEFAULT_ALLOW_EXCEPT.filter((n) => !explicit.includes(n));
  return [uniq([...DEFAULT_ALLOW, ...explicit]).join(' '), `~${except.join(' ')}`];
}

function checkErrno(app: string, errno: string | undefined): string | undefined {
  if (errno === undefined) return undefined;
  if (!Object.hasOwn(os.constants.errno, errno)) {
    throw new NspawnConfigError(`app "${app}": seccomp errno "${errno}" is not an errno name such as EPERM or ENOSYS`);
  }
  return errno;
}

/**
 * The SystemCallFilter= plan for one app, from its isolators. Throws
 * NspawnConfigError for a name or group that does not exist, and for sets
 * that cannot mean anything (a deny list of everything).
 */
export function seccompPlan(app: string, isolators: readonly Isolator[], table: SyscallTable, opts: { insecure?: boolean } = {}): SeccompUnitPlan {
  const filter = seccompFilter(isolators);
  if (opts.insecure) return { filters: [], disabledBecause: '--insecure-options=seccomp' };
  if (filter === undefined) return { filters: defaultFilters() };
  const errno = checkErrno(app, filter.errno);
  const x = expand(app, filter, table);
  const withErrno = (p: SeccompUnitPlan): SeccompUnitPlan => (errno === undefined ? p : { ...p, errno });
  if (filter.mode === 'retain') {
    if (x.all) return { filters: [], disabledBecause: 'its os/linux/seccomp-retain-set contains @appc.io/all' };
    const explicit = uniq(x.names.filter((n) => !DEFAULT_ALLOW.includes(n)));
    if (x.usedDefaultAllow) return withErrno({ filters: defaultFilters(explicit) });
    if (x.names.length === 0) {
      throw new NspawnConfigError(`app "${app}": its os/linux/seccomp-retain-set allows no system call at all, so the app could not even start; list the calls it needs`);
    }
    return withErrno({ filters: [uniq(x.names).join(' ')] });
  }
  if (x.all) {
    throw new NspawnConfigError(`app "${app}": its os/linux/seccomp-remove-set forbids @appc.io/all, every system call, so the app could not even start`);
  }
  // rkt: a remove set of nothing opts in to the default filter
  if (x.names.length === 0) return withErrno({ filters: defaultFilters() });
  return withErrno({ filters: [`~${uniq(x.names).join(' ')}`] });
}

/**
 * Parse `systemd-analyze syscall-filter` output: "@group" header lines,
 * then indented member lines (syscalls or "@other" groups) and "#" comments.
 */
export function parseSyscallFilterListing(text: string): { groups: Record<string, string[]>; known: string[] } {
  const groups: Record<string, string[]> = {};
  let current: string | undefined;
  for (const raw of text.split('\n')) {
    if (raw.trim() === '' || raw.trim().startsWith('#')) continue;
    if (/^@[a-z0-9-]+$/.test(raw)) {
      current = raw.slice(1);
      groups[current] = [];
    } else if (current !== undefined && /^\s+@?[a-z0-9_-]+$/.test(raw)) {
      groups[current]!.push(raw.trim());
    }
  }
  const known = groups.known ?? [];
  return { groups, known };
}

/** The table from the JSON the build writes into the stage1 image. */
export function syscallTableFromJson(json: { groups: Record<string, string[]>; known: string[] }): SyscallTable {
  const known = new Set(json.known);
  // every member of a group is a call systemd knows, even if @known missed it
  for (const members of Object.values(json.groups)) for (const m of members) if (!m.startsWith('@')) known.add(m);
  return { known, groups: new Set(Object.keys(json.groups)) };
}
