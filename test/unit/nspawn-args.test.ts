import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../src/errors.js';
import { ourHierarchies, podCgroupDirs, recordedCgroups } from '../../src/stage1-common/cgroups.js';
import { CGROUPS_FILE } from '../../stage1-nspawn/config.js';
import { extraCapabilities, machinedAvailable, nspawnCommand, type NspawnOptions } from '../../stage1-nspawn/nspawn-args.js';
import { checkNetwork, insecure, podRunOptions, takeFlavorFlags } from '../../stage1-nspawn/options.js';
import type { RunRelaxation } from '../../src/stage1-common/insecure.js';
import { PodPaths } from '../../src/stage1/contract.js';
import { parseRunArgs } from '../../src/stage1-common/entry.js';

const UUID = '2462e25b-0602-463f-9f5b-c305c68517d1';

function opts(over: Partial<NspawnOptions> = {}): NspawnOptions {
  return {
    nspawn: '/usr/bin/systemd-nspawn',
    uuid: UUID,
    hostname: 'pod',
    rootfs: '/pods/x/stage1/rootfs',
    debug: false,
    console: 'read-only',
    capabilities: [],
    ipc: 'auto',
    register: false,
    insecureSeccomp: false,
    ...over,
  };
}

test('nspawn boots rkt-init in the pod rootfs, quiet, unregistered, in its own cgroup', (t) => {
  const { argv, env } = nspawnCommand(opts());
  t.is(argv[0], '/usr/bin/systemd-nspawn');
  for (const a of ['--directory=/pods/x/stage1/rootfs', `--machine=rkt-${UUID}`, `--uuid=${UUID}`, '--hostname=pod', '--register=no', '--keep-unit', '--console=read-only', '--quiet', '--kill-signal=SIGRTMIN+4']) {
    t.true(argv.includes(a), a);
  }
  const sep = argv.indexOf('--');
  t.deepEqual(argv.slice(sep + 1, sep + 3), ['/rkt/bin/rkt-init', '--unit=rkt-pod.target']);
  t.true(argv.slice(sep).includes('--log-level=warning'));
  t.false(argv.some((a) => a.startsWith('--capability') || a.startsWith('--private-users')));
  t.deepEqual(env, { SYSTEMD_LOG_LEVEL: 'err' });
});

test('registering with machined drops --keep-unit; debug shows everything', (t) => {
  const { argv, env } = nspawnCommand(opts({ register: true, debug: true }));
  t.true(argv.includes('--register=yes'));
  t.false(argv.includes('--keep-unit'));
  t.false(argv.includes('--quiet'));
  t.true(argv.includes('--log-level=debug'));
  t.deepEqual(env, {});
});

test('capabilities, user namespaces, IPC and insecure seccomp reach nspawn', (t) => {
  const { argv, env } = nspawnCommand(opts({ capabilities: ['CAP_NET_ADMIN', 'CAP_SYS_TIME'], privateUsers: 'pick', ipc: 'parent', insecureSeccomp: true }));
  t.true(argv.includes('--capability=CAP_NET_ADMIN,CAP_SYS_TIME'));
  t.true(argv.includes('--private-users=pick'));
  t.is(env.SYSTEMD_NSPAWN_SHARE_NS_IPC, '1');
  t.is(env.SYSTEMD_SECCOMP, '0');
  // the pod's systemd is told too, before its own arguments
  t.true(argv.indexOf('--setenv=SYSTEMD_SECCOMP=0') !== -1 && argv.indexOf('--setenv=SYSTEMD_SECCOMP=0') < argv.indexOf('--'));
  t.false(nspawnCommand(opts({})).argv.some((a) => a.includes('SYSTEMD_SECCOMP')));
  t.is(nspawnCommand(opts({ insecurePaths: true })).env.SYSTEMD_NSPAWN_API_VFS_WRITABLE, 'yes');
  t.false('SYSTEMD_NSPAWN_API_VFS_WRITABLE' in nspawnCommand(opts({})).env);
  t.true(nspawnCommand(opts({ capabilities: 'all' })).argv.includes('--capability=all'));
  t.true(nspawnCommand(opts({ console: 'interactive' })).argv.slice(-3).includes('--log-level=crit'));
});

test('only capabilities beyond nspawn defaults are added', (t) => {
  t.deepEqual(extraCapabilities([['CAP_KILL', 'CAP_SYS_TIME'], ['CAP_NET_ADMIN', 'CAP_CHOWN', 'CAP_SYS_TIME']]), ['CAP_NET_ADMIN', 'CAP_SYS_TIME']);
  t.deepEqual(extraCapabilities([['CAP_KILL']]), []);
});

test('machined is used only where a host systemd and the system bus run', (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-machined-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  t.false(machinedAvailable(root));
  for (const d of ['run/systemd/system', 'run/dbus', 'usr/lib/systemd']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.writeFileSync(path.join(root, 'run/dbus/system_bus_socket'), '');
  t.false(machinedAvailable(root));
  fs.writeFileSync(path.join(root, 'usr/lib/systemd/systemd-machined'), '');
  t.true(machinedAvailable(root));
});

test('--ipc is taken out of the shared arguments; --private-users is a shared flag nspawn honours', (t) => {
  const { flags, rest } = takeFlavorFlags(['--net=host', '--private-users', '--ipc', 'parent', '--debug', UUID]);
  t.deepEqual(flags, { ipc: 'parent' });
  t.deepEqual(rest, ['--net=host', '--private-users', '--debug', UUID]);
  t.deepEqual(takeFlavorFlags(['--private-users=100000:65536', '--ipc=private', UUID]).flags, { ipc: 'private' });
  t.throws(() => takeFlavorFlags(['--ipc=shared', UUID]), { instanceOf: UsageError, message: /auto, private or parent/ });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-opts-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const opts = (argv: string[]) => podRunOptions(new PodPaths(dir), parseRunArgs([...argv, UUID]), {});
  t.is(opts(['--private-users']).privateUsers, 'pick');
  t.is(opts(['--private-users=100000:65536']).privateUsers, '100000:65536');
  t.is(opts([]).privateUsers, undefined);
  t.throws(() => opts(['--private-users=lots']), { instanceOf: UsageError });
  t.deepEqual([...opts(['--disable-seccomp', '--disable-paths']).insecure].sort(), ['paths', 'seccomp']);
});

test('the --net value is checked before anything is mounted', (t) => {
  const base = parseRunArgs([UUID]);
  for (const net of [[], ['default'], ['host'], ['none'], ['mynet'], ['default', 'other'], ['mynet:IP=10.1.0.5']]) {
    t.notThrows(() => checkNetwork({ ...base, net }), JSON.stringify(net));
  }
  t.throws(() => checkNetwork({ ...base, net: ['host', 'default'] }));
});

test('each --disable-* flag relaxes only its own restriction', (t) => {
  const o = (words: RunRelaxation[]) => ({ insecure: new Set(words), ipc: 'auto' as const });
  t.true(insecure(o(['seccomp']), 'seccomp'));
  t.false(insecure(o(['seccomp']), 'paths'));
  t.false(insecure(o([]), 'capabilities'));
});

const PROC_CGROUP = `9:name=systemd:/
4:memory:/jobs/42
3:cpu,cpuacct:/
7:blkio:/
0::/
`;
const MOUNTINFO = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '38 31 0:35 / /sys/fs/cgroup/blkio ro,relatime - cgroup cgroup rw,blkio',
  '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

test('the pod cgroups go below ours in every writable hierarchy', (t) => {
  const h = ourHierarchies(PROC_CGROUP, MOUNTINFO);
  t.deepEqual(
    h.map((x) => [x.mount, x.path, x.version]),
    [
      ['/sys/fs/cgroup/systemd', '/', 1],
      ['/sys/fs/cgroup/memory', '/jobs/42', 1],
      ['/sys/fs/cgroup/cpu,cpuacct', '/', 1],
      ['/sys/fs/cgroup/unified', '/', 2],
    ],
  );
  t.deepEqual(podCgroupDirs(h, UUID), [
    `/sys/fs/cgroup/systemd/rkt-${UUID}`,
    `/sys/fs/cgroup/memory/jobs/42/rkt-${UUID}`,
    `/sys/fs/cgroup/cpu,cpuacct/rkt-${UUID}`,
    `/sys/fs/cgroup/unified/rkt-${UUID}`,
  ]);
});

test('only recorded rkt- cgroup directories are ever removed by gc', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-cg-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.deepEqual(recordedCgroups(dir, CGROUPS_FILE), []);
  fs.writeFileSync(path.join(dir, CGROUPS_FILE), JSON.stringify([`/sys/fs/cgroup/memory/rkt-${UUID}`, '/sys/fs/cgroup/memory', 'relative/rkt-x', 7]));
  t.deepEqual(recordedCgroups(dir, CGROUPS_FILE), [`/sys/fs/cgroup/memory/rkt-${UUID}`]);
});
