import test, { type ExecutionContext } from 'ava';
import {
  blockBandwidthLimit,
  blockIopsLimit,
  capabilitiesRemoveSet,
  capabilitiesRetainSet,
  cpuLimitMillis,
  cpuRequestMillis,
  cpuShares,
  isKnownIsolator,
  memoryLimit,
  memoryRequest,
  networkBandwidthLimit,
  noNewPrivileges,
  oomScoreAdj,
  parseIsolators,
  seccompFilter,
  selinuxContext,
  sysctls,
} from '../../src/appc/isolators.js';
import { capabilityNumber, DEFAULT_CAPABILITIES, LINUX_CAPABILITIES, normalizeCapability } from '../../src/appc/capabilities.js';
import type { Isolator } from '../../src/appc/types.js';
import { ManifestError } from '../../src/errors.js';

const one = (name: string, value: unknown): unknown[] => [{ name, value }];

function rejects(t: ExecutionContext, list: unknown, field: string, rule?: RegExp): void {
  const err = t.throws(() => parseIsolators(list, 'isolators'), { instanceOf: ManifestError });
  t.is(err?.field, field);
  if (rule !== undefined) t.regex(err?.rule ?? '', rule);
}

test('isolator list shape: name is an AC identifier, value is required', (t) => {
  rejects(t, 'nope', 'isolators', /array/);
  rejects(t, [42], 'isolators[0]', /object/);
  rejects(t, [{ name: 'Resource/CPU', value: {} }], 'isolators[0].name', /AC identifier/);
  rejects(t, [{ name: 'resource/cpu' }], 'isolators[0].value', /required/);
});

test('unknown isolators pass through untouched', (t) => {
  const list = parseIsolators([{ name: 'example.com/frobnicate', value: { any: ['thing'] } }], 'isolators');
  t.deepEqual(list, [{ name: 'example.com/frobnicate', value: { any: ['thing'] } }]);
  t.false(isKnownIsolator('example.com/frobnicate'));
  t.true(isKnownIsolator('resource/memory'));
});

test('resource/cpu and resource/memory take request and limit quantities', (t) => {
  const list = parseIsolators(
    [
      { name: 'resource/cpu', value: { request: '250m', limit: '500m' } },
      { name: 'resource/memory', value: { request: '1G', limit: '2G' } },
    ],
    'isolators',
  );
  t.is(cpuRequestMillis(list), 250);
  t.is(cpuLimitMillis(list), 500);
  t.is(memoryRequest(list), 1e9);
  t.is(memoryLimit(list), 2e9);
});

test('a missing request defaults to the limit; no isolator means no limit', (t) => {
  const list = parseIsolators([...one('resource/memory', { limit: '1Gi' }), ...one('resource/cpu', { limit: 2 })], 'isolators');
  t.is(memoryRequest(list), 1073741824);
  t.is(cpuRequestMillis(list), 2000);
  t.is(memoryLimit([]), undefined);
  t.is(cpuLimitMillis(undefined), undefined);
  const requestOnly = parseIsolators(one('resource/memory', { request: '64Mi' }), 'isolators');
  t.is(memoryLimit(requestOnly), undefined);
  t.is(memoryRequest(requestOnly), 64 * 1024 * 1024);
});

test('bad resource values are errors at the right field', (t) => {
  rejects(t, one('resource/memory', {}), 'isolators[0].value', /request.*limit/);
  rejects(t, one('resource/memory', { limit: '2 gigs' }), 'isolators[0].value.limit', /not a quantity/);
  rejects(t, one('resource/memory', { limit: true }), 'isolators[0].value.limit', /quantity/);
  rejects(t, one('resource/cpu', { limit: '-1' }), 'isolators[0].value.limit', /negative/);
  rejects(t, one('resource/cpu', { request: '2', limit: '1' }), 'isolators[0].value.request', /exceed/);
  rejects(t, one('resource/cpu', { default: true, limit: '1' }), 'isolators[0].value.default', /false/);
  rejects(t, one('resource/memory', '1G'), 'isolators[0].value', /object/);
});

test('device-wide limits need default=true and no request', (t) => {
  const list = parseIsolators(
    [
      ...one('resource/block-bandwidth', { default: true, limit: '2M' }),
      ...one('resource/block-iops', { default: true, limit: '1000' }),
      ...one('resource/network-bandwidth', { default: true, limit: '1G' }),
    ],
    'isolators',
  );
  t.is(blockBandwidthLimit(list), 2e6);
  t.is(blockIopsLimit(list), 1000);
  t.is(networkBandwidthLimit(list), 1e9);
  rejects(t, one('resource/block-iops', { limit: '1000' }), 'isolators[0].value.default', /required/);
  rejects(t, one('resource/block-iops', { default: false, limit: '1000' }), 'isolators[0].value.default', /true/);
  rejects(t, one('resource/network-bandwidth', { default: true, request: '1', limit: '2' }), 'isolators[0].value.request');
  rejects(t, one('resource/block-bandwidth', { default: true }), 'isolators[0].value.limit', /required/);
});

test('capability sets name real capabilities and are normalized', (t) => {
  const list = parseIsolators(
    [...one('os/linux/capabilities-retain-set', { set: ['CAP_NET_ADMIN', 'net_bind_service'] }), ...one('os/linux/capabilities-retain-set', { set: ['CAP_NET_ADMIN', 'CAP_SYS_TIME'] })],
    'isolators',
  );
  t.deepEqual(capabilitiesRetainSet(list), ['CAP_NET_ADMIN', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_TIME']);
  t.is(capabilitiesRemoveSet(list), undefined);
  const remove = parseIsolators(one('os/linux/capabilities-remove-set', { set: ['CAP_SYS_CHROOT', 'CAP_MKNOD'] }), 'isolators');
  t.deepEqual(capabilitiesRemoveSet(remove), ['CAP_SYS_CHROOT', 'CAP_MKNOD']);
  rejects(t, one('os/linux/capabilities-retain-set', { set: ['CAP_FLY'] }), 'isolators[0].value.set[0]', /unknown Linux capability/);
  rejects(t, one('os/linux/capabilities-retain-set', { set: [] }), 'isolators[0].value.set', /empty/);
  rejects(t, one('os/linux/capabilities-retain-set', {}), 'isolators[0].value.set', /required/);
});

test('retain and remove capability sets cannot be combined', (t) => {
  rejects(
    t,
    [...one('os/linux/capabilities-retain-set', { set: ['CAP_KILL'] }), ...one('os/linux/capabilities-remove-set', { set: ['CAP_KILL'] })],
    'isolators[0].name',
    /cannot be combined/,
  );
});

test('the capability table', (t) => {
  t.is(LINUX_CAPABILITIES[0], 'CAP_CHOWN');
  t.is(LINUX_CAPABILITIES[21], 'CAP_SYS_ADMIN');
  t.is(LINUX_CAPABILITIES[40], 'CAP_CHECKPOINT_RESTORE');
  t.is(capabilityNumber('CAP_NET_ADMIN'), 12);
  t.is(capabilityNumber('nope'), undefined);
  t.is(normalizeCapability('sys_admin'), 'CAP_SYS_ADMIN');
  t.is(normalizeCapability('Cap_Kill'), 'CAP_KILL');
  t.is(DEFAULT_CAPABILITIES.length, 14);
  t.true(DEFAULT_CAPABILITIES.every((c) => LINUX_CAPABILITIES.includes(c)));
});

test('no-new-privileges is a boolean, default false', (t) => {
  t.true(noNewPrivileges(parseIsolators(one('os/linux/no-new-privileges', true), 'isolators')));
  t.false(noNewPrivileges(parseIsolators(one('os/linux/no-new-privileges', false), 'isolators')));
  t.false(noNewPrivileges([]));
  rejects(t, one('os/linux/no-new-privileges', 123), 'isolators[0].value', /true or false/);
  rejects(t, one('os/linux/no-new-privileges', 'true'), 'isolators[0].value');
});

test('seccomp sets: syscall names or @scope/group, optional errno', (t) => {
  const list = parseIsolators(one('os/linux/seccomp-remove-set', { errno: 'ENOTSUP', set: ['clock_adjtime', 'clock_settime', 'reboot'] }), 'isolators');
  t.deepEqual(seccompFilter(list), { mode: 'remove', set: ['clock_adjtime', 'clock_settime', 'reboot'], errno: 'ENOTSUP' });
  const retain = parseIsolators(one('os/linux/seccomp-retain-set', { errno: '', set: ['@appc.io/all'] }), 'isolators');
  t.deepEqual(seccompFilter(retain), { mode: 'retain', set: ['@appc.io/all'] });
  t.is(seccompFilter([]), undefined);
  rejects(t, one('os/linux/seccomp-retain-set', { set: [] }), 'isolators[0].value.set', /empty/);
  rejects(t, one('os/linux/seccomp-retain-set', { set: ['Read'] }), 'isolators[0].value.set[0]', /syscall/);
  rejects(t, one('os/linux/seccomp-retain-set', { set: ['@nogroup'] }), 'isolators[0].value.set[0]');
  rejects(t, one('os/linux/seccomp-retain-set', { set: ['read'], errno: 'enosys' }), 'isolators[0].value.errno', /errno/);
  rejects(t, one('os/linux/seccomp-retain-set', { set: ['read'], errno: 5 }), 'isolators[0].value.errno', /string/);
});

test('only one seccomp isolator, and never retain with remove', (t) => {
  const retain = one('os/linux/seccomp-retain-set', { set: ['read'] });
  rejects(t, [...retain, ...retain], 'isolators[1].name', /only one/);
  rejects(t, [...retain, ...one('os/linux/seccomp-remove-set', { set: ['reboot'] })], 'isolators[0].name', /cannot be combined/);
});

test('oom-score-adj is an integer in -1000..1000', (t) => {
  t.is(oomScoreAdj(parseIsolators(one('os/linux/oom-score-adj', -250), 'isolators')), -250);
  t.is(oomScoreAdj([]), undefined);
  rejects(t, one('os/linux/oom-score-adj', -2500), 'isolators[0].value', /-1000 and 1000/);
  rejects(t, one('os/linux/oom-score-adj', 'pants'), 'isolators[0].value', /integer/);
  rejects(t, one('os/linux/oom-score-adj', 1.5), 'isolators[0].value', /integer/);
  rejects(t, [...one('os/linux/oom-score-adj', 1), ...one('os/linux/oom-score-adj', 2)], 'isolators[1].name', /only one/);
});

test('cpu-shares is an integer in 2..262144', (t) => {
  t.is(cpuShares(parseIsolators(one('os/linux/cpu-shares', 2048), 'isolators')), 2048);
  rejects(t, one('os/linux/cpu-shares', 1), 'isolators[0].value', /between 2 and 262144/);
  rejects(t, one('os/linux/cpu-shares', 262145), 'isolators[0].value');
  rejects(t, one('os/linux/cpu-shares', '1024'), 'isolators[0].value', /integer/);
});

test('selinux-context needs user, role, type and level', (t) => {
  const ctx = { user: 'system_u', role: 'system_r', type: 'dhcpc_t', level: 's0' };
  t.deepEqual(selinuxContext(parseIsolators(one('os/linux/selinux-context', ctx), 'isolators')), ctx);
  rejects(t, one('os/linux/selinux-context', { ...ctx, role: '' }), 'isolators[0].value.role', /empty/);
  rejects(t, one('os/linux/selinux-context', { ...ctx, user: 'a:b' }), 'isolators[0].value.user', /":"/);
  rejects(t, one('os/linux/selinux-context', { user: 'u', role: 'r', type: 't' }), 'isolators[0].value.level', /required/);
});

test('os/unix/sysctl is a map of sysctl names to strings', (t) => {
  const list = parseIsolators(one('os/unix/sysctl', { 'net.ipv4.tcp_mtu_probing': '1', 'net.ipv4.tcp_keepalive_time': '300' }), 'isolators');
  t.deepEqual(sysctls(list), { 'net.ipv4.tcp_mtu_probing': '1', 'net.ipv4.tcp_keepalive_time': '300' });
  t.is(sysctls([]), undefined);
  rejects(t, one('os/unix/sysctl', { 'net.ipv4.tcp_mtu_probing': 1 }), 'isolators[0].value["net.ipv4.tcp_mtu_probing"]', /string/);
  rejects(t, one('os/unix/sysctl', { 'net..x': '1' }), 'isolators[0].value["net..x"]', /sysctl/);
  rejects(t, one('os/unix/sysctl', ['net.x']), 'isolators[0].value', /object/);
});

test('accessors refuse a hand-built list with a bad value', (t) => {
  const bad: Isolator[] = [{ name: 'resource/memory', value: { limit: 'lots' } }];
  t.throws(() => memoryLimit(bad), { instanceOf: ManifestError });
});
