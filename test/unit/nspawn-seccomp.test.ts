import test from 'ava';
import { execFileSync } from 'node:child_process';
import type { Isolator } from '../../src/appc/types.js';
import { NspawnConfigError } from '../../stage1-nspawn/errors.js';
import {
  DEFAULT_ALLOW,
  DEFAULT_ALLOW_EXCEPT,
  DEFAULT_DENY,
  parseSyscallFilterListing,
  seccompPlan,
  syscallTableFromJson,
  type SyscallTable,
} from '../../stage1-nspawn/seccomp.js';
import { needCommand } from '../helpers/prereqs.js';

const LISTING = `@default
    # System calls that are always permitted
    execve
    exit
@file-system
    # File system operations
    mkdir
    open
@system-service
    # General system service operations
    @default
    @file-system
    chroot
@keyring
    add_key
@known
    # All system calls defined by the kernel
    chroot
    execve
    exit
    mkdir
    open
    socket
    setns
    unshare
`;

const TABLE: SyscallTable = {
  known: new Set(['mkdir', 'open', 'socket', 'chown', 'umount2', 'execve', 'read', 'write', ...DEFAULT_ALLOW_EXCEPT, ...DEFAULT_DENY].filter((n) => !n.startsWith('@'))),
  groups: new Set(['default', 'file-system', 'system-service', 'mount', 'network-io', 'keyring', 'clock', 'cpu-emulation', 'debug', 'module', 'obsolete', 'raw-io', 'reboot', 'swap']),
};

function retain(set: string[], errno?: string): Isolator[] {
  return [{ name: 'os/linux/seccomp-retain-set', value: { set, ...(errno && { errno }) } }];
}
function remove(set: string[], errno?: string): Isolator[] {
  return [{ name: 'os/linux/seccomp-remove-set', value: { set, ...(errno && { errno }) } }];
}

test('the listing of systemd-analyze syscall-filter is parsed into groups and known calls', (t) => {
  const parsed = parseSyscallFilterListing(LISTING);
  t.deepEqual(parsed.groups['system-service'], ['@default', '@file-system', 'chroot']);
  t.deepEqual(parsed.groups.keyring, ['add_key']);
  t.true(parsed.known.includes('unshare'));
  const table = syscallTableFromJson(parsed);
  t.true(table.known.has('add_key'), 'members of groups count as known even if @known missed them');
  t.true(table.groups.has('file-system'));
});

test('no seccomp isolator gives the default allow list with its exceptions', (t) => {
  const p = seccompPlan('web', [], TABLE);
  t.is(p.filters.length, 2);
  t.is(p.filters[0], DEFAULT_ALLOW.join(' '));
  t.true(p.filters[1]!.startsWith('~'));
  for (const n of ['setns', 'unshare', '@keyring', 'io_uring_setup']) t.true(p.filters[1]!.split(/[~ ]/).includes(n), n);
  t.is(p.errno, undefined);
});

test('a remove set becomes a deny list; errno makes blocked calls fail instead of killing', (t) => {
  const p = seccompPlan('web', remove(['mkdir', '@systemd/mount'], 'EPERM'), TABLE);
  t.deepEqual(p.filters, ['~mkdir @mount']);
  t.is(p.errno, 'EPERM');
});

test('rkt default lists and docker aliases expand; explicit names leave the default exceptions', (t) => {
  t.deepEqual(seccompPlan('web', remove(['@rkt/default-blacklist']), TABLE).filters, [`~${DEFAULT_DENY.join(' ')}`]);
  t.deepEqual(seccompPlan('web', remove(['@docker/default-blacklist', 'socket']), TABLE).filters, [`~${[...DEFAULT_DENY, 'socket'].join(' ')}`]);
  const p = seccompPlan('web', retain(['@rkt/default-whitelist', 'umount2', 'setns']), TABLE);
  t.is(p.filters[0], [...DEFAULT_ALLOW, 'umount2', 'setns'].join(' '));
  t.false(p.filters[1]!.split(/[~ ]/).includes('setns'), 'an explicitly retained call is not taken away again');
  t.true(p.filters[1]!.split(/[~ ]/).includes('unshare'));
});

test('a plain retain set is exactly those calls', (t) => {
  t.deepEqual(seccompPlan('web', retain(['read', 'write', '@systemd/default-whitelist']), TABLE).filters, ['read write @default']);
});

test('appc wildcards: retain @appc.io/all disables, remove @appc.io/empty means the default', (t) => {
  const all = seccompPlan('web', retain(['@appc.io/all']), TABLE);
  t.deepEqual(all.filters, []);
  t.regex(all.disabledBecause ?? '', /@appc.io\/all/);
  t.deepEqual(seccompPlan('web', remove(['@appc.io/empty']), TABLE).filters, seccompPlan('web', [], TABLE).filters);
});

test('--insecure-options=seccomp disables the filter and says why', (t) => {
  const p = seccompPlan('web', remove(['mkdir']), TABLE, { insecure: true });
  t.deepEqual(p.filters, []);
  t.is(p.disabledBecause, '--insecure-options=seccomp');
});

test('unknown names, groups, wildcards and errnos are clear errors naming the app', (t) => {
  const cases: [Isolator[], RegExp][] = [
    [remove(['mkdri']), /app "web".*"mkdri".*not a system call/],
    [retain(['@systemd/nosuchgroup']), /no group @nosuchgroup/],
    [retain(['@example.com/stuff']), /unknown seccomp wildcard @example.com\/stuff/],
    [remove(['mkdir'], 'ENOTANERRNO'), /errno "ENOTANERRNO"/],
    [retain(['@rkt/default-blacklist']), /deny list and cannot be used in a seccomp retain set/],
    [remove(['@appc.io/all']), /forbids @appc.io\/all/],
    [retain(['@appc.io/empty']), /allows no system call at all/],
  ];
  for (const [iso, re] of cases) {
    const err = t.throws(() => seccompPlan('web', iso, TABLE), { instanceOf: NspawnConfigError });
    t.regex(err!.message, re);
  }
});

test('every name of the default lists is known to the host systemd', (t) => {
  const listing = execFileSync(needCommand('systemd-analyze', 'systemd'), ['syscall-filter', '--no-pager'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const table = syscallTableFromJson(parseSyscallFilterListing(listing));
  for (const n of [...DEFAULT_ALLOW, ...DEFAULT_ALLOW_EXCEPT, ...DEFAULT_DENY]) {
    if (n.startsWith('@')) t.true(table.groups.has(n.slice(1)), n);
    else t.true(table.known.has(n), n);
  }
});
