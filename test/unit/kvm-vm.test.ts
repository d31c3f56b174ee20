import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';
import { DEFAULT_CAPABILITIES } from '../../src/appc/capabilities.js';
import { PodPaths } from '../../src/stage1/contract.js';
import { writeGuestConfig } from '../../stage1-kvm/guest-config.js';
import { lastLines } from '../../stage1-kvm/output.js';
import { isPodHelper, socketPath } from '../../stage1-kvm/pod-files.js';
import { INCOMING_FD, optValue, QEMU_CONSOLE_FD, qemuArgs, qemuJail, TEMPLATE_PORT, type VmConfig } from '../../stage1-kvm/qemu.js';
import { bootTimeoutReport, exitCause } from '../../stage1-kvm/vm.js';

const UUID = '0c7d4f36-9a52-4a53-b1c5-2b8a3f1e0d11';

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-vm-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function config(over: Partial<VmConfig> = {}): VmConfig {
  return {
    podDir: `/var/lib/rkt/pods/run/${UUID}`,
    uuid: UUID,
    accel: 'tcg',
    memoryMiB: 256,
    cpus: 2,
    kernel: '/k/bzImage',
    cmdline: 'console=ttyS0',
    pit: false,
    ids: { uid: 0x70010000, gid: 0x70010000 },
    cgroupProcs: [],
    ...over,
  };
}

/** The value following each occurrence of a flag. */
function opt(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

test('qemu: microvm, accelerator, size, kernel, no reboot', (t) => {
  const a = qemuArgs(config());
  t.deepEqual(opt(a, '-M'), ['microvm,x-option-roms=off,pit=off,pic=off,rtc=on,isa-serial=on,acpi=on,memory-backend=mem']);
  t.deepEqual(opt(a, '-accel'), ['tcg,tb-size=256']);
  t.deepEqual(opt(a, '-cpu'), ['max']);
  t.deepEqual(opt(a, '-smp'), ['2']);
  t.deepEqual(opt(a, '-m'), ['256M']);
  t.deepEqual(opt(a, '-kernel'), ['/k/bzImage']);
  t.deepEqual(opt(a, '-append'), ['console=ttyS0']);
  t.true(a.includes('-no-reboot') && a.includes('-nodefaults'));
  t.true(opt(a, '-name')[0]!.includes(UUID), 'the UUID is in qemu\'s command line, for pgrep and gc');
  const kvm = qemuArgs(config({ accel: 'kvm', pit: true }));
  t.deepEqual(opt(kvm, '-cpu'), ['host']);
  t.regex(opt(kvm, '-M')[0]!, /pit=on/);
});

test('qemu: console on an inherited socket (no log file), output ports, agent, two QMP sockets, pvpanic', (t) => {
  const a = qemuArgs(config());
  const dir = config().podDir;
  const chardevs = opt(a, '-chardev');
  t.true(chardevs.includes(`socket,id=console,fd=${QEMU_CONSOLE_FD}`));
  t.false(a.some((x) => x.includes('logfile')), 'qemu writes no console log of its own');
  t.true(opt(a, '-device').includes('pvpanic'));
  t.deepEqual(opt(a, '-action'), ['panic=shutdown']);
  t.true(chardevs.includes(`pipe,id=stdout,path=${dir}/qemu/stdout`));
  t.true(chardevs.includes(`pipe,id=stderr,path=${dir}/qemu/stderr`));
  t.true(chardevs.includes(`socket,id=agent,path=${dir}/qemu/agent.sock,server=on,wait=off`));
  const devices = opt(a, '-device');
  for (const port of ['rkt.stdout', 'rkt.stderr', 'rkt.agent']) t.true(devices.some((d) => d.startsWith('virtserialport,') && d.endsWith(`name=${port}`)), port);
  t.deepEqual(opt(a, '-serial'), ['chardev:console']);
  t.deepEqual(opt(a, '-qmp'), [`unix:${dir}/qemu/qmp.sock,server=on,wait=off`, `unix:${dir}/qemu/qmp-ctl.sock,server=on,wait=off`]);
});

test('qemu: virtio-fs shares the stage1 rootfs, over shared memory; never 9p', (t) => {
  const vfs = qemuArgs(config({ memoryMiB: 384 }));
  t.regex(opt(vfs, '-M')[0]!, /,memory-backend=mem$/);
  t.deepEqual(opt(vfs, '-object'), ['memory-backend-memfd,id=mem,size=384M,share=on']);
  t.true(opt(vfs, '-device').includes('vhost-user-fs-device,chardev=vfs,tag=rktroot'));
  t.deepEqual(opt(vfs, '-fsdev'), []);
  t.false(vfs.some((a) => /9p|virtfs/.test(a)));
});

test('qemu: commas in paths are doubled; over-long socket paths become relative', (t) => {
  t.is(optValue('/a,b'), '/a,,b');
  const long = `/${'x'.repeat(90)}/${UUID}`;
  t.is(socketPath(long, 'qmp'), 'qemu/qmp.sock');
  t.is(socketPath('/short', 'qmp'), '/short/qemu/qmp.sock');
  const a = qemuArgs(config({ podDir: long }));
  t.deepEqual(opt(a, '-qmp'), ['unix:qemu/qmp.sock,server=on,wait=off', 'unix:qemu/qmp-ctl.sock,server=on,wait=off']);
});

function spec(name: string): AppSpec {
  return {
    name,
    imageName: 'example.com/x',
    exec: ['/bin/true'],
    user: '0',
    group: '0',
    uid: 0,
    gid: 0,
    supplementaryGids: [],
    env: [{ name: 'PATH', value: '/bin' }],
    workingDirectory: '/',
    readOnlyRootFS: false,
    eventHandlers: {},
    mounts: [],
    isolators: { capabilities: [...DEFAULT_CAPABILITIES], noNewPrivileges: false, app: [], pod: [] },
    treeRootfs: '/t',
    rootfs: '/r',
    streams: { stdin: 'null', stdout: 'log', stderr: 'log' },
  };
}

test('guest config: units hooked into rkt-pod.target, /rkt/apps, the apps\' users and groups', (t) => {
  const paths = new PodPaths(tmp(t));
  const root = paths.stage1Rootfs;
  fs.mkdirSync(path.join(root, 'rkt/status'), { recursive: true });
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'rkt/status/stale'), '0');
  fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/rkt/bin/sh');
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeGuestConfig(root, [spec('a'), { ...spec('b'), uid: 1000, gid: 50, supplementaryGids: [65534, 7] }], {});
  const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/a.service'), 'utf8');
  t.regex(unit, /^ExecStopPost=\+"\/rkt\/bin\/rkt-app-exited" "a" "\$\{EXIT_CODE\}:\$\{EXIT_STATUS\}:\$\{SERVICE_RESULT\}"$/m);
  t.regex(unit, /^StandardOutput=file:\/run\/rkt\/stdout$/m);
  t.regex(unit, /^RootDirectoryStartOnly=yes$/m);
  // apps see the usual pseudo-devices only: not the virtio ports (the agent's), the console, disks or memory
  t.regex(unit, /^PrivateDevices=yes$/m);
  t.notRegex(unit, /^(DeviceAllow|BindPaths)=/m);
  t.is(fs.readlinkSync(path.join(root, 'etc/systemd/system/rkt-pod.target.wants/b.service')), '../b.service');
  t.is(fs.readFileSync(path.join(root, 'rkt/apps'), 'utf8'), 'a\nb\n');
  // systemd resolves numeric User=/Group= through NSS only
  t.is(fs.readFileSync(path.join(root, 'etc/passwd'), 'utf8'), 'root:x:0:0:root:/root:/rkt/bin/sh\nrkt-u1000:x:1000:50:rkt app user:/:/nonexistent\n');
  t.is(fs.readFileSync(path.join(root, 'etc/group'), 'utf8'), 'root:x:0:\nnogroup:x:65534:\nrkt-g50:x:50:\nrkt-g7:x:7:\n');
  t.deepEqual(fs.readdirSync(path.join(root, 'rkt/status')), [], 'statuses of an earlier boot are gone');
  // rewriting (run-prepared after a failed start) replaces, never duplicates
  writeGuestConfig(root, [spec('a')], { interactive: { tty: true, rows: 30, columns: 100 } });
  const tty = fs.readFileSync(path.join(root, 'etc/systemd/system/a.service'), 'utf8');
  // --interactive: a terminal the agent makes, never the console
  t.regex(tty, /^StandardInput=tty$/m);
  t.regex(tty, /^StandardOutput=tty$/m);
  t.regex(tty, /^TTYPath=\/run\/rkt\/io\/a\/tty$/m);
  t.regex(tty, /^TTYRows=30$/m);
  t.regex(tty, /^PrivateDevices=yes$/m);
  t.regex(tty, /^DeviceAllow=char-pts rw$/m);
  t.notRegex(tty, /ttyS0|^BindPaths=/m);
  t.regex(tty, /^After=rkt-agent\.service$/m);
  t.is(fs.readFileSync(path.join(root, 'rkt/io/a'), 'utf8'), 'tty tty tty\n');
  // piped input: pipes, whose end the app sees
  writeGuestConfig(root, [spec('a')], { interactive: { tty: false } });
  const piped = fs.readFileSync(path.join(root, 'etc/systemd/system/a.service'), 'utf8');
  t.regex(piped, /^StandardInput=file:\/run\/rkt\/io\/a\/stdin$/m);
  t.regex(piped, /^StandardOutput=file:\/run\/rkt\/io\/a\/stdout$/m);
  t.regex(piped, /^StandardError=file:\/run\/rkt\/io\/a\/stderr$/m);
  t.notRegex(piped, /^TTYPath=/m);
  t.is(fs.readFileSync(path.join(root, 'rkt/io/a'), 'utf8'), 'stream stream stream\n');
  // per-app modes: only attachable apps get streams from the agent; log goes to the pod's output
  writeGuestConfig(root, [{ ...spec('a'), streams: { stdin: 'null', stdout: 'stream', stderr: 'log' } }, spec('b')], {});
  const mixed = fs.readFileSync(path.join(root, 'etc/systemd/system/a.service'), 'utf8');
  t.regex(mixed, /^StandardInput=null$/m);
  t.regex(mixed, /^StandardOutput=file:\/run\/rkt\/io\/a\/stdout$/m);
  t.regex(mixed, /^StandardError=file:\/run\/rkt\/stderr$/m);
  t.deepEqual(fs.readdirSync(path.join(root, 'rkt/io')), ['a']);
  t.notRegex(fs.readFileSync(path.join(root, 'etc/systemd/system/b.service'), 'utf8'), /^After=/m);
});

test('exit cause: a panic, a signal, a quit, a reboot, qemu failing', (t) => {
  const dir = tmp(t);
  t.is(exitCause({ code: null, signal: 'SIGKILL' }, dir), 'qemu killed by signal 9 (SIGKILL)');
  t.regex(exitCause({ code: 0, signal: null, shutdown: { guest: false, reason: 'host-qmp-quit' } }, dir), /quit/);
  t.regex(exitCause({ code: 0, signal: null, shutdown: { guest: true, reason: 'guest-reset' } }, dir), /rebooted/);
  t.regex(exitCause({ code: 0, signal: null, shutdown: { guest: true, reason: 'guest-shutdown' } }, dir), /powered off before every app/);
  fs.writeFileSync(path.join(dir, 'qemu.log'), 'qemu-system-x86_64: -kernel x: could not load kernel\n');
  t.regex(exitCause({ code: 1, signal: null }, dir), /exit status 1: -kernel x: could not load kernel/);
  t.regex(exitCause({ code: 0, signal: null, panic: { action: 'pause' } }, dir), /^guest panicked$/);
  fs.mkdirSync(path.join(dir, 'qemu'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'qemu', 'console.log'), 'booting\r\n[    1.0] Kernel panic - not syncing: Requested init /x failed (error -2).\r\n');
  const panicked = { code: 0, signal: null, panic: { action: 'poweroff' }, shutdown: { guest: true, reason: 'guest-panic' } } as const;
  t.is(exitCause(panicked, dir), 'guest panicked: not syncing: Requested init /x failed (error -2).');
  t.is(exitCause({ code: 0, signal: null, shutdown: { guest: true, reason: 'guest-panic' } }, dir), 'guest panicked: not syncing: Requested init /x failed (error -2).');
});

test('exit cause: a "Kernel panic" line on the console without the host\'s signal is not a panic', (t) => {
  const dir = tmp(t);
  fs.mkdirSync(path.join(dir, 'qemu'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'qemu', 'console.log'), 'app says:\n[    1.0] Kernel panic - not syncing: fake\n');
  for (const end of [
    { code: 0, signal: null, shutdown: { guest: true, reason: 'guest-shutdown' } },
    { code: 0, signal: null, shutdown: { guest: true, reason: 'guest-reset' } },
    { code: null, signal: 'SIGKILL' },
    { code: 0, signal: null },
  ] as const) {
    const cause = exitCause(end, dir);
    t.notRegex(cause, /panic/i, cause);
  }
});

test('exit cause: guest text in it is one printable line of bounded length', (t) => {
  const dir = tmp(t);
  fs.mkdirSync(path.join(dir, 'qemu'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'qemu', 'console.log'), `Kernel panic - \x1b]0;owned\x07\x1b[2J\u009b31m\x7f\x00${'x'.repeat(10 * 1024)}\n`);
  const cause = exitCause({ code: 0, signal: null, panic: { action: 'poweroff' } }, dir);
  t.regex(cause, /^guest panicked: x+…$/);
  t.true(cause.length <= 600, String(cause.length));
  fs.writeFileSync(path.join(dir, 'qemu.log'), 'qemu-system-x86_64: \x1b[31mred\x1b[0m\r\n');
  t.is(exitCause({ code: 1, signal: null }, dir), 'qemu ended with exit status 1: red');
});

test('last console lines: trailing lines, control characters and colours stripped', (t) => {
  const dir = tmp(t);
  const f = path.join(dir, 'log');
  fs.writeFileSync(f, 'one\r\n\x1b[0;32mtwo\x1b[0m\r\n\r\nthree\x07\n');
  t.deepEqual(lastLines(f, 2), ['two', 'three']);
  t.deepEqual(lastLines(path.join(dir, 'none'), 2), []);
  // several logs read as one, oldest first; a fragment cut by the tail's start is dropped
  fs.writeFileSync(`${f}.1`, 'older\n');
  t.deepEqual(lastLines([`${f}.1`, f], 10), ['older', 'one', 'two', 'three']);
  fs.writeFileSync(f, `${'y'.repeat(100 * 1024)}\nlast\n`);
  t.deepEqual(lastLines([`${f}.1`, f], 10), ['last']);
  fs.writeFileSync(f, `start\n${'z'.repeat(1024 * 1024)}\n`);
  const [long] = lastLines(f, 1);
  t.is(long, `${'z'.repeat(299)}…`);
});

test('a helper is recognized by the pod directory or UUID in its command line only', (t) => {
  t.true(isPodHelper(`/nonexistent/${UUID}`, process.pid) === false);
  t.false(isPodHelper('/x', 999_999_999));
});

test('boot timeout: the console lines it prints and its error carry no control characters and are capped', (t) => {
  const dir = tmp(t);
  fs.mkdirSync(path.join(dir, 'qemu'));
  fs.writeFileSync(path.join(dir, 'qemu', 'console.log.1'), 'older line\n');
  fs.writeFileSync(path.join(dir, 'qemu', 'console.log'), `\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\r\n\u009b6n${'w'.repeat(5000)}\r\n\x1b[1A\x1b[2Klast\x07\r\n`);
  const { lines, error } = bootTimeoutReport(dir, 90_000);
  t.deepEqual(lines, ['older line', 'red', `${'w'.repeat(299)}…`, 'last']);
  t.is(error.message, `the VM did not start the apps within 90 s (last console line: last); set RKT_KVM_BOOT_TIMEOUT to wait longer`);
  const none = bootTimeoutReport(tmp(t), 1000);
  t.deepEqual(none.lines, []);
  t.regex(none.error.message, /console is empty/);
});

test('the template machine: a PC with virtio-pci, the initramfs and the template port, no NICs or virtio-fs; restored from fd 5', (t) => {
  const nics = { netns: '/run/netns/x', nics: ['-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-device,netdev=net0,mac=02:00:00:00:00:01'] };
  const save = qemuArgs(config({ ...nics, template: { initrd: '/k/template-initrd' } }));
  t.deepEqual(opt(save, '-M'), ['pc,memory-backend=mem']);
  t.deepEqual(opt(save, '-initrd'), ['/k/template-initrd']);
  t.true(save.includes('virtio-serial-pci') && save.includes('virtio-rng-pci'));
  t.false(save.some((a) => /virtio-mmio|vhost-user-fs|virtio-net|^virtio-(serial|rng)-device$/.test(a)));
  t.true(save.some((a) => a.includes(`name=${TEMPLATE_PORT}`)));
  t.deepEqual(opt(save, '-netdev'), []);
  t.deepEqual(opt(save, '-incoming'), []);
  // the same machine, plus where the state comes from: nothing else may differ (qemu loads it into the same devices)
  const restore = qemuArgs(config({ ...nics, template: { initrd: '/k/template-initrd', incomingFd: 42 } }));
  t.deepEqual(opt(restore, '-incoming'), [`fd:${INCOMING_FD}`]);
  t.deepEqual(restore.filter((a, i) => a !== '-incoming' && restore[i - 1] !== '-incoming'), save);
  // the cold machine is unchanged
  const cold = qemuArgs(config(nics));
  t.regex(opt(cold, '-M')[0]!, /^microvm,/);
  t.true(cold.some((a) => a.startsWith('vhost-user-fs-device')));
  t.deepEqual(opt(cold, '-initrd'), []);
});

test("qemu's jail shows it the template's initramfs, read-only", (t) => {
  const devices = (): undefined => undefined;
  const spec = qemuJail('/usr/bin/qemu-system-x86_64', config({ template: { initrd: '/k/template-initrd' } }), { devices, system: { readOnly: ['/usr'], links: [] } });
  t.true(spec.readOnly.includes('/k/template-initrd'));
  t.false(spec.writable.includes('/k/template-initrd'));
});
