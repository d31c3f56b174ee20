import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TCG_WARNING, chooseAccel, kvmProblem, type AccelProbe } from '../../stage1-kvm/accel.js';
import { KvmHostError } from '../../stage1-kvm/errors.js';
import { UsageError } from '../../src/errors.js';
import { hostTscKhz, kernelCmdline, kernelPath, kmsgText, mhzToKhz, tscKhzFromKernelLog, type TscSources } from '../../stage1-kvm/kernel.js';
import { MiB, vmSize } from '../../stage1-kvm/sizing.js';

const VMX = 'processor\t: 0\nflags\t\t: fpu vme tsc msr vmx sse2\n';
const NO_VMX = 'processor\t: 0\nflags\t\t: fpu vme tsc msr sse2 hypervisor\n';

function probe(cpuinfo: string, kvmOpen: string | undefined = undefined): AccelProbe {
  return { cpuinfo: () => cpuinfo, openKvm: () => kvmOpen };
}

test('accel: kvm when the CPU has vmx/svm and /dev/kvm opens', (t) => {
  t.deepEqual(chooseAccel({}, probe(VMX)), { accel: 'kvm' });
  t.deepEqual(chooseAccel({}, probe(VMX.replace('vmx', 'svm'))), { accel: 'kvm' });
});

test('accel: tcg with the one-line warning otherwise', (t) => {
  const c = chooseAccel({}, probe(NO_VMX));
  t.is(c.accel, 'tcg');
  t.is(c.warning, TCG_WARNING);
  t.regex(c.kvmProblem!, /vmx or svm/);
  const denied = chooseAccel({}, probe(VMX, '/dev/kvm cannot be opened read-write (permission denied)'));
  t.is(denied.accel, 'tcg');
  t.regex(denied.kvmProblem!, /permission denied/);
  t.false(TCG_WARNING.includes('\n'));
  // a flag name inside another word does not count
  t.truthy(kvmProblem(probe('flags\t: fpu vmxfoo\n')));
});

test('accel: RKT_KVM_ACCEL forces, and forcing kvm where it cannot work is an error', (t) => {
  t.deepEqual(chooseAccel({ RKT_KVM_ACCEL: 'tcg' }, probe(VMX)), { accel: 'tcg' });
  t.deepEqual(chooseAccel({ RKT_KVM_ACCEL: 'kvm' }, probe(VMX)), { accel: 'kvm' });
  t.throws(() => chooseAccel({ RKT_KVM_ACCEL: 'kvm' }, probe(NO_VMX)), { instanceOf: KvmHostError, message: /RKT_KVM_ACCEL=kvm.*vmx or svm.*unset/ });
  t.throws(() => chooseAccel({ RKT_KVM_ACCEL: 'xen' }, probe(VMX)), { instanceOf: UsageError, message: /RKT_KVM_ACCEL=xen: use kvm or tcg/ });
});

test('sizing: memory limits plus 128 MiB per app without one plus 128 MiB for the system', (t) => {
  const host = { cpus: 8, memAvailable: 16 * 1024 * MiB };
  t.is(vmSize([{ name: 'a' }], host).memoryMiB, 256);
  t.is(vmSize([{ name: 'a', memoryLimit: 512 * MiB }, { name: 'b' }], host).memoryMiB, 512 + 128 + 128);
  // bytes round up to whole MiB
  t.is(vmSize([{ name: 'a', memoryLimit: 100 * MiB + 1 }], host).memoryMiB, 229);
});

test('sizing: vCPUs from CPU limits rounded up, all host CPUs if any app has none', (t) => {
  const host = { cpus: 8 };
  t.is(vmSize([{ name: 'a', cpuLimitMillis: 500 }], host).cpus, 1);
  t.is(vmSize([{ name: 'a', cpuLimitMillis: 1500 }, { name: 'b', cpuLimitMillis: 600 }], host).cpus, 3);
  t.is(vmSize([{ name: 'a', cpuLimitMillis: 500 }, { name: 'b' }], host).cpus, 8);
  t.is(vmSize([{ name: 'a', cpuLimitMillis: 64000 }], host).cpus, 8);
  t.regex(vmSize([{ name: 'a' }], host).explain, /all 8 host CPUs/);
  // under tcg an app without a limit gets one vCPU; limits are still honored
  t.is(vmSize([{ name: 'a' }], host, 'tcg').cpus, 1);
  t.is(vmSize([{ name: 'a', cpuLimitMillis: 2500 }], host, 'tcg').cpus, 3);
});

test('sizing: more memory than the host has available is a clear error', (t) => {
  const err = t.throws(() => vmSize([{ name: 'big', memoryLimit: 4096 * MiB }], { cpus: 2, memAvailable: 1024 * MiB }), { instanceOf: KvmHostError });
  t.regex(err!.message, /needs 4224 MiB.*big 4096 MiB.*only 1024 MiB available/);
  t.throws(() => vmSize([], { cpus: 1 }), { instanceOf: KvmHostError });
});

test('TSC rate: override, sysfs, kernel log, cpuinfo, in that order', (t) => {
  const src = (o: Partial<Record<keyof TscSources, string>>): TscSources => ({
    sysfs: () => o.sysfs,
    kernelLog: () => o.kernelLog,
    cpuinfo: () => o.cpuinfo ?? 'flags\t: fpu tsc\ncpu MHz\t\t: 2596.122\n',
  });
  t.is(hostTscKhz({ RKT_KVM_HOST_TSC_KHZ: '3000000' }, src({})), 3000000);
  t.throws(() => hostTscKhz({ RKT_KVM_HOST_TSC_KHZ: '12' }, src({})), { instanceOf: KvmHostError });
  t.is(hostTscKhz({}, src({ sysfs: '2999999\n' })), 2999999);
  t.is(hostTscKhz({}, src({ kernelLog: '[0.0] tsc: Detected 2596.100 MHz processor\n[1.0] tsc: Refined TSC clocksource calibration: 2596.122 MHz\n' })), 2596122);
  t.is(hostTscKhz({}, src({})), 2596122);
  t.is(hostTscKhz({}, src({ cpuinfo: 'flags\t: fpu\ncpu MHz\t\t: 2596.122\n' })), undefined);
  t.is(mhzToKhz('2596.1'), 2596100);
  t.is(mhzToKhz('3000'), 3000000);
  t.is(tscKhzFromKernelLog('nothing'), undefined);
});

test('TSC rate: /dev/kmsg records read as the kernel log', (t) => {
  // what read(2) on /dev/kmsg returns: one record, its dictionary on continuation lines
  const records = ['6,112,95000,-;tsc: Detected 2100.000 MHz processor\n', '6,900,1200000,-;tsc: Refined TSC clocksource calibration: 2099.998 MHz\n SUBSYSTEM=tsc\n', '4,901,1300000,c;a;b\n'];
  const log = records.map(kmsgText).join('\n');
  t.is(log, 'tsc: Detected 2100.000 MHz processor\ntsc: Refined TSC clocksource calibration: 2099.998 MHz\na;b');
  t.is(tscKhzFromKernelLog(log), 2099998);
});

const UUID = '0c7d4f36-9a52-4a53-b1c5-2b8a3f1e0d11';

test('kernel command line: root share, identity, quiet unless debugging, tsc under tcg, extra params last', (t) => {
  const base = { uuid: UUID, hostname: 'rkt-x' };
  const quiet = kernelCmdline({ ...base, accel: 'tcg', debug: false, tscKhz: 2596122, extra: ' foo=bar ' });
  t.regex(quiet, /^console=ttyS0 /);
  t.regex(quiet, / root=rktroot rootfstype=virtiofs rw /);
  t.notRegex(quiet, /9p|rootflags/);
  t.regex(quiet, / init=\/usr\/lib\/systemd\/systemd systemd\.unit=rkt-pod\.target /);
  t.regex(quiet, / systemd\.machine_id=0c7d4f369a524a53b1c52b8a3f1e0d11 systemd\.hostname=rkt-x /);
  t.regex(quiet, / quiet /);
  t.regex(quiet, / tsc_early_khz=2596122 foo=bar$/);
  t.regex(kernelCmdline({ ...base, accel: 'tcg', debug: false, tscKhz: 2596122, kernelHz: 250 }), / tsc_early_khz=2596122 lpj=10384488$/);
  t.regex(kernelCmdline({ ...base, accel: 'tcg', debug: false, interactive: true }), / loglevel=3 /);
  // --insecure-options=seccomp: into init's environment (a parameter with "=" and no ".")
  t.regex(kernelCmdline({ ...base, accel: 'tcg', debug: false, noSeccomp: true, extra: 'x=1' }), / SYSTEMD_SECCOMP=0 x=1$/);
  t.notRegex(quiet, /SECCOMP/);
  t.throws(() => kernelCmdline({ ...base, hostname: 'a b init=/bin/sh', accel: 'tcg', debug: false }), { instanceOf: KvmHostError });
  const debug = kernelCmdline({ ...base, accel: 'kvm', debug: true, tscKhz: 2596122 });
  t.notRegex(debug, /quiet/);
  t.notRegex(debug, /tsc_early_khz/);
  t.regex(debug, /rootfstype=virtiofs/);
  t.notRegex(debug, /rootflags/);
});

test('kernel path: the environment first, else the stage1 image, else a clear error', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-kernel-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.throws(() => kernelPath(dir, {}), { instanceOf: KvmHostError, message: /stage1 image has no guest kernel.*kernel-config\/build\.sh/ });
  fs.mkdirSync(path.join(dir, 'kernel'));
  fs.writeFileSync(path.join(dir, 'kernel/bzImage'), 'x');
  t.is(kernelPath(dir, {}), path.join(dir, 'kernel/bzImage'));
  const mine = path.join(dir, 'mine');
  fs.writeFileSync(mine, 'y');
  t.is(kernelPath(dir, { RKT_KVM_KERNEL: mine }), mine);
  t.throws(() => kernelPath(dir, { RKT_KVM_KERNEL: path.join(dir, 'nope') }), { instanceOf: KvmHostError, message: /RKT_KVM_KERNEL.*does not exist/ });
});
