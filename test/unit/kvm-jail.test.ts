import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { limitMemory, ourHierarchies } from '../../src/stage1-common/cgroups.js';
import { checkShare } from '../../stage1-kvm/config.js';
import { KvmHostError } from '../../stage1-kvm/errors.js';
import { fstabField, hostDevice, isUnder, jailArgv, jailFstab, jailSteps, prepareJailRoot, systemTree, type JailDevice } from '../../stage1-kvm/jail.js';
import { checkIdRange, claimPodIds, FIRST_ID, firstSlot, parseSubIds, PodIdsError, qemuIds, SLOT_IDS, SLOTS, type IdFiles } from '../../src/stage1-common/pod-ids.js';
import { QEMU_SANDBOX, qemuArgs, qemuJail, type VmConfig } from '../../stage1-kvm/qemu.js';
import { QEMU_OVERHEAD_MIB, vmMemoryLimitBytes } from '../../stage1-kvm/vm-cgroup.js';

const UUID = '0c7d4f36-9a52-4a53-b1c5-2b8a3f1e0d11';
const POD = `/var/lib/rkt/pods/run/${UUID}`;

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-jail-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function config(over: Partial<VmConfig> = {}): VmConfig {
  return {
    podDir: POD,
    uuid: UUID,
    accel: 'tcg',
    memoryMiB: 256,
    cpus: 1,
    kernel: `${POD}/stage1/rootfs/kernel/bzImage`,
    cmdline: 'console=ttyS0',
    pit: false,
    ids: { uid: 0x70010000, gid: 0x70010000 },
    cgroupProcs: ['/sys/fs/cgroup/memory/rkt-x/cgroup.procs'],
    ...over,
  };
}

const fakeDevice = (p: string, isPrivate: boolean): JailDevice => ({ path: p, major: 1, minor: 2, private: isPrivate });
const HOST = { devices: fakeDevice, system: { readOnly: ['/usr'], links: [{ path: '/lib64', target: 'usr/lib64' }] } };

test('qemu: its own seccomp filter, denying privilege changes, fork/exec and resource control; started paused', (t) => {
  const a = qemuArgs(config());
  t.is(QEMU_SANDBOX, 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  t.is(a[a.indexOf('-sandbox') + 1], QEMU_SANDBOX);
  t.true(a.includes('-S'), 'the guest runs only once the run entrypoint has closed qemu\'s directory');
});

test('jail: only /usr, the kernel, qemu\'s directory, virtiofsd\'s socket and the devices it uses', (t) => {
  const j = qemuJail('/usr/bin/qemu-system-x86_64', config(), HOST);
  t.deepEqual(j.readOnly, ['/usr', `${POD}/stage1/rootfs/kernel/bzImage`], 'qemu itself is under /usr');
  t.deepEqual(j.writable, [`${POD}/qemu`, `${POD}/virtiofs.sock`]);
  t.deepEqual(j.devices, [fakeDevice('/dev/null', false), fakeDevice('/dev/urandom', false)], 'tcg, no NIC: neither kvm nor tun');
  t.deepEqual(j.ids, { uid: 0x70010000, gid: 0x70010000 });
  t.is(j.cwd, POD);
  t.deepEqual(j.cgroupProcs, ['/sys/fs/cgroup/memory/rkt-x/cgroup.procs']);
  const kvm = qemuJail('/opt/q/qemu', config({ accel: 'kvm', nics: ['-netdev', 'tap,id=net0,ifname=tap0'] }), HOST);
  t.deepEqual(
    kvm.devices.filter((d) => d.private).map((d) => d.path),
    ['/dev/kvm', '/dev/net/tun'],
    'kvm and tun are made for the pod\'s uid alone',
  );
  t.true(kvm.readOnly.includes('/opt/q/qemu'), 'a qemu outside /usr is shown too');
  const missing = qemuJail('/usr/bin/q', config({ accel: 'kvm' }), { ...HOST, devices: (p, priv) => (p === '/dev/kvm' ? undefined : fakeDevice(p, priv)) });
  t.false(missing.devices.some((d) => d.path === '/dev/kvm'), 'a device the host lacks is left out (qemu then says what is missing)');
});

test('jail: the launcher joins the cgroups first, drops to the pod ids, and ends with qemu\'s command line', (t) => {
  const spec = qemuJail('/usr/bin/qemu-system-x86_64', config({ accel: 'kvm' }), HOST);
  const steps = jailSteps(spec);
  t.deepEqual(steps.slice(0, 2), ['cgroup', '/sys/fs/cgroup/memory/rkt-x/cgroup.procs']);
  t.is(steps.slice(2).join(' '), 'dev /dev/null 1 2 shared dev /dev/urandom 1 2 shared dev /dev/kvm 1 2 private');
  t.false(steps.includes('dir'), 'no directory to make on /dev without net/tun');
  const withNic = jailSteps(qemuJail('/usr/bin/q', config({ nics: ['-netdev', 'x'] }), HOST));
  t.true(withNic.join(' ').includes('dir /dev/net dev /dev/null'), '/dev/net is made before the nodes');
  t.is(spec.root, `${POD}/qemu-root`);
  const argv = jailArgv(spec, ['/usr/bin/qemu-system-x86_64', '-S']);
  t.is(argv[argv.indexOf('rkt-qemu-jail') + 1], `${POD}/qemu-root`);
  t.deepEqual(argv.slice(0, 7), ['unshare', '--mount', '--ipc', '--uts', '--propagation', 'private', '--']);
  t.deepEqual(argv.slice(-3), ['--', '/usr/bin/qemu-system-x86_64', '-S']);
  t.is(argv[argv.indexOf('rkt-qemu-jail') + 2], `${POD}/qemu-root.fstab`);
  const wait = argv[argv.indexOf('rkt-qemu-jail') + 6]!;
  t.regex(wait, /setpriv --reuid="\$uid" --regid="\$gid" --clear-groups --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs --pdeathsig=KILL -- "\$@"/);
  const build = argv[argv.indexOf('-c') + 1]!;
  t.regex(build, /mount -a -T "\$fstab"/);
  t.regex(build, /pivot_root \. \.old\numount -l \/\.old/);
  t.deepEqual(jailFstab(spec).trim().split('\n'), [
    `${POD}/qemu-root ${POD}/qemu-root none bind 0 0`,
    `rkt-qemu-dev ${POD}/qemu-root/dev tmpfs mode=0755,size=64k,nr_inodes=64 0 0`,
    `/usr ${POD}/qemu-root/usr none bind,ro,nosuid,nodev 0 0`,
    `${POD}/stage1/rootfs/kernel/bzImage ${POD}/qemu-root${POD}/stage1/rootfs/kernel/bzImage none bind,ro,nosuid,nodev 0 0`,
    `${POD}/qemu ${POD}/qemu-root${POD}/qemu none bind,nosuid,nodev 0 0`,
    `${POD}/virtiofs.sock ${POD}/qemu-root${POD}/virtiofs.sock none bind,nosuid,nodev 0 0`,
    `proc ${POD}/qemu-root/proc proc nosuid,nodev,noexec 0 0`,
  ]);
  t.is(fstabField('/a b\tc\nd\\e'), '/a\\040b\\011c\\012d\\134e');
  t.regex(build, /exec unshare --pid -- /);
});

test('jail: its root is laid out with the mount points and links, and only added to', (t) => {
  const dir = tmp(t);
  fs.writeFileSync(path.join(dir, 'kernel'), 'k');
  fs.mkdirSync(path.join(dir, 'qemu'));
  const spec = { ...qemuJail('/usr/bin/q', config(), HOST), root: path.join(dir, 'qemu-root'), readOnly: ['/usr', path.join(dir, 'kernel')], writable: [path.join(dir, 'qemu')] };
  prepareJailRoot(spec);
  prepareJailRoot(spec);
  const r = spec.root;
  t.true(fs.statSync(path.join(r, 'usr')).isDirectory());
  t.true(fs.statSync(path.join(r, dir, 'kernel')).isFile());
  t.is(fs.statSync(path.join(r, dir, 'kernel')).size, 0);
  t.true(fs.statSync(path.join(r, dir, 'qemu')).isDirectory());
  t.is(fs.readlinkSync(path.join(r, 'lib64')), 'usr/lib64');
  for (const d of ['dev', 'proc', '.old']) t.true(fs.statSync(path.join(r, d)).isDirectory());
  t.is(fs.readFileSync(`${r}.fstab`, 'utf8'), jailFstab(spec));
});

test('jail: host devices by number; the system tree as links or directories', (t) => {
  const null_ = hostDevice('/dev/null', false);
  t.deepEqual(null_, { path: '/dev/null', major: 1, minor: 3, private: false });
  t.is(hostDevice('/nonexistent', true), undefined);
  t.is(hostDevice('/etc/hostname', true), undefined, 'not a character device');
  const root = tmp(t);
  fs.mkdirSync(path.join(root, 'usr/lib'), { recursive: true });
  fs.symlinkSync('usr/lib', path.join(root, 'lib'));
  fs.mkdirSync(path.join(root, 'bin'));
  t.deepEqual(systemTree(root), { readOnly: ['/usr', '/bin'], links: [{ path: '/lib', target: 'usr/lib' }] });
  t.true(isUnder('/usr/bin/x', '/usr'));
  t.false(isUnder('/usrx/bin', '/usr'));
});

const FILES: IdFiles = { subuid: 'me:100000:65536\n', subgid: 'me:100000:65536\n', passwd: 'root:x:0:0::/root:/bin/sh\nme:x:1000:1000::/home/me:/bin/sh\n', group: 'root:x:0:\n' };

test('pod ids: blocks below 2^31, qemu after the guest\'s ids; a host using them is refused', (t) => {
  t.true(FIRST_ID + SLOTS * SLOT_IDS <= 2 ** 31, 'below 2^31: tools that read ids as signed show them right');
  t.deepEqual(qemuIds({ base: FIRST_ID }), { uid: 0x70010000, gid: 0x70010000 });
  t.deepEqual(qemuIds({ base: FIRST_ID + 3 * SLOT_IDS }), { uid: 0x70000000 + 3 * 0x20000 + 0x10000, gid: 0x70000000 + 3 * 0x20000 + 0x10000 });
  t.deepEqual(parseSubIds('me:100000:65536\n# comment\nbad line\nrkt:300000:1000\n'), [
    { name: 'me', start: 100000, count: 65536 },
    { name: 'rkt', start: 300000, count: 1000 },
  ]);
  t.notThrows(() => checkIdRange(FILES));
  t.throws(() => checkIdRange({ ...FILES, subgid: `podman:${FIRST_ID - 10}:65536\n` }), { instanceOf: PodIdsError, message: /subordinate ids of user podman in \/etc\/subgid reach into the ids the kvm stage1 runs pods as \(1879048192-/ });
  t.throws(() => checkIdRange({ ...FILES, passwd: `odd:x:${FIRST_ID + 5}:0::/:/bin/sh\n` }), { instanceOf: PodIdsError, message: /user odd in \/etc\/passwd has id 1879048197/ });
  t.throws(() => checkIdRange({ ...FILES, group: `odd:x:${FIRST_ID + SLOTS * SLOT_IDS - 1}:\n` }), { instanceOf: PodIdsError, message: /group odd/ });
});

test('pod ids: a free slot from the UUID\'s place on, held until released', (t) => {
  const dir = tmp(t);
  const a = claimPodIds(UUID, dir);
  t.is(a.slot, firstSlot(UUID));
  t.deepEqual(qemuIds(a), qemuIds({ base: FIRST_ID + a.slot * SLOT_IDS }));
  const b = claimPodIds(UUID, dir);
  t.is(b.slot, (a.slot + 1) % SLOTS, 'a held slot is skipped');
  a.lock.release();
  t.is(claimPodIds(UUID, dir).slot, a.slot, 'a released slot is free again');
  b.lock.release();
});

test('pod cgroup: guest RAM plus the stated overhead; the limit in v1 memory and v2 memory.max', (t) => {
  t.deepEqual(QEMU_OVERHEAD_MIB, { kvm: 256, tcg: 512 });
  t.is(vmMemoryLimitBytes(256, 'tcg'), 768 * 1024 * 1024);
  t.is(vmMemoryLimitBytes(256, 'kvm'), 512 * 1024 * 1024);
  const root = tmp(t);
  const v1 = path.join(root, 'memory/rkt-x');
  const v2 = path.join(root, 'unified/rkt-x');
  const cpu = path.join(root, 'cpu/rkt-x');
  for (const d of [v1, v2, cpu]) fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(v2, 'memory.max'), 'max\n');
  fs.writeFileSync(path.join(v2, 'memory.swap.max'), 'max\n');
  const hierarchies = ourHierarchies(
    '4:memory:/\n1:cpu:/\n0::/\n',
    [
      `35 31 0:32 / ${root}/memory rw,relatime - cgroup cgroup rw,memory`,
      `36 31 0:33 / ${root}/cpu rw,relatime - cgroup cgroup rw,cpu`,
      `41 31 0:38 / ${root}/unified rw,relatime - cgroup2 cgroup2 rw`,
    ].join('\n'),
  );
  t.deepEqual(limitMemory(hierarchies, [v1, cpu, v2], 1234), [path.join(v1, 'memory.limit_in_bytes'), path.join(v2, 'memory.max')]);
  t.is(fs.readFileSync(path.join(v1, 'memory.limit_in_bytes'), 'utf8'), '1234');
  t.is(fs.readFileSync(path.join(v2, 'memory.swap.max'), 'utf8'), '0');
  t.deepEqual(limitMemory(hierarchies.filter((h) => h.version === 2).map((h) => h), [cpu], 1), [], 'a v2 cgroup without the memory controller cannot hold a limit');
});

test('share: RKT_KVM_SHARE=9p is refused with what to do; virtiofs or nothing is fine', (t) => {
  t.throws(() => checkShare({ RKT_KVM_SHARE: '9p' }), { instanceOf: KvmHostError, message: /RKT_KVM_SHARE=9p is not supported: .*unset RKT_KVM_SHARE and install virtiofsd/ });
  t.notThrows(() => checkShare({ RKT_KVM_SHARE: 'virtiofs' }));
  t.notThrows(() => checkShare({}));
});
