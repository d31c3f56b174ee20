import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { listPods, podStatus, processesWith } from '../helpers/pods.js';
import { KVM, setup, stderrOf } from './kvm-common.js';

// Pods that run to completion in a real VM: output, exit statuses, users,
// environment, argv exactly as given, volumes, VM sizing from isolators,
// and the errors a user meets before any VM boots. One VM at a time in
// this file (test.serial): each boot wants the host's CPUs.

const TRICKY = ['a b', '"dq"', "it's", '$HOME', '${X}', '100%', '%n', ';', '', 'back\\slash', 'new\nline', 'tab\there', '$$'];

test.serial('one app: stdout, stderr, exit code, argv exactly, user, groups, environment, working dir, limits', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const script = [
    'for a in "$@"; do printf "[%s]\\n" "$a"; done',
    'echo "ids $(id -u) $(id -g) $(id -G)"',
    'echo "pwd $(pwd)"',
    'env | sort | sed "s/^/env /"',
    'grep -E "^Cap(Bnd|Amb)" /proc/self/status',
    'echo "cpus $(grep -c ^processor /proc/cpuinfo)"',
    'echo "memtotal $(sed -n "s/^MemTotal: *\\([0-9]*\\) kB/\\1/p" /proc/meminfo)"',
    'echo to-stderr >&2',
    'exit 3',
  ].join('\n');
  const r = await env.run([
    'run',
    ...KVM,
    `--uuid-file-save=${uuidFile}`,
    '--set-env=FOO=bar baz',
    image,
    '--user=1000',
    '--group=50',
    '--supplementary-gids=65534',
    '--working-dir=/etc',
    '--environment=QUOTED="x" $y 5%',
    '--caps-retain=CAP_NET_BIND_SERVICE',
    '--memory=512M',
    '--cpu=500m',
    '--exec=/bin/sh',
    '--',
    '-c',
    script,
    'sh',
    ...TRICKY,
  ]);
  t.is(r.exitCode, 3, String(r.stderr));
  const out = String(r.stdout);
  t.true(out.startsWith(TRICKY.map((a) => `[${a}]`).join('\n') + '\n'), out);
  t.regex(out, /^ids 1000 50 50 65534$/m);
  t.regex(out, /^pwd \/etc$/m);
  const envLines = out.split('\n').filter((l) => l.startsWith('env ')).map((l) => l.slice(4));
  t.true(envLines.includes('FOO=bar baz'));
  t.true(envLines.includes('QUOTED="x" $y 5%'));
  t.true(envLines.includes('AC_APP_NAME=busybox'));
  // user 1000 is "user" in the image's /etc/passwd: a login's variables, as rkt sets them
  for (const v of ['HOME=/home/user', 'USER=user', 'LOGNAME=user', 'SHELL=/bin/sh']) t.true(envLines.includes(v), v);
  t.true(envLines.some((l) => l.startsWith('PATH=/usr/local/sbin:')));
  for (const l of envLines) t.notRegex(l, /^(INVOCATION_ID|SYSTEMD_EXEC_PID|MANAGERPID|LANG|NOTIFY_SOCKET)=/, 'systemd adds nothing to the app environment');
  // CAP_NET_BIND_SERVICE is bit 10, held by the non-root app as an ambient capability
  t.regex(out, /^CapBnd:\s+0000000000000400$/m);
  t.regex(out, /^CapAmb:\s+0000000000000400$/m);
  // 500m of CPU: one vCPU; 512 MiB for the app + 128 MiB for the system
  t.regex(out, /^cpus 1$/m);
  const mem = Number(/^memtotal (\d+)$/m.exec(out)?.[1]);
  t.true(mem > 560 * 1024 && mem <= 640 * 1024, `MemTotal ${mem} kB`);
  t.is(stderrOf(r), 'to-stderr');
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const st = await podStatus(env, uuid);
  t.is(st.state, 'exited');
  t.is(st.apps[0]!.exit_code, 3);
  t.is(st.exit_cause, undefined);
  t.deepEqual(await processesWith(uuid), [], 'no qemu or virtiofsd outlives the pod');
});

test.serial('several apps: each runs, each status is recorded, the first failure is the pod status', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const r = await env.run([
    'run',
    ...KVM,
    `--uuid-file-save=${uuidFile}`,
    image,
    '--name=first',
    '--exec=/bin/sh',
    '--',
    '-c',
    'echo one',
    '---',
    image,
    '--name=second',
    '--exec=/bin/sh',
    '--',
    '-c',
    'sleep 0.5; echo two; exit 4',
    '---',
    image,
    '--name=third',
    '--exec=/bin/sh',
    '--',
    '-c',
    'sleep 1; exit 5',
  ]);
  t.is(r.exitCode, 4, String(r.stderr));
  t.regex(String(r.stdout), /^one$/m);
  t.regex(String(r.stdout), /^two$/m);
  const st = await podStatus(env, fs.readFileSync(uuidFile, 'utf8').trim());
  t.deepEqual(Object.fromEntries(st.apps.map((a) => [a.name, a.exit_code])), { first: 0, second: 4, third: 5 });
});

test.serial('volumes: host read-write and read-only, empty, under a read-only root filesystem', async (t) => {
  const { env, image } = await setup(t);
  const rw = env.file('rw');
  const ro = env.file('ro');
  fs.mkdirSync(rw);
  fs.mkdirSync(ro);
  // a writable volume belongs to an unprivileged user: the guest never writes as host root
  fs.chownSync(rw, 4242, 4242);
  fs.writeFileSync(path.join(rw, 'in'), 'from host rw\n');
  fs.writeFileSync(path.join(ro, 'in'), 'from host ro\n');
  const script = [
    'cat /rw/in /ro/in',
    'echo written > /rw/out && echo rw-ok',
    'echo nope > /ro/out 2>/dev/null || echo ro-refused',
    'echo x > /scratch/x && echo empty-ok',
    'echo x > /rootfile 2>/dev/null || echo root-refused',
  ].join('; ');
  const uuidFile = env.file('uuid');
  const r = await env.run([
    'run',
    ...KVM,
    `--uuid-file-save=${uuidFile}`,
    `--volume=rw,kind=host,source=${rw}`,
    `--volume=ro,kind=host,source=${ro},readOnly=true`,
    '--volume=scratch,kind=empty',
    image,
    '--readonly-rootfs=true',
    '--mount=volume=rw,target=/rw',
    '--mount=volume=ro,target=/ro',
    '--mount=volume=scratch,target=/scratch',
    '--exec=/bin/sh',
    '--',
    '-c',
    script,
  ]);
  t.is(r.exitCode, 0, String(r.stderr));
  const out = String(r.stdout);
  t.regex(out, /from host rw\nfrom host ro\n/);
  for (const w of ['rw-ok', 'ro-refused', 'empty-ok', 'root-refused']) t.regex(out, new RegExp(`^${w}$`, 'm'));
  t.is(fs.readFileSync(path.join(rw, 'out'), 'utf8'), 'written\n');
  t.is(fs.statSync(path.join(rw, 'out')).uid, 4242, "the app's file belongs to the volume's owner");
  t.false(fs.existsSync(path.join(ro, 'out')));
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(env.dir), 'no pod mount is left on the host');
});

test.serial('errors before boot: missing exec, too much memory, forced kvm where there is none, missing kernel or qemu', async (t) => {
  const { env, image } = await setup(t);
  const missing = await env.run(['run', ...KVM, image, '--exec=/bin/nope']);
  t.not(missing.exitCode, 0);
  t.regex(stderrOf(missing), /\/bin\/nope does not exist in image example\.com\/busybox/);
  const big = await env.run(['run', ...KVM, image, '--memory=64T', '--exec=/bin/true']);
  t.not(big.exitCode, 0);
  t.regex(stderrOf(big), /needs \d+ MiB .* but the host has only \d+ MiB available/);
  const noKernel = await env.run(['run', ...KVM, image, '--exec=/bin/true'], { env: { RKT_KVM_KERNEL: env.file('no-such-kernel') } });
  t.not(noKernel.exitCode, 0);
  t.regex(stderrOf(noKernel), /guest kernel .*no-such-kernel.* does not exist/);
  const noQemu = await env.run(['run', ...KVM, image, '--exec=/bin/true'], { env: { RKT_KVM_QEMU: env.file('no-such-qemu') } });
  t.not(noQemu.exitCode, 0);
  t.regex(stderrOf(noQemu), /no-such-qemu is not an executable/);
  if (!/\b(vmx|svm)\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8'))) {
    const kvm = await env.run(['run', ...KVM, image, '--exec=/bin/true'], { env: { RKT_KVM_ACCEL: 'kvm' } });
    t.not(kvm.exitCode, 0);
    t.regex(stderrOf(kvm), /RKT_KVM_ACCEL=kvm, but kvm cannot be used here/);
  }
  // every failed pod is exited with its cause, and gc removes them all
  const pods = await listPods(env);
  t.true(pods.length >= 4);
  for (const p of pods) {
    t.is(p.state, 'exited', p.name);
    t.regex((await podStatus(env, p.name)).exit_cause ?? '', /^stage1 failed: /);
  }
  const gc = await env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.deepEqual(await listPods(env), []);
});

test.serial('a kernel that is not one, a guest that panics, a guest that never starts the apps', async (t) => {
  const { env, image } = await setup(t);
  const junk = env.file('junk-kernel');
  fs.writeFileSync(junk, 'not a kernel\n'.repeat(1000));
  const bad = await env.run(['run', ...KVM, image, '--exec=/bin/true'], { env: { RKT_KVM_KERNEL: junk } });
  t.not(bad.exitCode, 0);
  t.regex(stderrOf(bad), /qemu failed to start/);

  const uuidFile = env.file('uuid-panic');
  const panic = await env.run(['run', ...KVM, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/true'], { env: { RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS: 'init=/no/such/init' } });
  t.not(panic.exitCode, 0);
  const st = await podStatus(env, fs.readFileSync(uuidFile, 'utf8').trim());
  t.is(st.state, 'exited');
  t.regex(st.exit_cause ?? '', /^guest panicked: .*init/);

  // busybox sh as init waits on the console forever: the boot times out with the console's last words
  const hang = await env.run(['run', ...KVM, image, '--exec=/bin/true'], { env: { RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS: 'init=/rkt/bin/sh', RKT_KVM_BOOT_TIMEOUT: '8' } });
  t.not(hang.exitCode, 0);
  t.regex(stderrOf(hang), /did not start the apps within 8 s/);
  t.deepEqual(await processesWith(env.dir), []);
});
